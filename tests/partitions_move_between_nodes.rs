//! Issue 16: `strata partition reassign` moves a partition to other nodes
//! while it is written to, on real processes: the new replica catches up and
//! votes, the node left out deletes its copy, and no acknowledged record is
//! lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use strata_cluster_tests::{
    create_topic, eventually, fetch_all, http_get, produce, replica_values, sample, strata_cli, value_of, Cluster,
};
use strata_proto::v1 as pb;

/// How long one CLI command may take: a move here is a catch-up of a few
/// hundred records and two membership changes, well under a second.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a produce may retry while leadership moves.
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(20);
const SETTLE: Duration = Duration::from_secs(30);

async fn strata(cluster: &Cluster, args: &[&str]) -> std::process::Output {
    strata_cli(cluster, args, COMMAND_TIMEOUT).await
}

async fn replicas(cluster: &Cluster, topic: &str) -> Vec<u64> {
    let mut api = cluster.api(cluster.nodes.iter().find(|n| n.is_running()).unwrap().id).await;
    let answer =
        api.describe_topic(pb::DescribeTopicRequest { name: topic.into() }).await.expect("describe").into_inner();
    answer.partitions[0].replicas.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_moves_to_another_node_while_it_is_written() {
    let cluster = Cluster::start(4).await;
    cluster.wait_ready().await;
    create_topic(&cluster, 1, "moving", 1, 3, &[]).await;
    let from = replicas(&cluster, "moving").await;
    let outsider = (1..=4).find(|n| !from.contains(n)).expect("one node hosts no replica");
    // The preferred leader (most likely the leader) leaves; the outsider
    // joins and becomes the preferred leader.
    let leaving = from[0];
    let to = vec![outsider, from[1], from[2]];
    let mut acknowledged = Vec::new();
    for batch in 0..10 {
        let values: Vec<String> = (0..10).map(|i| format!("before-{batch}-{i}")).collect();
        let records: Vec<(Option<&str>, &str)> = values.iter().map(|v| (None, v.as_str())).collect();
        produce(&cluster, "moving", 0, &records, PRODUCE_TIMEOUT).await.expect("produce before the move");
        acknowledged.extend(values);
    }

    // A writer keeps going while the partition moves.
    let cluster = Arc::new(cluster);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (cluster, stop) = (cluster.clone(), stop.clone());
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut batch = 0;
            while !stop.load(Ordering::Relaxed) {
                let value = format!("during-{batch}");
                if produce(&cluster, "moving", 0, &[(None, &value)], PRODUCE_TIMEOUT).await.is_ok() {
                    acknowledged.push(value);
                }
                batch += 1;
            }
            acknowledged
        })
    };
    let replicas_arg = to.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let moved =
        strata(&cluster, &["partition", "reassign", "moving:0", "--replicas", &replicas_arg, "--wait", "45s"]).await;
    let stdout = String::from_utf8_lossy(&moved.stdout);
    assert!(
        moved.status.success() && stdout.contains("has replicas"),
        "reassign --wait: {stdout}\n{}\n{}",
        String::from_utf8_lossy(&moved.stderr),
        cluster.logs()
    );
    stop.store(true, Ordering::Relaxed);
    acknowledged.extend(writer.await.expect("writer"));
    assert!(acknowledged.len() > 100, "the writer got acknowledgements during the move");

    eventually(SETTLE, "the assignment to name the new replicas", || async {
        (replicas(&cluster, "moving").await == to).then_some(())
    })
    .await;
    eventually(SETTLE, "no move left in progress", || async {
        let status = strata(&cluster, &["--json", "cluster", "status"]).await;
        let status: serde_json::Value = serde_json::from_slice(&status.stdout).ok()?;
        status["reassignments"].as_array()?.is_empty().then_some(())
    })
    .await;

    // The new replica holds every acknowledged record in its own copy.
    let seen = eventually(SETTLE, "the new replica to hold every acknowledged record", || async {
        let values = replica_values(&cluster, outsider, "moving", 0).await?;
        acknowledged.iter().all(|v| values.contains(v)).then_some(values)
    })
    .await;
    assert!(seen.len() >= acknowledged.len());
    // The node left out stops hosting the partition.
    eventually(SETTLE, "the node left out to drop its replica", || async {
        let mut api = cluster.api(leaving).await;
        let ping = api.ping(pb::PingRequest {}).await.ok()?.into_inner();
        (ping.partitions_hosted == 0).then_some(())
    })
    .await;

    // With one of the old replicas down, the quorum needs the new one: writes
    // still succeed, and nothing acknowledged is missing.
    let mut cluster = Arc::into_inner(cluster).expect("the writer is done");
    cluster.kill(from[1]);
    produce(&cluster, "moving", 0, &[(None, "after")], PRODUCE_TIMEOUT).await.expect("a write with the new voter");
    let stored: Vec<String> = fetch_all(&cluster, "moving", 0, 0).await.iter().map(value_of).collect();
    for value in acknowledged.iter().chain([&"after".to_string()]) {
        assert!(stored.contains(value), "acknowledged {value} is missing after the move");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_moves_are_refused_with_typed_errors() {
    let cluster = Cluster::start(3).await;
    cluster.wait_ready().await;
    create_topic(&cluster, 1, "fixed", 1, 2, &[]).await;
    let before = replicas(&cluster, "fixed").await;
    for (args, code) in [
        (vec!["fixed:0", "--replicas", "1,1"], "INVALID_REPLICATION_FACTOR"),
        (vec!["fixed:0", "--replicas", "1,9"], "INVALID_REQUEST"),
        (vec!["fixed:7", "--replicas", "1,2"], "UNKNOWN_PARTITION"),
        (vec!["nope:0", "--replicas", "1,2"], "UNKNOWN_TOPIC"),
    ] {
        let mut command = vec!["partition", "reassign"];
        command.extend(&args);
        let output = strata(&cluster, &command).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && stderr.contains(code), "{args:?}: {stderr}");
    }
    assert_eq!(replicas(&cluster, "fixed").await, before, "nothing moved");
    // Only the order: the preferred leader changes at once.
    let swapped = format!("{},{}", before[1], before[0]);
    let output = strata(&cluster, &["partition", "reassign", "fixed:0", "--replicas", &swapped]).await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // Every node's metadata state follows (node 1, which describes, may
    // apply the entry a moment after the leader answered).
    let swapped = vec![before[1], before[0]];
    eventually(SETTLE, "the swapped order to show", || async {
        (replicas(&cluster, "fixed").await == swapped).then_some(())
    })
    .await;
}

