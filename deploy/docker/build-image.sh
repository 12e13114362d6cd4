#!/usr/bin/env bash
# Builds the Strata container image (default tag strata:latest) without an
# image registry: the `strata` binary is compiled on this machine (or given),
# the Debian root file system comes from debootstrap and is imported once
# into the engine as a base image, and the `runtime` stage of
# deploy/docker/Dockerfile runs on it unchanged, but for the COPY of the
# binary. So this image has the same user, files, volume, health check,
# entrypoint and environment as one built from the Dockerfile.
#
#   deploy/docker/build-image.sh                       # release build (~15 min the first time)
#   deploy/docker/build-image.sh --binary PATH         # or STRATA_BIN=PATH: use this binary
#   deploy/docker/build-image.sh --tag strata:dev --rebuild-base
#
# Needs a Docker engine, and root (or sudo) the first time, for debootstrap.
# Running it again reuses the base image and Docker's layer cache.
set -euo pipefail
cd "$(dirname "$0")/../.."

usage() {
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
  cat <<'EOF'
Options:
  --binary PATH    use this strata binary instead of building one (also STRATA_BIN)
  --tag NAME       image tag [default: strata:latest]
  --rebuild-base   make the Debian base image again (e.g. for newer Debian packages)
Environment:
  STRATA_RELEASE_TARGET_DIR  cargo target dir of the release build [default: ~/.cache/strata-target-release]
  DEBIAN_MIRROR              where debootstrap fetches packages [default: Debian's main mirror]
EOF
}

binary="${STRATA_BIN:-}"
tag="strata:latest"
rebuild_base=false
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="${2:?--binary needs a path}"; shift 2 ;;
    --binary=*) binary="${1#*=}"; shift ;;
    --tag) tag="${2:?--tag needs a name}"; shift 2 ;;
    --tag=*) tag="${1#*=}"; shift ;;
    --rebuild-base) rebuild_base=true; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "build-image: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

# The Debian release of the base; the same as the Dockerfile's runtime stage
# (debian:bookworm-slim) and as the machines the binary is built on here, so
# that the binary finds the glibc and libstdc++ it was linked against.
suite=bookworm
base_image="strata-rootfs:$suite"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

die() { echo "build-image: error: $*" >&2; exit 1; }
say() { echo "build-image: $*" >&2; }

work="$(mktemp -d -t strata-image.XXXXXX)"
cleanup() {
  # The root file system holds root-owned files; the context is small.
  if [ -d "$work" ]; then
    $sudo rm -rf "$work" 2>/dev/null || rm -rf "$work" 2>/dev/null || true
  fi
}
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
trap cleanup EXIT

command -v docker >/dev/null 2>&1 || die "the docker command is missing"
# A reachable engine answers within seconds; a hung one would stall the rest.
timeout 30 docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed or took over 30 s)"

# 1. The binary.
if [ -n "$binary" ]; then
  if [ ! -f "$binary" ] || [ ! -x "$binary" ]; then die "binary '$binary' is not an executable file"; fi
else
  scripts/install-build-deps.sh
  export CARGO_TARGET_DIR="${STRATA_RELEASE_TARGET_DIR:-$HOME/.cache/strata-target-release}"
  say "building the release binary in $CARGO_TARGET_DIR (RocksDB takes about 15 minutes on 2 cores the first time)"
  # Bound: a cold release build on 2 cores takes 15-20 minutes; an hour means it is stuck.
  timeout 3600 cargo build --release --locked -p strata-cli --bin strata \
    || die "cargo build failed or took over an hour"
  binary="$CARGO_TARGET_DIR/release/strata"
fi
say "binary: $binary"

