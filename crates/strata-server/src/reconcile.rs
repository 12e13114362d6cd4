//! What the reconciler does, as logic: the partition groups a node should
//! run, from the metadata state, against the groups it runs and the groups
//! it stores. No I/O; `node.rs` carries the plan out.

use std::collections::{BTreeMap, BTreeSet};

/// One pass: groups to start (with their replicas, in assignment order: a
/// node not among them joins the group as a learner) and groups to stop
/// and delete.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub start: Vec<(u64, Vec<u64>)>,
    pub stop: Vec<u64>,
    /// Assigned groups not started because the node would go past its
    /// replica bound (the metadata state refuses such assignments; this
    /// only guards against an older state).
    pub over_limit: Vec<u64>,
}

/// The groups node `me` should run: the partition groups whose hosts name
/// it, given `hosts` (group id → the nodes that run it: its replicas and,
/// while it moves, the replicas it moves to) and `voters` (group id → its
/// replicas, which a fresh group is initialised with). `running` excludes
/// the metadata group; `limit` bounds the partition groups the node runs.
pub fn plan(
    me: u64,
    voters: &BTreeMap<u64, Vec<u64>>,
    hosts: &BTreeMap<u64, Vec<u64>>,
    running: &BTreeSet<u64>,
    limit: usize,
) -> Plan {
    let wanted: BTreeSet<u64> =
        hosts.iter().filter(|(_, nodes)| nodes.contains(&me)).map(|(group, _)| *group).collect();
    let mut plan = Plan::default();
    let mut count = running.iter().filter(|g| wanted.contains(g)).count();
    for group in &wanted {
        if running.contains(group) {
            continue;
        }
        if count >= limit {
            plan.over_limit.push(*group);
            continue;
        }
        plan.start.push((*group, voters.get(group).cloned().unwrap_or_default()));
        count += 1;
    }
    plan.stop = running.iter().filter(|g| !wanted.contains(g)).copied().collect();
    plan
}

/// Stored groups to delete: allocated by the metadata state (below
/// `next_group_id`), not the metadata group, not hosted by `me` (`hosts`
/// as for `plan`) and not running. A group above `next_group_id` is left alone: this node may have
/// heard of it before its metadata state did.
pub fn leftovers(
    me: u64,
    stored: &[u64],
    hosts: &BTreeMap<u64, Vec<u64>>,
    running: &BTreeSet<u64>,
    metadata_group: u64,
    next_group_id: u64,
) -> Vec<u64> {
    stored
        .iter()
        .copied()
        .filter(|group| {
            *group != metadata_group
                && *group < next_group_id
                && !hosts.get(group).is_some_and(|nodes| nodes.contains(&me))
                && !running.contains(group)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignments(rows: &[(u64, &[u64])]) -> BTreeMap<u64, Vec<u64>> {
        rows.iter().map(|(group, replicas)| (*group, replicas.to_vec())).collect()
    }

    fn set(groups: &[u64]) -> BTreeSet<u64> {
        groups.iter().copied().collect()
    }

    #[test]
    fn starts_what_names_this_node_and_stops_what_no_longer_does() {
        let a = assignments(&[(1, &[1, 2, 3]), (2, &[2, 3, 4]), (3, &[3, 1, 2])]);
        let plan = plan(1, &a, &a, &set(&[1, 9]), 100);
        assert_eq!(plan.start, vec![(3, vec![3, 1, 2])]);
        assert_eq!(plan.stop, vec![9], "a deleted topic's group stops");
        assert!(plan.over_limit.is_empty());
        // Nothing to do once they match.
        assert_eq!(super::plan(1, &a, &a, &set(&[1, 3]), 100), Plan::default());
    }

    #[test]
    fn a_deleted_and_recreated_topic_gets_new_groups() {
        // Group ids are never reused: the recreated topic is group 5.
        let before = assignments(&[(4, &[1, 2, 3])]);
        let after = assignments(&[(5, &[1, 2, 3])]);
        assert_eq!(plan(1, &before, &before, &set(&[]), 100).start, vec![(4, vec![1, 2, 3])]);
        let plan = plan(1, &after, &after, &set(&[4]), 100);
        assert_eq!((plan.start, plan.stop), (vec![(5, vec![1, 2, 3])], vec![4]));
    }

    #[test]
    fn never_runs_more_groups_than_the_limit() {
        let a = assignments(&[(1, &[1]), (2, &[1]), (3, &[1]), (4, &[1])]);
        let plan = plan(1, &a, &a, &set(&[1]), 3);
        assert_eq!(plan.start, vec![(2, vec![1]), (3, vec![1])]);
        assert_eq!(plan.over_limit, vec![4]);
    }

    #[test]
    fn a_node_a_partition_moves_to_joins_it_and_keeps_it_while_it_moves() {
        let voters = assignments(&[(1, &[1, 2, 3]), (2, &[2, 3, 1])]);
        // Group 1 moves from 1, 2, 3 to 2, 3, 4.
        let hosts = assignments(&[(1, &[1, 2, 3, 4]), (2, &[2, 3, 1])]);
        // Node 4 starts group 1 with its current voters, which do not name
        // it: it joins as a learner instead of forming a group of its own.
        assert_eq!(plan(4, &voters, &hosts, &set(&[]), 100).start, vec![(1, vec![1, 2, 3])]);
        // Node 1 keeps it until the move completes, then stops it.
        assert_eq!(plan(1, &voters, &hosts, &set(&[1, 2]), 100), Plan::default());
        let moved = assignments(&[(1, &[2, 3, 4]), (2, &[2, 3, 1])]);
        assert_eq!(plan(1, &moved, &moved, &set(&[1, 2]), 100).stop, vec![1]);
        // Nor is a joining node's stored group a leftover.
        assert_eq!(leftovers(4, &[1], &hosts, &set(&[]), 0, 3), Vec::<u64>::new());
    }

    #[test]
    fn leftovers_are_allocated_unassigned_and_not_running() {
        let a = assignments(&[(1, &[1, 2]), (2, &[2, 3])]);
        // 0: metadata; 1: assigned here; 2: assigned elsewhere (leftover);
        // 3: deleted topic (leftover); 4: running; 7: not allocated yet.
        let stored = [0, 1, 2, 3, 4, 7];
        assert_eq!(leftovers(1, &stored, &a, &set(&[4]), 0, 5), vec![2, 3]);
    }
}
