//! The peer transport: every Raft group of this node talks to its peers
//! through one gRPC channel (one HTTP/2 connection) per peer node; each
//! message names its group.
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
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use openraft::type_config::alias::{SnapshotOf, VoteOf};
use openraft::{BasicNode, RPCTypes};
use openraft_multi::{GroupNetworkAdapter, GroupRouter};
use serde::de::DeserializeOwned;
use serde::Serialize;
use strata_core::limits::MAX_GRPC_MESSAGE_BYTES;
use strata_proto::v1::raft_transport_client::RaftTransportClient;
use strata_proto::v1::raft_transport_server::RaftTransport;
use strata_proto::v1::{
    NodeBeat, NodeBeatAck, RaftBatchRequest, RaftBatchResponse, RaftRequest, RaftResponse, RaftRpcKind, SnapshotChunk,
    SnapshotTrailer,
};
use strata_storage::{KeyRow, SnapshotPayload, Store, StreamPart, Trailer, TypeConfig};
use tokio::sync::{mpsc, oneshot};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

use crate::groups::Groups;
use crate::quiesce::Quiescence;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

/// Addresses of peer nodes and one lazily connected channel to each.
#[derive(Clone)]
pub struct PeerChannels {
    addresses: Arc<RwLock<BTreeMap<u64, String>>>,
    channels: Arc<Mutex<HashMap<u64, Channel>>>,
}

impl PeerChannels {
    pub fn new(addresses: BTreeMap<u64, String>) -> PeerChannels {
        PeerChannels { addresses: Arc::new(RwLock::new(addresses)), channels: Arc::default() }
    }

    pub fn address(&self, node: u64) -> Option<String> {
        self.addresses.read().expect("lock").get(&node).cloned()
    }

    pub fn addresses(&self) -> BTreeMap<u64, String> {
        self.addresses.read().expect("lock").clone()
    }

    /// The channel to `node`, connected on first use; reconnects by itself.
    pub fn channel(&self, node: u64) -> Result<Channel, String> {
        if let Some(channel) = self.channels.lock().expect("lock").get(&node) {
            return Ok(channel.clone());
        }
        let address = self.address(node).ok_or_else(|| format!("node {node} has no known address"))?;
        let channel = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| format!("bad address {address}: {e}"))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        self.channels.lock().expect("lock").insert(node, channel.clone());
        Ok(channel)
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
}

/// A heartbeat waiting for its batch, and where its answer goes.
type Queued = (RaftRequest, oneshot::Sender<Result<RaftResponse, String>>);

/// Most heartbeats in one batch call. Each is ~100 bytes; 1,024 keeps a
/// call far below the message bound and its handling short.
const MAX_BATCH: usize = 1024;

/// Heartbeats queued per peer before senders wait. A few batches' worth.
const BATCH_QUEUE: usize = 4 * MAX_BATCH;

/// Batch calls in flight per peer. While they are out, heartbeats queue up
/// and go together in the next one: coalescing without a timer.
const BATCHES_IN_FLIGHT: usize = 2;

/// Longest a batch call may take; a heartbeat's own deadline is shorter
/// and its caller gives up first.
const BATCH_TIMEOUT: Duration = Duration::from_secs(2);

