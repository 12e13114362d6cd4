//! What one client can make a node hold or do is bounded, each bound
//! answers a typed error, and the node keeps serving the others:
//! - an acks=none produce keeps its produce budget until its write ends;
//! - concurrent fetches share a node-wide byte budget: an answer is
//!   shortened to the room left, or BUSY with a retry-after hint;
//! - a ListOffsets by timestamp reads a bounded number of batches and
//!   answers LIMIT_REACHED past it.

use std::time::Duration;

use strata_cluster_tests::{create_topic, eventually, now_ms, Cluster};
use strata_proto::v1 as pb;
use strata_proto::v1::strata_client::StrataClient;
use strata_record::{encode_batch, ProducerFields, Record};
use tonic::transport::Channel;

const MIB: usize = 1024 * 1024;
const FETCH_BOUND: usize = 2 * MIB;
const LOOKUP_BOUND: usize = 10;

fn batch(size: usize, timestamp_ms: i64) -> bytes::Bytes {
    let record = Record { value: Some(vec![b'x'; size].into()), timestamp_ms, ..Default::default() };
    encode_batch(&[record], ProducerFields::default()).unwrap()
}

fn produce_request(topic: &str, batch: bytes::Bytes, acks: pb::Acks) -> pb::ProduceRequest {
    pb::ProduceRequest {
        topic: topic.into(),
        partition: 0,
        batch,
        acks: acks as i32,
        timeout_ms: 10_000,
        ..Default::default()
    }
}

async fn produce_ok(api: &mut StrataClient<Channel>, topic: &str, batch: bytes::Bytes) -> u64 {
    let answer = api.produce(produce_request(topic, batch, pb::Acks::All)).await.unwrap().into_inner();
    assert!(answer.error.is_none(), "{:?}", answer.error);
    answer.base_offset
}

async fn offset_for(
    api: &mut StrataClient<Channel>,
    topic: &str,
    spec: pb::OffsetSpec,
    timestamp_ms: i64,
) -> pb::ListOffsetsResponse {
    let request = pb::ListOffsetsRequest {
        topic: topic.into(),
        partition: 0,
        spec: spec as i32,
        timestamp_ms,
        with_stats: false,
    };
    api.list_offsets(request).await.unwrap().into_inner()
}

fn fetch_request(topic: &str, offset: u64, max_bytes: u32) -> pb::FetchRequest {
    pb::FetchRequest {
        topic: topic.into(),
        partition: 0,
        offset,
        max_bytes,
        max_wait_ms: 0,
        replica_read: false,
        ..Default::default()
    }
}

