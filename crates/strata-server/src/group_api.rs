//! The wire side of the consumer group RPCs: prost messages to the
//! planner's domain types and back, and the answers read straight from the
//! metadata state (offset fetch, list, describe). What changes state goes
//! through `coordinator`.

use std::collections::{BTreeMap, BTreeSet};

use strata_core::ErrorCode;
use strata_proto::v1 as pb;
use strata_state::group::{
    validate_group_id, Assignment, ConsumerGroup, GroupState, HeartbeatAnswer, HeartbeatRequest, MemberState,
    OffsetCommit,
};
use strata_state::metadata::Topic;
use strata_state::MetadataState;

use crate::coordinator::{Coordinator, HighWatermarks};
use crate::error::ApiError;

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

pub(crate) fn assignment_from_wire(partitions: Vec<pb::TopicPartitions>) -> Assignment {
    partitions.into_iter().flat_map(|t| t.partitions.into_iter().map(move |p| (t.topic.clone(), p))).collect()
}

pub(crate) fn assignment_to_wire(assignment: &Assignment) -> Vec<pb::TopicPartitions> {
    assignment
        .topics()
        .iter()
        .map(|(topic, partitions)| pb::TopicPartitions {
            topic: topic.clone(),
            partitions: partitions.iter().copied().collect(),
        })
        .collect()
}

/// A heartbeat in the planner's terms; `client_host` is where it came from.
pub(crate) fn heartbeat_request(request: pb::ConsumerGroupHeartbeatRequest, client_host: String) -> HeartbeatRequest {
    HeartbeatRequest {
        group_id: request.group_id,
        member_id: request.member_id,
        member_epoch: request.member_epoch,
        instance_id: non_empty(request.instance_id),
        rebalance_timeout_ms: request.rebalance_timeout_ms as u64,
        subscribed_topics: request
            .has_subscribed_topics
            .then(|| request.subscribed_topics.into_iter().collect::<BTreeSet<String>>()),
        assignor: non_empty(request.assignor),
        owned_partitions: request.has_owned_partitions.then(|| assignment_from_wire(request.owned_partitions)),
        client_id: request.client_id,
        client_host,
    }
}

pub(crate) fn heartbeat_answer(answer: HeartbeatAnswer) -> pb::ConsumerGroupHeartbeatResponse {
    pb::ConsumerGroupHeartbeatResponse {
        error: None,
        member_id: answer.member_id,
        member_epoch: answer.member_epoch,
        heartbeat_interval_ms: answer.heartbeat_interval_ms.min(u32::MAX as u64) as u32,
        assignment: assignment_to_wire(&answer.assignment),
    }
}

pub(crate) fn commit_offsets(partitions: &[pb::OffsetCommitPartition]) -> Vec<OffsetCommit> {
    partitions
        .iter()
        .map(|p| OffsetCommit {
            topic: p.topic.clone(),
            partition: p.partition,
            offset: p.offset,
            metadata: p.metadata.clone(),
        })
        .collect()
}

pub(crate) fn commit_answer(
    partitions: &[pb::OffsetCommitPartition],
    outcomes: Vec<Option<ApiError>>,
) -> pb::OffsetCommitResponse {
    pb::OffsetCommitResponse {
        error: None,
        partitions: partitions
            .iter()
            .zip(outcomes)
            .map(|(p, outcome)| pb::OffsetCommitPartitionResult {
                topic: p.topic.clone(),
                partition: p.partition,
                error: outcome.map(|e| e.to_proto()),
            })
            .collect(),
    }
}

fn existing<'a>(state: &'a MetadataState, group_id: &str) -> Result<&'a ConsumerGroup, ApiError> {
    validate_group_id(group_id).map_err(|e| ApiError::new(e.code, e.message))?;
    state.groups.groups.get(group_id).ok_or_else(|| {
        ApiError::new(
            ErrorCode::GroupIdNotFound,
            // The code's own help says how a group comes to exist.
            format!("group '{group_id}' does not exist"),
        )
    })
}

