//! A running node: the store, the groups it hosts, the reconciler that
//! starts and stops partition groups to match the metadata state, and the
//! retention task. What they decide is plain logic in `reconcile` and
//! `retention`; start-up and shut-down are `startup`'s.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::BasicNode;
use strata_core::limits::{
    GROUP_STOP_POLL, GROUP_STOP_TIMEOUT, LEADER_HANDOFF_TIMEOUT, LEFTOVER_SWEEP_INTERVAL,
    MAX_PARTITION_REPLICAS_PER_NODE, NEW_PARTITION_LEADER_GRACE_TIMEOUTS, RECONCILE_RETRY_INTERVAL,
    RETENTION_SCAN_LIMIT,
};
use strata_state::metadata::{Topic, METADATA_GROUP_ID};
use strata_state::{Command, MetadataState, PartitionCommand};
use strata_storage::{GroupKind, GroupState, Store, TypeConfig};
use tokio::sync::watch;

use crate::clock::ClusterClock;
use crate::config::NodeConfig;
use crate::coordinator::Coordinator;
use crate::groups::{GroupHandle, Groups};
use crate::membership::LocalMembership;
use crate::network::{GroupNetworkFactory, PeerChannels, Router};
use crate::quiesce::Quiescence;
use crate::retention::{trim_point, Retention};
use crate::transactions::TxnCoordinator;

/// Each partition group's replicas, by group id.
fn replica_sets(state: &MetadataState) -> BTreeMap<u64, Vec<u64>> {
    state.assignments().into_iter().map(|(group, (_, _, assignment))| (group, assignment.replicas.clone())).collect()
}

/// Why a group could not be started, or a write for it failed.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("storage: {0}")]
    Storage(#[from] std::io::Error),
    #[error("raft stopped: {0}")]
    Fatal(#[from] openraft::error::Fatal<TypeConfig>),
    #[error("raft write failed: {0}")]
    Write(#[from] openraft::error::RaftError<TypeConfig, openraft::error::ClientWriteError<TypeConfig>>),
}

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
    pub(crate) router: Router,
    pub(crate) raft_config: Arc<openraft::Config>,
    pub quiescence: Quiescence,
    /// Cluster time: what stamps and retention use instead of this node's
    /// wall clock.
    pub clock: ClusterClock,
    /// The consumer group coordinator's memory (used while this node leads
    /// the metadata group).
    pub(crate) coordinator: Coordinator,
    /// The transaction coordinator's memory (used while this node leads
    /// the metadata group).
    pub(crate) transactions: TxnCoordinator,
    /// This node's store id, vote gate and cluster id (see `membership`).
    pub membership: Arc<LocalMembership>,
}

/// A new partition's replica other than its preferred leader: forms the
/// group with `members` (as its preferred leader would have) if it has
/// heard of no leader and holds no entry after `grace`.
fn form_unless_led(group_id: u64, raft: &crate::groups::GroupRaft, members: BTreeMap<u64, BasicNode>, grace: Duration) {
    let raft = raft.clone();
    tokio::spawn(async move {
        if raft.wait(Some(grace)).metrics(|m| m.current_leader.is_some(), "a first leader").await.is_ok() {
            return;
        }
        if matches!(raft.is_initialized().await, Ok(false)) {
            tracing::info!(group = group_id, ?grace, "no leader came; forming the group without its preferred leader");
            if let Err(err) = raft.initialize(members).await {
                tracing::debug!(group = group_id, error = %err, "initialize refused; already formed");
            }
        }
    });
}

/// A new group's preferred leader: campaigns now, and again while the
/// group has no leader, first `retry` later and then twice as long each
/// time (up to `grace`), for `grace` at most. A campaign fails while no
/// other replica has started yet, and the election timer alone would wait
/// a lease and a timeout (1.2-1.6 s by default) between campaigns.
fn campaign_until_led(group_id: u64, raft: &crate::groups::GroupRaft, retry: Duration, grace: Duration) {
    let raft = raft.clone();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + grace;
        let mut wait = retry;
        let mut campaigns = 0u32;
        loop {
            if raft.metrics().borrow_watched().current_leader.is_some() {
                return; // led: by this replica or, after the grace, another
            }
            // A pre-vote first: a campaign that cannot win (a peer
            // already follows a leader) raises no term.
            if raft.trigger().elect(true).await.is_err() {
                return; // shut down
            }
            campaigns += 1;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let led = raft.wait(Some(wait.min(left))).metrics(|m| m.current_leader.is_some(), "a first leader").await;
            if led.is_ok() || left <= wait {
                tracing::debug!(group = group_id, campaigns, led = led.is_ok(), "first campaign over");
                return;
            }
            wait = (wait * 2).min(grace);
        }
    });
}

