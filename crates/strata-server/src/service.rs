//! The client API (`strata.v1.Strata`) of a node.
//!
//! Produce, fetch and list-offsets are served by the partition's leader; any
//! other node answers NOT_LEADER naming the leader it knows. Metadata reads
//! are answered from this node's copy of the metadata state; metadata writes
//! go to the metadata leader, forwarded by this node when it is not leader.
//! Consumer group requests (reads included) are served by the metadata
//! leader's coordinator (`coordinator`, `group_api`), forwarded the same way.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::error::RaftError;
use openraft::impls::ProgressResponder;
use openraft::vote::RaftLeaderId;
use openraft::ReadPolicy;
use strata_core::limits::{
    DEFAULT_FETCH_BYTES, DEFAULT_PRODUCE_TIMEOUT_MS, FORWARD_TIMEOUT, MAX_BATCH_BYTES, MAX_FETCH_BYTES,
    MAX_FETCH_WAIT_MS, MAX_IDEMPOTENCY_KEY_BYTES, PRODUCER_ID_BLOCK, STATUS_TIMEOUT,
};
use strata_core::topic::TopicConfig;
use strata_core::ErrorCode;
use strata_proto::v1 as pb;
use strata_proto::v1::strata_client::StrataClient;
use strata_proto::v1::strata_server::Strata;
use strata_record::sequence_after;
use strata_state::metadata::{PartitionAssignment, Topic};
use strata_state::{
    Command, KeyedRecord, MetaCommand, MetaResponse, PartitionCommand, PartitionResponse, PartitionState,
    Response as SmResponse,
};
use strata_storage::TypeConfig;
use tonic::{Request, Response, Status};

use crate::backpressure::{Exceeded, FetchBudget, FetchHeld, Held, ProduceBudget, BUSY_RETRY_AFTER_MS};
use crate::coordinator::{CoordinatorError, HighWatermarks};
use crate::error::ApiError;
use crate::faults::{AnswerFault, Faults};
use crate::group_api;
use crate::groups::GroupHandle;
use crate::metrics;
use crate::node::{Node, TopicRef};
use crate::sequencer::Sequencer;

mod membership_api;
mod reassign_api;
mod txn_api;

/// Request metadata that marks a call forwarded by a node, so it is not
/// forwarded again.
const FORWARDED: &str = "x-strata-forwarded";

/// Request metadata of a forwarded group heartbeat: the address of the
/// client that sent it to the forwarding node (kept as the member's host).
const CLIENT_HOST: &str = "x-strata-client-host";

/// A fetch's answer: the batches, the state they were read at, where to
/// read next (0 when nothing was read), and the room they hold in the
/// fetch budget until the answer is built.
struct Fetched {
    records: Vec<u8>,
    state: PartitionState,
    next_offset: u64,
    held: Option<FetchHeld>,
}

pub struct StrataService {
    node: Node,
    budget: Arc<ProduceBudget>,
    fetch_budget: Arc<FetchBudget>,
    sequencer: Sequencer,
    faults: Faults,
    /// Producer ids this node may hand out: the rest of the block the
    /// metadata group gave it.
    producer_ids: Mutex<Range<u64>>,
}

impl StrataService {
    pub fn new(node: Node) -> StrataService {
        let config = node.config.clone();
        StrataService {
            node,
            budget: ProduceBudget::new(
                config.max_produce_bytes_in_flight,
                config.max_produce_bytes_in_flight_per_connection,
            ),
            fetch_budget: FetchBudget::new(config.max_fetch_bytes_in_flight),
            faults: Faults::new(config.faults.clone()),
            sequencer: Sequencer::default(),
            producer_ids: Mutex::new(0..0),
        }
    }

    fn lookup(&self, topic: &str, partition: u32) -> Result<(TopicRef, PartitionAssignment), ApiError> {
        let topic = self
            .node
            .metadata_state()
            .topic(topic)
            .ok_or_else(|| ApiError::new(ErrorCode::UnknownTopic, format!("topic '{topic}' does not exist")))?;
        let assignment = topic.partitions.get(partition as usize).cloned().ok_or_else(|| {
            ApiError::new(
                ErrorCode::UnknownPartition,
                format!("topic '{}' has {} partitions; {partition} does not exist", topic.name, topic.partitions.len()),
            )
        })?;
        Ok((topic, assignment))
    }

    /// A NOT_LEADER hint for clients: the leader and its client address.
    fn leader_info(&self, leader: u64) -> Option<(u64, String)> {
        self.node.client_address(leader).map(|address| (leader, address))
    }

    /// `error` with its leader hint, if any, at the leader's client
    /// address: a hint made from Raft's membership (a write that met a new
    /// leader) names the peer address, which clients may not reach.
    fn hint_for_clients(&self, mut error: ApiError) -> ApiError {
        if let Some((leader, address)) = &mut error.leader {
            if let Some(client_address) = self.node.client_address(*leader) {
                *address = client_address;
            }
        }
        error
    }

    /// The local group of a partition, if this node leads it and has applied
    /// an entry of its own term (so its state includes everything committed
    /// by earlier leaders and its high watermark never goes backwards).
    fn leader_handle(&self, topic: &str, partition: u32) -> Result<(GroupHandle, TopicRef), ApiError> {
        let (topic, assignment) = self.lookup(topic, partition)?;
        let what = format!("partition {}/{partition}", topic.name);
        let Some(handle) = self.node.groups.get(assignment.group_id) else {
            if assignment.replicas.contains(&self.node.node_id()) {
                return Err(ApiError::new(ErrorCode::PartitionNotReady, format!("{what} is starting on this node")));
            }
            let mut error = ApiError::not_leader(None, &what);
            error.message =
                format!("this node hosts no replica of {what}; its replicas are nodes {:?}", assignment.replicas);
            return Err(error);
        };
        let metrics = handle.raft.metrics().borrow_watched().clone();
        match metrics.current_leader {
            Some(leader) if leader == self.node.node_id() => {
                let own_term_applied = metrics
                    .last_applied
                    .as_ref()
                    .is_some_and(|id| id.committed_leader_id().term() == metrics.current_term);
                if !own_term_applied {
                    return Err(ApiError::new(
                        ErrorCode::LeaderNotAvailable,
                        format!("{what} has a new leader that is catching up"),
                    ));
                }
                Ok((handle, topic))
            }
            Some(leader) => Err(ApiError::not_leader(self.leader_info(leader), &what)),
            None => Err(ApiError::new(ErrorCode::LeaderNotAvailable, format!("{what} has no leader right now"))),
        }
    }

