//! A record's idempotency key makes re-sending the same business event
//! harmless: within the topic's dedup.window it is stored once, across a
//! leader change and a node restart, and every answer carries the original
//! offset; after the window it is stored again. Producer state and the key
//! index stay bounded as producers go idle and keys expire.

use std::time::Duration;

use strata_client::{Client, ClientConfig, Header, Producer, ProducerConfig, Record};
use strata_cluster_tests::{create_topic, eventually, fetch_all, now_ms, value_of, Cluster};
use strata_core::IDEMPOTENCY_KEY_HEADER;
use strata_proto::v1 as pb;
use strata_record::{encode_batch, ProducerFields};

fn keyed(key: &str, value: &str) -> Record {
    Record {
        value: Some(value.as_bytes().to_vec().into()),
        headers: vec![Header { key: IDEMPOTENCY_KEY_HEADER.into(), value: Some(key.as_bytes().to_vec().into()) }],
        ..Default::default()
    }
}

/// Sends the event with a producer of its own, as a re-sending application would.
async fn send_event(cluster: &Cluster, key: &str, value: &str) -> u64 {
    let client = Client::connect_with(
        &cluster.bootstrap(),
        ClientConfig { request_timeout: Duration::from_secs(2), ..Default::default() },
    )
    .unwrap();
    let producer = Producer::new(client, ProducerConfig::default()).unwrap();
    let delivery = producer.send_to("payments", 0, keyed(key, value)).await.unwrap();
    delivery.await.unwrap_or_else(|e| panic!("send of {key} failed: {e}\n{}", cluster.logs())).offset.unwrap()
}

async fn leader_of(cluster: &Cluster, topic: &str) -> u64 {
    eventually(Duration::from_secs(30), "a partition leader", || async {
        let client = Client::connect(&cluster.bootstrap()).ok()?;
        let description = client.describe_topic(topic).await.ok()?;
        description.partitions[0].leader
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_is_stored_once_across_leader_change_and_restart() {
    let mut cluster = Cluster::start(3).await;
    // Long enough for a failover and a restart, short enough to wait out.
    create_topic(&cluster, 1, "payments", 1, 3, &[("dedup.window", "20s")]).await;
    let first = send_event(&cluster, "payment-42", "charge 42").await;
    send_event(&cluster, "payment-7", "charge 7").await;

    // Leader change: kill the leader, send again.
    let leader = leader_of(&cluster, "payments").await;
    cluster.kill(leader);
    assert_eq!(send_event(&cluster, "payment-42", "charge 42 again").await, first);

    // Restart: the killed node comes back, the new leader restarts.
    cluster.start_node(leader);
    let second_leader = leader_of(&cluster, "payments").await;
    cluster.stop(second_leader);
    cluster.start_node(second_leader);
    assert_eq!(send_event(&cluster, "payment-42", "charge 42 a third time").await, first);

    let stored: Vec<String> = fetch_all(&cluster, "payments", 0, 0).await.iter().map(value_of).collect();
    assert_eq!(stored, vec!["charge 42", "charge 7"], "stored once");

    // After the window the key is new again.
    let later = eventually(Duration::from_secs(60), "the dedup window to pass", || async {
        let offset = send_event(&cluster, "payment-42", "charge 42 next month").await;
        (offset != first).then_some(offset)
    })
    .await;
    assert!(later > first);
    let stored: Vec<String> = fetch_all(&cluster, "payments", 0, 0).await.iter().map(value_of).collect();
    assert_eq!(stored.last().map(String::as_str), Some("charge 42 next month"));
    assert_eq!(stored.iter().filter(|v| v.starts_with("charge 42 next")).count(), 1);
}

/// One batch of one record, from producer `producer_id` and with
/// idempotency key `key` when given, sent raw to the leader `leader`
/// (or, when it does not answer, to the other nodes).
async fn produce_raw(cluster: &Cluster, leader: u64, producer_id: Option<i64>, key: Option<&str>) {
    let fields = match producer_id {
        Some(producer_id) => ProducerFields { producer_id, producer_epoch: 0, base_sequence: 0 },
        None => ProducerFields::default(),
    };
    let mut record = match key {
        Some(key) => keyed(key, key),
        None => Record { value: Some(b"tick".to_vec().into()), ..Default::default() },
    };
    // Stamped now: retention would drop a batch from 1970 at once.
    record.timestamp_ms = now_ms();
    let batch = encode_batch(&[record], fields).unwrap();
    eventually(Duration::from_secs(30), "a raw produce", || {
        let batch = batch.clone();
        async move {
            let others = cluster.nodes.iter().map(|n| n.id).filter(|id| *id != leader);
            for node in std::iter::once(leader).chain(others) {
                let mut api = cluster.api(node).await;
                let request = pb::ProduceRequest {
                    topic: "busy".into(),
                    partition: 0,
                    batch: batch.clone(),
                    acks: 1,
                    timeout_ms: 10_000,
                    ..Default::default()
                };
                if let Ok(answer) = api.produce(request).await {
                    if answer.into_inner().error.is_none() {
                        return Some(());
                    }
                }
            }
            None
        }
    })
    .await
}

async fn partition_stats(cluster: &Cluster) -> (u64, u64) {
    let description = Client::connect(&cluster.bootstrap()).unwrap().describe_topic("busy").await.unwrap();
    (description.partitions[0].producer_count, description.partitions[0].idempotency_keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_state_and_keys_stay_bounded_as_they_expire() {
    // Producers idle 15 s are forgotten; keys live 15 s; frequent snapshots
    // let expired keys be deleted.
    let cluster = Cluster::start_with_config(3, "producer_expiry = \"15s\"\nsnapshot_every_entries = 16\n").await;
    let leader = create_topic(&cluster, 1, "busy", 1, 3, &[("dedup.window", "15s")]).await[0];
    let started = std::time::Instant::now();
    for producer in 0..200 {
        produce_raw(&cluster, leader, Some(1_000 + producer), Some(&format!("key-{producer}"))).await;
    }
    assert!(started.elapsed() < Duration::from_secs(15), "the sends must fit in the window to be counted");
    let (producers, keys) = partition_stats(&cluster).await;
    eprintln!("after 200 producers with one key each: {producers} producers, {keys} keys remembered");
    assert_eq!((producers, keys), (200, 200), "recent producers and keys are remembered");
    // Plain records keep coming: the partition clock moves, snapshots are
    // taken, the idle producers and the old keys expire.
    let (producers, keys) = eventually(Duration::from_secs(60), "idle producers and old keys to expire", || async {
        produce_raw(&cluster, leader, None, None).await;
        let (producers, keys) = partition_stats(&cluster).await;
        (producers == 0 && keys == 0).then_some((producers, keys))
    })
    .await;
    eprintln!("after expiry: {producers} producers, {keys} keys remembered");
}
