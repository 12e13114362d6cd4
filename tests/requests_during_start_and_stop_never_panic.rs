//! Requests that reach a node while it starts or stops get an answer or a
//! transport error, never a panic in a handler. The jepsen harness found a
//! handler that panicked when a request came in before the metadata group
//! was registered; the same lookup could fail while the node stopped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use strata_cluster_tests::{create_topic, eventually, Cluster};
use strata_proto::v1 as pb;

/// Concurrent callers of every handler that reads the metadata group.
const CALLERS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_during_start_and_stop_never_panic() {
    let mut cluster = Cluster::start(3).await;
    // Partition groups make the stop take longer, which widens the window.
    create_topic(&cluster, 1, "busy", 6, 3, &[]).await;

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let mut callers = Vec::new();
    for caller in 0..CALLERS {
        let api = cluster.api(1).await;
        let stop = stop.clone();
        let answered = answered.clone();
        callers.push(tokio::spawn(async move {
            let mut api = api;
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                // Connection errors while the node is down are expected;
                // only a panic (seen in the log) fails the test.
                let ok = match (round + caller as u64) % 4 {
                    0 => api.metadata(pb::MetadataRequest { topics: vec![] }).await.is_ok(),
                    1 => api.cluster_status(pb::ClusterStatusRequest {}).await.is_ok(),
                    2 => api.list_topics(pb::ListTopicsRequest {}).await.is_ok(),
                    _ => api.describe_topic(pb::DescribeTopicRequest { name: "busy".into() }).await.is_ok(),
                };
                if ok {
                    answered.fetch_add(1, Ordering::Relaxed);
                } else {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }

    for _ in 0..3 {
        let before = answered.load(Ordering::Relaxed);
        eventually(Duration::from_secs(30), "answers from node 1", || async {
            (answered.load(Ordering::Relaxed) > before + 100).then_some(())
        })
        .await;
        cluster.stop(1);
        cluster.start_node(1);
    }
    let before = answered.load(Ordering::Relaxed);
    eventually(Duration::from_secs(30), "answers from the restarted node 1", || async {
        (answered.load(Ordering::Relaxed) > before + 100).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.expect("caller task");
    }

    let log = std::fs::read_to_string(&cluster.node(1).log_path).expect("node 1 log");
    assert!(!log.contains("panicked"), "node 1 panicked while starting or stopping:\n{log}");
}

/// A node told to stop while it is still starting stops cleanly (exit 0,
/// its store closed), as a service manager's stop during start expects.
/// Node 1 starts alone, so it is still probing its absent peers (for
/// FORMATION_PROBE_WINDOW) when the SIGTERM comes; it installs its signal
/// handlers before it writes its first log line, which the test waits for.
/// Before the handlers were installed first thing, such a SIGTERM killed
/// the node outright.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_while_starting_exits_cleanly() {
    let mut cluster = Cluster::planned(3);
    cluster.start_node(1);
    let log = cluster.node(1).log_path.clone();
    eventually(Duration::from_secs(30), "node 1's first log line", || async {
        std::fs::read_to_string(&log).ok().filter(|text| !text.is_empty()).map(|_| ())
    })
    .await;
    cluster.stop(1);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("node stopped"), "node 1 did not stop cleanly:\n{text}");
}
