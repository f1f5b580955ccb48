#!/usr/bin/env bash
# Runs Courier on this machine without Docker: the API and two workers against Redis and
# PostgreSQL. Uses the Redis and PostgreSQL already listening on the standard ports when
# they answer; otherwise starts private ones under .dev/ (PostgreSQL on port 55432, Redis
# on 56379) and stops them again on exit. Ctrl-C stops everything this script started.
#
# Environment:
#   PORT             the API's port (default 8080)
#   DEV_PG_USER      user for a PostgreSQL already on 127.0.0.1:5432 (default postgres)
#   DEV_PG_PASSWORD  its password, if it has one (default: none, trust auth)
# Logs: .dev/logs/{api,worker-1,worker-2,redis}.log
# Secrets: .dev/encryption-key (seals secret job headers at rest) and .dev/api-key (an admin
# API key, made with `courier-api keys create` on the first run); both kept between runs.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
DEV=$ROOT/.dev
LOGS=$DEV/logs
PORT=${PORT:-8080}
DEV_PG_PORT=55432
DEV_REDIS_PORT=56379

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'dev.sh: %s\n' "$*" >&2; exit 1; }
is_root() { [[ $(id -u) -eq 0 ]]; }

# What this script started, for cleanup.
pids=()
started_redis_port=""
started_pg_data=""
PGBIN=""

