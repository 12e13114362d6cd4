//! The client against in-process fake nodes that speak the real wire: a
//! shared fake cluster decides who leads, what the metadata claims, and which
//! errors the leader answers, so routing, retries and ordering are checked
//! end to end without a real server.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use strata_client::partitioner::partition_for_key;
use strata_client::{
    Acks, Client, ClientConfig, ClientError, ConsumedRecord, Consumer, ErrorCode, GroupHeartbeat, OffsetSpec, Producer,
    ProducerConfig, Record, RetryClass, StartOffset,
};
use strata_proto::v1 as proto;
use strata_proto::v1::strata_server::{Strata, StrataServer};
use strata_record::{decode_records_from, read_header, set_base_offset};
use tonic::{Request, Response, Status};

const TOPIC: &str = "t";

#[derive(Default)]
struct FakeCluster {
    /// Node id to address.
    nodes: BTreeMap<u64, String>,
    partitions: u32,
    /// The node that really leads every partition.
    leader: u64,
    /// The leader the metadata claims (0: unknown).
    advertised_leader: u64,
    /// Whether non-leaders name the leader in NOT_LEADER.
    hint_leader: bool,
    /// Stamped batches per partition.
    logs: BTreeMap<u32, Vec<Bytes>>,
    next_offset: BTreeMap<u32, u64>,
    /// Errors the leader answers to the next produce requests, in order.
    produce_errors: VecDeque<ErrorCode>,
    produce_requests: u64,
    /// How long every group heartbeat takes before it is refused with
    /// UNRELEASED_INSTANCE_ID (a back-off answer).
    heartbeat_refusal_delay: Duration,
}

fn wire_error(code: ErrorCode, message: &str) -> proto::Error {
    let retry = match code.retry_class() {
        RetryClass::Retry => proto::RetryClass::Retry,
        RetryClass::RefreshMetadata => proto::RetryClass::RefreshMetadata,
        RetryClass::BackOff => proto::RetryClass::BackOff,
        RetryClass::Fatal => proto::RetryClass::Fatal,
    };
    proto::Error {
        code: code.code(),
        name: code.name().into(),
        message: message.into(),
        retry: retry as i32,
        ..Default::default()
    }
}

impl FakeCluster {
    fn not_leader(&self) -> proto::Error {
        let mut error = wire_error(ErrorCode::NotLeader, "not the leader");
        if self.hint_leader {
            error.leader_id = self.leader;
            error.leader_address = self.nodes[&self.leader].clone();
        }
        error
    }

    fn high_watermark(&self, partition: u32) -> u64 {
        self.next_offset.get(&partition).copied().unwrap_or(0)
    }

    /// The values of a partition's log, in offset order.
    fn values(&self, partition: u32) -> Vec<String> {
        let bytes: Vec<u8> = self.logs.get(&partition).into_iter().flatten().flat_map(|b| b.to_vec()).collect();
        decode_records_from(&bytes, 0)
            .unwrap()
            .into_iter()
            .map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap())
            .collect()
    }
}

struct FakeNode {
    id: u64,
    cluster: Arc<Mutex<FakeCluster>>,
}

#[tonic::async_trait]
impl Strata for FakeNode {
    async fn produce(
        &self,
        request: Request<proto::ProduceRequest>,
    ) -> Result<Response<proto::ProduceResponse>, Status> {
        let request = request.into_inner();
        let mut cluster = self.cluster.lock().unwrap();
        cluster.produce_requests += 1;
        let answer = |error| Ok(Response::new(proto::ProduceResponse { error: Some(error), ..Default::default() }));
        if self.id != cluster.leader {
            return answer(cluster.not_leader());
        }
        if let Some(code) = cluster.produce_errors.pop_front() {
            return answer(wire_error(code, "injected"));
        }
        let header = read_header(&request.batch).unwrap();
        let base_offset = cluster.high_watermark(request.partition);
        let mut batch = request.batch.to_vec();
        set_base_offset(&mut batch, base_offset);
        cluster.next_offset.insert(request.partition, base_offset + header.record_count as u64);
        cluster.logs.entry(request.partition).or_default().push(Bytes::from(batch));
        Ok(Response::new(proto::ProduceResponse {
            error: None,
            base_offset,
            record_count: header.record_count,
            ..Default::default()
        }))
    }

