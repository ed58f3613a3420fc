#!/usr/bin/env bash
# gitopsd next to Flux's kustomize-controller v1.9.6, in one run against one kube-apiserver,
# on the shape of Flux's own benchmark: N Kustomizations (default 1,000) of 3 objects each
# (2 ConfigMaps and a headless Service) from one source.
#
#   bash scripts/bench-flux.sh                       # 1,000 kustomizations, Flux at --concurrent=4 and 8
#   KUSTOMIZATIONS=50 CONCURRENCY="4" bash scripts/bench-flux.sh   # a quick smoke run
#
# What it does, in a temp dir it removes at the end (KEEP=1 keeps it):
#   1. builds kustomize-controller v1.9.6 once into $GITOPSD_CACHE/flux/ (a throwaway Go module
#      with Flux's go-digest replace, GOTOOLCHAIN=go1.27.3, -p 1: a few minutes) and takes the
#      Kustomization and source CRDs from the Go module cache;
#   2. starts etcd and kube-apiserver v1.34.4 (built by scripts/install-test-deps.sh) on free
#      loopback ports with a self-made PKI and a token-auth admin kubeconfig, as
#      tests/integration/support/kube.rs does;
#   3. writes one git repository with k0..k{N-1}/objects.yaml (no namespaces in the files) and
#      packs the same tree as a tar.gz artifact, served by python3 -m http.server;
#   4. gitopsd: `gitopsd run --once -o json` with one configuration of N kustomizations
#      (prune: true, targetNamespace), source `file://` of that repository: wall time and peak
#      RSS (GNU time) of the first reconcile, then of the no-change pass;
#   5. Flux, for each --concurrent in $CONCURRENCY: a GitRepository whose status (artifact URL,
#      revision, sha256 digest, Ready) is set through the status subresource, as
#      source-controller would (no source-controller runs), kustomize-controller started, N
#      Kustomizations (interval 10m, prune: true, targetNamespace) created with one
#      `kubectl apply --server-side`; wall time from the start of that apply until all N report
#      Ready=True (a watch), the controller's peak RSS (VmHWM); then a no-change pass: every
#      Kustomization annotated reconcile.fluxcd.io/requestedAt, wall time until all handled it.
#   Every side's objects are counted in the cluster at the end.
#
# Environment: GITOPSD_BIN (default target/release/gitopsd of this checkout), GITOPSD_CACHE,
# KUSTOMIZATIONS, CONCURRENCY, FLUX_NO_CHANGE=0 to skip Flux's no-change pass, KEEP=1.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
here="$repo_root/scripts/bench-flux"
cache_dir="${GITOPSD_CACHE:-$HOME/.cache/gitopsd}"
kube_version=v1.34.4
flux_version=v1.9.6
source_version=v1.9.0 # the source-controller API kustomize-controller v1.9.6 requires
n="${KUSTOMIZATIONS:-1000}"
concurrency="${CONCURRENCY-4 8}"
gitopsd_bin="${GITOPSD_BIN:-$repo_root/target/release/gitopsd}"
etcd_bin="$cache_dir/kube/$kube_version/etcd"
apiserver_bin="$cache_dir/kube/$kube_version/kube-apiserver"
flux_bin="$cache_dir/flux/kustomize-controller-$flux_version"
token="bench-admin-token-$RANDOM$RANDOM"

log() { echo "bench-flux: $*" >&2; }
die() { log "error: $*"; exit 1; }
now() { date +%s.%N; }
secs() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$2"; }
kib_to_mib() { python3 -c "import sys; print(f'{int(sys.argv[1]) / 1024:.0f}')" "$1"; }
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
status_field() { # status_field PID FIELD -> kiB
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || true
}

for bin in "$gitopsd_bin" "$etcd_bin" "$apiserver_bin"; do
    [ -x "$bin" ] || die "$bin is missing (cargo build --release; scripts/install-test-deps.sh builds etcd and kube-apiserver)"
done
for tool in git openssl curl kubectl python3 go /usr/bin/time; do
    command -v "$tool" >/dev/null || die "$tool is needed"
done

# --- 1. kustomize-controller and the CRDs --------------------------------------------------
# CONCURRENCY="" runs gitopsd alone (nothing of Flux is built or started).
go_env=(env GOFLAGS=-modcacherw GOPATH="$cache_dir/go" GOMODCACHE="$cache_dir/go/pkg/mod"
    GOCACHE="$cache_dir/go/build" GOTOOLCHAIN=go1.27.3 GOMAXPROCS=1)