# Runs a PostgreSQL server binary as the `postgres` user when we are root (the server
# refuses to run as root), as ourselves otherwise.
as_pg() {
    if is_root; then
        if command -v runuser >/dev/null 2>&1; then
            (cd / && runuser -u postgres -- "$@")
        else
            (cd / && su postgres -s /bin/sh -c "$(printf '%q ' "$@")")
        fi
    else
        "$@"
    fi
}

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    local rc=$?
    set +e
    trap - EXIT
    # A second Ctrl-C while the workers drain kills them at once.
    trap 'log "forcing"; kill -KILL "${pids[@]}" 2>/dev/null' INT TERM
    if ((${#pids[@]})); then
        log "stopping Courier (workers finish calls in flight for up to 100 s; Ctrl-C again to force)"
        kill -TERM "${pids[@]}" 2>/dev/null
        for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
    fi
    if [[ -n $started_redis_port ]]; then
        log "stopping Redis on port $started_redis_port"
        redis-cli -h 127.0.0.1 -p "$started_redis_port" shutdown >/dev/null 2>&1
    fi
    if [[ -n $started_pg_data ]]; then
        log "stopping PostgreSQL on port $DEV_PG_PORT"
        as_pg "$PGBIN/pg_ctl" -D "$started_pg_data" -m fast -w stop >/dev/null 2>&1
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- tools --------------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1; then
    cat >&2 <<'EOF'
dev.sh: cargo is not installed. Install the Rust toolchain with rustup (https://rustup.rs):

    apt-get install -y curl build-essential pkg-config
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh
    . "$HOME/.cargo/env"

then run scripts/dev.sh again.
EOF
    exit 1
fi

# The newest PostgreSQL server installation (the client package alone has no initdb).
pg_bindir() {
    local d
    for d in /usr/lib/postgresql/*/bin; do if [[ -x $d/initdb ]]; then echo "$d"; fi; done | sort -V | tail -n 1
}

missing=()
{ command -v redis-server && command -v redis-cli; } >/dev/null 2>&1 || missing+=(redis-server)
{ [[ -n $(pg_bindir) ]] && command -v psql && command -v pg_isready; } >/dev/null 2>&1 || missing+=(postgresql)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if ((${#missing[@]})); then
    if is_root; then
        log "installing ${missing[*]}"
        apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
    else
        die "missing ${missing[*]}; install with: sudo apt-get install -y ${missing[*]}"
    fi
fi
PGBIN=$(pg_bindir)
mkdir -p "$LOGS"

# --- PostgreSQL ---------------------------------------------------------------------------
pg_user=${DEV_PG_USER:-postgres}
[[ -n ${DEV_PG_PASSWORD:-} ]] && export PGPASSWORD=$DEV_PG_PASSWORD
pg_connects() { # port
    psql "host=127.0.0.1 port=$1 user=$pg_user dbname=postgres connect_timeout=5" \
        -qtAc 'SELECT 1' >/dev/null 2>&1
}

if pg_isready -q -h 127.0.0.1 -p 5432 && pg_connects 5432; then
    pg_port=5432
    log "using the PostgreSQL on 127.0.0.1:5432 as $pg_user"
else
    if pg_isready -q -h 127.0.0.1 -p 5432; then
        log "PostgreSQL on 127.0.0.1:5432 refuses $pg_user without a password (set DEV_PG_USER/DEV_PG_PASSWORD to use it); starting a private one"
    fi
    pg_user=postgres
    unset PGPASSWORD
    pg_port=$DEV_PG_PORT
    if pg_isready -q -h 127.0.0.1 -p "$pg_port" && pg_connects "$pg_port"; then
        log "using the PostgreSQL already running on 127.0.0.1:$pg_port (left over from an earlier run)"
    else
        pg_root=$DEV/pg
        mkdir -p "$pg_root"
        if is_root; then
            id postgres >/dev/null 2>&1 || die "no postgres user: is the postgresql package installed?"
            chown -R postgres:postgres "$pg_root"
            if ! as_pg test -w "$pg_root"; then
                # The postgres user cannot reach the work tree (under /root, say).
                pg_root=/var/lib/postgresql/courier-dev
                mkdir -p "$pg_root"
                chown -R postgres:postgres "$pg_root"
                log "the postgres user cannot reach $DEV/pg; keeping the cluster in $pg_root"
            fi
        fi
        pg_data=$pg_root/data
        pg_sock=$pg_root/run
        ((${#pg_sock} > 80)) && pg_sock=/tmp
        as_pg mkdir -p "$pg_sock"
        if [[ ! -f $pg_data/PG_VERSION ]]; then
            log "creating a PostgreSQL cluster in $pg_data"
            as_pg "$PGBIN/initdb" -D "$pg_data" -U postgres --auth=trust -E UTF8 --locale=C \
                >"$pg_root/initdb.log" 2>&1 || { cat "$pg_root/initdb.log" >&2; die "initdb failed"; }
        fi
        log "starting PostgreSQL on 127.0.0.1:$pg_port"
        started_pg_data=$pg_data
        as_pg "$PGBIN/pg_ctl" -D "$pg_data" -l "$pg_root/postgres.log" -w -t 60 \
            -o "-p $pg_port -c listen_addresses=127.0.0.1 -k '$pg_sock'" start >/dev/null ||
            { tail -n 30 "$pg_root/postgres.log" >&2 || true; die "PostgreSQL did not start (log: $pg_root/postgres.log)"; }
    fi
fi

psql_admin() {
    psql "host=127.0.0.1 port=$pg_port user=$pg_user dbname=postgres" -v ON_ERROR_STOP=1 -qtA "$@"
}
if [[ $(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = 'courier_dev'") != 1 ]]; then
    log "creating database courier_dev"
    psql_admin -c 'CREATE DATABASE courier_dev' >/dev/null
fi
if [[ -n ${PGPASSWORD:-} ]]; then
    DATABASE_URL="postgres://$pg_user:$PGPASSWORD@127.0.0.1:$pg_port/courier_dev"
else
    DATABASE_URL="postgres://$pg_user@127.0.0.1:$pg_port/courier_dev"
fi

# --- Redis --------------------------------------------------------------------------------
redis_answers() { [[ $(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null) == PONG ]]; }
if [[ ${DEV_OWN_REDIS:-} != 1 ]] && redis_answers 6379; then
    redis_port=6379
    if [[ $(redis-cli -h 127.0.0.1 -p 6379 config get appendonly 2>/dev/null | tail -n 1) != yes ]]; then
        log "using the Redis on 127.0.0.1:6379; it keeps nothing on disk (AOF off), so Courier warns at start. DEV_OWN_REDIS=1 starts one of this script's own with AOF on"
    else
        log "using the Redis on 127.0.0.1:6379"
    fi
elif redis_answers "$DEV_REDIS_PORT"; then
    redis_port=$DEV_REDIS_PORT
    log "using the Redis already running on 127.0.0.1:$redis_port (left over from an earlier run)"
else
    redis_port=$DEV_REDIS_PORT
    mkdir -p "$DEV/redis"
    log "starting Redis on 127.0.0.1:$redis_port (AOF on, data in .dev/redis)"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$redis_port" --dir "$DEV/redis" \
        --appendonly yes --appendfsync everysec --maxmemory-policy noeviction --save "" \
        --pidfile "$DEV/redis/redis.pid" --logfile "$LOGS/redis.log"
    started_redis_port=$redis_port
    for _ in $(seq 1 50); do redis_answers "$redis_port" && break; sleep 0.2; done
    redis_answers "$redis_port" || { tail -n 20 "$LOGS/redis.log" >&2; die "Redis did not start"; }
fi
REDIS_URL="redis://127.0.0.1:$redis_port"

# --- build --------------------------------------------------------------------------------
# The whole workspace, as bench/run.sh builds it (`-p` of a few packages resolves
# features differently, and rebuilt every dependency): the API, the workers and the
# `courier` CLI. --quiet: one line here instead of hundreds of `Compiling`; errors show.
if [[ -x target/release/courier-api && -x target/release/courier-worker && -x target/release/courier ]]; then
    log "building (release; up to date in seconds unless the sources changed)"
else
    log "building the API, the worker and the courier CLI (release; the first build takes about 10 minutes on 2 cores, later ones seconds)"
fi
# sqlx checks queries against the committed .sqlx/ data, not the (not yet migrated) database.
SQLX_OFFLINE=${SQLX_OFFLINE:-true} cargo build --release --locked --workspace --bins --quiet
api_bin=$ROOT/target/release/courier-api
worker_bin=$ROOT/target/release/courier-worker

# --- run ----------------------------------------------------------------------------------
export DATABASE_URL REDIS_URL
# Secret job headers are sealed with this key; keeping it between runs keeps queued jobs
# readable. Production sets its own (see README, Security).
if [[ ! -s $DEV/encryption-key ]]; then
    (umask 077 && head -c 32 /dev/urandom | base64 >"$DEV/encryption-key")
fi
COURIER__SECRETS__ENCRYPTION_KEY=$(cat "$DEV/encryption-key")
export COURIER__SECRETS__ENCRYPTION_KEY
export COURIER__TELEMETRY__FORMAT=pretty
export COURIER__SERVER__PORT=$PORT
# Development instance: listen on loopback only unless told otherwise.
export COURIER__SERVER__HOST=${COURIER__SERVER__HOST:-127.0.0.1}
# SSRF protection refuses loopback; a development instance calls targets on this machine
# (the walk-through calls Courier's own /healthz), so allow it here and nowhere else.
export COURIER__OUTBOUND__ALLOW=${COURIER__OUTBOUND__ALLOW:-127.0.0.0/8,::1/128}
# Targets on this machine reach the API here to report progress (X-Courier-Progress-Url).
export COURIER__SERVER__PUBLIC_URL=${COURIER__SERVER__PUBLIC_URL:-http://127.0.0.1:$PORT}

log "applying migrations"
"$api_bin" migrate

# The first API key: made once with `courier-api keys create`, kept in .dev/api-key.
key_works() {
    [[ -s $DEV/api-key ]] && "$api_bin" keys list 2>/dev/null |
        awk -F'\t' -v p="$(head -c 16 "$DEV/api-key")" '$2 == p && $8 == "-" { found = 1 } END { exit !found }'
}
if ! key_works; then
    log "creating an admin API key (courier-api keys create --name dev --scope admin) in .dev/api-key"
    (umask 077 && "$api_bin" keys create --name dev --scope admin >"$DEV/api-key" 2>/dev/null)
fi
API_KEY=$(cat "$DEV/api-key")

log "starting the API on port $PORT and two workers (logs in .dev/logs/)"
"$api_bin" serve >"$LOGS/api.log" 2>&1 &
api_pid=$!
pids+=("$api_pid")
for i in 1 2; do
    # Each worker serves /metrics on a port of its own: 9464 and 9465.
    COURIER__WORKER__METRICS_HOST=127.0.0.1 COURIER__WORKER__METRICS_PORT=$((9463 + i)) \
        "$worker_bin" >"$LOGS/worker-$i.log" 2>&1 &
    pids+=("$!")
done

base="http://127.0.0.1:$PORT"
deadline=$((SECONDS + 60))
until curl -fsS --max-time 5 "$base/readyz" >/dev/null 2>&1; do
    if ! kill -0 "$api_pid" 2>/dev/null; then
        tail -n 40 "$LOGS/api.log" >&2
        die "the API exited (log: .dev/logs/api.log)"
    fi
    if ((SECONDS >= deadline)); then
        tail -n 40 "$LOGS/api.log" >&2
        curl -sS --max-time 5 "$base/readyz" >&2 || true
        die "the API was not ready within 60 s (log: .dev/logs/api.log)"
    fi
    sleep 0.5
done
for i in 1 2; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
        tail -n 40 "$LOGS/worker-$i.log" >&2
        die "worker $i exited (log: .dev/logs/worker-$i.log)"
    fi
done

cat <<EOF

Courier is running at $base
  PostgreSQL  $DATABASE_URL
  Redis       $REDIS_URL
  API key     $API_KEY  (admin; also in .dev/api-key)
  logs        .dev/logs/api.log, .dev/logs/worker-1.log, .dev/logs/worker-2.log
  dashboard   $base/ui/  (sign in with the API key)
  metrics     $base/metrics, http://127.0.0.1:9464/metrics, http://127.0.0.1:9465/metrics

Try it (needs jq: apt-get install jq). Targets on this machine (127.0.0.0/8) are allowed
in development; point it at an endpoint of yours:

  export COURIER_KEY=\$(cat .dev/api-key)
  id=\$(curl -fsS -X POST $base/v1/jobs -H "Authorization: Bearer \$COURIER_KEY" \\
        -H 'Content-Type: application/json' \\
        -d '{"target":{"url":"$base/healthz","method":"GET"}}' | jq -r .id)
  curl -fsS -H "Authorization: Bearer \$COURIER_KEY" $base/v1/jobs/\$id
  curl -fsS -H "Authorization: Bearer \$COURIER_KEY" $base/v1/jobs/\$id/executions
  curl -fsS -H "Authorization: Bearer \$COURIER_KEY" $base/v1/queues

The courier CLI is built too; put it on PATH for this shell, and it finds the key:

  export PATH=\$PWD/target/release:\$PATH COURIER_API_KEY=\$(cat .dev/api-key)
  courier list

More keys: target/release/courier-api keys create --name NAME --scope read|write|admin

Press Ctrl-C to stop.
EOF

# Runs until Ctrl-C, or until one of the processes exits on its own.
status=0
wait -n "${pids[@]}" || status=$?
log "a Courier process exited with status $status; stopping the rest"
exit $((status == 0 ? 1 : status))
