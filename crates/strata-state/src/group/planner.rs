//! The metadata leader's side of the protocol, pure: a heartbeat (or a
//! timer, or a topic change) in, the commands to propose out; and the
//! answer, read from the state once they are applied.
//!
//! The planner works on a scratch copy of the group (without its offsets)
//! and applies each command it plans to that copy with the same code the
//! replicas run, so a plan is valid for the
//! state it was made from and its errors are the errors apply would give.
//! A plan is made stale by any change applied between planning and
//! applying it, so the driver plans, proposes and applies one group's plans
//! one at a time (a lock per group on the leader); apply refuses a stale
//! command anyway, without changing anything.
//!
//! Driver loop for a heartbeat: `plan_heartbeat`; propose `commands` in
//! order (each a Raft entry, or one entry with all), stopping at the first
//! error, which is the answer; then `Plan::answer` on the state after
//! apply. A plan with no commands (a plain heartbeat) writes nothing.

use std::collections::BTreeMap;

use strata_core::limits::{DEFAULT_GROUP_HEARTBEAT_INTERVAL_MS, DEFAULT_GROUP_REBALANCE_TIMEOUT_MS, MAX_GROUPS};
use strata_core::ErrorCode;

use super::assignor::{self, AssignorMember};
use super::{
    invalid, reconcile, validate_group_id, validate_member_id, Assignment, ConsumerGroup, GroupCommand, GroupError,
    GroupsState, JoinSpec, JOIN_EPOCH, LEAVE_EPOCH, STATIC_LEAVE_EPOCH,
};
use crate::metadata::MetadataState;

/// The leader's view of topics: a topic's partition count, None when the
/// topic does not exist.
pub trait TopicView {
    fn partition_count(&self, topic: &str) -> Option<u32>;
}

impl TopicView for BTreeMap<String, u32> {
    fn partition_count(&self, topic: &str) -> Option<u32> {
        self.get(topic).copied()
    }
}

impl TopicView for MetadataState {
    fn partition_count(&self, topic: &str) -> Option<u32> {
        self.topics.get(topic).map(|t| t.partitions.len() as u32)
    }
}

/// A `ConsumerGroupHeartbeat` request, in domain types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatRequest {
    pub group_id: String,
    /// Empty on a first join: the leader gives one.
    pub member_id: String,
    /// 0 to join, -1 to leave, -2 for a static member to leave for now,
    /// else the epoch of the member's last answer.
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    /// Read on join; 0 means the default.
    pub rebalance_timeout_ms: u64,
    /// Required on join; afterwards None means unchanged.
    pub subscribed_topics: Option<std::collections::BTreeSet<String>>,
    /// None: on join the server's default, afterwards unchanged.
    pub assignor: Option<String>,
    /// The partitions the member owns, sent when they change and with any
    /// heartbeat that may carry an old epoch (a retry). None: unchanged.
    pub owned_partitions: Option<Assignment>,
    pub client_id: String,
    pub client_host: String,
}

/// What a heartbeat answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatAnswer {
    pub member_id: String,
    /// -1 or -2 after a leave.
    pub member_epoch: i32,
    pub heartbeat_interval_ms: u64,
    /// The partitions the member may own now; it gives up any other.
    pub assignment: Assignment,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Reply {
    Member { group_id: String, member_id: String },
    Left { group_id: String, member_id: String, member_epoch: i32 },
}

/// The commands a heartbeat needs, and how to answer it afterwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// To propose in order; empty when the heartbeat changes nothing.
    pub commands: Vec<GroupCommand>,
    reply: Reply,
}

impl Plan {
    /// The member the heartbeat is about (the new id after a first join).
    pub fn member_id(&self) -> &str {
        match &self.reply {
            Reply::Member { member_id, .. } | Reply::Left { member_id, .. } => member_id,
        }
    }

    /// The answer, read from the state after the commands were applied.
    pub fn answer(&self, state: &GroupsState) -> Result<HeartbeatAnswer, GroupError> {
        match &self.reply {
            Reply::Member { group_id, member_id } => member_answer(state, group_id, member_id),
            Reply::Left { group_id, member_id, member_epoch } => Ok(HeartbeatAnswer {
                member_id: member_id.clone(),
                member_epoch: *member_epoch,
                heartbeat_interval_ms: state
                    .groups
                    .get(group_id)
                    .map_or(DEFAULT_GROUP_HEARTBEAT_INTERVAL_MS, |g| g.heartbeat_interval_ms),
                assignment: Assignment::new(),
            }),
        }
    }
}

