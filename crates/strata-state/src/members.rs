//! Cluster membership as state: the cluster's id, the nodes that belong to
//! it (their peer address and the identity of their store), and the nodes
//! on their way in or out. `strata-server`'s `membership` does the I/O: it
//! proposes these commands and changes the Raft groups' voters.
//!
//! - A node registers (`JoinNode`) at every start, with its peer address
//!   and its store id (drawn when its store was created). A new id joins as
//!   `Active`. A known id with another store id is that node back with an
//!   empty store (its disk was lost): `Rebuilding`, with every group it was
//!   a voter of listed; each is taken back to a learner, caught up and made
//!   a voter again (`GroupRebuilt`) before the node counts as whole.
//! - `RemoveNode` decommissions a node: every replica it holds gets a
//!   reassignment onto another node, and once it holds nothing and has left
//!   the metadata group's voters, `NodeRemoved` forgets it. Its id stays
//!   refused for its old store (a restarted old node cannot sneak back) and
//!   may be reused by a node with a new, empty store.
//!
//! Invariant: the cluster id, once set, never changes.
//! Invariant: a node is at most one of member and removed; a `Removing`
//! node has no reassignment moving onto it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use strata_core::limits::MAX_NODES;
use strata_core::ErrorCode;

use crate::metadata::{check_advertised_address, MetaResponse, MetadataState, METADATA_GROUP_ID};
use crate::reassign::Reassignment;

/// Longest cluster id accepted (the server draws 32 hex digits).
pub const MAX_CLUSTER_ID_LEN: usize = 64;

/// Where a node stands in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberStatus {
    /// A full member: it hosts replicas and may vote.
    Active,
    /// Back with an empty store: its groups are rebuilt one by one.
    Rebuilding,
    /// Being decommissioned (`strata cluster remove-node`): its replicas
    /// move off it and nothing new is placed on it.
    Removing,
}

impl MemberStatus {
    pub fn name(self) -> &'static str {
        match self {
            MemberStatus::Active => "active",
            MemberStatus::Rebuilding => "rebuilding",
            MemberStatus::Removing => "removing",
        }
    }
}

/// One node of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Where peers reach it (HOST:PORT).
    pub peer: String,
    /// Its store's id: a new one means its data is gone.
    pub store_id: u64,
    pub status: MemberStatus,
    /// While `Rebuilding`: the groups still to rebuild on it.
    #[serde(default)]
    pub rebuild: BTreeSet<u64>,
}

/// The cluster's membership (stored beside the metadata state, in its
/// extras; every field defaults, so states written before it decode).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members {
    /// Drawn by the first metadata leader; empty until then.
    #[serde(default)]
    pub cluster_id: String,
    #[serde(default)]
    pub nodes: BTreeMap<u64, Member>,
    /// Removed nodes and the store id each had: that store may not return.
    #[serde(default)]
    pub removed: BTreeMap<u64, u64>,
}

/// What a join is answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Joined {
    pub cluster_id: String,
    pub status: MemberStatus,
    /// Every member's peer address.
    pub peers: BTreeMap<u64, String>,
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> MetaResponse {
    MetaResponse::Error { code, message: message.into() }
}

impl Members {
    /// Every member's peer address.
    pub fn peers(&self) -> BTreeMap<u64, String> {
        self.nodes.iter().map(|(id, m)| (*id, m.peer.clone())).collect()
    }

    /// Whether new replicas may be placed on node `id`: an active member,
    /// or an initial node not registered yet; not one being rebuilt (its
    /// only copy of a new partition would wait for its rebuild to end),
    /// removed or being removed.
    pub fn placeable(&self, id: u64) -> bool {
        self.nodes.get(&id).is_none_or(|m| m.status == MemberStatus::Active) && !self.removed.contains_key(&id)
    }
}

impl MetadataState {
    /// `FormCluster`: sets the cluster id once; later ones answer the id
    /// already set.
    pub(crate) fn form_cluster(&mut self, cluster_id: String) -> MetaResponse {
        if self.members.cluster_id.is_empty() {
            if cluster_id.is_empty() || cluster_id.len() > MAX_CLUSTER_ID_LEN {
                return refuse(ErrorCode::InvalidRequest, format!("cluster id of {} bytes", cluster_id.len()));
            }
            self.members.cluster_id = cluster_id;
        }
        MetaResponse::ClusterFormed { cluster_id: self.members.cluster_id.clone() }
    }

