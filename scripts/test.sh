#!/usr/bin/env bash
# The test command: installs what the integration tests need (a no-op when it is all there),
# then runs every test target. Arguments, if any, replace `--all-targets`:
#   bash scripts/test.sh                  # everything
#   bash scripts/test.sh --test integration harness::   # one area of the integration tests
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

cache_dir="${GITOPSD_CACHE:-$HOME/.cache/gitopsd}"

bash scripts/install-test-deps.sh

# Daemons live in sbin; a kustomize built by install-test-deps.sh (when there is no kubectl
# and /usr/local/bin is not writable) lives in the cache.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin:$cache_dir/bin"

# CI builds a fresh clone each time: sharing one target dir in the cache across runs on the
# same machine saves rebuilding every dependency. Developers keep ./target (shared with their
# own cargo commands), and an explicit CARGO_TARGET_DIR always wins. The cache only speeds
# things up: a missing or wiped one means a full build, nothing worse.
if [ -z "${CARGO_TARGET_DIR:-}" ] && [ -n "${CI:-}" ]; then
    export CARGO_TARGET_DIR="$cache_dir/target"
    # Each clone path adds its own copy of the crate's artifacts: bound the growth.
    max_kib=$((20 * 1024 * 1024))
    if [ -d "$CARGO_TARGET_DIR" ]; then
        used_kib="$(du -sk "$CARGO_TARGET_DIR" 2>/dev/null | cut -f1)"
        if [ "${used_kib:-0}" -gt "$max_kib" ]; then
            echo "test.sh: $CARGO_TARGET_DIR is over 20 GiB; starting it afresh"
            rm -rf "$CARGO_TARGET_DIR"
        fi
    fi
fi
echo "test.sh: target dir ${CARGO_TARGET_DIR:-$repo_root/target}"
echo "test.sh: $(git --version), $(nginx -v 2>&1), $(cargo --version)"

if [ "$#" -eq 0 ]; then
    set -- --all-targets --no-fail-fast
    # The whole run also holds the code to its style and lint bar; a one-file run skips them.
    cargo fmt --check
    cargo clippy --all-targets -- -D warnings
fi
# Keep cargo's own output, and close with one summary line over every test binary.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed/) p += $(i-1); if ($(i) ~ /^failed/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
