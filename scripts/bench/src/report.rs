//! What a run produces: the JSON document (everything measured, with every
//! setting), a Markdown summary and an SVG plot of latency against offered
//! load.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;
use strata_load::Percentiles;

use crate::calibrate::Calibration;
use crate::leadership::Leadership;
use crate::load::{LoadResult, LoadSpec};
use crate::procs::Usage;
use crate::systems::System;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Resources {
    /// Summed over the cluster's server processes.
    pub total: Usage,
    pub per_node: Vec<Usage>,
    /// Record value bytes acknowledged over the whole run, warm-up included.
    pub payload_bytes: u64,
    /// Bytes written by all replicas / (payload bytes × 3).
    pub write_amplification: Option<f64>,
    /// Server CPU time per acknowledged record, µs.
    pub cpu_us_per_record: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct WorkloadResult {
    /// "W1", "W2", ...
    pub workload: String,
    /// Unique within a system, e.g. "W2 6p max" or "W3 50%".
    pub label: String,
    pub partitions: u32,
    pub spec: LoadSpec,
    pub result: LoadResult,
    pub resources: Resources,
    /// Strata only: elections and leader changes over the run (warm-up
    /// included), from the nodes' metrics.
    pub leadership: Option<Leadership>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SystemResults {
    pub system: System,
    pub durability: &'static str,
    pub version: String,
    /// Why the system (or part of its run) could not be measured.
    pub errors: Vec<String>,
    pub workloads: Vec<WorkloadResult>,
}

impl SystemResults {
    pub fn find(&self, label: &str) -> Option<&WorkloadResult> {
        self.workloads.iter().find(|w| w.label == label)
    }

    /// The highest open-loop or max-rate W2 rate whose p99 held the bound.
    pub fn w2_sustained(&self, partitions: u32) -> Option<&WorkloadResult> {
        crate::ramp::sustained(&self.workloads, partitions)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct W7Result {
    pub offered_rate: f64,
    pub killed_node: usize,
    /// Longest time without any acknowledgement, ms (the unavailability window).
    pub unavailable_ms: f64,
    pub latency_ms: Percentiles,
    pub acked: u64,
    pub lost: u64,
    pub errors: u64,
    pub first_error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct W5Result {
    pub partitions: u32,
    /// Partitions with a leader when the idle measurement started, and how
    /// long after creation that was.
    pub partitions_led: u64,
    pub ready_secs: f64,
    /// Replicas with their Raft timers stopped (quiet) when the idle
    /// measurement started, and how long after the leaders were ready the
    /// suite waited for them (at most 30 s).
    pub quiet_replicas: u64,
    pub settle_secs: f64,
    pub offered_rate: f64,
    pub load: Option<LoadResult>,
    /// Per node: CPU share of one core while idle after the load.
    pub idle_cpu_core_fraction: Vec<f64>,
    /// Per node: resident memory added by the partitions / replicas hosted.
    pub memory_per_replica_bytes: Vec<f64>,
    /// Elections and leader changes from just before the topic's creation
    /// to the start of the load (creation, settling, the idle measurement).
    pub leadership_before_load: Option<Leadership>,
    /// Elections and leader changes during the load step (warm-up included).
    pub leadership_during_load: Option<Leadership>,
}

/// A few timings of one kind (G1's rebalances, G2's topic creations).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Timings {
    /// Every timing in the order taken, ms.
    pub samples_ms: Vec<f64>,
    pub p50_ms: f64,
    pub max_ms: f64,
}

impl Timings {
    /// The samples with their median (the lower middle of an even count)
    /// and maximum; all 0 when there are none.
    pub fn of(samples_ms: Vec<f64>) -> Timings {
        let mut sorted = samples_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let p50_ms = sorted.get(sorted.len().saturating_sub(1) / 2).copied().unwrap_or(0.0);
        let max_ms = sorted.last().copied().unwrap_or(0.0);
        Timings { samples_ms, p50_ms, max_ms }
    }
}

/// G1: a group's rebalance after a member joins or leaves.
#[derive(Clone, Debug, Serialize)]
pub struct RebalanceResult {
    pub members: usize,
    pub partitions: u32,
    /// The group's heartbeat interval as `describe_group` reports it: the
    /// unit of the figures in intervals.
    pub heartbeat_interval_ms: f64,
    /// How often the suite asked `describe_group` whether the group was
    /// stable: the resolution of every timing.
    pub poll_every_ms: f64,
    /// From the first of the members joining an empty group (they join
    /// spread over one heartbeat interval) to stable.
    pub formation_ms: f64,
    /// From one more member's join request to stable (every partition
    /// owned, every member at the target).
    pub join: Timings,
    /// From that member's leave request to stable again.
    pub leave: Timings,
    /// Failed heartbeats of every member over the run, and the first.
    pub heartbeat_errors: u64,
    pub first_error: Option<String>,
}

impl RebalanceResult {
    pub fn intervals(&self, ms: f64) -> f64 {
        ms / self.heartbeat_interval_ms.max(1.0)
    }
}

/// G2: standalone offset commits of many partitions each, and topic
/// creation alone and while they run.
#[derive(Clone, Debug, Serialize)]
pub struct CommitsResult {
    /// Concurrent committers, each with one commit in flight (closed loop),
    /// each for a group of its own that has no members.
    pub committers: usize,
    /// Partition offsets in every commit (every partition of the topic).
    pub partitions_per_commit: u32,
    /// Records in each partition before the commits (offsets go up to it).
    pub prefilled_records_per_partition: usize,
    pub warmup_secs: f64,
    pub duration_secs: f64,
    /// Commits answered inside the window, and the partition offsets they stored.
    pub commits: u64,
    pub offsets: u64,
    pub offsets_per_sec: f64,
    /// Request to answer, of commits sent inside the window.
    pub latency_ms: Percentiles,
    /// Failed commits and refused partitions over the run, and the first reason.
    pub errors: u64,
    pub first_error: Option<String>,
    /// Partitions of each topic created.
    pub create_partitions: u32,
    /// The create request to its answer, topics created one at a time with
    /// nothing else running, then while the commits ran.
    pub create_alone: Timings,
    pub create_during: Timings,
    /// Server cost over the commit run.
    pub resources: Resources,
}

/// The consumer group workloads' own results (G3 is among each system's
/// workloads, with the end-to-end figures in its `consume`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct GroupsResult {
    pub rebalance: Option<RebalanceResult>,
    pub commits: Option<CommitsResult>,
    /// Why G1 or G2 could not be measured.
    pub errors: Vec<String>,
}

/// T1: one loop of the transactional read-process-write workload (or its
/// baseline without transactions) over its measured window.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoopResult {
    /// How the loop writes its outputs and commits what it consumed.
    pub how: String,
    /// Batches (transactions, in the transactional loop) whose commit was
    /// answered inside the window, and their input records.
    pub batches: u64,
    pub records: u64,
    /// The window the rates are over: the mode's window, or shorter when
    /// the preloaded input ran out before it ended (`input_exhausted`).
    pub measured_secs: f64,
    pub input_exhausted: bool,
    pub batches_per_sec: f64,
    /// Input records processed per second.
    pub records_per_sec: f64,
    /// Of batches begun inside the window: from the first output handed to
    /// the producer to every output stored. The transactional loop:
    /// `send_offsets_for`, which sends the outputs and stages the offsets
    /// with the coordinator at once; the baseline: `flush` and every
    /// delivery awaited.
    pub flush_ms: Percentiles,
    /// Of the same batches: committing once the outputs are stored. The
    /// transactional loop: `commit` (the decision written); the baseline:
    /// `GroupConsumer::commit_offsets`.
    pub commit_ms: Percentiles,
    /// Of the same batches: from `begin` (the baseline: the first send) to
    /// the commit's answer.
    pub batch_ms: Percentiles,
    /// Batches that failed and were run again (aborted transactions), and
    /// the first reason.
    pub failures: u64,
    pub first_error: Option<String>,
    /// Server cost over the loop, per input record processed (warm-up included).
    pub resources: Resources,
}

/// T1: sequential acks=all produces of one record each, on a fresh topic.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SingleProduceResult {
    /// "before the loops" or "after the loops".
    pub when: String,
    /// Produces sent first and not measured (producer id, connections).
    pub unmeasured: usize,
    pub record_size: usize,
    /// Send to acknowledgement, one record in flight.
    pub latency_ms: Percentiles,
}

/// T1, the transactional read-process-write workload (issue 15): the
/// transactional loop, the same loop without transactions, and the
/// single-produce latency the commit is compared with.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TxnResult {
    /// Input records per transaction (and per baseline batch).
    pub records_per_txn: usize,
    pub input_partitions: u32,
    pub output_partitions: u32,
    pub record_size: usize,
    /// Records preloaded into the input topic, and how long that took.
    pub input_records: u64,
    pub preload_secs: f64,
    pub warmup_secs: f64,
    pub duration_secs: f64,
    /// Measured before the transactional loop and after the baseline.
    pub single_produce: Vec<SingleProduceResult>,
    pub transactional: Option<LoopResult>,
    pub baseline: Option<LoopResult>,
    /// Why a part could not be measured.
    pub errors: Vec<String>,
}

