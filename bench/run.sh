#!/usr/bin/env bash
# One command for issue 4's benchmarks, Courier and BullMQ side by side:
#
#   bench/run.sh                      # every scenario at full size (release build)
#   bench/run.sh --scenarios drain    # some of them (see --help)
#   bench/run.sh --systems courier    # one side only
#   bench/run.sh --tiny               # each scenario once, tiny (CI; uses the debug build)
#
# It builds Courier, installs the BullMQ peer from npm into bench/peers/bullmq
# (node_modules is not committed), starts its own redis-server and target server, makes
# its databases on the PostgreSQL of TEST_DATABASE_URL (default: postgres on
# 127.0.0.1:5432), and prints a Markdown table; the JSON and the logs go to bench/results/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

profile=release
for arg in "$@"; do
    [[ $arg == --tiny ]] && profile=debug
done

export SQLX_OFFLINE=true
# The whole workspace, as scripts/test.sh builds it: the same features, so in CI (which
# has just built the debug binaries) this is a no-op.
if [[ $profile == release ]]; then
    cargo build --release --locked --workspace --bins
else
    cargo build --locked --workspace --bins
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]]; then
        echo "bench/run.sh: installing Node.js and npm for the BullMQ peer" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
    else
        echo "bench/run.sh: Node.js is missing: sudo apt-get install nodejs npm" >&2
        exit 1
    fi
fi
peer=bench/peers/bullmq
if [[ ! -d $peer/node_modules ]] || [[ $peer/package-lock.json -nt $peer/node_modules ]]; then
    echo "bench/run.sh: npm ci in $peer" >&2
    (cd "$peer" && npm ci --no-audit --no-fund --loglevel=error)
    touch "$peer/node_modules"
fi

# 10,000 calls in flight need as many sockets in the worker and in the target.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec "target/$profile/courier-bench" "$@"
