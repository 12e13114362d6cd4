//! Partition moves (issue 16, "Performance"), on Strata only, each on a
//! 4-node cluster of its own (no peer here moves partitions online):
//! - M1, the speed of a move: a 1-partition topic (RF 3, placed on nodes
//!   1-3) is preloaded with 1 GiB, then reassigned so that node 4 replaces
//!   its last replica, with no throttle. Figures: MB/s (the payload over
//!   the time from the reassign until the partition names its new
//!   replicas, polled every MOVE_POLL)
//!   and its share of the disk's sequential write bandwidth that the
//!   calibration measured; the bytes that went to the new replica come
//!   from the nodes' `strata_move_sent_bytes_total`.
//! - M2, producers during a throttled rebalance: a 6-partition topic (RF
//!   3) is moved off node 4 (unmeasured set-up), preloaded, then loaded W2
//!   style (4 producers at max rate, 1 KiB, linger 5 ms) once alone (the
//!   baseline) and once right after `strata cluster rebalance --throttle
//!   M2_THROTTLE`, which moves replicas back onto node 4 throughout the
//!   window. Figures: both rates, their ratio, the copy rate while the
//!   load ran, and whether the rebalance outlasted the window (it should:
//!   a rebalance that ended early would flatter the ratio).
//!
//! - M3, decommissioning: a topic of M3_PARTITIONS partitions (RF 3) is
//!   spread over the 4 nodes, M3_RECORDS_PER_PARTITION records of 1 KiB
//!   written to each, then `strata cluster remove-node 4` runs with no
//!   throttle. Figures: the replicas node 4 held, and the time from the
//!   call to the node holding nothing and having left the cluster (the
//!   RemoveNode answer `removed`, asked every MOVE_POLL).
//!
//! The order favours nothing: the throttled run comes second, on a store
//! the baseline made larger.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::Context;
use strata_client::{Client, Producer, ProducerConfig, Record, ThrottleRate};
use strata_load::{Filler, Stamp};

use crate::args::Timing;
use crate::calibrate::Calibration;
use crate::load;
use crate::phases::MAX_RATE_WINDOW;
use crate::report::{MoveSpeedResult, RemoveNodeResult, ThrottledRebalanceResult};
use crate::sinks::{ClientSettings, SystemSink};
use crate::systems::{self, Cluster};

/// M3's topic: RF 3 over 4 nodes puts three quarters of its partitions on
/// each node, so 134 partitions put about 100 on the node removed (issue
/// 16's "for 100 partitions").
pub const M3_PARTITIONS: u32 = 134;
/// Records of 1 KiB per partition before the removal: enough that each
/// move copies data, small enough that the count of moves, not the bytes,
/// sets the time.
pub const M3_RECORDS_PER_PARTITION: u64 = 100;
/// How long the removal may take (100 moves, two at a time, each a
/// catch-up and two membership changes: seconds each at most).
const M3_REMOVE_TIMEOUT: Duration = Duration::from_secs(600);

/// Nodes of the moves' clusters: three hold the data, the fourth takes
/// replicas (issue 16's "a partition to a new replica").
pub const MOVES_NODES: usize = 4;
/// M1's partition: issue 16 asks for 1 GiB, in both modes (a smaller one
/// would measure the move's fixed costs more than its copy).
pub const M1_PARTITION_BYTES: u64 = 1 << 30;
/// Values of the preloads: large, so that batches are full (1 MiB) and
/// the preload is quick; the move copies batches, whatever their records.
const PRELOAD_VALUE_BYTES: usize = 16 * 1024;
/// Preload records awaited at most at once: 64 MiB in flight, enough to
/// keep every partition's batches full.
const PRELOAD_OUTSTANDING: usize = 4096;
/// How long a preload may take: 1 GiB at the 30-60 MB/s an RF 3 preload
/// reached here, with room.
const PRELOAD_TIMEOUT: Duration = Duration::from_secs(600);
/// Seed of the preloads' random values (T1 uses 15-16, G3 1-4).
const FILLER_SEED: u64 = 16;
/// As the load generator: a prime stride between consecutive values.
const FILLER_STRIDE: usize = 61;

/// How long one move may take before M1 gives up: 1 GiB at 5 MB/s.
const M1_MOVE_TIMEOUT: Duration = Duration::from_secs(200);
/// How often a move's end is looked for: small beside a move of seconds.
const MOVE_POLL: Duration = Duration::from_millis(100);

