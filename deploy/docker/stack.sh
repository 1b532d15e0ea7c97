#!/usr/bin/env bash
# Build and start (up), or stop (down), the Docker stack of docker-compose.yml.
#   deploy/docker/stack.sh build|up|down|purge       (make stack / make stack-down)
# Settings of this script (the stack's own settings are in the env file):
#   ENV_FILE    the stack's settings and secrets (default deploy/docker/.env)
#   BASE_IMAGE  base of the images: debian:bookworm-slim (official, pulled), or `local`: a
#               Debian base made here with debootstrap (no registry needed), reused once made
#   EXTRA_CA    a PEM file of extra CA certificates for pip during the build (an intercepting
#               HTTPS proxy); passed as a build secret, never stored in an image
#   COMPOSE_FILES  more compose files over docker-compose.yml, space separated, relative to
#               deploy/docker (docker-compose.sandbox.yml: the sandbox as a service)
#   DOCKER      the docker CLI (default: docker); COMPOSE: the compose command (default:
#               `docker compose` where it exists, else docker-compose)
# down removes the stack's containers, networks and any run container left behind (a run's
# container is removed when its run ends, dagster.yaml); purge also removes the volumes.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
DOCKER="${DOCKER:-docker}"
ENV_FILE="${ENV_FILE:-$here/.env}"
BASE_IMAGE="${BASE_IMAGE:-debian:bookworm-slim}"
if [ -z "${COMPOSE:-}" ]; then
  if "$DOCKER" compose version >/dev/null 2>&1; then COMPOSE="$DOCKER compose"; else COMPOSE=docker-compose; fi
fi
compose() {
  local files=(-f "$here/docker-compose.yml") extra
  for extra in ${COMPOSE_FILES:-}; do files+=(-f "$here/$extra"); done
  $COMPOSE -p calltexts "${files[@]}" --env-file "$ENV_FILE" "$@"
}

build() {
  local base="$BASE_IMAGE" secret=()
  if [ "$base" = local ]; then
    base=calltexts-base:bookworm
    DOCKER="$DOCKER" "$here/base/make-base.sh" "$base"
  fi
  if [ -n "${EXTRA_CA:-}" ]; then secret=(--secret "id=extra_ca,src=$EXTRA_CA"); fi
  export DOCKER_BUILDKIT=1
  "$DOCKER" build -q --build-arg "BASE_IMAGE=$base" -t calltexts-postgres:15 "$here/postgres" >/dev/null
  "$DOCKER" build -q --build-arg "BASE_IMAGE=$base" -t calltexts-prometheus:latest "$repo/deploy/prometheus" >/dev/null
  "$DOCKER" build -q --build-arg "BASE_IMAGE=$base" "${secret[@]}" -t calltexts-code:latest \
    -f "$here/Dockerfile" "$repo" >/dev/null
  echo "images built on $base: calltexts-postgres:15 calltexts-prometheus:latest calltexts-code:latest"
}

# The daemon first (it would start new runs meanwhile), then the run containers (they hold
# the volume and the networks), then the rest.
stop_runs() {
  local ids
  compose stop daemon >/dev/null 2>&1 || true
  ids="$("$DOCKER" ps -aq --filter label=dagster/run_id)"
  if [ -n "$ids" ]; then "$DOCKER" rm -f $ids >/dev/null; fi
}

case "${1:-}" in
  build) build ;;
  up)
    [ -f "$ENV_FILE" ] || { echo "stack.sh: $ENV_FILE is missing: copy deploy/docker/.env.example there and fill it in" >&2; exit 2; }
    build
    compose up -d --no-build
    ;;
  down) stop_runs; compose down --remove-orphans ;;
  purge) stop_runs; compose down --remove-orphans --volumes ;;
  *) echo "usage: $0 build|up|down|purge" >&2; exit 2 ;;
esac
