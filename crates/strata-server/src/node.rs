//! A running node: the store, the groups it hosts, the reconciler that
//! starts and stops partition groups to match the metadata state, and the
//! retention task.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::{BasicNode, SnapshotPolicy};
use strata_core::limits::{LEFTOVER_SWEEP_INTERVAL, MAX_PARTITION_REPLICAS_PER_NODE};
use strata_proto::v1::raft_transport_server::RaftTransportServer;
use strata_proto::v1::strata_server::StrataServer;
use strata_state::metadata::{Topic, METADATA_GROUP_ID};
use strata_state::{Command, MetadataState, PartitionCommand};
use strata_storage::{BatchInfo, GroupKind, GroupState, Store};
use tokio::sync::watch;

use crate::clock::ClusterClock;
use crate::config::NodeConfig;
use crate::groups::{GroupHandle, Groups};
use crate::network::{GroupNetworkFactory, PeerChannels, Router, TransportService};
use crate::quiesce::{Quiescence, QuietTiming};
use crate::service::StrataService;

/// Most batch headers one retention pass looks at per partition; the rest is
/// trimmed by the next pass. Bounds the memory and time of a pass.
const RETENTION_SCAN_LIMIT: usize = 100_000;

/// A shared, immutable metadata state: requests read it without copying it.
#[derive(Clone, Debug)]
pub struct MetadataSnapshot(Arc<GroupState>);

impl MetadataSnapshot {
    /// Panics unless `state` is a metadata state.
    pub fn new(state: Arc<GroupState>) -> MetadataSnapshot {
        assert!(state.as_metadata().is_some(), "group 0 is the metadata group");
        MetadataSnapshot(state)
    }

    /// The topic named `name`, sharing this snapshot.
    pub fn topic(&self, name: &str) -> Option<TopicRef> {
        self.topics.contains_key(name).then(|| TopicRef { snapshot: self.clone(), name: name.to_string() })
    }
}

impl std::ops::Deref for MetadataSnapshot {
    type Target = MetadataState;

    fn deref(&self) -> &MetadataState {
        self.0.as_metadata().expect("checked in new")
    }
}

/// One topic of a [`MetadataSnapshot`], without copying it.
#[derive(Clone, Debug)]
pub struct TopicRef {
    snapshot: MetadataSnapshot,
    name: String,
}

impl std::ops::Deref for TopicRef {
    type Target = Topic;

    fn deref(&self) -> &Topic {
        &self.snapshot.topics[&self.name]
    }
}

/// Everything a request handler needs; cheap to clone.
#[derive(Clone)]
pub struct Node {
    pub config: Arc<NodeConfig>,
    pub store: Store,
    pub groups: Groups,
    pub peers: PeerChannels,
    router: Router,
    raft_config: Arc<openraft::Config>,
    pub quiescence: Quiescence,
    /// Cluster time: what stamps and retention use instead of this node's
    /// wall clock.
    pub clock: ClusterClock,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    // The io::Error is the source: error chains print it once, after these.
    #[error("cannot create data dir {path}")]
    DataDir { path: String, source: io::Error },
    #[error("cannot open the store in {path}")]
    Store { path: String, source: io::Error },
    #[error("cannot listen on {address}")]
    Listen { address: String, source: io::Error },
    #[error("invalid raft settings: {0}")]
    RaftConfig(String),
    #[error("cannot start the metadata group: {0}")]
    Metadata(String),
}

/// This node's own wall clock, ms since the Unix epoch. Every wall-clock
/// reading of the server goes through here (a test build may skew it, see
/// `faults`). Nothing replicated may be stamped with it directly: use
/// cluster time (`Node::clock`), which one fast clock cannot move.
pub fn local_wall_ms() -> u64 {
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    wall.saturating_add(crate::faults::clock_offset_ms()).max(0) as u64
}

impl Node {
    /// The metadata group (always hosted on every initial voter).
    pub fn metadata(&self) -> GroupHandle {
        self.groups.get(METADATA_GROUP_ID).expect("the metadata group starts before serving")
    }

