//! The outgoing side of the peer transport: Raft messages of every group
//! this node runs, and its liveness beats, to the peers (see `mod.rs` for
//! the layout).
//!
//! `PeerChannels` keeps two lazily connected gRPC channels per peer, one
//! per [`Lane`]: the control lane carries what keeps leaders in place
//! (heartbeat batches, Vote, PreVote, TransferLeader, node beats), the data
//! lane everything else (AppendEntries with entries, snapshot streams,
//! requests forwarded to a leader). Each channel is its own HTTP/2
//! connection over its own TCP connection, so a 4 MiB AppendEntries or a
//! snapshot stream never sits in front of a heartbeat batch in a socket
//! buffer or an HTTP/2 flow-control window.
//! `Router` implements openraft-multi's `GroupRouter` over them, sending
//! heartbeats (empty AppendEntries) of every group to one peer together in
//! batch calls; `GroupNetworkFactory` hands each group's Raft its view of
//! the router.
//!
//! AppendEntries with entries and snapshot chunks to a replica joining a
//! partition go through the node's `MoveThrottle` first (`throttle.rs`).
//!
//! Snapshots stream in chunks: a header chunk (vote, snapshot meta, the
//! group's state) and, for partition groups, the record batches from the
//! snapshot's log start to its next offset, read from this node's store as
//! they are sent, then the partition's idempotency keys as of the snapshot,
//! then a trailer. What the body holds, how the receiver stages it and when
//! it is installed is `strata_storage::snapshot_stream`'s; this side only
//! carries it.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{SnapshotOf, VoteOf};
use openraft::{BasicNode, RPCTypes};
use openraft_multi::{GroupNetworkAdapter, GroupRouter};
use serde::de::DeserializeOwned;
use serde::Serialize;
use strata_core::limits::{
    APPEND_ENTRIES_TIMEOUT, HEARTBEAT_BATCHES_IN_FLIGHT as BATCHES_IN_FLIGHT, HEARTBEAT_BATCH_QUEUE as BATCH_QUEUE,
    HEARTBEAT_BATCH_TIMEOUT as BATCH_TIMEOUT, MAX_APPEND_ENTRIES_BYTES, MAX_GRPC_MESSAGE_BYTES,
    MAX_HEARTBEAT_BATCH as MAX_BATCH, PEER_CONNECT_TIMEOUT, PEER_KEEPALIVE_INTERVAL, PEER_KEEPALIVE_TIMEOUT,
};
use strata_proto::v1::raft_transport_client::RaftTransportClient;
use strata_proto::v1::{
    NodeBeat, RaftBatchRequest, RaftRequest, RaftResponse, RaftRpcKind, SnapshotChunk, SnapshotTrailer,
};
use strata_storage::{SnapshotPayload, Store, StreamError, StreamPart, TypeConfig};
use tokio::sync::{mpsc, oneshot};
use tonic::transport::{Channel, Endpoint};

use super::throttle::MoveThrottle;
use super::WireResult;

/// Why a message to a peer got no answer. Raft calls turn it into
/// openraft's `Unreachable` (retried on the next round); beats drop it.
///
/// The cause's text is part of each message rather than a `source`: these
/// errors end up as text (in openraft's errors and log lines), where a
/// source chain would be lost.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("node {0} has no known address")]
    NoAddress(u64),
    #[error("bad address {address}: {reason}")]
    BadAddress { address: String, reason: String },
    #[error("batcher stopped")]
    BatcherStopped,
    #[error("batch dropped")]
    BatchDropped,
    #[error("batch call timed out")]
    BatchTimedOut,
    #[error("call timed out")]
    TimedOut,
    #[error("batch answered {answered} of {sent} requests")]
    BatchShort { answered: usize, sent: usize },
    /// The peer's gRPC server refused the call.
    #[error("{}", .0.message())]
    Status(tonic::Status),
    #[error("{0}")]
    Encode(postcard::Error),
    #[error("bad raft reply: {0}")]
    BadReply(postcard::Error),
    #[error("{0}")]
    BadSnapshotReply(postcard::Error),
    #[error("{0}")]
    SnapshotPayload(io::Error),
    #[error("{0}")]
    SnapshotSource(StreamError),
    /// The peer answered with an error: its transport's, or its Raft's
    /// (a fatal, stopped Raft).
    #[error("{0}")]
    Remote(String),
}

impl SendError {
    /// The error as openraft's retryable `Unreachable`.
    fn unreachable(&self) -> RPCError<TypeConfig> {
        RPCError::Unreachable(Unreachable::new(self))
    }
}

