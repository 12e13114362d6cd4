//! Issue 16: a partition move under a byte throttle (`--throttle`) still
//! completes, the throttle shows in `strata cluster status` (text and
//! JSON) and in the metrics, the joining replica's copy went through it,
//! and bad rates are refused with a message that says what to give.
//! How fast a throttled move runs is the benchmark suite's to measure
//! (`--moves`), not this test's.

use std::time::Duration;

use strata_cluster_tests::{create_topic, eventually, http_get, produce, sample, strata_cli, Cluster};
use strata_proto::v1 as pb;

/// How long one CLI command may take; the reassign below waits on its own
/// deadline, under this one.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(20);
const SETTLE: Duration = Duration::from_secs(30);
/// The lowest rate there is (MIN_MOVE_THROTTLE_BYTES_PER_SEC): the copy
/// below, about 2 MB, is many times the bucket's burst at it, so messages
/// must wait their turn.
const RATE: &str = "256KiB";
const RATE_BYTES: u64 = 256 * 1024;
/// Batches of BATCH_RECORDS records of RECORD_BYTES each: about 2 MB,
/// spread over more entries than one AppendEntries carries.
const BATCHES: usize = 400;
const BATCH_RECORDS: usize = 5;
const RECORD_BYTES: usize = 1000;

async fn strata(cluster: &Cluster, args: &[&str]) -> std::process::Output {
    strata_cli(cluster, args, COMMAND_TIMEOUT).await
}

fn text(output: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

async fn status_json(cluster: &Cluster) -> serde_json::Value {
    let output = strata(cluster, &["--json", "cluster", "status"]).await;
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("status JSON: {e}: {}", text(&output)))
}

/// The sum over the nodes of a counter sample.
async fn summed(cluster: &Cluster, series: &str) -> f64 {
    let mut total = 0.0;
    for node in &cluster.nodes {
        let (_, body) = http_get(node.metrics_address.as_deref().expect("metrics on"), "/metrics").await;
        total += sample(&body, series).unwrap_or_else(|| panic!("{series} missing"));
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_throttled_move_completes_and_the_throttle_shows_in_status() {
    let cluster = Cluster::start_with_metrics(4).await;
    cluster.wait_ready().await;
    create_topic(&cluster, 1, "slow", 1, 3, &[]).await;
    let value = "v".repeat(RECORD_BYTES);
    let records: Vec<(Option<&str>, &str)> = (0..BATCH_RECORDS).map(|_| (None, value.as_str())).collect();
    for _ in 0..BATCHES {
        produce(&cluster, "slow", 0, &records, PRODUCE_TIMEOUT).await.expect("produce before the move");
    }
    let off = status_json(&cluster).await;
    assert_eq!(off["move_throttle_bytes_per_sec"], serde_json::Value::Null, "no throttle at first: {off}");
    assert_eq!(summed(&cluster, "strata_move_sent_bytes_total").await, 0.0, "nothing moved yet");

    let mut api = cluster.api(1).await;
    let described =
        api.describe_topic(pb::DescribeTopicRequest { name: "slow".into() }).await.expect("describe").into_inner();
    let from = described.partitions[0].replicas.clone();
    let joining = (1..=4).find(|n| !from.contains(n)).expect("one node hosts no replica");
    let to = [joining, from[1], from[2]].map(|n| n.to_string()).join(",");
    let moved =
        strata(&cluster, &["partition", "reassign", "slow:0", "--replicas", &to, "--throttle", RATE, "--wait", "30s"])
            .await;
    assert!(
        moved.status.success() && text(&moved).contains("has replicas"),
        "reassign: {}\n{}",
        text(&moved),
        cluster.logs()
    );

    // Every node's metadata state has the throttle (status is served by
    // node 1, which may apply a moment after the leader).
    eventually(SETTLE, "the throttle in the JSON status", || async {
        (status_json(&cluster).await["move_throttle_bytes_per_sec"] == RATE_BYTES).then_some(())
    })
    .await;
    let shown = strata(&cluster, &["cluster", "status"]).await;
    assert!(text(&shown).contains("move throttle: 256 KiB/s per sending node"), "{}", text(&shown));
    // The joining replica's copy went through the throttle, and it had to
    // wait: the copy is many bursts long.
    let sent = summed(&cluster, "strata_move_sent_bytes_total").await;
    assert!(
        sent >= (BATCHES * BATCH_RECORDS * RECORD_BYTES) as f64,
        "{sent} bytes counted to the joining replica\n{}",
        cluster.logs()
    );
    let waited = summed(&cluster, "strata_move_throttle_wait_seconds_total").await;
    assert!(waited > 0.0, "throttled messages waited: {waited} s");
    let (_, body) = http_get(cluster.node(1).metrics_address.as_deref().unwrap(), "/metrics").await;
    assert_eq!(sample(&body, "strata_move_throttle_rate_bytes"), Some(RATE_BYTES as f64));

    // A rebalance sets it too; `off` clears it.
    let rebalanced = strata(&cluster, &["cluster", "rebalance", "--throttle", "20MiB"]).await;
    assert!(rebalanced.status.success(), "{}", text(&rebalanced));
    assert!(text(&rebalanced).contains("move throttle: 20 MiB/s per sending node"), "{}", text(&rebalanced));
    eventually(SETTLE, "the new rate in the JSON status", || async {
        (status_json(&cluster).await["move_throttle_bytes_per_sec"] == 20u64 << 20).then_some(())
    })
    .await;
    let cleared = strata(&cluster, &["cluster", "rebalance", "--throttle", "off"]).await;
    assert!(cleared.status.success(), "{}", text(&cleared));
    eventually(SETTLE, "no throttle in the JSON status", || async {
        status_json(&cluster).await["move_throttle_bytes_per_sec"].is_null().then_some(())
    })
    .await;
    let shown = strata(&cluster, &["cluster", "status"]).await;
    assert!(text(&shown).contains("move throttle: off"), "{}", text(&shown));

    // Bad rates never reach the cluster; a dry run changes nothing, so it
    // takes no throttle.
    for (args, says) in [
        (vec!["cluster", "rebalance", "--throttle", "100KiB"], "below the lowest, 256 KiB/s"),
        (vec!["cluster", "rebalance", "--throttle", "20Mb"], "e.g. 20MiB"),
        (vec!["partition", "reassign", "slow:0", "--replicas", "1,2,3", "--throttle", "fast"], "e.g. 20MiB"),
        (vec!["cluster", "rebalance", "--dry-run", "--throttle", "20MiB"], "cannot be used with"),
    ] {
        let refused = strata(&cluster, &args).await;
        assert!(!refused.status.success() && text(&refused).contains(says), "{args:?}: {}", text(&refused));
    }
    assert!(status_json(&cluster).await["move_throttle_bytes_per_sec"].is_null(), "still off");
}
