//! Tests of the coordinator through its two entry points, the planner and
//! `apply`: one unit test per rule, then property tests that drive both
//! with random clients, crashes and topic changes.

use std::collections::{BTreeMap, BTreeSet};

use strata_core::limits::{
    DEFAULT_GROUP_HEARTBEAT_INTERVAL_MS, MAX_COMMIT_METADATA_LEN, MAX_GROUPS, MAX_GROUP_MEMBERS,
    MAX_OFFSETS_PER_COMMIT, MIN_GROUP_SESSION_TIMEOUT_MS,
};
use strata_core::ErrorCode;

use super::*;

const GROUP: &str = "g";

fn set(items: &[(&str, u32)]) -> Assignment {
    items.iter().map(|(t, p)| (*t, *p)).collect()
}

fn topics_of(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|t| t.to_string()).collect()
}

/// The state, the topics as the leader sees them, and a leader clock;
/// every command applied is followed by an invariant check.
struct Harness {
    state: GroupsState,
    topics: BTreeMap<String, u32>,
    now_ms: u64,
    next_id: u64,
}

impl Harness {
    fn new(topics: &[(&str, u32)]) -> Harness {
        Harness {
            state: GroupsState::default(),
            topics: topics.iter().map(|(t, c)| (t.to_string(), *c)).collect(),
            now_ms: 1_000,
            next_id: 0,
        }
    }

    fn group(&self) -> &ConsumerGroup {
        &self.state.groups[GROUP]
    }

    fn check(&self) {
        for group in self.state.groups.values() {
            if let Err(broken) = group.check_invariants() {
                panic!("group {}: {broken}\n{group:#?}", group.group_id);
            }
        }
    }

    /// Applies commands in order, stopping at the first error.
    fn apply_all(&mut self, commands: &[GroupCommand]) -> Result<(), GroupError> {
        for command in commands {
            let response = self.state.apply(command.clone());
            self.check();
            if let GroupResponse::Error { code, message } = response {
                return Err(GroupError::new(code, message));
            }
        }
        Ok(())
    }

    /// Plans, applies and answers one heartbeat, as the leader's driver
    /// does. Also gives how many commands it took.
    fn heartbeat(&mut self, request: &HeartbeatRequest) -> (Result<HeartbeatAnswer, GroupError>, usize) {
        self.next_id += 1;
        let fresh = format!("member-{}", self.next_id);
        let plan = match plan_heartbeat(&self.state, request, &self.topics, &fresh, self.now_ms) {
            Ok(plan) => plan,
            Err(error) => return (Err(error), 0),
        };
        if let Err(error) = self.apply_all(&plan.commands) {
            return (Err(error), plan.commands.len());
        }
        (plan.answer(&self.state), plan.commands.len())
    }

    fn beat(&mut self, request: &HeartbeatRequest) -> Result<HeartbeatAnswer, GroupError> {
        self.heartbeat(request).0
    }

    fn expire(&mut self, member_id: &str) {
        let commands = plan_member_expiry(&self.state, GROUP, member_id, &self.topics, self.now_ms).unwrap();
        self.apply_all(&commands).unwrap();
    }

    fn commit(&mut self, member_id: &str, epoch: i32, partitions: &[(&str, u32, u64)]) -> GroupResponse {
        let offsets = partitions
            .iter()
            .map(|(t, p, o)| OffsetCommit { topic: t.to_string(), partition: *p, offset: *o, metadata: "m".into() })
            .collect();
        let command = GroupCommand::CommitOffsets {
            group_id: GROUP.into(),
            member_id: member_id.into(),
            member_epoch: epoch,
            offsets,
            commit_ms: self.now_ms,
        };
        let response = self.state.apply(command);
        self.check();
        response
    }

    /// Applies a command that must be refused with `code`, and checks that
    /// it changed nothing.
    fn refused(&mut self, command: GroupCommand, code: ErrorCode) -> String {
        let before = self.state.clone();
        match self.state.apply(command.clone()) {
            GroupResponse::Error { code: got, message } => {
                assert_eq!(got, code, "{command:?}: {message}");
                assert_eq!(self.state, before, "a refused command changed the state");
                message
            }
            other => panic!("{command:?} answered {other:?}, expected {code:?}"),
        }
    }
}

/// A well-behaved consumer: it gives up revoked partitions at once and
/// reports what it owns on every heartbeat.
#[derive(Clone, Debug)]
struct Consumer {
    member_id: String,
    epoch: i32,
    instance_id: Option<String>,
    topics: BTreeSet<String>,
    assignor: Option<String>,
    owned: Assignment,
}

impl Consumer {
    fn new(topics: &[&str]) -> Consumer {
        Consumer {
            member_id: String::new(),
            epoch: 0,
            instance_id: None,
            topics: topics_of(topics),
            assignor: None,
            owned: Assignment::new(),
        }
    }

    fn with_instance(mut self, instance_id: &str) -> Consumer {
        self.instance_id = Some(instance_id.into());
        self
    }

    fn request(&self) -> HeartbeatRequest {
        HeartbeatRequest {
            group_id: GROUP.into(),
            member_id: self.member_id.clone(),
            member_epoch: self.epoch,
            instance_id: self.instance_id.clone(),
            rebalance_timeout_ms: 0,
            subscribed_topics: Some(self.topics.clone()),
            assignor: self.assignor.clone(),
            owned_partitions: Some(self.owned.clone()),
            client_id: "test".into(),
            client_host: "127.0.0.1".into(),
        }
    }

    fn beat(&mut self, h: &mut Harness) -> Result<HeartbeatAnswer, GroupError> {
        let answer = h.beat(&self.request())?;
        self.member_id = answer.member_id.clone();
        self.epoch = answer.member_epoch;
        self.owned = answer.assignment.clone();
        Ok(answer)
    }

    fn join(h: &mut Harness, topics: &[&str]) -> Consumer {
        let mut consumer = Consumer::new(topics);
        consumer.beat(h).expect("join");
        consumer
    }
}

/// Heartbeats every consumer until a whole round changes nothing.
fn settle(h: &mut Harness, consumers: &mut [&mut Consumer]) {
    for _ in 0..20 {
        let mut writes = 0;
        for consumer in consumers.iter_mut() {
            let (answer, commands) = h.heartbeat(&consumer.request());
            let answer = answer.expect("heartbeat");
            consumer.epoch = answer.member_epoch;
            consumer.owned = answer.assignment;
            writes += commands;
        }
        if writes == 0 {
            return;
        }
    }
    panic!("the group did not settle: {:#?}", h.group());
}

#[test]
fn a_first_member_gets_every_partition_in_one_heartbeat() {
    let mut h = Harness::new(&[("a", 4)]);
    let (answer, commands) = h.heartbeat(&Consumer::new(&["a"]).request());
    let answer = answer.unwrap();
    assert_eq!(answer.member_id, "member-1", "the leader's fresh id");
    // The join and the topic counts each bump the group epoch.
    assert_eq!(answer.member_epoch, 2);
    assert_eq!(answer.heartbeat_interval_ms, DEFAULT_GROUP_HEARTBEAT_INTERVAL_MS);
    assert_eq!(answer.assignment, set(&[("a", 0), ("a", 1), ("a", 2), ("a", 3)]));
    // Join, topic counts, target, reconciliation.
    assert_eq!(commands, 4);
    assert_eq!(h.group().state, GroupState::Stable);
    assert_eq!(h.group().owner("a", 2).unwrap().assignment_epoch, 2);
}

#[test]
fn a_plain_heartbeat_writes_nothing() {
    let mut h = Harness::new(&[("a", 4)]);
    let consumer = Consumer::join(&mut h, &["a"]);
    let before = h.state.clone();
    let plan = plan_heartbeat(&h.state, &consumer.request(), &h.topics, "unused", 5_000).unwrap();
    assert!(plan.commands.is_empty(), "{:?}", plan.commands);
    let answer = plan.answer(&h.state).unwrap();
    assert_eq!((answer.member_epoch, answer.assignment.len()), (2, 4));
    let mut without_owned = consumer.request();
    without_owned.owned_partitions = None;
    without_owned.subscribed_topics = None;
    assert!(plan_heartbeat(&h.state, &without_owned, &h.topics, "unused", 5_000).unwrap().commands.is_empty());
    assert_eq!(h.state, before);
}

