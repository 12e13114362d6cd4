use std::collections::BTreeSet;

use proptest::prelude::*;
use strata_core::topic::TopicConfig;
use strata_core::ErrorCode;

use super::*;
use crate::metadata::MetaCommand;

fn join(node_id: u64, store_id: u64) -> MetaCommand {
    MetaCommand::JoinNode { node_id, peer: format!("10.0.0.{node_id}:7171"), store_id, cluster_id: String::new() }
}

fn create(state: &mut MetadataState, name: &str, partitions: u32, replication_factor: u32, nodes: &[u64]) {
    let created = state.apply(MetaCommand::CreateTopic {
        name: name.into(),
        partitions,
        replication_factor,
        config: TopicConfig::default(),
        nodes: nodes.to_vec(),
        created_ms: 0,
    });
    assert!(matches!(created, MetaResponse::TopicCreated(_)), "{created:?}");
}

fn remove(node_id: u64, nodes: &[u64], voters: &[u64], live: &[u64]) -> MetaCommand {
    MetaCommand::RemoveNode {
        node_id,
        nodes: nodes.to_vec(),
        metadata_voters: voters.to_vec(),
        live: live.to_vec(),
        now_ms: 5,
    }
}

fn code(response: &MetaResponse) -> Option<ErrorCode> {
    match response {
        MetaResponse::Error { code, .. } => Some(*code),
        _ => None,
    }
}

fn cluster(nodes: &[u64]) -> MetadataState {
    let mut state = MetadataState::default();
    state.apply(MetaCommand::FormCluster { cluster_id: "c1".into() });
    for id in nodes {
        state.apply(join(*id, 100 + id));
    }
    state
}

#[test]
fn the_cluster_id_is_set_once() {
    let mut state = MetadataState::default();
    assert_eq!(
        state.apply(MetaCommand::FormCluster { cluster_id: "a".into() }),
        MetaResponse::ClusterFormed { cluster_id: "a".into() }
    );
    assert_eq!(
        state.apply(MetaCommand::FormCluster { cluster_id: "b".into() }),
        MetaResponse::ClusterFormed { cluster_id: "a".into() },
        "a later leader's id is ignored"
    );
}

#[test]
fn a_new_node_joins_active_and_a_retry_changes_nothing() {
    let mut state = cluster(&[1, 2, 3]);
    let MetaResponse::Joined(joined) = state.apply(join(4, 7)) else { panic!() };
    assert_eq!(joined.status, MemberStatus::Active);
    assert_eq!(joined.cluster_id, "c1");
    assert_eq!(joined.peers.len(), 4);
    let before = state.clone();
    state.apply(join(4, 7));
    assert_eq!(state, before);
}

#[test]
fn a_known_node_with_a_new_store_rebuilds_every_group_it_was_in() {
    let mut state = cluster(&[1, 2, 3]);
    create(&mut state, "t", 3, 2, &[1, 2, 3]);
    let on_two: BTreeSet<u64> =
        state.assignments().into_iter().filter(|(_, (_, _, a))| a.replicas.contains(&2)).map(|(g, _)| g).collect();
    let MetaResponse::Joined(joined) = state.apply(join(2, 999)) else { panic!() };
    assert_eq!(joined.status, MemberStatus::Rebuilding);
    let member = &state.members.nodes[&2];
    let mut expected = on_two.clone();
    expected.insert(METADATA_GROUP_ID);
    assert_eq!(member.rebuild, expected);
    // Each group done in turn; the last makes the node whole.
    for group in expected.iter().copied() {
        assert_eq!(
            code(&state.apply(MetaCommand::GroupRebuilt { node_id: 2, store_id: 102, group_id: group })),
            Some(ErrorCode::UnknownNode),
            "the old store's word counts for nothing"
        );
        state.apply(MetaCommand::GroupRebuilt { node_id: 2, store_id: 999, group_id: group });
    }
    assert_eq!(state.members.nodes[&2].status, MemberStatus::Active);
}

#[test]
fn a_rebuilding_node_gets_no_new_replica() {
    let mut state = cluster(&[1, 2, 3]);
    state.apply(join(3, 999));
    assert_eq!(state.members.nodes[&3].status, MemberStatus::Rebuilding);
    create(&mut state, "t", 3, 2, &[1, 2, 3]);
    assert!(state.topics["t"].partitions.iter().all(|a| !a.replicas.contains(&3)));
}

#[test]
fn a_store_of_another_cluster_is_refused() {
    let mut state = cluster(&[1]);
    let command = MetaCommand::JoinNode { node_id: 2, peer: "h:1".into(), store_id: 5, cluster_id: "other".into() };
    let before = state.clone();
    assert_eq!(code(&state.apply(command)), Some(ErrorCode::ClusterIdMismatch));
    assert_eq!(state, before);
}

#[test]
fn bad_joins_are_refused() {
    let mut state = cluster(&[1]);
    let before = state.clone();
    for command in [
        join(0, 1),
        join(MAX_NODES + 1, 1),
        MetaCommand::JoinNode { node_id: 2, peer: "no-port".into(), store_id: 1, cluster_id: String::new() },
    ] {
        assert_eq!(code(&state.apply(command)), Some(ErrorCode::InvalidRequest));
    }
    assert_eq!(state, before);
}