impl TxnResult {
    /// The lower of the single-produce p50s: the stricter reference for
    /// the commit latency.
    pub fn single_produce_p50_ms(&self) -> Option<f64> {
        crate::targets::lowest(self.single_produce.iter().filter(|s| s.latency_ms.count > 0).map(|s| s.latency_ms.p50))
    }
}

/// M1: one partition moved to a new replica with no throttle.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MoveSpeedResult {
    /// Payload bytes the partition holds (record values).
    pub partition_bytes: u64,
    pub preload_secs: f64,
    pub from: Vec<u64>,
    pub to: Vec<u64>,
    /// From the reassign call to the move's end in `cluster status`.
    pub move_secs: f64,
    /// Bytes the nodes sent to the new replica (`strata_move_sent_bytes_total`).
    pub sent_bytes: u64,
    /// `partition_bytes` over `move_secs`, MB (10^6 bytes) per second.
    pub mb_per_sec: f64,
    /// The calibration's sequential write bandwidth, MB/s.
    pub disk_write_mb_per_sec: Option<f64>,
    pub share_of_disk: Option<f64>,
}

/// M2: producers during a throttled rebalance, against the same load alone.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ThrottledRebalanceResult {
    /// `--throttle`, per sending node.
    pub throttle_bytes_per_sec: u64,
    pub partitions: u32,
    pub preload_bytes_per_partition: u64,
    pub preload_secs: f64,
    /// The load with no move.
    pub baseline: LoadResult,
    /// The same load, started right after the rebalance was recorded.
    pub during: LoadResult,
    /// `during` records/s over `baseline`'s.
    pub ratio: Option<f64>,
    /// Moves the rebalance recorded, and those still running when the load ended.
    pub moves: usize,
    pub moves_left_at_window_end: usize,
    /// Bytes sent to joining replicas while the load ran, MB/s.
    pub copy_mb_per_sec_during_load: f64,
    /// From the rebalance to its last move's end, when that came within the bound.
    pub rebalance_secs: Option<f64>,
}

