//! Cluster membership: the I/O around `strata_state::members`, which
//! decides who belongs.
//!
//! - At start (`start_mode`): a node with a store that holds data restarts
//!   as it was. A node with an empty store joins through `join` addresses,
//!   or, given an `initial_cluster`, first asks those peers whether the
//!   cluster already formed: if one answers a cluster id, the node's data
//!   was lost and it rejoins; else it forms the cluster with them.
//! - A joining node calls `Join` (served by the metadata leader) before it
//!   serves its groups, and exits on a refusal (id in use, another
//!   cluster, removed). It refuses every vote (`VoteGate`) until the
//!   cluster counts it whole: a new node at once, a node back with an
//!   empty store once every group it was a voter of has caught it up.
//! - Every node keeps its registration current (`run_registration`): its
//!   peer address and store id, proposed when the state differs.
//! - Every node follows the state (`run_follower`): peer addresses of the
//!   members, the cluster id, the vote gate.
//! - The metadata leader (`run_leader`): draws the cluster id, makes every
//!   member a learner of the metadata group, rebuilds nodes back with an
//!   empty store (waits, group by group, until the node has caught up to
//!   the leader's log as of the request, then records `GroupRebuilt`), and
//!   ends removals (a removing node that hosts nothing leaves the metadata
//!   group, then `NodeRemoved`).
//! - `add_voter` and `remove_node` serve the operator's calls on the
//!   metadata leader.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use openraft::async_runtime::WatchReceiver;
use openraft::{BasicNode, ChangeMembers, Instant as _};
use strata_core::limits::{
    ADVERTISE_RETRY_BACKOFF_MAX, ADVERTISE_RETRY_BACKOFF_MIN, FORMATION_PROBE_WINDOW, FORWARD_TIMEOUT, JOIN_TIMEOUT,
    MEMBERSHIP_CHECK_INTERVAL, NODE_LIVE_WITHIN, PEER_PROBE_TIMEOUT, REASSIGN_RETRY_BACKOFF, REASSIGN_STEP_TIMEOUT,
};
use strata_core::ErrorCode;
use strata_proto::v1 as pb;
use strata_proto::v1::strata_client::StrataClient;
use strata_state::members::{Joined, MemberStatus};
use strata_state::metadata::METADATA_GROUP_ID;
use strata_state::{MetaCommand, MetaResponse, MetadataState};
use tonic::transport::{Channel, Endpoint};

use crate::config::NodeConfig;
use crate::coordinator::{confirm_leader, leading_term, propose_meta, CoordinatorError};
use crate::error::ApiError;
use crate::groups::GroupHandle;
use crate::network::{ClusterId, VoteGate};
use crate::node::Node;

/// This node's own side of membership.
#[derive(Debug)]
pub struct LocalMembership {
    /// The id of this node's store (`Store::identity`).
    pub store_id: u64,
    /// Closed while the node may not vote (see the module documentation).
    pub votes: VoteGate,
    /// The cluster id as this node knows it ("" before it formed), shared
    /// with the peer transport, which stamps and checks it.
    cluster_id: ClusterId,
}

impl LocalMembership {
    pub fn new(store_id: u64, votes: VoteGate, cluster_id: ClusterId) -> LocalMembership {
        LocalMembership { store_id, votes, cluster_id }
    }

    pub fn cluster_id(&self) -> String {
        self.cluster_id.read().expect("lock").clone()
    }

    fn set_cluster_id(&self, id: &str) {
        if !id.is_empty() && *self.cluster_id.read().expect("lock") != id {
            *self.cluster_id.write().expect("lock") = id.to_string();
        }
    }
}

/// How a node starts, from its store and its config.
#[derive(Debug, PartialEq, Eq)]
pub enum StartMode {
    /// Its store holds data: it resumes what it was.
    Restart,
    /// A new cluster: it forms the metadata group with its initial_cluster.
    Form,
    /// It joins a running cluster through these addresses: a new node, or
    /// one whose data was lost.
    Join(Vec<String>),
}