    async fn fetch(&self, request: Request<proto::FetchRequest>) -> Result<Response<proto::FetchResponse>, Status> {
        let request = request.into_inner();
        let answer = {
            let cluster = self.cluster.lock().unwrap();
            if self.id != cluster.leader {
                proto::FetchResponse { error: Some(cluster.not_leader()), ..Default::default() }
            } else {
                let mut records = Vec::new();
                for batch in cluster.logs.get(&request.partition).into_iter().flatten() {
                    if read_header(batch).unwrap().next_offset() > request.offset {
                        records.extend_from_slice(batch);
                    }
                }
                proto::FetchResponse {
                    error: None,
                    records: Bytes::from(records),
                    high_watermark: cluster.high_watermark(request.partition),
                    log_start_offset: 0,
                    last_stable_offset: cluster.high_watermark(request.partition),
                    next_offset: 0,
                }
            }
        };
        if answer.error.is_none() && answer.records.is_empty() {
            // A short stand-in for the long poll.
            tokio::time::sleep(Duration::from_millis(request.max_wait_ms.min(20) as u64)).await;
        }
        Ok(Response::new(answer))
    }

    async fn metadata(&self, _: Request<proto::MetadataRequest>) -> Result<Response<proto::MetadataResponse>, Status> {
        let cluster = self.cluster.lock().unwrap();
        let replicas: Vec<u64> = cluster.nodes.keys().copied().collect();
        Ok(Response::new(proto::MetadataResponse {
            error: None,
            nodes: cluster.nodes.iter().map(|(&id, address)| proto::Node { id, address: address.clone() }).collect(),
            topics: vec![proto::TopicMetadata {
                name: TOPIC.into(),
                partitions: (0..cluster.partitions)
                    .map(|partition| proto::PartitionMetadata {
                        partition,
                        leader: cluster.advertised_leader,
                        replicas: replicas.clone(),
                        group_id: partition as u64 + 1,
                    })
                    .collect(),
                configs: Default::default(),
            }],
            metadata_leader: 1,
        }))
    }

    async fn list_offsets(
        &self,
        request: Request<proto::ListOffsetsRequest>,
    ) -> Result<Response<proto::ListOffsetsResponse>, Status> {
        let request = request.into_inner();
        let cluster = self.cluster.lock().unwrap();
        if self.id != cluster.leader {
            return Ok(Response::new(proto::ListOffsetsResponse {
                error: Some(cluster.not_leader()),
                ..Default::default()
            }));
        }
        let high_watermark = cluster.high_watermark(request.partition);
        let offset = if request.spec == proto::OffsetSpec::Earliest as i32 { 0 } else { high_watermark };
        Ok(Response::new(proto::ListOffsetsResponse {
            error: None,
            offset,
            high_watermark,
            log_start_offset: 0,
            ..Default::default()
        }))
    }

    async fn create_topic(
        &self,
        _: Request<proto::CreateTopicRequest>,
    ) -> Result<Response<proto::CreateTopicResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn delete_topic(
        &self,
        _: Request<proto::DeleteTopicRequest>,
    ) -> Result<Response<proto::DeleteTopicResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn list_topics(
        &self,
        _: Request<proto::ListTopicsRequest>,
    ) -> Result<Response<proto::ListTopicsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn describe_topic(
        &self,
        _: Request<proto::DescribeTopicRequest>,
    ) -> Result<Response<proto::DescribeTopicResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn cluster_status(
        &self,
        _: Request<proto::ClusterStatusRequest>,
    ) -> Result<Response<proto::ClusterStatusResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn init_producer_id(
        &self,
        _: Request<proto::InitProducerIdRequest>,
    ) -> Result<Response<proto::InitProducerIdResponse>, Status> {
        Ok(Response::new(proto::InitProducerIdResponse { error: None, producer_id: 42, producer_epoch: 0 }))
    }

