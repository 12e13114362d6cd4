//! The suite's targets, read from one table: each with the figure it
//! measures, the comparison that meets it and why the goal is what it is.

use crate::phases::MAX_RATE_WINDOW;
use crate::ramp::W2_P99_BOUND_MS;
use crate::report::{LoopResult, MovesResult, Report, SystemResults, Target, TxnResult};
use crate::systems::System;

/// How a figure meets its goal.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Comparison {
    AtLeast(f64),
    AtMost(f64),
    Below(f64),
    /// Listed for comparison only: never met or missed.
    Informative,
}

impl Comparison {
    /// Whether `value` meets the goal; `None` for an informative row.
    pub fn met(self, value: f64) -> Option<bool> {
        match self {
            Comparison::AtLeast(goal) => Some(value >= goal),
            Comparison::AtMost(goal) => Some(value <= goal),
            Comparison::Below(goal) => Some(value < goal),
            Comparison::Informative => None,
        }
    }
}

/// What a run measured for one target.
pub struct Figure {
    /// The figure the comparison is made on; `None` when not measured.
    pub value: Option<f64>,
    /// How it was measured, with the numbers it came from.
    pub detail: String,
    /// Appended to the target's name in brackets (e.g. the partition count).
    pub qualifier: Option<String>,
    /// A further condition of the goal beside the comparison (W7: nothing lost).
    pub also: bool,
}

impl Figure {
    fn of(value: Option<f64>, detail: impl Into<String>) -> Option<Figure> {
        Some(Figure { value, detail: detail.into(), qualifier: None, also: true })
    }
}

/// One row of the table.
pub struct Goal {
    pub name: &'static str,
    /// The goal as printed.
    pub goal: &'static str,
    pub comparison: Comparison,
    /// Why the goal is what it is.
    pub reason: &'static str,
    /// The figure of a run; `None` leaves the row out (its inputs, such as
    /// the calibration, are missing).
    pub figure: fn(&Report) -> Option<Figure>,
}

