use strata_core::topic::TopicConfig;

use std::collections::BTreeMap;

use super::*;
use crate::metadata::MetaCommand;

fn state_with_topic(replicas: u32, nodes: &[u64]) -> MetadataState {
    let mut state = MetadataState::default();
    let created = state.apply(MetaCommand::CreateTopic {
        name: "t".into(),
        partitions: 2,
        replication_factor: replicas,
        config: TopicConfig::default(),
        nodes: nodes.to_vec(),
        created_ms: 0,
    });
    assert!(matches!(created, MetaResponse::TopicCreated(_)), "{created:?}");
    state
}

fn reassign(partition: u32, replicas: &[u64]) -> MetaCommand {
    MetaCommand::ReassignPartition {
        topic: "t".into(),
        partition,
        replicas: replicas.to_vec(),
        nodes: vec![1, 2, 3, 4],
        now_ms: 7,
    }
}

fn code(response: &MetaResponse) -> Option<ErrorCode> {
    match response {
        MetaResponse::Error { code, .. } => Some(*code),
        _ => None,
    }
}

#[test]
fn a_move_is_recorded_then_completed_and_the_assignment_follows() {
    let mut state = state_with_topic(3, &[1, 2, 3]);
    let group = state.topics["t"].partitions[0].group_id;
    let from = state.topics["t"].partitions[0].replicas.clone();
    let to = vec![4, from[1], from[2]];
    let started = state.apply(reassign(0, &to));
    assert_eq!(
        started,
        MetaResponse::Reassignment { group_id: group, from: from.clone(), to: to.clone(), done: false }
    );
    // Repeating the same move answers the same and records nothing new.
    assert_eq!(state.apply(reassign(0, &to)), started);
    assert_eq!(state.reassignments.len(), 1);
    assert_eq!(state.reassignments[&group].started_ms, 7);
    // Both sets run the group meanwhile; the assignment is unchanged.
    assert_eq!(state.group_hosts()[&group], vec![from[0], from[1], from[2], 4]);
    assert_eq!(state.topics["t"].partitions[0].replicas, from);

    let done = state.apply(MetaCommand::CompleteReassignment { group_id: group, replicas: to.clone() });
    assert_eq!(done, MetaResponse::Reassignment { group_id: group, from: from.clone(), to: to.clone(), done: true });
    assert_eq!(state.topics["t"].partitions[0].replicas, to);
    assert!(state.reassignments.is_empty());
    assert_eq!(state.group_hosts()[&group], to);
    // A repeated completion (a retry whose answer was lost) is answered.
    let again = state.apply(MetaCommand::CompleteReassignment { group_id: group, replicas: to.clone() });
    assert!(matches!(again, MetaResponse::Reassignment { done: true, .. }), "{again:?}");
}

#[test]
fn an_order_only_change_moves_the_preferred_leader_at_once() {
    let mut state = state_with_topic(3, &[1, 2, 3]);
    let mut replicas = state.topics["t"].partitions[1].replicas.clone();
    replicas.rotate_left(1);
    let answer = state.apply(reassign(1, &replicas));
    assert!(matches!(answer, MetaResponse::Reassignment { done: true, .. }), "{answer:?}");
    assert_eq!(state.topics["t"].partitions[1].replicas, replicas);
    assert!(state.reassignments.is_empty());
}

#[test]
fn bad_moves_are_refused_and_change_nothing() {
    let mut state = state_with_topic(2, &[1, 2, 3]);
    let before = state.clone();
    let cases = [
        (reassign(0, &[]), ErrorCode::InvalidReplicationFactor),
        (reassign(0, &[1, 1]), ErrorCode::InvalidReplicationFactor),
        (reassign(0, &[1, 9]), ErrorCode::InvalidRequest),
        (reassign(5, &[1, 2]), ErrorCode::UnknownPartition),
        (
            MetaCommand::ReassignPartition {
                topic: "nope".into(),
                partition: 0,
                replicas: vec![1],
                nodes: vec![1],
                now_ms: 0,
            },
            ErrorCode::UnknownTopic,
        ),
        (MetaCommand::CompleteReassignment { group_id: 1, replicas: vec![3, 4] }, ErrorCode::InvalidRequest),
    ];
    for (command, expected) in cases {
        let answer = state.apply(command.clone());
        assert_eq!(code(&answer), Some(expected), "{command:?} answered {answer:?}");
        assert_eq!(state, before, "{command:?} changed the state");
    }
}

#[test]
fn a_second_move_waits_for_the_first_and_a_wrong_completion_is_refused() {
    let mut state = state_with_topic(2, &[1, 2, 3]);
    let group = state.topics["t"].partitions[0].group_id;
    let from = state.topics["t"].partitions[0].replicas.clone();
    let first: Vec<u64> = (1..=4).filter(|n| !from.contains(n)).collect();
    assert!(matches!(state.apply(reassign(0, &first)), MetaResponse::Reassignment { done: false, .. }));
    let other = vec![from[0], 4];
    assert_eq!(code(&state.apply(reassign(0, &other))), Some(ErrorCode::ReassignmentInProgress));
    let wrong = state.apply(MetaCommand::CompleteReassignment { group_id: group, replicas: other });
    assert_eq!(code(&wrong), Some(ErrorCode::InvalidRequest));
    assert_eq!(state.topics["t"].partitions[0].replicas, from, "nothing moved");
}