    async fn ping(&self, _: Request<proto::PingRequest>) -> Result<Response<proto::PingResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn consumer_group_heartbeat(
        &self,
        _: Request<proto::ConsumerGroupHeartbeatRequest>,
    ) -> Result<Response<proto::ConsumerGroupHeartbeatResponse>, Status> {
        let delay = self.cluster.lock().unwrap().heartbeat_refusal_delay;
        tokio::time::sleep(delay).await;
        let error = wire_error(ErrorCode::UnreleasedInstanceId, "instance pod-a is held by a live member");
        Ok(Response::new(proto::ConsumerGroupHeartbeatResponse { error: Some(error), ..Default::default() }))
    }

    async fn offset_commit(
        &self,
        _: Request<proto::OffsetCommitRequest>,
    ) -> Result<Response<proto::OffsetCommitResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn offset_fetch(
        &self,
        _: Request<proto::OffsetFetchRequest>,
    ) -> Result<Response<proto::OffsetFetchResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn list_groups(
        &self,
        _: Request<proto::ListGroupsRequest>,
    ) -> Result<Response<proto::ListGroupsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn describe_group(
        &self,
        _: Request<proto::DescribeGroupRequest>,
    ) -> Result<Response<proto::DescribeGroupResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn delete_group(
        &self,
        _: Request<proto::DeleteGroupRequest>,
    ) -> Result<Response<proto::DeleteGroupResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn reset_offsets(
        &self,
        _: Request<proto::ResetOffsetsRequest>,
    ) -> Result<Response<proto::ResetOffsetsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn add_offsets_to_txn(
        &self,
        _: Request<proto::AddOffsetsToTxnRequest>,
    ) -> Result<Response<proto::AddOffsetsToTxnResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn end_txn(&self, _: Request<proto::EndTxnRequest>) -> Result<Response<proto::EndTxnResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn add_partitions_to_txn(
        &self,
        _: Request<proto::AddPartitionsToTxnRequest>,
    ) -> Result<Response<proto::AddPartitionsToTxnResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn write_txn_marker(
        &self,
        _: Request<proto::WriteTxnMarkerRequest>,
    ) -> Result<Response<proto::WriteTxnMarkerResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn list_transactions(
        &self,
        _: Request<proto::ListTransactionsRequest>,
    ) -> Result<Response<proto::ListTransactionsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn describe_transaction(
        &self,
        _: Request<proto::DescribeTransactionRequest>,
    ) -> Result<Response<proto::DescribeTransactionResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn abort_transaction(
        &self,
        _: Request<proto::AbortTransactionRequest>,
    ) -> Result<Response<proto::AbortTransactionResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn register_node(
        &self,
        _: Request<proto::RegisterNodeRequest>,
    ) -> Result<Response<proto::RegisterNodeResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn reassign_partition(
        &self,
        _: Request<proto::ReassignPartitionRequest>,
    ) -> Result<Response<proto::ReassignPartitionResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn reconfigure_partition(
        &self,
        _: Request<proto::ReconfigurePartitionRequest>,
    ) -> Result<Response<proto::ReconfigurePartitionResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn rebalance(
        &self,
        _: Request<proto::RebalanceRequest>,
    ) -> Result<Response<proto::RebalanceResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn drain_node(
        &self,
        _: Request<proto::DrainNodeRequest>,
    ) -> Result<Response<proto::DrainNodeResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn join(&self, _: Request<proto::JoinRequest>) -> Result<Response<proto::JoinResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn add_voter(&self, _: Request<proto::AddVoterRequest>) -> Result<Response<proto::AddVoterResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn remove_node(
        &self,
        _: Request<proto::RemoveNodeRequest>,
    ) -> Result<Response<proto::RemoveNodeResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn alter_topic(
        &self,
        _: Request<proto::AlterTopicRequest>,
    ) -> Result<Response<proto::AlterTopicResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// Starts `nodes` fake nodes sharing one cluster state; returns it and the addresses.
async fn start_cluster(
    nodes: u64,
    partitions: u32,
    leader: u64,
    advertised_leader: u64,
    hint_leader: bool,
) -> (Arc<Mutex<FakeCluster>>, Vec<String>) {
    let cluster =
        Arc::new(Mutex::new(FakeCluster { partitions, leader, advertised_leader, hint_leader, ..Default::default() }));
    let mut addresses = Vec::new();
    for id in 1..=nodes {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let incoming = futures::stream::unfold(listener, |listener| async move {
            let accepted = listener.accept().await.map(|(stream, _)| stream);
            Some((accepted, listener))
        });
        let node = FakeNode { id, cluster: cluster.clone() };
        tokio::spawn(
            tonic::transport::Server::builder().add_service(StrataServer::new(node)).serve_with_incoming(incoming),
        );
        cluster.lock().unwrap().nodes.insert(id, address.clone());
        addresses.push(address);
    }
    (cluster, addresses)
}

fn record(key: Option<&str>, value: &str) -> Record {
    Record {
        key: key.map(|k| Bytes::from(k.to_string())),
        value: Some(Bytes::from(value.to_string())),
        ..Default::default()
    }
}

fn fast_retries() -> ProducerConfig {
    ProducerConfig {
        linger: Duration::from_millis(1),
        retry_backoff: Duration::from_millis(5),
        retry_backoff_max: Duration::from_millis(20),
        ..Default::default()
    }
}

/// Polls until `count` records arrived or the deadline passed.
async fn consume(consumer: &mut Consumer, count: usize) -> Vec<ConsumedRecord> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut records = Vec::new();
    while records.len() < count && Instant::now() < deadline {
        records.extend(consumer.poll(Duration::from_millis(100)).await.unwrap());
    }
    records
}

