//! A full cluster restart, clean or by kill -9 of every node, keeps every
//! acknowledged record; nodes resume from their data dirs.

use std::time::Duration;

use strata_cluster_tests::{create_topic, fetch_all, produce, value_of, Cluster};

const TIMEOUT: Duration = Duration::from_secs(30);

async fn write(cluster: &Cluster, topic: &str, partitions: u32, round: &str) -> Vec<Vec<String>> {
    let mut written = vec![Vec::new(); partitions as usize];
    for partition in 0..partitions {
        for i in 0..20 {
            let value = format!("{round}-{partition}-{i}");
            produce(cluster, topic, partition, &[(Some("k"), &value)], TIMEOUT).await.unwrap();
            written[partition as usize].push(value);
        }
    }
    written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_cluster_restart_keeps_every_acked_record() {
    let mut cluster = Cluster::start(3).await;
    create_topic(&cluster, 3, "durable", 3, 3, &[]).await;
    let mut expected = write(&cluster, "durable", 3, "first").await;

    // A crash of every node at once: nothing gets a clean shutdown.
    for id in 1..=3 {
        cluster.kill(id);
    }
    for id in [3, 1, 2] {
        cluster.start_node(id);
    }
    cluster.wait_ready().await;
    cluster.wait_topic_ready("durable", 3).await;
    for (partition, more) in write(&cluster, "durable", 3, "second").await.into_iter().enumerate() {
        expected[partition].extend(more);
    }

    // A clean stop of every node.
    for id in 1..=3 {
        cluster.stop(id);
    }
    for id in 1..=3 {
        cluster.start_node(id);
    }
    cluster.wait_ready().await;
    cluster.wait_topic_ready("durable", 3).await;
    for partition in 0..3 {
        let values: Vec<String> = fetch_all(&cluster, "durable", partition, 0).await.iter().map(value_of).collect();
        assert_eq!(values, expected[partition as usize], "partition {partition}\n{}", cluster.logs());
    }
}