/// M3: a node decommissioned (`strata cluster remove-node`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct RemoveNodeResult {
    /// Partitions of the topic (RF 3 over 4 nodes).
    pub partitions: u32,
    /// Partition replicas the removed node held.
    pub replicas_on_node: u64,
    /// From the remove-node call to the node holding nothing and out of the cluster.
    pub remove_secs: f64,
}

/// The partition moves (issue 16), when they ran.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MovesResult {
    pub m1: Option<MoveSpeedResult>,
    pub m2: Option<ThrottledRebalanceResult>,
    pub m3: Option<RemoveNodeResult>,
    pub errors: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub name: String,
    pub value: Option<f64>,
    pub goal: String,
    pub met: Option<bool>,
    pub detail: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub memory_bytes: u64,
    pub kernel: String,
    pub cpu: String,
    pub note: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub date: String,
    pub quick: bool,
    pub machine: Machine,
    pub settings: serde_json::Value,
    pub calibration: Option<Calibration>,
    pub systems: Vec<SystemResults>,
    pub w5: Option<W5Result>,
    pub w7: Option<W7Result>,
    /// G1 and G2, when the group workloads ran.
    pub groups: Option<GroupsResult>,
    /// T1, when the transactional workload ran.
    pub txn: Option<TxnResult>,
    /// M1 and M2, when the partition moves ran.
    pub moves: Option<MovesResult>,
    pub targets: Vec<Target>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn system(&self, system: System) -> Option<&SystemResults> {
        self.systems.iter().find(|r| r.system == system)
    }
}

fn fmt_opt(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "–".to_string(), |v| format!("{v:.digits$}"))
}

