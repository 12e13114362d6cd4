//! Partition reassignment: the I/O around `strata_state::reassign`, which
//! decides what may move.
//!
//! - The metadata leader's driver (`run`): for every move in the metadata
//!   state, it asks the partition's leader to make the target replicas its
//!   group's voters (`ReconfigurePartition`), and once that is answered it
//!   proposes `CompleteReassignment`, after which the reconciler stops and
//!   deletes the group on the nodes that left it. It looks every
//!   REASSIGN_CHECK_INTERVAL and whenever the metadata state changes, while
//!   this node leads; a new leader resumes what its predecessor left, since
//!   every step can be repeated. On every node, leading or not, the same
//!   loop keeps the outgoing transport's move throttle
//!   (`network::throttle`) in step with the metadata state: the rate, and
//!   which replicas are joining which partition.
//! - The partition side (`reconfigure`), on the group's leader: before a
//!   new replica is added, a long log is cut at a fresh snapshot (not past
//!   a lagging voter's match), so the new replica receives the partition's
//!   data as one snapshot stream, staged in an SST file and ingested, and
//!   not entry by entry through its log and its apply (which writes every
//!   byte twice); each new replica is added as a learner and caught up (to within
//!   MOVE_CAUGHT_UP_ENTRIES of the leader's log; its copy goes through the
//!   move throttle until then) (the reconciler has
//!   started the group on its node, uninitialised, when the move was
//!   recorded; the leader first waits until its own metadata state shows
//!   the move, so that the move throttle knows the new replicas before
//!   the copy starts), then the voters are changed to the target by joint
//!   consensus, with the removed replicas leaving the group. A group whose
//!   voters already are the target answers at once. A leader that removes
//!   itself hands leadership to an up-to-date voter (openraft's
//!   `removed_leader_step_down`).
//!
//! Invariant: `CompleteReassignment` is proposed only after the group's
//! leader answered that the target is its committed voter set, so the
//! assignment never names replicas the group does not have.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use openraft::async_runtime::WatchReceiver;
use openraft::BasicNode;
use strata_core::limits::{
    MAX_CONCURRENT_MOVES, MOVE_CAUGHT_UP_ENTRIES, MOVE_KNOWN_TIMEOUT, MOVE_SNAPSHOT_WAIT, REASSIGN_CHECK_INTERVAL,
    REASSIGN_RETRY_BACKOFF, REASSIGN_STEP_TIMEOUT,
};
use strata_core::ErrorCode;
use strata_proto::v1 as pb;
use strata_proto::v1::strata_client::StrataClient;
use strata_state::reassign::PlannedMove;
use strata_state::{MetaCommand, MetaResponse};

use crate::coordinator::{leading_term, propose_meta, CoordinatorError};
use crate::error::ApiError;
use crate::node::Node;

/// The driver (see the module documentation); runs for the node's life.
pub(crate) async fn run(node: Node) {
    let mut metadata = node.metadata().state.clone();
    let in_flight: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let mut failed_at: HashMap<u64, Instant> = HashMap::new();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, bool)>();
    // The throttle holds from the start, not only from the first change.
    node.router.move_throttle().follow(&node.metadata_state());
    loop {
        tokio::select! {
            changed = metadata.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(REASSIGN_CHECK_INTERVAL) => {}
            Some((group, ok)) = done_rx.recv() => {
                if ok { failed_at.remove(&group); } else { failed_at.insert(group, Instant::now()); }
            }
        }
        let state = node.metadata_state();
        node.router.move_throttle().follow(&state);
        if leading_term(&node).is_none() {
            continue;
        }
        failed_at.retain(|group, _| state.reassignments.contains_key(group));
        for (group, reassignment) in &state.reassignments {
            if failed_at.get(group).is_some_and(|at| at.elapsed() < REASSIGN_RETRY_BACKOFF) {
                continue;
            }
            {
                let mut running = in_flight.lock().expect("in-flight set");
                if running.len() >= MAX_CONCURRENT_MOVES || !running.insert(*group) {
                    continue;
                }
            }
            let (node, in_flight, done) = (node.clone(), in_flight.clone(), done_tx.clone());
            let (group, to, from) = (*group, reassignment.to.clone(), reassignment.from.clone());
            let what = format!("{}/{}", reassignment.topic, reassignment.partition);
            tokio::spawn(async move {
                let ok = move_partition(&node, group, &from, &to, &what).await;
                in_flight.lock().expect("in-flight set").remove(&group);
                let _ = done.send((group, ok));
            });
        }
    }
}

