//! Issue 16: membership on real processes. A node joins a running cluster
//! (`--join`), becomes a metadata voter (`cluster add-voter`) and takes
//! replicas (`cluster rebalance`); a node is decommissioned (`cluster
//! remove-node`); a node whose data dir was lost comes back empty, is
//! caught up before it votes, and nothing acknowledged is lost; bad
//! membership changes are refused with typed errors and change nothing.

use std::time::Duration;

use strata_cluster_tests::{create_topic, eventually, produce, replica_values, strata_cli, Cluster};
use strata_proto::v1 as pb;

/// How long one CLI command may take (a remove-node --wait moves a few
/// small partitions: seconds).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a produce may retry while leadership moves.
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long membership changes may take to show everywhere: a join is one
/// entry, a rebuild a catch-up of a few small groups.
const SETTLE: Duration = Duration::from_secs(60);
/// A refused node logs why and exits at once.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

async fn strata(cluster: &Cluster, args: &[&str]) -> std::process::Output {
    strata_cli(cluster, args, COMMAND_TIMEOUT).await
}

async fn status(cluster: &Cluster) -> Option<serde_json::Value> {
    let output = strata(cluster, &["--json", "cluster", "status"]).await;
    serde_json::from_slice(&output.stdout).ok()
}

/// Node `id`'s row of `cluster status --json`.
async fn node_row(cluster: &Cluster, id: u64) -> Option<serde_json::Value> {
    let status = status(cluster).await?;
    status["nodes"].as_array()?.iter().find(|n| n["id"] == id).cloned()
}

/// Produces `count` records to each partition of `topic`, all acknowledged.
async fn fill(cluster: &Cluster, topic: &str, partitions: u32, tag: &str, count: usize) -> Vec<Vec<String>> {
    let mut acked = Vec::new();
    for partition in 0..partitions {
        let values: Vec<String> = (0..count).map(|i| format!("{tag}-{partition}-{i}")).collect();
        let records: Vec<(Option<&str>, &str)> = values.iter().map(|v| (None, v.as_str())).collect();
        produce(cluster, topic, partition, &records, PRODUCE_TIMEOUT).await.expect("produce");
        acked.push(values);
    }
    acked
}

/// Waits until node `id`'s own copy of every partition holds every value
/// in `acked` (by partition).
async fn holds_everything(cluster: &Cluster, id: u64, topic: &str, acked: &[Vec<String>]) {
    eventually(SETTLE, &format!("node {id}'s own copy to hold every acknowledged record"), || async {
        for (partition, values) in acked.iter().enumerate() {
            let stored = replica_values(cluster, id, topic, partition as u32).await?;
            if !values.iter().all(|v| stored.contains(v)) {
                return None;
            }
        }
        Some(())
    })
    .await;
}

