#!/usr/bin/env bash
# From nothing to a running cluster: installs the build dependencies, builds
# `strata`, starts a 3-node `strata dev` cluster, creates a topic, produces
# three records and consumes them back. The cluster keeps running in the
# foreground afterwards; Ctrl-C stops it (its data stays in strata-dev-data/).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-build-deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata-target}"
# The same build as scripts/test.sh, so the two share one RocksDB build.
cargo build --workspace --all-targets --locked
strata="$CARGO_TARGET_DIR/debug/strata"

"$strata" dev --nodes 3 --data-dir strata-dev-data --port 7171 &
dev=$!
trap 'kill -INT $dev 2>/dev/null; wait $dev 2>/dev/null' EXIT
# `strata cluster status` exits 0 once the metadata group serves.
for _ in $(seq 1 300); do
  "$strata" cluster status >/dev/null 2>&1 && break
  sleep 0.2
done
"$strata" cluster status

"$strata" topic create demo --partitions 3 --replication-factor 3 2>/dev/null || true
printf 'user-1:signed up\nuser-2:signed up\nuser-1:bought a book\n' \
  | "$strata" produce demo --key-separator : --json
"$strata" consume demo --from-beginning --until-end --json
"$strata" topic describe demo

echo "cluster running on 127.0.0.1:7171-7173; Ctrl-C stops it"
wait $dev
