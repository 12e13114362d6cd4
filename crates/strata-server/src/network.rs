//! The peer transport: every Raft group of this node talks to its peers
//! through one gRPC channel (one HTTP/2 connection) per peer node; each
//! message names its group.
//!
//! Snapshots stream in chunks: a header chunk (vote, snapshot meta, the
//! group's state) and, for partition groups, the record batches below the
//! snapshot's next offset, read from this node's store as they are sent,
//! then the partition's idempotency keys as of the snapshot.

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
use strata_core::limits::{MAX_GRPC_MESSAGE_BYTES, SNAPSHOT_CHUNK_BYTES};
use strata_proto::v1::raft_transport_client::RaftTransportClient;
use strata_proto::v1::raft_transport_server::RaftTransport;
use strata_proto::v1::{RaftRequest, RaftResponse, RaftRpcKind, SnapshotChunk};
use strata_storage::{KeyRow, SnapshotPayload, Store, TypeConfig};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

use crate::groups::Groups;

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
}

impl Router {
    pub fn new(node_id: u64, peers: PeerChannels, store: Store) -> Router {
        Router { node_id, peers, store }
    }

    fn client(&self, target: u64) -> Result<RaftTransportClient<Channel>, RPCError<TypeConfig>> {
        let channel =
            self.peers.channel(target).map_err(|e| RPCError::Unreachable(Unreachable::new(&TransportError(e))))?;
        Ok(RaftTransportClient::new(channel)
            .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES))
    }

    async fn call<Q: Serialize, P: DeserializeOwned>(
        &self,
        target: u64,
        group_id: u64,
        kind: RaftRpcKind,
        rpc: &Q,
        option: &RPCOption,
        action: RPCTypes,
    ) -> Result<P, RPCError<TypeConfig>> {
        let payload = postcard::to_allocvec(rpc)
            .map_err(|e| RPCError::Network(NetworkError::new(&TransportError(e.to_string()))))?;
        let mut client = self.client(target)?;
        let request = RaftRequest { group_id, kind: kind as i32, payload: payload.into() };
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
        if !answer.transport_error.is_empty() {
            return Err(RPCError::Unreachable(Unreachable::new(&TransportError(answer.transport_error))));
        }
        let result: Result<P, String> = postcard::from_bytes(&answer.payload)
            .map_err(|e| RPCError::Network(NetworkError::new(&TransportError(format!("bad raft reply: {e}")))))?;
        // A remote error here is a fatal (stopped) Raft: treat it as unreachable.
        result.map_err(|e| RPCError::Unreachable(Unreachable::new(&TransportError(e))))
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
        let (tx, rx) = tokio::sync::mpsc::channel::<SnapshotChunk>(2);
        let first = SnapshotChunk {
            group_id,
            header: header.into(),
            data: snapshot.snapshot.into(),
            key_rows: Default::default(),
        };
        let reader = self.store.partition_reader(group_id);
        let store = self.store.clone();
        let bounds = payload.state.as_partition().map(|p| (p.next_offset, p.clock_ms));
        tokio::spawn(async move {
            if tx.send(first).await.is_err() {
                return;
            }
            let Some((end, clock_ms)) = bounds else { return };
            let mut offset = 0;
            while offset < end {
                let batches = match reader.read(offset, end, SNAPSHOT_CHUNK_BYTES).await {
                    Ok(b) if !b.is_empty() => b,
                    _ => return,
                };
                let mut next = offset;
                for item in strata_record::BatchIter::new(&batches) {
                    match item {
                        Ok((header, _)) => next = header.next_offset(),
                        Err(_) => return,
                    }
                }
                offset = next;
                let chunk = SnapshotChunk {
                    group_id,
                    header: Default::default(),
                    data: batches.into(),
                    key_rows: Default::default(),
                };
                if tx.send(chunk).await.is_err() {
                    return;
                }
            }
            // Then the idempotency keys as of the snapshot, in pages.
            let mut cursor = Vec::new();
            loop {
                let (rows, next) =
                    match store.read_snapshot_keys(group_id, cursor, end, clock_ms, SNAPSHOT_CHUNK_BYTES).await {
                        Ok(page) => page,
                        Err(_) => return,
                    };
                if !rows.is_empty() {
                    let Ok(encoded) = postcard::to_allocvec(&rows) else { return };
                    let chunk = SnapshotChunk {
                        group_id,
                        header: Default::default(),
                        data: Default::default(),
                        key_rows: encoded.into(),
                    };
                    if tx.send(chunk).await.is_err() {
                        return;
                    }
                }
                match next {
                    Some(next) => cursor = next,
                    None => return,
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

impl GroupRouter<TypeConfig, u64> for Router {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &self,
        target: u64,
        group_id: u64,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(target, group_id, RaftRpcKind::AppendEntries, &rpc, &option, RPCTypes::AppendEntries).await
    }

    async fn vote(
        &self,
        target: u64,
        group_id: u64,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(target, group_id, RaftRpcKind::Vote, &rpc, &option, RPCTypes::Vote).await
    }

    async fn pre_vote(
        &self,
        target: u64,
        group_id: u64,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(target, group_id, RaftRpcKind::PreVote, &rpc, &option, RPCTypes::Vote).await
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
}

fn reply<T: Serialize>(result: Result<T, String>) -> Result<Response<RaftResponse>, Status> {
    let payload = postcard::to_allocvec(&result).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftResponse { payload: payload.into(), transport_error: String::new() }))
}

fn transport_error(message: String) -> Result<Response<RaftResponse>, Status> {
    Ok(Response::new(RaftResponse { payload: Default::default(), transport_error: message }))
}

#[tonic::async_trait]
impl RaftTransport for TransportService {
    async fn call(&self, request: Request<RaftRequest>) -> Result<Response<RaftResponse>, Status> {
        let request = request.into_inner();
        let Some(raft) = self.groups.raft(request.group_id) else {
            return transport_error(format!("group {} is not hosted on this node (yet)", request.group_id));
        };
        let decode_error = |e: postcard::Error| format!("cannot decode raft request: {e}");
        match RaftRpcKind::try_from(request.kind) {
            Ok(RaftRpcKind::AppendEntries) => match postcard::from_bytes(&request.payload) {
                Ok(rpc) => reply(raft.append_entries(rpc).await.map_err(|e| e.to_string())),
                Err(e) => transport_error(decode_error(e)),
            },
            Ok(RaftRpcKind::Vote) => match postcard::from_bytes(&request.payload) {
                Ok(rpc) => reply(raft.vote(rpc).await.map_err(|e| e.to_string())),
                Err(e) => transport_error(decode_error(e)),
            },
            Ok(RaftRpcKind::PreVote) => match postcard::from_bytes(&request.payload) {
                Ok(rpc) => reply(raft.pre_vote(rpc).await.map_err(|e| e.to_string())),
                Err(e) => transport_error(decode_error(e)),
            },
            _ => transport_error(format!("unknown raft rpc kind {}", request.kind)),
        }
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
        let Some(raft) = self.groups.raft(group_id) else {
            return transport_error(format!("group {group_id} is not hosted on this node (yet)"));
        };
        let (vote, meta) = match postcard::from_bytes(&first.header) {
            Ok(header) => header,
            Err(e) => return transport_error(format!("bad snapshot header: {e}")),
        };
        while let Some(chunk) = stream.message().await? {
            if chunk.group_id != group_id {
                return transport_error("snapshot chunk of another group".into());
            }
            if !chunk.data.is_empty() {
                if let Err(e) = self.store.write_snapshot_batches(group_id, chunk.data.to_vec()).await {
                    return transport_error(format!("cannot store snapshot batches: {e}"));
                }
            }
            if !chunk.key_rows.is_empty() {
                let rows: Vec<KeyRow> = match postcard::from_bytes(&chunk.key_rows) {
                    Ok(rows) => rows,
                    Err(e) => return transport_error(format!("bad snapshot key rows: {e}")),
                };
                if let Err(e) = self.store.write_snapshot_keys(group_id, rows).await {
                    return transport_error(format!("cannot store snapshot keys: {e}"));
                }
            }
        }
        let snapshot = SnapshotOf::<TypeConfig, Vec<u8>> { meta, snapshot: first.data.to_vec() };
        let last_log_id = snapshot.meta.last_log_id;
        let result = raft.install_full_snapshot(vote, snapshot).await.map_err(|e| e.to_string());
        match &result {
            Ok(_) => tracing::info!(group = group_id, ?last_log_id, "installed snapshot from the leader"),
            Err(error) => tracing::warn!(group = group_id, %error, "snapshot install failed"),
        }
        reply(result)
    }
}