/// The targets, in the order they are reported.
pub const GOALS: &[Goal] = &[
    Goal {
        name: "W2 records/s vs best of etcd and RabbitMQ",
        goal: "≥ 1.25×",
        comparison: Comparison::AtLeast(1.25),
        reason: "a quarter more than the best peer of the same durability class, at the same latency bound: \
                 a margin large enough to stand out from run-to-run noise on this shared machine",
        figure: w2_vs_peers,
    },
    Goal {
        name: "W2 max-rate records/s vs best of etcd and RabbitMQ",
        goal: "≥ 1.25× (informative: no latency bound)",
        comparison: Comparison::AtLeast(1.25),
        reason: "the same margin without the latency bound, for runs where no rate holds it",
        figure: w2_max_vs_peers,
    },
    Goal {
        name: "W2 share of the calibrated ceiling",
        goal: "≥ 0.30",
        comparison: Comparison::AtLeast(0.30),
        reason: "how close Strata comes to what the disk allows for durable 1 KiB records on 3 replicas: \
                 below 30 % the cost is in Strata rather than in the disk",
        figure: w2_share_of_ceiling,
    },
    Goal {
        name: "W1 p50 vs calibrated floor",
        goal: "≤ 3×",
        comparison: Comparison::AtMost(3.0),
        reason: "one record in flight cannot beat one fsync plus one round trip; within 3 times that, \
                 replication and the client's and server's own work cost at most twice the physics",
        figure: w1_vs_floor,
    },
    Goal {
        name: "W3 at 50 % p99 vs best fsync-class peer",
        goal: "≤ 0.8×",
        comparison: Comparison::AtMost(0.8),
        reason: "at half the weakest peer's max rate no system is saturated, so the tail shows each design's \
                 own cost; the goal is a tail a fifth below the best peer's",
        figure: w3_vs_peers,
    },
    Goal {
        name: "write amplification (W2)",
        goal: "≤ 2.5",
        comparison: Comparison::AtMost(2.5),
        reason: "a log store writes a record more than once (log, applied data, compaction); 2.5 bytes per \
                 payload byte and replica bounds that overhead",
        figure: write_amplification,
    },
    Goal {
        name: "W5 idle CPU per node",
        goal: "< 0.10 of a core",
        comparison: Comparison::Below(0.10),
        reason: "a thousand idle partitions may take a tenth of one core, leaving the node's cores to the \
                 partitions that work",
        figure: w5_idle_cpu,
    },
    Goal {
        name: "W5 memory per partition replica",
        goal: "< 150 KiB",
        comparison: Comparison::Below(150.0),
        reason:
            "at that size 10,000 replicas per node (benchmarks.md's next W5 step) take about 1.5 GiB (issue 17's bound)",
        figure: w5_memory,
    },
    Goal {
        name: "W7 unavailability after a leader kill",
        goal: "< 2 s and 0 acknowledged records lost",
        comparison: Comparison::Below(2.0),
        reason: "failover is the old leader's lease and an election timeout (1.2 to 1.6 s by default) plus \
                 the client finding the new leader (issue 17's bound); an acknowledged record must never be lost",
        figure: w7,
    },
    Goal {
        name: "G1 rebalance after a member joins, in heartbeat intervals",
        goal: "≤ 2 (every run)",
        comparison: Comparison::AtMost(2.0),
        reason: "members that lose partitions hear of it at their next heartbeat and give them up at once, and \
                 the new member takes them at its next: two intervals, with no group-wide barrier (issue 14)",
        figure: g1_join,
    },
    Goal {
        name: "G1 rebalance after a member leaves, in heartbeat intervals",
        goal: "≤ 2 (every run)",
        comparison: Comparison::AtMost(2.0),
        reason: "a leave frees its partitions at once; the members that get them take them at their next \
                 heartbeat, within one interval, so two leave room",
        figure: g1_leave,
    },
    Goal {
        name: "G2 partition offsets committed per second",
        goal: "≥ 20,000 with commit p99 < 50 ms",
        comparison: Comparison::AtLeast(20_000.0),
        reason: "issue 14: many consumers each committing many partitions every few seconds must not make the \
                 metadata group the bottleneck; a commit batches its partitions into one Raft entry",
        figure: g2_offsets,
    },
    Goal {
        name: "G2 topic creation p50 while commits run vs alone",
        goal: "≤ 2×",
        comparison: Comparison::AtMost(2.0),
        reason: "commits and topic creation share the metadata group: commits may slow creation down, at most \
                 to twice its time (issue 14)",
        figure: g2_topic_creation,
    },
    Goal {
        name: "T1 records/s, transactional vs without transactions",
        goal: "≥ 0.5×",
        comparison: Comparison::AtLeast(0.5),
        reason: "issue 15: a transaction adds staging the offsets, the commit decision and a marker per partition \
                 to each batch of 100; the job must still process at least half the records/s of the same loop \
                 committing its offsets without a transaction (at-least-once)",
        figure: t1_throughput,
    },
    Goal {
        name: "T1 commit p50 vs one acks=all produce's p50",
        goal: "≤ 3×",
        comparison: Comparison::AtMost(3.0),
        reason: "issue 15: committing is one replicated write of the metadata group (the decision) once the \
                 outputs are stored and the offsets staged, and waits for no marker; with room for the client's and \
                 the coordinator's own work it should cost no more than three acks=all produces",
        figure: t1_commit,
    },
    Goal {
        name: "M1 move MB/s vs calibrated disk write bandwidth",
        goal: "≥ 0.5×",
        comparison: Comparison::AtLeast(0.5),
        reason: "issue 16: with no throttle a move should be limited by the disk, not by Strata; it reads and \
                 writes the same disk here (every node shares it), so half its sequential bandwidth",
        figure: m1_speed,
    },
    Goal {
        name: "M2 records/s during a throttled rebalance vs without",
        goal: "≥ 0.7× (the rebalance lasting the window)",
        comparison: Comparison::AtLeast(0.7),
        reason: "issue 16: a throttle's purpose is to keep clients going while partitions move; producers keep \
                 at least 70 % of their rate",
        figure: m2_ratio,
    },
    Goal {
        name: "no-fsync mode vs NATS JetStream R3",
        goal: "compare",
        comparison: Comparison::Informative,
        reason: "NATS acknowledges before fsync: only a Strata mode of that durability class compares with it",
        figure: no_fsync_mode,
    },
];

/// A target of a report, with the goal it was judged against.
pub struct Judged {
    pub goal: &'static Goal,
    pub target: Target,
}

/// The targets of a report, from [`GOALS`].
pub fn judge(report: &Report) -> Vec<Judged> {
    GOALS
        .iter()
        .filter_map(|goal| {
            let figure = (goal.figure)(report)?;
            let target = Target {
                name: match &figure.qualifier {
                    Some(qualifier) => format!("{} ({qualifier})", goal.name),
                    None => goal.name.to_string(),
                },
                value: figure.value,
                goal: goal.goal.to_string(),
                met: figure.value.and_then(|v| goal.comparison.met(v)).map(|met| met && figure.also),
                detail: figure.detail,
            };
            Some(Judged { goal, target })
        })
        .collect()
}

