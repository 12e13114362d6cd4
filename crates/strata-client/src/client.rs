//! The client handle: one lazily connected channel per node, the metadata
//! cache, leader routing for partition requests, and the admin calls.
//!
//! Routing: a partition request goes to the leader in the cache. When the
//! cache knows no leader it is refreshed first, and if the leader is still
//! unknown the replicas are tried in order. A `NOT_LEADER` answer that names
//! the leader is followed at once (a few hops at most) and the cache is
//! patched with the hint; any other retryable answer drops the cached leader,
//! so the caller's next attempt refreshes metadata before choosing a node.
//!
//! The cache is also refreshed, in the background, when a producer's send
//! finds it older than `ClientConfig::metadata_max_age`: partitions added to
//! a topic (`alter_topic`) get records within about that long.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;
use strata_core::limits::{MAX_LEADER_HOPS, RETRY_WAIT_MAX_MS, RETRY_WAIT_MIN_MS, SERVER_ANSWER_SLACK};
use strata_core::throttle::ThrottleRate;
use strata_core::{limits, ErrorCode, RetryClass};
use strata_proto::v1 as proto;
use strata_proto::v1::strata_client::StrataClient;
use tonic::transport::{Channel, Endpoint};

use crate::metadata::{ClusterMetadata, ClusterStatus, NodeId, TopicDescription, TopicMetadata};
use crate::producer::Acks;
use crate::ClientError;

type Stub = StrataClient<Channel>;

/// Settings of a [`Client`].
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Deadline of one request. A fetch waits its long-poll time on top.
    /// Admin calls and offset look-ups retry back-off answers within it.
    pub request_timeout: Duration,
    /// How long to wait for a connection to a node before trying another.
    pub connect_timeout: Duration,
    /// How old the metadata cache may grow before a producer's send starts
    /// a refresh in the background (the send goes on with the cache):
    /// partitions added to a topic are used within about this long.
    pub metadata_max_age: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            request_timeout: limits::DEFAULT_CLIENT_REQUEST_TIMEOUT,
            connect_timeout: limits::DEFAULT_CLIENT_CONNECT_TIMEOUT,
            metadata_max_age: limits::DEFAULT_METADATA_MAX_AGE,
        }
    }
}

/// Which offset `list_offsets` looks up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The high watermark (one past the last committed record).
    Latest,
    /// The first offset whose batch has a timestamp at or after this one (ms
    /// since the Unix epoch), or the high watermark when there is none.
    Timestamp(i64),
}

/// Answer of `list_offsets`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListedOffset {
    pub offset: u64,
    pub high_watermark: u64,
    pub log_start_offset: u64,
}

/// Answer of `produce_batch`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProduceAnswer {
    /// Offset of the first stored record; meaningless with `Acks::None`.
    pub base_offset: u64,
    /// Records stored.
    pub record_count: u32,
    /// Records not stored because their idempotency key was stored within
    /// the topic's window: (index in the batch, offset of the original).
    pub duplicates: Vec<(u32, u64)>,
    /// The batch was a retry of one already stored; this is the first answer.
    pub duplicate_batch: bool,
}

impl ProduceAnswer {
    /// The offset of each record of the batch as sent, in order: stored
    /// records count up from `base_offset`, duplicates by idempotency key
    /// have their original's offset.
    pub fn record_offsets(&self, sent: usize) -> Vec<u64> {
        let mut duplicates = self.duplicates.iter().peekable();
        let mut next = self.base_offset;
        (0..sent as u32)
            .map(|index| match duplicates.peek() {
                Some(&&(at, offset)) if at == index => {
                    duplicates.next();
                    offset
                }
                _ => {
                    next += 1;
                    next - 1
                }
            })
            .collect()
    }
}

/// A producer id and epoch from `init_producer_id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerId {
    pub id: i64,
    pub epoch: i16,
}

/// Answer of `fetch`: raw concatenated batches, to decode with
/// `strata_record::decode_records_from`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchAnswer {
    pub records: Bytes,
    pub high_watermark: u64,
    pub log_start_offset: u64,
    /// Below it no transaction is open; read_committed answers stop here.
    pub last_stable_offset: u64,
    /// Where to fetch next: past every batch the answer covered, those the
    /// server left out (markers, aborted transactions) included; 0 when it
    /// covered none.
    pub next_offset: u64,
}

impl From<proto::FetchResponse> for FetchAnswer {
    fn from(answer: proto::FetchResponse) -> FetchAnswer {
        FetchAnswer {
            records: answer.records,
            high_watermark: answer.high_watermark,
            log_start_offset: answer.log_start_offset,
            last_stable_offset: answer.last_stable_offset,
            next_offset: answer.next_offset,
        }
    }
}

/// Which records a fetch returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IsolationLevel {
    /// Only records of committed transactions (and records outside any),
    /// below the last stable offset. The default.
    #[default]
    ReadCommitted,
    /// Every record up to the high watermark, those of open and aborted
    /// transactions included.
    ReadUncommitted,
}

impl IsolationLevel {
    fn to_wire(self) -> proto::IsolationLevel {
        match self {
            IsolationLevel::ReadCommitted => proto::IsolationLevel::ReadCommitted,
            IsolationLevel::ReadUncommitted => proto::IsolationLevel::ReadUncommitted,
        }
    }
}

/// One node's own copy of a partition, from [`Client::read_replica`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaCopy {
    /// The node's log start when the read began.
    pub log_start_offset: u64,
    /// One past the last offset the node had applied when the read began;
    /// the read stops there.
    pub high_watermark: u64,
    /// Every stored batch in order: its base offset and its bytes exactly
    /// as the replica stores them.
    pub batches: Vec<(u64, Bytes)>,
}

/// How often `read_replica` starts over at a log start it learned from an
/// out-of-range answer before giving up: retention moves the log start at
/// most once per check interval (seconds), so a few tries always suffice
/// unless something is wrong.
const READ_REPLICA_RESTARTS: u32 = 5;

