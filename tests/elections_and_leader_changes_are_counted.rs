//! Every node counts the elections it starts and the leader changes it
//! sees per partition (`strata_raft_elections_total`,
//! `strata_leader_changes_total`): the counts settle once a new topic has
//! its leaders and then stay put while nothing fails, the death of a
//! partition's leader moves them, and a partition's samples leave with it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use strata_cluster_tests::{create_topic, eventually, http_get, sample, Cluster};
use strata_proto::v1 as pb;

const TIMEOUT: Duration = Duration::from_secs(30);
const TOPIC: &str = "watched";
const PARTITIONS: u32 = 3;

/// How long the counts must stay put to call the cluster settled: three
/// election timeouts (the default maximum is 1 s), so that a follower
/// missing its leader's heartbeats would have campaigned, and a count that
/// moved on every heartbeat (one each 100 ms) would have moved thirty times.
const STEADY_WINDOW: Duration = Duration::from_secs(3);

/// What one node's metrics say of leadership.
#[derive(Clone, Debug, PartialEq)]
struct Counts {
    metadata_elections: f64,
    partition_elections: f64,
    /// By partition of TOPIC; absent for a partition the node does not
    /// report.
    leader_changes: BTreeMap<u32, f64>,
}

/// The counts of every running node, by node; `None` while some node's
/// metrics endpoint does not answer yet.
async fn counts(cluster: &Cluster) -> Option<BTreeMap<u64, Counts>> {
    let mut out = BTreeMap::new();
    for node in cluster.nodes.iter().filter(|n| n.is_running()) {
        let address = node.metrics_address.as_deref().expect("metrics on");
        tokio::net::TcpStream::connect(address).await.ok()?;
        let (_, body) = http_get(address, "/metrics").await;
        let elections = |kind: &str| {
            sample(&body, &format!("strata_raft_elections_total{{kind=\"{kind}\"}}"))
                .unwrap_or_else(|| panic!("an election count of kind {kind}:\n{body}"))
        };
        let leader_changes = (0..PARTITIONS)
            .filter_map(|p| {
                let series = format!("strata_leader_changes_total{{topic=\"{TOPIC}\",partition=\"{p}\"}}");
                Some((p, sample(&body, &series)?))
            })
            .collect();
        out.insert(
            node.id,
            Counts {
                metadata_elections: elections("metadata"),
                partition_elections: elections("partition"),
                leader_changes,
            },
        );
    }
    Some(out)
}

/// How often `settled` reads the counts.
const POLL: Duration = Duration::from_millis(100);

/// Waits until the counts of every node have not moved for STEADY_WINDOW
/// (read every POLL), and returns them. The window is an observation
/// period, not a synchronisation: nothing waits for it to pass but this
/// check.
async fn settled(cluster: &Cluster, what: &str) -> BTreeMap<u64, Counts> {
    let deadline = Instant::now() + TIMEOUT;
    let mut last: Option<(BTreeMap<u64, Counts>, Instant)> = None;
    loop {
        assert!(Instant::now() < deadline, "timed out after {TIMEOUT:?} waiting for {what}: {last:?}");
        if let Some(current) = counts(cluster).await {
            match &last {
                Some((seen, since)) if *seen == current => {
                    if since.elapsed() >= STEADY_WINDOW {
                        return current;
                    }
                }
                _ => last = Some((current, Instant::now())),
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elections_and_leader_changes_are_counted() {
    // No leadership hand-backs: a preferred leader that lost its first
    // campaign would get its partition back after the balancer's delay, a
    // leader change in the middle of the steady window.
    let mut cluster = Cluster::start_with_metrics_and_config(3, "leader_balance_delay = \"off\"\n").await;
    create_topic(&cluster, 1, TOPIC, PARTITIONS, 3, &[]).await;
    cluster.wait_topic_ready(TOPIC, PARTITIONS).await;

    // Startup: the metadata group and each new partition elected a leader,
    // and every node reports every partition it hosts (all of them).
    let start = settled(&cluster, "the counts to settle after start-up").await;
    let total = |counts: &BTreeMap<u64, Counts>, field: fn(&Counts) -> f64| counts.values().map(field).sum::<f64>();
    assert!(total(&start, |c| c.metadata_elections) >= 1.0, "the metadata group's first election: {start:?}");
    assert!(
        total(&start, |c| c.partition_elections) >= PARTITIONS as f64,
        "each new partition's first election: {start:?}"
    );
    assert!(start.values().all(|c| c.leader_changes.len() == PARTITIONS as usize), "{start:?}");

    // Nothing fails: nothing moves (`settled` again, from where start-up
    // left the counts: they must be the same ones).
    let steady = settled(&cluster, "the counts to stay put").await;
    assert_eq!(steady, start, "a steady cluster neither elects nor changes leaders");

    // The leader of partition 0 dies: a survivor campaigns and wins, and
    // both survivors see partition 0 change leaders.
    let leaders = cluster.wait_topic_ready(TOPIC, PARTITIONS).await;
    let victim = leaders[0];
    cluster.kill(victim);
    let after = eventually(TIMEOUT, "a new leader of partition 0 in the counts", || async {
        let now = counts(&cluster).await?;
        let elected = total(&now, |c| c.partition_elections) > now.keys().map(|id| start[id].partition_elections).sum();
        let changed = now.iter().all(|(id, c)| c.leader_changes.get(&0) > start[id].leader_changes.get(&0));
        (elected && changed).then_some(now)
    })
    .await;
    assert_eq!(after.len(), 2, "the survivors");
    let new_leader = cluster.wait_topic_ready(TOPIC, PARTITIONS).await[0];
    assert_ne!(new_leader, victim);

    // A deleted topic's partitions leave the metrics (their counts with them).
    // The victim may have led the metadata group too: the deletion is
    // retried until a new metadata leader takes it.
    eventually(TIMEOUT, "the topic's deletion", || async {
        let mut api = cluster.api(new_leader).await;
        let answer = api.delete_topic(pb::DeleteTopicRequest { name: TOPIC.into() }).await.ok()?.into_inner();
        answer.error.is_none().then_some(())
    })
    .await;
    eventually(TIMEOUT, "the deleted partitions' samples to go", || async {
        counts(&cluster).await?.values().all(|c| c.leader_changes.is_empty()).then_some(())
    })
    .await;
}