    /// The metadata state as of the last apply: the immutable snapshot the
    /// state machine publishes after each apply, shared, never copied.
    pub fn metadata_state(&self) -> MetadataSnapshot {
        MetadataSnapshot::new(self.metadata().state.borrow().clone())
    }

    pub fn node_id(&self) -> u64 {
        self.config.node_id
    }

    fn members(&self, ids: &[u64]) -> BTreeMap<u64, BasicNode> {
        ids.iter().map(|id| (*id, BasicNode { addr: self.peers.address(*id).unwrap_or_default() })).collect()
    }

    async fn start_group(&self, group_id: u64, kind: GroupKind, voters: &[u64]) -> Result<GroupHandle, String> {
        let log_store = self.store.log_store(group_id);
        let state_machine = self.store.state_machine(group_id, kind).await.map_err(|e| e.to_string())?;
        let state = state_machine.subscribe();
        let network = GroupNetworkFactory { router: self.router.clone(), group_id };
        let raft = openraft::Raft::new(self.node_id(), self.raft_config.clone(), network, log_store, state_machine)
            .await
            .map_err(|e| e.to_string())?;
        let fresh = !raft.is_initialized().await.map_err(|e| e.to_string())?;
        if fresh {
            // Every voter initializes with the same membership, so the group
            // forms whatever order its nodes start in.
            if let Err(err) = raft.initialize(self.members(voters)).await {
                tracing::debug!(group = group_id, error = %err, "initialize refused; already formed");
            }
        }
        let reader = (kind == GroupKind::Partition).then(|| self.store.partition_reader(group_id));
        let handle = GroupHandle { group_id, raft: raft.clone(), state, reader };
        self.groups.insert(handle.clone());
        if fresh && voters.first() == Some(&self.node_id()) && kind == GroupKind::Partition {
            // The preferred leader campaigns at once, so leaders start spread
            // the way the assignment placed them.
            let _ = raft.trigger().elect(false).await;
        }
        tracing::info!(group = group_id, ?kind, fresh, "group started");
        Ok(handle)
    }

    /// Starts and stops partition groups to match the metadata state.
    async fn reconcile(&self, state: &MetadataState) {
        let me = self.node_id();
        let assignments = state.assignments();
        let wanted: BTreeSet<u64> =
            assignments.iter().filter(|(_, (_, _, a))| a.replicas.contains(&me)).map(|(group, _)| *group).collect();
        for group in &wanted {
            if self.groups.contains(*group) {
                continue;
            }
            if self.groups.all().len() > MAX_PARTITION_REPLICAS_PER_NODE {
                tracing::error!(
                    group,
                    limit = MAX_PARTITION_REPLICAS_PER_NODE,
                    "too many partition replicas; not starting"
                );
                break;
            }
            let replicas = &assignments[group].2.replicas;
            if let Err(err) = self.start_group(*group, GroupKind::Partition, replicas).await {
                tracing::warn!(group, error = %err, "cannot start partition group; will retry");
            }
        }
        for handle in self.groups.all() {
            if handle.group_id == METADATA_GROUP_ID || wanted.contains(&handle.group_id) {
                continue;
            }
            self.stop_and_delete(handle.group_id).await;
        }
    }

    async fn stop_and_delete(&self, group_id: u64) {
        if let Some(handle) = self.groups.remove(group_id) {
            if let Err(err) = handle.raft.shutdown().await {
                tracing::warn!(group = group_id, error = %err, "raft shutdown failed");
            }
        }
        match self.store.delete_group(group_id).await {
            Ok(()) => tracing::info!(group = group_id, "group deleted"),
            Err(err) => tracing::error!(group = group_id, error = %err, "cannot delete group data"),
        }
    }

