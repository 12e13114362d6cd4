//! The workloads of benchmarks.md as the suite runs them, one cluster at a
//! time: phase A (W1, the W2 ramp, W4) and phase B (W3) on every system,
//! W7 and W5 on Strata.

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::args::Timing;
use crate::leadership;
use crate::load::{self, LoadSpec};
use crate::procs;
use crate::ramp;
use crate::report::{Resources, SystemResults, W5Result, W7Result, WorkloadResult};
use crate::sinks::{ClientSettings, SystemSink};
use crate::systems::{self, Cluster, System};

/// Outstanding records per producer at max rate: enough to keep every
/// system's pipeline full, few enough that latency stays meaningful.
pub const MAX_RATE_WINDOW: usize = 256;
/// Outstanding bound in open-loop runs: large, so the schedule, not the
/// window, decides when records go out.
pub const OPEN_LOOP_WINDOW: usize = 16_384;
/// W4's outstanding records per producer: 100-byte records need more in
/// flight than 1 KiB ones to keep the pipeline as full.
const W4_WINDOW: usize = 1024;

/// W3's offered rates, in percent of the base rate (benchmarks.md: 25, 50
/// and 80 % of the weakest peer's max).
const W3_SHARES_PERCENT: [f64; 3] = [25.0, 50.0, 80.0];
/// W7 runs during W3 at 50 % (benchmarks.md).
pub const W7_SHARE_OF_BASE: f64 = 0.5;
/// W7's shortest measured window: the leader dies a third in, and the
/// window must outlast an election and the clients' recovery by seconds.
const W7_MIN_DURATION_SECS: f64 = 9.0;
/// How long W7 may take to read its partition back from the survivors.
const W7_READ_BACK_TIMEOUT: Duration = Duration::from_secs(120);

/// W5's partitions (benchmarks.md: 1,000, later 10,000), and the load
/// spread over them once they are led.
pub const W5_PARTITIONS: u32 = 1000;
const W5_RATE_PER_SEC: f64 = 10_000.0;
/// How long W5's partitions may take to all have a leader.
const W5_READY_TIMEOUT: Duration = Duration::from_secs(240);
/// How long W5 waits for every replica to go quiet before measuring idle.
const W5_SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// W5's idle measurement.
const W5_IDLE: Duration = Duration::from_secs(10);
/// How often W5 scrapes the nodes while it waits.
const W5_POLL_EVERY: Duration = Duration::from_secs(1);

/// W3's base rate when no fsync-class peer was measured and Strata's own
/// max rate is missing too: a rate any system sustains.
const W3_FALLBACK_BASE: f64 = 1000.0;

async fn run_workload(
    cluster: &Cluster,
    workload: &str,
    label: &str,
    partitions: u32,
    spec: LoadSpec,
    client: &ClientSettings,
) -> anyhow::Result<WorkloadResult> {
    let topic = label.replace([' ', '%'], "-").replace("--", "-").trim_end_matches('-').to_lowercase();
    systems::create_topic(cluster, &topic, partitions).await.with_context(|| format!("create {topic}"))?;
    let mut sinks = Vec::new();
    for index in 0..spec.producers {
        sinks
            .push(SystemSink::connect(cluster, &topic, partitions, index, client).await.context("connect a producer")?);
    }
    let pids = cluster.pids();
    pids.iter().for_each(|pid| procs::reset_peak(*pid));
    let before: Vec<procs::Usage> = pids.iter().map(|pid| procs::usage(*pid)).collect();
    let leaders_before = leadership::snapshot(cluster).await;
    let result = load::run(sinks, &spec, None).await;
    let after: Vec<procs::Usage> = pids.iter().map(|pid| procs::usage(*pid)).collect();
    // Strata only: the peers serve no metrics, so both snapshots are empty.
    let leadership = leadership::snapshot(cluster).await.since(&leaders_before).map(|l| l.for_topic(&topic));
    let resources = resources(&before, &after, result.acked_total, spec.record_size);
    eprintln!(
        "  {:<9} {:<14} {:>10.0} rec/s  p50 {:>8.2} ms  p99 {:>8.2} ms  errors {}",
        cluster.system.name(),
        label,
        result.records_per_sec,
        result.latency_ms.p50,
        result.latency_ms.p99,
        result.errors
    );
    Ok(WorkloadResult {
        workload: workload.to_string(),
        label: label.to_string(),
        partitions,
        spec,
        result,
        resources,
        leadership,
    })
}