/// The address `id` advertised in `state`, else `peer`.
fn advertised_or_peer(state: &MetadataState, id: u64, peer: Option<String>) -> Option<String> {
    state.advertised.get(&id).cloned().or(peer)
}

/// Waits until every token in `liveness` is dead, up to `timeout`; true
/// when they all are.
async fn storage_stopped(liveness: &[std::sync::Weak<()>], timeout: std::time::Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while liveness.iter().any(|token| token.strong_count() > 0) {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(GROUP_STOP_POLL).await;
    }
    true
}

/// This node's own wall clock, ms since the Unix epoch. Every wall-clock
/// reading of the server goes through here (a test build may skew it, see
/// `faults`). Nothing replicated may be stamped with it directly: use
/// cluster time (`Node::clock`), which one fast clock cannot move.
pub fn local_wall_ms() -> u64 {
    strata_core::time::now_ms().saturating_add(crate::faults::clock_offset_ms()).max(0) as u64
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

    /// Where clients reach node `id`: the address it advertised (stored in
    /// the metadata state), else its peer address. Peers never use it.
    pub fn client_address(&self, id: u64) -> Option<String> {
        advertised_or_peer(&self.metadata_state(), id, self.peers.address(id))
    }

    /// Every node's client address (see `client_address`), by node id.
    pub fn client_addresses(&self) -> BTreeMap<u64, String> {
        let state = self.metadata_state();
        self.peers
            .addresses()
            .into_iter()
            .map(|(id, peer)| (id, advertised_or_peer(&state, id, Some(peer)).expect("a peer address")))
            .collect()
    }

    /// The cluster's nodes: those of initial_cluster and those that joined,
    /// less those removed (`membership` keeps the peer map so).
    pub fn cluster_nodes(&self) -> Vec<u64> {
        self.peers.addresses().keys().copied().collect()
    }

    fn members(&self, ids: &[u64]) -> BTreeMap<u64, BasicNode> {
        ids.iter().map(|id| (*id, BasicNode { addr: self.peers.address(*id).unwrap_or_default() })).collect()
    }

    pub(crate) async fn start_group(
        &self,
        group_id: u64,
        kind: GroupKind,
        voters: &[u64],
    ) -> Result<GroupHandle, GroupError> {
        let log_store = self.store.log_store(group_id);
        let state_machine = self.store.state_machine(group_id, kind).await?;
        let state = state_machine.subscribe();
        let storage = [log_store.liveness(), state_machine.liveness()];
        let network = GroupNetworkFactory { router: self.router.clone(), group_id };
        let raft =
            openraft::Raft::new(self.node_id(), self.raft_config.clone(), network, log_store, state_machine).await?;
        let leader_changes = crate::elections::LeaderChanges::default();
        crate::elections::watch(self.node_id(), kind, &raft, leader_changes.clone());
        let fresh = !raft.is_initialized().await?;
        let me = self.node_id();
        // A node that is not among the voters joins an existing group: its
        // leader adds it as a learner (a partition moving to it). A node
        // that lost its data never initialises one: it is caught up.
        let forms = fresh && voters.contains(&me) && !self.membership.votes.is_closed();
        let preferred = voters.first() == Some(&me);
        let grace = self.raft_config.election_timeout_max * u64::from(NEW_PARTITION_LEADER_GRACE_TIMEOUTS);
        let grace = Duration::from_millis(grace);
        if forms && (kind != GroupKind::Partition || preferred) {
            self.initialize(group_id, &raft, voters).await;
        } else if forms {
            // A new partition is formed by its preferred leader: openraft
            // stamps a group's first entry with the id of the node that
            // initialised it, so with every replica initialising, the
            // highest node id's log won each first election. The other
            // replicas start empty, grant the preferred leader's votes and
            // take its first entry; they form the group themselves only if
            // no leader came within the grace (its node is down).
            form_unless_led(group_id, &raft, self.members(voters), grace);
        }
        let reader = (kind == GroupKind::Partition).then(|| self.store.partition_reader(group_id));
        let handle = GroupHandle { group_id, raft: raft.clone(), state, reader, storage, leader_changes };
        self.groups.insert(handle.clone());
        if forms && preferred && kind == GroupKind::Partition {
            // The preferred leader campaigns at once, and again until it
            // leads: its peers may not have started their replicas yet.
            let retry = Duration::from_millis(self.raft_config.heartbeat_interval);
            campaign_until_led(group_id, &raft, retry, grace);
        }
        tracing::info!(group = group_id, ?kind, fresh, "group started");
        Ok(handle)
    }

    /// Forms a group with `voters`. Every voter of the metadata group
    /// initialises with the same membership, so it forms whatever order its
    /// nodes start in; a partition is formed by its preferred leader (see
    /// `start_group`).
    async fn initialize(&self, group_id: u64, raft: &crate::groups::GroupRaft, voters: &[u64]) {
        if let Err(err) = raft.initialize(self.members(voters)).await {
            tracing::debug!(group = group_id, error = %err, "initialize refused; already formed");
        }
    }

    /// Forms the metadata group of a new cluster with its initial voters
    /// (a node with an empty store that found no formed cluster).
    pub(crate) async fn form_metadata_group(&self, voters: &[u64]) {
        self.initialize(METADATA_GROUP_ID, &self.metadata().raft, voters).await;
    }

    /// Starts and stops partition groups to match the metadata state (the
    /// decisions are `reconcile::plan`'s).
    async fn reconcile(&self, state: &MetadataState) {
        let running = self.running_partitions();
        let plan = crate::reconcile::plan(
            self.node_id(),
            &replica_sets(state),
            &state.group_hosts(),
            &running,
            MAX_PARTITION_REPLICAS_PER_NODE,
        );
        if !plan.over_limit.is_empty() {
            tracing::error!(
                groups = ?plan.over_limit,
                limit = MAX_PARTITION_REPLICAS_PER_NODE,
                "too many partition replicas; not starting"
            );
        }
        for (group, replicas) in plan.start {
            if let Err(err) = self.start_group(group, GroupKind::Partition, &replicas).await {
                tracing::warn!(group, error = %err, "cannot start partition group; will retry");
            }
        }
        for group in plan.stop {
            self.stop_and_delete(group).await;
        }
    }

    /// The partition groups this node runs (the metadata group aside).
    fn running_partitions(&self) -> BTreeSet<u64> {
        self.groups.all().iter().map(|h| h.group_id).filter(|g| *g != METADATA_GROUP_ID).collect()
    }

    async fn stop_and_delete(&self, group_id: u64) {
        if let Some(handle) = self.groups.get(group_id) {
            self.hand_off_leadership(&handle).await;
        }
        if let Some(handle) = self.groups.remove(group_id) {
            if let Err(err) = handle.raft.shutdown().await {
                tracing::warn!(group = group_id, error = %err, "raft shutdown failed");
            }
            // Writes the stopped Raft began (an apply, a snapshot) may still
            // land; a delete before them would leave their rows behind, and
            // the group started here again (moved back at once) would take
            // them for its own state: an applied index without the records.
            let stopped = storage_stopped(&handle.storage, GROUP_STOP_TIMEOUT).await;
            if !stopped {
                tracing::warn!(group = group_id, timeout = ?GROUP_STOP_TIMEOUT,
                    "the stopped group's storage is still busy; deleting its rows anyway");
            }
        }
        match self.store.delete_group(group_id).await {
            Ok(()) => tracing::info!(group = group_id, "group deleted"),
            Err(err) => tracing::error!(group = group_id, error = %err, "cannot delete group data"),
        }
    }

    /// Before a group this node leads stops here (it moved off the node):
    /// hands its leadership to the most caught-up other voter and waits,
    /// up to LEADER_HANDOFF_TIMEOUT, until another node leads. Openraft's
    /// own hand-over of a removed leader comes only after the membership
    /// change commits, which the stop could beat: the group then waited a
    /// whole election timeout for a leader (found by the Docker fault test).
    async fn hand_off_leadership(&self, handle: &GroupHandle) {
        let me = self.node_id();
        let metrics = handle.raft.metrics().borrow_watched().clone();
        if metrics.current_leader != Some(me) {
            return;
        }
        let matched = |id: &u64| {
            metrics.replication.as_ref().and_then(|r| r.get(id).cloned().flatten()).map_or(0, |log| log.index)
        };
        let Some(to) = metrics.membership_config.membership().voter_ids().filter(|v| *v != me).max_by_key(matched)
        else {
            return;
        };
        if let Err(error) = handle.raft.trigger().transfer_leader(to).await {
            tracing::debug!(group = handle.group_id, %error, "leadership hand-off not started");
            return;
        }
        let handed = handle
            .raft
            .wait(Some(LEADER_HANDOFF_TIMEOUT))
            .metrics(|m| m.current_leader != Some(me), "another leader")
            .await;
        tracing::info!(group = handle.group_id, to, done = handed.is_ok(), "leadership handed off before stopping");
    }

    /// Deletes data of groups this node no longer hosts (see
    /// `reconcile::leftovers`).
    async fn delete_leftovers(&self, state: &MetadataState) {
        let stored = match self.store.stored_groups().await {
            Ok(groups) => groups,
            Err(err) => {
                tracing::warn!(error = %err, "cannot list stored groups");
                return;
            }
        };
        let running = self.running_partitions();
        let hosts = state.group_hosts();
        let next = state.next_group_id;
        for group in crate::reconcile::leftovers(self.node_id(), &stored, &hosts, &running, METADATA_GROUP_ID, next) {
            self.stop_and_delete(group).await;
        }
    }

    pub(crate) async fn run_reconciler(self, mut metadata: watch::Receiver<Arc<GroupState>>) {
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
                _ = tokio::time::sleep(RECONCILE_RETRY_INTERVAL) => {}
            }
        }
    }

    pub(crate) async fn run_retention(self) {
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
    ) -> Result<(), GroupError> {
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
        let retention = Retention {
            cutoff_ms: config.retention_ms.filter(|_| now.trusted).map(|r| now.ms as i64 - r as i64),
            max_bytes: config.retention_bytes,
        };
        // The scan stops at the first batch to keep (see `trim_point`).
        let (scanned_state, mut scanned) = (partition.clone(), 0u64);
        let headers = reader
            .scan_headers(
                move |info| {
                    let keep = !retention.expendable(&scanned_state, info, scanned);
                    scanned += info.size_bytes;
                    keep
                },
                RETENTION_SCAN_LIMIT,
            )
            .await?;
        let Some((new_start, trimmed)) = trim_point(&partition, &headers, retention) else { return Ok(()) };
        let removed = trimmed - partition.trimmed_bytes_total;
        tracing::info!(
            group = handle.group_id,
            new_log_start = new_start,
            removed_bytes = removed,
            "retention trims the log"
        );
        let command =
            Command::Partition(PartitionCommand::Trim { new_log_start: new_start, trimmed_bytes_total: trimmed });
        self.quiescence.ready_for_write(handle).await;
        handle.raft.client_write(command).await?;
        Ok(())
    }
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