pub fn markdown(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmark run {}{}\n", report.date, if report.quick { " (quick)" } else { "" });
    let m = &report.machine;
    let _ = writeln!(
        out,
        "Machine: {} cores ({}), {:.1} GiB memory, Linux {}. {}\n",
        m.cores,
        m.cpu,
        m.memory_bytes as f64 / (1u64 << 30) as f64,
        m.kernel,
        m.note
    );
    let _ = writeln!(out, "Settings: `{}`\n", report.settings);
    if let Some(c) = &report.calibration {
        let _ = writeln!(out, "## Calibration ({})\n", c.disk_tool);
        let _ = writeln!(out, "| figure | value |\n| --- | --- |");
        let _ = writeln!(
            out,
            "| fdatasync of a 4 KiB append, p50 / p99 | {:.3} / {:.3} ms |",
            c.fsync_p50_ms, c.fsync_p99_ms
        );
        let _ = writeln!(
            out,
            "| sequential write, one fdatasync per MiB | {:.1} MB/s |",
            c.write_bandwidth_bytes_per_sec / 1e6
        );
        let _ = writeln!(
            out,
            "| loopback TCP round trip (1 KiB), p50 / p99 | {:.3} / {:.3} ms |",
            c.loopback_rtt_p50_ms, c.loopback_rtt_p99_ms
        );
        let _ = writeln!(out, "| loopback TCP bandwidth | {:.0} MB/s |", c.loopback_bandwidth_bytes_per_sec / 1e6);
        let _ = writeln!(out, "| W1 floor (fsync p50 + round trip p50) | {:.3} ms |", c.w1_floor_ms());
        let _ = writeln!(
            out,
            "| ceiling, durable 1 KiB records × 3 replicas, write amplification 1 | {:.0} records/s |\n",
            c.ceiling_records_per_sec(1024, 1.0)
        );
    }
    let _ = writeln!(out, "## Workloads\n");
    let _ = writeln!(
        out,
        "| workload | system | durability | offered rec/s | rec/s | MB/s | p50 ms | p99 ms | p99.9 ms | max ms | errors | server CPU s | CPU µs/rec | disk MB | write ampl. | peak RSS MiB |"
    );
    let _ = writeln!(
        out,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    let mut labels: Vec<&str> = Vec::new();
    for system in &report.systems {
        for w in &system.workloads {
            if !labels.contains(&w.label.as_str()) {
                labels.push(&w.label);
            }
        }
    }
    for label in labels {
        for system in &report.systems {
            let Some(w) = system.find(label) else { continue };
            let r = &w.result;
            let l = &r.latency_ms;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {:.1} | {} | {:.1} | {} | {:.0} |",
                w.label,
                system.system.name(),
                system.durability,
                fmt_opt(r.offered_rate, 0),
                r.records_per_sec,
                r.mb_per_sec,
                l.p50,
                l.p99,
                l.p999,
                l.max,
                r.errors,
                w.resources.total.cpu_seconds,
                fmt_opt(w.resources.cpu_us_per_record, 1),
                w.resources.total.write_bytes as f64 / 1e6,
                fmt_opt(w.resources.write_amplification, 2),
                w.resources.total.peak_rss_bytes as f64 / (1 << 20) as f64,
            );
        }
    }
    let _ =
        writeln!(out, "\nSpec of each workload (producers, window, record size, partitions) is in the JSON file.\n");
    leadership_markdown(report, &mut out);
    if let Some(w7) = &report.w7 {
        let _ = writeln!(out, "## W7: partition leader killed under load (Strata)\n");
        let _ = writeln!(
            out,
            "Offered {:.0} records/s to 1 partition; node {} (the leader) got SIGKILL a third into the window. Longest gap between acknowledgements: {:.0} ms; p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; {} acknowledged, {} lost, {} errors{}.\n",
            w7.offered_rate,
            w7.killed_node + 1,
            w7.unavailable_ms,
            w7.latency_ms.p99,
            w7.latency_ms.p999,
            w7.latency_ms.max,
            w7.acked,
            w7.lost,
            w7.errors,
            w7.first_error.as_ref().map(|e| format!(" (first: {e})")).unwrap_or_default(),
        );
    }
    if let Some(w5) = &report.w5 {
        let _ = writeln!(out, "## W5: {} partitions RF 3 (Strata)\n", w5.partitions);
        let _ = writeln!(
            out,
            "{} of {} partitions had a leader {:.0} s after creation; {} replicas were quiet {:.0} s later, and the idle figures were taken then, over 10 s.{}\n",
            w5.partitions_led,
            w5.partitions,
            w5.ready_secs,
            w5.quiet_replicas,
            w5.settle_secs,
            match &w5.load {
                Some(load) => format!(
                    " Then {:.0} records/s offered: {:.0} acknowledged/s, p50 {:.2} ms, p99 {:.2} ms, {} errors.",
                    w5.offered_rate, load.records_per_sec, load.latency_ms.p50, load.latency_ms.p99, load.errors
                ),
                None => " The load was skipped: not every partition had a leader.".to_string(),
            }
        );
        let _ = writeln!(
            out,
            "Idle CPU per node (share of one core): {:?}; resident memory per partition replica: {:?} bytes.\n",
            w5.idle_cpu_core_fraction.iter().map(|v| format!("{v:.3}")).collect::<Vec<_>>(),
            w5.memory_per_replica_bytes.iter().map(|v| format!("{v:.0}")).collect::<Vec<_>>()
        );
        for (what, leadership) in
            [("Creation to load", &w5.leadership_before_load), ("During the load", &w5.leadership_during_load)]
        {
            if let Some(leadership) = leadership {
                let _ = writeln!(out, "{what}: {}.\n", leadership.describe());
            }
        }
    }
    groups_markdown(report, &mut out);
    txn_markdown(report, &mut out);
    moves_markdown(report, &mut out);
    let _ = writeln!(out, "## Targets\n\n| target | measured | goal | met | how |\n| --- | --- | --- | --- | --- |");
    for t in &report.targets {
        let met = match t.met {
            Some(true) => "yes",
            Some(false) => "no",
            None => "not measured",
        };
        let _ = writeln!(out, "| {} | {} | {} | {} | {} |", t.name, fmt_opt(t.value, 2), t.goal, met, t.detail);
    }
    if !report.notes.is_empty() {
        let _ = writeln!(out, "\n## Notes\n");
        for note in &report.notes {
            let _ = writeln!(out, "- {note}");
        }
    }
    for system in &report.systems {
        for error in &system.errors {
            let _ = writeln!(out, "- {}: {error}", system.system.name());
        }
    }
    out
}

