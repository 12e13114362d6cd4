//! Issue 16: preferred-leader balancing. Every partition's first replica is
//! its preferred leader; placement spreads those over the nodes, and each
//! node hands a partition it leads back to its preferred leader once that
//! node is caught up (`leader_balance_delay`, 1 s here). So leadership is
//! spread again after elections went elsewhere, and after a failover once
//! the failed node is back.

use std::time::Duration;

use strata_cluster_tests::{create_topic, eventually, produce, replica_values, strata_cli, Cluster};
use strata_proto::v1 as pb;

/// How long leadership may take to settle on the preferred leaders: the
/// 1 s delay, the 2 s balancing interval, a transfer, with room for a slow
/// machine.
const SETTLE: Duration = Duration::from_secs(30);
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(20);

/// Each partition's (leader, preferred leader), when every one has a leader.
async fn leaders(cluster: &Cluster, topic: &str) -> Option<Vec<(u64, u64)>> {
    let via = cluster.nodes.iter().find(|n| n.is_running())?.id;
    let mut api = cluster.api(via).await;
    let answer = api.describe_topic(pb::DescribeTopicRequest { name: topic.into() }).await.ok()?.into_inner();
    answer.partitions.iter().map(|p| (p.leader != 0).then(|| (p.leader, p.replicas[0]))).collect()
}

async fn all_on_preferred(cluster: &Cluster, topic: &str) -> Vec<(u64, u64)> {
    eventually(SETTLE, "every partition led by its preferred leader", || async {
        let leaders = leaders(cluster, topic).await?;
        leaders.iter().all(|(leader, preferred)| leader == preferred).then_some(leaders)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leadership_returns_to_the_preferred_replicas() {
    let mut cluster = Cluster::start_with_config(3, "leader_balance_delay = \"1s\"\n").await;
    create_topic(&cluster, 1, "spread", 3, 3, &[]).await;
    let settled = all_on_preferred(&cluster, "spread").await;
    let mut preferred: Vec<u64> = settled.iter().map(|(_, p)| *p).collect();
    preferred.sort_unstable();
    assert_eq!(preferred, vec![1, 2, 3], "placement gives each node one partition to lead");

    // A failover moves node 2's partition elsewhere; once node 2 is back and
    // caught up, it leads it again.
    let partition = settled.iter().position(|(leader, _)| *leader == 2).expect("node 2 leads one") as u32;
    cluster.kill(2);
    produce(&cluster, "spread", partition, &[(None, "while node 2 is down")], PRODUCE_TIMEOUT)
        .await
        .expect("the survivors take writes");
    let moved = leaders(&cluster, "spread").await.expect("leaders");
    assert_ne!(moved[partition as usize].0, 2, "a survivor leads node 2's partition");
    // Node 2 is a voter of all three partitions: `cluster status` counts
    // all three as under-replicated while it is down, and none once it is
    // back.
    eventually(SETTLE, "three under-replicated partitions", || async {
        (under_replicated(&cluster).await? == 3).then_some(())
    })
    .await;
    cluster.start_node(2);
    all_on_preferred(&cluster, "spread").await;
    eventually(SETTLE, "no under-replicated partition", || async {
        (under_replicated(&cluster).await? == 0).then_some(())
    })
    .await;
}

/// Partitions in the creation test: enough that the nodes start their
/// replicas over a few seconds, in different order of completion, as a
/// large topic's creation does (the race this test guards).
const NEW_TOPIC_PARTITIONS: u32 = 150;

/// A new topic's partitions are led from the start by their preferred
/// leaders, with the balancer off: creating a topic brings no wave of
/// hand-backs (each one an election) `leader_balance_delay` later.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_topic_starts_on_its_preferred_leaders() {
    let cluster = Cluster::start_with_config(3, "leader_balance_delay = \"off\"\n").await;
    create_topic(&cluster, 1, "fresh", NEW_TOPIC_PARTITIONS, 3, &[]).await;
    let settled = eventually(SETTLE, "every new partition to have a leader", || leaders(&cluster, "fresh")).await;
    let elsewhere: Vec<(usize, (u64, u64))> =
        settled.iter().copied().enumerate().filter(|(_, (leader, preferred))| leader != preferred).collect();
    assert!(
        elsewhere.is_empty(),
        "{} of {NEW_TOPIC_PARTITIONS} partitions led elsewhere than their preferred leader \
         (partition, (leader, preferred)): {elsewhere:?}",
        elsewhere.len()
    );
}

/// A new topic created while a preferred leader's node is down: the other
/// replicas of its partitions form them after the grace (5 election
/// timeouts) and take writes; once the node is back it holds the records
/// written without it and leads its partitions again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_topic_forms_while_a_preferred_leader_is_down() {
    let mut cluster = Cluster::start_with_config(3, "leader_balance_delay = \"1s\"\n").await;
    cluster.kill(1);
    // create_topic waits until every partition serves.
    create_topic(&cluster, 2, "absent", 3, 3, &[]).await;
    let before = eventually(SETTLE, "every partition led", || leaders(&cluster, "absent")).await;
    let orphans: Vec<u32> = (0..3).filter(|p| before[*p as usize].1 == 1).collect();
    assert_eq!(orphans.len(), 1, "placement gives node 1 one partition to lead: {before:?}");
    let logs = cluster.logs();
    assert!(logs.contains("forming the group without its preferred leader"), "the fallback ran:\n{logs}");
    for partition in 0..3 {
        assert_ne!(before[partition as usize].0, 1, "node 1 is down");
        produce(&cluster, "absent", partition, &[(None, "without node 1")], PRODUCE_TIMEOUT)
            .await
            .expect("the partition takes writes without node 1");
    }
    cluster.start_node(1);
    for partition in 0..3 {
        eventually(SETTLE, "node 1's replica to hold what was written without it", || async {
            let values = replica_values(&cluster, 1, "absent", partition).await?;
            (values == ["without node 1"]).then_some(())
        })
        .await;
    }
    all_on_preferred(&cluster, "absent").await;
}

/// Under-replicated partitions summed over the nodes `strata cluster status`
/// shows alive.
async fn under_replicated(cluster: &Cluster) -> Option<u64> {
    let status = strata(cluster, &["--json", "cluster", "status"]).await;
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).ok()?;
    status["nodes"].as_array()?.iter().map(|n| n["partitions_under_replicated"].as_u64()).sum()
}

