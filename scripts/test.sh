#!/usr/bin/env bash
# Runs every check and test of the workspace: rustfmt, clippy, the binaries' build, the
# whole test suite under cargo-nextest (unit and integration tests against a real Redis
# and PostgreSQL), the tiny benchmark when bench/run.sh exists, then Docker Compose run
# for real (scripts/compose-check.sh). CI runs it through .ci/run.
#
# Services: tests reach PostgreSQL through TEST_DATABASE_URL (they create their own
# databases through it) and Redis through TEST_REDIS_URL. Left unset, they default to
# the local servers on 127.0.0.1:5432 (user postgres, trust auth) and 127.0.0.1:6379,
# which this script installs (as root, from Debian's packages) and starts when they are
# not running.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

T0=$SECONDS
current_step="setup"
elapsed() { local s=$((SECONDS - ${1:-$T0})); printf '%dm%02ds' $((s / 60)) $((s % 60)); }
say() { printf '==> %s\n' "$*"; }
die() { printf 'test.sh: %s\n' "$*" >&2; exit 1; }
is_root() { [[ $(id -u) -eq 0 ]]; }

on_exit() {
    local rc=$?
    if ((rc != 0)); then
        printf '\ntest.sh: FAILED in step "%s" (exit %d) after %s\n' "$current_step" "$rc" "$(elapsed)" >&2
    fi
}
trap on_exit EXIT

# Runs one step under a timed header: step "title" command args...
step() {
    local title=$1 t=$SECONDS
    shift
    current_step=$title
    printf '\n=== [%s +%s] %s\n' "$(date -u +%H:%M:%S)" "$(elapsed)" "$title"
    "$@"
    printf '=== %s: ok in %s\n' "$title" "$(elapsed "$t")"
}