if [ -n "$concurrency" ] && [ ! -x "$flux_bin" ]; then
    log "building kustomize-controller $flux_version into $cache_dir/flux (once; a few minutes)"
    build="$cache_dir/flux/build-kc"
    mkdir -p "$build"
    cat >"$build/go.mod" <<EOF
module gitopsd.local/fluxbench

go 1.26.0

require github.com/fluxcd/kustomize-controller $flux_version

// Flux's own replace (kustomize-controller's go.mod): go-digest's master, for BLAKE3.
replace github.com/opencontainers/go-digest => github.com/opencontainers/go-digest v1.0.1-0.20220411205349-bde1400a84be
EOF
    printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/fluxcd/kustomize-controller"\n' >"$build/tools.go"
    (cd "$build" && "${go_env[@]}" go mod tidy &&
        "${go_env[@]}" go build -p 1 -trimpath -o "$flux_bin.tmp" github.com/fluxcd/kustomize-controller &&
        mv "$flux_bin.tmp" "$flux_bin")
fi
crds=()
if [ -n "$concurrency" ]; then
    kc_dir="$("${go_env[@]}" go mod download -json "github.com/fluxcd/kustomize-controller@$flux_version" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')"
    sc_dir="$("${go_env[@]}" go mod download -json "github.com/fluxcd/source-controller@$source_version" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')"
    # kustomize-controller watches every source kind it can read: without their CRDs its
    # caches never sync and it exits after 2 minutes.
    crds=("$kc_dir/config/crd/bases/kustomize.toolkit.fluxcd.io_kustomizations.yaml")
    for kind in gitrepositories ocirepositories buckets externalartifacts; do
        crds+=("$sc_dir/config/crd/bases/source.toolkit.fluxcd.io_$kind.yaml")
    done
    for f in "${crds[@]}"; do [ -f "$f" ] || die "$f is missing"; done
fi

# --- 2. etcd + kube-apiserver -----------------------------------------------------------------
work="$(mktemp -d /tmp/gitopsd-bench-flux.XXXXXX)"
pids=()
cleanup() {
    local pid
    # Clients first, then the API server, then etcd (reverse start order).
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        pid="${pids[$i]}"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    if [ "${KEEP:-0}" = 1 ]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log "work dir $work"
cd "$work"

mkdir pki
(
    cd pki
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
        -out ca.crt -days 2 -subj "/CN=gitopsd bench CA" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key \
        -out server.csr -subj "/CN=127.0.0.1" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
        -extfile server.ext -out server.crt 2>/dev/null
    # Service account tokens are signed with the server key (never used here, but required).
    openssl pkey -pubout -in server.key -out sa.pub
)
printf '%s,bench-admin,1,"system:masters"\n' "$token" >tokens.csv

etcd_port="$(free_port)"
etcd_peer="$(free_port)"
"$etcd_bin" --name=bench --data-dir="$work/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer" \
    --initial-cluster="bench=http://127.0.0.1:$etcd_peer" --unsafe-no-fsync --log-level=warn \
    >etcd.log 2>&1 &
etcd_pid=$!
pids+=("$etcd_pid")
for i in $(seq 100); do
    curl -fsS "http://127.0.0.1:$etcd_port/health" 2>/dev/null | grep -q '"health":"true"' && break
    [ "$i" = 100 ] && { tail etcd.log >&2; die "etcd not healthy"; }
    sleep 0.2
done

api_port="$(free_port)"
server="https://127.0.0.1:$api_port"
"$apiserver_bin" --etcd-servers="http://127.0.0.1:$etcd_port" --etcd-prefix=/bench \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
    --cert-dir="$work/apiserver-certs" --tls-cert-file=pki/server.crt --tls-private-key-file=pki/server.key \
    --token-auth-file=tokens.csv --authorization-mode=RBAC \
    --service-account-issuer=https://kubernetes.default.svc --service-account-key-file=pki/sa.pub \
    --service-account-signing-key-file=pki/server.key --service-cluster-ip-range=10.96.0.0/24 \
    --endpoint-reconciler-type=none --enable-priority-and-fairness=false --profiling=false --v=1 \
    >kube-apiserver.log 2>&1 &
api_pid=$!
pids+=("$api_pid")
for i in $(seq 600); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --cacert pki/ca.crt "$server/readyz")" = 200 ] && break
    kill -0 "$api_pid" 2>/dev/null || { tail kube-apiserver.log >&2; die "kube-apiserver exited"; }
    [ "$i" = 600 ] && die "kube-apiserver not ready after 120 s"
    sleep 0.2
done
cat >admin.kubeconfig <<EOF
apiVersion: v1
kind: Config
clusters:
- name: bench
  cluster: { server: "$server", certificate-authority: "$work/pki/ca.crt" }