#[test]
fn deleting_the_topic_ends_its_moves() {
    let mut state = state_with_topic(2, &[1, 2, 3]);
    let from = state.topics["t"].partitions[0].replicas.clone();
    let to: Vec<u64> = (1..=4).filter(|n| !from.contains(n)).collect();
    state.apply(reassign(0, &to));
    assert_eq!(state.reassignments.len(), 1);
    assert!(matches!(state.apply(MetaCommand::DeleteTopic { name: "t".into() }), MetaResponse::TopicDeleted(_)));
    assert!(state.reassignments.is_empty());
}

fn counts(state: &MetadataState, nodes: &[u64], first_only: bool) -> BTreeMap<u64, usize> {
    let mut counts: BTreeMap<u64, usize> = nodes.iter().map(|n| (*n, 0)).collect();
    for topic in state.topics.values() {
        for a in &topic.partitions {
            let counted = if first_only { &a.replicas[..1] } else { &a.replicas[..] };
            for n in counted {
                *counts.entry(*n).or_insert(0) += 1;
            }
        }
    }
    counts
}

/// Applies a plan as the cluster would: each move recorded and completed.
fn apply_plan(state: &mut MetadataState, plan: &[PlannedMove], nodes: &[u64]) {
    for planned in plan {
        let answer = state.apply(MetaCommand::ReassignPartition {
            topic: planned.topic.clone(),
            partition: planned.partition,
            replicas: planned.to.clone(),
            nodes: nodes.to_vec(),
            now_ms: 0,
        });
        let MetaResponse::Reassignment { group_id, done, .. } = answer else { panic!("{answer:?}") };
        if !done {
            state.apply(MetaCommand::CompleteReassignment { group_id, replicas: planned.to.clone() });
        }
    }
}

#[test]
fn a_new_node_gets_its_share_of_replicas_and_leaders() {
    let mut state = MetadataState::default();
    state.apply(MetaCommand::CreateTopic {
        name: "t".into(),
        partitions: 8,
        replication_factor: 3,
        config: TopicConfig::default(),
        nodes: vec![1, 2, 3],
        created_ms: 0,
    });
    let nodes = [1, 2, 3, 4];
    assert_eq!(counts(&state, &nodes, false)[&4], 0);
    let plan = state.plan_rebalance(&nodes);
    assert!(!plan.is_empty());
    apply_plan(&mut state, &plan, &nodes);
    assert_eq!(counts(&state, &nodes, false), BTreeMap::from([(1, 6), (2, 6), (3, 6), (4, 6)]));
    let leaders = counts(&state, &nodes, true);
    assert_eq!(spread(&leaders), 0, "{leaders:?}");
    assert!(state.plan_rebalance(&nodes).is_empty(), "a balanced cluster plans nothing");
}

proptest::proptest! {
    /// Whatever the topics, a plan keeps every replica set valid and of its
    /// size, and never makes either spread worse.
    #[test]
    fn a_plan_never_makes_things_worse(
        topics in proptest::collection::vec((1u32..6, 1u32..4, proptest::collection::vec(1u64..6, 1..6)), 1..5),
        extra in 0u64..3,
    ) {
        let mut state = MetadataState::default();
        for (index, (partitions, rf, nodes)) in topics.iter().enumerate() {
            state.apply(MetaCommand::CreateTopic {
                name: format!("t{index}"),
                partitions: *partitions,
                replication_factor: *rf,
                config: TopicConfig::default(),
                nodes: nodes.clone(),
                created_ms: 0,
            });
        }
        let nodes: Vec<u64> = (1..=5 + extra).collect();
        let before = (spread(&counts(&state, &nodes, false)), spread(&counts(&state, &nodes, true)));
        let sizes: Vec<usize> = state.topics.values().flat_map(|t| &t.partitions).map(|a| a.replicas.len()).collect();
        let plan = state.plan_rebalance(&nodes);
        apply_plan(&mut state, &plan, &nodes);
        state.assert_invariants();
        let after = (spread(&counts(&state, &nodes, false)), spread(&counts(&state, &nodes, true)));
        proptest::prop_assert!(after.0 <= before.0, "replicas {before:?} -> {after:?}");
        proptest::prop_assert!(after.1 <= before.1.max(1) || after.0 < before.0, "leaders {before:?} -> {after:?}");
        let sizes_after: Vec<usize> =
            state.topics.values().flat_map(|t| &t.partitions).map(|a| a.replicas.len()).collect();
        proptest::prop_assert_eq!(sizes, sizes_after);
    }
}
