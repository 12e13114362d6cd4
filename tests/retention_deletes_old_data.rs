//! Retention by bytes and by time deletes the oldest batches, advances the
//! log start offset, and fetching below it answers OFFSET_OUT_OF_RANGE with
//! the valid range.

use std::time::Duration;

use strata_cluster_tests::{create_topic, eventually, partition_offsets, produce, produce_at, Cluster};
use strata_proto::v1 as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_bytes_advances_the_log_start() {
    let cluster = Cluster::start(3).await;
    let leader = create_topic(&cluster, 1, "bounded", 1, 3, &[("retention.bytes", "4000")]).await[0];
    let value = "x".repeat(400);
    for _ in 0..40 {
        produce(&cluster, "bounded", 0, &[(None, &value)], Duration::from_secs(30)).await.unwrap();
    }
    let (log_start, high_watermark) = eventually(Duration::from_secs(30), "retention to trim the log", || async {
        partition_offsets(&cluster, "bounded", 0)
            .await
            .map(|(_, start, end)| (start, end))
            .filter(|(start, _)| *start > 0)
    })
    .await;
    assert_eq!(high_watermark, 40);
    // About 4000 bytes of ~470-byte batches stay: never more than the bound.
    let retained = high_watermark - log_start;
    assert!((1..=9).contains(&retained), "{retained} records retained");

    let mut api = cluster.api(leader).await;
    let answer = api
        .fetch(pb::FetchRequest {
            topic: "bounded".into(),
            partition: 0,
            offset: 0,
            max_bytes: 0,
            max_wait_ms: 0,
            replica_read: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let error = answer.error.expect("fetch below the log start fails");
    assert_eq!(error.name, "OFFSET_OUT_OF_RANGE");
    assert!(error.log_start_offset >= log_start && error.high_watermark == 40, "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_time_deletes_expired_batches() {
    let cluster = Cluster::start(3).await;
    create_topic(&cluster, 1, "expiring", 1, 3, &[("retention.ms", "60000")]).await;
    // Old records, stamped two hours ago, then a fresh one.
    let two_hours_ago = strata_cluster_tests::now_ms() - 2 * 3600 * 1000;
    for _ in 0..5 {
        produce_at(&cluster, "expiring", 0, &[(None, "old")], two_hours_ago, Duration::from_secs(30)).await.unwrap();
    }
    produce(&cluster, "expiring", 0, &[(None, "fresh")], Duration::from_secs(30)).await.unwrap();
    let (log_start, high_watermark) =
        eventually(Duration::from_secs(30), "retention to drop expired batches", || async {
            partition_offsets(&cluster, "expiring", 0)
                .await
                .map(|(_, start, end)| (start, end))
                .filter(|(start, _)| *start > 0)
        })
        .await;
    assert_eq!((log_start, high_watermark), (5, 6), "expired batches gone, the fresh one kept");
}