fn assert_busy(error: &pb::Error) {
    assert_eq!(error.name, "BUSY", "{error:?}");
    assert_eq!(error.retry, pb::RetryClass::BackOff as i32);
    assert!(error.retry_after_ms > 0, "BUSY carries a retry-after hint");
    assert!(error.message.contains("bound"), "{}", error.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bound_holds_answers_its_error_and_the_node_keeps_serving() {
    let cluster = Cluster::start_with_config(
        1,
        &format!(
            "max_produce_bytes_in_flight = \"2MiB\"\nmax_produce_bytes_in_flight_per_connection = \"1MiB\"\n\
             max_fetch_bytes_in_flight = \"{FETCH_BOUND}\"\nmax_timestamp_lookup_batches = {LOOKUP_BOUND}\n"
        ),
    )
    .await;
    create_topic(&cluster, 1, "big", 1, 1, &[]).await;
    create_topic(&cluster, 1, "times", 1, 1, &[]).await;
    create_topic(&cluster, 1, "quiet", 1, 1, &[]).await;
    let mut api = cluster.api(1).await;
    produce_ok(&mut api, "quiet", batch(10, now_ms())).await;

    // --- acks=none keeps its produce budget until its write ends. Two
    // 700 KB batches one after the other on one connection (bound 1 MiB):
    // the second arrives after the first was answered, so it finds the
    // first's bytes still held only if they stay held until the write ends.
    let sent = std::sync::atomic::AtomicU64::new(0);
    let busy = eventually(Duration::from_secs(30), "an acks=none produce answered BUSY", || async {
        let mut one_connection = cluster.api(1).await;
        for _ in 0..2 {
            let request = produce_request("big", batch(700_000, now_ms()), pb::Acks::None);
            let answer = one_connection.produce(request).await.unwrap().into_inner();
            match answer.error {
                None => {
                    sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Some(error) => return Some(error),
            }
        }
        None
    })
    .await;
    assert_busy(&busy);
    // Every accepted acks=none batch is stored; the refused ones are not.
    let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    eventually(Duration::from_secs(30), "every accepted acks=none batch stored", || async {
        let mut api = cluster.api(1).await;
        let latest = offset_for(&mut api, "big", pb::OffsetSpec::Latest, 0).await;
        (latest.offset == sent).then_some(())
    })
    .await;
    assert!(sent >= 1);

    // --- Fetch budget. Fill "big" to more than the bound in 900 KB batches.
    while (offset_for(&mut api, "big", pb::OffsetSpec::Latest, 0).await.offset as usize) < sent as usize + 6 {
        produce_ok(&mut api, "big", batch(900_000, now_ms())).await;
    }
    // One fetch alone gets no more than the bound, although it asks for 16 MiB.
    let answer = api.fetch(fetch_request("big", 0, 16 * MIB as u32)).await.unwrap().into_inner();
    assert!(answer.error.is_none(), "{:?}", answer.error);
    assert!(!answer.records.is_empty());
    assert!(answer.records.len() <= FETCH_BOUND, "an answer of {} bytes", answer.records.len());
    // Many at once: each answer fits the bound, and some are BUSY.
    let busy = eventually(Duration::from_secs(30), "a fetch answered BUSY", || async {
        let mut calls = Vec::new();
        for _ in 0..16 {
            let mut api = cluster.api(1).await;
            calls.push(tokio::spawn(async move {
                api.fetch(fetch_request("big", 0, 16 * MIB as u32)).await.unwrap().into_inner()
            }));
        }
        let mut busy = None;
        for call in calls {
            let answer = call.await.unwrap();
            match answer.error {
                None => assert!(
                    !answer.records.is_empty() && answer.records.len() <= FETCH_BOUND,
                    "an answer of {} bytes",
                    answer.records.len()
                ),
                Some(error) => {
                    assert_busy(&error);
                    busy = Some(error);
                }
            }
        }
        busy
    })
    .await;
    assert!(busy.message.contains("max_fetch_bytes_in_flight"), "{}", busy.message);

    // --- Timestamp lookups read at most LOOKUP_BOUND batches.
    let t0 = now_ms();
    for i in 0..(LOOKUP_BOUND as i64 + 5) {
        produce_ok(&mut api, "times", batch(10, t0 + i)).await;
    }
    let found = offset_for(&mut api, "times", pb::OffsetSpec::Timestamp, t0 + 3).await;
    assert!(found.error.is_none(), "{:?}", found.error);
    assert_eq!(found.offset, 3);
    let first = offset_for(&mut api, "times", pb::OffsetSpec::Timestamp, 0).await;
    assert_eq!((first.error, first.offset), (None, 0));
    // Past every record: the whole partition would be read; refused.
    for wanted in [i64::MAX, t0 + LOOKUP_BOUND as i64 + 2] {
        let answer = offset_for(&mut api, "times", pb::OffsetSpec::Timestamp, wanted).await;
        let error = answer.error.unwrap_or_else(|| panic!("lookup of {wanted} answered {}", answer.offset));
        assert_eq!(error.name, "LIMIT_REACHED", "{error:?}");
        assert_eq!(strata_core::ErrorCode::from_code(error.code), Some(strata_core::ErrorCode::LimitReached));
        assert!(error.message.contains("LATEST"), "{}", error.message);
    }

    // --- The node still serves everyone.
    produce_ok(&mut api, "quiet", batch(10, now_ms())).await;
    let answer = api.fetch(fetch_request("quiet", 0, 0)).await.unwrap().into_inner();
    assert!(answer.error.is_none(), "{:?}", answer.error);
    assert_eq!(answer.high_watermark, 2);
    let answer = api.fetch(fetch_request("big", 0, 16 * MIB as u32)).await.unwrap().into_inner();
    assert!(answer.error.is_none(), "{:?}", answer.error);
}
