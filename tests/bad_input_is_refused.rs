//! Bad input gets a clear, typed error, changes nothing, and the node keeps
//! serving: oversized records, unknown topics and partitions, invalid topic
//! names, offsets out of range, corrupt batches, attribute bits Strata does
//! not implement, idempotent batches with acks=none, malformed requests.

use std::time::Duration;

use strata_cluster_tests::{create_topic, produce, Cluster};
use strata_proto::v1 as pb;

fn batch(value: &[u8]) -> bytes::Bytes {
    strata_record::encode_batch(
        &[strata_record::Record { value: Some(bytes::Bytes::copy_from_slice(value)), ..Default::default() }],
        strata_record::ProducerFields::default(),
    )
    .unwrap()
}

/// `batch` with its attributes' low byte set to `bits` and the CRC-32C
/// (which covers the attributes) recomputed, so only the bits are wrong.
fn with_attributes(batch: bytes::Bytes, bits: u8) -> bytes::Bytes {
    const CRC_AT: usize = 17;
    const ATTRIBUTES_AT: usize = 21;
    let mut raw = batch.to_vec();
    raw[ATTRIBUTES_AT + 1] |= bits;
    let crc = crc32c::crc32c(&raw[ATTRIBUTES_AT..]);
    raw[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    raw.into()
}

fn produce_request(topic: &str, partition: u32, batch: bytes::Bytes) -> pb::ProduceRequest {
    pb::ProduceRequest {
        topic: topic.into(),
        partition,
        batch,
        acks: pb::Acks::All as i32,
        timeout_ms: 5000,
        ..Default::default()
    }
}

async fn latest(api: &mut strata_proto::v1::strata_client::StrataClient<tonic::transport::Channel>) -> u64 {
    let request = pb::ListOffsetsRequest {
        topic: "t".into(),
        partition: 0,
        spec: pb::OffsetSpec::Latest as i32,
        timestamp_ms: 0,
        with_stats: false,
    };
    let answer = api.list_offsets(request).await.unwrap().into_inner();
    assert!(answer.error.is_none(), "{:?}", answer.error);
    answer.offset
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_input_gets_its_error_and_changes_nothing() {
    let cluster = Cluster::start(3).await;
    let leader = create_topic(&cluster, 1, "t", 1, 3, &[]).await[0];
    produce(&cluster, "t", 0, &[(None, "good")], Duration::from_secs(30)).await.unwrap();
    let mut api = cluster.api(leader).await;
    let before = latest(&mut api).await;
    assert_eq!(before, 1);

    let expect = |answer: pb::ProduceResponse, name: &str| {
        let error = answer.error.unwrap_or_else(|| panic!("expected {name}, got success"));
        assert_eq!(error.name, name, "{error:?}");
        assert_eq!(strata_core::ErrorCode::from_code(error.code).map(|c| c.name()), Some(name));
        assert!(!error.message.is_empty());
    };

    // A record over the size limit.
    let big = vec![b'x'; strata_core::limits::MAX_BATCH_BYTES + 10];
    let mut raw = batch(b"small").to_vec();
    raw.extend_from_slice(&big);
    let answer = api.produce(produce_request("t", 0, raw.into())).await.unwrap().into_inner();
    expect(answer, "RECORD_TOO_LARGE");
    // The client-side encoder refuses it too.
    assert!(strata_record::encode_batch(
        &[strata_record::Record { value: Some(big.into()), ..Default::default() }],
        strata_record::ProducerFields::default()
    )
    .is_err());

    // Unknown topic and partition.
    expect(api.produce(produce_request("nope", 0, batch(b"v"))).await.unwrap().into_inner(), "UNKNOWN_TOPIC");
    expect(api.produce(produce_request("t", 7, batch(b"v"))).await.unwrap().into_inner(), "UNKNOWN_PARTITION");

    // A corrupt batch: one flipped bit in the payload breaks the CRC.
    let mut corrupt = batch(b"payload").to_vec();
    let last = corrupt.len() - 2;
    corrupt[last] ^= 0x01;
    expect(api.produce(produce_request("t", 0, corrupt.into())).await.unwrap().into_inner(), "CORRUPT_BATCH");
    // Not a batch at all.
    expect(
        api.produce(produce_request("t", 0, bytes::Bytes::from_static(b"garbage"))).await.unwrap().into_inner(),
        "CORRUPT_BATCH",
    );

    // Attribute bits producers may not send: LogAppendTime, control. Stored
    // as sent, Kafka decoders would read other records (control batches
    // hidden) or other timestamps than Strata stored.
    for bits in [0x08u8, 0x20] {
        let answer = api.produce(produce_request("t", 0, with_attributes(batch(b"v"), bits))).await.unwrap();
        let answer = answer.into_inner();
        let message = answer.error.as_ref().map(|e| e.message.clone()).unwrap_or_default();
        expect(answer, "UNSUPPORTED_FEATURE");
        assert!(message.contains(&format!("{bits:#04x}")), "{message}");
    }
    // A transactional batch (0x10) without a transactional producer.
    let answer = api.produce(produce_request("t", 0, with_attributes(batch(b"v"), 0x10))).await.unwrap();
    let answer = answer.into_inner();
    let message = answer.error.as_ref().map(|e| e.message.clone()).unwrap_or_default();
    expect(answer, "INVALID_REQUEST");
    assert!(message.contains("transactional id"), "{message}");

    // An idempotent batch with acks=none: the answer would come before the
    // producer state could say whether the batch is a duplicate.
    let idempotent = strata_record::encode_batch(
        &[strata_record::Record { value: Some(bytes::Bytes::from_static(b"v")), ..Default::default() }],
        strata_record::ProducerFields { producer_id: 1, producer_epoch: 0, base_sequence: 0 },
    )
    .unwrap();
    let request = pb::ProduceRequest { acks: pb::Acks::None as i32, ..produce_request("t", 0, idempotent) };
    let answer = api.produce(request).await.unwrap().into_inner();
    let message = answer.error.as_ref().map(|e| e.message.clone()).unwrap_or_default();
    expect(answer, "INVALID_REQUEST");
    assert!(message.contains("acks=all"), "{message}");

    // Invalid topic names and configs.
    for (name, configs, code) in [
        ("bad/name", vec![], "INVALID_TOPIC_NAME"),
        ("", vec![], "INVALID_TOPIC_NAME"),
        ("fine", vec![("retention.ms".to_string(), "soon".to_string())], "INVALID_CONFIG"),
        ("fine", vec![("no.such.key".to_string(), "1".to_string())], "INVALID_CONFIG"),
    ] {
        let answer = api
            .create_topic(pb::CreateTopicRequest {
                name: name.into(),
                partitions: 1,
                replication_factor: 1,
                configs: configs.into_iter().collect(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.error.map(|e| e.name), Some(code.to_string()), "create {name:?}");
    }
    let answer = api
        .create_topic(pb::CreateTopicRequest {
            name: "toomany".into(),
            partitions: 1,
            replication_factor: 4,
            configs: Default::default(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.error.map(|e| e.name).as_deref(), Some("INVALID_REPLICATION_FACTOR"));

    // Offsets out of range carry the valid range.
    let answer = api
        .fetch(pb::FetchRequest {
            topic: "t".into(),
            partition: 0,
            offset: 99,
            max_bytes: 0,
            max_wait_ms: 0,
            replica_read: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let error = answer.error.expect("out of range");
    assert_eq!(error.name, "OFFSET_OUT_OF_RANGE");
    assert_eq!((error.log_start_offset, error.high_watermark), (0, 1));

    // A malformed request: an unknown enum value.
    let answer = api
        .list_offsets(pb::ListOffsetsRequest {
            topic: "t".into(),
            partition: 0,
            spec: 42,
            timestamp_ms: 0,
            with_stats: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.error.map(|e| e.name).as_deref(), Some("INVALID_REQUEST"));

    // A malformed message on the wire: bytes that are not a protobuf.
    let status = raw_grpc_call(&cluster.node(leader).address, "/strata.v1.Strata/Produce", &[0xff; 32]).await;
    assert_ne!(status, "0", "garbage must not be accepted");

    // Nothing changed, and the node still serves.
    assert_eq!(latest(&mut api).await, before);
    produce(&cluster, "t", 0, &[(None, "still-works")], Duration::from_secs(30)).await.unwrap();
    assert_eq!(latest(&mut api).await, before + 1);
    let topics = api.list_topics(pb::ListTopicsRequest {}).await.unwrap().into_inner().topics;
    assert_eq!(topics.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), vec!["t"]);
}

/// Sends `body` as one gRPC message to `path` over a raw HTTP/2 client and
/// returns the grpc-status it answers.
async fn raw_grpc_call(address: &str, path: &str, body: &[u8]) -> String {
    use tonic::codegen::http;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{address}")).unwrap().connect().await.unwrap();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
    framed.extend_from_slice(body);
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{address}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(http_body_full(framed)))
        .unwrap();
    let mut service = channel;
    use tonic::codegen::Service;
    futures_ready(&mut service).await;
    let response = service.call(request).await.expect("http response");
    let headers = response.headers().clone();
    if let Some(status) = headers.get("grpc-status") {
        return status.to_str().unwrap().to_string();
    }
    use http_body_util::BodyExt;
    let collected = response.into_body().collect().await.expect("body");
    collected.trailers().and_then(|t| t.get("grpc-status")).map(|s| s.to_str().unwrap().to_string()).unwrap_or_default()
}

fn http_body_full(bytes: Vec<u8>) -> http_body_util::Full<bytes::Bytes> {
    http_body_util::Full::new(bytes::Bytes::from(bytes))
}

async fn futures_ready(service: &mut tonic::transport::Channel) {
    use tonic::codegen::Service;
    std::future::poll_fn(|cx| service.poll_ready(cx)).await.expect("channel ready");
}