/// One line per target on stderr, each with the reason for its goal.
pub fn print(judged: &[Judged]) {
    for Judged { goal, target } in judged {
        let met = match target.met {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "not measured",
        };
        eprintln!("  {:<52} {:>10} (goal {}) {met}", target.name, fmt(target.value), target.goal);
        eprintln!("      why: {}", goal.reason);
    }
}

/// Strata's figure over the best peer's: how many times the peer's.
pub fn times(strata: Option<f64>, peer: Option<f64>) -> Option<f64> {
    strata.zip(peer).map(|(s, p)| s / p)
}

/// The highest of some figures (throughput: higher is better).
pub fn highest(figures: impl IntoIterator<Item = f64>) -> Option<f64> {
    figures.into_iter().fold(None, |best, f| Some(best.map_or(f, |b: f64| b.max(f))))
}

/// The lowest of some figures (latency: lower is better).
pub fn lowest(figures: impl IntoIterator<Item = f64>) -> Option<f64> {
    figures.into_iter().fold(None, |best, f| Some(best.map_or(f, |b: f64| b.min(f))))
}

/// A figure of each fsync-class peer that has it.
fn of_peers(report: &Report, figure: impl Fn(&SystemResults) -> Option<f64>) -> Vec<f64> {
    System::FSYNC_CLASS_PEERS.into_iter().filter_map(|s| report.system(s).and_then(&figure)).collect()
}

fn fmt(value: Option<f64>) -> String {
    value.map_or("–".into(), |v| format!("{v:.2}"))
}

fn fmt_rate(value: Option<f64>) -> String {
    value.map_or("–".into(), |v| format!("{v:.0}"))
}

fn w2_sustained(results: &SystemResults) -> Option<f64> {
    results.w2_sustained(6).map(|w| w.result.records_per_sec)
}

fn w2_max(results: &SystemResults) -> Option<f64> {
    results.find("W2 6p max").map(|w| w.result.records_per_sec)
}

/// Strata's rate, the best fsync-class peer's, and how many times the peer's Strata's is.
fn rate_vs_best_peer(report: &Report, rate: fn(&SystemResults) -> Option<f64>) -> (Option<f64>, String, String) {
    let strata = report.system(System::Strata).and_then(rate);
    let peer = highest(of_peers(report, rate));
    (times(strata, peer), fmt_rate(strata), fmt_rate(peer))
}

fn w2_vs_peers(report: &Report) -> Option<Figure> {
    let (ratio, strata, peer) = rate_vs_best_peer(report, w2_sustained);
    let bound = W2_P99_BOUND_MS;
    Figure::of(
        ratio,
        format!("highest 6-partition rate with p99 < {bound:.0} ms: Strata {strata} vs best fsync-class peer {peer}"),
    )
}

fn w2_max_vs_peers(report: &Report) -> Option<Figure> {
    let (ratio, strata, peer) = rate_vs_best_peer(report, w2_max);
    Figure::of(
        ratio,
        format!("6 partitions, 4 producers, {MAX_RATE_WINDOW} outstanding each: Strata {strata} vs {peer}"),
    )
}

fn w2_share_of_ceiling(report: &Report) -> Option<Figure> {
    let ceiling = report.calibration.as_ref()?.ceiling_records_per_sec(1024, 1.0);
    let strata = report.system(System::Strata).and_then(w2_sustained);
    Figure::of(
        strata.map(|s| s / ceiling),
        format!("ceiling {ceiling:.0} records/s = write bandwidth / (3 × 1 KiB), write amplification taken as 1"),
    )
}

fn w1_vs_floor(report: &Report) -> Option<Figure> {
    let floor = report.calibration.as_ref()?.w1_floor_ms();
    let w1 = report.system(System::Strata).and_then(|r| r.find("W1")).map(|w| w.result.latency_ms.p50);
    Figure::of(
        w1.map(|p50| p50 / floor),
        format!("Strata W1 p50 {} ms, floor {floor:.3} ms (fsync p50 + loopback RTT p50)", fmt(w1)),
    )
}