users:
- name: admin
  user: { token: "$token" }
contexts:
- name: bench
  context: { cluster: bench, user: admin }
current-context: bench
EOF
export KUBECONFIG="$work/admin.kubeconfig"
log "kube-apiserver $kube_version ready at $server (pid $api_pid)"

# --- 3. the repository and the artifact -------------------------------------------------------
mkdir tree
for ((i = 0; i < n; i++)); do
    mkdir "tree/k$i"
    printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: k%d-a\ndata:\n  i: "%d"\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: k%d-b\ndata:\n  i: "%d"\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: k%d\nspec:\n  clusterIP: None\n  selector: { app: k%d }\n  ports: [{ port: 80 }]\n' \
        "$i" "$i" "$i" "$i" "$i" "$i" >"tree/k$i/objects.yaml"
done
git -C tree init -q -b main
git -C tree add -A
git -C tree -c user.name=bench -c user.email=bench@gitopsd.local commit -q -m fleet
git clone -q --bare tree fleet.git
commit="$(git -C tree rev-parse HEAD)"
mkdir artifacts
# The committed tree (git archive), repacked without git's pax header: entries in name order.
mkdir export
git -C tree archive HEAD | tar -x -C export
tar -C export --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -czf artifacts/fleet.tar.gz .
digest="sha256:$(sha256sum artifacts/fleet.tar.gz | cut -d' ' -f1)"
size="$(stat -c %s artifacts/fleet.tar.gz)"
http_port="$(free_port)"
python3 -m http.server --bind 127.0.0.1 --directory artifacts "$http_port" >http.log 2>&1 &
pids+=("$!")
for i in $(seq 50); do
    curl -fsS -o /dev/null "http://127.0.0.1:$http_port/fleet.tar.gz" 2>/dev/null && break
    [ "$i" = 50 ] && die "artifact server did not start"
    sleep 0.1
done
log "repository: $n kustomizations x 3 objects, commit $commit; artifact $size bytes, $digest"

count_objects() { # count_objects NAMESPACE LABEL_SELECTOR: the fleet's, not gitopsd's inventories
    kubectl get configmaps,services -n "$1" -l "$2" -o name | grep -v '^configmap/gitopsd-inventory\.' | wc -l
}

# --- 4. gitopsd -------------------------------------------------------------------------------
kubectl create namespace bench-gitopsd >/dev/null
{
    cat <<EOF
stateDir: $work/gitopsd-state
server: { listen: "127.0.0.1:$(free_port)" }
kubernetes: { kubeconfig: "$work/admin.kubeconfig" }
configurations:
  - name: fleet
    namespace: bench-gitopsd
    source: { kind: git, url: "file://$work/fleet.git", ref: { branch: main } }
    kustomizations:
EOF
    for ((i = 0; i < n; i++)); do
        echo "      - { name: k$i, path: ./k$i, prune: true, targetNamespace: bench-gitopsd }"
    done
} >gitopsd.yaml

gitopsd_pass() { # gitopsd_pass NAME EXPECTED_ACTION: sets pass_s and pass_rss (kiB)
    local t0 t1 got
    t0="$(now)"
    GITOPSD_LOG=warn /usr/bin/time -v -o "gitopsd-$1.time" \
        "$gitopsd_bin" run --once -o json --config gitopsd.yaml >"gitopsd-$1.json" 2>"gitopsd-$1.log" ||
        { tail -20 "gitopsd-$1.log" >&2; die "gitopsd run --once ($1) failed"; }
    t1="$(now)"
    got="$(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
print(sum(1 for k in r["kustomizations"] for o in (k.get("applied") or []) if o.get("action") == sys.argv[2]))
' "gitopsd-$1.json" "$2")"
    [ "$got" = $((3 * n)) ] || die "gitopsd $1: $got objects $2, expected $((3 * n)) (see $work/gitopsd-$1.json)"
    pass_s="$(secs "$t0" "$t1")"
    pass_rss="$(awk -F': ' '/Maximum resident set size/ { print $2 }' "gitopsd-$1.time")"
}
log "gitopsd: first reconcile"
gitopsd_pass first created
g_first="$pass_s" g_first_rss="$pass_rss"
g_first_api_rss="$(status_field "$api_pid" VmRSS)"
log "gitopsd: no-change pass"
gitopsd_pass again unchanged
g_again="$pass_s" g_again_rss="$pass_rss"
g_objects="$(count_objects bench-gitopsd gitopsd.io/configuration=fleet)"
log "gitopsd: first ${g_first}s $(kib_to_mib "$g_first_rss") MiB; no change ${g_again}s $(kib_to_mib "$g_again_rss") MiB; $g_objects objects in the cluster"

