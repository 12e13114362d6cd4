#!/usr/bin/env bash
# Runs the whole benchmark suite from a clean clone: installs what is
# missing (build dependencies, protoc for the etcd client, and the peers
# etcd, RabbitMQ, NATS and fio from Debian), builds release binaries, then
# calibrates the machine and runs every workload against Strata and each
# peer, one 3-node loopback cluster at a time. Results go to
# bench/results/<date>.{json,md,svg}.
#
#   scripts/bench/run.sh [--quick] [--systems strata,etcd,rabbitmq,nats]
#
# --quick finishes in under 10 minutes once the binaries are built.
# STRATA_BENCH_TARGET_DIR overrides the release target directory (kept
# between runs: RocksDB alone takes 10-15 minutes to build on two cores).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

scripts/install-build-deps.sh

# Debian package -> command it provides.
declare -A wanted=(
  [etcd-server]=etcd
  [rabbitmq-server]=/usr/lib/rabbitmq/bin/rabbitmq-server
  [nats-server]=nats-server
  [fio]=fio
  [protobuf-compiler]=protoc
)
missing=()
for package in "${!wanted[@]}"; do
  command -v "${wanted[$package]}" >/dev/null 2>&1 || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  # The packages must not start system-wide services: the suite runs its own
  # clusters on private loopback ports.
  printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
  $sudo chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" || true
  $sudo rm -f /usr/sbin/policy-rc.d
fi

export CARGO_TARGET_DIR="${STRATA_BENCH_TARGET_DIR:-$HOME/.cache/strata-target-release}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
cargo build --release --locked -p strata-cli
cargo build --release --locked --manifest-path scripts/bench/Cargo.toml
exec "$CARGO_TARGET_DIR/release/strata-bench-suite" \
  --strata-bin "$CARGO_TARGET_DIR/release/strata" \
  --out "$root/bench/results" \
  "$@"