#[tokio::test]
async fn producer_follows_not_leader_hints_and_keeps_key_order() {
    // The metadata names node 1, but node 2 leads; node 1 says so.
    let (cluster, addresses) = start_cluster(3, 3, 2, 1, true).await;
    let client = Client::connect(&addresses[..1]).unwrap();
    let producer = Producer::new(client.clone(), fast_retries()).unwrap();
    let mut deliveries = Vec::new();
    for i in 0..300 {
        let key = format!("k{}", i % 10);
        deliveries.push((key.clone(), i, producer.send(TOPIC, record(Some(&key), &i.to_string())).await.unwrap()));
    }
    let mut acked = Vec::new();
    for (key, i, delivery) in deliveries {
        let metadata = delivery.await.unwrap();
        assert_eq!(metadata.partition, partition_for_key(key.as_bytes(), 3), "keyed records go to hash(key) % 3");
        acked.push((metadata.partition, metadata.offset.unwrap(), key, i));
    }
    {
        let state = cluster.lock().unwrap();
        for (partition, offset, _, i) in &acked {
            assert_eq!(state.values(*partition)[*offset as usize], i.to_string(), "the acked offset holds the record");
        }
        for partition in 0..3 {
            // Per key, the log holds values in send order.
            let mut last_per_key: BTreeMap<String, i64> = BTreeMap::new();
            let keys_at: BTreeMap<u64, String> =
                acked.iter().filter(|a| a.0 == partition).map(|a| (a.1, a.2.clone())).collect();
            for (offset, value) in state.values(partition).iter().enumerate() {
                let value: i64 = value.parse().unwrap();
                let key = keys_at[&(offset as u64)].clone();
                let last = last_per_key.insert(key, value).unwrap_or(-1);
                assert!(value > last, "partition {partition}: {value} after {last}");
            }
        }
        assert_eq!(client.cached_metadata().partition(TOPIC, 0).unwrap().leader, Some(2), "the hint was learned");
    }

    // A consumer reads everything back, then follows a leader change.
    let mut consumer = Consumer::new(client.clone());
    for partition in 0..3 {
        assert_eq!(consumer.assign(TOPIC, partition, StartOffset::Earliest).await.unwrap(), 0);
    }
    let records = consume(&mut consumer, 300).await;
    assert_eq!(records.len(), 300);
    for partition in 0..3 {
        let offsets: Vec<u64> = records.iter().filter(|r| r.partition == partition).map(|r| r.offset).collect();
        assert_eq!(offsets, (0..offsets.len() as u64).collect::<Vec<_>>(), "dense, in order, once");
        assert_eq!(consumer.high_watermark(TOPIC, partition), Some(offsets.len() as u64));
        assert_eq!(consumer.position(TOPIC, partition), Some(offsets.len() as u64));
    }

    cluster.lock().unwrap().leader = 3;
    let late = producer.send_to(TOPIC, 1, record(None, "late")).await.unwrap().await.unwrap();
    let records = consume(&mut consumer, 1).await;
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].partition, records[0].offset), (1, late.offset.unwrap()));
    assert_eq!(records[0].value.as_deref(), Some(&b"late"[..]));
}