/// A member's answer as the state stands: its epoch and the partitions it
/// may own (without those pending revocation, which it must give up).
pub fn member_answer(state: &GroupsState, group_id: &str, member_id: &str) -> Result<HeartbeatAnswer, GroupError> {
    let group = existing(state, group_id)?;
    let member = group.live_member(member_id)?;
    Ok(HeartbeatAnswer {
        member_id: member.member_id.clone(),
        member_epoch: member.member_epoch,
        heartbeat_interval_ms: group.heartbeat_interval_ms,
        assignment: member.assigned.clone(),
    })
}

fn existing<'a>(state: &'a GroupsState, group_id: &str) -> Result<&'a ConsumerGroup, GroupError> {
    validate_group_id(group_id)?;
    state.groups.get(group_id).ok_or_else(|| {
        GroupError::new(
            ErrorCode::GroupIdNotFound,
            format!("group '{group_id}' does not exist; join with epoch 0 to create it"),
        )
    })
}

/// The group as the commands planned so far leave it.
struct Scratch<'a> {
    base: Option<&'a ConsumerGroup>,
    copy: Option<ConsumerGroup>,
    commands: Vec<GroupCommand>,
}

impl<'a> Scratch<'a> {
    fn of(group: &'a ConsumerGroup) -> Scratch<'a> {
        Scratch { base: Some(group), copy: None, commands: Vec::new() }
    }

    fn group(&self) -> &ConsumerGroup {
        self.copy.as_ref().or(self.base).expect("a scratch has a group")
    }

    /// Applies `command` to the copy and keeps it, or gives apply's error.
    fn push(&mut self, command: GroupCommand) -> Result<(), GroupError> {
        let base = self.base;
        let copy = self.copy.get_or_insert_with(|| {
            let group = base.expect("a scratch has a group");
            // Offsets are not read by the commands a plan holds; copying
            // them on every planned heartbeat would cost the most.
            ConsumerGroup {
                group_id: group.group_id.clone(),
                group_epoch: group.group_epoch,
                state: group.state,
                session_timeout_ms: group.session_timeout_ms,
                heartbeat_interval_ms: group.heartbeat_interval_ms,
                members: group.members.clone(),
                target: group.target.clone(),
                owners: group.owners.clone(),
                subscriptions: group.subscriptions.clone(),
                topics: group.topics.clone(),
                offsets: BTreeMap::new(),
                empty_since_ms: group.empty_since_ms,
            }
        });
        copy.apply(&command)?;
        self.commands.push(command);
        Ok(())
    }
}

/// Plans the commands for one heartbeat. `new_member_id` is a fresh id the
/// leader made (used when a member joins without one); `now_ms` is the
/// leader's clock.
pub fn plan_heartbeat(
    state: &GroupsState,
    request: &HeartbeatRequest,
    topics: &dyn TopicView,
    new_member_id: &str,
    now_ms: u64,
) -> Result<Plan, GroupError> {
    validate_group_id(&request.group_id)?;
    let member_id = request.member_id.clone();
    let group_id = request.group_id.clone();
    match request.member_epoch {
        JOIN_EPOCH => plan_join(state, request, topics, new_member_id),
        LEAVE_EPOCH => {
            let mut scratch = Scratch::of(existing(state, &group_id)?);
            scratch.push(GroupCommand::LeaveMember {
                group_id: group_id.clone(),
                member_id: member_id.clone(),
                now_ms,
            })?;
            settle(&mut scratch, topics, None)?;
            Ok(Plan {
                commands: scratch.commands,
                reply: Reply::Left { group_id, member_id, member_epoch: LEAVE_EPOCH },
            })
        }
        STATIC_LEAVE_EPOCH => {
            let group = existing(state, &group_id)?;
            let member = group.members.get(&member_id).ok_or_else(|| group.unknown_member(&member_id))?;
            let mut scratch = Scratch::of(group);
            // A repeated static leave changes nothing.
            if !member.is_away() {
                scratch.push(GroupCommand::StaticLeave { group_id: group_id.clone(), member_id: member_id.clone() })?;
            }
            Ok(Plan {
                commands: scratch.commands,
                reply: Reply::Left { group_id, member_id, member_epoch: STATIC_LEAVE_EPOCH },
            })
        }
        epoch if epoch > 0 => plan_beat(state, request, topics),
        epoch => Err(invalid(format!(
            "member epoch {epoch} is not valid: use 0 to join, -1 to leave, -2 for a static member to leave for \
             now, or the epoch of the last answer"
        ))),
    }
}

fn plan_join(
    state: &GroupsState,
    request: &HeartbeatRequest,
    topics: &dyn TopicView,
    new_member_id: &str,
) -> Result<Plan, GroupError> {
    let subscribed_topics = request
        .subscribed_topics
        .clone()
        .ok_or_else(|| invalid("a join (member epoch 0) must give its subscribed topics"))?;
    let group = state.groups.get(&request.group_id);
    let member_id = if request.member_id.is_empty() {
        validate_member_id(new_member_id)?;
        if group.is_some_and(|g| g.members.contains_key(new_member_id)) {
            return Err(GroupError::new(ErrorCode::Internal, format!("fresh member id {new_member_id} is taken")));
        }
        new_member_id.to_string()
    } else {
        request.member_id.clone()
    };
    let fresh;
    let mut scratch = match group {
        Some(group) => Scratch::of(group),
        None => {
            if state.groups.len() >= MAX_GROUPS {
                return Err(GroupError::new(
                    ErrorCode::LimitReached,
                    format!("the cluster has {MAX_GROUPS} consumer groups, the limit; delete unused groups first"),
                ));
            }
            fresh = ConsumerGroup::new(request.group_id.clone());
            Scratch::of(&fresh)
        }
    };
    let spec = JoinSpec {
        member_id: member_id.clone(),
        instance_id: request.instance_id.clone(),
        subscribed_topics,
        assignor: request.assignor.clone(),
        client_id: request.client_id.clone(),
        client_host: request.client_host.clone(),
        rebalance_timeout_ms: match request.rebalance_timeout_ms {
            0 => DEFAULT_GROUP_REBALANCE_TIMEOUT_MS,
            ms => ms,
        },
    };
    // A join repeated before the member got any epoch (its first answer was
    // lost, or its target was not ready) needs no new join.
    let repeated = scratch.group().members.get(&member_id).is_some_and(|m| {
        m.member_epoch == JOIN_EPOCH
            && m.owned().is_empty()
            && m.instance_id == spec.instance_id
            && m.subscribed_topics == spec.subscribed_topics
            && m.assignor == spec.assignor
    });
    if !repeated {
        scratch.push(GroupCommand::JoinMember { group_id: request.group_id.clone(), member: spec })?;
    }
    // A joining member owns nothing: whatever a static member's previous
    // run was giving up is released now.
    settle(&mut scratch, topics, Some((&member_id, Some(&Assignment::new()))))?;
    Ok(Plan { commands: scratch.commands, reply: Reply::Member { group_id: request.group_id.clone(), member_id } })
}

fn plan_beat(state: &GroupsState, request: &HeartbeatRequest, topics: &dyn TopicView) -> Result<Plan, GroupError> {
    let group = existing(state, &request.group_id)?;
    let member_id = &request.member_id;
    let member = group.members.get(member_id).ok_or_else(|| group.unknown_member(member_id))?;
    let epoch = request.member_epoch;
    let fenced = |why: &str| {
        GroupError::new(
            ErrorCode::FencedMemberEpoch,
            format!(
                "member {member_id} sent epoch {epoch} but is at {}{why}; drop every partition and rejoin with \
                 epoch 0",
                member.member_epoch
            ),
        )
    };
    if member.is_away() {
        return Err(fenced(" (a static member that left)"));
    }
    if epoch > member.member_epoch {
        return Err(fenced(""));
    }
    if epoch < member.member_epoch {
        // The answer that moved it on may have been lost: its previous
        // epoch is fine if it owns nothing it was not given since.
        let retry = epoch == member.previous_member_epoch
            && request.owned_partitions.as_ref().is_some_and(|owned| owned.is_subset(&member.assigned));
        if !retry {
            return Err(fenced(""));
        }
    }
    let mut scratch = Scratch::of(group);
    let subscribed_topics = request.subscribed_topics.as_ref().unwrap_or(&member.subscribed_topics);
    let assignor = request.assignor.as_ref().or(member.assignor.as_ref());
    if subscribed_topics != &member.subscribed_topics || assignor != member.assignor.as_ref() {
        scratch.push(GroupCommand::UpdateSubscription {
            group_id: request.group_id.clone(),
            member_id: member_id.clone(),
            subscribed_topics: subscribed_topics.clone(),
            assignor: assignor.cloned(),
        })?;
    }
    settle(&mut scratch, topics, Some((member_id, request.owned_partitions.as_ref())))?;
    Ok(Plan {
        commands: scratch.commands,
        reply: Reply::Member { group_id: request.group_id.clone(), member_id: member_id.clone() },
    })
}

/// Brings the group up to date: topic partition counts, then a target for
/// the current group epoch, then one reconciliation step of `member` (with
/// the partitions its heartbeat reported).
fn settle(
    scratch: &mut Scratch<'_>,
    topics: &dyn TopicView,
    member: Option<(&str, Option<&Assignment>)>,
) -> Result<(), GroupError> {
    let group = scratch.group();
    let group_id = group.group_id.clone();
    let seen: BTreeMap<String, u32> = group
        .subscriptions
        .keys()
        .filter_map(|topic| topics.partition_count(topic).filter(|count| *count > 0).map(|c| (topic.clone(), c)))
        .collect();
    if seen != group.topics {
        scratch.push(GroupCommand::RefreshTopics { group_id: group_id.clone(), topics: seen })?;
    }
    let group = scratch.group();
    if !group.members.is_empty() && group.target.epoch != group.group_epoch {
        let members = target_for(group)?;
        let group_epoch = group.group_epoch;
        scratch.push(GroupCommand::SetTargetAssignment { group_id: group_id.clone(), group_epoch, members })?;
    }
    let group = scratch.group();
    let Some((member_id, reported)) = member else { return Ok(()) };
    let Some(current) = group.members.get(member_id) else { return Ok(()) };
    if group.target.epoch != group.group_epoch || current.is_away() {
        return Ok(());
    }
    let is_free = |topic: &str, partition: u32| group.owner(topic, partition).is_none_or(|o| o.member_id == member_id);
    let step = reconcile(current, group.target.epoch, group.target_of(member_id), &is_free, reported);
    if step.is_noop(current) {
        return Ok(());
    }
    let member_epoch = current.member_epoch;
    scratch.push(GroupCommand::ReconcileMember {
        group_id,
        member_id: member_id.to_string(),
        member_epoch,
        new_member_epoch: step.member_epoch,
        released: step.released,
        revoked: step.revoked,
        granted: step.granted,
    })
}

/// Runs the group's assignor over its members and topics, each member's
/// previous target as the sticky start.
fn target_for(group: &ConsumerGroup) -> Result<BTreeMap<String, Assignment>, GroupError> {
    let members: Vec<AssignorMember<'_>> = group
        .members
        .values()
        .map(|m| AssignorMember {
            member_id: &m.member_id,
            instance_id: m.instance_id.as_deref(),
            subscribed_topics: &m.subscribed_topics,
            previous: group.target_of(&m.member_id),
        })
        .collect();
    assignor::assign(group.assignor(), &members, &group.topics)
}

/// The commands for a member whose session (or rebalance) timer fired.
pub fn plan_member_expiry(
    state: &GroupsState,
    group_id: &str,
    member_id: &str,
    topics: &dyn TopicView,
    now_ms: u64,
) -> Result<Vec<GroupCommand>, GroupError> {
    let mut scratch = Scratch::of(existing(state, group_id)?);
    scratch.push(GroupCommand::ExpireMember {
        group_id: group_id.to_string(),
        member_id: member_id.to_string(),
        now_ms,
    })?;
    settle(&mut scratch, topics, None)?;
    Ok(scratch.commands)
}

/// The commands that bring a group up to date with the topics (after a
/// topic is created, deleted or grows) without waiting for a heartbeat.
pub fn plan_group_refresh(
    state: &GroupsState,
    group_id: &str,
    topics: &dyn TopicView,
) -> Result<Vec<GroupCommand>, GroupError> {
    let mut scratch = Scratch::of(existing(state, group_id)?);
    settle(&mut scratch, topics, None)?;
    Ok(scratch.commands)
}

/// The `ExpireOffsets` commands due at `now_ms`: one per group without
/// members that has offsets past `retention_ms`, or no offsets at all.
pub fn plan_offsets_expiry(state: &GroupsState, now_ms: u64, retention_ms: u64) -> Vec<GroupCommand> {
    state
        .groups
        .values()
        .filter(|g| g.members.is_empty())
        .filter(|g| g.offsets.is_empty() || g.expired_offsets(now_ms, retention_ms).next().is_some())
        .map(|g| GroupCommand::ExpireOffsets { group_id: g.group_id.clone(), now_ms, retention_ms })
        .collect()
}