#[test]
fn removing_a_node_moves_each_of_its_replicas_to_the_least_loaded_other_node() {
    let nodes = [1, 2, 3, 4];
    let mut state = cluster(&nodes);
    create(&mut state, "t", 8, 3, &nodes);
    let response = state.apply(remove(2, &nodes, &[1, 2, 3], &nodes));
    let MetaResponse::NodeRemoval { remaining_replicas, removed: false, .. } = response else { panic!("{response:?}") };
    assert_eq!(remaining_replicas, 6, "8 partitions × 3 replicas over 4 nodes: 6 on node 2");
    assert_eq!(state.reassignments.len(), 6);
    for r in state.reassignments.values() {
        assert!(r.from.contains(&2) && !r.to.contains(&2) && r.to.len() == 3, "{r:?}");
    }
    assert_eq!(state.members.nodes[&2].status, MemberStatus::Removing);
    assert!(state.drained.contains(&2), "leadership leaves it at once");
    // Nothing new lands on it.
    create(&mut state, "u", 4, 3, &nodes);
    assert!(state.topics["u"].partitions.iter().all(|a| !a.replicas.contains(&2)));
    // Not forgotten while it still hosts a replica.
    assert!(matches!(
        state.apply(MetaCommand::NodeRemoved { node_id: 2 }),
        MetaResponse::NodeRemoval { removed: false, .. }
    ));
    let moves: Vec<(u64, Vec<u64>)> = state.reassignments.iter().map(|(g, r)| (*g, r.to.clone())).collect();
    for (group_id, replicas) in moves {
        state.apply(MetaCommand::CompleteReassignment { group_id, replicas });
    }
    assert!(matches!(
        state.apply(MetaCommand::NodeRemoved { node_id: 2 }),
        MetaResponse::NodeRemoval { removed: true, .. }
    ));
    assert!(!state.members.nodes.contains_key(&2) && state.members.removed[&2] == 102);
    // A repeated remove-node that comes after the removal answers it, and
    // changes nothing (it once made node 2 a member again: a panic).
    let after = state.clone();
    let again = state.apply(remove(2, &nodes, &[1, 3], &nodes));
    assert!(matches!(again, MetaResponse::NodeRemoval { removed: true, .. }), "{again:?}");
    assert_eq!(state, after);
    // Its old store may not come back; a new one may take the id.
    assert_eq!(code(&state.apply(join(2, 102))), Some(ErrorCode::NodeRemoved));
    assert!(matches!(state.apply(join(2, 555)), MetaResponse::Joined(Joined { status: MemberStatus::Active, .. })));
}

#[test]
fn unsafe_removals_are_refused_and_change_nothing() {
    let nodes = [1, 2, 3];
    let mut state = cluster(&nodes);
    create(&mut state, "t", 2, 3, &nodes);
    let before = state.clone();
    // RF 3 on 3 nodes: nowhere to go.
    assert_eq!(code(&state.apply(remove(3, &nodes, &[1, 2, 3], &nodes))), Some(ErrorCode::UnsafeMembershipChange));
    // The last metadata voter.
    let mut single = cluster(&[1]);
    assert_eq!(code(&single.apply(remove(1, &[1], &[1], &[1]))), Some(ErrorCode::UnsafeMembershipChange));
    // Voters 1, 2, 3 with 2 down: removing 3 leaves 1 of 2 up.
    let mut four = cluster(&[1, 2, 3, 4]);
    assert_eq!(
        code(&four.apply(remove(3, &[1, 2, 3, 4], &[1, 2, 3], &[1, 3, 4]))),
        Some(ErrorCode::UnsafeMembershipChange)
    );
    assert_eq!(code(&state.apply(remove(9, &nodes, &[1, 2, 3], &nodes))), Some(ErrorCode::UnknownNode));
    assert_eq!(state, before);
}

#[test]
fn a_node_being_removed_is_no_move_target() {
    let nodes = [1, 2, 3, 4];
    let mut state = cluster(&nodes);
    create(&mut state, "t", 1, 2, &[1, 2]);
    state.apply(remove(4, &nodes, &[1, 2, 3], &nodes));
    let command = MetaCommand::ReassignPartition {
        topic: "t".into(),
        partition: 0,
        replicas: vec![1, 4],
        nodes: nodes.to_vec(),
        now_ms: 1,
    };
    assert_eq!(code(&state.apply(command)), Some(ErrorCode::InvalidRequest));
}

proptest! {
    /// Whatever the topics, a removal either is refused and changes
    /// nothing, or plans moves that take every replica off the node onto
    /// valid replica sets of the other nodes.
    #[test]
    fn removal_plans_are_valid(
        rfs in proptest::collection::vec(1u32..=3, 1..6),
        node_count in 2u64..6,
        victim in 1u64..6,
    ) {
        let nodes: Vec<u64> = (1..=node_count).collect();
        let mut state = cluster(&nodes);
        for (i, rf) in rfs.iter().enumerate() {
            if (*rf as u64) <= node_count {
                create(&mut state, &format!("t{i}"), 2, *rf, &nodes);
            }
        }
        let before = state.clone();
        let response = state.apply(remove(victim, &nodes, &nodes, &nodes));
        if let MetaResponse::Error { .. } = response {
            prop_assert_eq!(state, before);
        } else {
            for (group, (_, _, a)) in state.assignments() {
                if a.replicas.contains(&victim) {
                    let r = &state.reassignments[&group];
                    let set: BTreeSet<u64> = r.to.iter().copied().collect();
                    prop_assert!(!set.contains(&victim) && set.len() == r.to.len() && r.to.len() == a.replicas.len());
                    prop_assert!(r.to.iter().all(|n| nodes.contains(n)));
                }
            }
        }
    }
}