/// Strata's elections and leader changes during each workload, when measured.
fn leadership_markdown(report: &Report, out: &mut String) {
    let measured: Vec<(&str, &Leadership)> = report
        .systems
        .iter()
        .flat_map(|s| &s.workloads)
        .filter_map(|w| Some((w.label.as_str(), w.leadership.as_ref()?)))
        .collect();
    if measured.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "Strata elections (summed over nodes) and leader changes (once per partition: the largest count any node \
         saw) during each run:\n"
    );
    let _ = writeln!(
        out,
        "| workload | elections | elections/min | leader changes | of them in the workload's own topic | partitions \
         changed | window s |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- | --- |");
    for (label, l) in measured {
        let own = l.workload_topic_leader_changes.map_or("–".to_string(), |n| n.to_string());
        let _ = writeln!(
            out,
            "| {label} | {} | {:.1} | {} | {own} | {} | {:.0} |",
            l.elections, l.elections_per_minute, l.leader_changes, l.partitions_with_changes, l.window_secs
        );
    }
    let _ = writeln!(out);
}

/// The consumer group workloads' sections, when any ran.
fn groups_markdown(report: &Report, out: &mut String) {
    let g3: Vec<(&SystemResults, &WorkloadResult)> =
        report.systems.iter().filter_map(|s| s.find(crate::groups::G3_LABEL).map(|w| (s, w))).collect();
    let groups = report.groups.as_ref();
    if g3.is_empty() && groups.is_none() {
        return;
    }
    let _ = writeln!(out, "## Consumer groups\n");
    if let Some(r) = groups.and_then(|g| g.rebalance.as_ref()) {
        let _ = writeln!(
            out,
            "### G1: rebalance, {} members over {} partitions (Strata)\n\nHeartbeat interval {:.0} ms (the nodes' `group_heartbeat_interval`); members joined spread over one interval, heartbeat at that interval and give up revoked partitions at once; the group is stable when `describe_group` says Stable with every partition owned, asked every {:.0} ms. The {} members formed a stable group in {:.0} ms.\n",
            r.members, r.partitions, r.heartbeat_interval_ms, r.poll_every_ms, r.members, r.formation_ms
        );
        let _ = writeln!(
            out,
            "| event | runs | p50 ms | p50 intervals | max ms | max intervals |\n| --- | --- | --- | --- | --- | --- |"
        );
        for (event, t) in [("one more member joins", &r.join), ("that member leaves", &r.leave)] {
            let _ = writeln!(
                out,
                "| {event} | {} | {:.0} | {:.2} | {:.0} | {:.2} |",
                t.samples_ms.len(),
                t.p50_ms,
                r.intervals(t.p50_ms),
                t.max_ms,
                r.intervals(t.max_ms)
            );
        }
        let _ = writeln!(
            out,
            "\nFailed heartbeats: {}{}.\n",
            r.heartbeat_errors,
            r.first_error.as_ref().map(|e| format!(" (first: {e})")).unwrap_or_default()
        );
    }
    if let Some(c) = groups.and_then(|g| g.commits.as_ref()) {
        let _ = writeln!(
            out,
            "### G2: offset commits (Strata)\n\n{} committers, each with one commit in flight for a group of its own without members, {} partition offsets per commit ({} records in each partition first), {:.0} s window after {:.0} s warm-up: {} commits, {} offsets, **{:.0} offsets/s**; commit latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; {} errors{}. Server CPU {:.1} s.\n",
            c.committers,
            c.partitions_per_commit,
            c.prefilled_records_per_partition,
            c.duration_secs,
            c.warmup_secs,
            c.commits,
            c.offsets,
            c.offsets_per_sec,
            c.latency_ms.p50,
            c.latency_ms.p99,
            c.latency_ms.p999,
            c.latency_ms.max,
            c.errors,
            c.first_error.as_ref().map(|e| format!(" (first: {e})")).unwrap_or_default(),
            c.resources.total.cpu_seconds,
        );
        let _ = writeln!(
            out,
            "| topic creation ({} partitions, RF 3), one at a time | topics | p50 ms | max ms |\n| --- | --- | --- | --- |",
            c.create_partitions
        );
        for (when, t) in [("alone", &c.create_alone), ("while the commits run", &c.create_during)] {
            let _ = writeln!(out, "| {when} | {} | {:.2} | {:.2} |", t.samples_ms.len(), t.p50_ms, t.max_ms);
        }
        let _ = writeln!(out);
    }
    if !g3.is_empty() {
        let _ = writeln!(
            out,
            "### G3: group consumption, {} consumers, 1 KiB records at a fixed rate\n\nEnd-to-end latency is from a record's stamp (its intended send time) to its receipt by a consumer.\n",
            crate::groups::G3_MEMBERS
        );
        let _ = writeln!(
            out,
            "| system | consumers | offered rec/s | acked rec/s | produce p50 / p99 ms | consumed rec/s | end-to-end p50 / p95 / p99 / max ms | not received | server CPU s |"
        );
        let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        for (system, w) in g3 {
            let r = &w.result;
            let c = r.consume.clone().unwrap_or_default();
            let e = &c.end_to_end_latency_ms;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.0} | {:.2} / {:.2} | {:.0} | {:.2} / {:.2} / {:.2} / {:.2} | {} | {:.1} |",
                system.system.name(),
                crate::groups::g3_how(system.system),
                fmt_opt(r.offered_rate, 0),
                r.records_per_sec,
                r.latency_ms.p50,
                r.latency_ms.p99,
                c.records_per_sec,
                e.p50,
                e.p95,
                e.p99,
                e.max,
                c.missing,
                w.resources.total.cpu_seconds,
            );
        }
        let _ = writeln!(out);
    }
    for error in groups.map(|g| g.errors.as_slice()).unwrap_or_default() {
        let _ = writeln!(out, "- groups: {error}");
    }
    if groups.is_some_and(|g| !g.errors.is_empty()) {
        let _ = writeln!(out);
    }
}