fn w3_vs_peers(report: &Report) -> Option<Figure> {
    let p99 = |r: &SystemResults| r.find("W3 50%").filter(|w| w.result.errors == 0).map(|w| w.result.latency_ms.p99);
    let strata = report.system(System::Strata).and_then(p99);
    let peer = lowest(of_peers(report, p99));
    Figure::of(times(strata, peer), format!("Strata p99 {} ms vs {} ms", fmt(strata), fmt(peer)))
}

fn write_amplification(report: &Report) -> Option<Figure> {
    let wa = report
        .system(System::Strata)
        .and_then(|r| r.w2_sustained(6).or_else(|| r.find("W2 6p max")))
        .and_then(|w| w.resources.write_amplification);
    Figure::of(wa, "bytes written by all replicas (/proc/PID/io write_bytes) / (payload bytes × 3)")
}

const W5_NOT_RUN: &str = "W5 runs only without --quick";

fn w5_idle_cpu(report: &Report) -> Option<Figure> {
    let Some(w5) = &report.w5 else { return Figure::of(None, W5_NOT_RUN) };
    Some(Figure {
        value: Some(w5.idle_cpu_core_fraction.iter().cloned().fold(0.0, f64::max)),
        detail: "worst node, over 10 s with every partition idle, before the load".into(),
        qualifier: Some(format!("{} partitions", w5.partitions)),
        also: true,
    })
}

fn w5_memory(report: &Report) -> Option<Figure> {
    let Some(w5) = &report.w5 else { return Figure::of(None, W5_NOT_RUN) };
    let memory = w5.memory_per_replica_bytes.iter().cloned().fold(0.0, f64::max);
    Figure::of(Some(memory / 1024.0), "worst node: resident memory growth / partitions hosted, in KiB")
}

fn w7(report: &Report) -> Option<Figure> {
    let Some(w7) = &report.w7 else { return Figure::of(None, "did not run") };
    Some(Figure {
        value: Some(w7.unavailable_ms / 1000.0),
        detail: format!("{} acknowledged, {} lost", w7.acked, w7.lost),
        qualifier: None,
        also: w7.lost == 0,
    })
}

/// G1's or G2's figure, or `None` (no row) when the group workloads did not
/// run, or a row without a value saying why that one did not.
fn groups_figure<T>(
    report: &Report,
    part: impl Fn(&crate::report::GroupsResult) -> Option<&T>,
    prefix: &str,
    figure: impl Fn(&T) -> Figure,
) -> Option<Figure> {
    let groups = report.groups.as_ref()?;
    match part(groups) {
        Some(result) => Some(figure(result)),
        None => {
            let why = groups.errors.iter().find(|e| e.starts_with(prefix)).cloned();
            Figure::of(None, why.unwrap_or_else(|| "did not run".into()))
        }
    }
}

fn g1_figure(report: &Report, leave: bool) -> Option<Figure> {
    groups_figure(
        report,
        |g| g.rebalance.as_ref(),
        "G1",
        |r| {
            let t = if leave { &r.leave } else { &r.join };
            Figure {
                value: (!t.samples_ms.is_empty()).then(|| r.intervals(t.max_ms)),
                detail: format!(
                    "{} runs, heartbeat interval {:.0} ms: p50 {:.0} ms ({:.2} intervals), max {:.0} ms",
                    t.samples_ms.len(),
                    r.heartbeat_interval_ms,
                    t.p50_ms,
                    r.intervals(t.p50_ms),
                    t.max_ms
                ),
                qualifier: Some(format!("{} members, {} partitions", r.members, r.partitions)),
                also: true,
            }
        },
    )
}

fn g1_join(report: &Report) -> Option<Figure> {
    g1_figure(report, false)
}

fn g1_leave(report: &Report) -> Option<Figure> {
    g1_figure(report, true)
}

/// G2's commit latency bound, beside its throughput goal.
const G2_P99_BOUND_MS: f64 = 50.0;

fn g2_offsets(report: &Report) -> Option<Figure> {
    groups_figure(
        report,
        |g| g.commits.as_ref(),
        "G2",
        |c| Figure {
            value: Some(c.offsets_per_sec),
            detail: format!(
                "{} committers × {} partitions per commit, closed loop: commit p50 {:.2} ms, p99 {:.2} ms, {} errors",
                c.committers, c.partitions_per_commit, c.latency_ms.p50, c.latency_ms.p99, c.errors
            ),
            qualifier: None,
            also: c.latency_ms.count > 0 && c.latency_ms.p99 < G2_P99_BOUND_MS && c.errors == 0,
        },
    )
}

