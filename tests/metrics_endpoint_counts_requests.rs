//! Every node serves Prometheus metrics on its own port, and the counters
//! move with the work: the partition leader counts produce and fetch
//! requests and bytes, every node counts group-commit fsyncs, and the
//! partitions led add up to the partitions of the cluster.

use std::time::Duration;

use strata_cluster_tests::{create_topic, eventually, fetch_all, http_get, produce, sample, Cluster};

const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_produce_and_fetch() {
    let cluster = Cluster::start_with_metrics(3).await;
    let leaders = create_topic(&cluster, 1, "metered", 2, 3, &[]).await;

    for i in 0..5 {
        let value = format!("value-{i}");
        produce(&cluster, "metered", 0, &[(None, value.as_str())], TIMEOUT).await.unwrap();
    }
    assert_eq!(fetch_all(&cluster, "metered", 0, 0).await.len(), 5);

    // The leader of partition 0 served the produces and the fetch. Leaders
    // may have moved since creation, so look for the node whose counters say so.
    let mut produced_somewhere = false;
    let mut led_total = 0.0;
    for node in &cluster.nodes {
        let address = node.metrics_address.as_deref().expect("metrics on");
        let (status, body) = http_get(address, "/metrics").await;
        assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
        assert!(body.contains("# TYPE strata_produce_latency_seconds histogram"), "{body}");
        let fsyncs = sample(&body, "strata_group_commit_fsync_seconds_count").unwrap();
        assert!(fsyncs > 0.0, "every replica fsyncs its appends:\n{body}");
        assert!(sample(&body, "strata_partitions_hosted").unwrap() == 2.0, "{body}");
        led_total += sample(&body, "strata_partitions_led").unwrap();
        assert!(sample(&body, "strata_rocksdb_write_stopped").is_some(), "{body}");
        assert!(sample(&body, "strata_rocksdb_sst_bytes{cf=\"partition_data\"}").is_some(), "{body}");
        let wal = sample(&body, "strata_rocksdb_written_bytes_total{kind=\"wal\"}").unwrap();
        assert!(wal > 0.0, "every replica wrote its appends to the WAL:\n{body}");
        let produced = sample(&body, "strata_produce_requests_total{result=\"ok\"}").unwrap();
        if produced >= 5.0 {
            produced_somewhere = true;
            assert!(sample(&body, "strata_produce_records_total").unwrap() >= 5.0, "{body}");
            assert!(sample(&body, "strata_produce_bytes_total").unwrap() > 5.0 * 7.0, "{body}");
            assert!(sample(&body, "strata_raft_commit_latency_seconds_count").unwrap() >= 5.0, "{body}");
            assert!(sample(&body, "strata_fetch_requests_total{result=\"ok\"}").unwrap() >= 1.0, "{body}");
            assert!(sample(&body, "strata_fetch_bytes_total").unwrap() > 0.0, "{body}");
        }
    }
    assert!(produced_somewhere, "no node counted the 5 produce requests (leaders at creation: {leaders:?})");
    assert_eq!(led_total, 2.0, "each partition has exactly one leader");

    // A stopped follower makes the partitions its leaders lead under-replicated.
    let mut cluster = cluster;
    let victim = cluster.nodes.iter().map(|n| n.id).find(|id| !leaders.contains(id)).unwrap_or(3);
    cluster.kill(victim);
    let survivors: Vec<String> =
        cluster.nodes.iter().filter(|n| n.id != victim).filter_map(|n| n.metrics_address.clone()).collect();
    eventually(Duration::from_secs(20), "an under-replicated partition to show", || async {
        let mut under = 0.0;
        for address in &survivors {
            let (_, body) = http_get(address, "/metrics").await;
            under += sample(&body, "strata_partitions_under_replicated").unwrap_or(0.0);
        }
        (under >= 1.0).then_some(())
    })
    .await;

    let (status, _) = http_get(survivors[0].as_str(), "/nope").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
}