/// One attempt at one move; true when it completed.
async fn move_partition(node: &Node, group_id: u64, from: &[u64], to: &[u64], what: &str) -> bool {
    let request = pb::ReconfigurePartitionRequest { group_id, replicas: to.to_vec(), rebuild_node: 0 };
    let hosts: Vec<u64> = from.iter().chain(to).copied().collect();
    let reconfigured = crate::leader_call::on_partition_leader(node, group_id, &hosts, |target| {
        reconfigure_on(node, target, request.clone())
    })
    .await;
    if let Err(error) = reconfigured {
        tracing::info!(partition = what, code = error.code.name(), error = %error.message,
            "partition move not done yet; retrying");
        return false;
    }
    match propose_meta(node, MetaCommand::CompleteReassignment { group_id, replicas: to.to_vec() }).await {
        Ok(MetaResponse::Reassignment { done: true, .. }) => {
            tracing::info!(partition = what, ?from, ?to, "partition moved");
            true
        }
        Ok(other) => {
            tracing::warn!(partition = what, ?other, "partition move not completed");
            false
        }
        Err(CoordinatorError::Forward(_)) => false,
        Err(CoordinatorError::Api(error)) => {
            tracing::info!(partition = what, error = %error.message, "partition move completion not written");
            false
        }
    }
}

/// Asks node `target` to reconfigure the group (it answers NOT_LEADER
/// unless it leads it).
pub(crate) async fn reconfigure_on(
    node: &Node,
    target: u64,
    request: pb::ReconfigurePartitionRequest,
) -> Result<(), ApiError> {
    let channel = node.peers.channel(target).map_err(ApiError::internal)?;
    let mut call = tonic::Request::new(request);
    call.set_timeout(REASSIGN_STEP_TIMEOUT);
    match StrataClient::new(channel).reconfigure_partition(call).await {
        Ok(answer) => match answer.into_inner().error.filter(|e| e.code != 0) {
            Some(error) => Err(ApiError::from_proto(&error)),
            None => Ok(()),
        },
        Err(status) => Err(ApiError::new(ErrorCode::LeaderNotAvailable, format!("node {target}: {status}"))),
    }
}

/// Serves ReconfigurePartition on the group's leader (see the module
/// documentation).
pub(crate) async fn reconfigure(node: &Node, group_id: u64, replicas: &[u64]) -> Result<(), ApiError> {
    let what = format!("partition group {group_id}");
    let target: BTreeSet<u64> = replicas.iter().copied().collect();
    if target.is_empty() || target.len() != replicas.len() {
        return Err(ApiError::new(ErrorCode::InvalidRequest, format!("{replicas:?} is not a replica set")));
    }
    let Some(handle) = node.groups.get(group_id) else {
        return Err(ApiError::not_leader(None, &what));
    };
    let metrics = handle.raft.metrics().borrow_watched().clone();
    match metrics.current_leader {
        Some(leader) if leader == node.node_id() => {}
        Some(leader) => {
            return Err(ApiError::not_leader(node.client_address(leader).map(|address| (leader, address)), &what))
        }
        None => return Err(ApiError::new(ErrorCode::LeaderNotAvailable, format!("{what} has no leader right now"))),
    }
    let membership = metrics.membership_config.membership().clone();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let settled = membership.get_joint_config().len() == 1;
    if settled && voters == target {
        return Ok(());
    }
    let failed = |step: &str, error: String| {
        ApiError::new(ErrorCode::LeaderNotAvailable, format!("{what}: {step} failed: {error}; it is retried"))
    };
    wait_until_move_known(node, group_id, replicas).await?;
    let learners: BTreeSet<u64> = membership.learner_ids().collect();
    for joining in target.difference(&voters) {
        let address = node.peers.address(*joining).ok_or_else(|| {
            ApiError::new(ErrorCode::InvalidRequest, format!("node {joining} is not a node of this cluster"))
        })?;
        tracing::info!(group = group_id, node = joining, "adding a replica as a learner; waiting for it to catch up");
        // Not blocking: openraft's blocking add_learner counts a learner
        // within `replication_lag_threshold` (5,000 entries, gigabytes of
        // 1 MiB batches) as caught up; this waits for a closer one.
        // A membership change is a write: a quiet group renews its lease for it.
        // A learner from an earlier attempt keeps what it copied; adding
        // it again would only write another membership entry.
        if !learners.contains(joining) {
            node.quiescence.ready_for_write(&handle).await;
            start_log_at_a_snapshot(&handle.raft, group_id).await;
            handle
                .raft
                .add_learner(*joining, BasicNode { addr: address }, false)
                .await
                .map_err(|e| failed(&format!("adding node {joining}"), e.to_string()))?;
        }
        wait_until_caught_up(&handle.raft, *joining)
            .await
            .map_err(|e| failed(&format!("catching node {joining} up"), e))?;
    }
    // From here the new replicas are live: the move throttle lets their
    // traffic go, so a joint configuration that needs them to commit never
    // waits for it.
    for node_id in &target {
        node.router.move_throttle().caught_up(group_id, *node_id);
    }
    tracing::info!(group = group_id, from = ?voters, to = ?target, "changing the voters");
    // The catch-up may have taken long enough for the group to go quiet
    // (quiescence looks at the voters only), and a leader whose lease ran
    // out refuses the change.
    node.quiescence.ready_for_write(&handle).await;
    handle.raft.change_membership(target, false).await.map_err(|e| failed("changing the voters", e.to_string()))?;
    Ok(())
}

