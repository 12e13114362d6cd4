//! `strata-bench-suite`: runs the benchmark of ../../shared/design's
//! benchmarks.md on this machine. Calibrates the disk and loopback, then
//! runs each system as a 3-node loopback cluster (Strata, etcd, RabbitMQ
//! quorum queues, NATS JetStream R3) through W1, W2, W4 and W3 with one
//! load generator (`strata-load`, shared with `strata bench`), measures
//! every server process from /proc, runs W7 (and W5 outside quick mode) on
//! Strata, then the consumer group workloads (`groups`: G1 and G2 on
//! Strata, G3 on Strata, RabbitMQ and NATS), then the transactional
//! read-process-write workload (`txn`: T1 on Strata, beside the same loop
//! without transactions), with `--moves` the partition moves (`moves`: M1
//! and M2 on 4-node Strata clusters), and writes JSON, Markdown and SVG.
//!
//! Clusters run one at a time, so one system's idle cost never disturbs
//! another's figures. Every cluster is stopped when its phase ends, also on
//! errors (servers are killed when dropped).
//!
//! `args` is the command line, `phases` the workloads, `ramp` W2's steps,
//! `targets` the goals (one table), `load` and `sinks` the suite's side of
//! the load generator.

mod args;
mod calibrate;
mod groups;
mod leadership;
mod load;
mod moves;
mod phases;
mod procs;
mod ramp;
mod report;
mod sinks;
mod systems;
mod targets;
mod txn;

use std::time::Instant;

use clap::Parser;

use crate::args::{Args, Timing};
use crate::phases::{MAX_RATE_WINDOW, OPEN_LOOP_WINDOW, W5_PARTITIONS, W7_SHARE_OF_BASE};
use crate::ramp::W2_P99_BOUND_MS;
use crate::report::{GroupsResult, Machine, MovesResult, Report, SystemResults};
use crate::systems::{Cluster, System};

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

async fn start_cluster(system: System, args: &Args, phase: &str) -> anyhow::Result<Cluster> {
    let dir = args.work_dir.join(format!("{}-{phase}", system.name()));
    let _ = std::fs::remove_dir_all(&dir);
    let started = Instant::now();
    let options = systems::StrataOptions { group_heartbeat_interval_ms: args.group_heartbeat_interval_ms };
    let cluster = systems::start(system, &dir, &args.strata_bin, options).await?;
    eprintln!("{} cluster up in {:.1} s ({})", system.name(), started.elapsed().as_secs_f64(), cluster.version);
    Ok(cluster)
}

/// A Strata cluster of `moves::MOVES_NODES` nodes for one of the moves.
async fn start_moves_cluster(args: &Args, phase: &str) -> anyhow::Result<Cluster> {
    let dir = args.work_dir.join(format!("strata-{phase}"));
    let _ = std::fs::remove_dir_all(&dir);
    let options = systems::StrataOptions { group_heartbeat_interval_ms: args.group_heartbeat_interval_ms };
    let cluster = systems::start_strata_nodes(&dir, &args.strata_bin, options, moves::MOVES_NODES).await?;
    eprintln!("strata cluster of {} nodes up ({})", moves::MOVES_NODES, cluster.version);
    Ok(cluster)
}

fn stop_cluster(mut cluster: Cluster, args: &Args, phase: &str) {
    cluster.stop();
    let _ = std::fs::remove_dir_all(args.work_dir.join(format!("{}-{phase}", cluster.system.name())));
}

/// Runs one of the moves on a fresh 4-node cluster (`phase` names it: m1,
/// m2, m3); a failure is recorded in `errors`, with the nodes' logs printed.
async fn moves_phase<T>(
    args: &Args,
    phase: &str,
    title: &str,
    errors: &mut Vec<String>,
    run: impl AsyncFnOnce(&Cluster) -> anyhow::Result<T>,
) -> Option<T> {
    let name = phase.to_uppercase();
    eprintln!("== strata : {name} ({title})");
    let cluster = match start_moves_cluster(args, phase).await {
        Ok(cluster) => cluster,
        Err(error) => {
            errors.push(format!("cluster did not start for {name}: {error:#}"));
            return None;
        }
    };
    let result = match run(&cluster).await {
        Ok(result) => Some(result),
        Err(error) => {
            eprintln!("  {name} failed: {error:#}\n{}", cluster.logs());
            errors.push(format!("{name}: {error:#}"));
            None
        }
    };
    stop_cluster(cluster, args, phase);
    result
}