    /// `JoinNode` (see the module documentation). `cluster_id` is the one
    /// the node's store holds, empty for a new store.
    pub(crate) fn join_node(&mut self, node_id: u64, peer: String, store_id: u64, cluster_id: String) -> MetaResponse {
        if node_id == 0 || node_id > MAX_NODES {
            return refuse(
                ErrorCode::InvalidRequest,
                format!("node id {node_id} is out of range; use 1 to {MAX_NODES}"),
            );
        }
        if let Err(problem) = check_advertised_address(&peer) {
            return refuse(ErrorCode::InvalidRequest, format!("node {node_id}: peer address '{peer}' {problem}"));
        }
        if !cluster_id.is_empty() && !self.members.cluster_id.is_empty() && cluster_id != self.members.cluster_id {
            return refuse(
                ErrorCode::ClusterIdMismatch,
                format!(
                    "node {node_id} holds data of cluster {cluster_id}; this is cluster {}",
                    self.members.cluster_id
                ),
            );
        }
        if self.members.removed.get(&node_id) == Some(&store_id) {
            return refuse(
                ErrorCode::NodeRemoved,
                format!("node {node_id} was removed from this cluster; its data dir must be emptied to join again"),
            );
        }
        if !self.members.nodes.contains_key(&node_id) && self.members.nodes.len() >= MAX_NODES as usize {
            return refuse(ErrorCode::LimitReached, format!("the cluster has {MAX_NODES} nodes, the limit"));
        }
        let rebuild = self.groups_of(node_id);
        let member = self.members.nodes.entry(node_id).or_insert_with(|| Member {
            peer: peer.clone(),
            store_id,
            status: MemberStatus::Active,
            rebuild: BTreeSet::new(),
        });
        member.peer = peer;
        if member.store_id != store_id {
            // The same node with an empty store: what it voted for and
            // acknowledged is gone, so every group it was in gets it back
            // only as a learner first (strata-server's membership driver).
            member.store_id = store_id;
            if member.status != MemberStatus::Removing {
                member.status = MemberStatus::Rebuilding;
            }
            member.rebuild = rebuild;
            member.rebuild.insert(METADATA_GROUP_ID);
        }
        self.members.removed.remove(&node_id);
        self.joined(node_id)
    }

    fn joined(&self, node_id: u64) -> MetaResponse {
        MetaResponse::Joined(Joined {
            cluster_id: self.members.cluster_id.clone(),
            status: self.members.nodes[&node_id].status,
            peers: self.members.peers(),
        })
    }

    /// The partition groups that name `node_id` as a replica.
    fn groups_of(&self, node_id: u64) -> BTreeSet<u64> {
        self.assignments()
            .into_iter()
            .filter(|(_, (_, _, assignment))| assignment.replicas.contains(&node_id))
            .map(|(group, _)| group)
            .collect()
    }

    /// `GroupRebuilt`: group `group_id` has rebuilding node `node_id` (with
    /// store `store_id`) back as a voter, or no longer has it. The node is
    /// whole again once its last group is.
    pub(crate) fn group_rebuilt(&mut self, node_id: u64, store_id: u64, group_id: u64) -> MetaResponse {
        let Some(member) = self.members.nodes.get_mut(&node_id).filter(|m| m.store_id == store_id) else {
            return refuse(ErrorCode::UnknownNode, format!("node {node_id} with store {store_id:x} is not a member"));
        };
        member.rebuild.remove(&group_id);
        if member.rebuild.is_empty() && member.status == MemberStatus::Rebuilding {
            member.status = MemberStatus::Active;
        }
        self.joined(node_id)
    }

