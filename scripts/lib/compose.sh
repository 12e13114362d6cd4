# Shared by scripts/check-deploy.sh and scripts/docker-faults.sh: choosing
# the compose tool, building strata:latest, finding a service's container
# and tearing a compose project down. Source it from the repository root;
# it defines functions only.

# Sets the array `compose` to run FILE as project PROJECT with
# docker-compose v1 or `docker compose` v2, with the global options given
# after them (e.g. `--profile grow`: both versions take it before the
# command); returns 1 when neither exists.
pick_compose() {
  local file=$1 project=$2
  shift 2
  if command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose -f "$file" -p "$project" "$@")
  elif docker compose version >/dev/null 2>&1; then
    compose=(docker compose -f "$file" -p "$project" "$@")
  else
    return 1
  fi
}

# Builds strata:latest with deploy/docker/build-image.sh from $STRATA_BIN,
# else from the debug binary of $CARGO_TARGET_DIR, else from a release
# build; calls `step` (the caller's progress line) first.
build_strata_image() {
  local binary="${STRATA_BIN:-}"
  if [ -z "$binary" ] && [ -x "$CARGO_TARGET_DIR/debug/strata" ]; then
    binary="$CARGO_TARGET_DIR/debug/strata"
  fi
  step "image: deploy/docker/build-image.sh ${binary:+--binary $binary}"
  # Bound: seconds with a cached base image, about 2 minutes without; a
  # release build (no binary given) adds up to an hour, bounded inside.
  local bound=600
  [ -n "$binary" ] || bound=4200
  timeout "$bound" deploy/docker/build-image.sh ${binary:+--binary "$binary"}
}

# Removes the compose project (`compose` as pick_compose set it) with its
# containers, networks and volumes; after a failure (RC not 0) it first
# prints the nodes' last log lines. NAME prefixes the messages; DOWN_LOG
# keeps the output of `down`. Returns 1 when something was left behind.
compose_teardown() {
  local name=$1 project=$2 rc=$3 down_log=$4 left
  if [ "$rc" -ne 0 ]; then
    echo "--- last log lines of the nodes ---" >&2
    timeout 30 "${compose[@]}" logs --no-color --tail 30 >&2 2>&1 || true
  fi
  echo "==> removing the compose project $project (containers, network, volumes)"
  # Bound: stopping the nodes takes seconds (30 s grace each, in parallel).
  if ! timeout 120 "${compose[@]}" down -v --remove-orphans >"$down_log" 2>&1; then
    cat "$down_log" >&2
    echo "$name: FAILED: docker-compose down did not finish" >&2
    return 1
  fi
  left="$(docker ps -aq --filter "label=com.docker.compose.project=$project"
    docker volume ls -q --filter "label=com.docker.compose.project=$project"
    docker network ls -q --filter "label=com.docker.compose.project=$project")"
  if [ -n "$left" ]; then
    echo "$name: FAILED: containers, volumes or networks of $project are left: $left" >&2
    return 1
  fi
}

# Copies the strata binary out of strata:latest to DEST, to run on the host
# as a client of the compose cluster (built here, for the same Debian
# release). The container made for the copy goes with its volume (`-v`:
# the image declares one, which would otherwise be left behind).
copy_image_strata() {
  local dest=$1 container
  container="$(timeout 60 docker create strata:latest)" || return 1
  local copied=0
  timeout 60 docker cp "$container:/usr/local/bin/strata" "$dest" >/dev/null || copied=1
  timeout 60 docker rm -v "$container" >/dev/null || return 1
  return "$copied"
}

# The container of service $1 of compose project $project, running or
# stopped, by the labels both compose versions set (`ps -q` of compose v2
# lists running ones only); calls the sourcing script's `fail` when there
# is none or more than one.
container() {
  local id
  id="$(docker ps -aq --filter "label=com.docker.compose.project=$project" \
    --filter "label=com.docker.compose.service=$1")"
  [ -n "$id" ] || fail "no container for service $1"
  [ "$(wc -w <<<"$id")" = 1 ] || fail "more than one container for service $1: $id"
  echo "$id"
}
