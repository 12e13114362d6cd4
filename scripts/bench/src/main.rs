//! `strata-bench-suite`: runs the benchmark of ../../shared/design's
//! benchmarks.md on this machine. Calibrates the disk and loopback, then
//! runs each system as a 3-node loopback cluster (Strata, etcd, RabbitMQ
//! quorum queues, NATS JetStream R3) through W1, W2, W4 and W3 with one
//! load generator, measures every server process from /proc, runs W7 (and
//! W5 outside quick mode) on Strata, and writes JSON, Markdown and SVG.
//!
//! Clusters run one at a time, so one system's idle cost never disturbs
//! another's figures. Every cluster is stopped when its phase ends, also on
//! errors (servers are killed when dropped).

mod calibrate;
mod load;
mod procs;
mod report;
mod systems;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;

use crate::load::LoadSpec;
use crate::report::{Machine, Report, Resources, SystemResults, Target, W5Result, W7Result, WorkloadResult};
use crate::systems::{ClientSettings, Cluster, Sink, System};

#[derive(Parser, Debug)]
#[command(about = "Benchmarks Strata against etcd, RabbitMQ quorum queues and NATS JetStream")]
struct Args {
    /// Short runs: the whole suite in under 10 minutes.
    #[arg(long)]
    quick: bool,
    /// The release `strata` binary.
    #[arg(long)]
    strata_bin: PathBuf,
    /// Where results go (<date>.json, <date>.md, <date>.svg).
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Where the clusters keep their data (removed afterwards). Must be on
    /// the disk being measured, not a tmpfs.
    #[arg(long, default_value = "/var/tmp/strata-bench")]
    work_dir: PathBuf,
    /// Run W5 (1,000 partitions) also in quick mode.
    #[arg(long)]
    w5: bool,
    /// Run only W5 (implies --w5; for studying partition overhead).
    #[arg(long)]
    only_w5: bool,
    /// Systems to run (default: all): strata, etcd, rabbitmq, nats.
    #[arg(long, value_delimiter = ',')]
    systems: Vec<String>,
}

/// Durations of one mode.
struct Timing {
    warmup_secs: f64,
    duration_secs: f64,
    drain_secs: f64,
}

impl Timing {
    fn of(quick: bool) -> Timing {
        if quick {
            Timing { warmup_secs: 1.0, duration_secs: 5.0, drain_secs: 30.0 }
        } else {
            Timing { warmup_secs: 3.0, duration_secs: 20.0, drain_secs: 60.0 }
        }
    }

    fn spec(&self, producers: usize, rate: Option<f64>, window: usize, record_size: usize) -> LoadSpec {
        LoadSpec {
            producers,
            rate,
            window,
            record_size,
            warmup_secs: self.warmup_secs,
            duration_secs: self.duration_secs,
            drain_secs: self.drain_secs,
            track_acks: false,
        }
    }
}

/// Outstanding records per producer at max rate: enough to keep every
/// system's pipeline full, few enough that latency stays meaningful.
const MAX_RATE_WINDOW: usize = 256;
/// Outstanding bound in open-loop runs: large, so the schedule, not the
/// window, decides when records go out.
const OPEN_LOOP_WINDOW: usize = 16_384;
/// W2's latency bound: the highest rate whose p99 stays under it counts.
const W2_P99_BOUND_MS: f64 = 50.0;

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
        sinks.push(Sink::connect(cluster, &topic, partitions, index, client).await.context("connect a producer")?);
    }
    let pids = cluster.pids();
    pids.iter().for_each(|pid| procs::reset_peak(*pid));
    let before: Vec<procs::Usage> = pids.iter().map(|pid| procs::usage(*pid)).collect();
    let result = load::run(sinks, &spec, None).await;
    let after: Vec<procs::Usage> = pids.iter().map(|pid| procs::usage(*pid)).collect();
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
    Ok(WorkloadResult { workload: workload.to_string(), label: label.to_string(), partitions, spec, result, resources })
}