    /// Deletes data of groups this node no longer hosts: groups the metadata
    /// state has allocated (id below `next_group_id`) but not assigned here.
    async fn delete_leftovers(&self, state: &MetadataState) {
        let me = self.node_id();
        let assignments = state.assignments();
        let stored = match self.store.stored_groups().await {
            Ok(groups) => groups,
            Err(err) => {
                tracing::warn!(error = %err, "cannot list stored groups");
                return;
            }
        };
        for group in stored {
            let assigned_here = assignments.get(&group).is_some_and(|(_, _, a)| a.replicas.contains(&me));
            if group != METADATA_GROUP_ID
                && group < state.next_group_id
                && !assigned_here
                && !self.groups.contains(group)
            {
                self.stop_and_delete(group).await;
            }
        }
    }

    async fn run_reconciler(self, mut metadata: watch::Receiver<Arc<GroupState>>) {
        let mut last_sweep: Option<std::time::Instant> = None;
        loop {
            let state = MetadataSnapshot::new(metadata.borrow_and_update().clone());
            // At start-up, then now and then: rows of deleted groups can
            // also be written after their deletion (a late snapshot chunk).
            if last_sweep.is_none_or(|at| at.elapsed() >= LEFTOVER_SWEEP_INTERVAL) {
                self.delete_leftovers(&state).await;
                last_sweep = Some(std::time::Instant::now());
            }
            self.reconcile(&state).await;
            // Also wake up now and then to retry groups that failed to start.
            tokio::select! {
                changed = metadata.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    }

    async fn run_retention(self) {
        let mut tick = tokio::time::interval(self.config.retention_check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let metadata = self.metadata_state();
            let assignments = metadata.assignments();
            self.clock.retain_partitions(|group| self.groups.contains(group));
            for handle in self.groups.all() {
                let Some((topic, _, _)) = assignments.get(&handle.group_id) else { continue };
                if !handle.is_leader(self.node_id()) {
                    continue;
                }
                if let Err(err) = self.enforce_retention(&handle, &topic.config).await {
                    tracing::warn!(group = handle.group_id, error = %err, "retention pass failed");
                }
            }
        }
    }

    async fn enforce_retention(
        &self,
        handle: &GroupHandle,
        config: &strata_core::topic::TopicConfig,
    ) -> Result<(), String> {
        if config.retention_ms.is_none() && config.retention_bytes.is_none() {
            return Ok(());
        }
        let Some(partition) = handle.state.borrow().as_partition().cloned() else { return Ok(()) };
        let reader = handle.reader.as_ref().expect("partition groups have a reader");
        // Age is measured in cluster time, never this node's wall clock: a
        // leader whose clock runs ahead must not delete data early. Until
        // cluster time is trusted (a majority of clocks agree), time-based
        // retention waits; it only ever runs late, never early.
        let now = self.clock.now();
        let cutoff_ms = config.retention_ms.filter(|_| now.trusted).map(|r| now.ms as i64 - r as i64);
        let excess = config.retention_bytes.map_or(0, |b| partition.retained_bytes().saturating_sub(b));
        // A batch goes when it expired by time, or while the partition is
        // over its byte bound (oldest first); the scan stops at the first
        // batch to keep.
        let expendable = move |info: &BatchInfo, removed: u64| {
            cutoff_ms.is_some_and(|c| info.max_timestamp_ms < c) || removed < excess
        };
        let mut scanned = 0u64;
        let headers = reader
            .scan_headers(
                move |info| {
                    let keep = !expendable(info, scanned);
                    scanned += info.size_bytes;
                    keep
                },
                RETENTION_SCAN_LIMIT,
            )
            .await
            .map_err(|e| e.to_string())?;
        let mut new_start = partition.log_start_offset;
        let mut trimmed = partition.trimmed_bytes_total;
        let mut removed = 0u64;
        for info in &headers {
            if !expendable(info, removed) || info.next_offset > partition.next_offset {
                break;
            }
            new_start = info.next_offset;
            trimmed += info.size_bytes;
            removed += info.size_bytes;
        }
        if new_start <= partition.log_start_offset {
            return Ok(());
        }
        tracing::info!(
            group = handle.group_id,
            new_log_start = new_start,
            removed_bytes = removed,
            "retention trims the log"
        );
        let command =
            Command::Partition(PartitionCommand::Trim { new_log_start: new_start, trimmed_bytes_total: trimmed });
        self.quiescence.wake_for_write(handle).await;
        handle.raft.client_write(command).await.map_err(|e| e.to_string())?;
        Ok(())
    }
}

#[cfg(feature = "fault-hooks")]
fn open_store(config: &NodeConfig, path: &std::path::Path) -> io::Result<Store> {
    if config.faults.record_synced_wal {
        Store::open_recording_syncs(path)
    } else {
        Store::open(path)
    }
}

#[cfg(not(feature = "fault-hooks"))]
fn open_store(_config: &NodeConfig, path: &std::path::Path) -> io::Result<Store> {
    Store::open(path)
}

/// Starts a node and serves until `shutdown` completes.
pub async fn run(config: NodeConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), StartError> {
    crate::faults::set_clock_offset_ms(config.faults.clock_offset_ms);
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|source| StartError::DataDir { path: config.data_dir.display().to_string(), source })?;
    let db_path = config.data_dir.join("db");
    let store = open_store(&config, &db_path)
        .map_err(|source| StartError::Store { path: db_path.display().to_string(), source })?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|source| StartError::Listen { address: config.listen.clone(), source })?;