#[test]
fn a_second_member_waits_until_the_first_gives_partitions_up() {
    let mut h = Harness::new(&[("a", 4)]);
    let mut first = Consumer::join(&mut h, &["a"]);
    let mut second = Consumer::new(&["a"]);
    let answer = second.beat(&mut h).unwrap();
    let target_epoch = h.group().target.epoch;
    assert_eq!(answer.member_epoch, target_epoch, "at the target epoch at once: it has nothing to revoke");
    assert!(answer.assignment.is_empty(), "every partition of its target is still owned by the first");
    assert_eq!(h.group().members[&second.member_id].state, MemberState::UnreleasedPartitions);
    assert_eq!(h.group().state, GroupState::Reconciling);

    // The first is told to give two up; its epoch stays until it does.
    let kept_by_first = h.group().target_of(&first.member_id).clone();
    let mut slow = first.request();
    slow.owned_partitions = Some(first.owned.clone());
    let answer = h.beat(&slow).unwrap();
    assert_eq!(answer.member_epoch, first.epoch, "no new epoch while revoking");
    assert_eq!(answer.assignment, kept_by_first);
    assert_eq!(h.group().members[&first.member_id].state, MemberState::UnrevokedPartitions);
    // Still listing them: nothing moves.
    assert_eq!(h.heartbeat(&slow).1, 0);
    let blocked = second.beat(&mut h).unwrap();
    assert!(blocked.assignment.is_empty(), "withheld while the first owns them");

    // It gives them up: it moves to the target epoch, and the second gets
    // them at its next heartbeat.
    first.owned = kept_by_first.clone();
    let answer = first.beat(&mut h).unwrap();
    assert_eq!(answer.member_epoch, target_epoch);
    let answer = second.beat(&mut h).unwrap();
    assert_eq!(answer.assignment.len(), 2);
    assert!(answer.assignment.is_disjoint(&kept_by_first));
    assert_eq!(h.group().state, GroupState::Stable);
}

#[test]
fn stale_and_future_epochs_fence_the_member() {
    let mut h = Harness::new(&[("a", 2)]);
    let mut consumer = Consumer::join(&mut h, &["a"]);
    let mut ahead = consumer.request();
    ahead.member_epoch = consumer.epoch + 1;
    assert_eq!(h.beat(&ahead).unwrap_err().code, ErrorCode::FencedMemberEpoch);

    // A second member moves the first to a new epoch; the first's answer is
    // lost. Its retry at the previous epoch, owning only what it was given,
    // is accepted; claiming more is not.
    let mut other = Consumer::join(&mut h, &["a"]);
    let old_epoch = consumer.epoch;
    let old_owned = consumer.owned.clone();
    consumer.beat(&mut h).unwrap(); // revokes one
    consumer.beat(&mut h).unwrap(); // gives it up: new epoch
    other.beat(&mut h).unwrap();
    assert!(consumer.epoch > old_epoch);
    let mut retry = consumer.request();
    let previous = h.group().members[&consumer.member_id].previous_member_epoch;
    retry.member_epoch = previous;
    assert_eq!(h.beat(&retry).unwrap().member_epoch, consumer.epoch, "lost answer: accepted");
    retry.owned_partitions = Some(old_owned);
    assert_eq!(h.beat(&retry).unwrap_err().code, ErrorCode::FencedMemberEpoch, "claims a revoked partition");
    retry.owned_partitions = None;
    assert_eq!(h.beat(&retry).unwrap_err().code, ErrorCode::FencedMemberEpoch, "owned unknown");
    let mut older = consumer.request();
    older.member_epoch = old_epoch - 1;
    assert_eq!(h.beat(&older).unwrap_err().code, ErrorCode::FencedMemberEpoch);
}

#[test]
fn a_fenced_member_rejoins_and_its_old_epoch_can_no_longer_commit() {
    let mut h = Harness::new(&[("a", 2)]);
    let mut consumer = Consumer::join(&mut h, &["a"]);
    let old_epoch = consumer.epoch;
    // Fenced: it drops everything and rejoins at epoch 0 with its id.
    consumer.epoch = 0;
    consumer.owned = Assignment::new();
    let answer = consumer.beat(&mut h).unwrap();
    assert_eq!(answer.member_id, consumer.member_id);
    assert!(answer.member_epoch > old_epoch, "a rejoin is a new epoch");
    assert_eq!(answer.assignment.len(), 2, "it gets its partitions back");
    let GroupResponse::OffsetsCommitted { partitions } = h.commit(&consumer.member_id, old_epoch, &[("a", 0, 5)])
    else {
        panic!()
    };
    assert_eq!(partitions[0].error.as_ref().unwrap().code, ErrorCode::StaleMemberEpoch);
}

#[test]
fn bad_heartbeats_get_typed_errors() {
    let mut h = Harness::new(&[("a", 2)]);
    let consumer = Consumer::join(&mut h, &["a"]);
    type Mutation = Box<dyn Fn(&mut HeartbeatRequest)>;
    let cases: Vec<(Mutation, ErrorCode)> = vec![
        (Box::new(|r| r.group_id = String::new()), ErrorCode::InvalidGroupId),
        (Box::new(|r| r.group_id = "tab\there".into()), ErrorCode::InvalidGroupId),
        (Box::new(|r| r.group_id = "x".repeat(250)), ErrorCode::InvalidGroupId),
        (Box::new(|r| r.group_id = "other".into()), ErrorCode::GroupIdNotFound),
        (Box::new(|r| r.member_id = "nobody".into()), ErrorCode::UnknownMemberId),
        (Box::new(|r| r.member_epoch = -3), ErrorCode::InvalidRequest),
        (Box::new(|r| r.assignor = Some("sticky".into())), ErrorCode::UnsupportedAssignor),
        (Box::new(|r| r.subscribed_topics = Some(topics_of(&["bad/name"]))), ErrorCode::InvalidTopicName),
        (
            Box::new(|r| {
                r.member_epoch = 0;
                r.member_id = String::new();
                r.subscribed_topics = None;
            }),
            ErrorCode::InvalidRequest,
        ),
        (
            Box::new(|r| {
                r.member_epoch = 0;
                r.member_id = String::new();
                r.assignor = Some("roundrobin".into());
            }),
            ErrorCode::UnsupportedAssignor,
        ),
        (
            Box::new(|r| {
                r.member_epoch = 0;
                r.member_id = "m".repeat(65);
            }),
            ErrorCode::InvalidRequest,
        ),
        (
            Box::new(|r| {
                r.member_epoch = 0;
                r.member_id = String::new();
                r.client_id = "c".repeat(300);
            }),
            ErrorCode::InvalidRequest,
        ),
        (Box::new(|r| r.member_epoch = STATIC_LEAVE_EPOCH), ErrorCode::InvalidRequest),
    ];
    let before = h.state.clone();
    for (mutate, code) in cases {
        let mut request = consumer.request();
        mutate(&mut request);
        let error = h.beat(&request).unwrap_err();
        assert_eq!(error.code, code, "{request:?}: {}", error.message);
        assert_eq!(h.state, before, "{request:?} changed the state");
    }
}

#[test]
fn a_subscription_to_a_topic_that_does_not_exist_yet_is_served_once_it_exists() {
    let mut h = Harness::new(&[("a", 2)]);
    let mut consumer = Consumer::join(&mut h, &["a", "later"]);
    assert_eq!(consumer.owned.len(), 2);
    let epoch = h.group().group_epoch;
    h.topics.insert("later".into(), 3);
    // The leader may notice it by itself, or at the next heartbeat.
    let commands = plan_group_refresh(&h.state, GROUP, &h.topics).unwrap();
    assert!(matches!(commands[0], GroupCommand::RefreshTopics { .. }), "{commands:?}");
    h.apply_all(&commands).unwrap();
    assert!(h.group().group_epoch > epoch, "a topic change bumps the group epoch");
    assert_eq!(h.group().state, GroupState::Reconciling);
    consumer.beat(&mut h).unwrap();
    assert_eq!(consumer.owned.len(), 5);
    // More partitions: again.
    h.topics.insert("later".into(), 4);
    consumer.beat(&mut h).unwrap();
    assert_eq!(consumer.owned.len(), 6);
    // Deleted: revoked, then released.
    h.topics.remove("later");
    let answer = consumer.beat(&mut h).unwrap();
    assert_eq!(answer.assignment.len(), 2, "told to give 'later' up");
    assert_eq!(h.group().members[&consumer.member_id].pending_revocation.len(), 4);
    consumer.beat(&mut h).unwrap();
    assert!(!h.group().owners.contains_key("later"));
    assert_eq!(h.group().state, GroupState::Stable);
}