/// M1, M2 and M3, each on a fresh 4-node cluster.
async fn run_moves(args: &Args, timing: &Timing, calibration: Option<&calibrate::Calibration>) -> MovesResult {
    let mut errors = Vec::new();
    let m1 = moves_phase(args, "m1", "a 1 GiB partition moved, no throttle", &mut errors, async |cluster| {
        moves::m1(cluster, calibration).await
    })
    .await;
    let m2 = moves_phase(args, "m2", "producers during a throttled rebalance", &mut errors, async |cluster| {
        moves::m2(cluster, timing).await
    })
    .await;
    let m3 =
        moves_phase(args, "m3", "remove-node of a node holding about 100 partitions", &mut errors, moves::m3).await;
    MovesResult { m1, m2, m3, errors }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let suite_started = Instant::now();
    let timing = Timing::of(args.quick);
    let wanted = args.wanted();
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
    for entry in results.iter_mut().filter(|_| args.runs_main()) {
        eprintln!("== {} : W1, W2, W4", entry.system.name());
        match start_cluster(entry.system, &args, "a").await {
            Ok(cluster) => {
                entry.version = cluster.version.clone();
                phases::phase_a(&cluster, args.quick, &timing, entry).await;
                if entry.system == System::Strata {
                    notes.extend(phases::strata_notes(&cluster).await);
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
    let (base, base_note) = phases::w3_base(&results);
    if args.runs_main() {
        notes.extend(base_note.map(String::from));
        notes.push(format!("W3 base rate (weakest fsync-class peer's W2 max rate, 6 partitions): {base:.0} records/s"));
    }

    let mut w7_result = None;
    let mut w5_result = None;
    let mut groups_result = None;
    let mut txn_result = None;
    for entry in results.iter_mut() {
        // The peers run G3 on the W3 cluster, after W3; Strata on a cluster of its own (W7 kills a node).
        let peer_g3 = args.runs_groups() && matches!(entry.system, System::Rabbitmq | System::Nats);
        let mut doing: Vec<&str> = Vec::new();
        if args.runs_main() {
            doing.push("W3");
            if entry.system == System::Strata {
                doing.push("W7");
            }
        }
        if peer_g3 {
            doing.push("G3");
        }
        if !entry.errors.iter().all(|e| !e.starts_with("cluster did not start")) {
            continue;
        }
        let started = if doing.is_empty() {
            None
        } else {
            eprintln!("== {} : {}", entry.system.name(), doing.join(", "));
            Some(start_cluster(entry.system, &args, "b").await)
        };
        match started {
            None => {}
            Some(Ok(cluster)) => {
                if entry.version.is_empty() {
                    entry.version = cluster.version.clone();
                }
                if args.runs_main() {
                    phases::phase_b(&cluster, base, &timing, entry).await;
                }
                if peer_g3 {
                    match groups::g3(&cluster, &timing).await {
                        Ok(result) => entry.workloads.push(result),
                        Err(error) => entry.errors.push(format!("G3: {error:#}")),
                    }
                }
                if entry.system == System::Strata && args.runs_main() {
                    match phases::w7(&cluster, base * W7_SHARE_OF_BASE, &timing).await {
                        Ok(result) => w7_result = Some(result),
                        Err(error) => entry.errors.push(format!("W7: {error:#}")),
                    }
                }
                stop_cluster(cluster, &args, "b");
            }
            Some(Err(error)) => entry.errors.push(format!("cluster did not start for {}: {error:#}", doing.join(", "))),
        }
        if entry.system == System::Strata && args.runs_groups() {
            eprintln!("== strata : G3, G1, G2");
            let mut result = GroupsResult::default();
            match start_cluster(System::Strata, &args, "g").await {
                Ok(cluster) => {
                    if entry.version.is_empty() {
                        entry.version = cluster.version.clone();
                    }
                    match groups::g3(&cluster, &timing).await {
                        Ok(g3) => entry.workloads.push(g3),
                        Err(error) => entry.errors.push(format!("G3: {error:#}")),
                    }
                    match groups::g1(&cluster, args.quick).await {
                        Ok(g1) => result.rebalance = Some(g1),
                        Err(error) => result.errors.push(format!("G1: {error:#}")),
                    }
                    match groups::g2(&cluster, &timing).await {
                        Ok(g2) => result.commits = Some(g2),
                        Err(error) => result.errors.push(format!("G2: {error:#}")),
                    }
                    if !result.errors.is_empty() {
                        eprintln!("  groups failed: {:?}\n{}", result.errors, cluster.logs());
                    }
                    stop_cluster(cluster, &args, "g");
                }
                Err(error) => result.errors.push(format!("cluster did not start for G1-G3: {error:#}")),
            }
            groups_result = Some(result);
        }
        if entry.system == System::Strata && args.runs_txn() {
            eprintln!("== strata : T1");
            match start_cluster(System::Strata, &args, "t").await {
                Ok(cluster) => {
                    if entry.version.is_empty() {
                        entry.version = cluster.version.clone();
                    }
                    let result = txn::t1(&cluster, &timing, args.quick).await;
                    if !result.errors.is_empty() {
                        eprintln!("  T1 failed: {:?}\n{}", result.errors, cluster.logs());
                    }
                    txn_result = Some(result);
                    stop_cluster(cluster, &args, "t");
                }
                Err(error) => {
                    txn_result = Some(report::TxnResult {
                        errors: vec![format!("cluster did not start for T1: {error:#}")],
                        ..Default::default()
                    })
                }
            }
        }
        if entry.system == System::Strata && args.runs_w5() {
            eprintln!("== strata : W5");
            match start_cluster(System::Strata, &args, "w5").await {
                Ok(cluster) => {
                    match phases::w5(&cluster, W5_PARTITIONS, &timing).await {
                        Ok(result) => w5_result = Some(result),
                        Err(error) => entry.errors.push(format!("W5: {error:#}")),
                    }
                    stop_cluster(cluster, &args, "w5");
                }
                Err(error) => entry.errors.push(format!("cluster did not start for W5: {error:#}")),
            }
        }
    }
    let moves_result = if args.runs_moves() && wanted.contains(&System::Strata) {
        Some(run_moves(&args, &timing, calibration.as_ref()).await)
    } else {
        None
    };
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
            "strata_group_heartbeat_interval_ms": args.group_heartbeat_interval_ms,
            "groups": args.runs_groups().then(|| serde_json::json!({
                "g1_members": groups::G1_MEMBERS,
                "g1_partitions": groups::G1_PARTITIONS,
                "g2_committers": groups::G2_COMMITTERS,
                "g2_partitions_per_commit": groups::G2_PARTITIONS,
                "g3_consumers": groups::G3_MEMBERS,
                "g3_partitions": groups::G3_PARTITIONS,
                "g3_producers_rate_per_sec": groups::G3_RATE,
                "g3_record_size": 1024,
            })),
            "moves": args.runs_moves().then(|| serde_json::json!({
                "nodes": moves::MOVES_NODES,
                "m1_partition_bytes": moves::M1_PARTITION_BYTES,
                "m2_partitions": moves::M2_PARTITIONS,
                "m2_throttle_bytes_per_sec": moves::M2_THROTTLE_BYTES_PER_SEC,
                "m2_preload_bytes_per_partition": moves::m2_preload_bytes(&timing),
                "m3_partitions": moves::M3_PARTITIONS,
                "m3_records_per_partition": moves::M3_RECORDS_PER_PARTITION,
            })),
            "txn": args.runs_txn().then(|| serde_json::json!({
                "t1_records_per_txn": txn::T1_RECORDS_PER_TXN,
                "t1_input_partitions": txn::T1_INPUT_PARTITIONS,
                "t1_output_partitions": txn::T1_OUTPUT_PARTITIONS,
                "t1_record_size": txn::T1_RECORD_SIZE,
                "t1_input_records": txn::input_records(&timing),
                "t1_preload_rate_per_sec": txn::T1_PRELOAD_RATE,
            })),
        }),
        calibration,
        systems: results,
        w5: w5_result,
        w7: w7_result,
        groups: groups_result,
        txn: txn_result,
        moves: moves_result,
        targets: Vec::new(),
        notes,
    };
    let judged = targets::judge(&report);
    report.targets = judged.iter().map(|j| j.target.clone()).collect();
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
    targets::print(&judged);
    Ok(())
}