/// T1's section, when it ran.
fn txn_markdown(report: &Report, out: &mut String) {
    let Some(t) = &report.txn else { return };
    let _ = writeln!(out, "## Transactions: T1, read-process-write (Strata)\n");
    let _ = writeln!(
        out,
        "{} records of {} B preloaded into {} input partitions ({:.1} s). One GroupConsumer (auto-commit off, earliest) reads them; each batch of {} input records is written to {} output partitions (the same key and value, alternating partitions) and the input offsets after it are committed: in one transaction (TransactionalProducer), or, as the baseline, with an idempotent acks=all Producer and an offset commit after every delivery (at-least-once). Each loop runs alone, one batch at a time: {:.0} s warm-up, {:.0} s window. Rates count batches whose commit was answered inside the window; latencies count batches begun inside it.\n",
        t.input_records,
        t.record_size,
        t.input_partitions,
        t.preload_secs,
        t.records_per_txn,
        t.output_partitions,
        t.warmup_secs,
        t.duration_secs
    );
    let _ = writeln!(
        out,
        "- **flush**: from the first output handed to the producer to every output stored: `send_offsets_for` in the transactional loop (it sends the outputs and stages the offsets with the coordinator at once), `flush` with each delivery awaited in the baseline;\n- **commit**: from there to the commit's answer: `commit` (the decision written) in the transactional loop, `GroupConsumer::commit_offsets` in the baseline;\n- **batch**: from `begin` (the baseline: the first send) to the commit's answer.\n"
    );
    let loops = [("transactional", t.transactional.as_ref()), ("without transactions (baseline)", t.baseline.as_ref())];
    if loops.iter().any(|(_, l)| l.is_some()) {
        let _ = writeln!(
            out,
            "| loop | how | batches/s | input records/s | flush p50 / p99 ms | commit p50 / p99 ms | batch p50 / p99 ms | window s | batches run again | server CPU s | CPU µs/record |"
        );
        let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        for (name, l) in loops {
            let Some(l) = l else { continue };
            let _ = writeln!(
                out,
                "| {name} | {} | {:.1} | {:.0} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.1}{} | {}{} | {:.1} | {} |",
                l.how,
                l.batches_per_sec,
                l.records_per_sec,
                l.flush_ms.p50,
                l.flush_ms.p99,
                l.commit_ms.p50,
                l.commit_ms.p99,
                l.batch_ms.p50,
                l.batch_ms.p99,
                l.measured_secs,
                if l.input_exhausted { " (input ran out)" } else { "" },
                l.failures,
                l.first_error.as_ref().map(|e| format!(" (first: {e})")).unwrap_or_default(),
                l.resources.total.cpu_seconds,
                fmt_opt(l.resources.cpu_us_per_record, 1),
            );
        }
        let _ = writeln!(out);
    }
    for s in &t.single_produce {
        let l = &s.latency_ms;
        let _ = writeln!(
            out,
            "One acks=all produce {}: {} sequential records of {} B (idempotent Producer, linger 0, one record in flight, a fresh 1-partition topic, {} sent first unmeasured): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms.\n",
            s.when, l.count, s.record_size, s.unmeasured, l.p50, l.p99, l.max
        );
    }
    for error in &t.errors {
        let _ = writeln!(out, "- {error}");
    }
    if !t.errors.is_empty() {
        let _ = writeln!(out);
    }
}