/// Sets the cluster's move throttle (`None`: off) as a metadata entry, on
/// the metadata leader. A rate out of bounds is refused (INVALID_REQUEST).
pub(crate) async fn set_move_throttle(node: &Node, bytes_per_sec: Option<u64>) -> Result<(), CoordinatorError> {
    match propose_meta(node, MetaCommand::SetMoveThrottle { bytes_per_sec }).await? {
        MetaResponse::MoveThrottle { .. } => Ok(()),
        MetaResponse::Error { code, message } => Err(CoordinatorError::Api(ApiError::new(code, message))),
        other => Err(CoordinatorError::Api(ApiError::internal(format!("unexpected answer {other:?}")))),
    }
}

/// Cuts the leader's log at a snapshot of what it applied, when more than
/// MOVE_CAUGHT_UP_ENTRIES of it would otherwise be replayed to a new
/// replica, so that openraft sends the new replica a snapshot. The snapshot
/// stream carries the partition's retained data, which is never more than
/// a log that still starts at the group's beginning holds, and the log of a
/// group whose log was purged before could not be replayed anyway. The cut
/// stops at the lowest match of the other voters, so that no lagging voter
/// needs a snapshot for it. Best effort: past MOVE_SNAPSHOT_WAIT the copy
/// goes through the log.
async fn start_log_at_a_snapshot(raft: &crate::groups::GroupRaft, group_id: u64) {
    let metrics = raft.metrics().borrow_watched().clone();
    let applied = metrics.last_applied.as_ref().map_or(0, |l| l.index);
    let first_kept = metrics.purged.as_ref().map_or(0, |l| l.index + 1);
    if applied.saturating_sub(first_kept) <= MOVE_CAUGHT_UP_ENTRIES {
        return;
    }
    let replication = metrics.replication.clone().unwrap_or_default();
    let lowest_match = metrics
        .membership_config
        .membership()
        .voter_ids()
        .filter(|voter| *voter != metrics.id)
        .map(|voter| replication.get(&voter).cloned().flatten().map_or(0, |l| l.index))
        .min()
        .unwrap_or(applied);
    let mut snapshot = metrics.snapshot.as_ref().map_or(0, |l| l.index);
    if snapshot + MOVE_CAUGHT_UP_ENTRIES < applied {
        if let Err(error) = raft.trigger().snapshot().await {
            tracing::warn!(group = group_id, %error, "cannot build a snapshot before a move");
            return;
        }
        let built = |m: &openraft::RaftMetrics<strata_storage::TypeConfig>| {
            m.snapshot.as_ref().is_some_and(|s| s.index >= applied)
        };
        match raft.wait(Some(MOVE_SNAPSHOT_WAIT)).metrics(built, "a snapshot before a move").await {
            Ok(m) => snapshot = m.snapshot.as_ref().map_or(0, |l| l.index),
            Err(error) => {
                tracing::info!(group = group_id, %error, "no snapshot before the move; the new replica replays the log");
                return;
            }
        }
    }
    let upto = snapshot.min(lowest_match);
    if upto < first_kept + MOVE_CAUGHT_UP_ENTRIES {
        return;
    }
    if let Err(error) = raft.trigger().purge_log(upto).await {
        tracing::warn!(group = group_id, %error, "cannot purge the log before a move");
        return;
    }
    let purged =
        |m: &openraft::RaftMetrics<strata_storage::TypeConfig>| m.purged.as_ref().is_some_and(|p| p.index >= upto);
    match raft.wait(Some(MOVE_SNAPSHOT_WAIT)).metrics(purged, "the log purged before a move").await {
        Ok(_) => tracing::info!(group = group_id, upto, "log cut at a snapshot: the new replica gets the snapshot"),
        Err(error) => tracing::info!(group = group_id, %error, "log not purged before the move"),
    }
}