/// Which of a peer's two connections a message goes on (see the module
/// documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Heartbeat batches, votes, pre-votes, leadership transfers, node
    /// beats: small messages whose delay costs elections.
    Control,
    /// AppendEntries with entries, snapshot streams and every other call.
    Data,
}

impl Lane {
    /// The lane of a Raft call of `kind`; `batched` calls are heartbeats.
    pub fn of(kind: RaftRpcKind, batched: bool) -> Lane {
        match kind {
            RaftRpcKind::AppendEntries if !batched => Lane::Data,
            RaftRpcKind::AppendEntries | RaftRpcKind::Vote | RaftRpcKind::PreVote | RaftRpcKind::TransferLeader => {
                Lane::Control
            }
            _ => Lane::Data,
        }
    }
}

/// Addresses of peer nodes and two lazily connected channels to each, one
/// per lane.
#[derive(Clone)]
pub struct PeerChannels {
    addresses: Arc<RwLock<BTreeMap<u64, String>>>,
    channels: Arc<Mutex<HashMap<(u64, Lane), Channel>>>,
    /// This node's cluster id, sent with every call (see `ClusterStamp`).
    cluster_id: ClusterId,
}

/// A cluster id that is learnt once the cluster forms ("" before); shared
/// by the sending and the receiving side of the transport.
pub type ClusterId = Arc<RwLock<String>>;

/// The gRPC metadata key that carries the sender's cluster id.
pub const CLUSTER_ID_HEADER: &str = "strata-cluster-id";

/// Stamps every peer call with this node's cluster id, so that a node of
/// another cluster refuses it (`incoming::check_cluster`).
#[derive(Clone)]
pub struct ClusterStamp(ClusterId);

impl tonic::service::Interceptor for ClusterStamp {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let id = self.0.read().expect("lock").clone();
        if let Ok(value) = id.parse() {
            if !id.is_empty() {
                request.metadata_mut().insert(CLUSTER_ID_HEADER, value);
            }
        }
        Ok(request)
    }
}

/// A peer transport client whose calls carry the cluster id.
pub type PeerClient = RaftTransportClient<tonic::service::interceptor::InterceptedService<Channel, ClusterStamp>>;

impl PeerChannels {
    pub fn new(addresses: BTreeMap<u64, String>, cluster_id: ClusterId) -> PeerChannels {
        PeerChannels { addresses: Arc::new(RwLock::new(addresses)), channels: Arc::default(), cluster_id }
    }

    /// A transport client to `node` on the data lane (see `ClusterStamp`).
    pub fn client(&self, node: u64) -> Result<PeerClient, SendError> {
        self.lane_client(node, Lane::Data)
    }

    /// A transport client to `node` on `lane` (see `ClusterStamp`).
    pub fn lane_client(&self, node: u64, lane: Lane) -> Result<PeerClient, SendError> {
        Ok(RaftTransportClient::with_interceptor(self.lane_channel(node, lane)?, ClusterStamp(self.cluster_id.clone()))
            .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES))
    }

    pub fn address(&self, node: u64) -> Option<String> {
        self.addresses.read().expect("lock").get(&node).cloned()
    }

    pub fn addresses(&self) -> BTreeMap<u64, String> {
        self.addresses.read().expect("lock").clone()
    }

    /// Learns (or updates) where `node` is reached; a changed address drops
    /// the old channel, so the next call connects to the new one.
    pub fn set_address(&self, node: u64, address: &str) {
        let mut addresses = self.addresses.write().expect("lock");
        if addresses.get(&node).map(String::as_str) != Some(address) {
            addresses.insert(node, address.to_string());
            self.channels.lock().expect("lock").retain(|(peer, _), _| *peer != node);
        }
    }

    /// Forgets `node` (removed from the cluster).
    pub fn forget(&self, node: u64) {
        self.addresses.write().expect("lock").remove(&node);
        self.channels.lock().expect("lock").retain(|(peer, _), _| *peer != node);
    }

    /// The data lane's channel to `node` (requests forwarded to a leader
    /// go there too).
    pub fn channel(&self, node: u64) -> Result<Channel, SendError> {
        self.lane_channel(node, Lane::Data)
    }

    /// The channel to `node` on `lane`, connected on first use; reconnects
    /// by itself.
    pub fn lane_channel(&self, node: u64, lane: Lane) -> Result<Channel, SendError> {
        if let Some(channel) = self.channels.lock().expect("lock").get(&(node, lane)) {
            return Ok(channel.clone());
        }
        let address = self.address(node).ok_or(SendError::NoAddress(node))?;
        let channel = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| SendError::BadAddress { reason: e.to_string(), address: address.clone() })?
            .connect_timeout(PEER_CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(PEER_KEEPALIVE_INTERVAL)
            .keep_alive_timeout(PEER_KEEPALIVE_TIMEOUT)
            .connect_lazy();
        self.channels.lock().expect("lock").insert((node, lane), channel.clone());
        Ok(channel)
    }

    /// Sends a liveness beat to `peer`, giving up after `timeout`.
    pub async fn send_beat(&self, peer: u64, beat: NodeBeat, timeout: Duration) -> Result<(), SendError> {
        let mut client = self.lane_client(peer, Lane::Control)?;
        match tokio::time::timeout(timeout, client.beat(beat)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(status)) => Err(SendError::Status(status)),
            Err(_) => Err(SendError::TimedOut),
        }
    }
}