/// The partition moves' section, when they ran.
fn moves_markdown(report: &Report, out: &mut String) {
    let Some(moves) = &report.moves else { return };
    let _ = writeln!(out, "## Partition moves: M1, M2, M3 (Strata, 4 nodes)\n");
    if let Some(m) = &moves.m1 {
        let _ = writeln!(
            out,
            "M1: a partition of {} MiB (RF 3, {:?}) moved to {:?} with no throttle in {:.1} s: **{:.1} MB/s**, {} of the calibrated sequential write bandwidth ({} MB/s). {:.0} MB went to the new replica; the preload took {:.1} s.\n",
            m.partition_bytes >> 20,
            m.from,
            m.to,
            m.move_secs,
            m.mb_per_sec,
            m.share_of_disk.map_or("–".into(), |s| format!("{:.0} %", s * 100.0)),
            fmt_opt(m.disk_write_mb_per_sec, 0),
            m.sent_bytes as f64 / 1e6,
            m.preload_secs
        );
    }
    if let Some(m) = &moves.m2 {
        let _ = writeln!(
            out,
            "M2: {} partitions (RF 3) moved off node 4, {} MiB preloaded into each, then W2's load (4 producers, max rate, 1 KiB, linger 5 ms) alone and right after `strata cluster rebalance --throttle {}`, which recorded {} moves onto node 4 ({} still moving when the load ended; {:.1} MB/s copied meanwhile; the rebalance took {}).\n",
            m.partitions,
            m.preload_bytes_per_partition >> 20,
            strata_core::throttle::show_rate(m.throttle_bytes_per_sec).replace(' ', "").replace("/s", ""),
            m.moves,
            m.moves_left_at_window_end,
            m.copy_mb_per_sec_during_load,
            m.rebalance_secs.map_or("longer than the bound".into(), |s| format!("{s:.1} s")),
        );
        let _ = writeln!(out, "| load | records/s | p50 / p99 ms | errors |\n| --- | --- | --- | --- |");
        for (name, l) in [("alone", &m.baseline), ("during the throttled rebalance", &m.during)] {
            let _ = writeln!(
                out,
                "| {name} | {:.0} | {:.2} / {:.2} | {} |",
                l.records_per_sec, l.latency_ms.p50, l.latency_ms.p99, l.errors
            );
        }
        let _ = writeln!(out, "\nRatio: {}.\n", fmt_opt(m.ratio, 2));
    }
    if let Some(m) = &moves.m3 {
        let _ = writeln!(
            out,
            "M3: `strata cluster remove-node 4` with {} of {} partitions (RF 3) on node 4: it held nothing and had left the cluster after **{:.1} s**.\n",
            m.replicas_on_node, m.partitions, m.remove_secs
        );
    }
    for error in &moves.errors {
        let _ = writeln!(out, "- {error}");
    }
    if !moves.errors.is_empty() {
        let _ = writeln!(out);
    }
}

/// One plotted point: (offered records/s, p50 ms, p99 ms).
type LoadPoint = (f64, f64, f64);

