#!/usr/bin/env bash
# Many fault-injection runs for humans: seeds x fault mixes x workloads,
# 3 and 5 nodes, each run TIME seconds under faults. Keeps going after a
# failed run and prints a table at the end (also in jepsen/store/soak-*.tsv).
# Needs root. Takes about RUNS * (TIME + 40) seconds.
#
#   RUNS=20 TIME=120 FIRST_SEED=100 scripts/jepsen-soak.sh
#
# KEYS (default 6) sets the partitions of the test topic: with many (say
# 120) each partition is written only every few seconds, so partitions keep
# going quiet and waking up under the faults (see quiesce.rs).
#
# WORKLOADS (default "queue idempotent keys group") and MIXES (default: the
# list below, space-separated) pick what runs. Run i takes mix i and the
# workloads in turn (shifted by one every time the mixes start over), so
# any 4 runs in a row cover the 4 default workloads. E.g.
#   WORKLOADS=keys MIXES="clock kill,pause,partition,client-cut,answers" RUNS=10 scripts/jepsen-soak.sh
# On a shared machine, BENCH_LOCK (default /tmp/strata-bench.lock) names a
# file whose presence means someone is measuring: no run starts while it
# exists (checked every 30 s), so runs never skew a benchmark.
# Before the runs the mutation check (scripts/jepsen-mutation.sh) proves
# that the harness still reports duplicates against a server that does not
# deduplicate; MUTATION=0 skips it.
set -uo pipefail
cd "$(dirname "$0")/.."

RUNS="${RUNS:-20}"
TIME="${TIME:-120}"
FIRST_SEED="${FIRST_SEED:-100}"
KEYS="${KEYS:-6}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata-target}"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --workspace --all-targets --locked || exit 2
fi
bin="$CARGO_TARGET_DIR/debug"

mixes=(
  "kill"
  "pause"
  "partition"
  "kill,pause,partition"
  "partition,netem"
  "kill,clock"
  "kill,corrupt"
  "kill,lost-writes"
  "kill,pause,partition,lost-writes"
  "kill,pause,partition,netem,clock,corrupt,lost-writes"
  "kill,pause,partition,client-cut,answers"
  "clock"
)
if [ -n "${MIXES:-}" ]; then read -r -a mixes <<<"$MIXES"; fi
read -r -a workloads <<<"${WORKLOADS:-queue idempotent keys group}"
mkdir -p jepsen/store
summary="jepsen/store/soak-$(date -u +%Y%m%dT%H%M%S).tsv"
printf 'seed\tnodes\tkeys\tworkload\tfaults\texit\tresult\n' > "$summary"

if [ "${MUTATION:-1}" != 0 ]; then
  SKIP_BUILD=1 scripts/jepsen-mutation.sh
  mutation=$?
  printf 'mutation\t3\t6\tidempotent\tmutation-no-dedup build\t%s\t%s\n' "$mutation" \
    "$([ "$mutation" = 0 ] && echo 'duplicates reported (as required)' || echo 'MUTATION CHECK FAILED')" >> "$summary"
fi

bench_lock="${BENCH_LOCK:-/tmp/strata-bench.lock}"
for i in $(seq 0 $((RUNS - 1))); do
  while [ -e "$bench_lock" ]; do
    echo "waiting: $bench_lock exists (a benchmark is measuring)"
    sleep 30
  done
  seed=$((FIRST_SEED + i))
  faults="${mixes[$((i % ${#mixes[@]}))]}"
  workload="${workloads[$(((i + i / ${#mixes[@]}) % ${#workloads[@]}))]}"
  nodes=$([ $((i % 3)) -eq 2 ] && echo 5 || echo 3)
  echo "=== run $((i + 1))/$RUNS: seed $seed, $nodes nodes, $workload, faults $faults"
  log=$(mktemp)
  "$bin/strata-jepsen" run --nodes "$nodes" --workload "$workload" --faults "$faults" \
    --time-limit "$TIME" --seed "$seed" --keys "$KEYS" --strata-bin "$bin/strata" --store jepsen/store 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
  result=$(grep '^RESULT ' "$log" | tail -n 1 | cut -c8-)
  rm -f "$log"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$seed" "$nodes" "$KEYS" "$workload" "$faults" "$status" "${result:-none}" >> "$summary"
done

echo
column -t -s $'\t' "$summary" 2>/dev/null || cat "$summary"
echo "summary: $summary"