#[tokio::test]
async fn unknown_leader_is_found_by_probing_replicas() {
    // The metadata knows no leader and non-leaders give no hint: node 3 leads.
    let (cluster, addresses) = start_cluster(3, 1, 3, 0, false).await;
    let client = Client::connect(&addresses).unwrap();
    let producer = Producer::new(client.clone(), fast_retries()).unwrap();
    let metadata = producer.send(TOPIC, record(None, "x")).await.unwrap().await.unwrap();
    assert_eq!(metadata.offset, Some(0));
    let latest = client.list_offsets(TOPIC, 0, OffsetSpec::Latest).await.unwrap();
    assert_eq!((latest.offset, latest.high_watermark), (1, 1));
    assert_eq!(cluster.lock().unwrap().values(0), vec!["x"]);
}

#[tokio::test]
async fn retryable_errors_are_retried_without_reordering() {
    let (cluster, addresses) = start_cluster(1, 1, 1, 1, true).await;
    cluster.lock().unwrap().produce_errors =
        [ErrorCode::LeaderNotAvailable, ErrorCode::Busy, ErrorCode::Timeout, ErrorCode::NotLeader].into();
    let client = Client::connect(&addresses).unwrap();
    let config = ProducerConfig { max_in_flight: 1, max_batch_bytes: 200, ..fast_retries() };
    let producer = Producer::new(client, config).unwrap();
    let mut deliveries = Vec::new();
    for i in 0..50 {
        deliveries.push(producer.send(TOPIC, record(Some("same"), &i.to_string())).await.unwrap());
    }
    let mut offsets = Vec::new();
    for delivery in deliveries {
        offsets.push(delivery.await.unwrap().offset.unwrap());
    }
    assert_eq!(offsets, (0..50).collect::<Vec<u64>>(), "acknowledged in send order");
    let state = cluster.lock().unwrap();
    assert_eq!(state.values(0), (0..50).map(|i| i.to_string()).collect::<Vec<_>>());
    let batches = state.logs[&0].len() as u64;
    assert_eq!(state.produce_requests, batches + 4, "each injected error cost exactly one retry");
}

