//! A node whose wall clock runs days ahead cannot move a partition's clock:
//! once it leads, the idempotency keys and the idempotent producer stored
//! under an honest leader are still remembered (re-sends store nothing),
//! and retention deletes only what is old by the cluster's time. The
//! skewed node says so: cluster status, its metrics and its log.
//!
//! The skew comes from the test-only `[faults] clock_offset_ms` (the
//! harness builds the server with `fault-hooks`); the node's monotonic clock
//! stays true, as with libfaketime in the fault harness.

use std::time::Duration;

use strata_cluster_tests::{
    create_topic, eventually, fetch_all, http_get, now_ms, partition_offsets, sample, value_of, Cluster,
};
use strata_core::IDEMPOTENCY_KEY_HEADER;
use strata_proto::v1 as pb;
use strata_record::{encode_batch, Header, ProducerFields, Record};

/// Node 1's clock is this far ahead: past the default producer expiry
/// (one day) and far past the topic's dedup window and retention.
const SKEW_MS: i64 = 2 * 24 * 3600 * 1000;
const SKEWED: u64 = 1;
const TOPIC: &str = "ledger";

fn record(value: &str, key: Option<&str>, timestamp_ms: i64) -> Record {
    Record {
        value: Some(value.as_bytes().to_vec().into()),
        headers: key
            .map(|k| Header { key: IDEMPOTENCY_KEY_HEADER.into(), value: Some(k.as_bytes().to_vec().into()) })
            .into_iter()
            .collect(),
        timestamp_ms,
        ..Default::default()
    }
}

/// Sends one batch to the partition's leader (following NOT_LEADER and
/// retrying unavailable leaders) and returns the answer.
async fn send(cluster: &Cluster, batch: bytes::Bytes) -> pb::ProduceResponse {
    let last = std::sync::Mutex::new(String::new());
    let answer = eventually(Duration::from_secs(30), "a produce answer", || {
        let batch = batch.clone();
        let last = &last;
        async move {
            for node in cluster.nodes.iter().filter(|n| n.is_running()) {
                let mut api = cluster.api(node.id).await;
                let request = pb::ProduceRequest {
                    topic: TOPIC.into(),
                    partition: 0,
                    batch: batch.clone(),
                    acks: pb::Acks::All as i32,
                    timeout_ms: 5_000,
                    ..Default::default()
                };
                match api.produce(request).await {
                    Ok(answer) => match answer.into_inner() {
                        answer if answer.error.is_none() => return Some(answer),
                        answer => *last.lock().unwrap() = format!("node {}: {:?}", node.id, answer.error),
                    },
                    Err(status) => *last.lock().unwrap() = format!("node {}: {status}", node.id),
                }
            }
            None
        }
    })
    .await;
    answer
}

async fn leader(cluster: &Cluster) -> u64 {
    eventually(Duration::from_secs(30), "a serving partition leader", || async {
        partition_offsets(cluster, TOPIC, 0).await.map(|(leader, _, _)| leader)
    })
    .await
}