/// The start mode of a node whose store was just created (see the module
/// documentation).
pub async fn start_mode(config: &NodeConfig) -> StartMode {
    if !config.join.is_empty() {
        return StartMode::Join(config.join.clone());
    }
    let others: Vec<String> =
        config.initial_cluster.iter().filter(|(id, _)| **id != config.node_id).map(|(_, a)| a.clone()).collect();
    if others.is_empty() {
        return StartMode::Form;
    }
    let deadline = Instant::now() + FORMATION_PROBE_WINDOW;
    loop {
        let mut answered = false;
        for address in &others {
            if let Ok(ping) = ping_address(address).await {
                answered = true;
                if !ping.cluster_id.is_empty() {
                    tracing::warn!(peer = %address, cluster = %ping.cluster_id,
                        "this node's store is empty but its cluster has formed: its data was lost; rejoining");
                    return StartMode::Join(others);
                }
            }
        }
        if answered || Instant::now() >= deadline {
            if !answered {
                tracing::warn!(
                    window = ?FORMATION_PROBE_WINDOW,
                    "no peer of initial_cluster answered; forming the cluster (a node whose data was lost should \
                     be started with --join instead)"
                );
            }
            return StartMode::Form;
        }
        tokio::time::sleep(PEER_PROBE_TIMEOUT).await;
    }
}

/// A channel to `address` for one call (not through `PeerChannels`: the
/// address may not be a known node's).
fn channel_to(address: &str) -> Result<Channel, String> {
    Ok(Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| format!("bad address {address}: {e}"))?
        .connect_timeout(PEER_PROBE_TIMEOUT)
        .tcp_nodelay(true)
        .connect_lazy())
}

async fn ping_address(address: &str) -> Result<pb::PingResponse, String> {
    let mut request = tonic::Request::new(pb::PingRequest {});
    request.set_timeout(PEER_PROBE_TIMEOUT);
    StrataClient::new(channel_to(address)?)
        .ping(request)
        .await
        .map(|answer| answer.into_inner())
        .map_err(|status| format!("{address}: {}", status.message()))
}

/// Why a join failed for good.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}", code = .code.name())]
pub struct JoinRefused {
    pub code: ErrorCode,
    pub message: String,
}