/// M2's topic: W2's 6 partitions.
pub const M2_PARTITIONS: u32 = 6;
/// M2's throttle, per sending node: a tenth of the slowest sequential
/// write bandwidth the calibration measured on this machine (231 MB/s),
/// the starting point docs/operations.md gives. Fixed, so that runs
/// compare.
pub const M2_THROTTLE_BYTES_PER_SEC: u64 = 16 << 20;
/// M2's smallest preload per partition.
const M2_MIN_PRELOAD_BYTES: u64 = 64 << 20;
/// How long the set-up moves off node 4 may take: empty partitions.
const M2_SETUP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long M2 waits for the rebalance to end after the window, for its
/// total time (informative; the figures do not depend on it).
const M2_REBALANCE_TIMEOUT: Duration = Duration::from_secs(180);

/// M2's preload per partition for a mode: the rebalance gives node 4 four
/// of the 18 replicas, at most two moves at a time, each copying at most
/// the throttle; 0.75 × throttle × (warm-up + window) per partition makes
/// the four copies last at least 1.5 times warm-up plus window, before
/// counting what the baseline run adds.
pub fn m2_preload_bytes(timing: &Timing) -> u64 {
    let secs = timing.warmup_secs + timing.duration_secs;
    let needed = (0.75 * M2_THROTTLE_BYTES_PER_SEC as f64 * secs) as u64;
    needed.max(M2_MIN_PRELOAD_BYTES)
}

/// The replicas of each partition of `topic`.
async fn replicas(client: &Client, topic: &str) -> anyhow::Result<Vec<Vec<u64>>> {
    let described = client.describe_topic(topic).await?;
    let mut partitions: Vec<_> = described.partitions.into_iter().map(|p| (p.partition, p.replicas)).collect();
    partitions.sort();
    Ok(partitions.into_iter().map(|(_, r)| r).collect())
}

/// Moves in progress, as `cluster status` lists them.
async fn moving(client: &Client) -> anyhow::Result<usize> {
    Ok(client.cluster_status().await?.reassignments.len())
}

/// Waits until no move is in progress; how long it took.
async fn moves_done(client: &Client, timeout: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        // A node that cannot answer for a moment (it is busy copying) is asked again.
        if let Ok(0) = moving(client).await {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(started.elapsed() < timeout, "moves still in progress after {timeout:?}");
        tokio::time::sleep(MOVE_POLL).await;
    }
}

/// `strata_move_sent_bytes_total` summed over the nodes.
async fn move_sent_bytes(cluster: &Cluster) -> f64 {
    crate::phases::sum_gauge(cluster, "strata_move_sent_bytes_total").await
}