/// Moves the partition's leadership to a node that `wanted` accepts by
/// stopping and restarting the nodes that win elections instead.
async fn make_leader(cluster: &mut Cluster, wanted: impl Fn(u64) -> bool) {
    for _ in 0..20 {
        let current = leader(cluster).await;
        if wanted(current) {
            return;
        }
        cluster.stop(current);
        let next = leader(cluster).await;
        cluster.start_node(current);
        if wanted(next) {
            return;
        }
    }
    panic!("no wanted node became the partition leader\n{}", cluster.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_days_ahead_expires_no_key_no_producer_and_no_data() {
    // Only the skewed node runs retention during the test (each node's
    // first pass runs at its start, before the topic exists or while it
    // leads nothing), so every trim below is its decision.
    let honest = "retention_check_interval = \"1h\"\n";
    let mut cluster = Cluster::start_with_config(3, honest).await;
    create_topic(&cluster, 1, TOPIC, 1, 3, &[("dedup.window", "10m"), ("retention.ms", "1h")]).await;
    make_leader(&mut cluster, |id| id != SKEWED).await;

    // Under an honest leader: a batch from two hours ago (the one thing
    // retention may delete), two keyed records, one idempotent batch.
    let now = now_ms();
    let old = encode_batch(&[record("old", None, now - 2 * 3600 * 1000)], ProducerFields::default()).unwrap();
    let keyed = |suffix: &str| {
        encode_batch(
            &[record(&format!("k1{suffix}"), Some("k1"), now), record(&format!("k2{suffix}"), Some("k2"), now)],
            ProducerFields::default(),
        )
        .unwrap()
    };
    let producer = ProducerFields { producer_id: 4242, producer_epoch: 0, base_sequence: 0 };
    let idempotent = encode_batch(&[record("b", None, now)], producer).unwrap();
    assert_eq!(send(&cluster, old).await.base_offset, 0);
    assert_eq!(send(&cluster, keyed("")).await.base_offset, 1);
    let first = send(&cluster, idempotent.clone()).await;
    assert_eq!((first.base_offset, first.record_count, first.duplicate_batch), (3, 1, false));
    let (_, log_start, high_watermark) = partition_offsets(&cluster, TOPIC, 0).await.unwrap();
    assert_eq!((log_start, high_watermark), (0, 4), "honest nodes trim nothing");

    // Node 1 comes back two days ahead, runs retention often, and leads.
    cluster.stop(SKEWED);
    let metrics_address = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    cluster.set_node_config(
        SKEWED,
        &format!(
            "retention_check_interval = \"200ms\"\nmetrics_listen = \"{metrics_address}\"\n[faults]\n\
             clock_offset_ms = {SKEW_MS}\n"
        ),
    );
    cluster.start_node(SKEWED);
    make_leader(&mut cluster, |id| id == SKEWED).await;

    // Its retention drops the old batch, and nothing younger than an hour.
    eventually(Duration::from_secs(30), "the skewed leader's retention to drop the old batch", || async {
        let (_, log_start, _) = partition_offsets(&cluster, TOPIC, 0).await?;
        (log_start > 0).then_some(())
    })
    .await;
    let (_, log_start, high_watermark) = partition_offsets(&cluster, TOPIC, 0).await.unwrap();
    assert_eq!((log_start, high_watermark), (1, 4), "retention deleted records of the last hour");

    // The keys and the producer are remembered: re-sends store nothing.
    let again = send(&cluster, keyed(" again")).await;
    let duplicates: Vec<(u32, u64)> = again.duplicates.iter().map(|d| (d.index, d.offset)).collect();
    assert_eq!((again.record_count, duplicates), (0, vec![(0, 1), (1, 2)]), "keys expired early: {again:?}");
    let retry = send(&cluster, idempotent).await;
    assert_eq!(
        (retry.base_offset, retry.record_count, retry.duplicate_batch),
        (3, 1, true),
        "the producer expired early: {retry:?}"
    );
    let stored: Vec<String> = fetch_all(&cluster, TOPIC, 0, 1).await.iter().map(value_of).collect();
    assert_eq!(stored, vec!["k1", "k2", "b"], "stored once");

    // The skewed node says so: in cluster status, and in its log.
    let client = strata_client::Client::connect(&cluster.bootstrap()).unwrap();
    let status = eventually(Duration::from_secs(30), "every node's clock offset", || async {
        let status = client.cluster_status().await.ok()?;
        status.nodes.iter().all(|n| n.clock_offset_ms.is_some()).then_some(status)
    })
    .await;
    for node in &status.nodes {
        let expected = if node.id == SKEWED { SKEW_MS } else { 0 };
        let offset = node.clock_offset_ms.unwrap();
        assert!((offset - expected).abs() < 1_000, "node {}: clock offset {offset} ms, not about {expected}", node.id);
    }
    assert!(cluster.logs().contains("wall clock is off from cluster time"), "no warning logged");
    let (status_line, metrics) = http_get(&metrics_address, "/metrics").await;
    assert!(status_line.contains("200"), "{status_line}");
    let offset = sample(&metrics, "strata_clock_offset_ms").expect("the clock offset gauge");
    assert!((offset - SKEW_MS as f64).abs() < 1_000.0, "strata_clock_offset_ms {offset}");
    assert_eq!(sample(&metrics, "strata_clock_trusted"), Some(1.0));
}