/// Joins through `addresses` (see the module documentation): retries what
/// may pass (no leader yet, a node down) until JOIN_TIMEOUT, and returns a
/// refusal at once.
pub(crate) async fn join(node: &Node, addresses: &[String]) -> Result<(), JoinRefused> {
    let deadline = Instant::now() + JOIN_TIMEOUT;
    let request = join_request(node, String::new());
    let mut backoff = ADVERTISE_RETRY_BACKOFF_MIN;
    loop {
        let mut last = String::new();
        for address in addresses {
            match join_at(address, request.clone()).await {
                Ok(answer) => {
                    follow_join_answer(node, &answer);
                    tracing::info!(via = %address, cluster = %answer.cluster_id, membership = %answer.membership,
                        "joined the cluster");
                    return Ok(());
                }
                Err(JoinError::Refused(refused)) => return Err(refused),
                Err(JoinError::Retry(message)) => last = message,
            }
        }
        if Instant::now() >= deadline {
            return Err(JoinRefused {
                code: ErrorCode::ClusterUnavailable,
                message: format!("could not join through {addresses:?} within {JOIN_TIMEOUT:?}: {last}"),
            });
        }
        tracing::info!(error = %last, "not joined yet; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(ADVERTISE_RETRY_BACKOFF_MAX);
    }
}

/// A node restarted on its data asks the cluster, through its `join`
/// addresses and the peers it knows, to take its registration again, and
/// stops on a final refusal: its data belongs to another cluster
/// (CLUSTER_ID_MISMATCH), or it was removed (NODE_REMOVED; its own copy of
/// the metadata never heard of the removal, so only the cluster can tell
/// it). It retries until one of them answers; a node alone in its cluster
/// has nobody to ask.
pub(crate) async fn confirm_membership(node: &Node) -> Result<(), JoinRefused> {
    let me = node.node_id();
    let mut addresses = node.config.join.clone();
    addresses.extend(node.peers.addresses().into_iter().filter(|(id, _)| *id != me).map(|(_, a)| a));
    addresses.dedup();
    if addresses.is_empty() {
        return Ok(());
    }
    let mut backoff = ADVERTISE_RETRY_BACKOFF_MIN;
    loop {
        let request = join_request(node, node.metadata_state().members.cluster_id.clone());
        for address in &addresses {
            match join_at(address, request.clone()).await {
                Ok(_) => return Ok(()),
                Err(JoinError::Refused(refused)) => return Err(refused),
                Err(JoinError::Retry(message)) => {
                    tracing::debug!(%address, error = %message, "membership not confirmed yet")
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(ADVERTISE_RETRY_BACKOFF_MAX);
    }
}

fn join_request(node: &Node, cluster_id: String) -> pb::JoinRequest {
    pb::JoinRequest {
        node_id: node.node_id(),
        peer_address: node.config.peer_address.clone(),
        store_id: node.membership.store_id,
        cluster_id,
    }
}

enum JoinError {
    Refused(JoinRefused),
    Retry(String),
}

/// Codes a join is refused with for good.
fn final_refusal(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::NodeIdInUse
            | ErrorCode::ClusterIdMismatch
            | ErrorCode::NodeRemoved
            | ErrorCode::InvalidRequest
            | ErrorCode::LimitReached
    )
}

async fn join_at(address: &str, request: pb::JoinRequest) -> Result<pb::JoinResponse, JoinError> {
    let mut call = tonic::Request::new(request);
    call.set_timeout(FORWARD_TIMEOUT);
    let channel = channel_to(address).map_err(JoinError::Retry)?;
    let answer = StrataClient::new(channel)
        .join(call)
        .await
        .map_err(|status| JoinError::Retry(format!("{address}: {}", status.message())))?
        .into_inner();
    match answer.error {
        Some(error) if error.code != 0 => {
            let code = ErrorCode::from_code(error.code).unwrap_or(ErrorCode::Internal);
            let message = format!("{address}: {}", error.message);
            if final_refusal(code) {
                Err(JoinError::Refused(JoinRefused { code, message }))
            } else {
                Err(JoinError::Retry(format!("{}: {message}", code.name())))
            }
        }
        _ => Ok(answer),
    }
}

/// Takes in what a join answered: peers, the cluster id, the vote gate.
fn follow_join_answer(node: &Node, answer: &pb::JoinResponse) {
    for (id, address) in &answer.peers {
        if *id != node.node_id() {
            node.peers.set_address(*id, address);
        }
    }
    node.membership.set_cluster_id(&answer.cluster_id);
    if answer.membership == MemberStatus::Active.name() {
        node.membership.votes.open();
    }
}

/// Keeps this node's registration (peer address, store id) current; runs
/// until aborted at shutdown.
pub(crate) async fn run_registration(node: Node) {
    let me = node.node_id();
    let (peer, store_id) = (node.config.peer_address.clone(), node.membership.store_id);
    let differs = move |state: &MetadataState| {
        state.members.nodes.get(&me).is_none_or(|m| m.peer != peer || m.store_id != store_id)
            && !state.members.removed.contains_key(&me)
    };
    let mut metadata = node.metadata().state.clone();
    let mut backoff = ADVERTISE_RETRY_BACKOFF_MIN;
    loop {
        if metadata.wait_for(|s| s.as_metadata().is_some_and(&differs)).await.is_err() {
            return;
        }
        match register_once(&node).await {
            Ok(()) => backoff = ADVERTISE_RETRY_BACKOFF_MIN,
            Err(message) => {
                tracing::debug!(error = %message, "registration not written yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ADVERTISE_RETRY_BACKOFF_MAX);
                continue;
            }
        }
        if metadata.wait_for(|s| s.as_metadata().is_some_and(|s| !differs(s))).await.is_err() {
            return;
        }
    }
}

async fn register_once(node: &Node) -> Result<(), String> {
    let request = join_request(node, node.metadata_state().members.cluster_id.clone());
    let leader = match serve_join(node, request.clone()).await {
        Ok(_) => return Ok(()),
        Err(CoordinatorError::Api(error)) => return Err(format!("{}: {}", error.code.name(), error.message)),
        Err(CoordinatorError::Forward(leader)) => leader,
    };
    let address = node.peers.address(leader).ok_or_else(|| format!("metadata leader node {leader} has no address"))?;
    match join_at(&address, request).await {
        Ok(_) => Ok(()),
        Err(JoinError::Refused(refused)) => {
            tracing::error!(error = %refused, "the cluster refuses this node's registration");
            Err(refused.to_string())
        }
        Err(JoinError::Retry(message)) => Err(message),
    }
}

/// Serves Join on the metadata leader: refuses an id a live node of
/// another store holds, records the join, and makes a new member a learner
/// of the metadata group.
pub(crate) async fn serve_join(node: &Node, request: pb::JoinRequest) -> Result<Joined, CoordinatorError> {
    confirm_leader(node).await?;
    let id = request.node_id;
    let state = node.metadata_state();
    let known = state.members.nodes.get(&id).map(|m| (m.peer.clone(), m.store_id));
    // An initial node that never registered is known by its peer address.
    let known = known.or_else(|| node.peers.address(id).map(|peer| (peer, 0)));
    if let Some((peer, store_id)) = known.filter(|(_, store)| *store != request.store_id) {
        if let Ok(ping) = ping_address(&peer).await {
            let same_node = ping.node_id == id && ping.store_id != request.store_id;
            if same_node && (store_id == 0 || ping.store_id == store_id) {
                return Err(CoordinatorError::Api(ApiError::new(
                    ErrorCode::NodeIdInUse,
                    format!("node {id} runs at {peer} with its data; give the new node another id"),
                )));
            }
        }
    }
    let command = MetaCommand::JoinNode {
        node_id: id,
        peer: request.peer_address.clone(),
        store_id: request.store_id,
        cluster_id: request.cluster_id,
    };
    let joined = match propose_meta(node, command).await? {
        MetaResponse::Joined(joined) => joined,
        MetaResponse::Error { code, message } => return Err(CoordinatorError::Api(ApiError::new(code, message))),
        other => return Err(CoordinatorError::Api(ApiError::internal(format!("unexpected answer {other:?}")))),
    };
    if id != node.node_id() {
        node.peers.set_address(id, &request.peer_address);
    }
    ensure_metadata_member(node, id, &request.peer_address).await;
    Ok(joined)
}

/// Adds `id` to the metadata group as a learner unless it is in it (the
/// leader then replicates the metadata to it; no wait for it to catch up).
async fn ensure_metadata_member(node: &Node, id: u64, peer: &str) {
    let metadata = node.metadata();
    let membership = metadata.raft.metrics().borrow_watched().membership_config.clone();
    if membership.membership().get_node(&id).is_some() {
        return;
    }
    match metadata.raft.add_learner(id, BasicNode { addr: peer.to_string() }, false).await {
        Ok(_) => tracing::info!(node = id, "node added to the metadata group as a learner"),
        Err(error) => tracing::info!(node = id, %error, "cannot add the node to the metadata group yet; retried"),
    }
}

/// Follows the metadata state on every node: members' peer addresses,
/// the cluster id, and the vote gate (opened once the state counts this
/// node, with its store, active). Runs until aborted at shutdown.
pub(crate) async fn run_follower(node: Node) {
    let mut metadata = node.metadata().state.clone();
    loop {
        let state = node.metadata_state();
        follow_state(&node, &state);
        if metadata.changed().await.is_err() {
            return;
        }
    }
}

fn follow_state(node: &Node, state: &MetadataState) {
    let me = node.node_id();
    for (id, member) in &state.members.nodes {
        if *id != me && !member.peer.is_empty() {
            node.peers.set_address(*id, &member.peer);
        }
    }
    for id in state.members.removed.keys() {
        if *id != me {
            node.peers.forget(*id);
        }
    }
    node.membership.set_cluster_id(&state.members.cluster_id);
    // Cluster time needs a majority of the nodes there are now (a joined
    // node has no initial_cluster to count).
    node.clock.set_cluster_size(node.cluster_nodes().len());
    // Only `Active` opens it: a node removed while it rebuilds stays
    // without a vote until it is gone.
    let whole = state
        .members
        .nodes
        .get(&me)
        .is_some_and(|m| m.store_id == node.membership.store_id && m.status == MemberStatus::Active);
    if whole && node.membership.votes.is_closed() {
        tracing::info!("the cluster counts this node whole again: it votes from now on");
        node.membership.votes.open();
    }
}

/// The metadata leader's membership work (see the module documentation);
/// runs for the node's life and acts while it leads.
pub(crate) async fn run_leader(node: Node) {
    let mut metadata = node.metadata().state.clone();
    let rebuilding: Arc<Mutex<HashSet<u64>>> = Arc::default();
    loop {
        tokio::select! {
            changed = metadata.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(MEMBERSHIP_CHECK_INTERVAL) => {}
        }
        if leading_term(&node).is_none() {
            continue;
        }
        let state = node.metadata_state();
        if state.members.cluster_id.is_empty() {
            let cluster_id = format!("{:032x}", rand::random::<u128>());
            if let Err(error) = propose_meta(&node, MetaCommand::FormCluster { cluster_id }).await {
                tracing::debug!(?error, "cluster id not drawn yet");
            }
            continue;
        }
        for (id, member) in &state.members.nodes {
            match member.status {
                MemberStatus::Removing => finish_removal(&node, &state, *id).await,
                MemberStatus::Rebuilding => {
                    if rebuilding.lock().expect("lock").insert(*id) {
                        let (node, rebuilding, id) = (node.clone(), rebuilding.clone(), *id);
                        tokio::spawn(async move {
                            rebuild(&node, id).await;
                            rebuilding.lock().expect("lock").remove(&id);
                        });
                    }
                    ensure_metadata_member(&node, *id, &member.peer).await;
                }
                MemberStatus::Active => ensure_metadata_member(&node, *id, &member.peer).await,
            }
        }
    }
}

/// Rebuilds node `id`'s groups one by one until none is left or this node
/// stops leading; a failed group is retried after a pause.
async fn rebuild(node: &Node, id: u64) {
    loop {
        if leading_term(node).is_none() {
            return;
        }
        let state = node.metadata_state();
        let Some(member) = state.members.nodes.get(&id).filter(|m| m.status == MemberStatus::Rebuilding) else {
            return;
        };
        let Some(group) = member.rebuild.iter().next().copied() else { return };
        let store_id = member.store_id;
        let caught_up = if group == METADATA_GROUP_ID || hosts_group(&state, group, id) {
            ask_caught_up(node, group, id).await
        } else {
            // Deleted, or moved off the node meanwhile: nothing to rebuild.
            Ok(())
        };
        match caught_up {
            Ok(()) => {
                let command = MetaCommand::GroupRebuilt { node_id: id, store_id, group_id: group };
                if let Err(error) = propose_meta(node, command).await {
                    tracing::info!(node = id, group, ?error, "rebuilt group not recorded yet");
                    tokio::time::sleep(REASSIGN_RETRY_BACKOFF).await;
                } else {
                    tracing::info!(node = id, group, "group caught up on the rebuilt node");
                }
            }
            Err(message) => {
                tracing::info!(node = id, group, error = %message, "group not caught up on the node yet; retrying");
                tokio::time::sleep(REASSIGN_RETRY_BACKOFF).await;
            }
        }
    }
}

fn hosts_group(state: &MetadataState, group: u64, id: u64) -> bool {
    state.group_hosts().get(&group).is_some_and(|nodes| nodes.contains(&id))
}

/// Asks rebuilding node `id` whether its own copy of `group` has caught up
/// (it answers for itself: only it knows what its empty store holds now).
async fn ask_caught_up(node: &Node, group: u64, id: u64) -> Result<(), String> {
    let request = pb::ReconfigurePartitionRequest { group_id: group, replicas: Vec::new(), rebuild_node: id };
    crate::reassign::reconfigure_on(node, id, request).await.map_err(|error| error.message)
}

/// On a rebuilding node: waits until its own copy of `handle`'s group has
/// applied everything its leader reported committed, as the leader
/// reported it after the node came back. Every entry committed before the
/// node lost its data was committed then, so the node holds them all again
/// and its vote is safe.
pub(crate) async fn wait_own_copy_caught_up(node: &Node, handle: &GroupHandle) -> Result<(), ApiError> {
    // A quiet group sends nothing; its leader must send to this node.
    node.quiescence.ready_for_write(handle).await;
    handle
        .raft
        .wait(Some(REASSIGN_STEP_TIMEOUT))
        .metrics(
            |m| {
                let committed = m.cluster_committed.as_ref().map(|c| c.index);
                let applied = m.last_applied.as_ref().map(|a| a.index);
                committed.is_some() && applied >= committed
            },
            "the rebuilt copy caught up",
        )
        .await
        .map(drop)
        .map_err(|e| {
            ApiError::new(
                ErrorCode::LeaderNotAvailable,
                format!("group {} has not caught up on node {}: {e}; it is retried", handle.group_id, node.node_id()),
            )
        })
}

/// A removing node that hosts nothing leaves the metadata group, and is
/// then forgotten (`NodeRemoved`).
async fn finish_removal(node: &Node, state: &MetadataState, id: u64) {
    if state.group_hosts().values().any(|nodes| nodes.contains(&id)) {
        return;
    }
    let metadata = node.metadata();
    let metrics = metadata.raft.metrics().borrow_watched().clone();
    // A node that runs must first have the entries that moved its replicas
    // away: out of the group, it would never hear of them, and would keep
    // its copies. A node that is down gets nothing either way.
    let matched = metrics.replication.as_ref().and_then(|r| r.get(&id).cloned().flatten()).map(|log| log.index);
    let heard = metrics.heartbeat.as_ref().and_then(|h| h.get(&id).cloned().flatten());
    let up = heard.is_some_and(|at| (*at).elapsed() < NODE_LIVE_WITHIN);
    if up && matched < metrics.last_log_index {
        return;
    }
    let membership = metrics.membership_config.membership().clone();
    let change = if membership.voter_ids().any(|v| v == id) {
        Some(ChangeMembers::RemoveVoters(BTreeSet::from([id])))
    } else if membership.get_node(&id).is_some() {
        Some(ChangeMembers::RemoveNodes(BTreeSet::from([id])))
    } else {
        None
    };
    if let Some(change) = change {
        // A leader removing itself steps down once this commits; the next
        // leader records the removal.
        if let Err(error) = metadata.raft.change_membership(change, false).await {
            tracing::info!(node = id, %error, "node not out of the metadata group yet; retried");
            return;
        }
        tracing::info!(node = id, "node left the metadata group");
    }
    match propose_meta(node, MetaCommand::NodeRemoved { node_id: id }).await {
        Ok(MetaResponse::NodeRemoval { removed: true, .. }) => tracing::info!(node = id, "node removed"),
        other => tracing::debug!(node = id, ?other, "node removal not recorded yet"),
    }
}

/// The metadata group's voters, as this node's Raft has them.
pub(crate) fn metadata_voters(node: &Node) -> Vec<u64> {
    node.metadata().raft.metrics().borrow_watched().membership_config.membership().voter_ids().collect()
}

/// The nodes the metadata leader heard from within NODE_LIVE_WITHIN
/// (itself included); on another node, every known node.
fn live_nodes(node: &Node) -> Vec<u64> {
    let metrics = node.metadata().raft.metrics().borrow_watched().clone();
    let mut live: Vec<u64> = match &metrics.heartbeat {
        Some(heartbeats) => heartbeats
            .iter()
            .filter(|(_, at)| at.as_ref().is_some_and(|at| (**at).elapsed() < NODE_LIVE_WITHIN))
            .map(|(id, _)| *id)
            .collect(),
        None => node.peers.addresses().keys().copied().collect(),
    };
    live.push(node.node_id());
    live.sort_unstable();
    live.dedup();
    live
}

/// The nodes new replicas may go to, on the metadata leader: the cluster's
/// nodes less those whose last heartbeat answer is older than
/// NODE_LIVE_WITHIN. One that has not answered since this leader took over
/// counts as up (the leader may be seconds old); `live_nodes`, for
/// removals, counts it as down.
pub(crate) fn placeable_nodes(node: &Node) -> Vec<u64> {
    let metrics = node.metadata().raft.metrics().borrow_watched().clone();
    let silent = |id: &u64| {
        metrics
            .heartbeat
            .as_ref()
            .and_then(|h| h.get(id).cloned().flatten())
            .is_some_and(|at| (*at).elapsed() >= NODE_LIVE_WITHIN)
    };
    node.cluster_nodes().into_iter().filter(|id| !silent(id)).collect()
}

/// Serves AddVoter on the metadata leader: catches the node up as a
/// learner, then makes it a voter. Answers the voters after.
pub(crate) async fn add_voter(node: &Node, id: u64) -> Result<Vec<u64>, CoordinatorError> {
    confirm_leader(node).await?;
    let state = node.metadata_state();
    let refuse = |code, message: String| Err(CoordinatorError::Api(ApiError::new(code, message)));
    let Some(member) = state.members.nodes.get(&id) else {
        return refuse(ErrorCode::UnknownNode, format!("node {id} has not joined this cluster (strata server --join)"));
    };
    if member.status != MemberStatus::Active {
        return refuse(
            ErrorCode::UnsafeMembershipChange,
            format!("node {id} is {}; only an active node becomes a voter", member.status.name()),
        );
    }
    let voters = metadata_voters(node);
    if voters.contains(&id) {
        return Ok(voters);
    }
    let metadata = node.metadata();
    let failed = |step: &str, error: String| {
        CoordinatorError::Api(ApiError::new(
            ErrorCode::LeaderNotAvailable,
            format!("{step} failed: {error}; check that node {id} runs, and retry"),
        ))
    };
    let catch_up = metadata.raft.add_learner(id, BasicNode { addr: member.peer.clone() }, true);
    match tokio::time::timeout(REASSIGN_STEP_TIMEOUT, catch_up).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => return Err(failed("catching the node up", error.to_string())),
        Err(_) => return Err(failed("catching the node up", format!("not done within {REASSIGN_STEP_TIMEOUT:?}"))),
    }
    metadata
        .raft
        .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
        .await
        .map_err(|error| failed("changing the voters", error.to_string()))?;
    tracing::info!(node = id, "node is a metadata voter");
    Ok(metadata_voters(node))
}

/// Serves RemoveNode on the metadata leader: records the removal (the
/// moves off the node); repeated, answers how far it is.
pub(crate) async fn remove_node(node: &Node, id: u64) -> Result<(u64, bool), CoordinatorError> {
    confirm_leader(node).await?;
    let state = node.metadata_state();
    if state.members.removed.contains_key(&id) && !state.members.nodes.contains_key(&id) {
        return Ok((0, true));
    }
    let command = MetaCommand::RemoveNode {
        node_id: id,
        nodes: node.cluster_nodes(),
        metadata_voters: metadata_voters(node),
        live: live_nodes(node),
        now_ms: node.clock.now().ms,
    };
    match propose_meta(node, command).await? {
        MetaResponse::NodeRemoval { remaining_replicas, removed, .. } => Ok((remaining_replicas, removed)),
        MetaResponse::Error { code, message } => Err(CoordinatorError::Api(ApiError::new(code, message))),
        other => Err(CoordinatorError::Api(ApiError::internal(format!("unexpected answer {other:?}")))),
    }
}

/// What `cluster status` shows of node `id`: its membership and its role in
/// the metadata group.
pub(crate) fn describe(node: &Node, state: &MetadataState, id: u64) -> (String, String) {
    let membership = state.members.nodes.get(&id).map(|m| m.status.name().to_string()).unwrap_or_default();
    let metrics = node.metadata().raft.metrics().borrow_watched().clone();
    let config = metrics.membership_config.membership();
    let role = if config.voter_ids().any(|v| v == id) {
        "voter"
    } else if config.get_node(&id).is_some() {
        "learner"
    } else {
        ""
    };
    (membership, role.to_string())
}