/// Sends Raft RPCs of any group to any peer.
#[derive(Clone)]
pub struct Router {
    node_id: u64,
    peers: PeerChannels,
    store: Store,
    /// Per peer: the queue of heartbeats waiting to go out in one batch.
    batchers: Arc<Mutex<HashMap<u64, mpsc::Sender<Queued>>>>,
    /// Paces partition moves' data to joining replicas.
    throttle: MoveThrottle,
}

/// A heartbeat waiting for its batch, and where its answer goes (an error
/// is shared by every heartbeat of the batch).
type Queued = (RaftRequest, Answer);

/// Where a heartbeat's answer goes.
type Answer = oneshot::Sender<Result<RaftResponse, Arc<SendError>>>;

impl Router {
    pub fn new(node_id: u64, peers: PeerChannels, store: Store) -> Router {
        Router { node_id, peers, store, batchers: Arc::default(), throttle: MoveThrottle::default() }
    }

    /// The throttle of partition moves' data this router sends.
    pub fn move_throttle(&self) -> &MoveThrottle {
        &self.throttle
    }

    /// The queue of `target`'s batcher, started on first use.
    fn batcher(&self, target: u64) -> mpsc::Sender<Queued> {
        let mut batchers = self.batchers.lock().expect("lock");
        if let Some(sender) = batchers.get(&target).filter(|s| !s.is_closed()) {
            return sender.clone();
        }
        let (sender, receiver) = mpsc::channel(BATCH_QUEUE);
        tokio::spawn(run_batcher(self.clone(), target, receiver));
        batchers.insert(target, sender.clone());
        sender
    }

    /// Sends a heartbeat (an empty AppendEntries) through `target`'s batcher.
    async fn call_batched<P: DeserializeOwned>(
        &self,
        target: u64,
        request: RaftRequest,
        option: &RPCOption,
    ) -> Result<P, RPCError<TypeConfig>> {
        let ttl = option.hard_ttl();
        let (tx, rx) = oneshot::channel();
        let timeout =
            || RPCError::Timeout(Timeout { action: RPCTypes::AppendEntries, id: self.node_id, target, timeout: ttl });
        let answer = tokio::time::timeout(ttl, async {
            self.batcher(target).send((request, tx)).await.map_err(|_| Arc::new(SendError::BatcherStopped))?;
            rx.await.map_err(|_| Arc::new(SendError::BatchDropped))?
        })
        .await
        .map_err(|_| timeout())?
        .map_err(|e| e.unreachable())?;
        decode_answer(answer)
    }

    fn client(&self, target: u64, lane: Lane) -> Result<PeerClient, SendError> {
        self.peers.lane_client(target, lane)
    }

    /// One Raft RPC; `batched` ones (heartbeats) share calls with others
    /// to the same peer.
    #[allow(clippy::too_many_arguments)]
    async fn call<Q: Serialize, P: DeserializeOwned>(
        &self,
        target: u64,
        group_id: u64,
        kind: RaftRpcKind,
        rpc: &Q,
        option: &RPCOption,
        action: RPCTypes,
        batched: bool,
    ) -> Result<P, RPCError<TypeConfig>> {
        let payload = strata_storage::encode_sized(rpc)
            .map_err(|e| RPCError::Network(NetworkError::new(&SendError::Encode(e))))?;
        if batched {
            let request = RaftRequest { group_id, kind: kind as i32, payload: payload.into() };
            return self.call_batched(target, request, option).await;
        }
        // Entries to a replica joining the group wait for the move
        // throttle before the call's deadline starts.
        if kind == RaftRpcKind::AppendEntries {
            self.throttle.pace(group_id, target, payload.len()).await;
        }
        let request = RaftRequest { group_id, kind: kind as i32, payload: payload.into() };
        let mut client = self.client(target, Lane::of(kind, batched)).map_err(|e| e.unreachable())?;
        let ttl = call_deadline(kind, option.hard_ttl());
        let answer = match tokio::time::timeout(ttl, client.call(request)).await {
            Err(_) => {
                return Err(RPCError::Timeout(Timeout { action, id: self.node_id, target, timeout: ttl }));
            }
            Ok(Err(status)) => return Err(SendError::Status(status).unreachable()),
            Ok(Ok(answer)) => answer.into_inner(),
        };
        decode_answer(answer)
    }