/// The answer of `OffsetFetch` from the state.
pub(crate) fn fetch_answer(
    state: &MetadataState,
    request: pb::OffsetFetchRequest,
) -> Result<pb::OffsetFetchResponse, ApiError> {
    let group = existing(state, &request.group_id)?;
    // An offset a transaction staged is not stable until it ends: a new
    // owner of the partition must not start from the offset before it
    // (KIP-447), or the transaction's inputs would be read twice.
    let pending = request
        .partitions
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (&t.topic, *p)))
        .find(|(topic, partition)| state.transactions.has_pending_offset(&request.group_id, topic, *partition));
    if let Some((topic, partition)) = pending {
        return Err(ApiError::new(
            ErrorCode::UnstableOffsetCommit,
            format!("{topic}/{partition} of group '{}' has an offset staged by an open transaction", request.group_id),
        ));
    }
    let offset = |topic: &str, partition: u32| match group.committed(topic, partition) {
        Some(committed) => pb::CommittedOffset {
            topic: topic.to_string(),
            partition,
            has_offset: true,
            offset: committed.offset,
            metadata: committed.metadata.clone(),
            commit_time_ms: committed.commit_ms,
        },
        None => pb::CommittedOffset { topic: topic.to_string(), partition, ..Default::default() },
    };
    let offsets = if request.partitions.is_empty() {
        group
            .offsets
            .iter()
            .flat_map(|(topic, partitions)| partitions.keys().map(move |p| (topic.as_str(), *p)))
            .map(|(topic, partition)| offset(topic, partition))
            .collect()
    } else {
        request.partitions.iter().flat_map(|t| t.partitions.iter().map(|p| offset(&t.topic, *p))).collect()
    };
    Ok(pb::OffsetFetchResponse { error: None, offsets })
}

fn state_to_wire(state: GroupState) -> pb::ConsumerGroupState {
    match state {
        GroupState::Empty => pb::ConsumerGroupState::Empty,
        GroupState::Assigning => pb::ConsumerGroupState::Assigning,
        GroupState::Reconciling => pb::ConsumerGroupState::Reconciling,
        GroupState::Stable => pb::ConsumerGroupState::Stable,
        GroupState::Dead => pb::ConsumerGroupState::Unspecified,
    }
}

fn member_state_to_wire(state: MemberState) -> pb::GroupMemberState {
    match state {
        MemberState::Stable => pb::GroupMemberState::Stable,
        MemberState::UnrevokedPartitions => pb::GroupMemberState::UnrevokedPartitions,
        MemberState::UnreleasedPartitions => pb::GroupMemberState::UnreleasedPartitions,
    }
}

/// The answer of `ListGroups` from the state, by group id.
pub(crate) fn list_answer(state: &MetadataState) -> pb::ListGroupsResponse {
    let groups = state
        .groups
        .groups
        .values()
        .map(|g| pb::GroupListing {
            group_id: g.group_id.clone(),
            state: state_to_wire(g.state) as i32,
            members: g.members.len() as u32,
            group_epoch: g.group_epoch,
        })
        .collect();
    pb::ListGroupsResponse { error: None, groups }
}