pub(crate) fn resources(before: &[procs::Usage], after: &[procs::Usage], acked: u64, record_size: usize) -> Resources {
    let per_node: Vec<procs::Usage> = before.iter().zip(after).map(|(b, a)| procs::delta(b, a)).collect();
    let mut total = procs::Usage::default();
    for node in &per_node {
        total.cpu_seconds += node.cpu_seconds;
        total.write_bytes += node.write_bytes;
        total.peak_rss_bytes += node.peak_rss_bytes;
        total.rss_bytes += node.rss_bytes;
    }
    let payload_bytes = acked * record_size as u64;
    Resources {
        write_amplification: (payload_bytes > 0).then(|| total.write_bytes as f64 / (payload_bytes as f64 * 3.0)),
        cpu_us_per_record: (acked > 0).then(|| total.cpu_seconds * 1e6 / acked as f64),
        total,
        per_node,
        payload_bytes,
    }
}

fn linger(ms: u64) -> ClientSettings {
    ClientSettings { linger_ms: ms }
}

/// W1, W2 (max rate, then open-loop steps down until p99 holds) and W4.
pub async fn phase_a(cluster: &Cluster, quick: bool, timing: &Timing, results: &mut SystemResults) {
    let mut record = |outcome: anyhow::Result<WorkloadResult>, what: &str| match outcome {
        Ok(result) => Some(result),
        Err(error) => {
            eprintln!("  {} {what} failed: {error:#}\n{}", cluster.system.name(), cluster.logs());
            results.errors.push(format!("{what}: {error:#}"));
            None
        }
    };
    let w1 = run_workload(cluster, "W1", "W1", 1, timing.spec(1, None, 1, 1024), &linger(0)).await;
    let mut done = Vec::new();
    done.extend(record(w1, "W1"));
    let partition_counts: &[u32] = if quick { &[6] } else { &[6, 16] };
    for &partitions in partition_counts {
        let label = format!("W2 {partitions}p max");
        let max =
            run_workload(cluster, "W2", &label, partitions, timing.spec(4, None, MAX_RATE_WINDOW, 1024), &linger(5))
                .await;
        let Some(max) = record(max, &label) else { continue };
        let (achieved, no_ramp) = (max.result.records_per_sec, ramp::max_rate_needs_no_ramp(&max.result));
        done.push(max);
        if no_ramp {
            continue;
        }
        for step in ramp::steps_below(achieved, ramp::steps(quick)) {
            let label = step.label(partitions);
            let spec = timing.spec(4, Some(step.rate), OPEN_LOOP_WINDOW, 1024);
            let Some(run) = record(run_workload(cluster, "W2", &label, partitions, spec, &linger(5)).await, &label)
            else {
                break;
            };
            let holds = ramp::step_holds(&run.result);
            done.push(run);
            if holds {
                break;
            }
        }
    }
    let w4 = run_workload(cluster, "W4", "W4", 16, timing.spec(4, None, W4_WINDOW, 100), &linger(5)).await;
    done.extend(record(w4, "W4"));
    results.workloads.extend(done);
}

/// W3's base rate: the weakest fsync-class peer's W2 max rate (6
/// partitions), else Strata's own; and a note when no peer was measured.
pub fn w3_base(results: &[SystemResults]) -> (f64, Option<&'static str>) {
    let max_rate = |s: System| {
        results
            .iter()
            .find(|r| r.system == s)
            .and_then(|r| r.find("W2 6p max"))
            .map(|w| w.result.records_per_sec)
            .filter(|r| *r > 0.0)
    };
    let peers: Vec<f64> = System::FSYNC_CLASS_PEERS.into_iter().filter_map(max_rate).collect();
    match crate::targets::lowest(peers) {
        Some(weakest) => (weakest, None),
        None => (
            max_rate(System::Strata).unwrap_or(W3_FALLBACK_BASE),
            Some("W3 base: no fsync-class peer measured; used Strata's own W2 max rate"),
        ),
    }
}

/// W3: open loop at 25, 50 and 80 % of `base` records/s.
pub async fn phase_b(cluster: &Cluster, base: f64, timing: &Timing, results: &mut SystemResults) {
    for share in W3_SHARES_PERCENT {
        let label = format!("W3 {share:.0}%");
        let spec = timing.spec(4, Some((base * share / 100.0).round().max(1.0)), OPEN_LOOP_WINDOW, 1024);
        match run_workload(cluster, "W3", &label, 6, spec, &linger(5)).await {
            Ok(result) => results.workloads.push(result),
            Err(error) => results.errors.push(format!("{label}: {error:#}")),
        }
    }
}