impl Router {
    pub fn new(node_id: u64, peers: PeerChannels, store: Store) -> Router {
        Router { node_id, peers, store, batchers: Arc::default() }
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
            self.batcher(target).send((request, tx)).await.map_err(|_| "batcher stopped".to_string())?;
            rx.await.map_err(|_| "batch dropped".to_string())?
        })
        .await
        .map_err(|_| timeout())?
        .map_err(|e| RPCError::Unreachable(Unreachable::new(&TransportError(e))))?;
        decode_answer(answer)
    }

    fn client(&self, target: u64) -> Result<RaftTransportClient<Channel>, RPCError<TypeConfig>> {
        let channel =
            self.peers.channel(target).map_err(|e| RPCError::Unreachable(Unreachable::new(&TransportError(e))))?;
        Ok(RaftTransportClient::new(channel)
            .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES))
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
        let payload = postcard::to_allocvec(rpc)
            .map_err(|e| RPCError::Network(NetworkError::new(&TransportError(e.to_string()))))?;
        let request = RaftRequest { group_id, kind: kind as i32, payload: payload.into() };
        if batched {
            return self.call_batched(target, request, option).await;
        }
        let mut client = self.client(target)?;
        let ttl = option.hard_ttl();
        let answer = match tokio::time::timeout(ttl, client.call(request)).await {
            Err(_) => {
                return Err(RPCError::Timeout(Timeout { action, id: self.node_id, target, timeout: ttl }));
            }
            Ok(Err(status)) => {
                return Err(RPCError::Unreachable(Unreachable::new(&TransportError(status.message().to_string()))))
            }
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
    ) -> Result<SnapshotResponse<TypeConfig>, String> {
        let header = postcard::to_allocvec(&(vote, snapshot.meta.clone())).map_err(|e| e.to_string())?;
        let payload = SnapshotPayload::decode(&snapshot.snapshot).map_err(|e| e.to_string())?;
        let mut source = self.store.snapshot_source(group_id, &payload).map_err(|e| e.to_string())?;
        let (tx, rx) = tokio::sync::mpsc::channel::<SnapshotChunk>(2);
        let first =
            SnapshotChunk { group_id, header: header.into(), data: snapshot.snapshot.into(), ..Default::default() };
        // The body is read as it is sent. A read error ends the stream
        // without its trailer, so the receiver installs nothing.
        tokio::spawn(async move {
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
                if tx.send(chunk).await.is_err() {
                    return;
                }
            }
        });
        let mut client = self.client(target).map_err(|e| e.to_string())?;
        let answer = client
            .install_snapshot(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(|s| s.message().to_string())?
            .into_inner();
        if !answer.transport_error.is_empty() {
            return Err(answer.transport_error);
        }
        let result: Result<SnapshotResponse<TypeConfig>, String> =
            postcard::from_bytes(&answer.payload).map_err(|e| e.to_string())?;
        result
    }
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

/// The parts of a snapshot stream's body that one chunk carries, in order.
fn parts_of(chunk: SnapshotChunk) -> Result<Vec<StreamPart>, String> {
    let mut parts = Vec::new();
    if !chunk.data.is_empty() {
        parts.push(StreamPart::Batches(chunk.data.to_vec()));
    }
    if !chunk.key_rows.is_empty() {
        let rows: Vec<KeyRow> =
            postcard::from_bytes(&chunk.key_rows).map_err(|e| format!("bad snapshot key rows: {e}"))?;
        parts.push(StreamPart::Keys(rows));
    }
    if let Some(t) = chunk.trailer {
        parts.push(StreamPart::Trailer(Trailer {
            end_offset: t.end_offset,
            batch_count: t.batch_count,
            key_row_count: t.key_row_count,
            checksum: t.checksum,
        }));
    }
    Ok(parts)
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
        self.call(target, group_id, RaftRpcKind::AppendEntries, &rpc, &option, RPCTypes::AppendEntries, heartbeat).await
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
                result.map_err(|e| StreamingError::Unreachable(Unreachable::new(&TransportError(e))))
            }
        }
    }
}

fn decode_answer<P: DeserializeOwned>(answer: RaftResponse) -> Result<P, RPCError<TypeConfig>> {
    if !answer.transport_error.is_empty() {
        return Err(RPCError::Unreachable(Unreachable::new(&TransportError(answer.transport_error))));
    }
    let result: Result<P, String> = postcard::from_bytes(&answer.payload)
        .map_err(|e| RPCError::Network(NetworkError::new(&TransportError(format!("bad raft reply: {e}")))))?;
    // A remote error here is a fatal (stopped) Raft: treat it as unreachable.
    result.map_err(|e| RPCError::Unreachable(Unreachable::new(&TransportError(e))))
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
        let client = router.client(target);
        tokio::spawn(async move {
            let _permit = permit;
            let (requests, answers): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let result = match client {
                Ok(mut client) => {
                    match tokio::time::timeout(BATCH_TIMEOUT, client.call_batch(RaftBatchRequest { requests })).await {
                        Ok(Ok(reply)) => Ok(reply.into_inner().responses),
                        Ok(Err(status)) => Err(status.message().to_string()),
                        Err(_) => Err("batch call timed out".to_string()),
                    }
                }
                Err(error) => Err(error.to_string()),
            };
            match result {
                Ok(responses) if responses.len() == answers.len() => {
                    for (answer, response) in answers.into_iter().zip(responses) {
                        let _ = answer.send(Ok(response));
                    }
                }
                Ok(responses) => {
                    let error = format!("batch answered {} of {} requests", responses.len(), answers.len());
                    answers.into_iter().for_each(|a| drop(a.send(Err(error.clone()))));
                }
                Err(error) => answers.into_iter().for_each(|a| drop(a.send(Err(error.clone())))),
            }
        });
    }
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

/// The receiving side of the peer transport.
pub struct TransportService {
    pub groups: Groups,
    pub store: Store,
    pub quiescence: Quiescence,
}