#[tokio::test]
async fn pipelined_batches_all_arrive_despite_errors() {
    let (cluster, addresses) = start_cluster(1, 2, 1, 1, true).await;
    cluster.lock().unwrap().produce_errors = [ErrorCode::LeaderNotAvailable; 6].into();
    let client = Client::connect(&addresses).unwrap();
    let producer = Producer::new(client, ProducerConfig { max_batch_bytes: 200, ..fast_retries() }).unwrap();
    let mut deliveries = Vec::new();
    for i in 0..200 {
        deliveries.push(producer.send(TOPIC, record(None, &i.to_string())).await.unwrap());
    }
    producer.flush().await;
    for delivery in deliveries {
        // Unconstrained: Tokio's cooperative budget would report ready
        // futures as pending after ~128 polls in one go.
        let resolved = tokio::task::unconstrained(delivery).now_or_never().expect("flush waited for every record");
        assert!(resolved.is_ok(), "{resolved:?}");
    }
    let state = cluster.lock().unwrap();
    let mut stored: Vec<u64> = (0..2).flat_map(|p| state.values(p)).map(|v| v.parse().unwrap()).collect();
    stored.sort();
    assert_eq!(stored, (0..200).collect::<Vec<u64>>(), "every record stored exactly once");
}

#[tokio::test]
async fn fatal_errors_fail_without_retrying() {
    let (cluster, addresses) = start_cluster(1, 1, 1, 1, true).await;
    cluster.lock().unwrap().produce_errors = [ErrorCode::RecordTooLarge].into();
    let producer = Producer::new(Client::connect(&addresses).unwrap(), fast_retries()).unwrap();
    let error = producer.send(TOPIC, record(None, "x")).await.unwrap().await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::RecordTooLarge));
    assert_eq!(cluster.lock().unwrap().produce_requests, 1);
}

#[tokio::test]
async fn retries_stop_at_the_delivery_timeout() {
    let (cluster, addresses) = start_cluster(1, 1, 1, 1, true).await;
    cluster.lock().unwrap().produce_errors = [ErrorCode::LeaderNotAvailable; 10_000].into();
    let config = ProducerConfig { delivery_timeout: Duration::from_millis(300), ..fast_retries() };
    let producer = Producer::new(Client::connect(&addresses).unwrap(), config).unwrap();
    let started = Instant::now();
    let error = producer.send(TOPIC, record(None, "x")).await.unwrap().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "gave up in time: {:?}", started.elapsed());
    match &error {
        ClientError::DeliveryTimeout { last_error: Some(last), .. } => {
            assert_eq!(last.code(), Some(ErrorCode::LeaderNotAvailable))
        }
        other => panic!("expected a delivery timeout, got {other}"),
    }
    assert!(cluster.lock().unwrap().produce_requests > 2, "it did retry");
}

#[tokio::test]
async fn acks_none_returns_no_offset_and_unknown_topics_fail_fast() {
    let (_cluster, addresses) = start_cluster(1, 1, 1, 1, true).await;
    let producer = Producer::new(
        Client::connect(&addresses).unwrap(),
        ProducerConfig { acks: Acks::None, idempotence: false, ..fast_retries() },
    )
    .unwrap();
    let metadata = producer.send(TOPIC, record(None, "x")).await.unwrap().await.unwrap();
    assert_eq!(metadata.offset, None);
    let error = producer.send("missing", record(None, "x")).await.err().expect("no such topic");
    assert_eq!(error.code(), Some(ErrorCode::UnknownTopic));
    let error = producer.send_to(TOPIC, 7, record(None, "x")).await.err().expect("no such partition");
    assert_eq!(error.code(), Some(ErrorCode::UnknownPartition));
}

#[tokio::test]
async fn metadata_skips_dead_bootstrap_nodes() {
    let (_cluster, addresses) = start_cluster(3, 1, 1, 1, true).await;
    // Nothing listens on port 1.
    let client = Client::connect(&["127.0.0.1:1".to_string(), addresses[1].clone()]).unwrap();
    let metadata = client.metadata().await.unwrap();
    assert_eq!(metadata.nodes.len(), 3);
    assert_eq!(metadata.topic(TOPIC).unwrap().partition_count(), 1);
}