/// W7: SIGKILL the leader of a 1-partition topic a third into an open-loop
/// run, then check that every acknowledged record is there.
pub async fn w7(cluster: &Cluster, rate: f64, timing: &Timing) -> anyhow::Result<W7Result> {
    let topic = "w7";
    systems::create_topic(cluster, topic, 1).await?;
    let leader = systems::strata_leader(cluster, topic).await?;
    let pid = cluster.servers[leader].pid().context("leader process")?;
    let sinks = vec![
        SystemSink::connect(cluster, topic, 1, 0, &linger(5)).await?,
        SystemSink::connect(cluster, topic, 1, 1, &linger(5)).await?,
    ];
    let mut spec = timing.spec(2, Some(rate), OPEN_LOOP_WINDOW, 1024);
    spec.duration_secs = spec.duration_secs.max(W7_MIN_DURATION_SECS);
    spec.track_acks = true;
    let kill = Box::new(move || {
        eprintln!("  W7: SIGKILL to node {} (pid {pid})", leader + 1);
        // SAFETY: kill(2) on a pid we started.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    });
    let result = load::run(sinks, &spec, Some(kill)).await;

    // Read the partition back from the surviving nodes.
    let client = strata_client::Client::connect(&cluster.endpoints)?;
    let end = client.list_offsets(topic, 0, strata_client::OffsetSpec::Latest).await?.high_watermark;
    let mut consumer = strata_client::Consumer::new(client);
    consumer.assign(topic, 0, strata_client::StartOffset::Earliest).await?;
    let mut stored = std::collections::HashSet::new();
    let deadline = Instant::now() + W7_READ_BACK_TIMEOUT;
    while consumer.position(topic, 0).unwrap_or(0) < end {
        anyhow::ensure!(Instant::now() < deadline, "could not read back the W7 partition in time");
        for record in consumer.poll(Duration::from_millis(500)).await? {
            if let Some(id) = record.value.as_deref().and_then(strata_load::stamp::id_of) {
                stored.insert(id);
            }
        }
    }
    let lost = result.acked_ids.iter().filter(|id| !stored.contains(id)).count() as u64;
    eprintln!(
        "  W7: longest ack gap {:.0} ms, p99.9 {:.1} ms, {} acked, {lost} lost",
        result.max_ack_gap_ms, result.latency_ms.p999, result.acked_total
    );
    Ok(W7Result {
        offered_rate: rate,
        killed_node: leader,
        unavailable_ms: result.max_ack_gap_ms,
        latency_ms: result.latency_ms,
        acked: result.acked_ids.len() as u64,
        lost,
        errors: result.errors,
        first_error: result.first_error.clone(),
    })
}

/// A gauge (or counter) summed over the Strata nodes' metrics (one scrape per node);
/// a node that does not answer or lacks the gauge counts 0.
pub(crate) async fn sum_gauge(cluster: &Cluster, name: &str) -> f64 {
    let mut sum = 0.0;
    for address in &cluster.metrics {
        if let Ok(page) = systems::scrape(address).await {
            sum += page
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
                .unwrap_or(0.0);
        }
    }
    sum
}

/// The topic W5 writes to.
const W5_TOPIC: &str = "w5";

/// W5: many mostly idle partitions: idle CPU and memory per partition
/// replica, then (when every partition has a leader) 10k records/s spread
/// over them. The idle figures are taken even if not every partition
/// becomes ready, since that cost is what W5 is about.
pub async fn w5(cluster: &Cluster, partitions: u32, timing: &Timing) -> anyhow::Result<W5Result> {
    let pids = cluster.pids();
    let before: Vec<procs::Usage> = pids.iter().map(|p| procs::usage(*p)).collect();
    let client = strata_client::Client::connect(&cluster.endpoints)?;
    let leaders_at_start = leadership::snapshot(cluster).await;
    let started = Instant::now();
    client.create_topic(W5_TOPIC, partitions, 3, Default::default()).await?;
    // Leaders counted from the nodes' metrics (one scrape per node, not one request per partition).
    let mut led = 0.0;
    while Instant::now() < started + W5_READY_TIMEOUT {
        led = sum_gauge(cluster, "strata_partitions_led").await;
        // The metadata group is not counted: only partitions.
        if led >= partitions as f64 {
            break;
        }
        tokio::time::sleep(W5_POLL_EVERY).await;
    }
    let ready_secs = started.elapsed().as_secs_f64();
    // Idle means settled: partitions stop their Raft timers a few seconds
    // after their last write (quiescence), so wait until every replica is
    // quiet, or the settle timeout, whichever comes first.
    let settle_started = Instant::now();
    let mut quiet = 0.0;
    while settle_started.elapsed() < W5_SETTLE_TIMEOUT {
        quiet = sum_gauge(cluster, "strata_quiet_partitions").await;
        if quiet >= partitions as f64 * 3.0 {
            break;
        }
        tokio::time::sleep(W5_POLL_EVERY).await;
    }
    let settle_secs = settle_started.elapsed().as_secs_f64();
    let idle_secs = W5_IDLE.as_secs_f64();
    let idle_start: Vec<procs::Usage> = pids.iter().map(|p| procs::usage(*p)).collect();
    tokio::time::sleep(W5_IDLE).await;
    let idle_end: Vec<procs::Usage> = pids.iter().map(|p| procs::usage(*p)).collect();
    let rate = W5_RATE_PER_SEC;
    let leaders_at_load = leadership::snapshot(cluster).await;
    let load = if led >= partitions as f64 {
        let sinks = vec![
            SystemSink::connect(cluster, W5_TOPIC, partitions, 0, &linger(5)).await?,
            SystemSink::connect(cluster, W5_TOPIC, partitions, 1, &linger(5)).await?,
        ];
        Some(load::run(sinks, &timing.spec(2, Some(rate), OPEN_LOOP_WINDOW, 1024), None).await)
    } else {
        None
    };
    let leadership_during_load = match load {
        Some(_) => leadership::snapshot(cluster).await.since(&leaders_at_load).map(|l| l.for_topic(W5_TOPIC)),
        None => None,
    };
    // RF 3 on 3 nodes: every node hosts one replica of every partition.
    Ok(W5Result {
        partitions,
        partitions_led: led as u64,
        ready_secs,
        quiet_replicas: quiet as u64,
        settle_secs,
        offered_rate: rate,
        load,
        idle_cpu_core_fraction: idle_start
            .iter()
            .zip(&idle_end)
            .map(|(a, b)| (b.cpu_seconds - a.cpu_seconds) / idle_secs)
            .collect(),
        memory_per_replica_bytes: before
            .iter()
            .zip(&idle_end)
            .map(|(b, a)| (a.rss_bytes as f64 - b.rss_bytes as f64) / partitions as f64)
            .collect(),
        leadership_before_load: leaders_at_load.since(&leaders_at_start).map(|l| l.for_topic(W5_TOPIC)),
        leadership_during_load,
    })
}

/// Mean of `<name>_sum / <name>_count` over Strata nodes' metrics pages.
pub fn metric_mean(pages: &[String], name: &str) -> Option<f64> {
    let value = |page: &String, suffix: &str| {
        page.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}_{suffix} ")).and_then(|v| v.trim().parse::<f64>().ok()))
    };
    let (mut sum, mut count) = (0.0, 0.0);
    for page in pages {
        sum += value(page, "sum")?;
        count += value(page, "count")?;
    }
    (count > 0.0).then(|| sum / count)
}

/// Notes on Strata's own metrics over phase A: group commit and Raft commit.
pub async fn strata_notes(cluster: &Cluster) -> Vec<String> {
    let mut pages = Vec::new();
    for address in &cluster.metrics {
        if let Ok(page) = systems::scrape(address).await {
            pages.push(page);
        }
    }
    let mut notes = Vec::new();
    if let Some(batch) = metric_mean(&pages, "strata_group_commit_batch_size") {
        notes.push(format!("Strata group commit over phase A: {batch:.1} appends per fsync on average"));
    }
    if let Some(fsync) = metric_mean(&pages, "strata_group_commit_fsync_seconds") {
        notes.push(format!("Strata WAL fsync over phase A: {:.3} ms on average", fsync * 1000.0));
    }
    if let Some(commit) = metric_mean(&pages, "strata_raft_commit_latency_seconds") {
        notes.push(format!("Strata Raft commit (propose to apply) over phase A: {:.3} ms on average", commit * 1000.0));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ramp::tests::run;

    fn system(system: System, max_rate: Option<f64>) -> SystemResults {
        SystemResults {
            system,
            durability: system.durability(),
            version: String::new(),
            errors: vec![],
            workloads: max_rate.map(|r| run("W2", "W2 6p max", 6, r, 80.0)).into_iter().collect(),
        }
    }

    #[test]
    fn w3_runs_at_shares_of_the_weakest_fsync_class_peer() {
        let results = vec![
            system(System::Strata, Some(30_000.0)),
            system(System::Etcd, Some(9000.0)),
            system(System::Rabbitmq, Some(12_000.0)),
            system(System::Nats, Some(2000.0)),
        ];
        assert_eq!(w3_base(&results), (9000.0, None));
        // A peer that achieved nothing does not count.
        let results = vec![system(System::Strata, Some(30_000.0)), system(System::Etcd, Some(0.0))];
        let (base, note) = w3_base(&results);
        assert_eq!(base, 30_000.0);
        assert!(note.is_some());
        assert_eq!(w3_base(&[system(System::Strata, None)]).0, W3_FALLBACK_BASE);
    }

    #[test]
    fn metric_means_are_taken_over_every_node() {
        let pages = vec!["x_sum 3\nx_count 2\n".to_string(), "x_sum 1\nx_count 2\n".to_string()];
        assert_eq!(metric_mean(&pages, "x"), Some(1.0));
        assert_eq!(metric_mean(&pages, "y"), None);
        assert_eq!(metric_mean(&["x_sum 0\nx_count 0\n".to_string()], "x"), None);
    }
}