    /// `RemoveNode`: starts decommissioning `node_id`. `nodes` are the
    /// cluster's nodes, `metadata_voters` the metadata group's voters and
    /// `live` the nodes heard from lately, all at proposal. Refused,
    /// changing nothing, when the node is unknown or the last voter, when
    /// the metadata voters left would have no live majority, or when some
    /// partition of it has no other node to go to. Repeating it answers the
    /// moves still in progress.
    pub(crate) fn remove_node(
        &mut self,
        node_id: u64,
        nodes: &[u64],
        metadata_voters: &[u64],
        live: &[u64],
        now_ms: u64,
    ) -> MetaResponse {
        if self.members.removed.contains_key(&node_id) && !self.members.nodes.contains_key(&node_id) {
            // Removed already: a repeated call (`remove-node --wait` asks
            // again every second) may come after the removal.
            return MetaResponse::NodeRemoval { node_id, remaining_replicas: 0, removed: true };
        }
        if !nodes.contains(&node_id) && !self.members.nodes.contains_key(&node_id) {
            return refuse(
                ErrorCode::UnknownNode,
                format!("node {node_id} is not in the cluster (its nodes are {nodes:?})"),
            );
        }
        if metadata_voters.contains(&node_id) {
            let rest: Vec<u64> = metadata_voters.iter().copied().filter(|v| *v != node_id).collect();
            if rest.is_empty() {
                return refuse(
                    ErrorCode::UnsafeMembershipChange,
                    format!("node {node_id} is the metadata group's last voter; add a voter first (strata cluster add-voter)"),
                );
            }
            let live_rest = rest.iter().filter(|v| live.contains(v)).count();
            if live_rest < rest.len() / 2 + 1 {
                return refuse(
                    ErrorCode::UnsafeMembershipChange,
                    format!(
                        "without node {node_id} the metadata voters would be {rest:?}, of which only {live_rest} are \
                         up: no majority; start the others first"
                    ),
                );
            }
        }
        if let Some((group, r)) = self.reassignments.iter().find(|(_, r)| r.to.contains(&node_id)) {
            return refuse(
                ErrorCode::ReassignmentInProgress,
                format!(
                    "{}/{} (group {group}) is moving onto node {node_id}; wait until it is done (strata cluster \
                     status), then remove the node",
                    r.topic, r.partition
                ),
            );
        }
        // Plan every move first: a refusal changes nothing.
        let targets: Vec<u64> = nodes.iter().copied().filter(|n| *n != node_id && self.members.placeable(*n)).collect();
        let mut load = self.replicas_per_node_with_moves();
        let mut moves = Vec::new();
        for (group, (topic, partition, assignment)) in self.assignments() {
            if !assignment.replicas.contains(&node_id) || self.reassignments.contains_key(&group) {
                continue;
            }
            let Some(target) = targets
                .iter()
                .copied()
                .filter(|n| !assignment.replicas.contains(n))
                .min_by_key(|n| (load.get(n).copied().unwrap_or(0), *n))
            else {
                return refuse(
                    ErrorCode::UnsafeMembershipChange,
                    format!(
                        "{}/{partition} has {} replicas and there is no other node to move node {node_id}'s to; \
                         add a node first (strata server --join)",
                        topic.name,
                        assignment.replicas.len()
                    ),
                );
            };
            *load.entry(target).or_insert(0) += 1;
            // The new replica goes last: a caught-up one leads meanwhile.
            let mut to: Vec<u64> = assignment.replicas.iter().copied().filter(|r| *r != node_id).collect();
            to.push(target);
            moves.push((
                group,
                Reassignment {
                    topic: topic.name.clone(),
                    partition,
                    from: assignment.replicas.clone(),
                    to,
                    started_ms: now_ms,
                },
            ));
        }
        let member = self.members.nodes.entry(node_id).or_insert_with(|| Member {
            // An initial node that never registered: nothing to reach it by.
            peer: String::new(),
            store_id: 0,
            status: MemberStatus::Removing,
            rebuild: BTreeSet::new(),
        });
        member.status = MemberStatus::Removing;
        member.rebuild.clear();
        self.drained.insert(node_id);
        self.reassignments.extend(moves);
        self.removal(node_id)
    }

    /// How far the removal of `node_id` is: the partitions still on it.
    fn removal(&self, node_id: u64) -> MetaResponse {
        let remaining = self.groups_of(node_id).len() as u64;
        MetaResponse::NodeRemoval { node_id, remaining_replicas: remaining, removed: false }
    }

    /// `NodeRemoved`: the removing node holds nothing and has left the
    /// metadata group; it is forgotten (its store id kept as refused).
    pub(crate) fn node_removed(&mut self, node_id: u64) -> MetaResponse {
        if self.members.removed.contains_key(&node_id) && !self.members.nodes.contains_key(&node_id) {
            return MetaResponse::NodeRemoval { node_id, remaining_replicas: 0, removed: true };
        }
        match self.members.nodes.get(&node_id) {
            Some(m) if m.status == MemberStatus::Removing => {}
            _ => return refuse(ErrorCode::InvalidRequest, format!("node {node_id} is not being removed")),
        }
        let hosts = self.group_hosts();
        if hosts.values().any(|nodes| nodes.contains(&node_id)) {
            return self.removal(node_id);
        }
        let member = self.members.nodes.remove(&node_id).expect("checked above");
        self.members.removed.insert(node_id, member.store_id);
        self.drained.remove(&node_id);
        self.advertised.remove(&node_id);
        MetaResponse::NodeRemoval { node_id, remaining_replicas: 0, removed: true }
    }

    /// Panics when an invariant of the module header is broken.
    pub(crate) fn assert_members(&self) {
        for id in self.members.removed.keys() {
            assert!(
                !self.members.nodes.contains_key(id),
                "metadata invariant broken: node {id} is both a member and removed"
            );
        }
        for (id, member) in &self.members.nodes {
            if member.status == MemberStatus::Removing {
                assert!(
                    !self.reassignments.values().any(|r| r.to.contains(id) && !r.from.contains(id)),
                    "metadata invariant broken: a partition moves onto node {id}, which is being removed"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