fn reply<T: Serialize>(result: Result<T, String>) -> Result<Response<RaftResponse>, Status> {
    let payload = postcard::to_allocvec(&result).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftResponse { payload: payload.into(), transport_error: String::new() }))
}

fn transport_error(message: String) -> Result<Response<RaftResponse>, Status> {
    Ok(Response::new(RaftResponse { payload: Default::default(), transport_error: message }))
}

impl TransportService {
    /// Delivers one Raft message to its group and encodes the answer.
    async fn handle(&self, request: RaftRequest) -> Result<RaftResponse, Status> {
        let Some(raft) = self.groups.raft(request.group_id) else {
            return failed(format!("group {} is not hosted on this node (yet)", request.group_id));
        };
        let decode_error = |e: postcard::Error| format!("cannot decode raft request: {e}");
        match RaftRpcKind::try_from(request.kind) {
            Ok(RaftRpcKind::AppendEntries) => {
                match postcard::from_bytes::<AppendEntriesRequest<TypeConfig>>(&request.payload) {
                    Ok(rpc) => {
                        // Entries wake a quiet follower; a bare heartbeat does not.
                        self.quiescence.on_raft_message(request.group_id, !rpc.entries.is_empty(), &self.groups);
                        answer(raft.append_entries(rpc).await.map_err(|e| e.to_string()))
                    }
                    Err(e) => failed(decode_error(e)),
                }
            }
            Ok(RaftRpcKind::Vote) => match postcard::from_bytes(&request.payload) {
                Ok(rpc) => {
                    self.quiescence.on_raft_message(request.group_id, true, &self.groups);
                    answer(raft.vote(rpc).await.map_err(|e| e.to_string()))
                }
                Err(e) => failed(decode_error(e)),
            },
            Ok(RaftRpcKind::PreVote) => match postcard::from_bytes(&request.payload) {
                Ok(rpc) => {
                    self.quiescence.on_raft_message(request.group_id, true, &self.groups);
                    answer(raft.pre_vote(rpc).await.map_err(|e| e.to_string()))
                }
                Err(e) => failed(decode_error(e)),
            },
            _ => failed(format!("unknown raft rpc kind {}", request.kind)),
        }
    }
}

fn answer<T: Serialize>(result: Result<T, String>) -> Result<RaftResponse, Status> {
    let payload = postcard::to_allocvec(&result).map_err(|e| Status::internal(e.to_string()))?;
    Ok(RaftResponse { payload: payload.into(), transport_error: String::new() })
}

fn failed(message: String) -> Result<RaftResponse, Status> {
    Ok(RaftResponse { payload: Default::default(), transport_error: message })
}

#[tonic::async_trait]
impl RaftTransport for TransportService {
    async fn call(&self, request: Request<RaftRequest>) -> Result<Response<RaftResponse>, Status> {
        self.handle(request.into_inner()).await.map(Response::new)
    }

    async fn beat(&self, request: Request<NodeBeat>) -> Result<Response<NodeBeatAck>, Status> {
        self.quiescence.on_beat(request.get_ref(), &self.groups);
        Ok(Response::new(NodeBeatAck {}))
    }