    let raft_config = openraft::Config {
        cluster_name: "strata".into(),
        heartbeat_interval: config.heartbeat_interval.as_millis() as u64,
        election_timeout_min: config.election_timeout_min.as_millis() as u64,
        election_timeout_max: config.election_timeout_max.as_millis() as u64,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every_entries),
        max_in_snapshot_log_to_keep: config.snapshot_every_entries,
        install_snapshot_timeout: 10_000,
        // openraft keeps six ring buffers of this many entries per group for
        // its `runtime-stats` feature, allocated even with the feature off
        // (as Strata builds it): 1,024 each is ~150 KiB of address space per
        // partition replica for nothing.
        log_stage_capacity: Some(1),
        ..Default::default()
    }
    .validate()
    .map_err(|e| StartError::RaftConfig(e.to_string()))?;

    let peers = PeerChannels::new(config.initial_cluster.clone());
    let router = Router::new(config.node_id, peers.clone(), store.clone());
    let groups = Groups::default();
    let clock = ClusterClock::new(config.initial_cluster.len());
    let quiescence = Quiescence::new(
        config.node_id,
        QuietTiming {
            quiesce_after: config.quiesce_after,
            beat_interval: config.heartbeat_interval,
            peer_timeout: config.election_timeout_max,
        },
        clock.clone(),
    );
    let node = Node {
        config: Arc::new(config),
        store: store.clone(),
        groups: groups.clone(),
        peers,
        router,
        raft_config: Arc::new(raft_config),
        quiescence: quiescence.clone(),
        clock,
    };

    // The metadata group is registered before the first request is served:
    // handlers rely on it (its Raft needs no peer to start).
    let voters: Vec<u64> = node.config.initial_cluster.keys().copied().collect();
    let metadata =
        node.start_group(METADATA_GROUP_ID, GroupKind::Metadata, &voters).await.map_err(StartError::Metadata)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (health, health_service) = tonic_health::server::health_reporter();
    let server = {
        // Accepted sockets get TCP_NODELAY here: `Server::tcp_nodelay` only
        // reaches listeners tonic binds itself. Without it a small answer
        // written behind an unacknowledged one waits for the peer's delayed
        // ACK (40 ms on Linux): that was the p99 of a produce.
        let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let transport = RaftTransportServer::new(TransportService {
            groups: groups.clone(),
            store: store.clone(),
            quiescence: quiescence.clone(),
        })
        .max_decoding_message_size(strata_core::limits::MAX_GRPC_MESSAGE_BYTES)
        .max_encoding_message_size(strata_core::limits::MAX_GRPC_MESSAGE_BYTES);
        let api = StrataServer::new(StrataService::new(node.clone()))
            .max_decoding_message_size(strata_core::limits::MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(strata_core::limits::MAX_GRPC_MESSAGE_BYTES);
        // Standard tools: the gRPC health service (Kubernetes gRPC probes,
        // grpcurl, load balancers) and reflection (grpcurl without protos).
        health.set_serving::<StrataServer<StrataService>>().await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(strata_proto::FILE_DESCRIPTOR_SET)
            .build_v1()
            .expect("the descriptor set is generated at build time");
        let mut stop = stop_rx.clone();
        tokio::spawn(
            tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_service(transport)
                .add_service(api)
                .add_service(health_service)
                .add_service(reflection)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stop.wait_for(|s| *s).await;
                }),
        )
    };

    tracing::info!(node = node.node_id(), listen = %node.config.listen, "node started");

    let metrics = match &node.config.metrics_listen {
        Some(address) => Some(
            crate::metrics::serve(address, node.clone())
                .await
                .map_err(|source| StartError::Listen { address: address.clone(), source })?,
        ),
        None => None,
    };
    // Beats start before the partition groups, so a restarted node is
    // heard (and its peers wake the quiet groups it replicates) before any
    // of its groups could time out.
    let beats = tokio::spawn(crate::quiesce::run(quiescence, groups.clone(), node.peers.clone()));
    let reconciler = tokio::spawn(node.clone().run_reconciler(metadata.state.clone()));
    let retention = tokio::spawn(node.clone().run_retention());

    shutdown.await;
    tracing::info!(node = node.node_id(), "node stopping");
    health.set_not_serving::<StrataServer<StrataService>>().await;
    health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
    reconciler.abort();
    retention.abort();
    beats.abort();
    if let Some(task) = &metrics {
        task.abort();
    }
    // Requests keep arriving until the server stops, and every handler
    // looks up the metadata group: it stays registered (stopped, so its
    // calls fail with an error) until the server has stopped.
    for handle in node.groups.all() {
        let _ = handle.raft.shutdown().await;
        if handle.group_id != METADATA_GROUP_ID {
            node.groups.remove(handle.group_id);
        }
    }
    let _ = stop_tx.send(true);
    let _ = server.await;
    node.groups.remove(METADATA_GROUP_ID);
    if let Err(err) = store.sync().await {
        tracing::warn!(error = %err, "final sync failed");
    }
    tracing::info!(node = node.node_id(), "node stopped");
    // The database closes when its last handle drops; the caller must let
    // the runtime's tasks end (drop the runtime) before the process exits.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_state::MetaCommand;

    #[test]
    fn metadata_snapshots_share_the_published_state() {
        let mut state = MetadataState::default();
        state.apply(MetaCommand::CreateTopic {
            name: "t".into(),
            partitions: 2,
            replication_factor: 1,
            config: Default::default(),
            nodes: vec![1],
            created_ms: 0,
        });
        let published = Arc::new(GroupState::Metadata(state));
        let snapshot = MetadataSnapshot::new(published.clone());
        // No copy: the snapshot and its topics point into the published state.
        assert!(Arc::ptr_eq(&snapshot.0, &published));
        let topic = snapshot.topic("t").expect("topic t");
        let GroupState::Metadata(inner) = &*published else { unreachable!() };
        assert!(std::ptr::eq(&*topic, &inner.topics["t"]));
        assert_eq!(topic.partitions.len(), 2);
        assert!(snapshot.topic("u").is_none());
        assert_eq!(snapshot.assignments().len(), 2);
    }

    #[test]
    #[should_panic(expected = "metadata group")]
    fn a_partition_state_is_not_a_metadata_snapshot() {
        MetadataSnapshot::new(Arc::new(GroupState::Partition(Default::default())));
    }
}