    /// The local group of a partition on this node, leading or following,
    /// for a replica read: its state is what this node itself has applied.
    fn replica_handle(&self, topic: &str, partition: u32) -> Result<GroupHandle, ApiError> {
        let (topic, assignment) = self.lookup(topic, partition)?;
        let what = format!("partition {}/{partition}", topic.name);
        match self.node.groups.get(assignment.group_id) {
            Some(handle) => Ok(handle),
            None if assignment.replicas.contains(&self.node.node_id()) => {
                Err(ApiError::new(ErrorCode::PartitionNotReady, format!("{what} is starting on this node")))
            }
            None => Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "this node hosts no replica of {what}; send the replica read to one of nodes {:?}",
                    assignment.replicas
                ),
            )),
        }
    }

    fn partition_state(handle: &GroupHandle) -> PartitionState {
        handle.state.borrow().as_partition().cloned().expect("partition groups hold partition state")
    }

    /// Takes room for a produce of `bytes` from `connection` in the node's
    /// produce budget, or answers BUSY.
    fn hold_produce_bytes(&self, connection: Option<SocketAddr>, bytes: usize) -> Result<Held, ApiError> {
        self.budget.try_hold(connection, bytes).map_err(|exceeded| {
            let message = match exceeded {
                Exceeded::Node { limit } => format!("this node holds {limit} bytes of produce requests, its bound"),
                Exceeded::Connection { limit } => {
                    format!("this connection holds {limit} bytes of produce requests, its bound")
                }
            };
            ApiError { retry_after_ms: BUSY_RETRY_AFTER_MS, ..ApiError::new(ErrorCode::Busy, message) }
        })
    }

    /// Serves one produce; `held` is its room in the produce budget, kept
    /// until the write ends (for acks=none, until the spawned write ends).
    async fn produce_inner(&self, request: pb::ProduceRequest, held: Held) -> Result<pb::ProduceResponse, ApiError> {
        if request.batch.len() > MAX_BATCH_BYTES {
            return Err(ApiError::new(
                ErrorCode::RecordTooLarge,
                format!("batch of {} bytes is over the limit of {MAX_BATCH_BYTES}", request.batch.len()),
            ));
        }
        let (header, keyed) =
            strata_record::validate_batch_with_header(&request.batch, strata_core::IDEMPOTENCY_KEY_HEADER)
                .map_err(|e| ApiError::new(e.code(), e.to_string()))?;
        if header.producer_id >= 0 && (header.producer_epoch < 0 || header.base_sequence < 0) {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "producer {} sent epoch {} and sequence {}; both must be 0 or more",
                    header.producer_id, header.producer_epoch, header.base_sequence
                ),
            ));
        }
        if header.is_transactional() && (header.producer_id < 0 || request.transactional_id.is_empty()) {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "a transactional batch (attribute bit 0x10) needs the producer id and epoch InitProducerId gave \
                 its transactional id, and that id in the request",
            ));
        }
        if header.producer_id >= 0 && request.acks == pb::Acks::None as i32 {
            // Without an answer the producer cannot learn that a batch was a
            // duplicate or out of order, so its retries would go unchecked.
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "producer {} sent an idempotent batch with acks=none; idempotence needs acks=all \
                     (send with acks=all, or without a producer id)",
                    header.producer_id
                ),
            ));
        }
        let mut keys = Vec::with_capacity(keyed.len());
        for (index, value) in keyed {
            match value {
                Some(key) if !key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY_BYTES => {
                    keys.push(KeyedRecord { index, key: key.to_vec() })
                }
                _ => {
                    return Err(ApiError::new(
                        ErrorCode::InvalidRequest,
                        format!(
                            "record {index}: the {} header must hold 1 to {MAX_IDEMPOTENCY_KEY_BYTES} bytes",
                            strata_core::IDEMPOTENCY_KEY_HEADER
                        ),
                    ))
                }
            }
        }
        let (handle, topic) = self.leader_handle(&request.topic, request.partition)?;
        let what = format!("partition {}/{}", topic.name, request.partition);
        if header.is_transactional() {
            let (producer_id, producer_epoch) = (header.producer_id as u64, header.producer_epoch);
            let open =
                handle.state.borrow().as_partition().is_some_and(|p| p.txns.is_open(producer_id, producer_epoch));
            if !open {
                // The partition joins the transaction: recorded by the
                // coordinator before anything of it is appended here.
                self.verify_transactional_produce(
                    &request.transactional_id,
                    producer_id,
                    producer_epoch,
                    &topic.name,
                    request.partition,
                )
                .await?;
            }
        }
        // Cluster time under the clock rule (see `clock`), never this
        // node's raw wall clock: it becomes the partition's clock.
        let partition_clock_ms = handle.state.borrow().as_partition().map_or(0, |p| p.clock_ms);
        let command = Command::Partition(PartitionCommand::Append {
            batch: request.batch.to_vec(),
            time_ms: self.node.clock.stamp(handle.group_id, partition_clock_ms).await,
            dedup_window_ms: topic.config.dedup_window_ms,
            producer_expiry_ms: self.node.config.producer_expiry.as_millis() as u64,
            keys,
        });
        self.node.quiescence.ready_for_write(&handle).await;
        if request.acks == pb::Acks::None as i32 {
            let raft = handle.raft.clone();
            tokio::spawn(async move {
                if let Err(err) = raft.client_write(command).await {
                    tracing::debug!(error = %err, "acks=none produce failed");
                }
                // The bytes stay counted until the write is done with them.
                drop(held);
            });
            return Ok(pb::ProduceResponse { record_count: header.record_count, ..Default::default() });
        }
        let _held = held;
        let timeout_ms = if request.timeout_ms == 0 { DEFAULT_PRODUCE_TIMEOUT_MS } else { request.timeout_ms };
        // An idempotent producer's batches go to Raft in sequence order
        // when they arrive close together (see `sequencer`).
        let producer_key =
            (header.producer_id >= 0).then_some((handle.group_id, header.producer_id, header.producer_epoch));
        if let Some(key) = producer_key {
            self.sequencer.wait_turn(key, header.base_sequence).await;
        }
        let (responder, answer) = ProgressResponder::<TypeConfig, _>::complete_only();
        handle
            .raft
            .write(command)
            .responder(responder)
            .await
            .map_err(|fatal| ApiError::from_write(RaftError::Fatal(fatal), &what))?;
        if let Some(key) = producer_key {
            self.sequencer.proposed(key, sequence_after(header.base_sequence, header.record_count));
        }
        let written = tokio::time::timeout(Duration::from_millis(timeout_ms as u64), metrics::observe_commit(answer))
            .await
            .map_err(|_| ApiError::new(ErrorCode::Timeout, format!("{what}: not replicated within {timeout_ms} ms")))?
            .map_err(|_| ApiError::new(ErrorCode::LeaderNotAvailable, format!("{what}: the leader stopped")))?
            .map_err(|e| ApiError::from_write(RaftError::APIError(e), &what))?;
        match written.data {
            SmResponse::Partition(PartitionResponse::Appended {
                base_offset,
                record_count,
                duplicates,
                duplicate_batch,
            }) => Ok(pb::ProduceResponse {
                error: None,
                base_offset,
                record_count,
                duplicates: duplicates
                    .into_iter()
                    .map(|(index, offset)| pb::DuplicateRecord { index, offset })
                    .collect(),
                duplicate_batch,
            }),
            SmResponse::Partition(PartitionResponse::Refused { code, message }) => {
                Err(ApiError::new(code, format!("{what}: {message}")))
            }
            SmResponse::Partition(PartitionResponse::Rejected(reason)) => {
                Err(ApiError::new(ErrorCode::CorruptBatch, reason))
            }
            other => Err(ApiError::internal(format!("unexpected apply result {other:?}"))),
        }
    }

    /// A fresh producer id from this node's block, asking the metadata
    /// group for a new block when it is used up. `None` when the metadata
    /// leader is another node (the caller forwards the request there).
    async fn fresh_producer_id(&self) -> Result<Option<u64>, ApiError> {
        {
            let mut ids = self.producer_ids.lock().expect("producer id lock");
            if let Some(id) = ids.next() {
                return Ok(Some(id));
            }
        }
        match self.meta_write(MetaCommand::AllocateProducerIds { count: PRODUCER_ID_BLOCK }).await {
            Ok(MetaResponse::ProducerIds { first, count }) => {
                let mut ids = self.producer_ids.lock().expect("producer id lock");
                // Another request may have refilled the block meanwhile;
                // the older block's ids are then simply never used.
                *ids = first + 1..first + count;
                Ok(Some(first))
            }
            Ok(MetaResponse::Error { code, message }) => Err(ApiError::new(code, message)),
            Ok(other) => Err(ApiError::internal(format!("unexpected answer {other:?}"))),
            Err(MetaWriteError::Forward(_)) => Ok(None),
            Err(MetaWriteError::Failed(error)) => Err(error),
        }
    }

    /// Serves one fetch. The returned room in the fetch budget covers the
    /// answer's bytes; the caller keeps it until the answer is built.
    async fn fetch_inner(&self, request: pb::FetchRequest) -> Result<Fetched, ApiError> {
        // A replica read serves this node's own applied copy, leader or not.
        let handle = if request.replica_read {
            self.replica_handle(&request.topic, request.partition)?
        } else {
            self.leader_handle(&request.topic, request.partition)?.0
        };
        let read_committed =
            !request.replica_read && request.isolation_level != pb::IsolationLevel::ReadUncommitted as i32;
        let max_bytes = match request.max_bytes as usize {
            0 => DEFAULT_FETCH_BYTES,
            n => n.min(MAX_FETCH_BYTES),
        };
        let wait = Duration::from_millis(request.max_wait_ms.min(MAX_FETCH_WAIT_MS) as u64);
        let deadline = tokio::time::Instant::now() + wait;
        let mut watch = handle.state.clone();
        let (state, end) = loop {
            let state =
                watch.borrow_and_update().as_partition().cloned().expect("partition groups hold partition state");
            if request.offset < state.log_start_offset || request.offset > state.next_offset {
                return Err(ApiError {
                    range: Some((state.log_start_offset, state.next_offset)),
                    ..ApiError::new(
                        ErrorCode::OffsetOutOfRange,
                        format!(
                            "offset {} is outside [{}, {}]",
                            request.offset, state.log_start_offset, state.next_offset
                        ),
                    )
                });
            }
            // A read_committed reader stops at the first record of an open
            // transaction (the last stable offset).
            let end = if read_committed { state.last_stable_offset() } else { state.next_offset };
            if request.offset < end {
                break (state, end);
            }
            // Long poll: wait for the end to move, or time out.
            match tokio::time::timeout_at(deadline, watch.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return Err(ApiError::new(ErrorCode::PartitionNotReady, "partition is shutting down")),
                Err(_) => return Ok(Fetched { records: Vec::new(), state, next_offset: 0, held: None }),
            }
        };
        // Room is taken only once there is something to read, so long polls
        // hold none.
        let Some(mut held) = self.fetch_budget.try_hold(max_bytes) else {
            return Err(ApiError {
                retry_after_ms: BUSY_RETRY_AFTER_MS,
                ..ApiError::new(
                    ErrorCode::Busy,
                    format!(
                        "this node holds {} bytes of fetch answers, its bound (max_fetch_bytes_in_flight)",
                        self.fetch_budget.limit()
                    ),
                )
            });
        };
        let reader = handle.reader.as_ref().expect("partition groups have a reader");
        let records =
            reader.read(request.offset, end, max_bytes.min(held.bytes())).await.map_err(ApiError::internal)?;
        if let Some(first) = trimmed_below(&records, request.offset) {
            // The batches below `first` are gone though this replica's state
            // still counts them: retention trimmed them after the snapshot
            // this replica installed, and it has not applied that trim yet.
            // Offsets are dense, so nothing else leaves such a gap.
            return Err(ApiError {
                range: Some((first, state.next_offset)),
                ..ApiError::new(
                    ErrorCode::OffsetOutOfRange,
                    format!("offset {} was deleted by retention; the log now starts at {first}", request.offset),
                )
            });
        }
        let (records, next_offset) = if request.replica_read {
            (records, 0)
        } else {
            txn_api::visible_batches(records, &state.txns, read_committed, state.next_offset)
        };
        held.shrink_to(records.len());
        Ok(Fetched { records, state, next_offset, held: Some(held) })
    }

    async fn list_offsets_inner(&self, request: pb::ListOffsetsRequest) -> Result<pb::ListOffsetsResponse, ApiError> {
        let (handle, _) = self.leader_handle(&request.topic, request.partition)?;
        let state = Self::partition_state(&handle);
        let offset = match pb::OffsetSpec::try_from(request.spec) {
            Ok(pb::OffsetSpec::Earliest) => state.log_start_offset,
            Ok(pb::OffsetSpec::Latest) => state.next_offset,
            Ok(pb::OffsetSpec::Timestamp) => {
                // Without a time index this walks the partition from its
                // start, so the walk is bounded; only the last header it
                // reads decides the answer.
                let wanted = request.timestamp_ms;
                let reader = handle.reader.as_ref().expect("partition groups have a reader");
                let limit = self.node.config.max_timestamp_lookup_batches;
                let headers = reader
                    .scan_headers(move |info| info.max_timestamp_ms >= wanted, limit)
                    .await
                    .map_err(ApiError::internal)?;
                let scanned = headers.len();
                match headers.last().copied() {
                    Some(info) if info.max_timestamp_ms >= wanted => info.base_offset.max(state.log_start_offset),
                    // The walk stopped at the bound, not at the end of the log.
                    Some(info) if scanned >= limit && info.next_offset < state.next_offset => {
                        return Err(ApiError::new(
                            ErrorCode::LimitReached,
                            format!(
                                "no batch up to offset {} of the first {limit} has a timestamp at or after {wanted}, \
                                 and a lookup reads at most {limit} batches; ask for LATEST, or read on from offset {}",
                                info.next_offset, info.next_offset
                            ),
                        ));
                    }
                    _ => state.next_offset,
                }
            }
            _ => return Err(ApiError::new(ErrorCode::InvalidRequest, "spec must be EARLIEST, LATEST or TIMESTAMP")),
        };
        let idempotency_keys = if request.with_stats {
            self.node.store.idempotency_key_count(handle.group_id).await.map_err(ApiError::internal)?
        } else {
            0
        };
        Ok(pb::ListOffsetsResponse {
            error: None,
            offset,
            high_watermark: state.next_offset,
            log_start_offset: state.log_start_offset,
            producer_count: state.producer_count,
            idempotency_keys,
        })
    }

    fn topic_metadata(&self, topic: &Topic) -> pb::TopicMetadata {
        pb::TopicMetadata {
            name: topic.name.clone(),
            partitions: topic
                .partitions
                .iter()
                .enumerate()
                .map(|(index, a)| pb::PartitionMetadata {
                    partition: index as u32,
                    leader: self.node.groups.get(a.group_id).and_then(|g| g.leader()).unwrap_or(0),
                    replicas: a.replicas.clone(),
                    group_id: a.group_id,
                })
                .collect(),
            configs: topic.config.to_map().into_iter().collect(),
        }
    }

    fn peer(&self, node: u64) -> Result<StrataClient<tonic::transport::Channel>, ApiError> {
        let channel = self.node.peers.channel(node).map_err(ApiError::internal)?;
        Ok(StrataClient::new(channel)
            .max_decoding_message_size(strata_core::limits::MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(strata_core::limits::MAX_GRPC_MESSAGE_BYTES))
    }

    fn forwarded<T>(message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert(FORWARDED, "1".parse().expect("ascii"));
        request.set_timeout(FORWARD_TIMEOUT);
        request
    }

    /// Proposes a metadata command on the metadata leader. When this node is
    /// not the leader the caller forwards the whole request instead.
    async fn meta_write(&self, command: MetaCommand) -> Result<MetaResponse, MetaWriteError> {
        let metadata = self.node.metadata();
        match metadata.raft.client_write(Command::Meta(command)).await {
            Ok(written) => match written.data {
                SmResponse::Meta(response) => Ok(response),
                other => Err(MetaWriteError::Failed(ApiError::internal(format!("unexpected apply result {other:?}")))),
            },
            Err(openraft::error::RaftError::APIError(openraft::error::ClientWriteError::ForwardToLeader(forward)))
                if forward.leader_id.is_some() =>
            {
                Err(MetaWriteError::Forward(forward.leader_id.expect("checked")))
            }
            Err(err) => {
                let mut error = ApiError::from_write(err, "the metadata group");
                if error.code == ErrorCode::LeaderNotAvailable {
                    error.code = ErrorCode::ClusterUnavailable;
                }
                Err(MetaWriteError::Failed(error))
            }
        }
    }

    /// Proposes `command` on the metadata leader and answers with `answer`;
    /// when this node is not the leader, forwards the request once through
    /// `forward` (a forwarded request is never forwarded again).
    async fn write_metadata<T, F, Fut>(
        &self,
        command: MetaCommand,
        forwarded: bool,
        set: fn(&mut T, Option<pb::Error>),
        forward: F,
        answer: impl FnOnce(MetaResponse) -> Option<T>,
    ) -> Result<Response<T>, Status>
    where
        T: Default + std::fmt::Debug,
        F: FnOnce(StrataClient<tonic::transport::Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<T>, Status>>,
    {
        match self.meta_write(command).await {
            Ok(MetaResponse::Error { code, message }) => err(ApiError::new(code, message), set),
            Ok(response) => {
                let text = format!("unexpected answer {response:?}");
                match answer(response) {
                    Some(answer) => Ok(Response::new(answer)),
                    None => err(ApiError::internal(text), set),
                }
            }
            Err(MetaWriteError::Forward(leader)) if !forwarded => match self.peer(leader) {
                Ok(peer) => forward(peer).await,
                Err(error) => err(error, set),
            },
            Err(MetaWriteError::Forward(leader)) => err(
                ApiError::new(
                    ErrorCode::ClusterUnavailable,
                    format!("metadata leadership is moving (to node {leader})"),
                ),
                set,
            ),
            Err(MetaWriteError::Failed(error)) => err(error, set),
        }
    }

    /// Serves a consumer group request on the metadata leader's
    /// coordinator: `local` runs here, and when another node leads, the
    /// request goes there once through `forward` (a forwarded request is
    /// never forwarded again).
    async fn on_coordinator<T, Local, F, Fut>(
        &self,
        forwarded: bool,
        set: fn(&mut T, Option<pb::Error>),
        local: Local,
        forward: F,
    ) -> Result<Response<T>, Status>
    where
        T: Default,
        Local: std::future::Future<Output = Result<T, CoordinatorError>>,
        F: FnOnce(StrataClient<tonic::transport::Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<T>, Status>>,
    {
        match local.await {
            Ok(answer) => Ok(Response::new(answer)),
            Err(CoordinatorError::Api(error)) => err(error, set),
            Err(CoordinatorError::Forward(leader)) if !forwarded => match self.peer(leader) {
                Ok(peer) => forward(peer).await,
                Err(error) => err(error, set),
            },
            Err(CoordinatorError::Forward(leader)) => err(
                ApiError::new(
                    ErrorCode::ClusterUnavailable,
                    format!("metadata leadership is moving (to node {leader})"),
                ),
                set,
            ),
        }
    }

    fn voters(&self) -> Vec<u64> {
        self.node.cluster_nodes()
    }

    /// The leader of a partition and its offsets and stats, asking the
    /// replicas in turn until the leader answers.
    async fn partition_offsets(
        &self,
        topic: &Topic,
        partition: u32,
    ) -> Result<(u64, pb::ListOffsetsResponse), ApiError> {
        let assignment = &topic.partitions[partition as usize];
        let local_leader = self.node.groups.get(assignment.group_id).and_then(|g| g.leader());
        let mut candidates: Vec<u64> = local_leader.into_iter().collect();
        candidates.extend(assignment.replicas.iter().copied().filter(|r| Some(*r) != local_leader));
        let mut last_error = ApiError::new(ErrorCode::LeaderNotAvailable, "no replica answered");
        let mut tried = Vec::new();
        while let Some(node) = candidates.first().copied() {
            candidates.remove(0);
            if tried.contains(&node) {
                continue;
            }
            tried.push(node);
            let request = pb::ListOffsetsRequest {
                topic: topic.name.clone(),
                partition,
                spec: pb::OffsetSpec::Latest as i32,
                timestamp_ms: 0,
                with_stats: true,
            };
            let answer = if node == self.node.node_id() {
                match self.list_offsets_inner(request).await {
                    Ok(answer) => return Ok((node, answer)),
                    Err(e) => e.to_proto(),
                }
            } else {
                let mut peer = self.peer(node)?;
                match peer.list_offsets(Self::forwarded(request)).await {
                    Ok(answer) => {
                        let answer = answer.into_inner();
                        match answer.error {
                            Some(e) if e.code != 0 => e,
                            _ => return Ok((node, answer)),
                        }
                    }
                    Err(status) => {
                        last_error =
                            ApiError::new(ErrorCode::LeaderNotAvailable, format!("node {node}: {}", status.message()));
                        continue;
                    }
                }
            };
            if answer.leader_id != 0 && !tried.contains(&answer.leader_id) {
                candidates.insert(0, answer.leader_id);
            }
            last_error =
                ApiError::new(ErrorCode::from_code(answer.code).unwrap_or(ErrorCode::Internal), answer.message);
        }
        Err(last_error)
    }

    async fn ping_node(&self, node: u64) -> Result<pb::PingResponse, String> {
        if node == self.node.node_id() {
            return Ok(self.ping_local());
        }
        let mut peer = self.peer(node).map_err(|e| e.message)?;
        let mut request = Request::new(pb::PingRequest {});
        request.set_timeout(STATUS_TIMEOUT);
        match tokio::time::timeout(STATUS_TIMEOUT, peer.ping(request)).await {
            Ok(Ok(answer)) => Ok(answer.into_inner()),
            Ok(Err(status)) => Err(status.message().to_string()),
            Err(_) => Err(format!("no answer within {STATUS_TIMEOUT:?}")),
        }
    }

    fn ping_local(&self) -> pb::PingResponse {
        let me = self.node.node_id();
        let partitions: Vec<_> = self.node.groups.all().into_iter().filter(|g| g.reader.is_some()).collect();
        let clock = self.node.clock.now();
        pb::PingResponse {
            node_id: me,
            partitions_led: partitions.iter().filter(|g| g.is_leader(me)).count() as u32,
            partitions_hosted: partitions.len() as u32,
            clock_offset_ms: clock.local_offset_ms,
            clock_known: clock.trusted,
            partitions_under_replicated: metrics::under_replicated_led(&self.node) as u32,
            store_id: self.node.membership.store_id,
            cluster_id: self.node.membership.cluster_id(),
        }
    }
}

impl HighWatermarks for StrataService {
    async fn high_watermark(&self, topic: &Topic, partition: u32) -> Result<(u64, u64), ApiError> {
        let (_, answer) = self.partition_offsets(topic, partition).await?;
        Ok((answer.log_start_offset, answer.high_watermark))
    }
}

/// Where a group member's request came from: the client's address, or for
/// a forwarded request the one the forwarding node saw.
fn client_host<T>(request: &Request<T>) -> String {
    if is_forwarded(request) {
        return request.metadata().get(CLIENT_HOST).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    }
    request.remote_addr().map(|a| a.ip().to_string()).unwrap_or_default()
}

enum MetaWriteError {
    Forward(u64),
    Failed(ApiError),
}

fn err<T: Default>(error: ApiError, set: impl FnOnce(&mut T, Option<pb::Error>)) -> Result<Response<T>, Status> {
    let mut answer = T::default();
    set(&mut answer, Some(error.to_proto()));
    Ok(Response::new(answer))
}

fn is_forwarded<T>(request: &Request<T>) -> bool {
    request.metadata().contains_key(FORWARDED)
}

#[tonic::async_trait]
impl Strata for StrataService {
    async fn produce(&self, request: Request<pb::ProduceRequest>) -> Result<Response<pb::ProduceResponse>, Status> {
        let connection = request.remote_addr();
        let request = request.into_inner();
        // The bytes stay held until the write ends: until the answer is
        // ready, or for acks=none until the spawned write is done.
        let held = match self.hold_produce_bytes(connection, request.batch.len()) {
            Ok(held) => held,
            Err(error) => return err(error, |a: &mut pb::ProduceResponse, e| a.error = e),
        };
        let bytes = request.batch.len();
        match metrics::observe_produce(bytes, self.produce_inner(request, held)).await {
            Ok(answer) => {
                match self.faults.after_commit() {
                    Some(AnswerFault::Drop) => return Err(Status::unavailable("fault hook: the answer was dropped")),
                    Some(AnswerFault::Delay(delay)) => tokio::time::sleep(delay).await,
                    None => {}
                }
                Ok(Response::new(answer))
            }
            Err(error) => err(self.hint_for_clients(error), |a: &mut pb::ProduceResponse, e| a.error = e),
        }
    }

    async fn init_producer_id(
        &self,
        request: Request<pb::InitProducerIdRequest>,
    ) -> Result<Response<pb::InitProducerIdResponse>, Status> {
        if !request.get_ref().transactional_id.is_empty() {
            if !request.get_ref().producer_name.is_empty() {
                return err(
                    ApiError::new(ErrorCode::InvalidRequest, "give a producer name or a transactional id, not both"),
                    |a: &mut pb::InitProducerIdResponse, e| a.error = e,
                );
            }
            return self.init_transactional_producer(request).await;
        }
        let forwarded = is_forwarded(&request);
        let request = request.into_inner();
        let set = |a: &mut pb::InitProducerIdResponse, e| a.error = e;
        if request.producer_name.is_empty() {
            return match self.fresh_producer_id().await {
                Ok(Some(producer_id)) => {
                    Ok(Response::new(pb::InitProducerIdResponse { error: None, producer_id, producer_epoch: 0 }))
                }
                Ok(None) if !forwarded => match self.node.metadata().leader().map(|leader| self.peer(leader)) {
                    Some(Ok(mut peer)) => peer.init_producer_id(Self::forwarded(request)).await,
                    Some(Err(error)) => err(error, set),
                    None => err(ApiError::new(ErrorCode::ClusterUnavailable, "the metadata group has no leader"), set),
                },
                Ok(None) => err(ApiError::new(ErrorCode::ClusterUnavailable, "metadata leadership is moving"), set),
                Err(error) => err(error, set),
            };
        }
        let command = MetaCommand::InitNamedProducer { name: request.producer_name.clone() };
        self.write_metadata(
            command,
            forwarded,
            set,
            |mut peer| async move { peer.init_producer_id(Self::forwarded(request)).await },
            |response| match response {
                MetaResponse::Producer { producer_id, epoch } => {
                    Some(pb::InitProducerIdResponse { error: None, producer_id, producer_epoch: epoch as u32 })
                }
                _ => None,
            },
        )
        .await
    }

    async fn fetch(&self, request: Request<pb::FetchRequest>) -> Result<Response<pb::FetchResponse>, Status> {
        let fetched = async {
            let Fetched { records, state, next_offset, held } = self.fetch_inner(request.into_inner()).await?;
            Ok((records, (state, next_offset, held)))
        };
        match metrics::observe_fetch(fetched).await {
            Ok((records, (state, next_offset, _held))) => Ok(Response::new(pb::FetchResponse {
                error: None,
                records: records.into(),
                high_watermark: state.next_offset,
                log_start_offset: state.log_start_offset,
                last_stable_offset: state.last_stable_offset(),
                next_offset,
            })),
            Err(error) => {
                let (log_start_offset, high_watermark) = error.range.unwrap_or_default();
                Ok(Response::new(pb::FetchResponse {
                    error: Some(error.to_proto()),
                    high_watermark,
                    log_start_offset,
                    ..Default::default()
                }))
            }
        }
    }

    async fn metadata(&self, request: Request<pb::MetadataRequest>) -> Result<Response<pb::MetadataResponse>, Status> {
        let request = request.into_inner();
        let state = self.node.metadata_state();
        let mut topics = Vec::new();
        if request.topics.is_empty() {
            topics.extend(state.topics.values().map(|t| self.topic_metadata(t)));
        } else {
            for name in &request.topics {
                match state.topics.get(name) {
                    Some(topic) => topics.push(self.topic_metadata(topic)),
                    None => {
                        return err(
                            ApiError::new(ErrorCode::UnknownTopic, format!("topic '{name}' does not exist")),
                            |a: &mut pb::MetadataResponse, e| a.error = e,
                        )
                    }
                }
            }
        }
        // Client addresses: what each node advertised, else its peer address.
        let nodes = self.node.client_addresses().into_iter().map(|(id, address)| pb::Node { id, address }).collect();
        Ok(Response::new(pb::MetadataResponse {
            error: None,
            nodes,
            topics,
            metadata_leader: self.node.metadata().leader().unwrap_or(0),
        }))
    }

    async fn create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::CreateTopicResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let request = request.into_inner();
        let set = |a: &mut pb::CreateTopicResponse, e| a.error = e;
        let settings: BTreeMap<String, String> = request.configs.clone().into_iter().collect();
        let config = match TopicConfig::parse(&settings) {
            Ok(config) => config,
            Err(problem) => return err(ApiError::new(ErrorCode::InvalidConfig, problem.to_string()), set),
        };
        let command = MetaCommand::CreateTopic {
            name: request.name.clone(),
            partitions: request.partitions,
            replication_factor: request.replication_factor,
            config,
            nodes: crate::membership::placeable_nodes(&self.node),
            created_ms: self.node.clock.now().ms,
        };
        self.write_metadata(
            command,
            forwarded,
            set,
            |mut peer| async move { peer.create_topic(Self::forwarded(request)).await },
            |response| match response {
                MetaResponse::TopicCreated(topic) => {
                    Some(pb::CreateTopicResponse { error: None, topic: Some(self.topic_metadata(&topic)) })
                }
                _ => None,
            },
        )
        .await
    }

    async fn alter_topic(
        &self,
        request: Request<pb::AlterTopicRequest>,
    ) -> Result<Response<pb::AlterTopicResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let request = request.into_inner();
        let set = |a: &mut pb::AlterTopicResponse, e| a.error = e;
        // The configs are validated where they are applied, over the
        // topic's config as of that entry, so two alters never undo each
        // other's keys.
        let command = MetaCommand::AlterTopic {
            name: request.name.clone(),
            partitions: request.partitions,
            configs: request.configs.clone().into_iter().collect(),
            nodes: crate::membership::placeable_nodes(&self.node),
        };
        self.write_metadata(
            command,
            forwarded,
            set,
            |mut peer| async move { peer.alter_topic(Self::forwarded(request)).await },
            |response| match response {
                MetaResponse::TopicAltered(topic) => {
                    Some(pb::AlterTopicResponse { error: None, topic: Some(self.topic_metadata(&topic)) })
                }
                _ => None,
            },
        )
        .await
    }

    async fn delete_topic(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let request = request.into_inner();
        let set = |a: &mut pb::DeleteTopicResponse, e| a.error = e;
        let command = MetaCommand::DeleteTopic { name: request.name.clone() };
        self.write_metadata(
            command,
            forwarded,
            set,
            |mut peer| async move { peer.delete_topic(Self::forwarded(request)).await },
            |response| match response {
                MetaResponse::TopicDeleted(_) => Some(pb::DeleteTopicResponse { error: None }),
                _ => None,
            },
        )
        .await
    }

    async fn list_topics(
        &self,
        _request: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        let state = self.node.metadata_state();
        let topics = state.topics.values().map(|t| self.topic_metadata(t)).collect();
        Ok(Response::new(pb::ListTopicsResponse { error: None, topics }))
    }

    async fn describe_topic(
        &self,
        request: Request<pb::DescribeTopicRequest>,
    ) -> Result<Response<pb::DescribeTopicResponse>, Status> {
        let request = request.into_inner();
        let state = self.node.metadata_state();
        let Some(topic) = state.topics.get(&request.name).cloned() else {
            return err(
                ApiError::new(ErrorCode::UnknownTopic, format!("topic '{}' does not exist", request.name)),
                |a: &mut pb::DescribeTopicResponse, e| a.error = e,
            );
        };
        let mut partitions = Vec::new();
        for (index, assignment) in topic.partitions.iter().enumerate() {
            let mut description = pb::PartitionDescription {
                partition: index as u32,
                replicas: assignment.replicas.clone(),
                ..Default::default()
            };
            match self.partition_offsets(&topic, index as u32).await {
                Ok((leader, answer)) => {
                    description.leader = leader;
                    description.high_watermark = answer.high_watermark;
                    description.log_start_offset = answer.log_start_offset;
                    description.producer_count = answer.producer_count;
                    description.idempotency_keys = answer.idempotency_keys;
                }
                Err(error) => description.error = Some(error.to_proto()),
            }
            partitions.push(description);
        }
        Ok(Response::new(pb::DescribeTopicResponse {
            error: None,
            name: topic.name.clone(),
            partitions,
            configs: topic.config.to_map().into_iter().collect(),
        }))
    }

    async fn list_offsets(
        &self,
        request: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        match self.list_offsets_inner(request.into_inner()).await {
            Ok(answer) => Ok(Response::new(answer)),
            Err(error) => err(error, |a: &mut pb::ListOffsetsResponse, e| a.error = e),
        }
    }

    async fn cluster_status(
        &self,
        request: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let metadata = self.node.metadata();
        let leader = metadata.leader();
        let me = self.node.node_id();
        let (available, detail) = match leader {
            Some(leader) if leader == me => {
                match tokio::time::timeout(STATUS_TIMEOUT, metadata.raft.ensure_linearizable(ReadPolicy::ReadIndex))
                    .await
                {
                    Ok(Ok(_)) => (true, format!("node {me} leads the metadata group and a quorum confirmed it")),
                    Ok(Err(e)) => (false, format!("node {me} leads the metadata group but a quorum read failed: {e}")),
                    Err(_) => (
                        false,
                        format!("node {me} leads the metadata group but no quorum answered within {STATUS_TIMEOUT:?}"),
                    ),
                }
            }
            Some(leader) if !forwarded => match self.peer(leader) {
                Ok(mut peer) => match peer.cluster_status(Self::forwarded(pb::ClusterStatusRequest {})).await {
                    Ok(answer) => {
                        let answer = answer.into_inner();
                        (answer.metadata_available, answer.metadata_detail)
                    }
                    Err(status) => {
                        (false, format!("metadata leader node {leader} did not answer: {}", status.message()))
                    }
                },
                Err(e) => (false, e.message),
            },
            Some(leader) => (false, format!("metadata leadership is moving to node {leader}")),
            None => (false, "the metadata group has no leader; a majority of nodes must be running".to_string()),
        };
        let mut nodes = Vec::new();
        let state = self.node.metadata_state();
        let drained = state.drained.clone();
        let assigned = state.replicas_per_node();
        // Shown at their client addresses; pinged at their peer addresses.
        for (id, address) in self.node.client_addresses() {
            let (membership, metadata_role) = crate::membership::describe(&self.node, &state, id);
            let partitions_assigned = assigned.get(&id).copied().unwrap_or(0) as u32;
            let mut status = match self.ping_node(id).await {
                Ok(ping) => pb::NodeStatus {
                    id,
                    address,
                    alive: true,
                    partitions_led: ping.partitions_led,
                    partitions_hosted: ping.partitions_hosted,
                    error: String::new(),
                    clock_offset_ms: ping.clock_offset_ms,
                    clock_known: ping.clock_known,
                    drained: drained.contains(&id),
                    partitions_under_replicated: ping.partitions_under_replicated,
                    ..Default::default()
                },
                Err(error) => pb::NodeStatus {
                    id,
                    address,
                    alive: false,
                    error,
                    drained: drained.contains(&id),
                    ..Default::default()
                },
            };
            (status.membership, status.metadata_role, status.partitions_assigned) =
                (membership, metadata_role, partitions_assigned);
            nodes.push(status);
        }
        Ok(Response::new(pb::ClusterStatusResponse {
            error: None,
            nodes,
            metadata_leader: leader.unwrap_or(0),
            metadata_available: available,
            metadata_detail: detail,
            reassignments: self.reassignment_statuses(),
            cluster_id: state.members.cluster_id.clone(),
            move_throttle_bytes_per_sec: self.move_throttle_status(),
        }))
    }

    async fn ping(&self, _request: Request<pb::PingRequest>) -> Result<Response<pb::PingResponse>, Status> {
        Ok(Response::new(self.ping_local()))
    }

    async fn consumer_group_heartbeat(
        &self,
        request: Request<pb::ConsumerGroupHeartbeatRequest>,
    ) -> Result<Response<pb::ConsumerGroupHeartbeatResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let host = client_host(&request);
        let request = request.into_inner();
        let domain = group_api::heartbeat_request(request.clone(), host.clone());
        let local =
            async { self.node.coordinator.heartbeat(&self.node, domain).await.map(group_api::heartbeat_answer) };
        let forward = |mut peer: StrataClient<tonic::transport::Channel>| async move {
            let mut request = Self::forwarded(request);
            if let Ok(value) = host.parse() {
                request.metadata_mut().insert(CLIENT_HOST, value);
            }
            peer.consumer_group_heartbeat(request).await
        };
        self.on_coordinator(forwarded, |a: &mut pb::ConsumerGroupHeartbeatResponse, e| a.error = e, local, forward)
            .await
    }

    async fn offset_commit(
        &self,
        request: Request<pb::OffsetCommitRequest>,
    ) -> Result<Response<pb::OffsetCommitResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let request = request.into_inner();
        let local = async {
            let outcomes = self
                .node
                .coordinator
                .commit(
                    &self.node,
                    self,
                    &request.group_id,
                    &request.member_id,
                    request.member_epoch,
                    group_api::commit_offsets(&request.partitions),
                )
                .await?;
            Ok(group_api::commit_answer(&request.partitions, outcomes))
        };
        let forward = |mut peer: StrataClient<tonic::transport::Channel>| {
            let request = request.clone();
            async move { peer.offset_commit(Self::forwarded(request)).await }
        };
        self.on_coordinator(forwarded, |a: &mut pb::OffsetCommitResponse, e| a.error = e, local, forward).await
    }

    async fn offset_fetch(
        &self,
        request: Request<pb::OffsetFetchRequest>,
    ) -> Result<Response<pb::OffsetFetchResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let request = request.into_inner();
        let local = async {
            let state = self.node.coordinator.read_state(&self.node).await?;
            Ok(group_api::fetch_answer(&state, request.clone())?)
        };
        let forward = |mut peer: StrataClient<tonic::transport::Channel>| {
            let request = request.clone();
            async move { peer.offset_fetch(Self::forwarded(request)).await }
        };
        self.on_coordinator(forwarded, |a: &mut pb::OffsetFetchResponse, e| a.error = e, local, forward).await
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let local = async {
            let state = self.node.coordinator.read_state(&self.node).await?;
            Ok(group_api::list_answer(&state))
        };
        let forward = |mut peer: StrataClient<tonic::transport::Channel>| async move {
            peer.list_groups(Self::forwarded(pb::ListGroupsRequest {})).await
        };
        self.on_coordinator(forwarded, |a: &mut pb::ListGroupsResponse, e| a.error = e, local, forward).await
    }

    async fn describe_group(
        &self,
        request: Request<pb::DescribeGroupRequest>,
    ) -> Result<Response<pb::DescribeGroupResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let request = request.into_inner();
        let local = async {
            let state = self.node.coordinator.read_state(&self.node).await?;
            Ok(group_api::describe_answer(&self.node.coordinator, self, &state, &request.group_id).await?)
        };
        let forward = |mut peer: StrataClient<tonic::transport::Channel>| {
            let request = request.clone();
            async move { peer.describe_group(Self::forwarded(request)).await }
        };
        self.on_coordinator(forwarded, |a: &mut pb::DescribeGroupResponse, e| a.error = e, local, forward).await
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let request = request.into_inner();
        let local = async {
            self.node.coordinator.delete_group(&self.node, &request.group_id).await?;
            Ok(pb::DeleteGroupResponse { error: None })
        };
        let forward = |mut peer: StrataClient<tonic::transport::Channel>| {
            let request = request.clone();
            async move { peer.delete_group(Self::forwarded(request)).await }
        };
        self.on_coordinator(forwarded, |a: &mut pb::DeleteGroupResponse, e| a.error = e, local, forward).await
    }

    async fn reset_offsets(
        &self,
        request: Request<pb::ResetOffsetsRequest>,
    ) -> Result<Response<pb::ResetOffsetsResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let request = request.into_inner();
        let local = async {
            let offsets = request.offsets.iter().map(|o| (o.topic.clone(), o.partition, o.offset)).collect();
            self.node.coordinator.reset_offsets(&self.node, self, &request.group_id, offsets).await?;
            Ok(pb::ResetOffsetsResponse { error: None })
        };
        let forward = |mut peer: StrataClient<tonic::transport::Channel>| {
            let request = request.clone();
            async move { peer.reset_offsets(Self::forwarded(request)).await }
        };
        self.on_coordinator(forwarded, |a: &mut pb::ResetOffsetsResponse, e| a.error = e, local, forward).await
    }

    async fn add_offsets_to_txn(
        &self,
        request: Request<pb::AddOffsetsToTxnRequest>,
    ) -> Result<Response<pb::AddOffsetsToTxnResponse>, Status> {
        self.add_offsets_to_txn_inner(request).await
    }

    async fn end_txn(&self, request: Request<pb::EndTxnRequest>) -> Result<Response<pb::EndTxnResponse>, Status> {
        self.end_txn_inner(request).await
    }

    async fn add_partitions_to_txn(
        &self,
        request: Request<pb::AddPartitionsToTxnRequest>,
    ) -> Result<Response<pb::AddPartitionsToTxnResponse>, Status> {
        self.add_partitions_to_txn_inner(request).await
    }

    async fn write_txn_marker(
        &self,
        request: Request<pb::WriteTxnMarkerRequest>,
    ) -> Result<Response<pb::WriteTxnMarkerResponse>, Status> {
        match self.write_txn_marker_inner(request.into_inner()).await {
            Ok(answer) => Ok(Response::new(answer)),
            Err(error) => err(error, |a: &mut pb::WriteTxnMarkerResponse, e| a.error = e),
        }
    }

    async fn list_transactions(
        &self,
        request: Request<pb::ListTransactionsRequest>,
    ) -> Result<Response<pb::ListTransactionsResponse>, Status> {
        self.list_transactions_inner(request).await
    }

    async fn describe_transaction(
        &self,
        request: Request<pb::DescribeTransactionRequest>,
    ) -> Result<Response<pb::DescribeTransactionResponse>, Status> {
        self.describe_transaction_inner(request).await
    }

    async fn abort_transaction(
        &self,
        request: Request<pb::AbortTransactionRequest>,
    ) -> Result<Response<pb::AbortTransactionResponse>, Status> {
        self.abort_transaction_inner(request).await
    }

    async fn register_node(
        &self,
        request: Request<pb::RegisterNodeRequest>,
    ) -> Result<Response<pb::RegisterNodeResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let request = request.into_inner();
        let set = |a: &mut pb::RegisterNodeResponse, e| a.error = e;
        if self.node.peers.address(request.node_id).is_none() {
            let members: Vec<u64> = self.node.peers.addresses().into_keys().collect();
            return err(
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "node {} is not a node of this cluster (nodes {members:?}); only they register addresses",
                        request.node_id
                    ),
                ),
                set,
            );
        }
        let command = MetaCommand::RegisterNode { node_id: request.node_id, advertised: request.advertised.clone() };
        self.write_metadata(
            command,
            forwarded,
            set,
            |mut peer| async move { peer.register_node(Self::forwarded(request)).await },
            |response| match response {
                MetaResponse::NodeRegistered => Some(pb::RegisterNodeResponse { error: None }),
                _ => None,
            },
        )
        .await
    }

    async fn reassign_partition(
        &self,
        request: Request<pb::ReassignPartitionRequest>,
    ) -> Result<Response<pb::ReassignPartitionResponse>, Status> {
        self.reassign_partition_inner(request).await
    }

    async fn reconfigure_partition(
        &self,
        request: Request<pb::ReconfigurePartitionRequest>,
    ) -> Result<Response<pb::ReconfigurePartitionResponse>, Status> {
        self.reconfigure_partition_inner(request.into_inner()).await
    }

    async fn rebalance(
        &self,
        request: Request<pb::RebalanceRequest>,
    ) -> Result<Response<pb::RebalanceResponse>, Status> {
        self.rebalance_inner(request).await
    }

    async fn drain_node(
        &self,
        request: Request<pb::DrainNodeRequest>,
    ) -> Result<Response<pb::DrainNodeResponse>, Status> {
        self.drain_node_inner(request).await
    }

    async fn join(&self, request: Request<pb::JoinRequest>) -> Result<Response<pb::JoinResponse>, Status> {
        self.join_inner(request).await
    }

    async fn add_voter(&self, request: Request<pb::AddVoterRequest>) -> Result<Response<pb::AddVoterResponse>, Status> {
        self.add_voter_inner(request).await
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        self.remove_node_inner(request).await
    }
}

/// The base offset of the first batch `records` holds when it starts after
/// `offset`: a read returns the batch holding `offset` first, so a later
/// start means the batches holding `offset` are gone.
fn trimmed_below(records: &[u8], offset: u64) -> Option<u64> {
    let header = strata_record::read_header(records).ok()?;
    (header.base_offset > offset).then_some(header.base_offset)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_read_that_starts_after_the_offset_names_the_new_log_start() {
        let records = |n: usize| (0..n).map(|_| strata_record::Record::default()).collect::<Vec<_>>();
        let mut batch = strata_record::encode_batch(&records(3), Default::default()).unwrap().to_vec();
        strata_record::set_base_offset(&mut batch, 10);
        assert_eq!(super::trimmed_below(&batch, 4), Some(10));
        assert_eq!(super::trimmed_below(&batch, 10), None);
        assert_eq!(super::trimmed_below(&batch, 11), None, "the batch holds offset 11");
        assert_eq!(super::trimmed_below(&[], 4), None);
    }
}