#[test]
fn a_leave_frees_partitions_at_once() {
    let mut h = Harness::new(&[("a", 4)]);
    let mut first = Consumer::join(&mut h, &["a"]);
    let mut second = Consumer::join(&mut h, &["a"]);
    settle(&mut h, &mut [&mut first, &mut second]);
    let mut leave = first.request();
    leave.member_epoch = LEAVE_EPOCH;
    let answer = h.beat(&leave).unwrap();
    assert_eq!(answer.member_epoch, LEAVE_EPOCH);
    assert!(!h.group().members.contains_key(&first.member_id));
    assert_eq!(h.group().target_of(&second.member_id).len(), 4, "the target was recomputed with the leave");
    assert_eq!(second.beat(&mut h).unwrap().assignment.len(), 4);
    assert_eq!(h.beat(&leave).unwrap_err().code, ErrorCode::UnknownMemberId, "a second leave");
    // The last one out leaves an empty group behind.
    let mut leave = second.request();
    leave.member_epoch = LEAVE_EPOCH;
    h.now_ms = 7_000;
    h.beat(&leave).unwrap();
    assert_eq!(h.group().state, GroupState::Empty);
    assert_eq!(h.group().empty_since_ms, Some(7_000));
}

#[test]
fn an_expired_member_loses_its_partitions_to_the_others() {
    let mut h = Harness::new(&[("a", 4)]);
    let mut first = Consumer::join(&mut h, &["a"]);
    let mut second = Consumer::join(&mut h, &["a"]);
    settle(&mut h, &mut [&mut first, &mut second]);
    h.expire(&first.member_id);
    assert_eq!(second.beat(&mut h).unwrap().assignment.len(), 4);
    assert_eq!(first.beat(&mut h).unwrap_err().code, ErrorCode::UnknownMemberId);
    let expire = GroupCommand::ExpireMember { group_id: GROUP.into(), member_id: first.member_id.clone(), now_ms: 0 };
    h.refused(expire, ErrorCode::UnknownMemberId);
}

#[test]
fn a_static_member_that_returns_in_time_gets_its_partitions_back_without_a_rebalance() {
    let mut h = Harness::new(&[("a", 4)]);
    let mut stat = Consumer::new(&["a"]).with_instance("host-1");
    stat.beat(&mut h).unwrap();
    let mut other = Consumer::join(&mut h, &["a"]);
    settle(&mut h, &mut [&mut stat, &mut other]);
    let mine = stat.owned.clone();
    let (group_epoch, epoch) = (h.group().group_epoch, stat.epoch);

    let mut away = stat.request();
    away.member_epoch = STATIC_LEAVE_EPOCH;
    assert_eq!(h.beat(&away).unwrap().member_epoch, STATIC_LEAVE_EPOCH);
    assert_eq!(h.beat(&away).unwrap().member_epoch, STATIC_LEAVE_EPOCH, "repeated: no change");
    assert_eq!(h.group().group_epoch, group_epoch, "no rebalance");
    other.beat(&mut h).unwrap();
    assert!(other.owned.is_disjoint(&mine), "its partitions wait for it");
    // Its old id is fenced; a second live member with the id is refused
    // while the first is live.
    assert_eq!(stat.beat(&mut h).unwrap_err().code, ErrorCode::FencedMemberEpoch);

    let mut restarted = Consumer::new(&["a"]).with_instance("host-1");
    let answer = restarted.beat(&mut h).unwrap();
    assert_ne!(answer.member_id, stat.member_id, "a new process, a new id");
    assert_eq!(answer.assignment, mine);
    assert_eq!(answer.member_epoch, epoch, "it takes its place and epoch");
    assert_eq!(h.group().group_epoch, group_epoch, "no rebalance");
    assert_eq!(h.group().state, GroupState::Stable);
    let mut twin = Consumer::new(&["a"]).with_instance("host-1");
    assert_eq!(twin.beat(&mut h).unwrap_err().code, ErrorCode::UnreleasedInstanceId);

    // Away for longer than its session: expired, and the others take over.
    let mut away = restarted.request();
    away.member_epoch = STATIC_LEAVE_EPOCH;
    h.beat(&away).unwrap();
    h.expire(&restarted.member_id);
    settle(&mut h, &mut [&mut other]);
    assert_eq!(other.owned.len(), 4);
}

#[test]
fn a_static_member_that_returns_with_a_new_subscription_rebalances() {
    let mut h = Harness::new(&[("a", 2), ("b", 2)]);
    let mut stat = Consumer::new(&["a"]).with_instance("host-1");
    stat.beat(&mut h).unwrap();
    let mut away = stat.request();
    away.member_epoch = STATIC_LEAVE_EPOCH;
    h.beat(&away).unwrap();
    let epoch = h.group().group_epoch;
    let mut restarted = Consumer::new(&["a", "b"]).with_instance("host-1");
    restarted.beat(&mut h).unwrap();
    assert!(h.group().group_epoch > epoch);
    assert_eq!(restarted.owned.len(), 4);
}

#[test]
fn a_subscription_change_rebalances() {
    let mut h = Harness::new(&[("a", 2), ("b", 2)]);
    let mut consumer = Consumer::join(&mut h, &["a"]);
    let epoch = h.group().group_epoch;
    consumer.topics = topics_of(&["b"]);
    consumer.beat(&mut h).unwrap();
    assert!(h.group().group_epoch > epoch);
    assert!(consumer.owned.is_empty(), "revoking a before taking b");
    consumer.beat(&mut h).unwrap();
    assert_eq!(consumer.owned, set(&[("b", 0), ("b", 1)]));
    assert_eq!(h.group().topics.keys().collect::<Vec<_>>(), vec!["b"], "a is forgotten");
}

#[test]
fn the_group_uses_the_assignor_most_members_name() {
    let mut h = Harness::new(&[("a", 4), ("b", 4)]);
    let mut one = Consumer::new(&["a", "b"]);
    one.assignor = Some(assignor::RANGE.into());
    one.beat(&mut h).unwrap();
    let mut two = Consumer::new(&["a", "b"]);
    two.assignor = Some(assignor::RANGE.into());
    two.beat(&mut h).unwrap();
    settle(&mut h, &mut [&mut one, &mut two]);
    assert_eq!(h.group().assignor(), assignor::RANGE);
    for consumer in [&one, &two] {
        let a = consumer.owned.partitions_of("a").unwrap();
        assert_eq!(Some(a), consumer.owned.partitions_of("b"), "co-partitioned");
    }
}

#[test]
fn commits_are_fenced_by_owner_and_assignment_epoch() {
    let mut h = Harness::new(&[("a", 2)]);
    let mut first = Consumer::join(&mut h, &["a"]);
    let granted_at = first.epoch;
    let mut second = Consumer::join(&mut h, &["a"]);
    settle(&mut h, &mut [&mut first, &mut second]);
    let (kept, _) = first.owned.iter().next().unwrap();
    let kept = (kept.to_string(), first.owned.iter().next().unwrap().1);
    let moved = second.owned.iter().next().map(|(t, p)| (t.to_string(), p)).unwrap();
    assert!(first.epoch > granted_at);

    let outcome = |response: GroupResponse| match response {
        GroupResponse::OffsetsCommitted { partitions } => {
            partitions.into_iter().map(|p| p.error.map(|e| e.code)).collect::<Vec<_>>()
        }
        other => panic!("{other:?}"),
    };
    // The owner, at its epoch or at any epoch since the partition's
    // assignment (KIP-1251: a commit in flight across a bump survives).
    for epoch in [first.epoch, granted_at] {
        assert_eq!(outcome(h.commit(&first.member_id, epoch, &[(&kept.0, kept.1, 10)])), vec![None]);
    }
    assert_eq!(h.group().committed(&kept.0, kept.1).unwrap().offset, 10);
    // Not the owner; or the partition was assigned after the commit's epoch.
    let second_granted = h.group().owner(&moved.0, moved.1).unwrap().assignment_epoch;
    let before = h.state.clone();
    let codes = outcome(h.commit(&first.member_id, first.epoch, &[(&moved.0, moved.1, 10)]));
    assert_eq!(codes, vec![Some(ErrorCode::StaleMemberEpoch)]);
    let codes = outcome(h.commit(&second.member_id, second_granted - 1, &[(&moved.0, moved.1, 10)]));
    assert_eq!(codes, vec![Some(ErrorCode::StaleMemberEpoch)]);
    assert_eq!(h.state, before, "refused partitions change nothing");
    // Mixed: each partition on its own.
    let codes = outcome(h.commit(&first.member_id, first.epoch, &[(&kept.0, kept.1, 11), (&moved.0, moved.1, 11)]));
    assert_eq!(codes, vec![None, Some(ErrorCode::StaleMemberEpoch)]);
    assert_eq!(h.group().committed(&kept.0, kept.1).unwrap().offset, 11);
    assert!(h.group().committed(&moved.0, moved.1).is_none());

    let commit = |member: &str, epoch: i32| GroupCommand::CommitOffsets {
        group_id: GROUP.into(),
        member_id: member.into(),
        member_epoch: epoch,
        offsets: vec![OffsetCommit { topic: "a".into(), partition: 0, offset: 1, metadata: String::new() }],
        commit_ms: 0,
    };
    h.refused(commit(&first.member_id, first.epoch + 1), ErrorCode::FencedMemberEpoch);
    h.refused(commit("nobody", 1), ErrorCode::UnknownMemberId);
    h.refused(commit("", STANDALONE_COMMIT_EPOCH), ErrorCode::GroupNotEmpty);
    let mut unknown_group = commit(&first.member_id, first.epoch);
    let GroupCommand::CommitOffsets { group_id, .. } = &mut unknown_group else { unreachable!() };
    *group_id = "other".into();
    h.refused(unknown_group, ErrorCode::GroupIdNotFound);
}