# --- 5. Flux's kustomize-controller -----------------------------------------------------------
if [ -n "$concurrency" ]; then
    for f in "${crds[@]}"; do kubectl apply --server-side -f "$f" >/dev/null; done
    kubectl wait --for=condition=Established --timeout=60s crd --all >/dev/null
fi

# wait_for WAITER_PID CONTROLLER_PID: the waiter's status, or failure when the controller dies.
wait_for() {
    while kill -0 "$1" 2>/dev/null; do
        kill -0 "$2" 2>/dev/null || { kill "$1" 2>/dev/null; return 1; }
        sleep 0.5
    done
    wait "$1"
}
flux_results=()
for c in $concurrency; do
    ns="bench-flux-c$c"
    kubectl create namespace "$ns" >/dev/null
    # The source, as source-controller would leave it after a successful fetch.
    kubectl apply --server-side -f - >/dev/null <<EOF
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: { name: fleet, namespace: $ns }
spec: { interval: 10m, url: "https://git.invalid/fleet", ref: { branch: main } }
EOF
    stamp="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    kubectl patch gitrepository fleet -n "$ns" --subresource=status --type=merge -p "$(
        cat <<EOF
{"status": {
  "observedGeneration": 1,
  "conditions": [
    {"type": "Ready", "status": "True", "reason": "Succeeded", "observedGeneration": 1,
     "lastTransitionTime": "$stamp", "message": "stored artifact for revision 'main@sha1:$commit'"},
    {"type": "ArtifactInStorage", "status": "True", "reason": "Succeeded", "observedGeneration": 1,
     "lastTransitionTime": "$stamp", "message": "stored artifact for revision 'main@sha1:$commit'"}],
  "artifact": {
    "path": "gitrepository/$ns/fleet/$commit.tar.gz",
    "url": "http://127.0.0.1:$http_port/fleet.tar.gz",
    "revision": "main@sha1:$commit",
    "digest": "$digest",
    "size": $size,
    "lastUpdateTime": "$stamp"}}}
EOF
    )" >/dev/null

    # Only this run's Kustomizations (an earlier run's stay in the cluster, Ready).
    metrics_port="$(free_port)"
    health_port="$(free_port)"
    "$flux_bin" --concurrent="$c" --metrics-addr="127.0.0.1:$metrics_port" \
        --health-addr="127.0.0.1:$health_port" --enable-leader-election=false \
        --watch-label-selector="bench.gitopsd.io/run=c$c" --log-level=info --log-encoding=json \
        >"kustomize-controller-c$c.log" 2>&1 &
    kc_pid=$!
    pids+=("$kc_pid")
    for i in $(seq 300); do
        curl -fsS -o /dev/null "http://127.0.0.1:$health_port/readyz" 2>/dev/null && break
        kill -0 "$kc_pid" 2>/dev/null || { tail "kustomize-controller-c$c.log" >&2; die "kustomize-controller exited"; }
        [ "$i" = 300 ] && die "kustomize-controller not ready after 60 s"
        sleep 0.2
    done
    # Its caches synced and its workers run: the controller's start is not part of the time.
    for i in $(seq 600); do
        grep -q '"Starting workers"' "kustomize-controller-c$c.log" && break
        kill -0 "$kc_pid" 2>/dev/null || { tail "kustomize-controller-c$c.log" >&2; die "kustomize-controller exited"; }
        [ "$i" = 600 ] && die "kustomize-controller did not start its workers after 120 s"
        sleep 0.2
    done
    kc_idle_rss="$(status_field "$kc_pid" VmRSS)"

    for ((i = 0; i < n; i++)); do
        cat <<EOF
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: { name: k$i, namespace: $ns, labels: { bench.gitopsd.io/run: c$c } }
spec:
  interval: 10m
  prune: true
  path: ./k$i
  targetNamespace: $ns
  sourceRef: { kind: GitRepository, name: fleet }
