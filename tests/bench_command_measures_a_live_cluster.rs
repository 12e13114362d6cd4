//! `strata bench` runs for about a second against a real 3-node cluster, in
//! both its open-loop (fixed rate) and max-rate modes, and with consumers
//! in a consumer group, and reports records, ordered latency percentiles
//! and no errors in its JSON summary.

use std::time::Duration;

use strata_cluster_tests::{strata_binary, Cluster};

/// Bound on one bench run: a second of load plus topic creation and drain.
const RUN_TIMEOUT: Duration = Duration::from_secs(90);

async fn bench(cluster: &Cluster, extra: &[&str]) -> serde_json::Value {
    let output = tokio::process::Command::new(strata_binary())
        .arg("--bootstrap")
        .arg(cluster.bootstrap().join(","))
        .args(["--json", "bench", "--duration", "1s", "--warmup", "200ms", "--drain-timeout", "20s"])
        .args(extra)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(RUN_TIMEOUT, output).await.expect("bench finishes in time").expect("run bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed: {}\n{stderr}\n{}", output.status, cluster.logs());
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("bench printed no JSON ({e}):\n{}", String::from_utf8_lossy(&output.stdout)))
}

fn check_latency(latency: &serde_json::Value) {
    let get = |name: &str| latency[name].as_f64().unwrap_or_else(|| panic!("no {name} in {latency}"));
    let ordered = [get("p50"), get("p95"), get("p99"), get("p999"), get("max")];
    assert!(ordered[0] > 0.0, "a real round trip takes time: {latency}");
    assert!(ordered.windows(2).all(|w| w[0] <= w[1]), "percentiles out of order: {latency}");
    assert!(latency["count"].as_u64().unwrap() > 0, "{latency}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_reports_throughput_and_ordered_latencies() {
    let cluster = Cluster::start(3).await;

    // Open loop at a fixed rate with a consumer: produce and end-to-end.
    let fixed = bench(
        &cluster,
        &["--topic", "bench-fixed", "--partitions", "2", "--rate", "400", "--consumers", "1", "--record-size", "256"],
    )
    .await;
    assert_eq!(fixed["errors"], 0, "{fixed}");
    assert_eq!(fixed["unsent"], 0, "{fixed}");
    assert_eq!(fixed["settings"]["partitions"], 2);
    assert_eq!(fixed["settings"]["replication_factor"], 3);
    assert_eq!(fixed["settings"]["rate_records_per_sec"], 400);
    let produced = fixed["produce"]["records"].as_u64().unwrap();
    // 400 records/s for one second; allow for scheduling slack on a busy machine.
    assert!((200..=600).contains(&produced), "{fixed}");
    assert_eq!(fixed["produce"]["bytes"].as_u64().unwrap(), produced * 256);
    check_latency(&fixed["produce"]["latency_ms"]);
    assert!(fixed["consume"]["records"].as_u64().unwrap() > 0, "{fixed}");
    check_latency(&fixed["consume"]["latency_ms"]);

    // Max rate, two producers, no consumer.
    let max = bench(&cluster, &["--topic", "bench-max", "--partitions", "3", "--producers", "2"]).await;
    assert_eq!(max["errors"], 0, "{max}");
    assert_eq!(max["settings"]["rate_records_per_sec"], 0);
    assert!(max["produce"]["records"].as_u64().unwrap() > 0, "{max}");
    assert!(max["produce"]["records_per_sec"].as_f64().unwrap() > 0.0, "{max}");
    check_latency(&max["produce"]["latency_ms"]);
    assert!(max["consume"].is_null(), "{max}");

    // Consumers as members of a group: the group splits the partitions,
    // every record acknowledged is read, and the members leave at the end,
    // having committed what they read.
    let grouped = bench(
        &cluster,
        &["--topic", "bench-group", "--partitions", "4", "--rate", "400", "--consumers", "2", "--group", "readers"],
    )
    .await;
    assert_eq!(grouped["errors"], 0, "{grouped}");
    assert_eq!(grouped["settings"]["group"], "readers");
    assert!(grouped["consume"]["records"].as_u64().unwrap() > 0, "{grouped}");
    check_latency(&grouped["consume"]["latency_ms"]);
    let client = strata_client::Client::connect(&cluster.bootstrap()).unwrap();
    let group = client.describe_group("readers").await.expect("the bench's group");
    assert!(group.members.is_empty(), "the bench's members left: {group:?}");
    let committed: u64 = group.partitions.iter().filter_map(|p| p.committed_offset).sum();
    let written: u64 = group.partitions.iter().filter_map(|p| p.high_watermark).sum();
    assert_eq!(group.partitions.len(), 4, "{group:?}");
    assert_eq!(committed, written, "everything read was committed: {group:?}");
}