    async fn send_snapshot(
        &self,
        target: u64,
        group_id: u64,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, Vec<u8>>,
    ) -> Result<SnapshotResponse<TypeConfig>, SendError> {
        let header = postcard::to_allocvec(&(vote, snapshot.meta.clone())).map_err(SendError::Encode)?;
        let payload = SnapshotPayload::decode(&snapshot.snapshot).map_err(SendError::SnapshotPayload)?;
        let mut source = self.store.snapshot_source(group_id, &payload).map_err(SendError::SnapshotSource)?;
        let (tx, rx) = tokio::sync::mpsc::channel::<SnapshotChunk>(2);
        let first =
            SnapshotChunk { group_id, header: header.into(), data: snapshot.snapshot.into(), ..Default::default() };
        // The body is read as it is sent. A read error ends the stream
        // without its trailer, so the receiver installs nothing. Each
        // chunk to a joining replica waits for the move throttle.
        let throttle = self.throttle.clone();
        tokio::spawn(async move {
            throttle.pace(group_id, target, chunk_bytes(&first)).await;
            if tx.send(first).await.is_err() {
                return;
            }
            loop {
                let chunk = match source.next_part().await {
                    Ok(Some(part)) => match chunk_of(group_id, part) {
                        Ok(chunk) => chunk,
                        Err(error) => {
                            tracing::warn!(group = group_id, %error, "cannot encode a snapshot chunk");
                            return;
                        }
                    },
                    Ok(None) => return,
                    Err(error) => {
                        tracing::warn!(group = group_id, %error, "snapshot stream stopped");
                        return;
                    }
                };
                throttle.pace(group_id, target, chunk_bytes(&chunk)).await;
                if tx.send(chunk).await.is_err() {
                    return;
                }
            }
        });
        let mut client = self.client(target, Lane::Data)?;
        let answer = client
            .install_snapshot(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(SendError::Status)?
            .into_inner();
        if !answer.transport_error.is_empty() {
            return Err(SendError::Remote(answer.transport_error));
        }
        let result: WireResult<SnapshotResponse<TypeConfig>> =
            postcard::from_bytes(&answer.payload).map_err(SendError::BadSnapshotReply)?;
        result.map_err(SendError::Remote)
    }
}

/// How long an unbatched call to a peer may take: openraft's deadline,
/// but at least APPEND_ENTRIES_TIMEOUT for entries (see there).
fn call_deadline(kind: RaftRpcKind, openraft_ttl: Duration) -> Duration {
    match kind {
        RaftRpcKind::AppendEntries => openraft_ttl.max(APPEND_ENTRIES_TIMEOUT),
        _ => openraft_ttl,
    }
}

/// The bytes of a snapshot chunk that the move throttle counts: its
/// payload (the framing is a few bytes).
fn chunk_bytes(chunk: &SnapshotChunk) -> usize {
    chunk.header.len() + chunk.data.len() + chunk.key_rows.len()
}

/// The wire form of one part of a snapshot stream's body.
fn chunk_of(group_id: u64, part: StreamPart) -> Result<SnapshotChunk, postcard::Error> {
    let mut chunk = SnapshotChunk { group_id, ..Default::default() };
    match part {
        StreamPart::Batches(batches) => chunk.data = batches.into(),
        StreamPart::Keys(rows) => chunk.key_rows = postcard::to_allocvec(&rows)?.into(),
        StreamPart::Trailer(t) => {
            chunk.trailer = Some(SnapshotTrailer {
                end_offset: t.end_offset,
                batch_count: t.batch_count,
                key_row_count: t.key_row_count,
                checksum: t.checksum,
            })
        }
    }
    Ok(chunk)
}

impl GroupRouter<TypeConfig, u64> for Router {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &self,
        target: u64,
        group_id: u64,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        // Heartbeats of many groups to one peer go together (see `run_batcher`).
        let heartbeat = rpc.entries.is_empty();
        let mut rpc = rpc;
        // Entries past MAX_APPEND_ENTRIES_BYTES wait for the next message.
        let kept = entries_within(&rpc.entries, MAX_APPEND_ENTRIES_BYTES);
        let cut = (kept < rpc.entries.len()).then(|| {
            rpc.entries.truncate(kept);
            rpc.entries.last().map(|entry| entry.log_id)
        });
        let answer: AppendEntriesResponse<TypeConfig> = self
            .call(target, group_id, RaftRpcKind::AppendEntries, &rpc, &option, RPCTypes::AppendEntries, heartbeat)
            .await?;
        Ok(match (answer, cut) {
            (AppendEntriesResponse::Success, Some(last_sent)) => AppendEntriesResponse::PartialSuccess(last_sent),
            (answer, _) => answer,
        })
    }