EOF
    done >"flux-c$c.yaml"

    log "flux --concurrent=$c: creating $n Kustomizations (controller idle at $(kib_to_mib "$kc_idle_rss") MiB)"
    python3 "$here/wait_ready.py" "$server" "$work/pki/ca.crt" "$token" "$ns" "$n" 1800 "" "$kc_pid" \
        >"wait-c$c.json" 2>"wait-c$c.log" &
    waiter=$!
    pids+=("$waiter")
    t0="$(now)"
    kubectl apply --server-side -f "flux-c$c.yaml" >/dev/null
    t_created="$(now)"
    wait_for "$waiter" "$kc_pid" || { cat "wait-c$c.json" "wait-c$c.log" >&2; tail -5 "kustomize-controller-c$c.log" >&2; die "flux c$c: not all Ready"; }
    last="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["last_ready_at"])' "wait-c$c.json")"
    f_first="$(secs "$t0" "$last")"
    f_create="$(secs "$t0" "$t_created")"
    f_first_rss="$(status_field "$kc_pid" VmHWM)"
    f_api_rss="$(status_field "$api_pid" VmRSS)"
    f_objects="$(count_objects "$ns" "kustomize.toolkit.fluxcd.io/namespace=$ns")"
    log "flux --concurrent=$c: all $n Ready after ${f_first}s (creation took ${f_create}s); peak RSS $(kib_to_mib "$f_first_rss") MiB; $f_objects objects"

    f_again="-"
    f_again_rss="-"
    if [ "${FLUX_NO_CHANGE:-1}" = 1 ]; then
        # The no-change pass: ask every Kustomization to reconcile now (what `flux reconcile`
        # does), at the same revision; wait until each handled the request and is Ready.
        requested="bench-$(date +%s%N)"
        python3 "$here/wait_ready.py" "$server" "$work/pki/ca.crt" "$token" "$ns" "$n" 1800 "$requested" \
            >"wait-again-c$c.json" 2>"wait-again-c$c.log" &
        waiter=$!
        pids+=("$waiter")
        t0="$(now)"
        kubectl annotate kustomizations -n "$ns" --all --overwrite "reconcile.fluxcd.io/requestedAt=$requested" >/dev/null
        t_annotated="$(now)"
        wait_for "$waiter" "$kc_pid" || { cat "wait-again-c$c.json" >&2; tail -5 "kustomize-controller-c$c.log" >&2; die "flux c$c: the no-change pass did not finish"; }
        last="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["last_ready_at"])' "wait-again-c$c.json")"
        f_again="$(secs "$t0" "$last")"
        f_again_rss="$(kib_to_mib "$(status_field "$kc_pid" VmHWM)")"
        log "flux --concurrent=$c: no-change pass ${f_again}s (annotating took $(secs "$t0" "$t_annotated")s); peak RSS so far $f_again_rss MiB"
    fi
    kill "$kc_pid"
    wait "$kc_pid" 2>/dev/null || true
    flux_results+=("$c|$f_first|$f_create|$(kib_to_mib "$f_first_rss")|$f_again|$f_again_rss|$f_objects|$(kib_to_mib "$f_api_rss")")
done

# --- report -----------------------------------------------------------------------------------
api_hwm="$(status_field "$api_pid" VmHWM)"
echo
echo "fleet: $n kustomizations x 3 objects (2 ConfigMaps + 1 headless Service) from one source"
echo "kube-apiserver/etcd $kube_version on loopback; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "gitopsd: $gitopsd_bin ($("$gitopsd_bin" --version 2>/dev/null | head -1)), renders with $(command -v kustomize || command -v kubectl)"
echo "flux:    kustomize-controller $flux_version ($flux_bin), artifact served over HTTP (no source-controller)"
echo
printf '%-44s %12s %14s %16s %12s %10s\n' "contender" "first (s)" "peak RSS (MiB)" "no-change (s)" "peak (MiB)" "objects"
printf '%-44s %12s %14s %16s %12s %10s\n' "gitopsd run --once" "$g_first" "$(kib_to_mib "$g_first_rss")" "$g_again" "$(kib_to_mib "$g_again_rss")" "$g_objects"
for r in "${flux_results[@]}"; do
    IFS='|' read -r c first create rss again again_rss objects api <<<"$r"
    printf '%-44s %12s %14s %16s %12s %10s\n' "kustomize-controller --concurrent=$c" "$first" "$rss" "$again" "$again_rss" "$objects"
done
echo
echo "flux first = from the start of creating the Kustomizations (kubectl apply --server-side of $n objects) until the last reports Ready=True"
echo "flux no-change = from annotating all with reconcile.fluxcd.io/requestedAt until the last handled it; its RSS is VmHWM since the start (the first pass included)"
echo "gitopsd times and RSS: the whole process (fetch, $n renders, apply), GNU time's maximum resident set size"
echo "kube-apiserver RSS: $(kib_to_mib "$g_first_api_rss") MiB after gitopsd's first pass; $(for r in "${flux_results[@]}"; do IFS='|' read -r c _ _ _ _ _ _ api <<<"$r"; printf 'after flux c%s: %s MiB; ' "$c" "$api"; done)peak $(kib_to_mib "$api_hwm") MiB"