fn resources(before: &[procs::Usage], after: &[procs::Usage], acked: u64, record_size: usize) -> Resources {
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

/// W1, W2 (max rate, then open-loop steps down until p99 < 50 ms) and W4.
async fn phase_a(cluster: &Cluster, quick: bool, timing: &Timing, results: &mut SystemResults) {
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
        let (achieved, holds) = (max.result.records_per_sec, max.result.latency_ms.p99 < W2_P99_BOUND_MS);
        done.push(max);
        if holds || achieved <= 0.0 {
            continue;
        }
        // Open-loop steps down from the max-rate throughput until p99 holds.
        let steps = if quick { 4 } else { 7 };
        let mut share = 0.8;
        for _ in 0..steps {
            let rate = (achieved * share).round().max(1.0);
            let label = format!("W2 {partitions}p {:.0}%", share * 100.0);
            let spec = timing.spec(4, Some(rate), OPEN_LOOP_WINDOW, 1024);
            let Some(run) = record(run_workload(cluster, "W2", &label, partitions, spec, &linger(5)).await, &label)
            else {
                break;
            };
            let holds = run.result.latency_ms.p99 < W2_P99_BOUND_MS && run.result.errors == 0;
            done.push(run);
            if holds {
                break;
            }
            share *= 0.7;
        }
    }
    let w4 = run_workload(cluster, "W4", "W4", 16, timing.spec(4, None, 1024, 100), &linger(5)).await;
    done.extend(record(w4, "W4"));
    results.workloads.extend(done);
}