    async fn vote(
        &self,
        target: u64,
        group_id: u64,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(target, group_id, RaftRpcKind::Vote, &rpc, &option, RPCTypes::Vote, false).await
    }

    async fn pre_vote(
        &self,
        target: u64,
        group_id: u64,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(target, group_id, RaftRpcKind::PreVote, &rpc, &option, RPCTypes::Vote, false).await
    }

    async fn transfer_leader(
        &self,
        target: u64,
        group_id: u64,
        rpc: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(target, group_id, RaftRpcKind::TransferLeader, &rpc, &option, RPCTypes::TransferLeader, false).await
    }

    async fn full_snapshot(
        &self,
        target: u64,
        group_id: u64,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, Vec<u8>>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            result = self.send_snapshot(target, group_id, vote, snapshot) => {
                result.map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))
            }
        }
    }
}

/// How many of `entries`, from the first, fit in `budget` bytes encoded;
/// at least one (a batch is at most MAX_BATCH_BYTES, which the budget
/// holds).
fn entries_within<E: Serialize>(entries: &[E], budget: usize) -> usize {
    let mut used = 0;
    for (index, entry) in entries.iter().enumerate() {
        used += postcard::experimental::serialized_size(entry).unwrap_or(usize::MAX / 2);
        if used > budget {
            return index.max(1);
        }
    }
    entries.len()
}

fn decode_answer<P: DeserializeOwned>(answer: RaftResponse) -> Result<P, RPCError<TypeConfig>> {
    if !answer.transport_error.is_empty() {
        return Err(SendError::Remote(answer.transport_error).unreachable());
    }
    let result: WireResult<P> = postcard::from_bytes(&answer.payload)
        .map_err(|e| RPCError::Network(NetworkError::new(&SendError::BadReply(e))))?;
    // A remote error here is a fatal (stopped) Raft: treat it as unreachable.
    result.map_err(|e| SendError::Remote(e).unreachable())
}

/// Sends the heartbeats queued for `target` in batch calls, at most
/// `BATCHES_IN_FLIGHT` at a time: whatever queues while calls are out goes
/// in the next one. Ends when the router is gone.
async fn run_batcher(router: Router, target: u64, mut queue: mpsc::Receiver<Queued>) {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT));
    while let Some(first) = queue.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let client = router.client(target, Lane::of(RaftRpcKind::AppendEntries, true));
        tokio::spawn(async move {
            let (requests, answers): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let mut answers: Vec<_> = answers.into_iter().map(Some).collect();
            let error = match client {
                Ok(client) => {
                    let sent = answers.len();
                    let call = send_batch(client, requests, &mut answers, permit);
                    match tokio::time::timeout(BATCH_TIMEOUT, call).await {
                        Ok(Ok(())) => {
                            let answered = sent - answers.iter().filter(|a| a.is_some()).count();
                            SendError::BatchShort { answered, sent }
                        }
                        Ok(Err(error)) => error,
                        Err(_) => SendError::BatchTimedOut,
                    }
                }
                Err(error) => error,
            };
            // Whoever got no answer gets the error (none, if all were answered).
            let error = Arc::new(error);
            answers.into_iter().flatten().for_each(|a| drop(a.send(Err(error.clone()))));
        });
    }
}