#[test]
fn a_static_member_that_is_away_cannot_commit() {
    let mut h = Harness::new(&[("a", 1)]);
    let mut stat = Consumer::new(&["a"]).with_instance("host-1");
    stat.beat(&mut h).unwrap();
    let mut away = stat.request();
    away.member_epoch = STATIC_LEAVE_EPOCH;
    h.beat(&away).unwrap();
    let command = GroupCommand::CommitOffsets {
        group_id: GROUP.into(),
        member_id: stat.member_id.clone(),
        member_epoch: stat.epoch,
        offsets: vec![OffsetCommit { topic: "a".into(), partition: 0, offset: 1, metadata: String::new() }],
        commit_ms: 0,
    };
    h.refused(command, ErrorCode::FencedMemberEpoch);
}

#[test]
fn malformed_commits_are_refused_whole() {
    let mut h = Harness::new(&[("a", 2)]);
    let consumer = Consumer::join(&mut h, &["a"]);
    let commit = |offsets: Vec<OffsetCommit>| GroupCommand::CommitOffsets {
        group_id: GROUP.into(),
        member_id: consumer.member_id.clone(),
        member_epoch: consumer.epoch,
        offsets,
        commit_ms: 0,
    };
    let one = |topic: &str, partition: u32, metadata: String| OffsetCommit {
        topic: topic.into(),
        partition,
        offset: 1,
        metadata,
    };
    h.refused(commit(vec![]), ErrorCode::InvalidRequest);
    let too_many = (0..=MAX_OFFSETS_PER_COMMIT as u32).map(|p| one("a", p % 1024, String::new())).collect();
    h.refused(commit(too_many), ErrorCode::InvalidRequest);
    h.refused(commit(vec![one("a", 0, String::new()), one("a", 0, String::new())]), ErrorCode::InvalidRequest);
    h.refused(commit(vec![one("a", 0, "x".repeat(MAX_COMMIT_METADATA_LEN + 1))]), ErrorCode::InvalidRequest);
    h.refused(commit(vec![one("bad/topic", 0, String::new())]), ErrorCode::InvalidTopicName);
    h.refused(commit(vec![one("a", 5000, String::new())]), ErrorCode::UnknownPartition);
    let mut standalone = commit(vec![one("a", 0, String::new())]);
    let GroupCommand::CommitOffsets { member_id, member_epoch, group_id, .. } = &mut standalone else { unreachable!() };
    member_id.clear();
    *member_epoch = 3;
    *group_id = "new-group".into();
    h.refused(standalone, ErrorCode::InvalidRequest);
}

#[test]
fn groups_without_members_take_standalone_commits_and_resets() {
    let mut h = Harness::new(&[]);
    let command = GroupCommand::CommitOffsets {
        group_id: "admin".into(),
        member_id: String::new(),
        member_epoch: STANDALONE_COMMIT_EPOCH,
        offsets: vec![OffsetCommit { topic: "a".into(), partition: 3, offset: 42, metadata: "tool".into() }],
        commit_ms: 9,
    };
    assert!(matches!(h.state.apply(command), GroupResponse::OffsetsCommitted { .. }));
    let group = &h.state.groups["admin"];
    assert_eq!(group.state, GroupState::Empty);
    assert_eq!(group.committed("a", 3), Some(&CommittedOffset { offset: 42, metadata: "tool".into(), commit_ms: 9 }));

    let reset = |group: &str| GroupCommand::ResetOffsets {
        group_id: group.into(),
        offsets: vec![("a".into(), 3, 7), ("a".into(), 4, 0)],
        now_ms: 10,
    };
    assert_eq!(h.state.apply(reset("admin")), GroupResponse::OffsetsReset { partitions: 2 });
    assert_eq!(h.state.groups["admin"].committed("a", 3).unwrap().offset, 7);
    // Refused while the group has members.
    h.topics.insert("a".into(), 1);
    Consumer::join(&mut h, &["a"]);
    let message = h.refused(reset(GROUP), ErrorCode::GroupNotEmpty);
    assert!(message.contains("stop them"), "{message}");
}

#[test]
fn groups_are_deleted_only_without_members() {
    let mut h = Harness::new(&[("a", 1)]);
    let mut consumer = Consumer::join(&mut h, &["a"]);
    h.commit(&consumer.member_id, consumer.epoch, &[("a", 0, 3)]);
    let delete = || GroupCommand::DeleteGroup { group_id: GROUP.into() };
    h.refused(delete(), ErrorCode::GroupNotEmpty);
    let mut leave = consumer.request();
    leave.member_epoch = LEAVE_EPOCH;
    h.beat(&leave).unwrap();
    assert_eq!(h.state.apply(delete()), GroupResponse::GroupDeleted { offsets: 1 });
    assert_eq!(h.state.group_state(GROUP), GroupState::Dead);
    h.refused(delete(), ErrorCode::GroupIdNotFound);
    // A member may heartbeat its way back in only with a join.
    consumer.epoch = 3;
    assert_eq!(consumer.beat(&mut h).unwrap_err().code, ErrorCode::GroupIdNotFound);
}

#[test]
fn offsets_of_an_empty_group_expire_after_the_retention() {
    const DAY: u64 = 24 * 3600 * 1000;
    let mut h = Harness::new(&[("a", 2)]);
    let consumer = Consumer::join(&mut h, &["a"]);
    h.now_ms = DAY;
    h.commit(&consumer.member_id, consumer.epoch, &[("a", 0, 3)]);
    h.now_ms = 5 * DAY;
    h.commit(&consumer.member_id, consumer.epoch, &[("a", 1, 3)]);
    let retention = 7 * DAY;
    // While it has members: never.
    assert!(plan_offsets_expiry(&h.state, 100 * DAY, retention).is_empty());
    let expire = |now_ms| GroupCommand::ExpireOffsets { group_id: GROUP.into(), now_ms, retention_ms: retention };
    h.refused(expire(100 * DAY), ErrorCode::GroupNotEmpty);
    // The member leaves on day 6: the retention counts from then for the
    // offset committed on day 1.
    h.now_ms = 6 * DAY;
    let mut leave = consumer.request();
    leave.member_epoch = LEAVE_EPOCH;
    h.beat(&leave).unwrap();
    assert!(plan_offsets_expiry(&h.state, 12 * DAY, retention).is_empty());
    assert_eq!(plan_offsets_expiry(&h.state, 13 * DAY, retention), vec![expire(13 * DAY)]);
    assert_eq!(h.state.apply(expire(13 * DAY)), GroupResponse::OffsetsExpired { expired: 2, group_deleted: true });
    assert_eq!(h.state.group_state(GROUP), GroupState::Dead, "no offsets left: the group is gone");

    // A group of standalone commits counts from each commit.
    let commit = |partition, commit_ms| GroupCommand::CommitOffsets {
        group_id: GROUP.into(),
        member_id: String::new(),
        member_epoch: STANDALONE_COMMIT_EPOCH,
        offsets: vec![OffsetCommit { topic: "a".into(), partition, offset: 1, metadata: String::new() }],
        commit_ms,
    };
    h.state.apply(commit(0, DAY));
    h.state.apply(commit(1, 3 * DAY));
    assert_eq!(h.state.apply(expire(9 * DAY)), GroupResponse::OffsetsExpired { expired: 1, group_deleted: false });
    assert!(h.group().committed("a", 1).is_some());
    h.refused(
        GroupCommand::ExpireOffsets { group_id: GROUP.into(), now_ms: 0, retention_ms: 0 },
        ErrorCode::InvalidRequest,
    );
    // An empty group with no offsets goes at the next sweep.
    h.state.apply(GroupCommand::ConfigureGroup {
        group_id: "idle".into(),
        session_timeout_ms: 10_000,
        heartbeat_interval_ms: 1_000,
    });
    let due = plan_offsets_expiry(&h.state, 10 * DAY, retention);
    assert!(due.iter().any(|c| c.group_id() == "idle"), "{due:?}");
}