/// W3: open loop at 25, 50 and 80 % of `base` records/s.
async fn phase_b(cluster: &Cluster, base: f64, timing: &Timing, results: &mut SystemResults) {
    for share in [25.0, 50.0, 80.0] {
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
async fn w7(cluster: &Cluster, rate: f64, timing: &Timing) -> anyhow::Result<W7Result> {
    let topic = "w7";
    systems::create_topic(cluster, topic, 1).await?;
    let leader = systems::strata_leader(cluster, topic).await?;
    let pid = cluster.servers[leader].pid().context("leader process")?;
    let sinks = vec![
        Sink::connect(cluster, topic, 1, 0, &linger(5)).await?,
        Sink::connect(cluster, topic, 1, 1, &linger(5)).await?,
    ];
    let mut spec = timing.spec(2, Some(rate), OPEN_LOOP_WINDOW, 1024);
    spec.duration_secs = spec.duration_secs.max(9.0);
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
    let deadline = Instant::now() + Duration::from_secs(120);
    while consumer.position(topic, 0).unwrap_or(0) < end {
        anyhow::ensure!(Instant::now() < deadline, "could not read back the W7 partition in time");
        for record in consumer.poll(Duration::from_millis(500)).await? {
            if let Some(id) = record.value.as_deref().and_then(load::id_of) {
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

/// W5: many mostly idle partitions: idle CPU and memory per partition
/// replica, then (when every partition has a leader) 10k records/s spread
/// over them. The idle figures are taken even if not every partition
/// becomes ready, since that cost is what W5 is about.
/// A gauge summed over the Strata nodes' metrics (one scrape per node);
/// a node that does not answer or lacks the gauge counts 0.
async fn sum_gauge(cluster: &Cluster, name: &str) -> f64 {
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

async fn w5(cluster: &Cluster, partitions: u32, timing: &Timing) -> anyhow::Result<W5Result> {
    let pids = cluster.pids();
    let before: Vec<procs::Usage> = pids.iter().map(|p| procs::usage(*p)).collect();
    let client = strata_client::Client::connect(&cluster.endpoints)?;
    let started = Instant::now();
    client.create_topic("w5", partitions, 3, Default::default()).await?;
    // Leaders counted from the nodes' metrics (one scrape per node, not one request per partition).
    let mut led = 0.0;
    while Instant::now() < started + Duration::from_secs(240) {
        led = sum_gauge(cluster, "strata_partitions_led").await;
        // The metadata group is not counted: only partitions.
        if led >= partitions as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let ready_secs = started.elapsed().as_secs_f64();
    // Idle means settled: partitions stop their Raft timers a few seconds
    // after their last write (quiescence), so wait until every replica is
    // quiet, or 30 s, whichever comes first.
    let settle_started = Instant::now();
    let mut quiet = 0.0;
    while settle_started.elapsed() < Duration::from_secs(30) {
        quiet = sum_gauge(cluster, "strata_quiet_partitions").await;
        if quiet >= partitions as f64 * 3.0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let settle_secs = settle_started.elapsed().as_secs_f64();
    let idle_secs = 10.0;
    let idle_start: Vec<procs::Usage> = pids.iter().map(|p| procs::usage(*p)).collect();
    tokio::time::sleep(Duration::from_secs_f64(idle_secs)).await;
    let idle_end: Vec<procs::Usage> = pids.iter().map(|p| procs::usage(*p)).collect();
    let rate = 10_000.0;
    let load = if led >= partitions as f64 {
        let sinks = vec![
            Sink::connect(cluster, "w5", partitions, 0, &linger(5)).await?,
            Sink::connect(cluster, "w5", partitions, 1, &linger(5)).await?,
        ];
        Some(load::run(sinks, &timing.spec(2, Some(rate), OPEN_LOOP_WINDOW, 1024), None).await)
    } else {
        None
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
    })
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn machine() -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let memory_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| t.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<u64>().ok()))
        .unwrap_or(0)
        * 1024;
    Machine {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_bytes,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
        cpu,
        note: "Shared machine: other engineers' builds and tests may run at the same time, so compare systems \
               within this run rather than across runs; clients and servers share the same cores."
            .to_string(),
    }
}

/// Mean of `<name>_sum / <name>_count` over Strata nodes' metrics pages.
fn metric_mean(pages: &[String], name: &str) -> Option<f64> {
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

fn targets(report: &Report) -> Vec<Target> {
    let system = |s: System| report.systems.iter().find(|r| r.system == s);
    let strata = system(System::Strata);
    let mut out = Vec::new();
    let w2 = |s: System| system(s).and_then(|r| r.w2_sustained(6)).map(|w| w.result.records_per_sec);
    let best_peer = [System::Etcd, System::Rabbitmq]
        .into_iter()
        .filter_map(w2)
        .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))));
    let strata_w2 = w2(System::Strata);
    let ratio = strata_w2.zip(best_peer).map(|(s, p)| s / p);
    out.push(Target {
        name: "W2 records/s vs best of etcd and RabbitMQ".into(),
        value: ratio,
        goal: "≥ 1.25×".into(),
        met: ratio.map(|r| r >= 1.25),
        detail: format!(
            "highest 6-partition rate with p99 < 50 ms: Strata {} vs best fsync-class peer {}",
            strata_w2.map_or("–".into(), |v| format!("{v:.0}")),
            best_peer.map_or("–".into(), |v| format!("{v:.0}"))
        ),
    });
    let max = |s: System| system(s).and_then(|r| r.find("W2 6p max")).map(|w| w.result.records_per_sec);
    let best_peer_max = [System::Etcd, System::Rabbitmq]
        .into_iter()
        .filter_map(max)
        .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))));
    let ratio = max(System::Strata).zip(best_peer_max).map(|(s, p)| s / p);
    out.push(Target {
        name: "W2 max-rate records/s vs best of etcd and RabbitMQ".into(),
        value: ratio,
        goal: "≥ 1.25× (informative: no latency bound)".into(),
        met: ratio.map(|r| r >= 1.25),
        detail: format!(
            "6 partitions, 4 producers, {MAX_RATE_WINDOW} outstanding each: Strata {} vs {}",
            max(System::Strata).map_or("–".into(), |v| format!("{v:.0}")),
            best_peer_max.map_or("–".into(), |v| format!("{v:.0}"))
        ),
    });
    if let Some(calibration) = &report.calibration {
        let ceiling = calibration.ceiling_records_per_sec(1024, 1.0);
        let share = strata_w2.map(|s| s / ceiling);
        out.push(Target {
            name: "W2 share of the calibrated ceiling".into(),
            value: share,
            goal: "≥ 0.30".into(),
            met: share.map(|s| s >= 0.30),
            detail: format!(
                "ceiling {ceiling:.0} records/s = write bandwidth / (3 × 1 KiB), write amplification taken as 1"
            ),
        });
        let w1 = strata.and_then(|r| r.find("W1")).map(|w| w.result.latency_ms.p50);
        let floor = calibration.w1_floor_ms();
        out.push(Target {
            name: "W1 p50 vs calibrated floor".into(),
            value: w1.map(|p| p / floor),
            goal: "≤ 3×".into(),
            met: w1.map(|p| p <= 3.0 * floor),
            detail: format!("Strata W1 p50 {} ms, floor {floor:.3} ms (fsync p50 + loopback RTT p50)", fmt(w1)),
        });
    }
    let p99 = |s: System| {
        system(s).and_then(|r| r.find("W3 50%")).filter(|w| w.result.errors == 0).map(|w| w.result.latency_ms.p99)
    };
    let best_p99 = [System::Etcd, System::Rabbitmq]
        .into_iter()
        .filter_map(p99)
        .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.min(b))));
    let strata_p99 = p99(System::Strata);
    let ratio = strata_p99.zip(best_p99).map(|(s, p)| s / p);
    out.push(Target {
        name: "W3 at 50 % p99 vs best fsync-class peer".into(),
        value: ratio,
        goal: "≤ 0.8×".into(),
        met: ratio.map(|r| r <= 0.8),
        detail: format!("Strata p99 {} ms vs {} ms", fmt(strata_p99), fmt(best_p99)),
    });
    let wa = strata
        .and_then(|r| r.w2_sustained(6).or_else(|| r.find("W2 6p max")))
        .and_then(|w| w.resources.write_amplification);
    out.push(Target {
        name: "write amplification (W2)".into(),
        value: wa,
        goal: "≤ 2.5".into(),
        met: wa.map(|w| w <= 2.5),
        detail: "bytes written by all replicas (/proc/PID/io write_bytes) / (payload bytes × 3)".into(),
    });
    if let Some(w5) = &report.w5 {
        let cpu = w5.idle_cpu_core_fraction.iter().cloned().fold(0.0, f64::max);
        let memory = w5.memory_per_replica_bytes.iter().cloned().fold(0.0, f64::max);
        out.push(Target {
            name: format!("W5 idle CPU per node ({} partitions)", w5.partitions),
            value: Some(cpu),
            goal: "< 0.10 of a core".into(),
            met: Some(cpu < 0.10),
            detail: "worst node, over 10 s with every partition idle, before the load".into(),
        });
        out.push(Target {
            name: "W5 memory per partition replica".into(),
            value: Some(memory / 1024.0),
            goal: "< 200 KiB".into(),
            met: Some(memory < 200.0 * 1024.0),
            detail: "worst node: resident memory growth / partitions hosted, in KiB".into(),
        });
    } else {
        out.push(Target {
            name: "W5 idle CPU and memory per partition replica".into(),
            value: None,
            goal: "< 10 % of a core, < 200 KiB".into(),
            met: None,
            detail: "W5 runs only without --quick".into(),
        });
    }
    match &report.w7 {
        Some(w7) => out.push(Target {
            name: "W7 unavailability after a leader kill".into(),
            value: Some(w7.unavailable_ms / 1000.0),
            goal: "< 3 s and 0 acknowledged records lost".into(),
            met: Some(w7.unavailable_ms < 3000.0 && w7.lost == 0),
            detail: format!("{} acknowledged, {} lost", w7.acked, w7.lost),
        }),
        None => out.push(Target {
            name: "W7 unavailability after a leader kill".into(),
            value: None,
            goal: "< 3 s and 0 lost".into(),
            met: None,
            detail: "did not run".into(),
        }),
    }
    out.push(Target {
        name: "no-fsync mode vs NATS JetStream R3".into(),
        value: None,
        goal: "compare".into(),
        met: None,
        detail: "Strata has no mode without per-write fsync; NATS is listed in its own durability class".into(),
    });
    out
}