/// Replicas per node of `topic`, over nodes 1 to 4.
async fn replica_counts(cluster: &Cluster, topic: &str) -> Vec<usize> {
    let mut api = cluster.api(1).await;
    let answer =
        api.describe_topic(pb::DescribeTopicRequest { name: topic.into() }).await.expect("describe").into_inner();
    (1..=4).map(|n| answer.partitions.iter().filter(|p| p.replicas.contains(&n)).count()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebalance_gives_an_emptied_node_its_share_back() {
    let cluster = Cluster::start(4).await;
    cluster.wait_ready().await;
    create_topic(&cluster, 1, "even", 4, 2, &[]).await;
    assert_eq!(replica_counts(&cluster, "even").await, vec![2, 2, 2, 2], "placement spreads replicas");
    for partition in 0..4u32 {
        produce(&cluster, "even", partition, &[(None, "kept")], PRODUCE_TIMEOUT).await.expect("produce");
    }
    // Empty node 4: each of its replicas goes to another node.
    let mut api = cluster.api(1).await;
    let described =
        api.describe_topic(pb::DescribeTopicRequest { name: "even".into() }).await.expect("describe").into_inner();
    for p in described.partitions.iter().filter(|p| p.replicas.contains(&4)) {
        let spare = (1..=3).find(|n| !p.replicas.contains(n)).expect("a node without this partition");
        let to: Vec<String> = p.replicas.iter().map(|r| if *r == 4 { spare } else { *r }.to_string()).collect();
        let target = format!("even:{}", p.partition);
        let moved =
            strata(&cluster, &["partition", "reassign", &target, "--replicas", &to.join(","), "--wait", "45s"]).await;
        assert!(moved.status.success(), "{}", String::from_utf8_lossy(&moved.stderr));
    }
    eventually(SETTLE, "node 4 to be empty", || async {
        (replica_counts(&cluster, "even").await[3] == 0).then_some(())
    })
    .await;

    let planned = strata(&cluster, &["--json", "cluster", "rebalance", "--dry-run"]).await;
    let planned: serde_json::Value = serde_json::from_slice(&planned.stdout).expect("plan JSON");
    assert!(planned.as_array().is_some_and(|moves| !moves.is_empty()), "{planned}");
    assert_eq!(replica_counts(&cluster, "even").await[3], 0, "a dry run moves nothing");
    let started = strata(&cluster, &["cluster", "rebalance"]).await;
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    eventually(SETTLE, "an even spread of replicas with no move left", || async {
        let status = strata(&cluster, &["--json", "cluster", "status"]).await;
        let status: serde_json::Value = serde_json::from_slice(&status.stdout).ok()?;
        let idle = status["reassignments"].as_array()?.is_empty();
        (idle && replica_counts(&cluster, "even").await == vec![2, 2, 2, 2]).then_some(())
    })
    .await;
    for partition in 0..4u32 {
        let stored: Vec<String> = fetch_all(&cluster, "even", partition, 0).await.iter().map(value_of).collect();
        assert_eq!(stored, vec!["kept"], "partition {partition} kept its record through the moves");
    }
}

/// Snapshot streams node `id` received whole (its metrics).
async fn snapshots_received(cluster: &Cluster, id: u64) -> f64 {
    let node = cluster.nodes.iter().find(|n| n.id == id).expect("node");
    let (_, body) = http_get(node.metrics_address.as_deref().expect("metrics on"), "/metrics").await;
    sample(&body, "strata_snapshots_received_total").unwrap_or_else(|| panic!("a snapshot count:\n{body}"))
}

/// A partition whose log is longer than a few replication rounds moves by
/// snapshot: its leader cuts the log at a fresh snapshot first, so the new
/// replica gets the data in one stream (staged in a file and ingested)
/// rather than entry by entry through its log and its apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_with_a_long_log_moves_by_snapshot() {
    let cluster = Cluster::start_with_metrics_and_config(4, "").await;
    cluster.wait_ready().await;
    create_topic(&cluster, 1, "long", 1, 3, &[]).await;
    let from = replicas(&cluster, "long").await;
    let outsider = (1..=4).find(|n| !from.contains(n)).expect("one node hosts no replica");
    // One entry per produce: more than MOVE_CAUGHT_UP_ENTRIES (64).
    let mut acknowledged = Vec::new();
    for i in 0..100 {
        let value = format!("long-{i}");
        produce(&cluster, "long", 0, &[(None, &value)], PRODUCE_TIMEOUT).await.expect("produce before the move");
        acknowledged.push(value);
    }
    let received_before = snapshots_received(&cluster, outsider).await;

    let to = [outsider, from[1], from[2]].map(|n| n.to_string()).join(",");
    let moved = strata(&cluster, &["partition", "reassign", "long:0", "--replicas", &to, "--wait", "45s"]).await;
    assert!(
        moved.status.success(),
        "reassign --wait: {}\n{}\n{}",
        String::from_utf8_lossy(&moved.stdout),
        String::from_utf8_lossy(&moved.stderr),
        cluster.logs()
    );
    let received = snapshots_received(&cluster, outsider).await;
    assert!(received > received_before, "the new replica got no snapshot ({received_before} before, {received} after)");
    eventually(SETTLE, "the new replica to hold every acknowledged record", || async {
        let values = replica_values(&cluster, outsider, "long", 0).await?;
        acknowledged.iter().all(|v| values.contains(v)).then_some(())
    })
    .await;
}