fn g2_topic_creation(report: &Report) -> Option<Figure> {
    groups_figure(
        report,
        |g| g.commits.as_ref(),
        "G2",
        |c| {
            let measured = !c.create_alone.samples_ms.is_empty() && !c.create_during.samples_ms.is_empty();
            Figure {
            value: (measured && c.create_alone.p50_ms > 0.0).then(|| c.create_during.p50_ms / c.create_alone.p50_ms),
            detail: format!(
                "{}-partition topics, one at a time: alone p50 {:.1} ms (max {:.1}), during commits p50 {:.1} ms (max {:.1})",
                c.create_partitions,
                c.create_alone.p50_ms,
                c.create_alone.max_ms,
                c.create_during.p50_ms,
                c.create_during.max_ms
            ),
            qualifier: None,
            also: true,
        }
        },
    )
}

/// A figure of the moves, or `None` (no row) when they did not run, or a
/// row without a value saying why when the part was not measured.
fn moves_figure(report: &Report, figure: impl Fn(&MovesResult) -> Option<Figure>) -> Option<Figure> {
    let moves = report.moves.as_ref()?;
    figure(moves).or_else(|| Figure::of(None, moves.errors.first().cloned().unwrap_or_else(|| "did not run".into())))
}

fn m1_speed(report: &Report) -> Option<Figure> {
    moves_figure(report, |moves| {
        let m1 = moves.m1.as_ref()?;
        Some(Figure {
            value: m1.share_of_disk,
            detail: format!(
                "{} MiB in {:.1} s: {:.1} MB/s; disk {} MB/s sequential (calibration)",
                m1.partition_bytes >> 20,
                m1.move_secs,
                m1.mb_per_sec,
                m1.disk_write_mb_per_sec.map_or("–".into(), |d| format!("{d:.0}"))
            ),
            qualifier: None,
            also: true,
        })
    })
}

fn m2_ratio(report: &Report) -> Option<Figure> {
    moves_figure(report, |moves| {
        let m2 = moves.m2.as_ref()?;
        Some(Figure {
            value: m2.ratio,
            detail: format!(
                "{:.0} records/s during the rebalance (throttle {} per node, {} moves, {} left at the window's end, \
                 {:.1} MB/s copied) vs {:.0} alone",
                m2.during.records_per_sec,
                strata_core::throttle::show_rate(m2.throttle_bytes_per_sec),
                m2.moves,
                m2.moves_left_at_window_end,
                m2.copy_mb_per_sec_during_load,
                m2.baseline.records_per_sec
            ),
            qualifier: None,
            // A rebalance that ended inside the window measured less than asked.
            also: m2.moves_left_at_window_end > 0,
        })
    })
}

/// T1's figure, or `None` (no row) when T1 did not run, or a row without
/// a value saying why when a part it needs was not measured.
fn txn_figure(report: &Report, figure: impl Fn(&TxnResult) -> Option<Figure>) -> Option<Figure> {
    let t1 = report.txn.as_ref()?;
    figure(t1).or_else(|| Figure::of(None, t1.errors.first().cloned().unwrap_or_else(|| "did not run".into())))
}

fn t1_throughput(report: &Report) -> Option<Figure> {
    txn_figure(report, |t1| {
        let (txn, plain) = (t1.transactional.as_ref()?, t1.baseline.as_ref()?);
        let measured = txn.batches > 0 && plain.records_per_sec > 0.0;
        let ran_out = |l: &LoopResult| if l.input_exhausted { ", input ran out" } else { "" };
        Some(Figure {
            value: measured.then(|| txn.records_per_sec / plain.records_per_sec),
            detail: format!(
                "batches of {}: transactional {:.0} input records/s ({:.1} transactions/s, {} aborted and run again{}) \
                 vs {:.0} without transactions ({} batches run again{})",
                t1.records_per_txn,
                txn.records_per_sec,
                txn.batches_per_sec,
                txn.failures,
                ran_out(txn),
                plain.records_per_sec,
                plain.failures,
                ran_out(plain)
            ),
            qualifier: None,
            also: true,
        })
    })
}

