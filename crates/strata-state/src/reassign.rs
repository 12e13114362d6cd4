//! Partition reassignment: moving a partition's replicas to another set of
//! nodes, as state. A reassignment is recorded by `ReassignPartition` (the
//! target replica set) and ended by `CompleteReassignment`, which the
//! metadata leader proposes only once the partition's Raft group has the
//! target set as its voters (new replicas added as learners, caught up, then
//! a joint-consensus membership change: `strata-server`'s `reassign`).
//! Between the two, every node of the old and the new set runs the group:
//! the old replicas as voters, the new ones joining as learners.
//!
//! Invariant: at most one reassignment per partition; its target is a
//! replica set (distinct nodes, at least one) that differs from the
//! current one as a set (an order-only change applies at once: it only
//! moves the preferred leader).
//! Invariant: a reassignment names a partition that exists, by its group id.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use strata_core::limits::{MAX_PARTITION_REPLICAS_PER_NODE, MAX_REPLICATION_FACTOR};
use strata_core::ErrorCode;

use crate::metadata::{MetaResponse, MetadataState};

/// One partition on its way to another replica set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reassignment {
    pub topic: String,
    pub partition: u32,
    /// The replicas when it began.
    pub from: Vec<u64>,
    /// The replicas it moves to; the first is the preferred leader.
    pub to: Vec<u64>,
    /// Cluster time it began.
    pub started_ms: u64,
}

/// Reassignments in progress, by the partition's group id.
pub type Reassignments = BTreeMap<u64, Reassignment>;

fn refuse(code: ErrorCode, message: impl Into<String>) -> MetaResponse {
    MetaResponse::Error { code, message: message.into() }
}

impl MetadataState {
    /// `ReassignPartition`: validates and records the move of
    /// `topic`/`partition` to `replicas`; `nodes` are the cluster's nodes
    /// at proposal time.
    pub(crate) fn reassign(
        &mut self,
        topic: &str,
        partition: u32,
        replicas: Vec<u64>,
        nodes: &[u64],
        now_ms: u64,
    ) -> MetaResponse {
        let Some(t) = self.topics.get(topic) else {
            return refuse(ErrorCode::UnknownTopic, format!("topic '{topic}' does not exist"));
        };
        let Some(assignment) = t.partitions.get(partition as usize) else {
            return refuse(
                ErrorCode::UnknownPartition,
                format!("topic '{topic}' has {} partitions; {partition} does not exist", t.partitions.len()),
            );
        };
        let distinct: BTreeSet<u64> = replicas.iter().copied().collect();
        if replicas.is_empty() || distinct.len() != replicas.len() || replicas.len() > MAX_REPLICATION_FACTOR as usize {
            return refuse(
                ErrorCode::InvalidReplicationFactor,
                format!(
                    "replicas {replicas:?} are not a replica set: name 1 to {MAX_REPLICATION_FACTOR} distinct nodes"
                ),
            );
        }
        if let Some(unknown) = replicas.iter().find(|id| !nodes.contains(id)) {
            return refuse(
                ErrorCode::InvalidRequest,
                format!("node {unknown} is not in the cluster (its nodes are {nodes:?}); name nodes that are"),
            );
        }
        if let Some(leaving) =
            replicas.iter().find(|id| !self.members.placeable(**id) && !assignment.replicas.contains(id))
        {
            return refuse(
                ErrorCode::InvalidRequest,
                format!("node {leaving} is being rebuilt or removed (strata cluster status); name active nodes"),
            );
        }
        let group_id = assignment.group_id;
        let from = assignment.replicas.clone();
        if let Some(existing) = self.reassignments.get(&group_id) {
            if existing.to == replicas {
                return MetaResponse::Reassignment { group_id, from: existing.from.clone(), to: replicas, done: false };
            }
            return refuse(
                ErrorCode::ReassignmentInProgress,
                format!(
                    "{topic}/{partition} is already moving from {:?} to {:?}; wait until it is done (strata \
                     cluster status) and reassign it again",
                    existing.from, existing.to
                ),
            );
        }
        let current: BTreeSet<u64> = from.iter().copied().collect();
        if current == distinct {
            // The same nodes: only the preferred leader moves.
            let assignment = &mut self.topics.get_mut(topic).expect("checked above").partitions[partition as usize];
            assignment.replicas = replicas.clone();
            return MetaResponse::Reassignment { group_id, from, to: replicas, done: true };
        }
        // The reconciler starts no more than this many replicas on a node;
        // a new replica past it would never catch up.
        let per_node = self.replicas_per_node_with_moves();
        if let Some(node) = distinct
            .difference(&current)
            .find(|node| per_node.get(node).copied().unwrap_or(0) >= MAX_PARTITION_REPLICAS_PER_NODE)
        {
            return refuse(
                ErrorCode::LimitReached,
                format!(
                    "node {node} hosts {MAX_PARTITION_REPLICAS_PER_NODE} partition replicas, the limit per node; \
                     move replicas off it first or pick another node"
                ),
            );
        }
        self.reassignments.insert(
            group_id,
            Reassignment {
                topic: topic.to_string(),
                partition,
                from: from.clone(),
                to: replicas.clone(),
                started_ms: now_ms,
            },
        );
        MetaResponse::Reassignment { group_id, from, to: replicas, done: false }
    }

