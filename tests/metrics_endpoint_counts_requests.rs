//! Every node serves Prometheus metrics on its own port, and the counters
//! move with the work: the partition leader counts produce and fetch
//! requests and bytes, every node counts group-commit fsyncs, and the
//! partitions led add up to the partitions of the cluster. Every scrape is
//! whole, strict OpenMetrics when asked for, and no request, however
//! malformed, stops the endpoint.

use std::time::Duration;

use strata_cluster_tests::{
    create_topic, eventually, fetch_all, http_get, http_request, openmetrics, produce, raw_http_exchange, sample,
    Cluster,
};

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
        assert_openmetrics_scrape(address).await;
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

/// What Prometheus sends, with OpenMetrics first.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                                 version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// Scrapes `address` as Prometheus does and reads the whole answer with the
/// strict OpenMetrics reader: every sample in a declared family, histograms
/// that add up, `# EOF` at the end, and the sample names the Prometheus
/// format has.
async fn assert_openmetrics_scrape(address: &str) {
    let answer = http_request(address, "GET", "/metrics", PROMETHEUS_ACCEPT).await;
    assert_eq!(answer.status_line, "HTTP/1.1 200 OK", "{}", answer.body);
    let content_type = answer.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert_eq!(content_type, "application/openmetrics-text; version=1.0.0; charset=utf-8");
    let families = openmetrics::parse(&answer.body).unwrap_or_else(|error| panic!("{error}\n{}", answer.body));
    let sample_names = |families: &[openmetrics::Family]| {
        families.iter().flat_map(|f| &f.samples).map(|s| s.name.clone()).collect::<std::collections::BTreeSet<_>>()
    };
    for name in ["strata_produce_requests_total", "strata_group_commit_fsync_seconds_count", "strata_rocksdb_sst_bytes"]
    {
        assert!(sample_names(&families).contains(name), "{name} missing:\n{}", answer.body);
    }
    let commit = families.iter().find(|f| f.name == "strata_group_commit_fsync_seconds").expect("fsync histogram");
    assert_eq!((commit.kind.as_str(), commit.unit.as_deref()), ("histogram", Some("seconds")));

    let plain = http_request(address, "GET", "/metrics", "text/plain").await;
    let content_type = plain.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let plain_names: std::collections::BTreeSet<String> = plain
        .body
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| line.split(['{', ' ']).next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(plain_names, sample_names(&families), "both formats expose the same samples");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_never_stop_the_metrics_endpoint() {
    let cluster = Cluster::start_with_metrics(1).await;
    let address = cluster.node(1).metrics_address.clone().expect("metrics on");

    let (status, body) = http_get(&address, "/nope").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found", "{body}");
    let post = http_request(&address, "POST", "/metrics", "*/*").await;
    assert_eq!(post.status_line, "HTTP/1.1 405 Method Not Allowed");
    assert_eq!(post.headers.get("allow").and_then(|v| v.to_str().ok()), Some("GET, HEAD"));
    let head = http_request(&address, "HEAD", "/metrics", "*/*").await;
    assert_eq!((head.status_line.as_str(), head.body.as_str()), ("HTTP/1.1 200 OK", ""));

    // Garbage, a request line cut short, and a head over the 8 KiB bound:
    // each gets an error answer or a closed connection, never a crash.
    let oversized = format!("GET /metrics HTTP/1.1\r\nX-Padding: {}\r\n\r\n", "a".repeat(16 * 1024));
    for request in [&b"\x00\xffnot http at all\r\n\r\n"[..], b"GET\r\n\r\n", oversized.as_bytes()] {
        let answer = raw_http_exchange(&address, request).await;
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 4"), "{answer}");
    }
    let answer = raw_http_exchange(&address, oversized.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // A bare HTTP/1.1 GET without `Connection: close`, read until the
    // connection closes, as the benchmark suite scrapes: one answer, then
    // the node closes, in the Prometheus text format.
    let bare = format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\n\r\n");
    let answer = raw_http_exchange(&address, bare.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    let head = answer.split("\r\n\r\n").next().unwrap_or_default().to_lowercase();
    assert!(head.contains("\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8"), "{answer}");
    assert!(head.contains("\r\nconnection: close"), "the node says it closes:\n{answer}");
    assert!(answer.contains("\r\n\r\n# HELP ") && !answer.contains("# EOF"), "{answer}");
    // A client that connects and says nothing is cut off by the header
    // deadline; the endpoint serves others meanwhile.
    let silent = tokio::net::TcpStream::connect(&address).await.expect("connect");
    let (status, body) = http_get(&address, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("# TYPE strata_partitions_hosted gauge"), "{body}");
    drop(silent);
    assert_openmetrics_scrape(&address).await;
    let mut cluster = cluster;
    cluster.stop(1);
}