/// Regression (found by the fault-injection harness): a caller that stopped
/// polling in the middle of a metadata refresh (a consumer's parked fetch)
/// held the client's refresh lock, and every other call that needed a
/// refresh waited forever.
#[tokio::test]
async fn a_refresh_left_unpolled_does_not_stall_other_calls() {
    let (_cluster, addresses) = start_cluster(1, 1, 1, 1, true).await;
    let client = Client::connect(&addresses).unwrap();
    let mut parked = Box::pin(client.refresh_metadata());
    // Polled once (it is now waiting on the network), then never again.
    assert!(futures::poll!(&mut parked).is_pending());
    let other = tokio::time::timeout(Duration::from_secs(10), client.refresh_metadata()).await;
    assert!(other.expect("a second refresh must not wait for the parked one").is_ok());
    drop(parked);
}

/// A topic that grows (`alter_topic` on another client): a producer whose
/// cache is older than `metadata_max_age` refreshes it in the background
/// and sends keyed records to the new partitions by the new count, and a
/// send to (or a consumer's assign of) a partition its cache does not know
/// refreshes at once.
#[tokio::test]
async fn producers_use_added_partitions_once_their_metadata_ages() {
    let (cluster, addresses) = start_cluster(1, 2, 1, 1, true).await;
    let config = strata_client::ClientConfig { metadata_max_age: Duration::from_millis(200), ..Default::default() };
    let client = Client::connect_with(&addresses, config).unwrap();
    let producer = Producer::new(client.clone(), fast_retries()).unwrap();
    let sent = producer.send(TOPIC, record(Some("k"), "before")).await.unwrap().await.unwrap();
    assert!(sent.partition < 2);
    // A partition the cache does not know: refreshed before refusing.
    let stale = Client::connect_with(
        &addresses,
        strata_client::ClientConfig { metadata_max_age: Duration::from_secs(3600), ..Default::default() },
    )
    .unwrap();
    stale.metadata().await.unwrap();
    cluster.lock().unwrap().partitions = 9;
    let stale_producer = Producer::new(stale.clone(), fast_retries()).unwrap();
    let to_new = stale_producer.send_to(TOPIC, 8, record(None, "new")).await.unwrap().await.unwrap();
    assert_eq!(to_new.partition, 8);
    // So does a consumer assigned a partition its cache does not know (as
    // a group member is given the partitions an alter added).
    cluster.lock().unwrap().partitions = 10;
    let mut consumer = Consumer::new(stale);
    assert_eq!(consumer.assign(TOPIC, 9, StartOffset::Earliest).await.unwrap(), 0);
    let error = consumer.assign(TOPIC, 10, StartOffset::Earliest).await.expect_err("no partition 10");
    assert_eq!(error.code(), Some(ErrorCode::UnknownPartition));
    // Keys spread by the new count once the cache aged and was refreshed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut round = 0;
    loop {
        let key = format!("k{}", round % 50);
        let delivered = producer.send(TOPIC, record(Some(&key), "after")).await.unwrap().await.unwrap();
        if delivered.partition >= 2 {
            assert_eq!(delivered.partition, partition_for_key(key.as_bytes(), 10), "placed by the new count");
            break;
        }
        assert!(Instant::now() < deadline, "no record reached an added partition within 10 s");
        round += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_refusal_retried_until_the_deadline_is_what_the_caller_gets() {
    // Every answer takes 400 ms and the client waits 50-200 ms before
    // retrying, so its second try starts less than 150 ms before the 600 ms
    // deadline, which cuts it short (after a wait of exactly 200 ms it does
    // not start at all). The refusal is what the caller must learn.
    let (cluster, addresses) = start_cluster(1, 1, 1, 1, true).await;
    cluster.lock().unwrap().heartbeat_refusal_delay = Duration::from_millis(400);
    let config = ClientConfig { request_timeout: Duration::from_millis(600), ..ClientConfig::default() };
    let client = Client::connect_with(&addresses, config).unwrap();
    let twin = GroupHeartbeat { instance_id: Some("pod-a".into()), ..GroupHeartbeat::join("readers", &["events"]) };
    let error = client.group_heartbeat(&twin).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::UnreleasedInstanceId), "{error}");
}
