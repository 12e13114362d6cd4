//! The idempotent producer retries through lost answers, late answers and a
//! killed leader without storing any record twice or out of order, and a
//! zombie instance of a named producer is fenced.

use std::collections::BTreeMap;
use std::time::Duration;

use strata_client::{Client, ClientConfig, Producer, ProducerConfig, Record};
use strata_cluster_tests::{create_topic, fetch_all, value_of, Cluster};
use strata_core::ErrorCode;

fn record(key: &str, value: &str) -> Record {
    Record {
        key: Some(key.as_bytes().to_vec().into()),
        value: Some(value.as_bytes().to_vec().into()),
        ..Default::default()
    }
}

fn client(cluster: &Cluster) -> Client {
    let config = ClientConfig { request_timeout: Duration::from_secs(1), ..Default::default() };
    Client::connect_with(&cluster.bootstrap(), config).unwrap()
}

/// Sends `count` records over `keys` keys (values "key:i" with i rising per
/// key) and returns each acknowledged value with its partition and offset.
async fn send_all(producer: &Producer, topic: &str, count: usize, keys: usize) -> Vec<(u32, u64, String)> {
    let mut deliveries = Vec::new();
    for i in 0..count {
        let key = format!("k{}", i % keys);
        let value = format!("{key}:{i:05}");
        deliveries.push((value.clone(), producer.send(topic, record(&key, &value)).await.unwrap()));
    }
    let mut acked = Vec::new();
    for (value, delivery) in deliveries {
        let metadata = delivery.await.unwrap_or_else(|e| panic!("{value} was not delivered: {e}"));
        acked.push((metadata.partition, metadata.offset.expect("acks=all gives offsets"), value));
    }
    acked
}

/// Checks the stored log of `topic` against what was acknowledged: every
/// acked value once, at its acked offset, and per key in sending order.
/// Returns how many stored records were duplicates.
async fn check_log(cluster: &Cluster, topic: &str, partitions: u32, acked: &[(u32, u64, String)]) -> usize {
    let mut stored: BTreeMap<String, Vec<(u32, u64)>> = BTreeMap::new();
    let mut per_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for partition in 0..partitions {
        for r in fetch_all(cluster, topic, partition, 0).await {
            let value = value_of(&r);
            per_key.entry(value.split(':').next().unwrap().to_string()).or_default().push(value.clone());
            stored.entry(value).or_default().push((partition, r.offset));
        }
    }
    for (partition, offset, value) in acked {
        let places = stored.get(value).unwrap_or_else(|| panic!("acked {value} is missing"));
        assert!(places.contains(&(*partition, *offset)), "{value} acked at {partition}/{offset}, stored at {places:?}");
    }
    for (key, values) in &per_key {
        let mut deduplicated = values.clone();
        deduplicated.dedup();
        assert!(deduplicated.windows(2).all(|w| w[0] < w[1]), "key {key} out of order: {values:?}");
    }
    stored.values().map(|places| places.len() - 1).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_and_late_answers_are_retried_without_duplicates() {
    // Every 4th committed produce loses its answer, every 7th answers after
    // the client's 1 s deadline: the client retries both.
    let cluster = Cluster::start_with_config(
        3,
        "[faults]\ndrop_produce_answer_every = 4\ndelay_produce_answer_every = 7\ndelay_produce_answer_ms = 1500\n",
    )
    .await;
    create_topic(&cluster, 1, "faulty", 2, 3, &[]).await;
    create_topic(&cluster, 1, "control", 2, 3, &[]).await;
    let config = ProducerConfig {
        request_timeout: Duration::from_secs(1),
        retry_backoff: Duration::from_millis(20),
        linger: Duration::from_millis(2),
        max_batch_bytes: 512,
        ..Default::default()
    };
    let producer = Producer::new(client(&cluster), config.clone()).unwrap();
    let acked = send_all(&producer, "faulty", 600, 8).await;
    let duplicates = check_log(&cluster, "faulty", 2, &acked).await;
    eprintln!("idempotent producer under answer faults: {} records acked, {duplicates} duplicates", acked.len());
    assert_eq!(duplicates, 0, "the idempotent producer stored records twice");

    // The same faults without idempotence do store records twice, so the
    // faults above really made the producer retry committed batches.
    let plain = Producer::new(client(&cluster), ProducerConfig { idempotence: false, ..config }).unwrap();
    let acked = send_all(&plain, "control", 600, 8).await;
    let mut duplicates = 0;
    for partition in 0..2 {
        duplicates += fetch_all(&cluster, "control", partition, 0).await.len();
    }
    duplicates -= acked.len();
    eprintln!("plain producer under the same faults: {duplicates} duplicates");
    assert!(duplicates > 0, "the fault hooks did not make the producer retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_while_producing_stores_every_acked_record_once() {
    let mut cluster = Cluster::start(3).await;
    let leaders = create_topic(&cluster, 1, "orders", 1, 3, &[]).await;
    let config = ProducerConfig {
        request_timeout: Duration::from_secs(2),
        retry_backoff: Duration::from_millis(20),
        linger: Duration::from_millis(2),
        max_batch_bytes: 1024,
        ..Default::default()
    };
    let producer = Producer::new(client(&cluster), config).unwrap();
    let first = send_all(&producer, "orders", 300, 5).await;
    // Queue more, kill the leader while they are in flight, queue more.
    let mut deliveries = Vec::new();
    for i in 300..1500 {
        if i == 700 {
            cluster.kill(leaders[0]);
        }
        let key = format!("k{}", i % 5);
        let value = format!("{key}:{i:05}");
        deliveries.push((value.clone(), producer.send("orders", record(&key, &value)).await.unwrap()));
    }
    let mut acked = first;
    for (value, delivery) in deliveries {
        let metadata = delivery.await.unwrap_or_else(|e| panic!("{value} was not delivered: {e}\n{}", cluster.logs()));
        acked.push((0, metadata.offset.unwrap(), value));
    }
    cluster.start_node(leaders[0]);
    let duplicates = check_log(&cluster, "orders", 1, &acked).await;
    eprintln!("leader killed while producing: {} records acked, {duplicates} duplicates", acked.len());
    assert_eq!(duplicates, 0);
    assert_eq!(fetch_all(&cluster, "orders", 0, 0).await.len(), acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_producer_with_an_older_epoch_is_fenced() {
    let cluster = Cluster::start(3).await;
    create_topic(&cluster, 1, "jobs", 1, 3, &[]).await;
    let named = ProducerConfig { producer_name: Some("invoicer".into()), ..Default::default() };
    let old = Producer::new(client(&cluster), named.clone()).unwrap();
    let first = old.send_to("jobs", 0, record("a", "old-1")).await.unwrap().await.unwrap();
    let new = Producer::new(client(&cluster), named).unwrap();
    let second = new.send_to("jobs", 0, record("a", "new-1")).await.unwrap().await.unwrap();
    assert_eq!(second.offset, first.offset.map(|o| o + 1));
    let error = old.send_to("jobs", 0, record("a", "old-2")).await.unwrap().await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::ProducerFenced), "{error}");
    // The new instance goes on.
    new.send_to("jobs", 0, record("a", "new-2")).await.unwrap().await.unwrap();
    let values: Vec<String> = fetch_all(&cluster, "jobs", 0, 0).await.iter().map(value_of).collect();
    assert_eq!(values, vec!["old-1", "new-1", "new-2"]);
}