/// p50 and p99 against offered load (open-loop runs of W2 and W3), one
/// colour per system, log-scale latency.
pub fn plot(report: &Report, path: &Path) -> anyhow::Result<()> {
    let mut series: Vec<(System, Vec<LoadPoint>)> = Vec::new();
    for system in &report.systems {
        let mut points: Vec<LoadPoint> = system
            .workloads
            .iter()
            .filter(|w| matches!(w.workload.as_str(), "W2" | "W3") && w.result.latency_ms.count > 0)
            .filter(|w| w.partitions == 6)
            .map(|w| {
                (
                    w.result.offered_rate.unwrap_or(w.result.records_per_sec),
                    w.result.latency_ms.p50,
                    w.result.latency_ms.p99,
                )
            })
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        if !points.is_empty() {
            series.push((system.system, points));
        }
    }
    let x_max = series.iter().flat_map(|(_, p)| p.iter().map(|p| p.0)).fold(1.0, f64::max) * 1.1;
    let y_min = series.iter().flat_map(|(_, p)| p.iter().map(|p| p.1)).fold(f64::MAX, f64::min).max(0.01) * 0.5;
    let y_max = series.iter().flat_map(|(_, p)| p.iter().map(|p| p.2)).fold(1.0, f64::max) * 2.0;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("1 KiB records, 6 partitions, RF 3: latency vs offered load", ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, (y_min..y_max).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("offered load, records/s (max-rate runs at their achieved rate)")
        .y_desc("publish-to-ack latency, ms (solid p99, dashed p50)")
        .draw()?;
    let colours = [RED, BLUE, GREEN, MAGENTA];
    for (index, (system, points)) in series.iter().enumerate() {
        let colour = colours[index % colours.len()];
        chart
            .draw_series(LineSeries::new(points.iter().map(|p| (p.0, p.2)), colour.stroke_width(2)))?
            .label(format!("{} p99", system.name()))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        chart.draw_series(points.iter().map(|p| Circle::new((p.0, p.2), 3, colour.filled())))?;
        chart.draw_series(DashedLineSeries::new(points.iter().map(|p| (p.0, p.1)), 6, 4, colour.stroke_width(1)))?;
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw()?;
    root.present()?;
    Ok(())
}

/// A quick-mode report with nothing measured, for tests to fill in.
#[cfg(test)]
pub(crate) fn empty_report() -> Report {
    Report {
        date: "test".into(),
        quick: true,
        machine: Machine { cores: 2, memory_bytes: 0, kernel: String::new(), cpu: String::new(), note: String::new() },
        settings: serde_json::Value::Null,
        calibration: None,
        systems: vec![],
        w5: None,
        w7: None,
        groups: None,
        txn: None,
        moves: None,
        targets: vec![],
        notes: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(txn: Option<TxnResult>) -> Report {
        Report { txn, ..empty_report() }
    }

    fn t1() -> TxnResult {
        let looped = |how: &str, records_per_sec: f64, input_exhausted: bool| LoopResult {
            how: how.into(),
            batches: 300,
            records: 30_000,
            measured_secs: 5.0,
            input_exhausted,
            batches_per_sec: records_per_sec / 100.0,
            records_per_sec,
            flush_ms: Percentiles { count: 300, p50: 4.25, p99: 9.5, ..Default::default() },
            commit_ms: Percentiles { count: 300, p50: 6.5, p99: 12.75, ..Default::default() },
            batch_ms: Percentiles { count: 300, p50: 11.0, p99: 21.0, ..Default::default() },
            ..Default::default()
        };
        TxnResult {
            records_per_txn: 100,
            input_partitions: 2,
            output_partitions: 2,
            record_size: 1024,
            input_records: 120_000,
            preload_secs: 9.5,
            warmup_secs: 1.0,
            duration_secs: 5.0,
            single_produce: vec![SingleProduceResult {
                when: "before the loops".into(),
                unmeasured: 20,
                record_size: 1024,
                latency_ms: Percentiles { count: 200, p50: 2.25, p99: 4.5, ..Default::default() },
            }],
            transactional: Some(looped("txn", 6000.0, false)),
            baseline: Some(looped("plain", 9000.0, true)),
            errors: vec!["T1 single produce after the loops: refused".into()],
        }
    }

    #[test]
    fn the_transaction_section_defines_its_figures_and_lists_both_loops() {
        assert!(!markdown(&report(None)).contains("T1"));
        let text = markdown(&report(Some(t1())));
        let section = text.split("## Transactions: T1").nth(1).expect("a T1 section");
        for wanted in [
            "120000 records of 1024 B preloaded into 2 input partitions (9.5 s)",
            "each batch of 100 input records is written to 2 output partitions",
            "**commit**: from there to the commit's answer: `commit` (the decision written)",
            "| transactional | txn | 60.0 | 6000 | 4.25 / 9.50 | 6.50 / 12.75 | 11.00 / 21.00 | 5.0 | 0 |",
            "| without transactions (baseline) | plain | 90.0 | 9000 |",
            "5.0 (input ran out)",
            "One acks=all produce before the loops: 200 sequential records of 1024 B",
            "p50 2.25 ms, p99 4.50 ms",
            "- T1 single produce after the loops: refused",
        ] {
            assert!(section.contains(wanted), "missing {wanted:?} in\n{section}");
        }
    }

    #[test]
    fn the_json_holds_every_t1_figure_under_txn() {
        let json = serde_json::to_value(report(Some(t1()))).expect("serialisable");
        let t1 = &json["txn"];
        assert_eq!(t1["records_per_txn"], 100);
        assert_eq!(t1["input_records"], 120_000);
        for side in ["transactional", "baseline"] {
            let l = &t1[side];
            for key in ["records_per_sec", "batches_per_sec", "measured_secs", "input_exhausted", "failures"] {
                assert!(!l[key].is_null(), "{side}.{key}");
            }
            for histogram in ["flush_ms", "commit_ms", "batch_ms"] {
                for key in ["count", "p50", "p99", "max"] {
                    assert!(l[histogram][key].is_number(), "{side}.{histogram}.{key}");
                }
            }
        }
        assert_eq!(t1["transactional"]["commit_ms"]["p50"], 6.5);
        assert_eq!(t1["single_produce"][0]["latency_ms"]["p50"], 2.25);
        assert!(serde_json::to_value(report(None)).expect("serialisable")["txn"].is_null());
    }
}
