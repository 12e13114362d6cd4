#!/usr/bin/env bash
# A short fault-injection run for CI: 3 nodes in network namespaces, the
# queue workload, kill + pause + partition faults for 60 s, then heal, drain
# and check. Needs root (namespaces, iptables). Exit status: 0 valid,
# 1 anomalies found, 2 the run itself failed. The run's history, node logs,
# verdict and report land in jepsen/store/.
#
# JEPSEN_SEED picks another fault schedule (default 1, so CI is repeatable);
# SKIP_BUILD=1 uses the binaries already built.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata-target}"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --workspace --all-targets --locked
fi
bin="$CARGO_TARGET_DIR/debug"
started=$(date +%s)
status=0
"$bin/strata-jepsen" run \
  --nodes 3 --workload queue --faults kill,pause,partition \
  --time-limit 60 --seed "${JEPSEN_SEED:-1}" --verify-rounds 1 \
  --strata-bin "$bin/strata" --store jepsen/store || status=$?
echo "jepsen smoke: exit $status after $(( $(date +%s) - started )) s"
exit "$status"