    /// `CompleteReassignment`: the partition group's voters are `replicas`
    /// now; the assignment follows and the reassignment ends. Repeating it
    /// answers the same; a completion for another target is refused.
    pub(crate) fn complete_reassignment(&mut self, group_id: u64, replicas: Vec<u64>) -> MetaResponse {
        let Some(reassignment) = self.reassignments.get(&group_id) else {
            let current = self.assignments().get(&group_id).map(|(_, _, a)| a.replicas.clone());
            return match current {
                Some(current) if current == replicas => {
                    MetaResponse::Reassignment { group_id, from: current, to: replicas, done: true }
                }
                _ => refuse(
                    ErrorCode::InvalidRequest,
                    format!("partition group {group_id} has no reassignment to {replicas:?} in progress"),
                ),
            };
        };
        if reassignment.to != replicas {
            return refuse(
                ErrorCode::InvalidRequest,
                format!("partition group {group_id} is moving to {:?}, not {replicas:?}", reassignment.to),
            );
        }
        let reassignment = self.reassignments.remove(&group_id).expect("looked up above");
        if let Some(assignment) = self
            .topics
            .get_mut(&reassignment.topic)
            .and_then(|t| t.partitions.get_mut(reassignment.partition as usize))
            .filter(|a| a.group_id == group_id)
        {
            assignment.replicas = replicas.clone();
        }
        MetaResponse::Reassignment { group_id, from: reassignment.from, to: replicas, done: true }
    }

    /// Replicas per node, counting the new replicas of moves in progress.
    pub(crate) fn replicas_per_node_with_moves(&self) -> BTreeMap<u64, usize> {
        let mut per_node = self.replicas_per_node();
        for reassignment in self.reassignments.values() {
            for node in reassignment.to.iter().filter(|n| !reassignment.from.contains(n)) {
                *per_node.entry(*node).or_insert(0) += 1;
            }
        }
        per_node
    }

    /// The nodes that run each partition group: its replicas and, while it
    /// moves, the replicas it moves to.
    pub fn group_hosts(&self) -> BTreeMap<u64, Vec<u64>> {
        let mut hosts: BTreeMap<u64, Vec<u64>> = self
            .assignments()
            .into_iter()
            .map(|(group, (_, _, assignment))| (group, assignment.replicas.clone()))
            .collect();
        for (group, reassignment) in &self.reassignments {
            if let Some(nodes) = hosts.get_mut(group) {
                for node in &reassignment.to {
                    if !nodes.contains(node) {
                        nodes.push(*node);
                    }
                }
            }
        }
        hosts
    }

    /// Forgets the reassignments of a deleted topic's groups.
    pub(crate) fn drop_reassignments_of(&mut self, groups: &[u64]) {
        self.reassignments.retain(|group, _| !groups.contains(group));
    }

    /// Panics when an invariant of the module header is broken.
    pub(crate) fn assert_reassignments(&self) {
        let assignments = self.assignments();
        for (group, reassignment) in &self.reassignments {
            let Some((topic, partition, assignment)) = assignments.get(group) else {
                panic!("metadata invariant broken: a reassignment names partition group {group}, which does not exist");
            };
            assert!(
                topic.name == reassignment.topic && *partition == reassignment.partition,
                "metadata invariant broken: the reassignment of group {group} names {}/{}, not {}/{partition}",
                reassignment.topic,
                reassignment.partition,
                topic.name
            );
            let to: BTreeSet<u64> = reassignment.to.iter().copied().collect();
            let current: BTreeSet<u64> = assignment.replicas.iter().copied().collect();
            assert!(
                !to.is_empty() && to.len() == reassignment.to.len() && to != current,
                "metadata invariant broken: group {group} moves to {:?} from {:?}",
                reassignment.to,
                assignment.replicas
            );
        }
    }
}

