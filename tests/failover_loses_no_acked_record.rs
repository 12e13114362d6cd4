//! kill -9 of a partition leader while producing with acks=all loses no
//! acknowledged record; kill -9 of the metadata leader leaves topic creation
//! working.

use std::time::{Duration, Instant};

use strata_cluster_tests::{create_topic, eventually, fetch_all, produce, value_of, Cluster};
use strata_proto::v1 as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_partition_leader_loses_no_acked_record() {
    let mut cluster = Cluster::start(3).await;
    let leaders = create_topic(&cluster, 1, "orders", 1, 3, &[]).await;
    let leader = leaders[0];
    let mut acked: Vec<(u64, String)> = Vec::new();
    let mut killed_at = None;
    let mut gap = None;
    for i in 0..400 {
        if i == 150 {
            cluster.kill(leader);
            killed_at = Some(Instant::now());
        }
        let value = format!("value-{i}");
        match produce(&cluster, "orders", 0, &[(None, &value)], Duration::from_secs(30)).await {
            Ok(offset) => {
                if let (Some(at), None) = (killed_at, gap) {
                    gap = Some(at.elapsed());
                }
                acked.push((offset, value));
            }
            Err(e) => panic!("produce {i} failed: {e}\n{}", cluster.logs()),
        }
    }
    eprintln!("partition unavailable for {:?} after killing leader node {leader}", gap.expect("writes resumed"));
    cluster.start_node(leader);
    let records = fetch_all(&cluster, "orders", 0, 0).await;
    for (offset, value) in &acked {
        let record =
            records.iter().find(|r| r.offset == *offset).unwrap_or_else(|| panic!("acked offset {offset} is missing"));
        assert_eq!(&value_of(record), value, "acked value at offset {offset}");
    }
    // Every record is stored at most once: producers here do not retry a
    // write that was answered, and answered writes are the only writes.
    assert!(records.len() >= acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_creation_works_after_killing_the_metadata_leader() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_ready().await;
    cluster.kill(leader);
    let killed_at = Instant::now();
    let new_leader = cluster.wait_ready().await;
    eprintln!("metadata group served again {:?} after killing its leader node {leader}", killed_at.elapsed());
    assert_ne!(new_leader, leader);
    let via = cluster.nodes.iter().map(|n| n.id).find(|id| *id != leader).unwrap();
    // RF 3 with one node down still has a majority in every partition.
    eventually(Duration::from_secs(30), "topic creation after failover", || async {
        let mut api = cluster.api(via).await;
        let answer = api
            .create_topic(pb::CreateTopicRequest {
                name: "after-failover".into(),
                partitions: 2,
                replication_factor: 3,
                configs: Default::default(),
            })
            .await
            .ok()?
            .into_inner();
        match answer.error {
            None => Some(()),
            // An earlier attempt that timed out may have created it.
            Some(e) if e.name == "TOPIC_ALREADY_EXISTS" => Some(()),
            Some(_) => None,
        }
    })
    .await;
    cluster.wait_topic_ready("after-failover", 2).await;
    produce(&cluster, "after-failover", 1, &[(None, "x")], Duration::from_secs(30)).await.unwrap();
}
