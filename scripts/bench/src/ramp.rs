//! W2's ramp: after a max-rate run, open-loop steps down from the rate it
//! achieved until p99 holds under the bound; and which of those runs counts
//! as the highest rate that held.

use crate::load::LoadResult;
use crate::report::WorkloadResult;

/// W2's latency bound: the highest rate whose p99 stays under it counts
/// (benchmarks.md: "ramp to the highest rate that holds p99 under 50 ms").
pub const W2_P99_BOUND_MS: f64 = 50.0;

/// The first open-loop step, as a share of the max-rate throughput: just
/// under what the system showed it can take.
const FIRST_SHARE: f64 = 0.8;

/// Each further step offers this share of the one before: coarse enough
/// that a few steps span a factor of 5 to 10 in rate, so the ramp finds a
/// rate that holds within the suite's time.
const STEP_FACTOR: f64 = 0.7;

/// Open-loop steps at most: 4 in quick mode (down to 27 % of the max
/// rate), 7 otherwise (down to 9 %).
pub fn steps(quick: bool) -> usize {
    if quick {
        4
    } else {
        7
    }
}

/// One open-loop step of the ramp.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Step {
    /// Share of the max-rate throughput offered.
    pub share: f64,
    /// Records per second offered (at least 1).
    pub rate: f64,
}

impl Step {
    /// The step's run label, e.g. "W2 6p 56%".
    pub fn label(&self, partitions: u32) -> String {
        format!("W2 {partitions}p {:.0}%", self.share * 100.0)
    }
}

/// The steps below a max-rate run that achieved `achieved` records/s, in
/// the order they run; the caller stops at the first that holds.
pub fn steps_below(achieved: f64, steps: usize) -> Vec<Step> {
    std::iter::successors(Some(FIRST_SHARE), |share| Some(share * STEP_FACTOR))
        .take(steps)
        .map(|share| Step { share, rate: (achieved * share).round().max(1.0) })
        .collect()
}

/// Whether a max-rate run already holds the bound, so no step is needed.
/// A max-rate run that achieved nothing has no rate to step down from.
pub fn max_rate_needs_no_ramp(result: &LoadResult) -> bool {
    result.latency_ms.p99 < W2_P99_BOUND_MS || result.records_per_sec <= 0.0
}

/// Whether an open-loop step held: p99 under the bound and no failed record.
pub fn step_holds(result: &LoadResult) -> bool {
    result.latency_ms.p99 < W2_P99_BOUND_MS && result.errors == 0
}

/// The W2 run at `partitions` with the highest throughput among those that
/// held the bound without errors (max-rate or a step).
pub fn sustained(workloads: &[WorkloadResult], partitions: u32) -> Option<&WorkloadResult> {
    workloads
        .iter()
        .filter(|w| w.workload == "W2" && w.partitions == partitions && w.result.errors == 0)
        .filter(|w| w.result.latency_ms.count > 0 && w.result.latency_ms.p99 < W2_P99_BOUND_MS)
        .max_by(|a, b| a.result.records_per_sec.total_cmp(&b.result.records_per_sec))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::load::LoadSpec;
    use crate::report::Resources;
    use strata_load::Percentiles;

    /// A finished run with the figures the ramp and the targets read.
    pub(crate) fn run(workload: &str, label: &str, partitions: u32, records_per_sec: f64, p99: f64) -> WorkloadResult {
        WorkloadResult {
            workload: workload.to_string(),
            label: label.to_string(),
            partitions,
            spec: LoadSpec {
                producers: 4,
                rate: None,
                window: 256,
                record_size: 1024,
                warmup_secs: 1.0,
                duration_secs: 5.0,
                drain_secs: 30.0,
                track_acks: false,
            },
            result: LoadResult {
                records_per_sec,
                latency_ms: Percentiles { count: 100, p50: p99 / 2.0, p99, ..Default::default() },
                ..Default::default()
            },
            resources: Resources::default(),
            leadership: None,
        }
    }

    #[test]
    fn steps_go_down_by_a_factor_from_most_of_the_max_rate() {
        let steps = steps_below(10_000.0, steps(true));
        let shares: Vec<String> = steps.iter().map(|s| s.label(6)).collect();
        assert_eq!(shares, ["W2 6p 80%", "W2 6p 56%", "W2 6p 39%", "W2 6p 27%"]);
        let rates: Vec<f64> = steps.iter().map(|s| s.rate).collect();
        assert_eq!(rates, [8000.0, 5600.0, 3920.0, 2744.0]);
        assert_eq!(
            steps_below(10_000.0, super::steps(false)).last().map(|s| s.label(16)).as_deref(),
            Some("W2 16p 9%")
        );
        // A rate never rounds down to nothing.
        assert!(steps_below(1.0, 7).iter().all(|s| s.rate == 1.0));
    }

    #[test]
    fn a_step_holds_only_under_the_bound_and_without_errors() {
        let mut result = run("W2", "W2 6p 80%", 6, 8000.0, 49.9).result;
        assert!(step_holds(&result));
        result.errors = 1;
        assert!(!step_holds(&result));
        let over = run("W2", "W2 6p 80%", 6, 8000.0, W2_P99_BOUND_MS).result;
        assert!(!step_holds(&over), "the bound itself does not hold");
        assert!(max_rate_needs_no_ramp(&run("W2", "W2 6p max", 6, 9000.0, 12.0).result));
        assert!(!max_rate_needs_no_ramp(&run("W2", "W2 6p max", 6, 9000.0, 120.0).result));
        assert!(max_rate_needs_no_ramp(&run("W2", "W2 6p max", 6, 0.0, 120.0).result));
    }

    #[test]
    fn the_sustained_rate_is_the_highest_that_held() {
        let mut failed = run("W2", "W2 6p 80%", 6, 8500.0, 20.0);
        failed.result.errors = 3;
        let mut empty = run("W2", "W2 6p 27%", 6, 9500.0, 1.0);
        empty.result.latency_ms.count = 0;
        let workloads = vec![
            run("W2", "W2 6p max", 6, 11_000.0, 180.0),
            failed,
            run("W2", "W2 6p 56%", 6, 6000.0, 30.0),
            run("W2", "W2 6p 39%", 6, 4000.0, 10.0),
            empty,
            run("W2", "W2 16p max", 16, 9000.0, 20.0),
            run("W3", "W3 50%", 6, 7000.0, 5.0),
        ];
        assert_eq!(sustained(&workloads, 6).map(|w| w.label.as_str()), Some("W2 6p 56%"));
        assert_eq!(sustained(&workloads, 16).map(|w| w.label.as_str()), Some("W2 16p max"));
        assert!(sustained(&workloads[..1], 6).is_none());
    }
}