#[cfg(test)]
mod tests;

/// One partition's new replica set in a rebalance plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedMove {
    pub topic: String,
    pub partition: u32,
    pub from: Vec<u64>,
    pub to: Vec<u64>,
}

/// How uneven a count per node is: the largest minus the smallest.
fn spread(counts: &BTreeMap<u64, usize>) -> usize {
    let max = counts.values().max().copied().unwrap_or(0);
    let min = counts.values().min().copied().unwrap_or(0);
    max - min
}

/// Replicas (or, with `leaders`, first replicas) per node of `nodes`.
fn count_per_node(sets: &BTreeMap<(String, u32), Vec<u64>>, nodes: &[u64], leaders: bool) -> BTreeMap<u64, usize> {
    let mut counts: BTreeMap<u64, usize> = nodes.iter().map(|n| (*n, 0)).collect();
    for replicas in sets.values() {
        let counted = if leaders { &replicas[..replicas.len().min(1)] } else { &replicas[..] };
        for node in counted {
            *counts.entry(*node).or_insert(0) += 1;
        }
    }
    counts
}

/// One greedy pass of `plan_rebalance` over `sets`: replicas per node, or
/// with `leaders` first replicas per node, until their spread is at most one
/// or no step helps. A step takes the node counted most and the node
/// counted least (at least two fewer) and moves one replica between them
/// (`leaders`: reorders a set that has both so the second comes first).
fn even_out(sets: &mut BTreeMap<(String, u32), Vec<u64>>, nodes: &[u64], leaders: bool) {
    // Each step lowers the largest count or raises the smallest, so the
    // number of replicas bounds the steps.
    let bound = sets.values().map(Vec::len).sum::<usize>() + 1;
    for _ in 0..bound {
        let counts = count_per_node(sets, nodes, leaders);
        if spread(&counts) <= 1 {
            return;
        }
        let mut by_count: Vec<(usize, u64)> = counts.iter().map(|(n, c)| (*c, *n)).collect();
        by_count.sort_unstable();
        let step = by_count.iter().rev().find_map(|(high, busy)| {
            by_count.iter().filter(|(low, _)| low + 1 < *high).find_map(|(_, idle)| {
                let fits = |r: &Vec<u64>| {
                    if leaders {
                        r.first() == Some(busy) && r.contains(idle)
                    } else {
                        r.contains(busy) && !r.contains(idle)
                    }
                };
                let (key, replicas) = sets.iter().find(|(_, r)| fits(r))?;
                let mut replicas = replicas.clone();
                if leaders {
                    let at = replicas.iter().position(|r| r == idle).expect("contains it");
                    replicas.swap(0, at);
                } else {
                    let at = replicas.iter().position(|r| r == busy).expect("contains it");
                    replicas[at] = *idle;
                }
                Some((key.clone(), replicas))
            })
        });
        let Some((key, replicas)) = step else { return };
        sets.insert(key, replicas);
    }
}

impl MetadataState {
    /// `strata cluster rebalance`: new replica sets that even out, over
    /// `nodes`, first the replicas per node, then the preferred leaders
    /// (first replicas) per node, each to a spread of at most one where the
    /// replica sets allow it. Greedy: a replica moves from the node with the
    /// most to the one with the fewest that the partition does not have
    /// yet, keeping its place in the list; then a partition whose preferred
    /// leader is on the node that is first most often puts a replica on the
    /// node that is first least often at the front. Partitions already
    /// moving, and those with a replica outside `nodes`, are left alone.
    /// Never makes the replica spread worse (property-tested); the leader
    /// spread may grow in the first pass and is evened in the second.
    pub fn plan_rebalance(&self, nodes: &[u64]) -> Vec<PlannedMove> {
        let mut sets: BTreeMap<(String, u32), Vec<u64>> = BTreeMap::new();
        for (group, (topic, partition, assignment)) in self.assignments() {
            let placed = assignment.replicas.iter().all(|r| nodes.contains(r));
            if !self.reassignments.contains_key(&group) && placed {
                sets.insert((topic.name.clone(), partition), assignment.replicas.clone());
            }
        }
        let original = sets.clone();
        even_out(&mut sets, nodes, false);
        even_out(&mut sets, nodes, true);
        sets.into_iter()
            .filter(|(key, to)| original.get(key) != Some(to))
            .map(|((topic, partition), to)| PlannedMove {
                from: original[&(topic.clone(), partition)].clone(),
                topic,
                partition,
                to,
            })
            .collect()
    }
}
