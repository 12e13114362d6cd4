//! Records produced with acks=all to several RF-3 partitions come back from
//! fetch in order with dense offsets, and a follower stopped during writes
//! catches up.

use std::time::Duration;

use strata_cluster_tests::{create_topic, fetch_all, produce, value_of, Cluster};

const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_fetch_round_trip_on_several_partitions() {
    let cluster = Cluster::start(3).await;
    let partitions = 4;
    create_topic(&cluster, 2, "events", partitions, 3, &[]).await;
    for partition in 0..partitions {
        let mut expected_base = 0;
        for batch in 0..5 {
            let values: Vec<String> = (0..10).map(|i| format!("p{partition}-b{batch}-r{i}")).collect();
            let records: Vec<(Option<&str>, &str)> = values.iter().map(|v| (Some("key"), v.as_str())).collect();
            let base = produce(&cluster, "events", partition, &records, TIMEOUT)
                .await
                .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
            assert_eq!(base, expected_base, "offsets are assigned densely per partition");
            expected_base += 10;
        }
    }
    for partition in 0..partitions {
        let records = fetch_all(&cluster, "events", partition, 0).await;
        assert_eq!(records.len(), 50);
        for (index, record) in records.iter().enumerate() {
            assert_eq!(record.offset, index as u64);
            assert_eq!(value_of(record), format!("p{partition}-b{}-r{}", index / 10, index % 10));
            assert_eq!(record.key.as_deref(), Some(&b"key"[..]));
        }
    }
    // Fetching from the middle of a batch skips the records before the offset.
    let records = fetch_all(&cluster, "events", 1, 15).await;
    assert_eq!(records.first().map(|r| r.offset), Some(15));
    assert_eq!(records.len(), 35);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_stopped_during_writes_catches_up() {
    // Snapshots every 16 entries purge the log the follower missed, so it
    // must catch up through a streamed snapshot plus the log after it.
    let mut cluster = Cluster::start_with_config(3, "snapshot_every_entries = 16\n").await;
    create_topic(&cluster, 1, "catchup", 1, 3, &[]).await;
    produce(&cluster, "catchup", 0, &[(None, "before")], TIMEOUT).await.unwrap();
    cluster.kill(3);
    let mut expected = vec!["before".to_string()];
    for i in 0..200 {
        let value = format!("while-down-{i}");
        produce(&cluster, "catchup", 0, &[(None, &value)], TIMEOUT).await.unwrap();
        expected.push(value);
    }
    cluster.start_node(3);
    // With node 1 stopped, a write can only commit if node 3 appends it, and
    // Raft's log matching means node 3 then holds every earlier entry too.
    cluster.stop(1);
    produce(&cluster, "catchup", 0, &[(None, "after")], Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    expected.push("after".into());
    let log = std::fs::read_to_string(&cluster.node(3).log_path).unwrap();
    assert!(log.contains("installed snapshot from the leader"), "node 3 caught up without a snapshot:\n{log}");
    let values: Vec<String> = fetch_all(&cluster, "catchup", 0, 0).await.iter().map(value_of).collect();
    assert_eq!(values, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_with_one_key_stay_in_order_on_one_partition() {
    use std::collections::BTreeMap;
    use strata_client::{Client, Consumer, Producer, ProducerConfig, Record, StartOffset};

    let cluster = Cluster::start(3).await;
    create_topic(&cluster, 1, "keyed", 3, 3, &[]).await;
    let client = Client::connect(&cluster.bootstrap()).unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default()).unwrap();
    let mut deliveries = Vec::new();
    for seq in 0..50 {
        for key in 0..12 {
            let record = Record {
                key: Some(format!("key-{key}").into_bytes().into()),
                value: Some(format!("{seq}").into_bytes().into()),
                ..Default::default()
            };
            deliveries.push((key, producer.send("keyed", record).await.expect("queued")));
        }
    }
    producer.flush().await;
    let mut partition_of_key = BTreeMap::new();
    for (key, delivery) in deliveries {
        let metadata = delivery.await.expect("acknowledged");
        let partition = *partition_of_key.entry(key).or_insert(metadata.partition);
        assert_eq!(partition, metadata.partition, "key-{key} stays on one partition");
    }

    let mut consumer = Consumer::new(client);
    let mut ends = BTreeMap::new();
    for partition in 0..3 {
        consumer.assign("keyed", partition, StartOffset::Earliest).await.unwrap();
        let end = fetch_all(&cluster, "keyed", partition, 0).await.len() as u64;
        ends.insert(partition, end);
    }
    let total: u64 = ends.values().sum();
    assert_eq!(total, 600);
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut count = 0;
    let deadline = std::time::Instant::now() + TIMEOUT;
    while count < total {
        assert!(std::time::Instant::now() < deadline, "consumed {count} of {total} records");
        for record in consumer.poll(Duration::from_millis(500)).await.unwrap() {
            let key = String::from_utf8(record.key.unwrap().to_vec()).unwrap();
            let seq: u64 = String::from_utf8(record.value.unwrap().to_vec()).unwrap().parse().unwrap();
            seen.entry(key).or_default().push(seq);
            count += 1;
        }
    }
    assert_eq!(seen.len(), 12);
    for (key, seqs) in seen {
        assert_eq!(seqs, (0..50).collect::<Vec<_>>(), "{key} in order, each once");
    }
}