fn assert_refused(output: &std::process::Output, code: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains(code), "expected {code}: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_joins_takes_replicas_and_another_is_decommissioned() {
    let mut cluster = Cluster::start(3).await;
    cluster.wait_ready().await;
    create_topic(&cluster, 1, "grow", 4, 3, &[]).await;
    let acked = fill(&cluster, "grow", 4, "before", 20).await;
    let cluster_id = eventually(SETTLE, "a cluster id", || async {
        let id = status(&cluster).await?["cluster_id"].as_str()?.to_string();
        (!id.is_empty()).then_some(id)
    })
    .await;

    // Node 4 joins through node 2 and registers as a metadata learner.
    let joiner = cluster.plan_joining_node(&[2]);
    cluster.start_node(joiner);
    eventually(SETTLE, "node 4 to be an active metadata learner", || async {
        let row = node_row(&cluster, joiner).await?;
        (row["membership"] == "active" && row["metadata_role"] == "learner" && row["alive"] == true).then_some(())
    })
    .await;
    let added = strata(&cluster, &["cluster", "add-voter", &joiner.to_string()]).await;
    assert!(added.status.success(), "add-voter: {}\n{}", String::from_utf8_lossy(&added.stderr), cluster.logs());
    eventually(SETTLE, "node 4 to be a voter", || async {
        (node_row(&cluster, joiner).await?["metadata_role"] == "voter").then_some(())
    })
    .await;

    // A rebalance gives it replicas, and its copies fill up.
    let rebalanced = strata(&cluster, &["cluster", "rebalance"]).await;
    assert!(rebalanced.status.success(), "{}", String::from_utf8_lossy(&rebalanced.stderr));
    eventually(SETTLE, "node 4 to host its share with no move left", || async {
        let status = status(&cluster).await?;
        let row = status["nodes"].as_array()?.iter().find(|n| n["id"] == joiner)?.clone();
        let idle = status["reassignments"].as_array()?.is_empty();
        (idle && row["partitions_assigned"] == 3).then_some(())
    })
    .await;

    // Bad changes are refused and change nothing.
    assert_refused(&strata(&cluster, &["cluster", "remove-node", "9"]).await, "UNKNOWN_NODE");
    assert_refused(&strata(&cluster, &["cluster", "add-voter", "9"]).await, "UNKNOWN_NODE");
    // The same id as a running node, with a data dir of its own.
    let (exit, log) = cluster.run_extra_node(3, &[1], EXIT_TIMEOUT).await;
    assert!(!exit.success() && log.contains("NODE_ID_IN_USE"), "a second node 3: {log}");

    // Decommission node 2 while records are acknowledged.
    let removed = strata(&cluster, &["--json", "cluster", "remove-node", "2", "--wait", "--timeout", "80s"]).await;
    let answer: serde_json::Value = serde_json::from_slice(&removed.stdout).unwrap_or_default();
    assert!(
        removed.status.success() && answer["removed"] == true,
        "remove-node: {}\n{}\n{}",
        String::from_utf8_lossy(&removed.stdout),
        String::from_utf8_lossy(&removed.stderr),
        cluster.logs()
    );
    eventually(SETTLE, "node 2 to drop every replica", || async {
        let ping = cluster.api(2).await.ping(pb::PingRequest {}).await.ok()?.into_inner();
        (ping.partitions_hosted == 0).then_some(())
    })
    .await;
    cluster.stop(2);
    eventually(SETTLE, "node 2 gone from the status and the metadata voters", || async {
        let status = status(&cluster).await?;
        let nodes = status["nodes"].as_array()?;
        let gone = nodes.iter().all(|n| n["id"] != 2);
        let voters = nodes.iter().filter(|n| n["metadata_role"] == "voter").count();
        (gone && voters == 3 && status["cluster_id"] == cluster_id.as_str()).then_some(())
    })
    .await;
    // Restarted on its old data dir, the removed node is refused and exits.
    cluster.start_node(2);
    let exit = cluster.wait_exit(2, EXIT_TIMEOUT).await;
    let log = std::fs::read_to_string(&cluster.node(2).log_path).unwrap_or_default();
    assert!(!exit.success() && log.contains("NODE_REMOVED"), "the removed node restarted:\n{log}");
    // Nothing acknowledged is lost, and the three nodes left take writes.
    let after = fill(&cluster, "grow", 4, "after", 5).await;
    for id in [1, 3, joiner] {
        holds_everything(&cluster, id, "grow", &acked).await;
        holds_everything(&cluster, id, "grow", &after).await;
    }
    // RF 3 on three nodes: removing one more would leave nowhere to go.
    assert_refused(&strata(&cluster, &["cluster", "remove-node", "3"]).await, "UNSAFE_MEMBERSHIP_CHANGE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_lost_its_data_is_rebuilt_before_it_votes() {
    let mut cluster = Cluster::start(3).await;
    cluster.wait_ready().await;
    create_topic(&cluster, 1, "kept", 3, 3, &[]).await;
    let acked = fill(&cluster, "kept", 3, "before", 30).await;
    eventually(SETTLE, "node 2 registered", || async {
        (node_row(&cluster, 2).await?["membership"] == "active").then_some(())
    })
    .await;

    // Node 2's disk is lost; it comes back empty with the same config.
    cluster.kill(2);
    cluster.wipe(2);
    let during = fill(&cluster, "kept", 3, "while-down", 10).await;
    cluster.start_node(2);
    // The status may still show the old node 2 as active for a moment:
    // node 2's own log tells when it rejoined and when it votes again.
    let log_path = cluster.node(2).log_path.clone();
    eventually(SETTLE, "node 2 to rejoin empty, be rebuilt and vote again", || async {
        let log = std::fs::read_to_string(&log_path).ok()?;
        let rejoined = log.contains("its data was lost; rejoining") && log.contains("membership=rebuilding");
        (rejoined && log.contains("the cluster counts this node whole again")).then_some(())
    })
    .await;
    eventually(SETTLE, "node 2 to show as active", || async {
        let row = node_row(&cluster, 2).await?;
        (row["membership"] == "active" && row["alive"] == true).then_some(())
    })
    .await;
    for values in [&acked, &during] {
        holds_everything(&cluster, 2, "kept", values).await;
    }
    // Node 2 now counts: with node 3 down, nodes 1 and 2 keep every
    // acknowledged record and take writes.
    cluster.kill(3);
    let after = fill(&cluster, "kept", 3, "after", 5).await;
    for values in [&acked, &during, &after] {
        holds_everything(&cluster, 2, "kept", values).await;
        holds_everything(&cluster, 1, "kept", values).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_of_another_cluster_is_refused() {
    // Cluster A: node 1, and node 2 that joined it.
    let mut a = Cluster::start(1).await;
    a.wait_ready().await;
    let joined = a.plan_joining_node(&[1]);
    a.start_node(joined);
    eventually(SETTLE, "node 2 to join cluster A", || async {
        (node_row(&a, joined).await?["membership"] == "active").then_some(())
    })
    .await;
    let b = Cluster::start(1).await;
    b.wait_ready().await;
    eventually(SETTLE, "both clusters to have an id", || async {
        let (ia, ib) = (status(&a).await?["cluster_id"].clone(), status(&b).await?["cluster_id"].clone());
        (ia.as_str().is_some_and(|s| !s.is_empty()) && ib.as_str().is_some_and(|s| !s.is_empty()) && ia != ib)
            .then_some(())
    })
    .await;
    // Node 2, with cluster A's data, is pointed at cluster B.
    a.stop(joined);
    a.set_join(joined, vec![b.node(1).address.clone()]);
    a.start_node(joined);
    let exit = a.wait_exit(joined, EXIT_TIMEOUT).await;
    let log = std::fs::read_to_string(&a.node(joined).log_path).unwrap_or_default();
    assert!(!exit.success() && log.contains("CLUSTER_ID_MISMATCH"), "node 2 refuses cluster B:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_go_only_to_nodes_that_are_up() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_ready().await;
    let down = (1..=3).find(|n| *n != leader).expect("a node that does not lead");
    cluster.kill(down);
    // Once the metadata leader has missed the node's heartbeat answers for
    // NODE_LIVE_WITHIN, a replication factor of 3 has too few nodes.
    let mut attempt = 0;
    eventually(SETTLE, "RF 3 to be refused with a node down", || {
        attempt += 1;
        let name = format!("three-{attempt}");
        let cluster = &cluster;
        async move {
            let args = ["topic", "create", &name, "--partitions", "1", "--replication-factor", "3"];
            let output = strata(cluster, &args).await;
            let stderr = String::from_utf8_lossy(&output.stderr);
            (!output.status.success() && stderr.contains("INVALID_REPLICATION_FACTOR")).then_some(())
        }
    })
    .await;
    // RF 2 goes to the two nodes up.
    let created = strata(&cluster, &["topic", "create", "two", "--partitions", "4", "--replication-factor", "2"]).await;
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let mut api = cluster.api(leader).await;
    let described = api.describe_topic(pb::DescribeTopicRequest { name: "two".into() }).await.expect("describe");
    for partition in described.into_inner().partitions {
        assert!(
            !partition.replicas.contains(&down),
            "partition {} placed on the node that is down",
            partition.partition
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_node_is_replaced_by_a_new_one() {
    let mut cluster = Cluster::start(3).await;
    cluster.wait_ready().await;
    create_topic(&cluster, 1, "kept", 3, 3, &[]).await;
    let acked = fill(&cluster, "kept", 3, "before", 20).await;
    // Node 2's machine is gone for good; node 4 takes its place.
    cluster.kill(2);
    let new = cluster.plan_joining_node(&[1, 3]);
    cluster.start_node(new);
    eventually(SETTLE, "node 4 to join", || async {
        (node_row(&cluster, new).await?["membership"] == "active").then_some(())
    })
    .await;
    let removed = strata(&cluster, &["--json", "cluster", "remove-node", "2", "--wait", "--timeout", "80s"]).await;
    let answer: serde_json::Value = serde_json::from_slice(&removed.stdout).unwrap_or_default();
    assert!(
        removed.status.success() && answer["removed"] == true,
        "remove-node of a dead node: {}\n{}",
        String::from_utf8_lossy(&removed.stderr),
        cluster.logs()
    );
    // Node 4's own copies hold every acknowledged record (copied from the
    // survivors), and nodes 1, 3 and 4 take writes.
    holds_everything(&cluster, new, "kept", &acked).await;
    let after = fill(&cluster, "kept", 3, "after", 5).await;
    holds_everything(&cluster, new, "kept", &after).await;
}