#[test]
fn group_timeouts_are_bounded_and_reach_the_answers() {
    let mut h = Harness::new(&[("a", 1)]);
    let configure = |session_timeout_ms, heartbeat_interval_ms| GroupCommand::ConfigureGroup {
        group_id: GROUP.into(),
        session_timeout_ms,
        heartbeat_interval_ms,
    };
    h.refused(configure(MIN_GROUP_SESSION_TIMEOUT_MS - 1, 500), ErrorCode::InvalidRequest);
    h.refused(configure(60_000, 499), ErrorCode::InvalidRequest);
    h.refused(configure(60_000, 60_000), ErrorCode::InvalidRequest);
    h.refused(configure(10_000, 10_000), ErrorCode::InvalidRequest);
    assert_eq!(h.state.apply(configure(10_000, 1_000)), GroupResponse::Configured);
    let consumer = Consumer::join(&mut h, &["a"]);
    assert_eq!(h.beat(&consumer.request()).unwrap().heartbeat_interval_ms, 1_000);
    assert_eq!(h.group().members[&consumer.member_id].session_timeout_ms, 10_000);
}

#[test]
fn groups_and_members_are_bounded() {
    let mut h = Harness::new(&[("a", 1)]);
    for i in 0..MAX_GROUP_MEMBERS {
        let join = GroupCommand::JoinMember {
            group_id: GROUP.into(),
            member: JoinSpec {
                member_id: format!("m{i}"),
                instance_id: None,
                subscribed_topics: topics_of(&["a"]),
                assignor: None,
                client_id: String::new(),
                client_host: String::new(),
                rebalance_timeout_ms: 1,
            },
        };
        assert!(matches!(h.state.apply(join), GroupResponse::Joined { .. }));
    }
    let message = h.beat(&Consumer::new(&["a"]).request()).unwrap_err();
    assert_eq!(message.code, ErrorCode::LimitReached);
    assert!(message.message.contains("1000 members"), "{}", message.message);

    let mut state = GroupsState::default();
    for i in 0..MAX_GROUPS {
        let group = ConsumerGroup::new(format!("g{i}"));
        state.groups.insert(group.group_id.clone(), group);
    }
    let h = &mut Harness { state, ..Harness::new(&[("a", 1)]) };
    let mut joiner = Consumer::new(&["a"]).request();
    joiner.group_id = "one-more".into();
    assert_eq!(h.beat(&joiner).unwrap_err().code, ErrorCode::LimitReached);
    let configure = GroupCommand::ConfigureGroup {
        group_id: "one-more".into(),
        session_timeout_ms: 10_000,
        heartbeat_interval_ms: 1_000,
    };
    h.refused(configure, ErrorCode::LimitReached);
}

#[test]
fn leader_made_commands_that_do_not_fit_the_state_are_refused() {
    let mut h = Harness::new(&[("a", 2), ("b", 2)]);
    let mut first = Consumer::join(&mut h, &["a"]);
    let mut second = Consumer::join(&mut h, &["a"]);
    settle(&mut h, &mut [&mut first, &mut second]);
    let group_epoch = h.group().group_epoch;
    let target = |members: &[(&str, Assignment)], group_epoch| GroupCommand::SetTargetAssignment {
        group_id: GROUP.into(),
        group_epoch,
        members: members.iter().map(|(m, a)| (m.to_string(), a.clone())).collect(),
    };
    let (f, s) = (first.member_id.as_str(), second.member_id.as_str());
    h.refused(target(&[(f, set(&[("a", 0)]))], group_epoch - 1), ErrorCode::Internal);
    h.refused(target(&[("ghost", set(&[("a", 0)]))], group_epoch), ErrorCode::Internal);
    h.refused(target(&[(f, set(&[("b", 0)]))], group_epoch), ErrorCode::Internal);
    h.refused(target(&[(f, set(&[("a", 2)]))], group_epoch), ErrorCode::Internal);
    h.refused(target(&[(f, set(&[("a", 0)])), (s, set(&[("a", 0)]))], group_epoch), ErrorCode::Internal);

    // A reconciliation may not grant a partition someone else owns, nor
    // move a member's epoch while it revokes.
    let epoch = first.epoch;
    let theirs = second.owned.clone();
    let reconcile = |new_member_epoch, revoked: Assignment, granted: Assignment| GroupCommand::ReconcileMember {
        group_id: GROUP.into(),
        member_id: first.member_id.clone(),
        member_epoch: epoch,
        new_member_epoch,
        released: Assignment::new(),
        revoked,
        granted,
    };
    h.refused(reconcile(epoch, Assignment::new(), theirs.clone()), ErrorCode::Internal);
    h.refused(reconcile(epoch + 1, first.owned.clone(), Assignment::new()), ErrorCode::Internal);
    h.refused(reconcile(epoch, theirs, Assignment::new()), ErrorCode::Internal);
    let mut stale = reconcile(epoch, Assignment::new(), Assignment::new());
    let GroupCommand::ReconcileMember { member_epoch, .. } = &mut stale else { unreachable!() };
    *member_epoch = epoch - 1;
    h.refused(stale, ErrorCode::Internal);
    let refresh = GroupCommand::RefreshTopics { group_id: GROUP.into(), topics: BTreeMap::from([("b".into(), 2)]) };
    h.refused(refresh, ErrorCode::Internal);
}

// Property tests: random clients against planner + apply.

mod simulation {
    use proptest::prelude::*;

    use super::*;

    const TOPICS: [&str; 3] = ["a", "b", "c"];
    const CLIENTS: usize = 5;

    #[derive(Clone, Debug)]
    enum Step {
        /// Start (or restart) the client's process and join. Odd clients
        /// are static (instance id `i<client>`).
        Join {
            client: usize,
            topics: u8,
            range: bool,
        },
        /// Gives up revoked partitions, then heartbeats.
        Beat {
            client: usize,
        },
        /// Heartbeats still holding partitions it was told to give up.
        SlowBeat {
            client: usize,
        },
        /// Like Beat, but the answer is lost on the way back.
        LostBeat {
            client: usize,
        },
        /// Heartbeats at an epoch the group never gave it.
        FutureBeat {
            client: usize,
        },
        Leave {
            client: usize,
        },
        StaticLeave {
            client: usize,
        },
        /// The process dies without a word.
        Crash {
            client: usize,
        },
        /// The leader's session timer fires for the client's member; a live
        /// client does not know it yet (a zombie, e.g. after a long pause).
        Expire {
            client: usize,
        },
        Subscribe {
            client: usize,
            topics: u8,
        },
        /// A topic's partition count changes (0: deleted).
        Resize {
            topic: usize,
            partitions: u32,
        },
        /// Commits one partition at its epoch plus `delta`.
        Commit {
            client: usize,
            pick: u8,
            delta: i8,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        let client = 0..CLIENTS;
        prop_oneof![
            3 => (client.clone(), 1u8..8, any::<bool>()).prop_map(|(client, topics, range)| Step::Join { client, topics, range: range && client == 0 }),
            8 => client.clone().prop_map(|client| Step::Beat { client }),
            2 => client.clone().prop_map(|client| Step::SlowBeat { client }),
            1 => client.clone().prop_map(|client| Step::LostBeat { client }),
            1 => client.clone().prop_map(|client| Step::FutureBeat { client }),
            1 => client.clone().prop_map(|client| Step::Leave { client }),
            1 => client.clone().prop_map(|client| Step::StaticLeave { client }),
            1 => client.clone().prop_map(|client| Step::Crash { client }),
            1 => client.clone().prop_map(|client| Step::Expire { client }),
            1 => (client.clone(), 1u8..8).prop_map(|(client, topics)| Step::Subscribe { client, topics }),
            1 => (0..TOPICS.len(), 0u32..7).prop_map(|(topic, partitions)| Step::Resize { topic, partitions }),
            3 => (client, any::<u8>(), -2i8..2).prop_map(|(client, pick, delta)| Step::Commit { client, pick, delta }),
        ]
    }

