//! The incoming side of the peer transport: the `RaftTransport` gRPC
//! service peers call (see `mod.rs` for the layout).
//!
//! `TransportService` delivers Raft messages (one at a time or in batch
//! calls) to the groups they name, receives snapshot streams (staged by
//! `strata_storage::snapshot_stream`, then installed), and answers beats.
//! What it sees besides the Raft calls themselves (beats, and which kind
//! of message arrived for which group) it reports to a `PeerTraffic`:
//! quiescence listens there, and this side knows nothing of it.
//!
//! Control messages do not queue behind data here: each call (one per
//! HTTP/2 stream) runs on a task of its own, no lock or semaphore is held
//! across one, and snapshot streams are received on tasks of their own. A
//! batch's heartbeats are delivered to their groups concurrently, all at
//! once, and (`StreamBatch`) each answer goes back as soon as its group
//! has given it: a busy group core (a follower's heartbeat answer waits
//! for its earlier appends' fsync) holds back its own answer only, not the
//! batch's. The sender's next batch waits only until the peer has taken
//! this one (see `outgoing::run_batcher`). `CallBatch`, which answers all
//! at once, stays for senders of earlier versions.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use openraft::raft::AppendEntriesRequest;
use openraft::type_config::alias::SnapshotOf;
use serde::Serialize;
use strata_proto::v1::raft_transport_server::RaftTransport;
use strata_proto::v1::{
    NodeBeat, NodeBeatAck, RaftBatchAnswer, RaftBatchRequest, RaftBatchResponse, RaftRequest, RaftResponse,
    RaftRpcKind, SnapshotChunk,
};
use strata_storage::{KeyRow, SnapshotPayload, Store, StreamError, StreamPart, Trailer, TypeConfig};
use tonic::{Request, Response, Status, Streaming};

use super::WireResult;
use crate::groups::Groups;

/// The kind of a Raft message that arrived for a group, as a listener to
/// peer traffic tells them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RaftMessage {
    /// An AppendEntries without entries.
    Heartbeat,
    /// An AppendEntries with entries.
    Entries,
    Vote,
    PreVote,
    /// The first chunk of a snapshot stream.
    Snapshot,
}

/// Where the incoming side reports what peers send besides the Raft calls
/// it delivers.
pub trait PeerTraffic: Clone + Send + Sync + 'static {
    /// A peer's liveness beat arrived.
    fn beat(&self, beat: &NodeBeat, groups: &Groups) -> impl Future<Output = ()> + Send;

    /// A Raft message for `group_id` arrived; reported before it is
    /// delivered to the group.
    fn raft_message(&self, group_id: u64, message: RaftMessage, groups: &Groups) -> impl Future<Output = ()> + Send;
}

/// Why a peer's message was not delivered. The text goes back to the peer
/// in `transport_error` (its sender treats the group as unreachable), so
/// each message carries its cause's text rather than a `source`.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("group {0} is not hosted on this node (yet)")]
    NotHosted(u64),
    #[error("cannot decode raft request: {0}")]
    BadRequest(postcard::Error),
    #[error("unknown raft rpc kind {0}")]
    UnknownKind(i32),
    #[error("empty snapshot stream")]
    EmptySnapshotStream,
    #[error("bad snapshot header: {0}")]
    BadSnapshotHeader(postcard::Error),
    #[error("bad snapshot data: {0}")]
    BadSnapshotData(io::Error),
    #[error("bad snapshot key rows: {0}")]
    BadKeyRows(postcard::Error),
    #[error("snapshot chunk of another group")]
    ChunkOfAnotherGroup,
    /// The snapshot stream broke off (the sender went away, or gRPC failed).
    #[error("{}", .0.message())]
    Stream(Status),
    /// The store refused to open a stage for the stream.
    #[error("{0}")]
    Sink(io::Error),
    /// The store refused a part of the stream, or the stream as a whole.
    #[error("{0}")]
    Stage(StreamError),
    #[error("snapshot receiver failed: {0}")]
    ReceiverFailed(tokio::task::JoinError),
    #[error(
        "this node does not vote yet: it is starting with an empty store, or being caught up after losing its data"
    )]
    NotVoting,
}

/// Refuses a peer call stamped with another cluster's id (see
/// `outgoing::ClusterStamp`): a node given the address of another
/// cluster's node (a wrong `initial_cluster` entry, a reused address) must
/// not deliver its Raft messages there, nor take theirs. Calls without an
/// id, or to a node without one, pass: a cluster that has not formed yet
/// has no id.
pub fn check_cluster(own: &str, sent: Option<&str>) -> Result<(), Status> {
    match sent {
        Some(sent) if !own.is_empty() && !sent.is_empty() && sent != own => Err(Status::failed_precondition(format!(
            "CLUSTER_ID_MISMATCH: this node is of cluster {own}, the caller of cluster {sent}; check the peer \
             addresses (initial_cluster, join)"
        ))),
        _ => Ok(()),
    }
}

