#!/usr/bin/env bash
# Mutation check of the fault harness: builds `strata` with the test-only
# feature `mutation-no-dedup` (the partition state machine stores every
# idempotent batch as new: no epoch, sequence or retry check) into a target
# directory of its own, runs a short `idempotent` workload against it with
# the faults that force unknown outcomes, and FAILS unless the harness
# reports duplicates. A harness that passes this build cannot tell a server
# that deduplicates retries from one that does not. Needs root.
#
# Exit status: 0 the harness found duplicates (as it must); 1 the run was
# valid or found anomalies other than duplicates; 2 the build or the run
# failed.
#
#   scripts/jepsen-mutation.sh             # about a minute once built
#   MUTATION_TIME=60 MUTATION_SEED=21 MUTATION_FAULTS=kill,pause,partition,client-cut scripts/jepsen-mutation.sh
#
# MUTATION_TARGET_DIR (default ~/.cache/strata-target-mutation) holds the
# variant, so it never replaces the normal binary. When it does not exist
# it starts as a copy of CARGO_TARGET_DIR (RocksDB then needs no rebuild;
# from nothing it takes about ten minutes on two cores). The harness itself
# comes from the normal build; SKIP_BUILD=1 uses the one already built.
set -uo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata-target}"
mutation_dir="${MUTATION_TARGET_DIR:-$HOME/.cache/strata-target-mutation}"
started=$(date +%s)

if [ ! -d "$mutation_dir" ] && [ -d "$CARGO_TARGET_DIR/debug" ]; then
  echo "seeding $mutation_dir from $CARGO_TARGET_DIR"
  cp -a --reflink=auto "$CARGO_TARGET_DIR" "$mutation_dir" || exit 2
fi
# fault-hooks: the `answers` fault needs the produce-answer hooks.
CARGO_TARGET_DIR="$mutation_dir" cargo build --locked -p strata-cli \
  --features strata-cli/mutation-no-dedup,strata-cli/fault-hooks || exit 2
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --locked -p strata-jepsen || exit 2
fi
built=$(date +%s)

log=$(mktemp)
"$CARGO_TARGET_DIR/debug/strata-jepsen" run \
  --nodes 3 --workload idempotent --faults "${MUTATION_FAULTS:-kill,pause,partition,client-cut,answers}" \
  --time-limit "${MUTATION_TIME:-30}" --seed "${MUTATION_SEED:-21}" --verify-rounds 0 \
  --strata-bin "$mutation_dir/debug/strata" --store jepsen/store 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
result=$(grep '^RESULT ' "$log" | tail -n 1)
rm -f "$log"
dir=$(sed -n 's/.* dir=//p' <<<"$result")

echo "jepsen mutation check: build $((built - started)) s, run $(( $(date +%s) - built )) s, harness exit $status"
if [ -z "$result" ] || [ "$status" = 2 ]; then
  echo "jepsen mutation check: the run itself failed"
  exit 2
fi
# The run must have been against the mutation build, or proving anything.
if ! grep -q 'MUTATION BUILD' "$dir"/n1/node.log; then
  echo "jepsen mutation check: $dir/n1/node.log does not say MUTATION BUILD; wrong binary?"
  exit 2
fi
if [ "$status" = 1 ] && grep -q 'anomalies=[^ ]*duplicate' <<<"$result"; then
  echo "jepsen mutation check: PASSED, the harness reported duplicates against a server that does not deduplicate"
  exit 0
fi
echo "jepsen mutation check: FAILED, the harness did not report duplicates against a server that does not deduplicate ($result)"
exit 1