/// Writes `bytes` of PRELOAD_VALUE_BYTES values to `topic`'s partitions in
/// turn with one acks=all producer; the seconds it took.
async fn preload(cluster: &Cluster, topic: &str, partitions: u32, bytes: u64) -> anyhow::Result<f64> {
    let config = ProducerConfig { max_batch_bytes: strata_core::limits::MAX_BATCH_BYTES, ..Default::default() };
    let producer = Producer::new(Client::connect(&cluster.endpoints)?, config)?;
    let filler = Filler::new(FILLER_SEED);
    let records = bytes.div_ceil(PRELOAD_VALUE_BYTES as u64);
    let started = Instant::now();
    let write = async {
        let mut outstanding = VecDeque::new();
        for index in 0..records {
            let value = filler.value(Stamp::TimeAndId, 0, index, PRELOAD_VALUE_BYTES, index as usize * FILLER_STRIDE);
            let partition = (index % u64::from(partitions)) as u32;
            outstanding.push_back(
                producer.send_to(topic, partition, Record { value: Some(value), ..Default::default() }).await?,
            );
            if outstanding.len() >= PRELOAD_OUTSTANDING {
                outstanding.pop_front().expect("not empty").await?;
            }
        }
        producer.flush().await;
        for delivery in outstanding {
            delivery.await?;
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(PRELOAD_TIMEOUT, write)
        .await
        .map_err(|_| anyhow::anyhow!("not done within {PRELOAD_TIMEOUT:?}"))??;
    Ok(started.elapsed().as_secs_f64())
}

/// M1 (see the module documentation).
pub async fn m1(cluster: &Cluster, calibration: Option<&Calibration>) -> anyhow::Result<MoveSpeedResult> {
    let topic = "m1";
    systems::create_topic(cluster, topic, 1).await.context("create the topic")?;
    let client = Client::connect(&cluster.endpoints)?;
    let from = replicas(&client, topic).await?.remove(0);
    let joining = (1..=MOVES_NODES as u64).find(|n| !from.contains(n)).context("a node without a replica")?;
    // The preferred leader stays: the copy, not a leadership change, is measured.
    let to = vec![from[0], from[1], joining];
    eprintln!("  M1: preloading {} MiB into {topic} on {from:?}", M1_PARTITION_BYTES >> 20);
    let preload_secs = preload(cluster, topic, 1, M1_PARTITION_BYTES).await.context("preload")?;
    eprintln!("  M1: preloaded in {preload_secs:.1} s; moving to {to:?}, no throttle");
    let sent_before = move_sent_bytes(cluster).await;
    let started = Instant::now();
    client.reassign_partition_throttled(topic, 0, &to, Some(ThrottleRate::Off)).await.context("reassign")?;
    // Done once the partition names its new replicas: the metadata entry
    // that ends a move sets them. (`cluster status` answers from whichever
    // node is asked, and one that has not applied the move yet lists no
    // move in progress: that once ended a run before the move began.)
    loop {
        if replicas(&client, topic).await.ok().is_some_and(|mut r| r.remove(0) == to) {
            break;
        }
        anyhow::ensure!(started.elapsed() < M1_MOVE_TIMEOUT, "the move not done after {M1_MOVE_TIMEOUT:?}");
        tokio::time::sleep(MOVE_POLL).await;
    }
    let move_secs = started.elapsed().as_secs_f64();
    let sent_bytes = (move_sent_bytes(cluster).await - sent_before).max(0.0) as u64;
    let mb_per_sec = M1_PARTITION_BYTES as f64 / move_secs / 1e6;
    let disk = calibration.map(|c| c.write_bandwidth_bytes_per_sec / 1e6);
    eprintln!(
        "  M1: moved {} MiB in {move_secs:.1} s: {mb_per_sec:.1} MB/s ({} of the disk's {} MB/s); {:.0} MB sent to \
         the new replica",
        M1_PARTITION_BYTES >> 20,
        disk.map_or("–".into(), |d| format!("{:.0} %", mb_per_sec / d * 100.0)),
        disk.map_or("–".into(), |d| format!("{d:.0}")),
        sent_bytes as f64 / 1e6
    );
    Ok(MoveSpeedResult {
        partition_bytes: M1_PARTITION_BYTES,
        preload_secs,
        from,
        to,
        move_secs,
        sent_bytes,
        mb_per_sec,
        disk_write_mb_per_sec: disk,
        share_of_disk: disk.map(|d| mb_per_sec / d),
    })
}

/// M2's set-up: every replica on node MOVES_NODES moves to a node of the
/// partition's that lacks one, so that the rebalance has node 4 to fill.
async fn empty_last_node(client: &Client, topic: &str) -> anyhow::Result<()> {
    let last = MOVES_NODES as u64;
    for (partition, set) in replicas(client, topic).await?.into_iter().enumerate() {
        if !set.contains(&last) {
            continue;
        }
        let spare = (1..last).find(|n| !set.contains(n)).context("a spare node")?;
        let to: Vec<u64> = set.iter().map(|r| if *r == last { spare } else { *r }).collect();
        client.reassign_partition_throttled(topic, partition as u32, &to, Some(ThrottleRate::Off)).await?;
    }
    moves_done(client, M2_SETUP_TIMEOUT).await?;
    Ok(())
}

/// M2 (see the module documentation).
pub async fn m2(cluster: &Cluster, timing: &Timing) -> anyhow::Result<ThrottledRebalanceResult> {
    let topic = "m2";
    systems::create_topic(cluster, topic, M2_PARTITIONS).await.context("create the topic")?;
    let client = Client::connect(&cluster.endpoints)?;
    empty_last_node(&client, topic).await.context("move replicas off node 4")?;
    let preload_per_partition = m2_preload_bytes(timing);
    eprintln!("  M2: preloading {} MiB into each of {M2_PARTITIONS} partitions", preload_per_partition >> 20);
    let preload_secs = preload(cluster, topic, M2_PARTITIONS, preload_per_partition * u64::from(M2_PARTITIONS))
        .await
        .context("preload")?;
    let spec = timing.spec(4, None, MAX_RATE_WINDOW, 1024);
    let settings = ClientSettings { linger_ms: 5 };
    let connect = || async {
        let mut sinks = Vec::new();
        for index in 0..spec.producers {
            sinks.push(SystemSink::connect(cluster, topic, M2_PARTITIONS, index, &settings).await?);
        }
        anyhow::Ok(sinks)
    };
    let baseline = load::run(connect().await?, &spec, None).await;
    eprintln!("  M2: without a move {:.0} records/s, p99 {:.1} ms", baseline.records_per_sec, baseline.latency_ms.p99);

    let sinks = connect().await?;
    let sent_before = move_sent_bytes(cluster).await;
    let started = Instant::now();
    let rate = ThrottleRate::BytesPerSec(M2_THROTTLE_BYTES_PER_SEC);
    let moves = client.rebalance_throttled(false, Some(rate)).await.context("rebalance")?;
    anyhow::ensure!(!moves.is_empty(), "the rebalance planned no move onto the emptied node");
    let during = load::run(sinks, &spec, None).await;
    let load_secs = started.elapsed().as_secs_f64();
    let copied_bytes = (move_sent_bytes(cluster).await - sent_before).max(0.0);
    let left = moving(&client).await.unwrap_or(0);
    eprintln!(
        "  M2: during a rebalance throttled to {rate} {:.0} records/s, p99 {:.1} ms ({:.2}×); {} moves, {left} still \
         moving at the end; {:.1} MB/s copied meanwhile",
        during.records_per_sec,
        during.latency_ms.p99,
        during.records_per_sec / baseline.records_per_sec.max(1.0),
        moves.len(),
        copied_bytes / load_secs / 1e6
    );
    let rebalance_secs = match moves_done(&client, M2_REBALANCE_TIMEOUT).await {
        Ok(_) => Some(started.elapsed().as_secs_f64()),
        Err(error) => {
            eprintln!("  M2: {error:#}");
            None
        }
    };
    // The throttle stays until changed; the cluster is stopped next anyway.
    Ok(ThrottledRebalanceResult {
        throttle_bytes_per_sec: M2_THROTTLE_BYTES_PER_SEC,
        partitions: M2_PARTITIONS,
        preload_bytes_per_partition: preload_per_partition,
        preload_secs,
        moves: moves.len(),
        moves_left_at_window_end: left,
        copy_mb_per_sec_during_load: copied_bytes / load_secs / 1e6,
        rebalance_secs,
        ratio: (baseline.records_per_sec > 0.0).then(|| during.records_per_sec / baseline.records_per_sec),
        baseline,
        during,
    })
}

/// M3 (see the module documentation).
pub async fn m3(cluster: &Cluster) -> anyhow::Result<RemoveNodeResult> {
    let topic = "m3";
    systems::create_topic(cluster, topic, M3_PARTITIONS).await.context("create the topic")?;
    let producer = Producer::new(Client::connect(&cluster.endpoints)?, ProducerConfig::default())?;
    let filler = Filler::new(FILLER_SEED);
    let mut deliveries = Vec::new();
    for index in 0..u64::from(M3_PARTITIONS) * M3_RECORDS_PER_PARTITION {
        let value = filler.value(Stamp::TimeAndId, 0, index, 1024, index as usize * FILLER_STRIDE);
        let partition = (index % u64::from(M3_PARTITIONS)) as u32;
        deliveries.push(producer.send_to(topic, partition, Record { value: Some(value), ..Default::default() }).await?);
    }
    producer.flush().await;
    for delivery in deliveries {
        delivery.await?;
    }
    let client = Client::connect(&cluster.endpoints)?;
    let node = MOVES_NODES as u64;
    let held = replicas(&client, topic).await?.iter().filter(|set| set.contains(&node)).count();
    eprintln!("  M3: node {node} holds {held} of {M3_PARTITIONS} partitions; removing it");
    let started = Instant::now();
    let (mut remaining, mut removed) = client.remove_node(node).await.context("remove-node")?;
    while !removed {
        anyhow::ensure!(
            started.elapsed() < M3_REMOVE_TIMEOUT,
            "node {node} still holds {remaining} replicas after {M3_REMOVE_TIMEOUT:?}"
        );
        tokio::time::sleep(MOVE_POLL).await;
        // A node that cannot answer for a moment (busy with the moves) is asked again.
        if let Ok(answer) = client.remove_node(node).await {
            (remaining, removed) = answer;
        }
    }
    let remove_secs = started.elapsed().as_secs_f64();
    let left = replicas(&client, topic).await?.iter().filter(|set| set.contains(&node)).count();
    anyhow::ensure!(left == 0, "node {node} is removed but {left} partitions still name it");
    eprintln!("  M3: node {node} removed in {remove_secs:.1} s ({held} partitions moved off it)");
    Ok(RemoveNodeResult { partitions: M3_PARTITIONS, replicas_on_node: held as u64, remove_secs })
}