/// A handle on a cluster. Cloning is cheap; clones share connections and
/// the metadata cache.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    /// Bootstrap addresses as URIs (`http://host:port`).
    bootstrap: Vec<String>,
    /// One stub (over one lazily connected channel) per node URI.
    stubs: Mutex<HashMap<String, Stub>>,
    metadata: RwLock<Arc<ClusterMetadata>>,
    /// Bumped by every metadata refresh; lets concurrent refreshers share one answer.
    metadata_generation: AtomicU64,
    refresh_lock: tokio::sync::Mutex<()>,
    /// When the cache was last refreshed, or a background refresh last
    /// started (a failing one is tried again a max age later, not per send).
    refreshed_at: Mutex<Option<Instant>>,
    /// Set while a background refresh runs, so sends start at most one.
    refreshing_in_background: AtomicBool,
    /// The URI that last answered a call any node may serve: asked first next time.
    last_good: Mutex<Option<String>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("bootstrap", &self.inner.bootstrap).finish_non_exhaustive()
    }
}

/// Every answer carries an optional error; this takes it out.
pub(crate) trait WireAnswer {
    fn take_error(&mut self) -> Option<proto::Error>;
}

macro_rules! wire_answer {
    ($($answer:ty),* $(,)?) => {
        $(impl WireAnswer for $answer {
            fn take_error(&mut self) -> Option<proto::Error> { self.error.take() }
        })*
    };
}

wire_answer!(
    proto::ProduceResponse,
    proto::FetchResponse,
    proto::MetadataResponse,
    proto::CreateTopicResponse,
    proto::AlterTopicResponse,
    proto::DeleteTopicResponse,
    proto::ListTopicsResponse,
    proto::DescribeTopicResponse,
    proto::ListOffsetsResponse,
    proto::ClusterStatusResponse,
    proto::InitProducerIdResponse,
    proto::ConsumerGroupHeartbeatResponse,
    proto::OffsetCommitResponse,
    proto::OffsetFetchResponse,
    proto::ListGroupsResponse,
    proto::DescribeGroupResponse,
    proto::DeleteGroupResponse,
    proto::ResetOffsetsResponse,
    proto::AddOffsetsToTxnResponse,
    proto::EndTxnResponse,
    proto::ListTransactionsResponse,
    proto::DescribeTransactionResponse,
    proto::AbortTransactionResponse,
    proto::ReassignPartitionResponse,
    proto::DrainNodeResponse,
    proto::RebalanceResponse,
    proto::AddVoterResponse,
    proto::RemoveNodeResponse,
);

/// `host:port` becomes `http://host:port`; an address with a scheme is kept.
pub(crate) fn to_uri(address: &str) -> Result<String, ClientError> {
    let address = address.trim();
    if address.is_empty() {
        return Err(ClientError::InvalidArgument("empty node address".into()));
    }
    if address.contains("://") {
        Ok(address.to_string())
    } else {
        Ok(format!("http://{address}"))
    }
}

/// How long to wait before retrying a retryable answer: a random 50-200 ms,
/// or longer when the server asked for longer.
pub(crate) fn retry_wait(retry_after: Option<Duration>) -> Duration {
    let wait = Duration::from_millis(rand::thread_rng().gen_range(RETRY_WAIT_MIN_MS..=RETRY_WAIT_MAX_MS));
    retry_after.map_or(wait, |asked| asked.max(wait))
}

impl Client {
    /// Creates a client for the cluster reachable through `bootstrap`
    /// (`host:port` each). No connection is made here: channels connect on
    /// first use, and the first call that needs metadata fetches it from the
    /// bootstrap nodes in turn.
    pub fn connect(bootstrap: &[String]) -> Result<Client, ClientError> {
        Client::connect_with(bootstrap, ClientConfig::default())
    }