# 2. The base image: a minimal Debian made by debootstrap, imported once.
if $rebuild_base || ! docker image inspect "$base_image" >/dev/null 2>&1; then
  if [ -n "$sudo" ] && ! command -v sudo >/dev/null 2>&1; then
    die "debootstrap needs root: run as root or install sudo (only the first build needs it)"
  fi
  if ! command -v debootstrap >/dev/null 2>&1 && [ ! -x /usr/sbin/debootstrap ]; then
    say "installing debootstrap"
    $sudo apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq debootstrap >/dev/null \
      || die "could not install debootstrap"
  fi
  debootstrap_cmd="$(command -v debootstrap || echo /usr/sbin/debootstrap)"
  rootfs="$work/rootfs"
  say "making a $suite root file system with debootstrap from $mirror (about a minute)"
  # Bound: it downloads about 40 MB and unpacks ~90 packages: a minute
  # here; 15 minutes allows a slow mirror, longer means it is stuck.
  if ! timeout 900 $sudo "$debootstrap_cmd" --variant=minbase "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1; then
    tail -n 20 "$work/debootstrap.log" >&2
    die "debootstrap failed or took over 15 minutes (log above)"
  fi
  # Trim what a slim image leaves out: downloaded packages, package lists
  # (apt-get update brings them back), documentation, translations, logs,
  # and the host's resolver and host name files (Docker provides its own).
  $sudo rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
    "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* "$rootfs"/var/log/*.log \
    "$rootfs"/var/log/apt/* "$rootfs"/etc/resolv.conf "$rootfs"/etc/hostname
  say "importing the root file system as $base_image"
  # Bound: importing ~100 MB takes seconds.
  # shellcheck disable=SC2024 # the tar stream is read by docker, not written by sudo
  if ! $sudo tar --numeric-owner -C "$rootfs" -cf - . \
    | timeout 300 docker import --change 'CMD ["/bin/bash"]' \
      --message "debootstrap --variant=minbase $suite" - "$base_image" >/dev/null; then
    die "docker import of the root file system failed or took over 5 minutes"
  fi
  $sudo rm -rf "$rootfs"
else
  say "reusing the base image $base_image (--rebuild-base makes it again)"
fi

# 3. The build context: the binary (without debug info: the image needs
# none, and a debug build's is most of its size), the image's config file,
# and the Dockerfile's runtime stage.
context="$work/context"
mkdir -p "$context/deploy/docker"
cp "$binary" "$context/strata"
chmod 0755 "$context/strata"
if command -v strip >/dev/null 2>&1; then
  strip --strip-debug "$context/strata" || die "strip failed on $binary"
fi
cp deploy/docker/strata.toml "$context/deploy/docker/strata.toml"
dockerfile=deploy/docker/Dockerfile
copy_from='COPY --from=builder /out/strata /usr/local/bin/strata'
# shellcheck disable=SC2016 # the Dockerfile's own ${RUNTIME_IMAGE}, not ours
grep -qx 'FROM ${RUNTIME_IMAGE} AS runtime' "$dockerfile" \
  || die "$dockerfile has no line 'FROM \${RUNTIME_IMAGE} AS runtime': update this script with it"
[ "$(grep -cx "$copy_from" "$dockerfile")" = 1 ] \
  || die "$dockerfile has not exactly one line '$copy_from': update this script with it"
{
  echo 'ARG RUNTIME_IMAGE'
  # From the runtime stage's FROM to the end, the binary copied from the context.
  sed -n '/^FROM \${RUNTIME_IMAGE} AS runtime$/,$p' "$dockerfile" \
    | sed "s|^${copy_from}\$|COPY strata /usr/local/bin/strata|"
} >"$context/Dockerfile"
grep -qx 'COPY strata /usr/local/bin/strata' "$context/Dockerfile" || die "could not rewrite the COPY of the binary"

# 4. The image. The classic builder runs anywhere and uses the local base
# image as it is (it pulls only what is missing, and nothing is). It is
# tagged only once the checks below pass, so a failed build leaves the
# previous image in place.
previous="$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)"
say "building $tag"
# Bound: the steps are a useradd and two copies: seconds; 10 minutes means stuck.
if ! DOCKER_BUILDKIT=0 timeout 600 docker build --quiet --build-arg "RUNTIME_IMAGE=$base_image" \
  "$context" >"$work/build.log" 2>&1; then
  cat "$work/build.log" >&2
  die "docker build failed or took over 10 minutes (output above)"
fi
current="$(grep -o 'sha256:[0-9a-f]*' "$work/build.log" | tail -n 1)"
[ -n "$current" ] || { cat "$work/build.log" >&2; die "docker build printed no image id"; }

# 5. The binary must run in the image (a binary linked against a newer glibc
# than the base's would fail here, not in a cluster), as the image's user.
refuse() {
  docker image rm "$current" >/dev/null 2>&1 || true
  die "$*"
}
version="$(timeout 60 docker run --rm --network none "$current" --version 2>&1)" \
  || refuse "the image's strata binary does not run: $version"
user="$(docker image inspect -f '{{.Config.User}}' "$current")"
[ "$user" = "10001:10001" ] || refuse "the image runs as '$user', expected 10001:10001"
docker tag "$current" "$tag"

# An earlier build of the tag left untagged is only disk use now.
if [ -n "$previous" ] && [ "$previous" != "$current" ]; then
  docker image rm "$previous" >/dev/null 2>&1 || true
fi
size="$(docker image inspect -f '{{.Size}}' "$tag")"
say "built $tag (${version%%$'\n'*}, $((size / 1024 / 1024)) MiB, image ${current#sha256:})"
