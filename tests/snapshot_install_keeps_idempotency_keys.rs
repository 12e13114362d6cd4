//! A follower brought up to date by a snapshot decides duplicates exactly
//! like the replicas it caught up with: the snapshot stream carries the
//! partition's idempotency keys even when retention has trimmed every batch
//! below the snapshot (here: records back-dated past `retention.ms`, which
//! is shorter than `dedup.window`), so after a failover to that follower a
//! re-sent key is still a duplicate, and every replica stores the same
//! bytes at every offset.

use std::time::Duration;

use strata_client::{Client, ClientConfig, Header, Producer, ProducerConfig, Record};
use strata_cluster_tests::{create_topic, eventually, partition_offsets, Cluster};
use strata_core::IDEMPOTENCY_KEY_HEADER;

const TOPIC: &str = "orders";
const KEYS: u64 = 20;
/// Older than the topic's `retention.ms` (one minute): trimmed at once.
const BACK_DATED_MS: i64 = 3_600_000;

/// A record with an idempotency key; `age_ms` back-dates its timestamp.
fn keyed(key: &str, value: &str, age_ms: i64) -> Record {
    Record {
        timestamp_ms: strata_cluster_tests::now_ms() - age_ms,
        value: Some(value.as_bytes().to_vec().into()),
        headers: vec![Header { key: IDEMPOTENCY_KEY_HEADER.into(), value: Some(key.as_bytes().to_vec().into()) }],
        ..Default::default()
    }
}

/// Sends one keyed event with a producer of its own, as a re-sending
/// application would, and returns the offset the answer names.
async fn send_event(cluster: &Cluster, key: &str, value: &str, age_ms: i64) -> u64 {
    let client = Client::connect_with(
        &cluster.bootstrap(),
        ClientConfig { request_timeout: Duration::from_secs(2), ..Default::default() },
    )
    .unwrap();
    let producer = Producer::new(client, ProducerConfig::default()).unwrap();
    let delivery = producer.send_to(TOPIC, 0, keyed(key, value, age_ms)).await.unwrap();
    delivery.await.unwrap_or_else(|e| panic!("send of {key} failed: {e}\n{}", cluster.logs())).offset.unwrap()
}

/// The node that leads the partition now (it answers ListOffsets).
async fn leader(cluster: &Cluster) -> u64 {
    cluster.wait_topic_ready(TOPIC, 1).await[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_restored_from_a_trimmed_snapshot_still_knows_every_key() {
    // Snapshots every 4 entries, and the log behind them purged, so a
    // follower that missed 20 appends can only catch up by snapshot.
    let mut cluster =
        Cluster::start_with_config(3, "snapshot_every_entries = 4\nretention_check_interval = \"100ms\"\n").await;
    create_topic(&cluster, 1, TOPIC, 1, 3, &[("retention.ms", "60000"), ("dedup.window", "10m")]).await;
    let first_leader = leader(&cluster).await;
    let follower = cluster.nodes.iter().map(|n| n.id).find(|id| *id != first_leader).unwrap();
    cluster.kill(follower);

    let mut original = Vec::new();
    for i in 0..KEYS {
        original.push(send_event(&cluster, &format!("order-{i}"), &format!("value {i}"), BACK_DATED_MS).await);
    }
    assert_eq!(original, (0..KEYS).collect::<Vec<_>>());
    // Retention trims the partition to its end: no batch is left below the
    // snapshot, only the keys.
    eventually(Duration::from_secs(30), "retention to trim the partition to its end", || async {
        partition_offsets(&cluster, TOPIC, 0).await.filter(|(_, start, end)| *start == KEYS && *end == KEYS)
    })
    .await;

    // The two live nodes restart: a restarted node counts its log below its
    // stored snapshot as purged, so whoever leads then has no log left that
    // the follower could catch up from (without the restart, the leader's
    // purge may still trail the last appends).
    let live: Vec<u64> = cluster.nodes.iter().map(|n| n.id).filter(|id| *id != follower).collect();
    for id in &live {
        cluster.stop(*id);
    }
    for id in &live {
        cluster.start_node(*id);
    }
    leader(&cluster).await;

    // The follower comes back and catches up by snapshot.
    cluster.start_node(follower);
    eventually(Duration::from_secs(30), "the follower to install a snapshot", || async {
        std::fs::read_to_string(&cluster.node(follower).log_path)
            .ok()
            .filter(|log| log.contains("installed snapshot from the leader"))
    })
    .await;

    // Fail over until the restored follower leads: stop whoever leads, and
    // bring the previous one back so a majority stays up.
    let mut stopped: Option<u64> = None;
    for _ in 0..20 {
        let now = leader(&cluster).await;
        if now == follower {
            break;
        }
        if let Some(id) = stopped.take() {
            cluster.start_node(id);
        }
        cluster.stop(now);
        stopped = Some(now);
    }
    assert_eq!(leader(&cluster).await, follower, "failover to the restored follower\n{}", cluster.logs());
    if let Some(id) = stopped.take() {
        cluster.start_node(id);
    }

    // Every key again: each is a duplicate of its original, nothing is stored.
    for i in 0..KEYS {
        let offset = send_event(&cluster, &format!("order-{i}"), &format!("value {i} again"), 0).await;
        assert_eq!(offset, i, "order-{i} was stored a second time\n{}", cluster.logs());
    }
    let (_, _, high_watermark) =
        eventually(Duration::from_secs(30), "offsets", || partition_offsets(&cluster, TOPIC, 0)).await;
    assert_eq!(high_watermark, KEYS, "re-sent keys were stored again");

    // New keys are stored after them, and every replica holds the same
    // bytes at the same offsets.
    for i in KEYS..KEYS + 10 {
        assert_eq!(send_event(&cluster, &format!("order-{i}"), &format!("value {i}"), 0).await, i);
    }
    let client = Client::connect(&cluster.bootstrap()).unwrap();
    let copies = eventually(Duration::from_secs(30), "every replica to apply the new keys", || async {
        let mut copies = Vec::new();
        for node in &cluster.nodes {
            let copy = client.read_replica(&node.address, TOPIC, 0).await.ok()?;
            if copy.high_watermark != KEYS + 10 {
                return None;
            }
            copies.push((node.id, copy.batches));
        }
        Some(copies)
    })
    .await;
    let (first_id, first) = &copies[0];
    assert_eq!(first.last().map(|(base, _)| *base), Some(KEYS + 9), "the new records are there");
    for (id, batches) in &copies[1..] {
        assert_eq!(batches, first, "node {id} stores other bytes than node {first_id}");
    }
}