fn t1_commit(report: &Report) -> Option<Figure> {
    txn_figure(report, |t1| {
        let (txn, single) = (t1.transactional.as_ref()?, t1.single_produce_p50_ms()?);
        let measured = txn.commit_ms.count > 0 && single > 0.0;
        Some(Figure {
            value: measured.then(|| txn.commit_ms.p50 / single),
            detail: format!(
                "commit (after send_offsets_for stored the outputs and staged the offsets) p50 {:.2} ms, p99 {:.2} ms; one acks=all 1 KiB \
                 produce p50 {:.2} ms (the lower of {} runs: {})",
                txn.commit_ms.p50,
                txn.commit_ms.p99,
                single,
                t1.single_produce.len(),
                t1.single_produce
                    .iter()
                    .map(|s| format!("{:.2} ms {}", s.latency_ms.p50, s.when))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            qualifier: None,
            also: true,
        })
    })
}

fn no_fsync_mode(_: &Report) -> Option<Figure> {
    Figure::of(None, "Strata has no mode without per-write fsync; NATS is listed in its own durability class")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibrate::Calibration;
    use crate::ramp::tests::run;
    use crate::report::W7Result;

    fn system(system: System, workloads: Vec<crate::report::WorkloadResult>) -> SystemResults {
        SystemResults { system, durability: system.durability(), version: String::new(), errors: vec![], workloads }
    }

    fn report(systems: Vec<SystemResults>) -> Report {
        Report { systems, ..crate::report::empty_report() }
    }

    fn target<'a>(targets: &'a [Target], name: &str) -> &'a Target {
        targets.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("no target {name}: {targets:?}"))
    }

    #[test]
    fn every_goal_has_a_reason_and_a_unique_name() {
        for (index, goal) in GOALS.iter().enumerate() {
            assert!(!goal.reason.is_empty() && !goal.goal.is_empty(), "{}", goal.name);
            assert!(GOALS[..index].iter().all(|g| g.name != goal.name), "{} twice", goal.name);
        }
    }

    #[test]
    fn comparisons_meet_at_their_bounds_as_written() {
        assert_eq!(Comparison::AtLeast(1.25).met(1.25), Some(true));
        assert_eq!(Comparison::AtLeast(1.25).met(1.2499), Some(false));
        assert_eq!(Comparison::AtMost(0.8).met(0.8), Some(true));
        assert_eq!(Comparison::AtMost(0.8).met(0.81), Some(false));
        assert_eq!(Comparison::Below(3.0).met(3.0), Some(false));
        assert_eq!(Comparison::Below(3.0).met(2.99), Some(true));
        assert_eq!(Comparison::Informative.met(1.0), None);
    }

    #[test]
    fn ratio_arithmetic() {
        assert_eq!(times(Some(15_000.0), Some(10_000.0)), Some(1.5));
        assert_eq!(times(Some(15_000.0), None), None);
        assert_eq!(times(None, Some(1.0)), None);
        assert_eq!(highest([3.0, 9.0, 4.0]), Some(9.0));
        assert_eq!(lowest([3.0, 9.0, 4.0]), Some(3.0));
        assert_eq!(highest([]), None);
    }

    #[test]
    fn throughput_is_compared_with_the_best_peer_and_latency_with_the_lowest() {
        let mut report = report(vec![
            system(
                System::Strata,
                vec![
                    run("W1", "W1", 1, 500.0, 8.0),
                    run("W2", "W2 6p max", 6, 30_000.0, 80.0),
                    run("W2", "W2 6p 80%", 6, 24_000.0, 20.0),
                    run("W3", "W3 50%", 6, 5000.0, 8.0),
                ],
            ),
            system(System::Etcd, vec![run("W2", "W2 6p max", 6, 10_000.0, 40.0), run("W3", "W3 50%", 6, 5000.0, 20.0)]),
            system(
                System::Rabbitmq,
                vec![run("W2", "W2 6p max", 6, 12_000.0, 45.0), run("W3", "W3 50%", 6, 5000.0, 10.0)],
            ),
            // NATS is of another durability class: never the peer compared with.
            system(System::Nats, vec![run("W2", "W2 6p max", 6, 90_000.0, 5.0), run("W3", "W3 50%", 6, 5000.0, 1.0)]),
        ]);
        let targets: Vec<Target> = judge(&report).into_iter().map(|j| j.target).collect();
        // Strata's sustained 24,000 (the 80 % step) vs RabbitMQ's 12,000 (its max rate held).
        let w2 = target(&targets, "W2 records/s vs best of etcd and RabbitMQ");
        assert_eq!((w2.value, w2.met), (Some(2.0), Some(true)));
        let max = target(&targets, "W2 max-rate records/s vs best of etcd and RabbitMQ");
        assert_eq!(max.value, Some(2.5));
        // 8 ms against RabbitMQ's 10 ms.
        let w3 = target(&targets, "W3 at 50 % p99 vs best fsync-class peer");
        assert_eq!((w3.value, w3.met), (Some(0.8), Some(true)));
        // Without a calibration the ceiling and floor rows are left out.
        assert!(targets.iter().all(|t| !t.name.contains("calibrated")));
        // Not run: listed, not measured.
        let w7 = target(&targets, "W7 unavailability after a leader kill");
        assert_eq!((w7.value, w7.met, w7.detail.as_str()), (None, None, "did not run"));
        assert_eq!(target(&targets, "W5 memory per partition replica").met, None);
        assert_eq!(target(&targets, "no-fsync mode vs NATS JetStream R3").met, None);

        report.calibration = Some(Calibration {
            fsync_p50_ms: 0.9,
            loopback_rtt_p50_ms: 0.1,
            // 3 × 1 KiB × 40,000 records/s.
            write_bandwidth_bytes_per_sec: 3.0 * 1024.0 * 40_000.0,
            ..Default::default()
        });
        report.w7 = Some(W7Result {
            offered_rate: 5000.0,
            killed_node: 0,
            unavailable_ms: 2500.0,
            latency_ms: Default::default(),
            acked: 100,
            lost: 1,
            errors: 0,
            first_error: None,
        });
        let targets: Vec<Target> = judge(&report).into_iter().map(|j| j.target).collect();
        // 24,000 of a 40,000 ceiling.
        let share = target(&targets, "W2 share of the calibrated ceiling");
        assert_eq!((share.value, share.met), (Some(0.6), Some(true)));
        // W1 p50 4 ms (half its p99 in these runs) is 4 times the 1 ms floor.
        let w1 = target(&targets, "W1 p50 vs calibrated floor");
        assert_eq!(w1.met, Some(false));
        assert!((w1.value.unwrap() - 4.0).abs() < 1e-9);
        // Fast enough, but a lost record misses the goal.
        let w7 = target(&targets, "W7 unavailability after a leader kill");
        assert_eq!((w7.value, w7.met), (Some(2.5), Some(false)));
    }

    #[test]
    fn group_targets_judge_the_worst_rebalance_and_commits_with_their_latency() {
        use crate::report::{CommitsResult, GroupsResult, RebalanceResult, Timings};
        let mut report = report(vec![]);
        // Without the group workloads their rows are left out.
        assert!(judge(&report).iter().all(|j| !j.target.name.starts_with("G")));
        let commits = CommitsResult {
            committers: 16,
            partitions_per_commit: 100,
            prefilled_records_per_partition: 1000,
            warmup_secs: 1.0,
            duration_secs: 5.0,
            commits: 1250,
            offsets: 125_000,
            offsets_per_sec: 25_000.0,
            latency_ms: strata_load::Percentiles { count: 1250, p50: 10.0, p99: 60.0, ..Default::default() },
            errors: 0,
            first_error: None,
            create_partitions: 3,
            create_alone: Timings::of(vec![10.0, 12.0, 11.0]),
            create_during: Timings::of(vec![30.0, 20.0, 25.0]),
            resources: Default::default(),
        };
        report.groups = Some(GroupsResult {
            rebalance: Some(RebalanceResult {
                members: 10,
                partitions: 100,
                heartbeat_interval_ms: 3000.0,
                poll_every_ms: 100.0,
                formation_ms: 9000.0,
                join: Timings::of(vec![4000.0, 6100.0, 3000.0]),
                leave: Timings::of(vec![1500.0, 2900.0, 3100.0]),
                heartbeat_errors: 0,
                first_error: None,
            }),
            commits: Some(commits),
            errors: vec![],
        });
        let targets: Vec<Target> = judge(&report).into_iter().map(|j| j.target).collect();
        let name = |n: &str| format!("{n} (10 members, 100 partitions)");
        // The worst join took 6,100 ms: more than 2 intervals of 3 s.
        let join = target(&targets, &name("G1 rebalance after a member joins, in heartbeat intervals"));
        assert_eq!(join.met, Some(false));
        assert!((join.value.unwrap() - 6100.0 / 3000.0).abs() < 1e-9);
        let leave = target(&targets, &name("G1 rebalance after a member leaves, in heartbeat intervals"));
        assert_eq!(leave.met, Some(true));
        // Enough offsets/s, but p99 60 ms misses the latency bound.
        let offsets = target(&targets, "G2 partition offsets committed per second");
        assert_eq!((offsets.value, offsets.met), (Some(25_000.0), Some(false)));
        // 25 ms during against 11 ms alone.
        let creation = target(&targets, "G2 topic creation p50 while commits run vs alone");
        assert_eq!(creation.met, Some(false));
        assert!((creation.value.unwrap() - 25.0 / 11.0).abs() < 1e-9);

        // A workload that failed has a row without a value that says why.
        report.groups = Some(GroupsResult { rebalance: None, commits: None, errors: vec!["G2: refused".into()] });
        let targets: Vec<Target> = judge(&report).into_iter().map(|j| j.target).collect();
        let offsets = target(&targets, "G2 partition offsets committed per second");
        assert_eq!((offsets.value, offsets.met, offsets.detail.as_str()), (None, None, "G2: refused"));
        assert_eq!(target(&targets, "G1 rebalance after a member joins, in heartbeat intervals").detail, "did not run");
    }

    #[test]
    fn transaction_targets_compare_with_the_baseline_and_the_lower_single_produce() {
        use crate::report::SingleProduceResult;
        use strata_load::Percentiles;
        let mut report = report(vec![]);
        let throughput = "T1 records/s, transactional vs without transactions";
        let commit = "T1 commit p50 vs one acks=all produce's p50";
        // Without T1 its rows are left out.
        assert!(judge(&report).iter().all(|j| !j.target.name.starts_with("T1")));
        let looped = |records_per_sec: f64, commit_p50: f64| LoopResult {
            batches: (records_per_sec / 20.0) as u64,
            records: (records_per_sec * 5.0) as u64,
            measured_secs: 5.0,
            records_per_sec,
            batches_per_sec: records_per_sec / 100.0,
            commit_ms: Percentiles { count: 50, p50: commit_p50, p99: commit_p50 * 2.0, ..Default::default() },
            ..Default::default()
        };
        let single = |when: &str, p50: f64| SingleProduceResult {
            when: when.into(),
            unmeasured: 20,
            record_size: 1024,
            latency_ms: Percentiles { count: 200, p50, ..Default::default() },
        };
        report.txn = Some(TxnResult {
            records_per_txn: 100,
            transactional: Some(looped(6000.0, 7.0)),
            baseline: Some(looped(10_000.0, 3.0)),
            single_produce: vec![single("before the loops", 2.5), single("after the loops", 2.0)],
            ..Default::default()
        });
        let targets: Vec<Target> = judge(&report).into_iter().map(|j| j.target).collect();
        let t = target(&targets, throughput);
        assert_eq!((t.value, t.met), (Some(0.6), Some(true)));
        assert!(t.detail.contains("6000 input records/s") && t.detail.contains("10000 without"), "{}", t.detail);
        // 7 ms against the lower p50, 2 ms: 3.5×, not met (against 2.5 ms it would be).
        let c = target(&targets, commit);
        assert_eq!((c.value, c.met), (Some(3.5), Some(false)));
        assert!(c.detail.contains("2.50 ms before the loops, 2.00 ms after the loops"), "{}", c.detail);

        // Below half the baseline; the commit within 3×.
        if let Some(t1) = report.txn.as_mut() {
            t1.transactional = Some(looped(4999.0, 6.0));
        }
        let targets: Vec<Target> = judge(&report).into_iter().map(|j| j.target).collect();
        assert_eq!(target(&targets, throughput).met, Some(false));
        assert_eq!(target(&targets, commit).met, Some(true));

        // A loop that failed, or no single produce: rows without a value that say why.
        report.txn = Some(TxnResult {
            baseline: Some(looped(10_000.0, 3.0)),
            errors: vec!["T1 transactional: fenced".into()],
            ..Default::default()
        });
        let targets: Vec<Target> = judge(&report).into_iter().map(|j| j.target).collect();
        for name in [throughput, commit] {
            let t = target(&targets, name);
            assert_eq!((t.value, t.met, t.detail.as_str()), (None, None, "T1 transactional: fenced"));
        }
        // Nothing committed inside the window: not measured, not a ratio of 0.
        report.txn = Some(TxnResult {
            transactional: Some(LoopResult { records_per_sec: 0.0, ..Default::default() }),
            baseline: Some(looped(10_000.0, 3.0)),
            single_produce: vec![single("before the loops", 2.0)],
            ..Default::default()
        });
        let targets: Vec<Target> = judge(&report).into_iter().map(|j| j.target).collect();
        assert_eq!(target(&targets, throughput).met, None);
        assert_eq!(target(&targets, commit).met, None);
    }
}