    fn topic_set(mask: u8) -> BTreeSet<String> {
        TOPICS.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, t)| t.to_string()).collect()
    }

    /// A consumer process as the client library would run it.
    #[derive(Clone, Debug, Default)]
    struct Client {
        running: bool,
        /// Set from the first answer; cleared when the group forgets it.
        member_id: String,
        epoch: i32,
        topics: BTreeSet<String>,
        assignor: Option<String>,
        /// Partition → the epoch of the answer that gave it.
        owned: BTreeMap<(String, u32), i32>,
        /// The assignment of the last answer.
        assignment: Assignment,
        /// Expired by the leader without knowing it.
        zombie: bool,
    }

    impl Client {
        fn owned_set(&self) -> Assignment {
            self.owned.keys().map(|(t, p)| (t.clone(), *p)).collect()
        }

        fn instance_id(index: usize) -> Option<String> {
            (index % 2 == 1).then(|| format!("i{index}"))
        }

        /// The process ends; its member stays in the group until it left
        /// or its timer fires, so the id is kept for that.
        fn stop(&mut self) {
            *self = Client {
                member_id: self.member_id.clone(),
                topics: self.topics.clone(),
                assignor: self.assignor.clone(),
                ..Client::default()
            };
        }
    }

    struct World {
        h: Harness,
        clients: Vec<Client>,
    }

    impl World {
        fn new(initial: &[u32]) -> World {
            let topics: Vec<(&str, u32)> =
                TOPICS.iter().zip(initial).filter(|(_, c)| **c > 0).map(|(t, c)| (*t, *c)).collect();
            World { h: Harness::new(&topics), clients: vec![Client::default(); CLIENTS] }
        }

        fn request(&self, index: usize, epoch: i32) -> HeartbeatRequest {
            let client = &self.clients[index];
            HeartbeatRequest {
                group_id: GROUP.into(),
                member_id: client.member_id.clone(),
                member_epoch: epoch,
                instance_id: Client::instance_id(index),
                rebalance_timeout_ms: 0,
                subscribed_topics: Some(client.topics.clone()),
                assignor: client.assignor.clone(),
                owned_partitions: Some(client.owned_set()),
                client_id: format!("c{index}"),
                client_host: "127.0.0.1".into(),
            }
        }

        /// Drops what the last answer no longer lists (after committing it,
        /// in a real client).
        fn give_up_revoked(&mut self, index: usize) {
            let client = &mut self.clients[index];
            let assignment = client.assignment.clone();
            client.owned.retain(|(t, p), _| assignment.contains(t, *p));
        }

        /// Sends a heartbeat and takes in the answer (unless it is lost).
        /// Returns how many commands it took.
        fn heartbeat(&mut self, index: usize, epoch: i32, lost: bool) -> usize {
            let request = self.request(index, epoch);
            let (answer, commands) = self.h.heartbeat(&request);
            if lost {
                return commands;
            }
            let client = &mut self.clients[index];
            match answer {
                Ok(answer) => {
                    // Only a join brings an expired member back.
                    assert!(!client.zombie || epoch == JOIN_EPOCH, "client {index}: an expired member was answered");
                    client.zombie = false;
                    client.member_id = answer.member_id;
                    client.epoch = answer.member_epoch;
                    for (topic, partition) in answer.assignment.iter() {
                        client.owned.entry((topic.to_string(), partition)).or_insert(answer.member_epoch);
                    }
                    client.assignment = answer.assignment;
                }
                Err(e) if e.code == ErrorCode::FencedMemberEpoch => {
                    // Drop everything; rejoin with the same id.
                    client.owned.clear();
                    client.assignment = Assignment::new();
                    client.epoch = JOIN_EPOCH;
                    client.zombie = false;
                }
                Err(e) if e.code == ErrorCode::UnknownMemberId => {
                    client.owned.clear();
                    client.assignment = Assignment::new();
                    client.epoch = JOIN_EPOCH;
                    client.member_id.clear();
                    client.zombie = false;
                }
                // Another live member has its instance id: back off.
                Err(e) if e.code == ErrorCode::UnreleasedInstanceId && epoch == JOIN_EPOCH => {}
                Err(e) => panic!("client {index}: unexpected {e}"),
            }
            commands
        }

        fn member_of(&self, index: usize) -> Option<&Member> {
            let client = &self.clients[index];
            self.h.state.groups.get(GROUP)?.members.get(&client.member_id).filter(|_| !client.member_id.is_empty())
        }

        fn run(&mut self, step: &Step) {
            match *step {
                Step::Join { client, topics, range } => {
                    let c = &mut self.clients[client];
                    if c.running && c.epoch != JOIN_EPOCH {
                        return;
                    }
                    if !c.running {
                        // A new process: no member id until its first answer.
                        *c = Client::default();
                        c.running = true;
                        c.topics = topic_set(topics);
                        c.assignor = range.then(|| assignor::RANGE.to_string());
                    }
                    self.heartbeat(client, JOIN_EPOCH, false);
                }
                Step::Beat { client } | Step::SlowBeat { client } | Step::LostBeat { client } => {
                    let c = &self.clients[client];
                    if !c.running || c.epoch == JOIN_EPOCH {
                        return;
                    }
                    if !matches!(step, Step::SlowBeat { .. }) {
                        self.give_up_revoked(client);
                    }
                    let epoch = self.clients[client].epoch;
                    self.heartbeat(client, epoch, matches!(step, Step::LostBeat { .. }));
                }
                Step::FutureBeat { client } => {
                    let c = &self.clients[client];
                    if !c.running || c.epoch == JOIN_EPOCH || c.zombie {
                        return;
                    }
                    let server_epoch = self.member_of(client).map(|m| m.member_epoch).unwrap_or(0);
                    self.heartbeat(client, server_epoch + 1, false);
                    assert_eq!(self.clients[client].epoch, JOIN_EPOCH, "a future epoch is fenced");
                }
                Step::Leave { client } | Step::StaticLeave { client } => {
                    let c = &self.clients[client];
                    if !c.running || c.member_id.is_empty() || c.zombie {
                        return;
                    }
                    let is_static = Client::instance_id(client).is_some();
                    let epoch = if matches!(step, Step::StaticLeave { .. }) && is_static {
                        STATIC_LEAVE_EPOCH
                    } else {
                        LEAVE_EPOCH
                    };
                    let request = self.request(client, epoch);
                    // Leaving is the last thing the process does.
                    self.clients[client].stop();
                    self.h.beat(&request).expect("leave");
                }
                Step::Crash { client } => self.clients[client].stop(),
                Step::Expire { client } => {
                    let member_id = match self.member_of(client) {
                        Some(member) => member.member_id.clone(),
                        None => return,
                    };
                    self.h.expire(&member_id);
                    let c = &mut self.clients[client];
                    c.zombie = c.running;
                }
                Step::Subscribe { client, topics } => {
                    let c = &mut self.clients[client];
                    if !c.running || c.epoch == JOIN_EPOCH {
                        return;
                    }
                    c.topics = topic_set(topics);
                    self.give_up_revoked(client);
                    let epoch = self.clients[client].epoch;
                    self.heartbeat(client, epoch, false);
                }
                Step::Resize { topic, partitions } => {
                    if partitions == 0 {
                        self.h.topics.remove(TOPICS[topic]);
                    } else {
                        self.h.topics.insert(TOPICS[topic].to_string(), partitions);
                    }
                    if self.h.state.groups.contains_key(GROUP) {
                        let commands = plan_group_refresh(&self.h.state, GROUP, &self.h.topics).unwrap();
                        self.h.apply_all(&commands).unwrap();
                    }
                }
                Step::Commit { client, pick, delta } => self.commit(client, pick, delta),
            }
        }

        fn commit(&mut self, index: usize, pick: u8, delta: i8) {
            let client = self.clients[index].clone();
            if !client.running || client.member_id.is_empty() {
                return;
            }
            // Half the time a partition it owns, else any.
            let owned: Vec<&(String, u32)> = client.owned.keys().collect();
            let (topic, partition) = match owned.get((pick as usize / 2) % owned.len().max(1)) {
                Some((topic, partition)) if pick.is_multiple_of(2) => (topic.as_str(), *partition),
                _ => (TOPICS[pick as usize % TOPICS.len()], (pick as u32 / 3) % 6),
            };
            let epoch = client.epoch + delta as i32;
            // The rule, from the state before the commit.
            let expected = match self.h.state.groups.get(GROUP).and_then(|g| g.members.get(&client.member_id)) {
                None => Err(ErrorCode::UnknownMemberId),
                Some(member) if epoch > member.member_epoch => Err(ErrorCode::FencedMemberEpoch),
                Some(member) => match self.h.group().owner(topic, partition) {
                    Some(o) if o.member_id == member.member_id && o.assignment_epoch <= epoch => Ok(()),
                    _ => Err(ErrorCode::StaleMemberEpoch),
                },
            };
            let before = self.h.state.clone();
            let response = self.h.commit(&client.member_id, epoch, &[(topic, partition, 7)]);
            let got = match &response {
                GroupResponse::OffsetsCommitted { partitions } => match &partitions[0].error {
                    None => Ok(()),
                    Some(e) => Err(e.code),
                },
                GroupResponse::Error { code, .. } => Err(*code),
                other => panic!("{other:?}"),
            };
            assert_eq!(got, expected, "commit of {topic}-{partition} at {epoch} by client {index}");
            if got.is_err() {
                assert_eq!(self.h.state, before, "a refused commit changed the state");
            }
            if client.zombie {
                assert!(got.is_err(), "an expired member's commit was accepted");
            }
            let believed = client.owned.get(&(topic.to_string(), partition));
            if let Some(granted_at) = believed {
                if !client.zombie && delta == 0 {
                    assert_eq!(got, Ok(()), "the owner's commit at its epoch (given at {granted_at}) was refused");
                }
            }
            let someone_else = self.clients.iter().enumerate().any(|(i, c)| {
                i != index && c.running && !c.zombie && c.owned.contains_key(&(topic.to_string(), partition))
            });
            if someone_else {
                assert!(got.is_err(), "a commit of a partition another live member owns was accepted");
            }
        }

        /// What must hold after every step.
        fn check(&self) {
            self.h.check();
            let mut believed: BTreeMap<&(String, u32), usize> = BTreeMap::new();
            for (index, client) in self.clients.iter().enumerate() {
                if !client.running || client.zombie {
                    continue;
                }
                for partition in client.owned.keys() {
                    if let Some(other) = believed.insert(partition, index) {
                        panic!("clients {other} and {index} both own {partition:?}");
                    }
                }
                if client.owned.is_empty() {
                    continue;
                }
                // A client owns nothing its member does not own on the server.
                let member = self.member_of(index).expect("a client that owns partitions has a member");
                assert!(client.owned_set().is_subset(&member.owned()), "client {index} owns more than its member");
            }
        }

        /// Stops the faults: the timers of members no running client holds
        /// fire (crashed, away, replaced or expired ones), and every running
        /// client heartbeats, giving revoked partitions up at once and
        /// rejoining when told to, until a whole round writes nothing.
        fn settle(&mut self) {
            let held: BTreeSet<String> = self
                .clients
                .iter()
                .filter(|c| c.running && !c.zombie && !c.member_id.is_empty())
                .map(|c| c.member_id.clone())
                .collect();
            let orphans: Vec<String> = self
                .h
                .state
                .groups
                .get(GROUP)
                .map(|g| g.members.keys().filter(|m| !held.contains(*m)).cloned().collect())
                .unwrap_or_default();
            for member_id in orphans {
                self.h.expire(&member_id);
            }
            for _ in 0..30 {
                // Settled when a round writes nothing and tells no client
                // anything new (an answer it has yet to act on).
                let mut quiet = true;
                for index in 0..CLIENTS {
                    if !self.clients[index].running {
                        continue;
                    }
                    self.give_up_revoked(index);
                    let before = self.clients[index].clone();
                    let writes = self.heartbeat(index, before.epoch, false);
                    let after = &self.clients[index];
                    quiet &= writes == 0
                        && after.epoch == before.epoch
                        && after.epoch != JOIN_EPOCH
                        && after.assignment == before.assignment;
                    self.check();
                }
                if quiet {
                    return;
                }
            }
            panic!("no convergence: {:#?}", self.h.state.groups.get(GROUP));
        }

        /// What must hold once the group has settled.
        fn check_converged(&self) {
            let Some(group) = self.h.state.groups.get(GROUP) else { return };
            let live: Vec<usize> = (0..CLIENTS).filter(|i| self.clients[*i].running).collect();
            assert_eq!(group.members.len(), live.len(), "one member per running client");
            if live.is_empty() {
                assert_eq!(group.state, GroupState::Empty);
                assert!(group.owners.is_empty());
                return;
            }
            assert_eq!(group.state, GroupState::Stable, "{group:#?}");
            for index in &live {
                let member = self.member_of(*index).expect("a running client has a member");
                assert_eq!(member.member_epoch, group.target.epoch);
                assert_eq!(&member.assigned, group.target_of(&member.member_id), "assignment equals the target");
                assert!(member.pending_revocation.is_empty());
                assert_eq!(self.clients[*index].owned_set(), member.assigned, "the client owns its assignment");
            }
            // Every partition of every subscribed topic has exactly one
            // owner, which subscribes to it.
            for (topic, count) in &self.h.topics {
                let subscribers: Vec<&Member> =
                    group.members.values().filter(|m| m.subscribed_topics.contains(topic)).collect();
                for partition in 0..*count {
                    let owner = group.owner(topic, partition);
                    if subscribers.is_empty() {
                        assert!(owner.is_none());
                        continue;
                    }
                    let owner = owner.unwrap_or_else(|| panic!("{topic}-{partition} has no owner"));
                    assert!(subscribers.iter().any(|m| m.member_id == owner.member_id));
                }
            }
            if group.assignor() == assignor::UNIFORM {
                // Balanced: no member has two more than one that could take one.
                for a in group.members.values() {
                    for b in group.members.values() {
                        if a.assigned.len() > b.assigned.len() + 1 {
                            let movable = a.assigned.iter().find(|(t, _)| b.subscribed_topics.contains(*t));
                            assert!(movable.is_none(), "unbalanced: {} vs {}", a.member_id, b.member_id);
                        }
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        #[test]
        fn random_members_never_share_a_partition_and_converge(
            initial in prop::collection::vec(0u32..7, TOPICS.len()),
            steps in prop::collection::vec(step(), 1..120),
        ) {
            let mut world = World::new(&initial);
            for step in &steps {
                world.run(step);
                world.check();
            }
            world.settle();
            world.check_converged();
        }

        #[test]
        fn a_join_moves_only_the_partitions_balance_requires(members in 1usize..6, partitions in 0u32..30) {
            let mut h = Harness::new(&[("a", partitions)]);
            let mut consumers: Vec<Consumer> = (0..members).map(|_| Consumer::join(&mut h, &["a"])).collect();
            settle(&mut h, &mut consumers.iter_mut().collect::<Vec<_>>());
            let before: BTreeMap<u32, String> =
                (0..partitions).map(|p| (p, h.group().owner("a", p).unwrap().member_id.clone())).collect();
            let newcomer = Consumer::join(&mut h, &["a"]);
            consumers.push(newcomer);
            settle(&mut h, &mut consumers.iter_mut().collect::<Vec<_>>());
            let newcomer = &consumers[members].member_id;
            let mut moved = 0;
            for (partition, old) in &before {
                let now = &h.group().owner("a", *partition).unwrap().member_id;
                if now != old {
                    moved += 1;
                    prop_assert_eq!(now, newcomer, "a partition moved between old members");
                }
            }
            let total = partitions as usize;
            let (floor, ceil) = (total / (members + 1), total.div_ceil(members + 1));
            let excess: usize = (0..members)
                .map(|i| before.values().filter(|m| **m == consumers[i].member_id).count().saturating_sub(ceil))
                .sum();
            prop_assert_eq!(moved, floor.max(excess), "moves beyond what balance requires");
            prop_assert_eq!(h.group().members[newcomer].assigned.len(), moved);
        }
    }
}

// Apply stands on its own: every replica applies what the log holds, so
// arbitrary commands, however ill-formed or stale, must never panic, break
// an invariant, or change anything when refused.

mod arbitrary_commands {
    use proptest::prelude::*;

    use super::*;

    const GROUPS: [&str; 3] = ["g", "h", ""];
    const MEMBERS: [&str; 5] = ["m0", "m1", "m2", "m3", ""];
    const NAMES: [&str; 3] = ["a", "b", "bad/"];

    fn pick<T: Copy + std::fmt::Debug + 'static>(items: &'static [T]) -> impl Strategy<Value = T> + Clone {
        prop::sample::select(items)
    }

    fn assignment() -> impl Strategy<Value = Assignment> {
        prop::collection::vec((pick(&NAMES), 0u32..4), 0..4).prop_map(|v| v.into_iter().collect())
    }

    fn epoch() -> impl Strategy<Value = i32> {
        prop_oneof![-3i32..8, any::<i32>()]
    }

    fn time() -> impl Strategy<Value = u64> {
        prop_oneof![0u64..100, Just(u64::MAX), any::<u64>()]
    }

    fn topics() -> impl Strategy<Value = BTreeSet<String>> {
        prop::collection::btree_set(pick(&NAMES).prop_map(String::from), 0..3)
    }

    fn command() -> impl Strategy<Value = GroupCommand> {
        let group = pick(&GROUPS).prop_map(String::from);
        let member = pick(&MEMBERS).prop_map(String::from);
        prop_oneof![
            (group.clone(), time(), time()).prop_map(|(group_id, session_timeout_ms, heartbeat_interval_ms)| {
                GroupCommand::ConfigureGroup { group_id, session_timeout_ms, heartbeat_interval_ms }
            }),
            (group.clone(), member.clone(), prop::option::of(pick(&["i1", "i2"])), topics(), any::<bool>(), time())
                .prop_map(|(group_id, member_id, instance, subscribed_topics, range, rebalance_timeout_ms)| {
                    GroupCommand::JoinMember {
                        group_id,
                        member: JoinSpec {
                            member_id,
                            instance_id: instance.map(String::from),
                            subscribed_topics,
                            assignor: range.then(|| assignor::RANGE.to_string()),
                            client_id: String::new(),
                            client_host: String::new(),
                            rebalance_timeout_ms,
                        },
                    }
                }),
            (group.clone(), member.clone(), topics()).prop_map(|(group_id, member_id, subscribed_topics)| {
                GroupCommand::UpdateSubscription { group_id, member_id, subscribed_topics, assignor: None }
            }),
            (group.clone(), member.clone(), time())
                .prop_map(|(group_id, member_id, now_ms)| GroupCommand::LeaveMember { group_id, member_id, now_ms }),
            (group.clone(), member.clone())
                .prop_map(|(group_id, member_id)| GroupCommand::StaticLeave { group_id, member_id }),
            (group.clone(), member.clone(), time())
                .prop_map(|(group_id, member_id, now_ms)| GroupCommand::ExpireMember { group_id, member_id, now_ms }),
            (group.clone(), prop::collection::btree_map(pick(&NAMES).prop_map(String::from), 0u32..5, 0..3))
                .prop_map(|(group_id, topics)| GroupCommand::RefreshTopics { group_id, topics }),
            (group.clone(), epoch(), prop::collection::btree_map(member.clone(), assignment(), 0..3)).prop_map(
                |(group_id, group_epoch, members)| GroupCommand::SetTargetAssignment { group_id, group_epoch, members }
            ),
            (group.clone(), member.clone(), epoch(), epoch(), assignment(), assignment(), assignment()).prop_map(
                |(group_id, member_id, member_epoch, new_member_epoch, released, revoked, granted)| {
                    GroupCommand::ReconcileMember {
                        group_id,
                        member_id,
                        member_epoch,
                        new_member_epoch,
                        released,
                        revoked,
                        granted,
                    }
                }
            ),
            (group.clone(), member, epoch(), prop::collection::vec((pick(&NAMES), 0u32..4, 0u64..9), 0..4), time())
                .prop_map(|(group_id, member_id, member_epoch, offsets, commit_ms)| {
                    let offsets = offsets
                        .into_iter()
                        .map(|(t, p, o)| OffsetCommit {
                            topic: t.into(),
                            partition: p,
                            offset: o,
                            metadata: "x".into(),
                        })
                        .collect();
                    GroupCommand::CommitOffsets { group_id, member_id, member_epoch, offsets, commit_ms }
                }),
            (group.clone(), prop::collection::vec((pick(&NAMES), 0u32..4, 0u64..9), 0..3), time()).prop_map(
                |(group_id, offsets, now_ms)| GroupCommand::ResetOffsets {
                    group_id,
                    offsets: offsets.into_iter().map(|(t, p, o)| (t.to_string(), p, o)).collect(),
                    now_ms,
                }
            ),
            group.clone().prop_map(|group_id| GroupCommand::DeleteGroup { group_id }),
            (group, time(), time()).prop_map(|(group_id, now_ms, retention_ms)| GroupCommand::ExpireOffsets {
                group_id,
                now_ms,
                retention_ms
            }),
        ]
    }

    #[derive(Clone, Debug)]
    enum Action {
        Raw(GroupCommand),
        /// A heartbeat through the planner, to reach states raw commands
        /// rarely do. `epoch` None: the member's epoch in the state (0 if
        /// absent); `owned` None: the member's assignment in the state.
        Beat {
            member: usize,
            epoch: Option<i32>,
            topics: BTreeSet<String>,
            owned: Option<Assignment>,
        },
        /// A target with arbitrary partitions, at the group's epoch.
        Target {
            members: BTreeMap<String, Assignment>,
        },
        /// A reconciliation with arbitrary partitions, from the member's
        /// epoch to the target's (or staying).
        Reconcile {
            member: usize,
            advance: bool,
            released: Assignment,
            revoked: Assignment,
            granted: Assignment,
        },
    }

    fn action() -> impl Strategy<Value = Action> {
        prop_oneof![
            3 => command().prop_map(Action::Raw),
            4 => (0..MEMBERS.len() - 1, prop::option::of(-2i32..8), topics(), prop::option::of(assignment()))
                .prop_map(|(member, epoch, topics, owned)| Action::Beat { member, epoch, topics, owned }),
            1 => prop::collection::btree_map(pick(&MEMBERS).prop_map(String::from), assignment(), 0..3)
                .prop_map(|members| Action::Target { members }),
            1 => (0..MEMBERS.len() - 1, any::<bool>(), assignment(), assignment(), assignment()).prop_map(
                |(member, advance, released, revoked, granted)| Action::Reconcile {
                    member,
                    advance,
                    released,
                    revoked,
                    granted,
                }
            ),
        ]
    }

    fn apply_checked(h: &mut Harness, command: GroupCommand) -> Result<(), TestCaseError> {
        let before = h.state.clone();
        if let GroupResponse::Error { .. } = h.state.apply(command) {
            prop_assert_eq!(&h.state, &before);
        }
        h.check();
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_commands_never_panic_and_refusals_change_nothing(
            actions in prop::collection::vec(action(), 1..60),
        ) {
            let mut h = Harness::new(&[("a", 3), ("b", 2)]);
            for action in actions {
                match action {
                    Action::Raw(command) => apply_checked(&mut h, command)?,
                    Action::Target { members } => {
                        let group_epoch = h.state.groups.get(GROUP).map_or(0, |g| g.group_epoch);
                        let command = GroupCommand::SetTargetAssignment { group_id: GROUP.into(), group_epoch, members };
                        apply_checked(&mut h, command)?;
                    }
                    Action::Reconcile { member, advance, released, revoked, granted } => {
                        let Some(group) = h.state.groups.get(GROUP) else { continue };
                        let member_epoch = group.members.get(MEMBERS[member]).map_or(0, |m| m.member_epoch);
                        let new_member_epoch = if advance { group.target.epoch } else { member_epoch };
                        let command = GroupCommand::ReconcileMember {
                            group_id: GROUP.into(),
                            member_id: MEMBERS[member].into(),
                            member_epoch,
                            new_member_epoch,
                            released,
                            revoked,
                            granted,
                        };
                        apply_checked(&mut h, command)?;
                    }
                    Action::Beat { member, epoch, topics, owned } => {
                        let current = h.state.groups.get(GROUP).and_then(|g| g.members.get(MEMBERS[member]));
                        let epoch = epoch.unwrap_or(current.map_or(0, |m| m.member_epoch));
                        let owned = owned.or_else(|| current.map(|m| m.assigned.clone()));
                        let request = HeartbeatRequest {
                            group_id: GROUP.into(),
                            member_id: MEMBERS[member].into(),
                            member_epoch: epoch,
                            instance_id: (member % 2 == 1).then(|| format!("i{member}")),
                            rebalance_timeout_ms: 0,
                            subscribed_topics: Some(topics),
                            assignor: None,
                            owned_partitions: owned,
                            client_id: String::new(),
                            client_host: String::new(),
                        };
                        // Errors are fine; panics and broken invariants are not.
                        let _ = h.heartbeat(&request);
                    }
                }
            }
        }
    }
}