fn fmt(value: Option<f64>) -> String {
    value.map_or("–".into(), |v| format!("{v:.2}"))
}

async fn start_cluster(system: System, args: &Args, phase: &str) -> anyhow::Result<Cluster> {
    let dir = args.work_dir.join(format!("{}-{phase}", system.name()));
    let _ = std::fs::remove_dir_all(&dir);
    let started = Instant::now();
    let cluster = systems::start(system, &dir, &args.strata_bin).await?;
    eprintln!("{} cluster up in {:.1} s ({})", system.name(), started.elapsed().as_secs_f64(), cluster.version);
    Ok(cluster)
}

fn stop_cluster(mut cluster: Cluster, args: &Args, phase: &str) {
    cluster.stop();
    let _ = std::fs::remove_dir_all(args.work_dir.join(format!("{}-{phase}", cluster.system.name())));
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let suite_started = Instant::now();
    let timing = Timing::of(args.quick);
    let wanted: Vec<System> = if args.systems.is_empty() {
        System::ALL.to_vec()
    } else {
        System::ALL.into_iter().filter(|s| args.systems.iter().any(|n| n == s.name())).collect()
    };
    anyhow::ensure!(!wanted.is_empty(), "no known system in --systems {:?}", args.systems);
    std::fs::create_dir_all(&args.out)?;
    std::fs::create_dir_all(&args.work_dir)?;
    let date = chrono::Utc::now().format("%Y-%m-%dT%H%M%SZ").to_string();
    let load_at_start = load_average();

    eprintln!("calibrating the disk and loopback ...");
    let calibration = match calibrate::calibrate(&args.work_dir.join("calibration"), args.quick).await {
        Ok(c) => {
            eprintln!(
                "  fsync p50 {:.3} ms, write {:.0} MB/s, loopback RTT p50 {:.3} ms",
                c.fsync_p50_ms,
                c.write_bandwidth_bytes_per_sec / 1e6,
                c.loopback_rtt_p50_ms
            );
            Some(c)
        }
        Err(error) => {
            eprintln!("calibration failed: {error:#}");
            None
        }
    };

    let mut results: Vec<SystemResults> = wanted
        .iter()
        .map(|&system| SystemResults {
            system,
            durability: system.durability(),
            version: String::new(),
            errors: Vec::new(),
            workloads: Vec::new(),
        })
        .collect();
    let mut notes = Vec::new();

    // Phase A: W1, W2, W4 for each system, one cluster at a time.
    for entry in results.iter_mut().filter(|_| !args.only_w5) {
        eprintln!("== {} : W1, W2, W4", entry.system.name());
        match start_cluster(entry.system, &args, "a").await {
            Ok(cluster) => {
                entry.version = cluster.version.clone();
                phase_a(&cluster, args.quick, &timing, entry).await;
                if entry.system == System::Strata {
                    let mut pages = Vec::new();
                    for address in &cluster.metrics {
                        if let Ok(page) = systems::scrape(address).await {
                            pages.push(page);
                        }
                    }
                    if let Some(batch) = metric_mean(&pages, "strata_group_commit_batch_size") {
                        notes
                            .push(format!("Strata group commit over phase A: {batch:.1} appends per fsync on average"));
                    }
                    if let Some(fsync) = metric_mean(&pages, "strata_group_commit_fsync_seconds") {
                        notes.push(format!("Strata WAL fsync over phase A: {:.3} ms on average", fsync * 1000.0));
                    }
                    if let Some(commit) = metric_mean(&pages, "strata_raft_commit_latency_seconds") {
                        notes.push(format!(
                            "Strata Raft commit (propose to apply) over phase A: {:.3} ms on average",
                            commit * 1000.0
                        ));
                    }
                }
                stop_cluster(cluster, &args, "a");
            }
            Err(error) => {
                eprintln!("  {} did not start: {error:#}", entry.system.name());
                entry.errors.push(format!("cluster did not start: {error:#}"));
            }
        }
    }

    // W3 runs at shares of the weakest fsync-class peer's max rate (W2, 6 partitions).
    let max_rate = |s: System| {
        results
            .iter()
            .find(|r| r.system == s)
            .and_then(|r| r.find("W2 6p max"))
            .map(|w| w.result.records_per_sec)
            .filter(|r| *r > 0.0)
    };
    let peers: Vec<f64> = [System::Etcd, System::Rabbitmq].into_iter().filter_map(max_rate).collect();
    let base = if peers.is_empty() {
        notes.push("W3 base: no fsync-class peer measured; used Strata's own W2 max rate".into());
        max_rate(System::Strata).unwrap_or(1000.0)
    } else {
        peers.iter().cloned().fold(f64::MAX, f64::min)
    };
    notes.push(format!("W3 base rate (weakest fsync-class peer's W2 max rate, 6 partitions): {base:.0} records/s"));

    let mut w7_result = None;
    let mut w5_result = None;
    for entry in results.iter_mut() {
        eprintln!("== {} : W3{}", entry.system.name(), if entry.system == System::Strata { ", W7" } else { "" });
        if !entry.errors.iter().all(|e| !e.starts_with("cluster did not start")) {
            continue;
        }
        let started = if args.only_w5 { None } else { Some(start_cluster(entry.system, &args, "b").await) };
        match started {
            None => {}
            Some(Ok(cluster)) => {
                phase_b(&cluster, base, &timing, entry).await;
                if entry.system == System::Strata {
                    match w7(&cluster, base * 0.5, &timing).await {
                        Ok(result) => w7_result = Some(result),
                        Err(error) => entry.errors.push(format!("W7: {error:#}")),
                    }
                }
                stop_cluster(cluster, &args, "b");
            }
            Some(Err(error)) => entry.errors.push(format!("cluster did not start for W3: {error:#}")),
        }
        if entry.system == System::Strata && (!args.quick || args.w5 || args.only_w5) {
            eprintln!("== strata : W5");
            match start_cluster(System::Strata, &args, "w5").await {
                Ok(cluster) => {
                    match w5(&cluster, 1000, &timing).await {
                        Ok(result) => w5_result = Some(result),
                        Err(error) => entry.errors.push(format!("W5: {error:#}")),
                    }
                    stop_cluster(cluster, &args, "w5");
                }
                Err(error) => entry.errors.push(format!("cluster did not start for W5: {error:#}")),
            }
        }
    }
    let _ = std::fs::remove_dir_all(&args.work_dir);

    notes.push(
        "Strata runs with its defaults (acks=all: a majority fsynced before the answer); etcd with its defaults \
                (WAL fsync before the answer); RabbitMQ quorum queues with publisher confirms (fsync before confirm); \
                NATS JetStream R3 file streams (acknowledged once replicated, fsync in the background)."
            .into(),
    );
    notes.push(
        "Producers: Strata's batching producer (linger 5 ms, 0 for W1); etcd Put per record (concurrent up to \
                the window); RabbitMQ basic.publish with confirms; NATS JetStream publish with ack futures. Record \
                values are random bytes; no end-to-end (consume) latency for the peers yet."
            .into(),
    );
    notes.push(format!("Suite wall time: {:.0} s", suite_started.elapsed().as_secs_f64()));
    notes.push(format!(
        "Load average (1, 5, 15 min) at start: {load_at_start}; at end: {}. Above ~2 on this 2-core machine means \
         something else was running too.",
        load_average()
    ));
    let mut report = Report {
        date: date.clone(),
        quick: args.quick,
        machine: machine(),
        settings: serde_json::json!({
            "warmup_secs": timing.warmup_secs,
            "duration_secs": timing.duration_secs,
            "max_rate_window_per_producer": MAX_RATE_WINDOW,
            "open_loop_window_per_producer": OPEN_LOOP_WINDOW,
            "w2_p99_bound_ms": W2_P99_BOUND_MS,
            "replicas": 3,
            "nodes": 3,
        }),
        calibration,
        systems: results,
        w5: w5_result,
        w7: w7_result,
        targets: Vec::new(),
        notes,
    };
    report.targets = targets(&report);
    let base_path = args.out.join(&date);
    let json_path = base_path.with_extension("json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)?;
    let md_path = base_path.with_extension("md");
    std::fs::write(&md_path, report::markdown(&report))?;
    let svg_path = base_path.with_extension("svg");
    if let Err(error) = report::plot(&report, &svg_path) {
        eprintln!("plot failed: {error:#}");
    }
    eprintln!("wrote {}, {} and {}", json_path.display(), md_path.display(), svg_path.display());
    print_targets(&report.targets);
    Ok(())
}

fn print_targets(targets: &[Target]) {
    for t in targets {
        let met = match t.met {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "not measured",
        };
        eprintln!("  {:<52} {:>10} (goal {}) {met}", t.name, fmt(t.value), t.goal);
    }
}
