#!/usr/bin/env bash
# Checks, without a Docker engine, that each Dockerfile's build stage copies everything
# cargo needs: it copies the sources its COPY lines name (as the build context would
# hold them) into an empty directory and asks cargo to load the workspace there, with
# the lock file as committed. A workspace member, a patched crate or the lock file left
# out of the image fails here instead of in `docker build`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

for dockerfile in Dockerfile.api Dockerfile.worker; do
    context=$(mktemp -d)
    trap 'rm -rf "$context"' EXIT
    # COPY lines of the build stage (not COPY --from=...): sources, then the destination.
    while read -r -a words; do
        sources=("${words[@]:1:${#words[@]}-2}")
        dest=${words[-1]}
        for src in "${sources[@]}"; do
            target=$context/$dest
            [[ $dest == ./ ]] && target=$context/$src
            mkdir -p "$(dirname "$target")"
            cp -r "$src" "$target"
        done
    done < <(grep -E '^COPY [^-]' "$dockerfile")
    rm -rf "$context/target" "$context"/bench/*/target
    # The binaries' dependency graph for Linux, resolved from the lock file (and the
    # [patch] sources) alone: no download, no build.
    binary=${dockerfile#Dockerfile.}
    if ! (cd "$context" && cargo tree --locked --offline -p "courier-$binary" \
        --target x86_64-unknown-linux-gnu -e normal,build --depth 0 >/dev/null); then
        echo "check-docker-context: $dockerfile does not copy what the workspace needs" >&2
        exit 1
    fi
    echo "check-docker-context: $dockerfile: the workspace loads from what it copies"
    rm -rf "$context"
    trap - EXIT
done