/// The answer of `DescribeGroup`: the group from the state, and each
/// partition's high watermark from its leader.
pub(crate) async fn describe_answer<L: HighWatermarks>(
    coordinator: &Coordinator,
    lookup: &L,
    state: &MetadataState,
    group_id: &str,
) -> Result<pb::DescribeGroupResponse, ApiError> {
    let group = existing(state, group_id)?;
    let members = group
        .members
        .values()
        .map(|m| pb::GroupMemberDescription {
            member_id: m.member_id.clone(),
            instance_id: m.instance_id.clone().unwrap_or_default(),
            member_epoch: m.member_epoch,
            client_id: m.client_id.clone(),
            client_host: m.client_host.clone(),
            assignment: assignment_to_wire(&m.assigned),
            pending_revocation: assignment_to_wire(&m.pending_revocation),
            subscribed_topics: m.subscribed_topics.iter().cloned().collect(),
            state: member_state_to_wire(m.state) as i32,
        })
        .collect();
    // Every partition the group reads, owns or has an offset for.
    let mut partitions: BTreeSet<(&str, u32)> = BTreeSet::new();
    for (topic, count) in &group.topics {
        partitions.extend((0..*count).map(|p| (topic.as_str(), p)));
    }
    for (topic, owners) in &group.owners {
        partitions.extend(owners.keys().map(|p| (topic.as_str(), *p)));
    }
    for (topic, offsets) in &group.offsets {
        partitions.extend(offsets.keys().map(|p| (topic.as_str(), *p)));
    }
    let live: Vec<(&Topic, u32)> = partitions
        .iter()
        .filter_map(|(topic, p)| {
            state.topics.get(*topic).filter(|t| (*p as usize) < t.partitions.len()).map(|t| (t, *p))
        })
        .collect();
    let asked = coordinator.look_up(lookup, &live).await;
    let high_watermarks: BTreeMap<(&str, u32), u64> = live
        .iter()
        .zip(asked)
        .filter_map(|((topic, p), answer)| answer.ok().map(|(_, hw)| ((topic.name.as_str(), *p), hw)))
        .collect();
    let partitions = partitions
        .into_iter()
        .map(|(topic, partition)| {
            let committed = group.committed(topic, partition).map(|c| c.offset);
            let high_watermark = high_watermarks.get(&(topic, partition)).copied();
            pb::GroupPartitionDescription {
                topic: topic.to_string(),
                partition,
                owner: group.owner(topic, partition).map(|o| o.member_id.clone()).unwrap_or_default(),
                has_committed_offset: committed.is_some(),
                committed_offset: committed.unwrap_or_default(),
                has_high_watermark: high_watermark.is_some(),
                high_watermark: high_watermark.unwrap_or_default(),
                lag: match (high_watermark, committed) {
                    (Some(hw), Some(committed)) => hw.saturating_sub(committed),
                    _ => 0,
                },
            }
        })
        .collect();
    Ok(pb::DescribeGroupResponse {
        error: None,
        group_id: group.group_id.clone(),
        state: state_to_wire(group.state) as i32,
        group_epoch: group.group_epoch,
        target_epoch: group.target.epoch,
        assignor: group.assignor().to_string(),
        session_timeout_ms: group.session_timeout_ms,
        heartbeat_interval_ms: group.heartbeat_interval_ms,
        members,
        partitions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_round_trip_through_the_wire() {
        let assignment: Assignment = [("a", 1), ("a", 0), ("b", 3)].into_iter().collect();
        let wire = assignment_to_wire(&assignment);
        assert_eq!(wire[0].partitions, vec![0, 1]);
        assert_eq!(assignment_from_wire(wire), assignment);
        // Duplicates and empty topics on the wire collapse.
        let sloppy = vec![
            pb::TopicPartitions { topic: "a".into(), partitions: vec![1, 1] },
            pb::TopicPartitions { topic: "c".into(), partitions: vec![] },
        ];
        assert_eq!(assignment_from_wire(sloppy), [("a", 1)].into_iter().collect());
    }

    #[test]
    fn presence_flags_decide_what_a_heartbeat_changes() {
        let wire = pb::ConsumerGroupHeartbeatRequest {
            group_id: "g".into(),
            member_id: "m".into(),
            member_epoch: 3,
            subscribed_topics: vec!["t".into()],
            owned_partitions: vec![pb::TopicPartitions { topic: "t".into(), partitions: vec![0] }],
            ..Default::default()
        };
        let request = heartbeat_request(wire.clone(), "h".into());
        assert_eq!((request.subscribed_topics, request.owned_partitions), (None, None), "not flagged: unchanged");
        assert_eq!((request.instance_id, request.assignor), (None, None), "empty strings: none");
        let flagged = pb::ConsumerGroupHeartbeatRequest {
            has_subscribed_topics: true,
            has_owned_partitions: true,
            instance_id: "i".into(),
            ..wire
        };
        let request = heartbeat_request(flagged, "h".into());
        assert_eq!(request.subscribed_topics, Some(["t".to_string()].into()));
        assert_eq!(request.owned_partitions, Some([("t", 0)].into_iter().collect()));
        assert_eq!(request.instance_id.as_deref(), Some("i"));
        assert_eq!(request.client_host, "h");
        // An empty owned list that is flagged means "owns nothing".
        let none = heartbeat_request(
            pb::ConsumerGroupHeartbeatRequest { has_owned_partitions: true, ..Default::default() },
            String::new(),
        );
        assert_eq!(none.owned_partitions, Some(Assignment::new()));
    }
}