    pub fn connect_with(bootstrap: &[String], config: ClientConfig) -> Result<Client, ClientError> {
        let bootstrap = bootstrap.iter().map(|a| to_uri(a)).collect::<Result<Vec<_>, _>>()?;
        if bootstrap.is_empty() {
            return Err(ClientError::InvalidArgument("no bootstrap address given".into()));
        }
        for uri in &bootstrap {
            // Reject malformed addresses now rather than on first use.
            Endpoint::from_shared(uri.clone())
                .map_err(|e| ClientError::InvalidArgument(format!("bad address '{uri}': {e}")))?;
        }
        Ok(Client {
            inner: Arc::new(Inner {
                config,
                bootstrap,
                stubs: Mutex::new(HashMap::new()),
                metadata: RwLock::new(Arc::new(ClusterMetadata::default())),
                metadata_generation: AtomicU64::new(0),
                refresh_lock: tokio::sync::Mutex::new(()),
                refreshed_at: Mutex::new(None),
                refreshing_in_background: AtomicBool::new(false),
                last_good: Mutex::new(None),
            }),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    // ---- metadata -------------------------------------------------------

    /// The metadata cache as it is now, without asking the cluster.
    pub fn cached_metadata(&self) -> Arc<ClusterMetadata> {
        self.inner.metadata.read().expect("metadata lock").clone()
    }

    /// Fetches fresh metadata from the cluster and returns it.
    pub async fn metadata(&self) -> Result<ClusterMetadata, ClientError> {
        Ok((*self.refresh(true).await?).clone())
    }

    /// Refreshes the cache unless another caller refreshed it while this one
    /// waited for its turn, and returns the result.
    pub async fn refresh_metadata(&self) -> Result<Arc<ClusterMetadata>, ClientError> {
        self.refresh(false).await
    }

    /// Runs on a task of its own: a caller that stops polling mid-refresh
    /// (a consumer's parked fetch) must not keep the refresh lock and stall
    /// every other call on this client.
    async fn refresh(&self, force: bool) -> Result<Arc<ClusterMetadata>, ClientError> {
        let client = self.clone();
        tokio::spawn(async move { client.refresh_now(force).await }).await.map_err(|_| ClientError::Closed)?
    }

    async fn refresh_now(&self, force: bool) -> Result<Arc<ClusterMetadata>, ClientError> {
        let seen = self.inner.metadata_generation.load(Ordering::SeqCst);
        let _turn = self.inner.refresh_lock.lock().await;
        if !force && self.inner.metadata_generation.load(Ordering::SeqCst) != seen {
            return Ok(self.cached_metadata());
        }
        let answer = self
            .call_any(proto::MetadataRequest { topics: vec![] }, |mut stub, request| async move {
                stub.metadata(request).await
            })
            .await?;
        let fresh = Arc::new(ClusterMetadata::from(answer));
        *self.inner.metadata.write().expect("metadata lock") = fresh.clone();
        self.inner.metadata_generation.fetch_add(1, Ordering::SeqCst);
        *self.inner.refreshed_at.lock().expect("refresh time lock") = Some(Instant::now());
        Ok(fresh)
    }

    /// Starts a refresh in the background when the cache is older than
    /// `metadata_max_age` and none runs; the caller goes on with the cache.
    fn refresh_when_old(&self) {
        {
            let mut refreshed_at = self.inner.refreshed_at.lock().expect("refresh time lock");
            if refreshed_at.is_some_and(|at| at.elapsed() < self.inner.config.metadata_max_age) {
                return;
            }
            if self.inner.refreshing_in_background.swap(true, Ordering::SeqCst) {
                return;
            }
            *refreshed_at = Some(Instant::now());
        }
        let client = self.clone();
        tokio::spawn(async move {
            if let Err(error) = client.refresh_now(false).await {
                tracing::debug!(%error, "background metadata refresh failed; the cache is kept");
            }
            client.inner.refreshing_in_background.store(false, Ordering::SeqCst);
        });
    }

    fn update_metadata(&self, change: impl FnOnce(&mut ClusterMetadata)) {
        let mut guard = self.inner.metadata.write().expect("metadata lock");
        change(Arc::make_mut(&mut guard));
    }

    /// Forgets the leader of a partition, so the next request refreshes metadata.
    fn forget_leader(&self, topic: &str, partition: u32) {
        self.update_metadata(|metadata| {
            if let Some(p) =
                metadata.topics.get_mut(topic).and_then(|t| t.partitions.iter_mut().find(|p| p.partition == partition))
            {
                p.leader = None;
            }
        });
    }

    /// Records a leader learned from a NOT_LEADER hint or a successful answer.
    fn learn_leader(&self, topic: &str, partition: u32, leader: NodeId, address: Option<&str>) {
        self.update_metadata(|metadata| {
            if let Some(address) = address {
                metadata.nodes.insert(leader, address.to_string());
            }
            if let Some(p) =
                metadata.topics.get_mut(topic).and_then(|t| t.partitions.iter_mut().find(|p| p.partition == partition))
            {
                p.leader = Some(leader);
            }
        });
    }

    /// The metadata of one topic, from the cache or, when the cache does not
    /// know it, from a refresh. `UNKNOWN_TOPIC` when the cluster does not know it.
    pub async fn topic_metadata(&self, topic: &str) -> Result<TopicMetadata, ClientError> {
        if let Some(t) = self.cached_metadata().topic(topic) {
            return Ok(t.clone());
        }
        let metadata = self.refresh_metadata().await?;
        metadata.topic(topic).cloned().ok_or_else(|| unknown_topic(topic))
    }

    /// Partition count of a topic, without cloning its metadata; from the
    /// cache, which is refreshed in the background once it is older than
    /// `metadata_max_age` (so added partitions show up within about that).
    pub(crate) async fn partition_count(&self, topic: &str) -> Result<u32, ClientError> {
        if let Some(t) = self.cached_metadata().topic(topic) {
            self.refresh_when_old();
            return Ok(t.partition_count());
        }
        self.refreshed_partition_count(topic).await
    }

    /// Partition count of a topic from refreshed metadata: for a partition
    /// the cache does not know yet (the topic may have grown).
    pub(crate) async fn refreshed_partition_count(&self, topic: &str) -> Result<u32, ClientError> {
        let metadata = self.refresh_metadata().await?;
        metadata.topic(topic).map(|t| t.partition_count()).ok_or_else(|| unknown_topic(topic))
    }

    // ---- transport --------------------------------------------------------

    fn stub(&self, uri: &str) -> Result<Stub, ClientError> {
        let mut stubs = self.inner.stubs.lock().expect("stub map lock");
        if let Some(stub) = stubs.get(uri) {
            return Ok(stub.clone());
        }
        let endpoint = Endpoint::from_shared(uri.to_string())
            .map_err(|e| ClientError::InvalidArgument(format!("bad address '{uri}': {e}")))?
            .connect_timeout(self.inner.config.connect_timeout)
            .tcp_nodelay(true)
            // Keep-alives notice a dead node during a long poll.
            .http2_keep_alive_interval(limits::CLIENT_KEEPALIVE_INTERVAL)
            .keep_alive_timeout(limits::CLIENT_KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        let stub = StrataClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(limits::MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(limits::MAX_GRPC_MESSAGE_BYTES);
        stubs.insert(uri.to_string(), stub.clone());
        Ok(stub)
    }

    /// One request to one node with a deadline; a wire error becomes `Err`.
    async fn rpc<Req, Resp, F, Fut>(
        &self,
        uri: &str,
        request: Req,
        timeout: Duration,
        call: &F,
    ) -> Result<Resp, ClientError>
    where
        F: Fn(Stub, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
        Resp: WireAnswer,
    {
        let stub = self.stub(uri)?;
        let mut request = tonic::Request::new(request);
        request.set_timeout(timeout);
        let timeout_error =
            || ClientError::Timeout { address: uri.to_string(), timeout_ms: timeout.as_millis() as u64 };
        let answer = match tokio::time::timeout(timeout, call(stub, request)).await {
            Err(_elapsed) => return Err(timeout_error()),
            Ok(Err(status)) => return Err(ClientError::from_status(uri, status, timeout)),
            Ok(Ok(answer)) => answer,
        };
        let mut answer = answer.into_inner();
        match ClientError::from_wire(answer.take_error()) {
            Some(error) => Err(error),
            None => Ok(answer),
        }
    }

    /// Addresses to try for a call any node may serve: the last one that
    /// answered, the bootstrap list, then every node the metadata names.
    fn any_node_candidates(&self) -> Vec<String> {
        let mut candidates: Vec<String> = Vec::new();
        let mut push = |uri: String| {
            if !candidates.contains(&uri) {
                candidates.push(uri);
            }
        };
        if let Some(uri) = self.inner.last_good.lock().expect("last good lock").clone() {
            push(uri);
        }
        for uri in &self.inner.bootstrap {
            push(uri.clone());
        }
        for address in self.cached_metadata().nodes.values() {
            if let Ok(uri) = to_uri(address) {
                push(uri);
            }
        }
        candidates
    }

    /// A call any node may serve (it forwards to the metadata leader itself).
    /// An unreachable node makes us try the next one; a back-off answer
    /// (no metadata leader yet, busy) is retried after a short wait until the
    /// request timeout has passed. Other errors are returned at once.
    ///
    /// A write retried after a timeout may already have taken effect, so
    /// `create_topic` can then answer `TOPIC_ALREADY_EXISTS`.
    pub(crate) async fn call_any<Req, Resp, F, Fut>(&self, request: Req, call: F) -> Result<Resp, ClientError>
    where
        Req: Clone,
        F: Fn(Stub, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
        Resp: WireAnswer,
    {
        let deadline = Instant::now() + self.inner.config.request_timeout;
        // The cluster's last back-off answer: what the caller gets if the
        // deadline then cuts a retry short, rather than that cut's timeout.
        let mut refusal: Option<ClientError> = None;
        loop {
            let mut last_error = None;
            for uri in self.any_node_candidates() {
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    break;
                }
                match self.rpc(&uri, request.clone(), remaining, &call).await {
                    Ok(answer) => {
                        *self.inner.last_good.lock().expect("last good lock") = Some(uri);
                        return Ok(answer);
                    }
                    Err(error @ (ClientError::Transport { .. } | ClientError::Timeout { .. })) => {
                        tracing::debug!(%uri, %error, "node did not answer, trying the next one");
                        last_error = Some(error);
                    }
                    // Every node forwards to the same metadata leader: wait, then retry.
                    Err(error) if error.retry_class() == RetryClass::BackOff => {
                        refusal = Some(error.clone());
                        last_error = Some(error);
                        break;
                    }
                    Err(error) => return Err(error),
                }
            }
            let error = last_error.unwrap_or_else(|| ClientError::Timeout {
                address: self.inner.bootstrap.join(","),
                timeout_ms: self.inner.config.request_timeout.as_millis() as u64,
            });
            let wait = retry_wait(error.retry_after());
            if Instant::now() + wait >= deadline {
                let cut_short = matches!(error, ClientError::Transport { .. } | ClientError::Timeout { .. });
                return Err(if cut_short { refusal.unwrap_or(error) } else { error });
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Nodes to send a partition request to: the leader when known, else the
    /// replicas in order. Refreshes metadata when the cache has no leader.
    async fn route(&self, topic: &str, partition: u32) -> Result<(bool, Vec<(NodeId, String)>), ClientError> {
        let mut metadata = self.cached_metadata();
        let has_leader_address = |m: &ClusterMetadata| {
            m.partition(topic, partition).and_then(|p| p.leader).and_then(|l| m.node_address(l)).is_some()
        };
        if !has_leader_address(&metadata) {
            metadata = self.refresh_metadata().await?;
        }
        let topic_metadata = metadata.topic(topic).ok_or_else(|| unknown_topic(topic))?;
        let p = topic_metadata.partition(partition).ok_or_else(|| {
            ClientError::local(
                ErrorCode::UnknownPartition,
                format!(
                    "topic '{topic}' has {} partitions, no partition {partition}",
                    topic_metadata.partition_count()
                ),
            )
        })?;
        let address = |id: NodeId| metadata.node_address(id).and_then(|a| to_uri(a).ok()).map(|uri| (id, uri));
        if let Some(leader) = p.leader.and_then(address) {
            return Ok((true, vec![leader]));
        }
        let replicas: Vec<(NodeId, String)> = p.replicas.iter().filter_map(|&id| address(id)).collect();
        if replicas.is_empty() {
            // Retryable on purpose: the metadata may name the nodes shortly.
            return Err(ClientError::Server {
                code: ErrorCode::LeaderNotAvailable,
                message: format!("the metadata names no reachable replica of {topic}/{partition}"),
                details: Default::default(),
            });
        }
        Ok((false, replicas))
    }

    /// A request that only the partition's leader serves. Follows NOT_LEADER
    /// hints; while the leader is unknown, tries the replicas in order.
    /// Returns retryable errors to the caller, which decides how to wait.
    async fn call_partition<Req, Resp, F, Fut>(
        &self,
        topic: &str,
        partition: u32,
        request: Req,
        timeout: Duration,
        call: F,
    ) -> Result<Resp, ClientError>
    where
        Req: Clone,
        F: Fn(Stub, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
        Resp: WireAnswer,
    {
        let (mut leader_known, route) = self.route(topic, partition).await?;
        let mut candidates: VecDeque<(NodeId, String)> = route.into();
        let mut hops = 0;
        let mut last_error = None;
        while let Some((node, uri)) = candidates.pop_front() {
            let error = match self.rpc(&uri, request.clone(), timeout, &call).await {
                Ok(answer) => {
                    if !leader_known {
                        self.learn_leader(topic, partition, node, None);
                    }
                    return Ok(answer);
                }
                Err(error) => error,
            };
            if let Some((leader, address)) = error.leader_hint() {
                if hops < MAX_LEADER_HOPS {
                    hops += 1;
                    let leader_uri = to_uri(address)?;
                    tracing::debug!(topic, partition, leader, %leader_uri, "following NOT_LEADER hint");
                    self.learn_leader(topic, partition, leader, Some(address));
                    candidates.retain(|(_, uri)| *uri != leader_uri);
                    candidates.push_front((leader, leader_uri));
                    leader_known = true;
                    last_error = Some(error);
                    continue;
                }
            }
            if !error.is_retryable() {
                return Err(error);
            }
            self.forget_leader(topic, partition);
            // While probing for an unknown leader, one replica's answer says
            // nothing about the next one.
            if !leader_known && !candidates.is_empty() {
                last_error = Some(error);
                continue;
            }
            return Err(error);
        }
        Err(last_error.expect("a route has at least one node"))
    }

    // ---- partition requests -------------------------------------------

    /// Sends one encoded record batch to the partition's leader. The server
    /// may wait up to `timeout` for replication before answering TIMEOUT.
    /// An idempotent batch with `Acks::None` is refused before sending.
    /// Not retried here: the producer owns retries and their ordering.
    pub async fn produce_batch(
        &self,
        topic: &str,
        partition: u32,
        batch: Bytes,
        acks: Acks,
        timeout: Duration,
    ) -> Result<ProduceAnswer, ClientError> {
        check_acks(&batch, acks)?;
        let request = proto::ProduceRequest {
            topic: topic.to_string(),
            partition,
            batch,
            acks: acks.to_wire() as i32,
            timeout_ms: timeout.as_millis().min(u32::MAX as u128) as u32,
            ..Default::default()
        };
        self.produce_request(request, timeout).await
    }

    /// Sends one transactional batch (built with
    /// `strata_record::encode_transactional_batch`) of the producer that
    /// `transactional_id` initialised, with acks=all. Not retried here.
    pub async fn produce_transactional_batch(
        &self,
        topic: &str,
        partition: u32,
        batch: Bytes,
        transactional_id: &str,
        timeout: Duration,
    ) -> Result<ProduceAnswer, ClientError> {
        let request = proto::ProduceRequest {
            topic: topic.to_string(),
            partition,
            batch,
            acks: Acks::All.to_wire() as i32,
            timeout_ms: timeout.as_millis().min(u32::MAX as u128) as u32,
            transactional_id: transactional_id.to_string(),
        };
        self.produce_request(request, timeout).await
    }

    async fn produce_request(
        &self,
        request: proto::ProduceRequest,
        timeout: Duration,
    ) -> Result<ProduceAnswer, ClientError> {
        let (topic, partition) = (request.topic.clone(), request.partition);
        let (topic, partition) = (topic.as_str(), partition);
        let answer = self
            .call_partition(topic, partition, request, timeout + SERVER_ANSWER_SLACK, |mut stub, request| async move {
                stub.produce(request).await
            })
            .await?;
        let mut duplicates: Vec<(u32, u64)> = answer.duplicates.iter().map(|d| (d.index, d.offset)).collect();
        duplicates.sort_unstable();
        Ok(ProduceAnswer {
            base_offset: answer.base_offset,
            record_count: answer.record_count,
            duplicates,
            duplicate_batch: answer.duplicate_batch,
        })
    }

    /// Fetches batches from `offset` on, waiting up to `max_wait` for data
    /// (long poll). Not retried here: the consumer owns retries.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: u32,
        max_wait: Duration,
    ) -> Result<FetchAnswer, ClientError> {
        self.fetch_isolated(topic, partition, offset, max_bytes, max_wait, IsolationLevel::ReadCommitted).await
    }

    /// [`Client::fetch`] with a chosen isolation level.
    pub async fn fetch_isolated(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: u32,
        max_wait: Duration,
        isolation: IsolationLevel,
    ) -> Result<FetchAnswer, ClientError> {
        let max_wait_ms = max_wait.as_millis().min(limits::MAX_FETCH_WAIT_MS as u128) as u32;
        let request = proto::FetchRequest {
            topic: topic.to_string(),
            partition,
            offset,
            max_bytes: max_bytes.min(limits::MAX_FETCH_BYTES as u32),
            max_wait_ms,
            replica_read: false,
            isolation_level: isolation.to_wire() as i32,
        };
        let timeout = Duration::from_millis(max_wait_ms as u64) + self.inner.config.request_timeout;
        let answer =
            self.call_partition(topic, partition, request, timeout, |mut stub, request| async move {
                stub.fetch(request).await
            })
            .await?;
        Ok(FetchAnswer::from(answer))
    }

    /// Reads batches of a partition from the copy of one chosen node,
    /// whether it leads the partition or follows, from `offset` up to that
    /// node's own applied high watermark (which may lag the leader's). No
    /// long poll, no leader routing, no retries. The answer's `records` are
    /// the batches exactly as that replica stores them, so two replicas'
    /// answers can be compared byte for byte; its `high_watermark` and
    /// `log_start_offset` are that node's own. For checking replicas (tests,
    /// the fault harness), not for consuming.
    pub async fn fetch_from_replica(
        &self,
        node_address: &str,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: u32,
    ) -> Result<FetchAnswer, ClientError> {
        let request = proto::FetchRequest {
            topic: topic.to_string(),
            partition,
            offset,
            max_bytes: max_bytes.min(limits::MAX_FETCH_BYTES as u32),
            max_wait_ms: 0,
            replica_read: true,
            ..Default::default()
        };
        let uri = to_uri(node_address)?;
        let answer = self
            .rpc(&uri, request, self.inner.config.request_timeout, &|mut stub: Stub, request| async move {
                stub.fetch(request).await
            })
            .await?;
        Ok(FetchAnswer::from(answer))
    }

    /// One node's whole copy of a partition (see [`Client::fetch_from_replica`]):
    /// every stored batch from its log start up to the high watermark it had
    /// when the read began. Fails when the copy changes under the read in a
    /// way that leaves a gap (retention moving the log start past the
    /// read's position); the caller may simply read again.
    pub async fn read_replica(
        &self,
        node_address: &str,
        topic: &str,
        partition: u32,
    ) -> Result<ReplicaCopy, ClientError> {
        let mut offset = 0;
        let mut copy: Option<ReplicaCopy> = None;
        // The first read learns the log start from an out-of-range answer;
        // retention may move it again in between, a few times at most.
        let mut restarts = 0;
        loop {
            let max_bytes = limits::MAX_FETCH_BYTES as u32;
            let answer = match self.fetch_from_replica(node_address, topic, partition, offset, max_bytes).await {
                Ok(answer) => answer,
                Err(ClientError::Server { code: ErrorCode::OffsetOutOfRange, details, .. })
                    if copy.is_none() && restarts < READ_REPLICA_RESTARTS =>
                {
                    restarts += 1;
                    offset = details.log_start_offset;
                    continue;
                }
                Err(error) => return Err(error),
            };
            let copy = copy.get_or_insert_with(|| ReplicaCopy {
                log_start_offset: answer.log_start_offset,
                high_watermark: answer.high_watermark,
                batches: Vec::new(),
            });
            let before = offset;
            for batch in strata_record::BatchIter::new(&answer.records) {
                let (header, bytes) = batch.map_err(|e| ClientError::Decode {
                    address: node_address.to_string(),
                    message: format!("replica read of {topic}/{partition} at offset {offset}: {e}"),
                })?;
                if header.base_offset >= copy.high_watermark {
                    break;
                }
                if header.next_offset() <= offset {
                    continue;
                }
                copy.batches.push((header.base_offset, answer.records.slice_ref(bytes)));
                offset = header.next_offset();
            }
            if offset >= copy.high_watermark || offset == before {
                return Ok(copy.clone());
            }
        }
    }

    /// Looks up an offset of a partition at its leader. Retryable answers
    /// (leader moving, partition starting) are retried until the request
    /// timeout has passed.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partition: u32,
        spec: OffsetSpec,
    ) -> Result<ListedOffset, ClientError> {
        let (spec, timestamp_ms) = match spec {
            OffsetSpec::Earliest => (proto::OffsetSpec::Earliest, 0),
            OffsetSpec::Latest => (proto::OffsetSpec::Latest, 0),
            OffsetSpec::Timestamp(ms) => (proto::OffsetSpec::Timestamp, ms),
        };
        let request = proto::ListOffsetsRequest {
            topic: topic.to_string(),
            partition,
            spec: spec as i32,
            timestamp_ms,
            with_stats: false,
        };
        let timeout = self.inner.config.request_timeout;
        let deadline = Instant::now() + timeout;
        loop {
            let result = self
                .call_partition(topic, partition, request.clone(), timeout, |mut stub, request| async move {
                    stub.list_offsets(request).await
                })
                .await;
            match result {
                Ok(answer) => {
                    return Ok(ListedOffset {
                        offset: answer.offset,
                        high_watermark: answer.high_watermark,
                        log_start_offset: answer.log_start_offset,
                    })
                }
                Err(error) if error.is_retryable() => {
                    let wait = retry_wait(error.retry_after());
                    if Instant::now() + wait >= deadline {
                        return Err(error);
                    }
                    tracing::debug!(topic, partition, %error, "retrying list offsets");
                    tokio::time::sleep(wait).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    // ---- admin ----------------------------------------------------------

    /// Creates a topic and returns its metadata (leaders may still be unknown).
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicMetadata, ClientError> {
        let request = proto::CreateTopicRequest {
            name: name.to_string(),
            partitions,
            replication_factor,
            configs: configs.into_iter().collect(),
        };
        let answer =
            self.call_any(request, |mut stub, request| async move { stub.create_topic(request).await }).await?;
        self.cache_answered_topic(name, answer.topic).await
    }

    /// Grows topic `name` to `partitions` partitions (`None` leaves the
    /// count; fewer than it has is refused with INVALID_PARTITIONS, the
    /// count it has changes nothing) and sets `configs` over its configs
    /// (keys not named keep their value; a bad one is refused with
    /// INVALID_CONFIG). Nothing changes when any part is refused. Returns
    /// the topic after the change (leaders of new partitions may still be
    /// unknown), which this client's cache also takes; other clients' producers
    /// use new partitions once their cache is refreshed (`metadata_max_age`).
    pub async fn alter_topic(
        &self,
        name: &str,
        partitions: Option<u32>,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicMetadata, ClientError> {
        if partitions == Some(0) {
            return Err(ClientError::InvalidArgument(
                "a topic has at least one partition; give a count above its current one, or none".into(),
            ));
        }
        let request = proto::AlterTopicRequest {
            name: name.to_string(),
            partitions: partitions.unwrap_or(0),
            configs: configs.into_iter().collect(),
        };
        let answer = self.call_any(request, |mut stub, request| async move { stub.alter_topic(request).await }).await?;
        self.cache_answered_topic(name, answer.topic).await
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        let request = proto::DeleteTopicRequest { name: name.to_string() };
        self.call_any(request, |mut stub, request| async move { stub.delete_topic(request).await }).await?;
        self.update_metadata(|metadata| {
            metadata.topics.remove(name);
        });
        Ok(())
    }

    /// Moves `topic`/`partition` to `replicas` (the first the preferred
    /// leader). Answers once the move is recorded: `true` when nothing was
    /// left to copy (only the order changed); otherwise the move goes on in
    /// the cluster and `cluster_status().reassignments` lists it until done.
    pub async fn reassign_partition(&self, topic: &str, partition: u32, replicas: &[u64]) -> Result<bool, ClientError> {
        self.reassign_partition_throttled(topic, partition, replicas, None).await
    }

    /// `reassign_partition` that first sets the cluster's move throttle to
    /// `throttle` when given: it then applies to this move and every later
    /// one until changed (`ThrottleRate::Off` clears it).
    pub async fn reassign_partition_throttled(
        &self,
        topic: &str,
        partition: u32,
        replicas: &[u64],
        throttle: Option<ThrottleRate>,
    ) -> Result<bool, ClientError> {
        let request = proto::ReassignPartitionRequest {
            topic: topic.to_string(),
            partition,
            replicas: replicas.to_vec(),
            set_move_throttle: throttle.is_some(),
            move_throttle_bytes_per_sec: throttle.and_then(ThrottleRate::bytes_per_sec).unwrap_or(0),
        };
        let answer =
            self.call_any(request, |mut stub, request| async move { stub.reassign_partition(request).await }).await?;
        Ok(answer.done)
    }

    /// Drains node `node_id` of leadership (`drained` true: the partitions
    /// and the metadata group it leads move to other nodes within seconds,
    /// and none moves to it) or ends that. Answers every drained node.
    pub async fn drain_node(&self, node_id: u64, drained: bool) -> Result<Vec<u64>, ClientError> {
        let request = proto::DrainNodeRequest { node_id, drained };
        let answer = self.call_any(request, |mut stub, request| async move { stub.drain_node(request).await }).await?;
        Ok(answer.drained)
    }

    /// Evens out replicas and then preferred leaders over the nodes: answers
    /// the moves `(topic, partition, from, to)` the cluster recorded (they
    /// then run like `reassign_partition` moves), or with `dry_run` only
    /// planned.
    pub async fn rebalance(&self, dry_run: bool) -> Result<Vec<(String, u32, Vec<u64>, Vec<u64>)>, ClientError> {
        self.rebalance_throttled(dry_run, None).await
    }

    /// `rebalance` that first sets the cluster's move throttle to
    /// `throttle` when given (refused with `dry_run`, which changes
    /// nothing).
    pub async fn rebalance_throttled(
        &self,
        dry_run: bool,
        throttle: Option<ThrottleRate>,
    ) -> Result<Vec<(String, u32, Vec<u64>, Vec<u64>)>, ClientError> {
        let request = proto::RebalanceRequest {
            dry_run,
            set_move_throttle: throttle.is_some(),
            move_throttle_bytes_per_sec: throttle.and_then(ThrottleRate::bytes_per_sec).unwrap_or(0),
        };
        let answer = self.call_any(request, |mut stub, request| async move { stub.rebalance(request).await }).await?;
        Ok(answer.moves.into_iter().map(|m| (m.topic, m.partition, m.from, m.to)).collect())
    }

    /// The topic a create or alter answered, cached; or, when the answer
    /// carried none (an older server), the topic after a metadata refresh.
    async fn cache_answered_topic(
        &self,
        name: &str,
        answered: Option<proto::TopicMetadata>,
    ) -> Result<TopicMetadata, ClientError> {
        match answered {
            Some(topic) => {
                let topic = TopicMetadata::from(topic);
                let cached = topic.clone();
                self.update_metadata(|metadata| {
                    metadata.topics.insert(cached.name.clone(), cached);
                });
                Ok(topic)
            }
            None => self.refresh(true).await?.topic(name).cloned().ok_or_else(|| unknown_topic(name)),
        }
    }

    /// Makes node `node_id`, which joined the cluster, a voter of the
    /// metadata group once it has caught up; answers the voters after.
    pub async fn add_voter(&self, node_id: u64) -> Result<Vec<u64>, ClientError> {
        let request = proto::AddVoterRequest { node_id };
        let answer = self.call_any(request, |mut stub, request| async move { stub.add_voter(request).await }).await?;
        Ok(answer.voters)
    }

    /// Starts decommissioning node `node_id` (every replica moves off it,
    /// then it leaves the metadata group), or, called again, tells how far
    /// it is: `(replicas still on it, removed)`.
    pub async fn remove_node(&self, node_id: u64) -> Result<(u64, bool), ClientError> {
        let request = proto::RemoveNodeRequest { node_id };
        let answer = self.call_any(request, |mut stub, request| async move { stub.remove_node(request).await }).await?;
        Ok((answer.remaining_replicas, answer.removed))
    }

    /// All topics, sorted by name.
    pub async fn list_topics(&self) -> Result<Vec<TopicMetadata>, ClientError> {
        let answer = self
            .call_any(proto::ListTopicsRequest {}, |mut stub, request| async move { stub.list_topics(request).await })
            .await?;
        let mut topics: Vec<TopicMetadata> = answer.topics.into_iter().map(TopicMetadata::from).collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    /// A topic with each partition's leader and offsets.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription, ClientError> {
        let request = proto::DescribeTopicRequest { name: name.to_string() };
        let answer =
            self.call_any(request, |mut stub, request| async move { stub.describe_topic(request).await }).await?;
        Ok(TopicDescription::from(answer))
    }

    /// A producer id for an idempotent producer. Without a name: a fresh id
    /// at epoch 0. With a name: that producer's id at its next epoch, which
    /// fences every older instance of it (their sends fail with
    /// PRODUCER_FENCED on partitions the new one has written to).
    pub async fn init_producer_id(&self, name: Option<&str>) -> Result<ProducerId, ClientError> {
        let request =
            proto::InitProducerIdRequest { producer_name: name.unwrap_or_default().to_string(), ..Default::default() };
        let answer =
            self.call_any(request, |mut stub, request| async move { stub.init_producer_id(request).await }).await?;
        let epoch = i16::try_from(answer.producer_epoch).map_err(|_| {
            ClientError::local(ErrorCode::Internal, format!("producer epoch {} is out of range", answer.producer_epoch))
        })?;
        let id = i64::try_from(answer.producer_id).map_err(|_| {
            ClientError::local(ErrorCode::Internal, format!("producer id {} is out of range", answer.producer_id))
        })?;
        Ok(ProducerId { id, epoch })
    }

    /// The cluster's health as the answering node sees it.
    pub async fn cluster_status(&self) -> Result<ClusterStatus, ClientError> {
        let answer =
            self.call_any(proto::ClusterStatusRequest {}, |mut stub, request| async move {
                stub.cluster_status(request).await
            })
            .await?;
        Ok(ClusterStatus::from(answer))
    }
}

/// Refuses an idempotent batch (one with a producer id) with `Acks::None`:
/// the server refuses it too, and saying so here saves a round trip.
fn check_acks(batch: &[u8], acks: Acks) -> Result<(), ClientError> {
    if acks == Acks::None && strata_record::read_header(batch).is_ok_and(|h| h.producer_id >= 0) {
        return Err(ClientError::InvalidArgument(
            "an idempotent batch (one with a producer id) needs acks=all; send it with Acks::All".into(),
        ));
    }
    Ok(())
}

fn unknown_topic(topic: &str) -> ClientError {
    ClientError::local(ErrorCode::UnknownTopic, format!("the cluster has no topic '{topic}'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_offsets_skip_duplicates_by_key() {
        let answer = ProduceAnswer {
            base_offset: 10,
            record_count: 2,
            duplicates: vec![(1, 3), (3, 7)],
            duplicate_batch: false,
        };
        assert_eq!(answer.record_offsets(4), vec![10, 3, 11, 7]);
        let plain = ProduceAnswer { base_offset: 5, record_count: 2, duplicates: vec![], duplicate_batch: true };
        assert_eq!(plain.record_offsets(2), vec![5, 6]);
    }

    #[test]
    fn addresses_become_http_uris() {
        assert_eq!(to_uri("127.0.0.1:7171").unwrap(), "http://127.0.0.1:7171");
        assert_eq!(to_uri(" node-1:7171 ").unwrap(), "http://node-1:7171");
        assert_eq!(to_uri("https://node:443").unwrap(), "https://node:443");
        assert!(to_uri("  ").is_err());
    }

    #[test]
    fn connect_checks_addresses_without_connecting() {
        assert!(matches!(Client::connect(&[]), Err(ClientError::InvalidArgument(_))));
        assert!(Client::connect(&["bad address with spaces:1".to_string()]).is_err());
        let client = Client::connect(&["127.0.0.1:1".to_string(), "127.0.0.1:2".to_string()]).unwrap();
        assert_eq!(client.any_node_candidates(), vec!["http://127.0.0.1:1", "http://127.0.0.1:2"]);
        assert!(client.cached_metadata().topics.is_empty());
    }

    #[tokio::test]
    async fn idempotent_batches_with_acks_none_are_refused_before_sending() {
        let record = strata_record::Record { value: Some(Bytes::from_static(b"v")), ..Default::default() };
        let idempotent = strata_record::encode_batch(
            std::slice::from_ref(&record),
            strata_record::ProducerFields { producer_id: 7, producer_epoch: 0, base_sequence: 0 },
        )
        .unwrap();
        let plain = strata_record::encode_batch(&[record], strata_record::ProducerFields::default()).unwrap();
        assert!(check_acks(&idempotent, Acks::All).is_ok());
        assert!(check_acks(&idempotent, Acks::Leader).is_ok());
        assert!(check_acks(&plain, Acks::None).is_ok());
        // Bytes that are not a batch are the server's to refuse.
        assert!(check_acks(b"garbage", Acks::None).is_ok());
        // Nothing listens on port 1: a request that were sent would fail
        // with a connection error, not InvalidArgument.
        let client = Client::connect(&["127.0.0.1:1".to_string()]).unwrap();
        let refused =
            client.produce_batch("t", 0, idempotent, Acks::None, Duration::from_millis(200)).await.unwrap_err();
        assert!(matches!(&refused, ClientError::InvalidArgument(m) if m.contains("acks=all")), "{refused:?}");
    }

    #[test]
    fn retry_wait_stays_in_range_and_honours_the_server() {
        for _ in 0..100 {
            let wait = retry_wait(None);
            assert!((Duration::from_millis(50)..=Duration::from_millis(200)).contains(&wait), "{wait:?}");
        }
        assert_eq!(retry_wait(Some(Duration::from_secs(1))), Duration::from_secs(1));
    }

    #[test]
    fn learned_and_forgotten_leaders_patch_the_cache() {
        let client = Client::connect(&["127.0.0.1:1".to_string()]).unwrap();
        client.update_metadata(|m| {
            m.topics.insert(
                "t".into(),
                TopicMetadata {
                    name: "t".into(),
                    partitions: vec![crate::PartitionMetadata { partition: 0, leader: Some(1), replicas: vec![1, 2] }],
                    configs: BTreeMap::new(),
                },
            );
        });
        let before = client.cached_metadata();
        client.learn_leader("t", 0, 2, Some("10.0.0.2:7171"));
        let after = client.cached_metadata();
        assert_eq!(after.partition("t", 0).unwrap().leader, Some(2));
        assert_eq!(after.node_address(2), Some("10.0.0.2:7171"));
        // Readers holding the old snapshot are not disturbed.
        assert_eq!(before.partition("t", 0).unwrap().leader, Some(1));
        client.forget_leader("t", 0);
        assert_eq!(client.cached_metadata().partition("t", 0).unwrap().leader, None);
        // Unknown topics are ignored, not invented.
        client.learn_leader("other", 0, 2, None);
        assert!(client.cached_metadata().topic("other").is_none());
    }
}