    async fn call_batch(&self, request: Request<RaftBatchRequest>) -> Result<Response<RaftBatchResponse>, Status> {
        let requests = request.into_inner().requests;
        let answers = futures::future::join_all(requests.into_iter().map(|r| self.handle(r))).await;
        let responses = answers.into_iter().collect::<Result<Vec<_>, Status>>()?;
        Ok(Response::new(RaftBatchResponse { responses }))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftResponse>, Status> {
        let mut stream = request.into_inner();
        let Some(first) = stream.message().await? else {
            return transport_error("empty snapshot stream".into());
        };
        let group_id = first.group_id;
        self.quiescence.on_raft_message(group_id, true, &self.groups);
        let Some(raft) = self.groups.raft(group_id) else {
            return transport_error(format!("group {group_id} is not hosted on this node (yet)"));
        };
        let (vote, meta) = match postcard::from_bytes(&first.header) {
            Ok(header) => header,
            Err(e) => return transport_error(format!("bad snapshot header: {e}")),
        };
        let payload = match SnapshotPayload::decode(&first.data) {
            Ok(payload) => payload,
            Err(e) => return transport_error(format!("bad snapshot data: {e}")),
        };
        let snapshot = SnapshotOf::<TypeConfig, Vec<u8>> { meta, snapshot: first.data.to_vec() };
        // Receive and install on a task of its own: once the install is
        // asked for, it runs to its end even if the sender goes away, and
        // the staged rows are released only after it.
        let store = self.store.clone();
        let task = tokio::spawn(async move {
            let mut sink = store.snapshot_sink(group_id, &payload).await.map_err(|e| e.to_string())?;
            let received: Result<(), String> = async {
                while let Some(chunk) = stream.message().await.map_err(|s| s.message().to_string())? {
                    if chunk.group_id != group_id {
                        return Err("snapshot chunk of another group".to_string());
                    }
                    for part in parts_of(chunk)? {
                        sink.accept(part).await.map_err(|e| e.to_string())?;
                    }
                }
                Ok(())
            }
            .await;
            if let Err(error) = received {
                if let Err(e) = sink.discard().await {
                    tracing::warn!(group = group_id, error = %e, "cannot drop staged snapshot rows");
                }
                return Err(error);
            }
            let staged = sink.finish().await.map_err(|e| e.to_string())?;
            let last_log_id = snapshot.meta.last_log_id;
            let result = raft.install_full_snapshot(vote, snapshot).await.map_err(|e| e.to_string());
            match &result {
                Ok(_) => tracing::info!(group = group_id, ?last_log_id, "installed snapshot from the leader"),
                Err(error) => tracing::warn!(group = group_id, %error, "snapshot install failed"),
            }
            if let Err(e) = staged.release().await {
                tracing::warn!(group = group_id, error = %e, "cannot drop staged snapshot rows");
            }
            Ok(result)
        });
        match task.await {
            Ok(Ok(result)) => reply(result),
            Ok(Err(error)) => {
                tracing::warn!(group = group_id, %error, "snapshot stream refused");
                transport_error(error)
            }
            Err(e) => transport_error(format!("snapshot receiver failed: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::raft::{AppendEntriesRequest, VoteRequest};
    use strata_storage::{GroupState, SnapshotPayload};

    use super::*;

    /// A small deterministic generator, so a failure names its case.
    struct Bytes(u64);

    impl Bytes {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn fill(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }

        /// `valid` with a few bytes changed, cut short or grown.
        fn mutate(&mut self, valid: &[u8]) -> Vec<u8> {
            let mut out = valid.to_vec();
            match self.next() % 4 {
                0 if !out.is_empty() => {
                    let at = self.next() as usize % out.len();
                    out[at] ^= 1 << (self.next() % 8);
                }
                1 => out.truncate(self.next() as usize % (out.len() + 1)),
                2 => {
                    let len = self.next() as usize % 64;
                    out.extend(self.fill(len))
                }
                _ => {
                    for _ in 0..4 {
                        if !out.is_empty() {
                            let at = self.next() as usize % out.len();
                            out[at] = self.next() as u8;
                        }
                    }
                }
            }
            out
        }
    }

    /// Bytes from a peer (Raft messages, snapshot headers, data and key
    /// rows) decode to a value or an error, never a panic.
    #[test]
    fn peer_decoders_never_panic_on_arbitrary_bytes() {
        let rows = vec![KeyRow { key: b"order-1".to_vec(), offset: 3, expires_ms: 9_000 }; 3];
        let payload = SnapshotPayload { state: GroupState::Partition(Default::default()), producers: vec![] };
        let valid = [
            postcard::to_allocvec(&rows).unwrap(),
            postcard::to_allocvec(&payload).unwrap(),
            postcard::to_allocvec(&(1u64, 2u64, vec![7u8; 40])).unwrap(),
        ];
        let mut gen = Bytes(0x9e37_79b9_7f4a_7c15);
        for case in 0..5_000 {
            let bytes = if case % 2 == 0 {
                let len = gen.next() as usize % 300;
                gen.fill(len)
            } else {
                let base = &valid[case % valid.len()];
                gen.mutate(base)
            };
            let _ = postcard::from_bytes::<AppendEntriesRequest<TypeConfig>>(&bytes);
            let _ = postcard::from_bytes::<VoteRequest<TypeConfig>>(&bytes);
            let _ = postcard::from_bytes::<(
                VoteOf<TypeConfig>,
                openraft::type_config::alias::SnapshotMetaOf<TypeConfig>,
            )>(&bytes);
            let _ = SnapshotPayload::decode(&bytes);
            let chunk = SnapshotChunk {
                group_id: 1,
                data: bytes.clone().into(),
                key_rows: bytes.clone().into(),
                ..Default::default()
            };
            if let Ok(parts) = parts_of(chunk) {
                assert_eq!(parts.len(), if bytes.is_empty() { 0 } else { 2 }, "case {case}: batches and keys");
            }
        }
    }
}