/// Sends one heartbeat batch and hands each answer to its waiter as it
/// arrives (taking it out of `answers`). The batch slot (`permit`) is
/// given back once the peer has taken the batch, not when its slowest
/// group answers: a busy group then delays its own heartbeat only. A peer
/// of an earlier version, without `StreamBatch`, is sent `CallBatch`,
/// which answers all at once (and holds the slot until then).
async fn send_batch(
    mut client: PeerClient,
    requests: Vec<RaftRequest>,
    answers: &mut [Option<Answer>],
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<(), SendError> {
    let request = RaftBatchRequest { requests };
    let mut stream = match client.stream_batch(request.clone()).await {
        Ok(stream) => stream.into_inner(),
        Err(status) if status.code() == tonic::Code::Unimplemented => {
            let responses = client.call_batch(request).await.map_err(SendError::Status)?.into_inner().responses;
            drop(permit);
            if responses.len() == answers.len() {
                for (answer, response) in answers.iter_mut().zip(responses) {
                    answer.take().map(|a| a.send(Ok(response)));
                }
            }
            return Ok(());
        }
        Err(status) => return Err(SendError::Status(status)),
    };
    drop(permit);
    while let Some(answer) = stream.message().await.map_err(SendError::Status)? {
        let waiter = answers.get_mut(answer.index as usize).and_then(Option::take);
        if let (Some(waiter), Some(response)) = (waiter, answer.response) {
            let _ = waiter.send(Ok(response));
        }
    }
    Ok(())
}

/// Creates the per-peer network of one group.
#[derive(Clone)]
pub struct GroupNetworkFactory {
    pub router: Router,
    pub group_id: u64,
}

impl RaftNetworkFactory<TypeConfig> for GroupNetworkFactory {
    type Network = GroupNetworkAdapter<TypeConfig, u64, Router>;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> Self::Network {
        GroupNetworkAdapter::new(self.router.clone(), target, self.group_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::SocketAddr;

    use strata_proto::v1::raft_transport_server::{RaftTransport, RaftTransportServer};
    use strata_proto::v1::{NodeBeatAck, RaftBatchAnswer, RaftBatchResponse};
    use tonic::{Request, Response, Status, Streaming};

    #[test]
    fn entries_wait_longer_than_openraft_asks_and_votes_do_not() {
        let heartbeat = Duration::from_millis(100);
        assert_eq!(call_deadline(RaftRpcKind::AppendEntries, heartbeat), APPEND_ENTRIES_TIMEOUT);
        assert_eq!(call_deadline(RaftRpcKind::AppendEntries, Duration::from_secs(9)), Duration::from_secs(9));
        assert_eq!(call_deadline(RaftRpcKind::Vote, heartbeat), heartbeat);
        assert_eq!(call_deadline(RaftRpcKind::PreVote, heartbeat), heartbeat);
    }

    /// A peer that answers nothing useful but notes, for every call, what
    /// it was and which connection (the caller's port) carried it.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<(&'static str, u16)>>>);

    impl Recorder {
        fn note<T>(&self, what: &'static str, request: &Request<T>) {
            let port = request.remote_addr().expect("a TCP peer").port();
            self.0.lock().unwrap().push((what, port));
        }

        /// The connections (ports) that carried `what`.
        fn ports(&self, what: &str) -> std::collections::BTreeSet<u16> {
            self.0.lock().unwrap().iter().filter(|(w, _)| *w == what).map(|(_, port)| *port).collect()
        }
    }

    fn refused() -> RaftResponse {
        RaftResponse { payload: Default::default(), transport_error: "recorded".into() }
    }

    #[tonic::async_trait]
    impl RaftTransport for Recorder {
        async fn call(&self, request: Request<RaftRequest>) -> Result<Response<RaftResponse>, Status> {
            let what = match RaftRpcKind::try_from(request.get_ref().kind) {
                Ok(RaftRpcKind::AppendEntries) => "entries",
                Ok(RaftRpcKind::Vote) => "vote",
                Ok(RaftRpcKind::PreVote) => "pre-vote",
                Ok(RaftRpcKind::TransferLeader) => "transfer",
                _ => "other",
            };
            self.note(what, &request);
            Ok(Response::new(refused()))
        }

        async fn beat(&self, request: Request<NodeBeat>) -> Result<Response<NodeBeatAck>, Status> {
            self.note("beat", &request);
            Ok(Response::new(NodeBeatAck {}))
        }

        async fn call_batch(&self, request: Request<RaftBatchRequest>) -> Result<Response<RaftBatchResponse>, Status> {
            self.note("heartbeats", &request);
            let responses = request.get_ref().requests.iter().map(|_| refused()).collect();
            Ok(Response::new(RaftBatchResponse { responses }))
        }

        type StreamBatchStream = futures::stream::Iter<std::vec::IntoIter<Result<RaftBatchAnswer, Status>>>;

        async fn stream_batch(
            &self,
            request: Request<RaftBatchRequest>,
        ) -> Result<Response<Self::StreamBatchStream>, Status> {
            self.note("heartbeats", &request);
            let answers = (0..request.get_ref().requests.len())
                .map(|index| Ok(RaftBatchAnswer { index: index as u32, response: Some(refused()) }))
                .collect::<Vec<_>>();
            Ok(Response::new(futures::stream::iter(answers)))
        }

        async fn install_snapshot(
            &self,
            request: Request<Streaming<SnapshotChunk>>,
        ) -> Result<Response<RaftResponse>, Status> {
            self.note("snapshot", &request);
            Ok(Response::new(refused()))
        }
    }

    /// A peer whose group `SLOW_GROUP` answers heartbeats only once
    /// `release` has permits (a group core busy with an fsync), and every
    /// other group at once. `streams: false` is a peer of an earlier
    /// version, without `StreamBatch`.
    #[derive(Clone)]
    struct BusyGroupPeer {
        release: Arc<tokio::sync::Semaphore>,
        slow_received: Arc<std::sync::atomic::AtomicUsize>,
        streams: bool,
    }

    const SLOW_GROUP: u64 = 1;

    fn accepted() -> RaftResponse {
        let payload = postcard::to_allocvec(&WireResult::<()>::Ok(())).unwrap();
        RaftResponse { payload: payload.into(), transport_error: String::new() }
    }

    impl BusyGroupPeer {
        async fn answer(&self, request: &RaftRequest) -> RaftResponse {
            if request.group_id == SLOW_GROUP {
                self.slow_received.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _permit = self.release.acquire().await.unwrap();
            }
            accepted()
        }
    }

    #[tonic::async_trait]
    impl RaftTransport for BusyGroupPeer {
        async fn call(&self, _: Request<RaftRequest>) -> Result<Response<RaftResponse>, Status> {
            Err(Status::unimplemented("heartbeats only"))
        }

        async fn beat(&self, _: Request<NodeBeat>) -> Result<Response<NodeBeatAck>, Status> {
            Ok(Response::new(NodeBeatAck {}))
        }

        async fn call_batch(&self, request: Request<RaftBatchRequest>) -> Result<Response<RaftBatchResponse>, Status> {
            let requests = request.into_inner().requests;
            let responses = futures::future::join_all(requests.iter().map(|r| self.answer(r))).await;
            Ok(Response::new(RaftBatchResponse { responses }))
        }

        type StreamBatchStream = super::super::incoming::BatchAnswers;

        async fn stream_batch(
            &self,
            request: Request<RaftBatchRequest>,
        ) -> Result<Response<Self::StreamBatchStream>, Status> {
            if !self.streams {
                return Err(Status::unimplemented("an earlier version"));
            }
            let peer = self.clone();
            let answers = super::super::incoming::answers_as_ready(request.into_inner().requests, move |r| {
                let peer = peer.clone();
                async move { Ok(peer.answer(&r).await) }
            });
            Ok(Response::new(answers))
        }

        async fn install_snapshot(
            &self,
            _: Request<Streaming<SnapshotChunk>>,
        ) -> Result<Response<RaftResponse>, Status> {
            Err(Status::unimplemented("heartbeats only"))
        }
    }

    async fn router_to(peer: BusyGroupPeer) -> (Router, tempfile::TempDir) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(RaftTransportServer::new(peer))
                .serve_with_incoming(incoming),
        );
        let peers = PeerChannels::new(BTreeMap::from([(2, address.to_string())]), ClusterId::default());
        let dir = tempfile::tempdir().unwrap();
        (Router::new(1, peers, Store::open(dir.path()).unwrap()), dir)
    }

    /// A heartbeat of group `group` to the peer, through its batcher.
    fn heartbeat(router: &Router, group: u64) -> tokio::task::JoinHandle<Result<(), RPCError<TypeConfig>>> {
        let router = router.clone();
        tokio::spawn(async move {
            let option = RPCOption::new(Duration::from_secs(30));
            router
                .call::<_, ()>(2, group, RaftRpcKind::AppendEntries, &[0u8; 16], &option, RPCTypes::AppendEntries, true)
                .await
        })
    }

    /// A busy group's heartbeats, however many batches they fill, do not
    /// hold back another group's: every batch slot is given back once the
    /// peer has the batch. (With answers that waited for the whole batch,
    /// the busy group's two batches took both slots and the third waited.)
    #[tokio::test]
    async fn a_busy_group_does_not_hold_back_other_groups_heartbeats() {
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let slow_received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peer = BusyGroupPeer { release: release.clone(), slow_received: slow_received.clone(), streams: true };
        let (router, _dir) = router_to(peer).await;
        let mut slow = Vec::new();
        for _ in 0..BATCHES_IN_FLIGHT {
            slow.push(heartbeat(&router, SLOW_GROUP));
            // Each in a batch of its own: wait until the peer holds it.
            let held = slow.len();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while slow_received.load(std::sync::atomic::Ordering::SeqCst) < held {
                assert!(tokio::time::Instant::now() < deadline, "the peer never got the busy group's heartbeat");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let other = tokio::time::timeout(Duration::from_secs(10), heartbeat(&router, 2)).await;
        assert!(matches!(other, Ok(Ok(Ok(())))), "another group's heartbeat is answered while the busy one waits");
        assert!(slow.iter().all(|h| !h.is_finished()), "the busy group's heartbeats are still waiting");
        release.add_permits(BATCHES_IN_FLIGHT);
        for handle in slow {
            handle.await.unwrap().expect("answered once the group is free");
        }
    }

    /// A peer of an earlier version (no `StreamBatch`) still gets
    /// heartbeats, by `CallBatch`.
    #[tokio::test]
    async fn a_peer_without_streamed_batches_gets_them_in_one_answer() {
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let peer = BusyGroupPeer { release, slow_received: Arc::default(), streams: false };
        let (router, _dir) = router_to(peer).await;
        let answered = tokio::time::timeout(Duration::from_secs(10), heartbeat(&router, 2)).await;
        assert!(matches!(answered, Ok(Ok(Ok(())))), "{answered:?}");
    }

    async fn serve(recorder: Recorder) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(RaftTransportServer::new(recorder))
                .serve_with_incoming(incoming),
        );
        address
    }

    #[test]
    fn control_messages_and_data_have_lanes_of_their_own() {
        assert_eq!(Lane::of(RaftRpcKind::AppendEntries, true), Lane::Control, "a heartbeat");
        assert_eq!(Lane::of(RaftRpcKind::AppendEntries, false), Lane::Data, "entries");
        for kind in [RaftRpcKind::Vote, RaftRpcKind::PreVote, RaftRpcKind::TransferLeader] {
            assert_eq!(Lane::of(kind, false), Lane::Control, "{kind:?}");
        }
    }

    /// Through the router and a real peer: heartbeats, votes, pre-votes,
    /// transfers and beats share one connection; entries use another.
    #[tokio::test]
    async fn heartbeats_and_votes_travel_apart_from_entries() {
        let recorder = Recorder::default();
        let address = serve(recorder.clone()).await;
        let peers = PeerChannels::new(BTreeMap::from([(2, address.to_string())]), ClusterId::default());
        let dir = tempfile::tempdir().unwrap();
        let router = Router::new(1, peers.clone(), Store::open(dir.path()).unwrap());
        let option = RPCOption::new(Duration::from_secs(5));
        let call = |kind: RaftRpcKind, batched: bool| {
            let (router, option) = (router.clone(), option.clone());
            async move {
                let action = if kind == RaftRpcKind::AppendEntries { RPCTypes::AppendEntries } else { RPCTypes::Vote };
                // The recorder refuses every message: only where it went counts.
                let refused = router.call::<_, ()>(2, 7, kind, &[0u8; 16], &option, action, batched).await;
                assert!(refused.is_err());
            }
        };
        call(RaftRpcKind::AppendEntries, false).await;
        call(RaftRpcKind::AppendEntries, true).await;
        call(RaftRpcKind::Vote, false).await;
        call(RaftRpcKind::PreVote, false).await;
        call(RaftRpcKind::TransferLeader, false).await;
        call(RaftRpcKind::AppendEntries, false).await;
        peers.send_beat(2, NodeBeat::default(), Duration::from_secs(5)).await.unwrap();

        let control = recorder.ports("heartbeats");
        assert_eq!(control.len(), 1, "one control connection");
        for what in ["vote", "pre-vote", "transfer", "beat"] {
            assert_eq!(recorder.ports(what), control, "{what} on the control lane");
        }
        let data = recorder.ports("entries");
        assert_eq!(data.len(), 1, "both AppendEntries with entries on one data connection");
        assert!(data.is_disjoint(&control), "entries on a connection of their own: {data:?} {control:?}");
    }

    #[test]
    fn entries_past_the_budget_wait_for_the_next_message() {
        // Encoded, each is its length's varint and 100 bytes.
        let entries: Vec<Vec<u8>> = (0..5).map(|_| vec![7; 100]).collect();
        assert_eq!(entries_within(&entries, 1000), 5, "all fit");
        assert_eq!(entries_within(&entries, 303), 3);
        assert_eq!(entries_within(&entries, 302), 2);
        // One entry always goes, even over the budget.
        assert_eq!(entries_within(&entries, 10), 1);
        assert_eq!(entries_within::<Vec<u8>>(&[], 10), 0);
    }
}