async fn strata(cluster: &Cluster, args: &[&str]) -> std::process::Output {
    strata_cli(cluster, args, SETTLE).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drained_node_leads_nothing_until_it_is_undrained() {
    let cluster = Cluster::start_with_config(3, "leader_balance_delay = \"1s\"\n").await;
    create_topic(&cluster, 1, "drain", 3, 3, &[]).await;
    let settled = all_on_preferred(&cluster, "drain").await;
    let partition = settled.iter().position(|(leader, _)| *leader == 1).expect("node 1 leads one") as u32;

    let drained = strata(&cluster, &["--json", "node", "drain", "1", "--wait", "25s"]).await;
    assert!(drained.status.success(), "drain: {}\n{}", String::from_utf8_lossy(&drained.stderr), cluster.logs());
    let answer: serde_json::Value = serde_json::from_slice(&drained.stdout).expect("drain JSON");
    assert_eq!((answer["drained"].clone(), answer["partitions_led"].clone()), (serde_json::json!([1]), 0.into()));
    // The metadata group moved off too, as every node sees it (a node hears
    // of a new leader at its first heartbeat).
    eventually(SETTLE, "node 1 drained, leading nothing, as the serving node sees it", || async {
        let status = strata(&cluster, &["--json", "cluster", "status"]).await;
        let status: serde_json::Value = serde_json::from_slice(&status.stdout).ok()?;
        let node_1 = status["nodes"].as_array()?.iter().find(|n| n["id"] == 1)?.clone();
        let off = status["metadata_leader"] != 1 && node_1["partitions_led"] == 0;
        (off && node_1["drained"] == true).then_some(())
    })
    .await;
    // Node 1 keeps its replica: its partition takes writes under another
    // leader, and the balancer does not hand it back while it is drained.
    produce(&cluster, "drain", partition, &[(None, "while drained")], PRODUCE_TIMEOUT).await.expect("produce");
    let leaders_now = leaders(&cluster, "drain").await.expect("leaders");
    assert!(leaders_now.iter().all(|(leader, _)| *leader != 1), "{leaders_now:?}");

    let undrained = strata(&cluster, &["node", "undrain", "1"]).await;
    assert!(undrained.status.success(), "undrain: {}", String::from_utf8_lossy(&undrained.stderr));
    all_on_preferred(&cluster, "drain").await;
}
