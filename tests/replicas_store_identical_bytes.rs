//! Every replica of a partition stores the same bytes at the same offsets:
//! a replica read (`Client::read_replica`, served from one node's own copy
//! whether it leads or follows) returns identical batches from every node,
//! also from a follower that was down for part of the writes and caught up
//! afterwards. A replica read from a node that holds no replica is refused
//! with a typed error.

use std::time::Duration;

use strata_client::{Acks, Client, ClientConfig, ClientError, ErrorCode, Header, Producer, ProducerConfig, Record};
use strata_cluster_tests::{create_topic, eventually, now_ms, Cluster};
use strata_core::IDEMPOTENCY_KEY_HEADER;
use strata_record::{decode_records_from, encode_batch, ProducerFields};

fn record(i: usize) -> Record {
    let mut headers = vec![Header { key: "n".into(), value: Some(i.to_string().into_bytes().into()) }];
    // Every third record carries an idempotency key, every ninth one a key
    // sent before, so the key index drops some records as duplicates.
    if i.is_multiple_of(3) {
        let key = if i.is_multiple_of(9) { format!("key-{}", i / 2) } else { format!("key-{i}") };
        headers.push(Header { key: IDEMPOTENCY_KEY_HEADER.into(), value: Some(key.into_bytes().into()) });
    }
    Record {
        key: i.is_multiple_of(2).then(|| format!("k{i}").into_bytes().into()),
        value: Some(format!("value {i}").into_bytes().into()),
        headers,
        timestamp_ms: now_ms(),
    }
}

/// Sends records `from..to` in batches of 1-3, half through an idempotent
/// producer, half as plain batches.
async fn write(client: &Client, producer: &Producer, from: usize, to: usize) {
    let mut i = from;
    while i < to {
        let end = (i + 1 + i % 3).min(to);
        if i.is_multiple_of(2) {
            let batch = encode_batch(&(i..end).map(record).collect::<Vec<_>>(), ProducerFields::default()).unwrap();
            eventually(Duration::from_secs(30), "a plain batch to be stored", || {
                let batch = batch.clone();
                async move { client.produce_batch("mirrored", 0, batch, Acks::All, Duration::from_secs(5)).await.ok() }
            })
            .await;
        } else {
            let mut deliveries = Vec::new();
            for n in i..end {
                deliveries.push(producer.send_to("mirrored", 0, record(n)).await.unwrap());
            }
            for delivery in deliveries {
                delivery.await.unwrap();
            }
        }
        i = end;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_serves_identical_bytes_at_every_offset() {
    // Snapshots every few entries, so a follower that was down may catch
    // up from a snapshot rather than from the log.
    let mut cluster = Cluster::start_with_config(3, "snapshot_every_entries = 8\n").await;
    let leader = create_topic(&cluster, 1, "mirrored", 1, 3, &[]).await[0];
    let config = ClientConfig { request_timeout: Duration::from_secs(5), ..Default::default() };
    let client = Client::connect_with(&cluster.bootstrap(), config.clone()).unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default()).unwrap();
    write(&client, &producer, 0, 60).await;

    // One follower misses the next writes and catches up after its restart.
    let follower = cluster.nodes.iter().map(|n| n.id).find(|id| *id != leader).unwrap();
    cluster.kill(follower);
    write(&client, &producer, 60, 120).await;
    cluster.start_node(follower);

    let leader_end = client.list_offsets("mirrored", 0, strata_client::OffsetSpec::Latest).await.unwrap();
    assert!(leader_end.high_watermark > 80, "{leader_end:?}");
    let addresses: Vec<(u64, String)> = cluster.nodes.iter().map(|n| (n.id, n.address.clone())).collect();
    let copies = eventually(Duration::from_secs(30), "every replica to apply the leader's writes", || async {
        let mut copies = Vec::new();
        for (id, address) in &addresses {
            let copy = client.read_replica(address, "mirrored", 0).await.ok()?;
            if copy.high_watermark < leader_end.high_watermark {
                return None;
            }
            copies.push((*id, copy));
        }
        Some(copies)
    })
    .await;

    let (first_id, first) = &copies[0];
    assert_eq!(first.log_start_offset, 0);
    assert!(!first.batches.is_empty());
    // The batches are the partition's records, densely numbered from 0.
    let joined: Vec<u8> = first.batches.iter().flat_map(|(_, bytes)| bytes.iter().copied()).collect();
    let records = decode_records_from(&joined, 0).unwrap();
    assert_eq!(records.len() as u64, first.high_watermark);
    assert!(records.iter().enumerate().all(|(i, r)| r.offset == i as u64));
    for (id, copy) in &copies[1..] {
        assert_eq!(
            (copy.log_start_offset, copy.high_watermark),
            (first.log_start_offset, first.high_watermark),
            "nodes {first_id} and {id} hold different ranges"
        );
        assert_eq!(copy.batches.len(), first.batches.len(), "nodes {first_id} and {id} hold different batch counts");
        for ((base_a, a), (base_b, b)) in first.batches.iter().zip(&copy.batches) {
            assert_eq!(base_a, base_b, "nodes {first_id} and {id} split batches differently");
            assert_eq!(a, b, "nodes {first_id} and {id} store different bytes at offset {base_a}");
        }
    }

    // A node without a replica of a partition refuses a replica read of it.
    create_topic(&cluster, 1, "single", 1, 1, &[]).await;
    let description = client.describe_topic("single").await.unwrap();
    let holder = description.partitions[0].replicas[0];
    let (_, other) = addresses.iter().find(|(id, _)| *id != holder).unwrap();
    match client.fetch_from_replica(other, "single", 0, 0, 1024).await {
        Err(ClientError::Server { code: ErrorCode::InvalidRequest, message, .. }) => {
            assert!(message.contains("hosts no replica"), "{message}")
        }
        other => panic!("a replica read from a node without a replica answered {other:?}"),
    }
}