# --- tools ----------------------------------------------------------------------------------
missing=()
{ command -v redis-server && command -v redis-cli; } >/dev/null 2>&1 || missing+=(redis-server)
{ command -v psql && command -v pg_isready && command -v pg_ctlcluster; } >/dev/null 2>&1 || missing+=(postgresql)
# Python runs reference tools against Courier (schemathesis, Standard Webhooks).
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3 python3-venv)
# The dashboard's browser test drives Debian's chromium (never a downloaded browser).
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if ((${#missing[@]})); then
    is_root || die "missing ${missing[*]}; install with: sudo apt-get install -y ${missing[*]}"
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null 2>&1 || die "cargo is not installed (see https://rustup.rs)"
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        say "installing the $component component"
        rustup component add "$component"
    fi
done
if ! cargo nextest --version >/dev/null 2>&1; then
    say "installing cargo-nextest"
    cargo install cargo-nextest --locked
fi
say "Python test tools in target/pyenv (scripts/python-tools.txt)"
scripts/python-tools.sh
export SCHEMATHESIS=$PWD/target/pyenv/bin/schemathesis

# --- PostgreSQL -------------------------------------------------------------------------------
DEFAULT_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres
export TEST_DATABASE_URL=${TEST_DATABASE_URL:-$DEFAULT_DATABASE_URL}

pg_connects() { psql "$TEST_DATABASE_URL" -qtAc 'SELECT 1' >/dev/null 2>&1; }
wait_for() { # seconds command...
    local n=$(($1 * 5))
    shift
    for _ in $(seq 1 "$n"); do "$@" && return 0; sleep 0.2; done
    "$@"
}
# Version and name of the cluster on port 5432 ("15 main"), or of the first one found.
local_cluster() {
    local found
    found=$(pg_lsclusters -h 2>/dev/null | awk '$3 == 5432 { print $1, $2; exit }')
    if [[ -z $found ]]; then
        found=$(pg_lsclusters -h 2>/dev/null | awk '{ print $1, $2; exit }')
    fi
    printf '%s' "$found"
}

if [[ $TEST_DATABASE_URL == "$DEFAULT_DATABASE_URL" ]]; then
    if ! pg_isready -q -h 127.0.0.1 -p 5432; then
        is_root || die "no PostgreSQL on 127.0.0.1:5432; start one or set TEST_DATABASE_URL"
        cluster=$(local_cluster)
        if [[ -z $cluster ]]; then
            version=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)
            say "creating PostgreSQL cluster $version/main"
            pg_createcluster --port 5432 "$version" main >/dev/null
            cluster="$version main"
        fi
        say "starting PostgreSQL cluster ${cluster/ //}"
        # shellcheck disable=SC2086  # "version name"
        pg_ctlcluster --skip-systemctl-redirect $cluster start
        wait_for 30 pg_isready -q -h 127.0.0.1 -p 5432 || die "PostgreSQL did not come up on 127.0.0.1:5432"
    fi
    if ! pg_connects; then
        # A stock Debian cluster asks for a password over TCP; the tests expect trust auth.
        is_root || die "cannot connect to $TEST_DATABASE_URL (trust auth for 127.0.0.1 expected)"
        cluster=$(local_cluster)
        [[ -n $cluster ]] || die "cannot connect to $TEST_DATABASE_URL, and no local cluster to configure"
        hba=/etc/postgresql/${cluster/ //}/pg_hba.conf
        [[ -f $hba ]] || die "cannot connect to $TEST_DATABASE_URL, and $hba does not exist"
        say "allowing trust auth from 127.0.0.1 in $hba"
        # pg_hba.conf is read top down, first match wins: put the line before every rule.
        awk 'BEGIN { done = 0 }
             !done && /^[[:space:]]*(local|host)/ {
                 print "# Added by scripts/test.sh: the tests connect as postgres without a password."
                 print "host all all 127.0.0.1/32 trust"
                 done = 1
             }
             { print }
             END { if (!done) print "host all all 127.0.0.1/32 trust" }' "$hba" >"$hba.new"
        cat "$hba.new" >"$hba"
        rm -f "$hba.new"
        # shellcheck disable=SC2086
        pg_ctlcluster --skip-systemctl-redirect $cluster reload
        wait_for 10 pg_connects || die "still cannot connect to $TEST_DATABASE_URL"
    fi
fi

# --- Redis ------------------------------------------------------------------------------------
DEFAULT_REDIS_URL=redis://127.0.0.1:6379
export TEST_REDIS_URL=${TEST_REDIS_URL:-$DEFAULT_REDIS_URL}
redis_answers() { [[ $(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null) == PONG ]]; }
if [[ $TEST_REDIS_URL == "$DEFAULT_REDIS_URL" ]] && ! redis_answers; then
    say "starting Redis on 127.0.0.1:6379"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
        --dir /tmp --logfile /tmp/courier-test-redis.log
    wait_for 10 redis_answers || die "Redis did not come up on 127.0.0.1:6379"
fi

# --- environment --------------------------------------------------------------------------------
# Builds use the committed .sqlx/ query data, never a live database.
export SQLX_OFFLINE=true
if [[ -n ${CI:-} ]]; then
    export CARGO_TERM_COLOR=never
fi
# Never print a password that the URLs may carry.
redact_url() { sed -E 's#(://[^:/@]*):[^@/]*@#\1:[redacted]@#' <<<"$1"; }
say "PostgreSQL: $(redact_url "$TEST_DATABASE_URL")"
say "Redis:      $(redact_url "$TEST_REDIS_URL")"

# Each test makes its own database and Redis prefix; clear what earlier runs left.
if [[ $TEST_DATABASE_URL == "$DEFAULT_DATABASE_URL" ]]; then
    psql "$TEST_DATABASE_URL" -qtAc "SELECT datname FROM pg_database WHERE datname LIKE 'courier\_test\_%'" |
        while read -r db; do psql "$TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS \"$db\"" >/dev/null; done
fi
if [[ $TEST_REDIS_URL == "$DEFAULT_REDIS_URL" ]]; then
    redis-cli -h 127.0.0.1 -p 6379 --scan --pattern 'ct_*' | xargs -r -n 500 redis-cli -h 127.0.0.1 -p 6379 del >/dev/null
fi

# --- checks and tests -----------------------------------------------------------------------
step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
# The integration tests spawn the courier-api and courier-worker binaries.
step "cargo build (binaries)" cargo build --workspace --locked --bins
step "Docker build contexts" scripts/check-docker-context.sh
step "Deployment manifests" scripts/check-deploy.sh
step "cargo nextest" cargo nextest run --workspace --locked --no-fail-fast --profile ci
if [[ -x bench/run.sh ]]; then
    step "bench/run.sh --tiny" bench/run.sh --tiny
fi
# Docker Compose for real: the images built from the Dockerfiles, the stack brought up
# on a private Docker engine and put through faults (COURIER_SKIP_COMPOSE=1 skips it,
# for a quick local run; CI never sets it).
if [[ ${COURIER_SKIP_COMPOSE:-} != 1 ]]; then
    step "Docker Compose (scripts/compose-check.sh)" scripts/compose-check.sh
fi

current_step="done"
printf '\n=== all checks passed in %s\n' "$(elapsed)"