/// Waits until learner `learner` has every entry the leader has but the
/// last MOVE_CAUGHT_UP_ENTRIES, or fails after REASSIGN_STEP_TIMEOUT (the
/// caller's bound on the whole attempt; the next attempt resumes where
/// this one stopped).
async fn wait_until_caught_up(raft: &crate::groups::GroupRaft, learner: u64) -> Result<(), String> {
    let caught_up = |metrics: &openraft::RaftMetrics<strata_storage::TypeConfig>| {
        let matched = metrics.replication.as_ref().and_then(|r| r.get(&learner).cloned().flatten());
        let last = metrics.last_log_index.unwrap_or(0);
        matched.is_some_and(|m| last.saturating_sub(m.index) <= MOVE_CAUGHT_UP_ENTRIES)
    };
    raft.wait(Some(REASSIGN_STEP_TIMEOUT))
        .metrics(caught_up, "a new replica to catch up")
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Waits until this node's metadata state has group `group_id` moving to
/// `replicas`, then hands that state to the move throttle, so that the
/// throttle knows the joining replicas (and a rate written just before
/// the move) before the first byte goes to them. The metadata leader asks
/// only once the move is committed, but this node, as a follower of the
/// metadata group, may learn of that commit a heartbeat later: without
/// the wait, a small partition could be copied whole, unthrottled, in
/// between.
async fn wait_until_move_known(node: &Node, group_id: u64, replicas: &[u64]) -> Result<(), ApiError> {
    let mut metadata = node.metadata().state.clone();
    let known = || node.metadata_state().reassignments.get(&group_id).is_some_and(|r| r.to == replicas);
    let waited = tokio::time::timeout(MOVE_KNOWN_TIMEOUT, async {
        while !known() {
            if metadata.changed().await.is_err() {
                return false;
            }
        }
        true
    })
    .await;
    if waited != Ok(true) {
        return Err(ApiError::new(
            ErrorCode::LeaderNotAvailable,
            format!(
                "partition group {group_id}: this node's metadata state does not show the move to {replicas:?} \
                 after {MOVE_KNOWN_TIMEOUT:?}; it is retried"
            ),
        ));
    }
    node.router.move_throttle().follow(&node.metadata_state());
    Ok(())
}

/// Serves Rebalance on the metadata leader: plans moves that even out
/// replicas and preferred leaders over `nodes` and, unless `dry_run`,
/// records each (the driver then runs them, MAX_CONCURRENT_MOVES at a time).
/// `throttle` (`Some(None)`: off), when given, is set first, so that no
/// move copies a byte at the old rate; a dry run changes nothing, so it is
/// refused with one. Answers the moves recorded (or planned, for a dry
/// run).
pub(crate) async fn rebalance(
    node: &Node,
    nodes: &[u64],
    dry_run: bool,
    throttle: Option<Option<u64>>,
) -> Result<Vec<PlannedMove>, CoordinatorError> {
    if dry_run && throttle.is_some() {
        return Err(CoordinatorError::Api(ApiError::new(
            ErrorCode::InvalidRequest,
            "a dry run changes nothing, the move throttle included; set the throttle without a dry run",
        )));
    }
    crate::coordinator::confirm_leader(node).await?;
    let plan = node.metadata_state().plan_rebalance(nodes);
    if dry_run {
        return Ok(plan);
    }
    if let Some(bytes_per_sec) = throttle {
        set_move_throttle(node, bytes_per_sec).await?;
    }
    let mut recorded = Vec::with_capacity(plan.len());
    for planned in plan {
        let command = MetaCommand::ReassignPartition {
            topic: planned.topic.clone(),
            partition: planned.partition,
            replicas: planned.to.clone(),
            nodes: nodes.to_vec(),
            now_ms: node.clock.now().ms,
        };
        match propose_meta(node, command).await? {
            MetaResponse::Reassignment { .. } => recorded.push(planned),
            // The state moved since the plan (a topic deleted, a move
            // begun): that partition is left for the next rebalance.
            MetaResponse::Error { code, message } => {
                tracing::info!(topic = %planned.topic, partition = planned.partition, code = code.name(), %message,
                    "rebalance move not recorded")
            }
            other => return Err(CoordinatorError::Api(ApiError::internal(format!("unexpected answer {other:?}")))),
        }
    }
    tracing::info!(moves = recorded.len(), "rebalance recorded");
    Ok(recorded)
}