/// The server side of `check_cluster`, for every call of the transport.
#[derive(Clone)]
pub struct ClusterCheck(pub super::outgoing::ClusterId);

impl tonic::service::Interceptor for ClusterCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let own = self.0.read().expect("lock").clone();
        let sent = request.metadata().get(super::outgoing::CLUSTER_ID_HEADER).and_then(|v| v.to_str().ok());
        check_cluster(&own, sent)?;
        Ok(request)
    }
}

/// Whether this node answers vote requests. A node back with an empty
/// store has forgotten what it voted for and what it acknowledged: its
/// vote could elect a leader that lacks committed entries. It is closed
/// until the node is caught up again (see `crate::membership`).
#[derive(Clone, Debug, Default)]
pub struct VoteGate(Arc<AtomicBool>);

impl VoteGate {
    pub fn close(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn open(&self) {
        self.0.store(false, Ordering::SeqCst);
    }

    pub fn is_closed(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A streamed batch's answers (`StreamBatch`).
pub type BatchAnswers = std::pin::Pin<Box<dyn futures::Stream<Item = Result<RaftBatchAnswer, Status>> + Send>>;

/// The answers to `requests`, each sent as soon as `answer` has it,
/// numbered by its request's place in the batch.
pub fn answers_as_ready<F, A>(requests: Vec<RaftRequest>, answer: F) -> BatchAnswers
where
    F: Fn(RaftRequest) -> A,
    A: Future<Output = Result<RaftResponse, Status>> + Send + 'static,
{
    let pending: futures::stream::FuturesUnordered<_> = requests
        .into_iter()
        .enumerate()
        .map(|(index, request)| {
            let answered = answer(request);
            async move { Ok(RaftBatchAnswer { index: index as u32, response: Some(answered.await?) }) }
        })
        .collect();
    Box::pin(pending)
}

/// The receiving side of the peer transport.
#[derive(Clone)]
pub struct TransportService<P> {
    pub groups: Groups,
    pub store: Store,
    /// Told of beats and of each Raft message's kind.
    pub traffic: P,
    /// Closed: vote and pre-vote requests are refused.
    pub votes: VoteGate,
}

/// A delivered message's answer, encoded for the wire.
fn answer<T: Serialize>(result: WireResult<T>) -> Result<RaftResponse, Status> {
    let payload = postcard::to_allocvec(&result).map_err(|e| Status::internal(e.to_string()))?;
    Ok(RaftResponse { payload: payload.into(), transport_error: String::new() })
}

/// The answer to a message that was not delivered.
fn failed(error: ReceiveError) -> RaftResponse {
    RaftResponse { payload: Default::default(), transport_error: error.to_string() }
}

impl<P: PeerTraffic> TransportService<P> {
    /// Delivers one Raft message to its group and encodes the answer.
    async fn handle(&self, request: RaftRequest) -> Result<RaftResponse, Status> {
        let group_id = request.group_id;
        let Some(raft) = self.groups.raft(group_id) else {
            return Ok(failed(ReceiveError::NotHosted(group_id)));
        };
        match RaftRpcKind::try_from(request.kind) {
            Ok(RaftRpcKind::AppendEntries) => {
                match postcard::from_bytes::<AppendEntriesRequest<TypeConfig>>(&request.payload) {
                    Ok(rpc) => {
                        let kind = if rpc.entries.is_empty() { RaftMessage::Heartbeat } else { RaftMessage::Entries };
                        self.traffic.raft_message(group_id, kind, &self.groups).await;
                        answer(raft.append_entries(rpc).await.map_err(|e| e.to_string()))
                    }
                    Err(e) => Ok(failed(ReceiveError::BadRequest(e))),
                }
            }
            Ok(RaftRpcKind::Vote | RaftRpcKind::PreVote) if self.votes.is_closed() => {
                Ok(failed(ReceiveError::NotVoting))
            }
            Ok(RaftRpcKind::Vote) => match postcard::from_bytes(&request.payload) {
                Ok(rpc) => {
                    self.traffic.raft_message(group_id, RaftMessage::Vote, &self.groups).await;
                    answer(raft.vote(rpc).await.map_err(|e| e.to_string()))
                }
                Err(e) => Ok(failed(ReceiveError::BadRequest(e))),
            },
            Ok(RaftRpcKind::PreVote) => match postcard::from_bytes(&request.payload) {
                Ok(rpc) => {
                    self.traffic.raft_message(group_id, RaftMessage::PreVote, &self.groups).await;
                    answer(raft.pre_vote(rpc).await.map_err(|e| e.to_string()))
                }
                Err(e) => Ok(failed(ReceiveError::BadRequest(e))),
            },
            Ok(RaftRpcKind::TransferLeader) => match postcard::from_bytes(&request.payload) {
                Ok(rpc) => answer(raft.handle_transfer_leader(rpc).await.map_err(|e| e.to_string())),
                Err(e) => Ok(failed(ReceiveError::BadRequest(e))),
            },
            _ => Ok(failed(ReceiveError::UnknownKind(request.kind))),
        }
    }
}

#[tonic::async_trait]
impl<P: PeerTraffic> RaftTransport for TransportService<P> {
    async fn call(&self, request: Request<RaftRequest>) -> Result<Response<RaftResponse>, Status> {
        self.handle(request.into_inner()).await.map(Response::new)
    }

    async fn beat(&self, request: Request<NodeBeat>) -> Result<Response<NodeBeatAck>, Status> {
        self.traffic.beat(request.get_ref(), &self.groups).await;
        Ok(Response::new(NodeBeatAck {}))
    }

    async fn call_batch(&self, request: Request<RaftBatchRequest>) -> Result<Response<RaftBatchResponse>, Status> {
        let requests = request.into_inner().requests;
        let answers = futures::future::join_all(requests.into_iter().map(|r| self.handle(r))).await;
        let responses = answers.into_iter().collect::<Result<Vec<_>, Status>>()?;
        Ok(Response::new(RaftBatchResponse { responses }))
    }

    type StreamBatchStream = BatchAnswers;

    async fn stream_batch(&self, request: Request<RaftBatchRequest>) -> Result<Response<BatchAnswers>, Status> {
        let service = self.clone();
        let answers = answers_as_ready(request.into_inner().requests, move |r| {
            let service = service.clone();
            async move { service.handle(r).await }
        });
        Ok(Response::new(answers))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftResponse>, Status> {
        let mut stream = request.into_inner();
        let Some(first) = stream.message().await? else {
            return Ok(Response::new(failed(ReceiveError::EmptySnapshotStream)));
        };
        let group_id = first.group_id;
        self.traffic.raft_message(group_id, RaftMessage::Snapshot, &self.groups).await;
        let Some(raft) = self.groups.raft(group_id) else {
            return Ok(Response::new(failed(ReceiveError::NotHosted(group_id))));
        };
        let (vote, meta) = match postcard::from_bytes(&first.header) {
            Ok(header) => header,
            Err(e) => return Ok(Response::new(failed(ReceiveError::BadSnapshotHeader(e)))),
        };
        let payload = match SnapshotPayload::decode(&first.data) {
            Ok(payload) => payload,
            Err(e) => return Ok(Response::new(failed(ReceiveError::BadSnapshotData(e)))),
        };
        let snapshot = SnapshotOf::<TypeConfig, Vec<u8>> { meta, snapshot: first.data.to_vec() };
        // Receive and install on a task of its own: once the install is
        // asked for, it runs to its end even if the sender goes away, and
        // the staged rows are released only after it.
        let store = self.store.clone();
        let task = tokio::spawn(async move {
            let mut sink = store.snapshot_sink(group_id, &payload).await.map_err(ReceiveError::Sink)?;
            let received: Result<(), ReceiveError> = async {
                while let Some(chunk) = stream.message().await.map_err(ReceiveError::Stream)? {
                    if chunk.group_id != group_id {
                        return Err(ReceiveError::ChunkOfAnotherGroup);
                    }
                    for part in parts_of(chunk)? {
                        sink.accept(part).await.map_err(ReceiveError::Stage)?;
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
            let staged = sink.finish().await.map_err(ReceiveError::Stage)?;
            crate::metrics::METRICS.snapshots_received.inc();
            let last_log_id = snapshot.meta.last_log_id;
            let result: WireResult<_> = raft.install_full_snapshot(vote, snapshot).await.map_err(|e| e.to_string());
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
            Ok(Ok(result)) => answer(result).map(Response::new),
            Ok(Err(error)) => {
                tracing::warn!(group = group_id, %error, "snapshot stream refused");
                Ok(Response::new(failed(error)))
            }
            Err(e) => Ok(Response::new(failed(ReceiveError::ReceiverFailed(e)))),
        }
    }
}

/// The parts of a snapshot stream's body that one chunk carries, in order.
fn parts_of(chunk: SnapshotChunk) -> Result<Vec<StreamPart>, ReceiveError> {
    let mut parts = Vec::new();
    if !chunk.data.is_empty() {
        parts.push(StreamPart::Batches(chunk.data.to_vec()));
    }
    if !chunk.key_rows.is_empty() {
        let rows: Vec<KeyRow> = postcard::from_bytes(&chunk.key_rows).map_err(ReceiveError::BadKeyRows)?;
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

#[cfg(test)]
mod cluster_tests {
    use super::check_cluster;

    #[test]
    fn calls_of_another_cluster_are_refused() {
        assert!(check_cluster("a", Some("a")).is_ok());
        assert!(check_cluster("a", None).is_ok(), "an old node sends no id");
        assert!(check_cluster("", Some("b")).is_ok(), "not formed yet");
        assert!(check_cluster("a", Some("")).is_ok());
        let refused = check_cluster("a", Some("b")).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        assert!(refused.message().contains("CLUSTER_ID_MISMATCH"), "{}", refused.message());
    }
}

#[cfg(test)]
mod tests {
    use openraft::raft::{AppendEntriesRequest, VoteRequest};
    use openraft::type_config::alias::VoteOf;
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
