//! Idle partitions stop their Raft timers (quiescence), take writes
//! without starting them, and still fail over when the leader's node dies: every
//! acknowledged record survives, and a restarted node's replicas go quiet
//! again.

use std::time::Duration;

use strata_cluster_tests::{create_topic, eventually, fetch_all, http_get, produce, sample, value_of, Cluster};

const TIMEOUT: Duration = Duration::from_secs(30);
const PARTITIONS: u32 = 6;

/// The `strata_quiet_partitions` gauge of every running node; `None` while
/// some node's metrics endpoint is not up yet (a node just restarted).
async fn quiet_by_node(cluster: &Cluster) -> Option<Vec<(u64, f64)>> {
    let mut out = Vec::new();
    for node in cluster.nodes.iter().filter(|n| n.is_running()) {
        let address = node.metrics_address.as_deref().expect("metrics on");
        tokio::net::TcpStream::connect(address).await.ok()?;
        let (_, body) = http_get(address, "/metrics").await;
        out.push((node.id, sample(&body, "strata_quiet_partitions").expect("quiet gauge")));
    }
    Some(out)
}

/// Waits until every running node has stopped the timers of all its replicas.
async fn wait_all_quiet(cluster: &Cluster, what: &str) {
    eventually(TIMEOUT, what, || async {
        let quiet = quiet_by_node(cluster).await?;
        quiet.iter().all(|(_, n)| *n == PARTITIONS as f64).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_partitions_go_quiet_and_still_fail_over() {
    let mut cluster = Cluster::start_with_metrics(3).await;
    create_topic(&cluster, 1, "idle", PARTITIONS, 3, &[]).await;
    let mut expected: Vec<Vec<String>> = vec![Vec::new(); PARTITIONS as usize];
    let write = |expected: &mut Vec<Vec<String>>, round: &str| {
        let values: Vec<(u32, String)> = (0..PARTITIONS).map(|p| (p, format!("{round}-{p}"))).collect();
        for (p, v) in &values {
            expected[*p as usize].push(v.clone());
        }
        values
    };

    wait_all_quiet(&cluster, "every replica to go quiet after creation").await;

    // A write to a quiet partition is served at once and leaves it quiet:
    // its leader renews its lease with one heartbeat round, no timer starts.
    for (partition, value) in write(&mut expected, "first") {
        produce(&cluster, "idle", partition, &[(None, value.as_str())], TIMEOUT).await.unwrap();
    }
    let after = quiet_by_node(&cluster).await.expect("every node serves metrics");
    assert!(after.iter().all(|(_, n)| *n == PARTITIONS as f64), "writes leave partitions quiet: {after:?}");

    // Kill the node that leads partition 0 while everything is quiet: its
    // partitions must elect new leaders through the missing beats alone.
    let leaders = cluster.wait_topic_ready("idle", PARTITIONS).await;
    let victim = leaders[0];
    cluster.kill(victim);
    cluster.wait_topic_ready("idle", PARTITIONS).await;
    for (partition, value) in write(&mut expected, "second") {
        produce(&cluster, "idle", partition, &[(None, value.as_str())], TIMEOUT).await.unwrap();
    }
    for partition in 0..PARTITIONS {
        let values: Vec<String> = fetch_all(&cluster, "idle", partition, 0).await.iter().map(value_of).collect();
        assert_eq!(values, expected[partition as usize], "partition {partition}\n{}", cluster.logs());
    }

    // The restarted node catches up and its replicas go quiet too.
    cluster.start_node(victim);
    wait_all_quiet(&cluster, "every replica, the restarted node's too, to go quiet").await;
    for (partition, value) in write(&mut expected, "third") {
        produce(&cluster, "idle", partition, &[(None, value.as_str())], TIMEOUT).await.unwrap();
    }
    for partition in 0..PARTITIONS {
        let values: Vec<String> = fetch_all(&cluster, "idle", partition, 0).await.iter().map(value_of).collect();
        assert_eq!(values, expected[partition as usize], "partition {partition}\n{}", cluster.logs());
    }
}
