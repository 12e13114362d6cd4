//! The consumer group coordinator: groups, their members, assignments and
//! committed offsets, as a deterministic state machine the metadata group
//! applies, plus the pure planner the metadata leader runs to turn a
//! heartbeat into the commands it proposes.
//!
//! # Protocol (after Kafka's KIP-848 and KIP-1251)
//!
//! A member speaks one RPC, the heartbeat. It sends its member id, its
//! member epoch (0 to join, -1 to leave, -2 for a static member leaving for
//! now), its subscription when it changes and the partitions it owns when
//! they change. The answer carries its member id, its member epoch, the
//! heartbeat interval and the partitions it may own now.
//!
//! Three epochs order everything:
//! - the **group epoch** goes up when membership, a subscription, the
//!   assignor a member names or the subscribed topics' partition counts
//!   change;
//! - the **target assignment** is computed by an assignor for one group
//!   epoch;
//! - each **member epoch** moves to the target epoch on its own, at the
//!   member's heartbeats, with no group-wide barrier.
//!
//! Reconciliation (see [`reconcile()`]): keep = current ∩ target; revoke =
//! current − target; assign = target − current − partitions another member
//! still owns. While a member has partitions to revoke it stays at its epoch
//! and is told its assignment without them; once a heartbeat no longer lists
//! them they are released, and the member moves to the target epoch with
//! the free partitions of its target. A partition another member still owns
//! is withheld until that member releases it.
//!
//! Fencing: a heartbeat at an epoch the member does not have is refused
//! with FENCED_MEMBER_EPOCH, except the member's previous epoch when it owns
//! only partitions it still has (the answer that moved it on was lost). A
//! fenced member drops every partition and rejoins at epoch 0, with its id
//! or without: a rejoin releases what it owned and bumps the group epoch,
//! so nothing its previous incarnation commits is accepted.
//!
//! Static membership (KIP-345): a member with an instance id that leaves
//! with epoch -2 keeps its place, epoch and partitions, which no one else
//! gets, until its session timeout expires it. A member that joins with
//! that instance id in the meantime takes its place with no rebalance; a
//! second live member with the id is refused (UNRELEASED_INSTANCE_ID).
//!
//! Only transitions are Raft entries: joins, leaves, expiries, subscription
//! and topic changes, new targets and reconciliation steps. A heartbeat that
//! changes nothing plans no command. Every transition is applied before the
//! heartbeat is answered: the answer is read from the state after apply.
//! Liveness (session and rebalance timers) lives in the metadata leader's
//! memory and is re-armed with the full timeout after a leader change; the
//! leader proposes `ExpireMember` when one fires (a rebalance timer runs
//! while a member has partitions pending revocation).
//!
//! Offset commits are fenced per partition (KIP-1251): a member's commit of
//! a partition is accepted when it owns the partition and the partition's
//! assignment epoch ≤ the commit's member epoch ≤ the member's epoch, so a
//! commit sent before an epoch bump still lands and a zombie's does not. A
//! group without members accepts standalone commits (empty member id, epoch
//! -1), as Kafka does for admin tools and manually assigned consumers. The
//! offsets of a group without members expire `offsets.retention` after
//! their commit or after the last member left, whichever is later; a group
//! without members or offsets is then deleted.
//!
//! # Division of work
//!
//! - [`planner`] (leader only, pure): from the state, a heartbeat, the
//!   topics' partition counts and a fresh member id, the commands to
//!   propose; and, after they are applied, the answer read from the state.
//!   It runs the assignor and proposes the result as data.
//! - [`GroupsState::apply`] (every replica): validates each command again
//!   against the state it meets, applies it or refuses it with a typed
//!   error and no change. It never runs an assignor, draws a random number
//!   or reads a clock: member ids and times come in the commands.
//!
//! Invariant: a partition has at most one owner: `owners` is exactly the
//! union of every member's `assigned` and `pending_revocation`, which are
//! pairwise disjoint. A partition is granted only when no one owns it.
//! Invariant: a member never moves past its epoch while it has partitions
//! pending revocation, and member epoch ≤ target epoch ≤ group epoch.
//! Invariant: a partition's assignment epoch is the member epoch at which it
//! was granted and is ≤ its owner's epoch.
//! Invariant: every iteration that reaches state goes over ordered maps, so
//! replicas applying the same commands reach the same state.
//! [`ConsumerGroup::check_invariants`] checks all of these; apply checks
//! them after every command in debug builds.
//!
//! Boundary: plain Rust: no I/O, no clock, no randomness, no async.

mod assignment;
pub mod assignor;
pub mod planner;
mod reconcile;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use strata_core::limits::{
    DEFAULT_GROUP_HEARTBEAT_INTERVAL_MS, DEFAULT_GROUP_SESSION_TIMEOUT_MS, MAX_COMMITTED_PARTITIONS_PER_GROUP,
    MAX_COMMIT_METADATA_LEN, MAX_GROUPS, MAX_GROUP_CLIENT_STRING_LEN, MAX_GROUP_HEARTBEAT_INTERVAL_MS,
    MAX_GROUP_ID_LEN, MAX_GROUP_MEMBERS, MAX_GROUP_REBALANCE_TIMEOUT_MS, MAX_GROUP_SESSION_TIMEOUT_MS,
    MAX_MEMBER_ID_LEN, MAX_OFFSETS_PER_COMMIT, MAX_PARTITIONS_PER_TOPIC, MAX_SUBSCRIBED_TOPICS,
    MIN_GROUP_HEARTBEAT_INTERVAL_MS, MIN_GROUP_SESSION_TIMEOUT_MS,
};
use strata_core::topic::validate_topic_name;
use strata_core::ErrorCode;

pub use assignment::Assignment;
pub use planner::{
    member_answer, plan_group_refresh, plan_heartbeat, plan_member_expiry, plan_offsets_expiry, HeartbeatAnswer,
    HeartbeatRequest, Plan, TopicView,
};
pub use reconcile::{reconcile, Reconciliation};

/// The member epoch of a join.
pub const JOIN_EPOCH: i32 = 0;
/// The member epoch of a leave.
pub const LEAVE_EPOCH: i32 = -1;
/// The member epoch of a static member leaving for now: it keeps its
/// assignment until its session times out, for a restart to take back.
pub const STATIC_LEAVE_EPOCH: i32 = -2;
/// The member epoch of a standalone commit (with an empty member id).
pub const STANDALONE_COMMIT_EPOCH: i32 = -1;

/// A refusal: a stable code and a message that says what to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupError {
    pub code: ErrorCode,
    pub message: String,
}

impl GroupError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> GroupError {
        GroupError { code, message: message.into() }
    }
}

impl std::fmt::Display for GroupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.name(), self.message)
    }
}

impl std::error::Error for GroupError {}

/// A group's state, as KIP-848 names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupState {
    /// No members (it may hold committed offsets).
    Empty,
    /// The group epoch moved past the target's: a new target is due.
    Assigning,
    /// The target is current; some members have not reached it yet.
    Reconciling,
    /// Every member owns exactly its target, at the target epoch.
    Stable,
    /// The group does not exist (deleted, expired or never created).
    Dead,
}

/// Where a member is on its way to its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberState {
    /// Nothing to revoke and nothing withheld at its epoch.
    Stable,
    /// It must give up partitions (still its own) before its epoch moves.
    UnrevokedPartitions,
    /// At the target epoch, waiting for partitions another member holds.
    UnreleasedPartitions,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub member_id: String,
    /// Static membership: a restart with the same instance id within the
    /// session timeout takes the assignment back with no rebalance.
    pub instance_id: Option<String>,
    /// STATIC_LEAVE_EPOCH while a static member is away.
    pub member_epoch: i32,
    /// The epoch before the last change. A heartbeat at this epoch is
    /// accepted when the answer that moved it on may have been lost; while
    /// a static member is away it holds the epoch it left at.
    pub previous_member_epoch: i32,
    pub state: MemberState,
    pub subscribed_topics: BTreeSet<String>,
    /// The assignor the member named; None: the server's default.
    pub assignor: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// How long the member may take to give up revoked partitions before
    /// the leader removes it.
    pub rebalance_timeout_ms: u64,
    /// The session timeout the leader arms for this member: the group's at
    /// the member's last join (a group change applies from the next join).
    pub session_timeout_ms: u64,
    /// Partitions the member owns and keeps: what its answers list.
    pub assigned: Assignment,
    /// Partitions the member still owns but must give up.
    pub pending_revocation: Assignment,
}

impl Member {
    /// The member's epoch, also while a static member is away.
    pub fn effective_epoch(&self) -> i32 {
        if self.member_epoch == STATIC_LEAVE_EPOCH {
            self.previous_member_epoch
        } else {
            self.member_epoch
        }
    }

    /// Everything it owns: `assigned` and `pending_revocation`.
    pub fn owned(&self) -> Assignment {
        self.assigned.union(&self.pending_revocation)
    }

    pub fn is_away(&self) -> bool {
        self.member_epoch == STATIC_LEAVE_EPOCH
    }
}

/// Who owns a partition, and since which epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionOwner {
    pub member_id: String,
    /// The member epoch at which the partition was granted to the member;
    /// commits at older epochs are refused (KIP-1251).
    pub assignment_epoch: i32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetAssignment {
    /// The group epoch it was computed for.
    pub epoch: i32,
    /// Per member; a member without an entry gets nothing.
    pub members: BTreeMap<String, Assignment>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    /// The next offset to read.
    pub offset: u64,
    pub metadata: String,
    /// Leader's clock at the commit.
    pub commit_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerGroup {
    pub group_id: String,
    pub group_epoch: i32,
    /// Derived from the rest after every applied command.
    pub state: GroupState,
    pub session_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub members: BTreeMap<String, Member>,
    pub target: TargetAssignment,
    /// topic → partition → owner, for every partition some member owns.
    pub owners: BTreeMap<String, BTreeMap<u32, PartitionOwner>>,
    /// topic → how many members subscribe to it (topics with at least one).
    pub subscriptions: BTreeMap<String, u32>,
    /// Partition counts of the subscribed topics that exist, as the leader
    /// last saw them; the target is computed from these.
    pub topics: BTreeMap<String, u32>,
    /// topic → partition → committed offset.
    pub offsets: BTreeMap<String, BTreeMap<u32, CommittedOffset>>,
    /// When the last member left; offsets expire a retention after this or
    /// after their commit, whichever is later.
    pub empty_since_ms: Option<u64>,
}

/// Every consumer group of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupsState {
    pub groups: BTreeMap<String, ConsumerGroup>,
}

/// A join's member data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinSpec {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub subscribed_topics: BTreeSet<String>,
    pub assignor: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetCommit {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub metadata: String,
}

/// One partition's result of a commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitOutcome {
    pub topic: String,
    pub partition: u32,
    /// None: stored.
    pub error: Option<GroupError>,
}

/// A change to the groups, proposed by the metadata leader. Every field is
/// data: member ids, times and assignments are decided by the proposer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupCommand {
    /// Sets a group's session timeout and heartbeat interval, creating the
    /// group when it does not exist.
    ConfigureGroup { group_id: String, session_timeout_ms: u64, heartbeat_interval_ms: u64 },
    /// A member joins, rejoins (a known member id at epoch 0: it dropped
    /// everything), or, with the instance id of a static member that is
    /// away, takes that member's place and assignment.
    JoinMember { group_id: String, member: JoinSpec },
    /// A member changes its subscription or the assignor it names.
    UpdateSubscription {
        group_id: String,
        member_id: String,
        subscribed_topics: BTreeSet<String>,
        assignor: Option<String>,
    },
    /// A member leaves (epoch -1): its partitions are free at once.
    LeaveMember { group_id: String, member_id: String, now_ms: u64 },
    /// A static member leaves for now (epoch -2): it keeps its assignment
    /// until the leader expires it.
    StaticLeave { group_id: String, member_id: String },
    /// The leader's session (or rebalance) timer fired for the member.
    ExpireMember { group_id: String, member_id: String, now_ms: u64 },
    /// The subscribed topics' partition counts as the leader sees them now
    /// (absent: the topic does not exist).
    RefreshTopics { group_id: String, topics: BTreeMap<String, u32> },
    /// The assignor's result for `group_epoch`, computed by the leader.
    SetTargetAssignment { group_id: String, group_epoch: i32, members: BTreeMap<String, Assignment> },
    /// One reconciliation step of a member (see [`reconcile()`]), from
    /// `member_epoch`: `released` (pending partitions its heartbeat no longer
    /// lists) are freed, `revoked` move from assigned to pending, `granted`
    /// (free partitions of its target) become its own at the new epoch.
    ReconcileMember {
        group_id: String,
        member_id: String,
        member_epoch: i32,
        new_member_epoch: i32,
        released: Assignment,
        revoked: Assignment,
        granted: Assignment,
    },
    /// Committed offsets, many partitions at once. An empty member id with
    /// epoch -1 is a standalone commit, for groups without members.
    CommitOffsets { group_id: String, member_id: String, member_epoch: i32, offsets: Vec<OffsetCommit>, commit_ms: u64 },
    /// An operator sets offsets (reset-offsets); only without members.
    ResetOffsets { group_id: String, offsets: Vec<(String, u32, u64)>, now_ms: u64 },
    /// Removes a group without members, offsets and all.
    DeleteGroup { group_id: String },
    /// Drops the offsets of a group without members that are older than
    /// `retention_ms` at `now_ms`; a group left without offsets is deleted.
    ExpireOffsets { group_id: String, now_ms: u64, retention_ms: u64 },
}

impl GroupCommand {
    pub fn group_id(&self) -> &str {
        match self {
            GroupCommand::ConfigureGroup { group_id, .. }
            | GroupCommand::JoinMember { group_id, .. }
            | GroupCommand::UpdateSubscription { group_id, .. }
            | GroupCommand::LeaveMember { group_id, .. }
            | GroupCommand::StaticLeave { group_id, .. }
            | GroupCommand::ExpireMember { group_id, .. }
            | GroupCommand::RefreshTopics { group_id, .. }
            | GroupCommand::SetTargetAssignment { group_id, .. }
            | GroupCommand::ReconcileMember { group_id, .. }
            | GroupCommand::CommitOffsets { group_id, .. }
            | GroupCommand::ResetOffsets { group_id, .. }
            | GroupCommand::DeleteGroup { group_id }
            | GroupCommand::ExpireOffsets { group_id, .. } => group_id,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupResponse {
    Configured,
    Joined {
        member_id: String,
        group_epoch: i32,
    },
    SubscriptionUpdated {
        group_epoch: i32,
    },
    Left {
        member_id: String,
        group_epoch: i32,
    },
    StaticLeft {
        member_id: String,
    },
    Expired {
        member_id: String,
        group_epoch: i32,
    },
    TopicsRefreshed {
        group_epoch: i32,
    },
    TargetSet {
        group_epoch: i32,
    },
    Reconciled {
        member_id: String,
        member_epoch: i32,
        state: MemberState,
    },
    /// Per partition, in the command's order.
    OffsetsCommitted {
        partitions: Vec<CommitOutcome>,
    },
    OffsetsReset {
        partitions: usize,
    },
    GroupDeleted {
        offsets: usize,
    },
    OffsetsExpired {
        expired: usize,
        group_deleted: bool,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
}

fn invalid(message: impl Into<String>) -> GroupError {
    GroupError::new(ErrorCode::InvalidRequest, message)
}

/// A leader-made command that does not fit the state it meets: a plan made
/// stale by another change, or a bug. The state is left as it was.
fn stale_plan(message: impl Into<String>) -> GroupError {
    GroupError::new(ErrorCode::Internal, message)
}

/// Checks a group id: 1..=MAX_GROUP_ID_LEN bytes, no control characters.
pub fn validate_group_id(group_id: &str) -> Result<(), GroupError> {
    if group_id.is_empty() || group_id.len() > MAX_GROUP_ID_LEN {
        return Err(GroupError::new(
            ErrorCode::InvalidGroupId,
            format!("group id has {} bytes; use 1 to {MAX_GROUP_ID_LEN}", group_id.len()),
        ));
    }
    if group_id.chars().any(char::is_control) {
        return Err(GroupError::new(ErrorCode::InvalidGroupId, "group id contains a control character"));
    }
    Ok(())
}

pub(crate) fn validate_member_id(member_id: &str) -> Result<(), GroupError> {
    if member_id.is_empty() || member_id.len() > MAX_MEMBER_ID_LEN || member_id.chars().any(char::is_control) {
        return Err(invalid(format!(
            "member id '{}' is not valid: use 1 to {MAX_MEMBER_ID_LEN} bytes without control characters",
            member_id.escape_debug()
        )));
    }
    Ok(())
}

fn validate_client_string(what: &str, value: &str, may_be_empty: bool) -> Result<(), GroupError> {
    if (value.is_empty() && !may_be_empty) || value.len() > MAX_GROUP_CLIENT_STRING_LEN {
        let least = if may_be_empty { 0 } else { 1 };
        return Err(invalid(format!("{what} has {} bytes; use {least} to {MAX_GROUP_CLIENT_STRING_LEN}", value.len())));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(format!("{what} contains a control character")));
    }
    Ok(())
}

pub(crate) fn validate_subscription(topics: &BTreeSet<String>) -> Result<(), GroupError> {
    if topics.len() > MAX_SUBSCRIBED_TOPICS {
        return Err(invalid(format!(
            "the subscription names {} topics; the limit is {MAX_SUBSCRIBED_TOPICS}",
            topics.len()
        )));
    }
    for topic in topics {
        validate_topic_name(topic)
            .map_err(|problem| GroupError::new(ErrorCode::InvalidTopicName, problem.to_string()))?;
    }
    Ok(())
}

/// Checks a group's timeouts against their bounds and each other.
pub fn validate_timeouts(session_timeout_ms: u64, heartbeat_interval_ms: u64) -> Result<(), GroupError> {
    if !(MIN_GROUP_SESSION_TIMEOUT_MS..=MAX_GROUP_SESSION_TIMEOUT_MS).contains(&session_timeout_ms) {
        return Err(invalid(format!(
            "session timeout {session_timeout_ms} ms is out of bounds; use {MIN_GROUP_SESSION_TIMEOUT_MS} to \
             {MAX_GROUP_SESSION_TIMEOUT_MS} ms"
        )));
    }
    if !(MIN_GROUP_HEARTBEAT_INTERVAL_MS..=MAX_GROUP_HEARTBEAT_INTERVAL_MS).contains(&heartbeat_interval_ms) {
        return Err(invalid(format!(
            "heartbeat interval {heartbeat_interval_ms} ms is out of bounds; use {MIN_GROUP_HEARTBEAT_INTERVAL_MS} \
             to {MAX_GROUP_HEARTBEAT_INTERVAL_MS} ms"
        )));
    }
    if heartbeat_interval_ms >= session_timeout_ms {
        return Err(invalid(format!(
            "heartbeat interval {heartbeat_interval_ms} ms must be shorter than the session timeout \
             {session_timeout_ms} ms, or every member would expire between heartbeats"
        )));
    }
    Ok(())
}

fn validate_offsets<'a>(
    entries: impl ExactSizeIterator<Item = (&'a str, u32, &'a str)>,
) -> Result<BTreeSet<(&'a str, u32)>, GroupError> {
    if entries.len() == 0 || entries.len() > MAX_OFFSETS_PER_COMMIT {
        return Err(invalid(format!(
            "a commit carries {} partitions; send 1 to {MAX_OFFSETS_PER_COMMIT} per request",
            entries.len()
        )));
    }
    let mut seen = BTreeSet::new();
    for (topic, partition, metadata) in entries {
        validate_topic_name(topic)
            .map_err(|problem| GroupError::new(ErrorCode::InvalidTopicName, problem.to_string()))?;
        if partition >= MAX_PARTITIONS_PER_TOPIC {
            return Err(GroupError::new(
                ErrorCode::UnknownPartition,
                format!(
                    "partition {partition} of '{topic}' cannot exist: topics have at most {MAX_PARTITIONS_PER_TOPIC}"
                ),
            ));
        }
        if metadata.len() > MAX_COMMIT_METADATA_LEN {
            return Err(invalid(format!(
                "commit metadata of {topic}-{partition} has {} bytes; the limit is {MAX_COMMIT_METADATA_LEN}",
                metadata.len()
            )));
        }
        if !seen.insert((topic, partition)) {
            return Err(invalid(format!("{topic}-{partition} appears twice in one commit; send it once")));
        }
    }
    Ok(seen)
}

impl ConsumerGroup {
    /// A group with no members and the default timeouts.
    pub fn new(group_id: String) -> ConsumerGroup {
        ConsumerGroup {
            group_id,
            group_epoch: 0,
            state: GroupState::Empty,
            session_timeout_ms: DEFAULT_GROUP_SESSION_TIMEOUT_MS,
            heartbeat_interval_ms: DEFAULT_GROUP_HEARTBEAT_INTERVAL_MS,
            members: BTreeMap::new(),
            target: TargetAssignment::default(),
            owners: BTreeMap::new(),
            subscriptions: BTreeMap::new(),
            topics: BTreeMap::new(),
            offsets: BTreeMap::new(),
            empty_since_ms: None,
        }
    }

    /// The owner of a partition, if any.
    pub fn owner(&self, topic: &str, partition: u32) -> Option<&PartitionOwner> {
        self.owners.get(topic)?.get(&partition)
    }

    /// The member's target; empty when it has none.
    pub fn target_of(&self, member_id: &str) -> &Assignment {
        static NONE: Assignment = Assignment::empty();
        self.target.members.get(member_id).unwrap_or(&NONE)
    }

    pub fn member_by_instance(&self, instance_id: &str) -> Option<&Member> {
        self.members.values().find(|m| m.instance_id.as_deref() == Some(instance_id))
    }

    pub fn committed(&self, topic: &str, partition: u32) -> Option<&CommittedOffset> {
        self.offsets.get(topic)?.get(&partition)
    }

    /// The assignor the group uses: the one most members name (ties go to
    /// the first by name), or the default when none names one. Kafka picks
    /// the same way.
    pub fn assignor(&self) -> &str {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for name in self.members.values().filter_map(|m| m.assignor.as_deref()) {
            *votes.entry(name).or_default() += 1;
        }
        let best = votes.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)));
        best.map(|(name, _)| *name).unwrap_or(assignor::DEFAULT_ASSIGNOR)
    }

    fn compute_state(&self) -> GroupState {
        if self.members.is_empty() {
            GroupState::Empty
        } else if self.target.epoch != self.group_epoch {
            GroupState::Assigning
        } else if self
            .members
            .values()
            .any(|m| m.state != MemberState::Stable || m.effective_epoch() != self.target.epoch)
        {
            GroupState::Reconciling
        } else {
            GroupState::Stable
        }
    }

    /// The group epoch after a bump, or an error when it is used up.
    fn next_group_epoch(&self) -> Result<i32, GroupError> {
        self.group_epoch.checked_add(1).ok_or_else(|| {
            GroupError::new(
                ErrorCode::LimitReached,
                format!("group '{}' used up its epochs; delete it and create it again", self.group_id),
            )
        })
    }

    fn subscribe(&mut self, topics: &BTreeSet<String>) {
        for topic in topics {
            *self.subscriptions.entry(topic.clone()).or_default() += 1;
        }
    }

    /// Drops a subscription's counts, forgetting topics no one reads.
    fn unsubscribe(&mut self, topics: &BTreeSet<String>) {
        for topic in topics {
            let count = self.subscriptions.get_mut(topic).expect("subscriptions count every member's topics");
            *count -= 1;
            if *count == 0 {
                self.subscriptions.remove(topic);
                self.topics.remove(topic);
            }
        }
    }

    fn release(&mut self, partitions: &Assignment) {
        for (topic, partition) in partitions.iter() {
            let owners = self.owners.get_mut(topic).expect("a released partition is owned");
            owners.remove(&partition).expect("a released partition is owned");
            if owners.is_empty() {
                self.owners.remove(topic);
            }
        }
    }

    fn take(&mut self, partitions: &Assignment, member_id: &str, epoch: i32) {
        for (topic, partition) in partitions.iter() {
            let owner = PartitionOwner { member_id: member_id.to_string(), assignment_epoch: epoch };
            let previous = self.owners.entry(topic.to_string()).or_default().insert(partition, owner);
            assert!(previous.is_none(), "{topic}-{partition} granted while owned by {previous:?}");
        }
    }

    /// Applies a command to this group. On error nothing changed. The
    /// planner applies to scratch copies through this; everyone else goes
    /// through [`GroupsState::apply`], which also creates and deletes groups.
    pub(crate) fn apply(&mut self, command: &GroupCommand) -> Result<GroupResponse, GroupError> {
        let response = match command {
            GroupCommand::ConfigureGroup { session_timeout_ms, heartbeat_interval_ms, .. } => {
                validate_timeouts(*session_timeout_ms, *heartbeat_interval_ms)?;
                self.session_timeout_ms = *session_timeout_ms;
                self.heartbeat_interval_ms = *heartbeat_interval_ms;
                GroupResponse::Configured
            }
            GroupCommand::JoinMember { member, .. } => self.join(member)?,
            GroupCommand::UpdateSubscription { member_id, subscribed_topics, assignor, .. } => {
                self.update_subscription(member_id, subscribed_topics, assignor)?
            }
            GroupCommand::LeaveMember { member_id, now_ms, .. } => {
                let group_epoch = self.remove_member(member_id, *now_ms)?;
                GroupResponse::Left { member_id: member_id.clone(), group_epoch }
            }
            GroupCommand::ExpireMember { member_id, now_ms, .. } => {
                let group_epoch = self.remove_member(member_id, *now_ms)?;
                GroupResponse::Expired { member_id: member_id.clone(), group_epoch }
            }
            GroupCommand::StaticLeave { member_id, .. } => {
                let member = self.live_member(member_id)?;
                if member.instance_id.is_none() {
                    return Err(invalid(format!(
                        "member {member_id} has no instance id; only static members leave with epoch -2, \
                         leave with -1"
                    )));
                }
                let member = self.members.get_mut(member_id).expect("checked above");
                member.previous_member_epoch = member.member_epoch;
                member.member_epoch = STATIC_LEAVE_EPOCH;
                GroupResponse::StaticLeft { member_id: member_id.clone() }
            }
            GroupCommand::RefreshTopics { topics, .. } => self.refresh_topics(topics)?,
            GroupCommand::SetTargetAssignment { group_epoch, members, .. } => self.set_target(*group_epoch, members)?,
            GroupCommand::ReconcileMember {
                member_id,
                member_epoch,
                new_member_epoch,
                released,
                revoked,
                granted,
                ..
            } => self.reconcile_member(member_id, *member_epoch, *new_member_epoch, released, revoked, granted)?,
            GroupCommand::CommitOffsets { member_id, member_epoch, offsets, commit_ms, .. } => {
                self.commit(member_id, *member_epoch, offsets, *commit_ms)?
            }
            GroupCommand::ResetOffsets { offsets, now_ms, .. } => {
                self.refuse_members("reset offsets")?;
                validate_offsets(offsets.iter().map(|(t, p, _)| (t.as_str(), *p, "")))?;
                self.check_offsets_room(offsets.iter().map(|(t, p, _)| (t.as_str(), *p)))?;
                for (topic, partition, offset) in offsets {
                    let committed = CommittedOffset { offset: *offset, metadata: String::new(), commit_ms: *now_ms };
                    self.offsets.entry(topic.clone()).or_default().insert(*partition, committed);
                }
                GroupResponse::OffsetsReset { partitions: offsets.len() }
            }
            GroupCommand::DeleteGroup { .. } => {
                self.refuse_members("delete the group")?;
                GroupResponse::GroupDeleted { offsets: self.offsets.values().map(BTreeMap::len).sum() }
            }
            GroupCommand::ExpireOffsets { now_ms, retention_ms, .. } => {
                self.refuse_members("expire offsets")?;
                if *retention_ms == 0 {
                    return Err(invalid("offsets retention must be at least 1 ms"));
                }
                let expired = self.expire_offsets(*now_ms, *retention_ms);
                GroupResponse::OffsetsExpired { expired, group_deleted: self.offsets.is_empty() }
            }
        };
        self.state = self.compute_state();
        debug_assert_eq!(self.check_invariants(), Ok(()), "after {command:?}");
        Ok(response)
    }

    fn refuse_members(&self, what: &str) -> Result<(), GroupError> {
        if self.members.is_empty() {
            return Ok(());
        }
        Err(GroupError::new(
            ErrorCode::GroupNotEmpty,
            format!(
                "cannot {what}: group '{}' has {} members; stop them (or wait for their session timeout) first",
                self.group_id,
                self.members.len()
            ),
        ))
    }

    /// A member that is present and not away.
    fn live_member(&self, member_id: &str) -> Result<&Member, GroupError> {
        let member = self.members.get(member_id).ok_or_else(|| self.unknown_member(member_id))?;
        if member.is_away() {
            return Err(GroupError::new(
                ErrorCode::FencedMemberEpoch,
                format!("static member {member_id} left for now (epoch -2); rejoin with epoch 0"),
            ));
        }
        Ok(member)
    }

    fn unknown_member(&self, member_id: &str) -> GroupError {
        GroupError::new(
            ErrorCode::UnknownMemberId,
            format!("group '{}' has no member '{}'; rejoin with epoch 0", self.group_id, member_id.escape_debug()),
        )
    }

    fn join(&mut self, spec: &JoinSpec) -> Result<GroupResponse, GroupError> {
        validate_member_id(&spec.member_id)?;
        if let Some(instance_id) = &spec.instance_id {
            validate_client_string("instance id", instance_id, false)?;
        }
        validate_client_string("client id", &spec.client_id, true)?;
        validate_client_string("client host", &spec.client_host, true)?;
        validate_subscription(&spec.subscribed_topics)?;
        if let Some(name) = &spec.assignor {
            assignor::validate_assignor(name)?;
        }
        if spec.rebalance_timeout_ms == 0 || spec.rebalance_timeout_ms > MAX_GROUP_REBALANCE_TIMEOUT_MS {
            return Err(invalid(format!(
                "rebalance timeout {} ms is out of bounds; use 1 to {MAX_GROUP_REBALANCE_TIMEOUT_MS} ms",
                spec.rebalance_timeout_ms
            )));
        }
        let holder = spec.instance_id.as_deref().and_then(|i| self.member_by_instance(i));
        enum Kind {
            New,
            Rejoin,
            /// Takes the place of this static member, which is away.
            Return(String),
        }
        let kind = match (self.members.get(&spec.member_id), holder) {
            (Some(member), _) if member.instance_id != spec.instance_id => {
                return Err(invalid(format!(
                    "member {} joined with instance id {:?} and now gives {:?}; a member keeps its instance id: \
                     leave and join again to change it",
                    spec.member_id, member.instance_id, spec.instance_id
                )));
            }
            (Some(member), _) if member.is_away() => Kind::Return(member.member_id.clone()),
            (Some(_), _) => Kind::Rejoin,
            (None, Some(holder)) if holder.is_away() => Kind::Return(holder.member_id.clone()),
            (None, Some(holder)) => {
                return Err(GroupError::new(
                    ErrorCode::UnreleasedInstanceId,
                    format!(
                        "instance id '{}' belongs to live member {}; stop that member, or wait for its session \
                         timeout, and retry",
                        holder.instance_id.as_deref().unwrap_or_default(),
                        holder.member_id
                    ),
                ));
            }
            (None, None) if self.members.len() >= MAX_GROUP_MEMBERS => {
                return Err(GroupError::new(
                    ErrorCode::LimitReached,
                    format!("group '{}' has {MAX_GROUP_MEMBERS} members, the limit", self.group_id),
                ));
            }
            (None, None) => Kind::New,
        };
        let mut member = Member {
            member_id: spec.member_id.clone(),
            instance_id: spec.instance_id.clone(),
            member_epoch: JOIN_EPOCH,
            previous_member_epoch: JOIN_EPOCH,
            state: MemberState::Stable,
            subscribed_topics: spec.subscribed_topics.clone(),
            assignor: spec.assignor.clone(),
            client_id: spec.client_id.clone(),
            client_host: spec.client_host.clone(),
            rebalance_timeout_ms: spec.rebalance_timeout_ms,
            session_timeout_ms: self.session_timeout_ms,
            assigned: Assignment::new(),
            pending_revocation: Assignment::new(),
        };
        match kind {
            Kind::New => {
                let epoch = self.next_group_epoch()?;
                self.subscribe(&member.subscribed_topics);
                self.members.insert(member.member_id.clone(), member);
                self.group_epoch = epoch;
                self.empty_since_ms = None;
            }
            Kind::Rejoin => {
                // It dropped everything it owned; a new epoch fences what
                // its previous incarnation may still try to commit.
                let epoch = self.next_group_epoch()?;
                let old = self.members.remove(&spec.member_id).expect("a rejoin has a member");
                self.release(&old.owned());
                self.unsubscribe(&old.subscribed_topics);
                self.subscribe(&member.subscribed_topics);
                self.members.insert(member.member_id.clone(), member);
                self.group_epoch = epoch;
            }
            Kind::Return(old_id) => {
                let changed = {
                    let old = &self.members[&old_id];
                    old.subscribed_topics != member.subscribed_topics || old.assignor != member.assignor
                };
                let epoch = if changed { self.next_group_epoch()? } else { self.group_epoch };
                let old = self.members.remove(&old_id).expect("the returning member's place");
                member.member_epoch = old.previous_member_epoch;
                member.previous_member_epoch = old.previous_member_epoch;
                member.state = old.state;
                member.assigned = old.assigned;
                member.pending_revocation = old.pending_revocation;
                for (topic, partition) in member.owned().iter() {
                    let owner = self.owners.get_mut(topic).and_then(|o| o.get_mut(&partition));
                    owner.expect("an owned partition has an owner").member_id = member.member_id.clone();
                }
                if let Some(target) = self.target.members.remove(&old_id) {
                    self.target.members.insert(member.member_id.clone(), target);
                }
                self.unsubscribe(&old.subscribed_topics);
                self.subscribe(&member.subscribed_topics);
                self.members.insert(member.member_id.clone(), member);
                self.group_epoch = epoch;
            }
        }
        Ok(GroupResponse::Joined { member_id: spec.member_id.clone(), group_epoch: self.group_epoch })
    }

    fn update_subscription(
        &mut self,
        member_id: &str,
        topics: &BTreeSet<String>,
        assignor: &Option<String>,
    ) -> Result<GroupResponse, GroupError> {
        let member = self.live_member(member_id)?;
        validate_subscription(topics)?;
        if let Some(name) = assignor {
            assignor::validate_assignor(name)?;
        }
        if &member.subscribed_topics == topics && &member.assignor == assignor {
            return Ok(GroupResponse::SubscriptionUpdated { group_epoch: self.group_epoch });
        }
        let epoch = self.next_group_epoch()?;
        let old = member.subscribed_topics.clone();
        self.unsubscribe(&old);
        self.subscribe(topics);
        let member = self.members.get_mut(member_id).expect("checked above");
        member.subscribed_topics = topics.clone();
        member.assignor = assignor.clone();
        self.group_epoch = epoch;
        Ok(GroupResponse::SubscriptionUpdated { group_epoch: epoch })
    }

    /// Removes a member (left or expired): its partitions are free at once.
    fn remove_member(&mut self, member_id: &str, now_ms: u64) -> Result<i32, GroupError> {
        if !self.members.contains_key(member_id) {
            return Err(self.unknown_member(member_id));
        }
        let epoch = self.next_group_epoch()?;
        let member = self.members.remove(member_id).expect("checked above");
        self.release(&member.owned());
        self.unsubscribe(&member.subscribed_topics);
        self.target.members.remove(member_id);
        self.group_epoch = epoch;
        if self.members.is_empty() {
            self.empty_since_ms = Some(now_ms);
        }
        Ok(epoch)
    }

    fn refresh_topics(&mut self, topics: &BTreeMap<String, u32>) -> Result<GroupResponse, GroupError> {
        for (topic, count) in topics {
            if !self.subscriptions.contains_key(topic) {
                return Err(stale_plan(format!("topic '{topic}' has no subscriber in group '{}'", self.group_id)));
            }
            if *count == 0 || *count > MAX_PARTITIONS_PER_TOPIC {
                return Err(invalid(format!("topic '{topic}' cannot have {count} partitions")));
            }
        }
        if &self.topics != topics {
            self.group_epoch = self.next_group_epoch()?;
            self.topics = topics.clone();
        }
        Ok(GroupResponse::TopicsRefreshed { group_epoch: self.group_epoch })
    }

    fn set_target(
        &mut self,
        group_epoch: i32,
        members: &BTreeMap<String, Assignment>,
    ) -> Result<GroupResponse, GroupError> {
        if group_epoch != self.group_epoch {
            return Err(stale_plan(format!(
                "target computed for epoch {group_epoch}; group '{}' is at epoch {}",
                self.group_id, self.group_epoch
            )));
        }
        let mut seen = BTreeSet::new();
        for (member_id, assignment) in members {
            let member = self.members.get(member_id).ok_or_else(|| {
                stale_plan(format!("target names member {member_id}, which group '{}' does not have", self.group_id))
            })?;
            for (topic, partition) in assignment.iter() {
                if !member.subscribed_topics.contains(topic) {
                    return Err(stale_plan(format!("target gives {topic}-{partition} to {member_id}, not subscribed")));
                }
                if self.topics.get(topic).is_none_or(|count| partition >= *count) {
                    return Err(stale_plan(format!("target gives {topic}-{partition}, which the group does not see")));
                }
                if !seen.insert((topic, partition)) {
                    return Err(stale_plan(format!("target gives {topic}-{partition} to two members")));
                }
            }
        }
        self.target = TargetAssignment {
            epoch: group_epoch,
            members: members.iter().filter(|(_, a)| !a.is_empty()).map(|(m, a)| (m.clone(), a.clone())).collect(),
        };
        Ok(GroupResponse::TargetSet { group_epoch })
    }

    fn reconcile_member(
        &mut self,
        member_id: &str,
        member_epoch: i32,
        new_member_epoch: i32,
        released: &Assignment,
        revoked: &Assignment,
        granted: &Assignment,
    ) -> Result<GroupResponse, GroupError> {
        let member = self.live_member(member_id)?;
        if member.member_epoch != member_epoch {
            return Err(stale_plan(format!(
                "reconciliation planned from epoch {member_epoch}; member {member_id} is at {}",
                member.member_epoch
            )));
        }
        if !released.is_subset(&member.pending_revocation) {
            return Err(stale_plan(format!("{member_id} releases partitions it was not revoking")));
        }
        if !revoked.is_subset(&member.assigned) {
            return Err(stale_plan(format!("{member_id} is revoked partitions it was not assigned")));
        }
        let mut pending = member.pending_revocation.difference(released);
        pending.extend(revoked);
        let mut assigned = member.assigned.difference(revoked);
        if pending.is_empty() {
            if new_member_epoch != self.target.epoch || new_member_epoch < member_epoch || new_member_epoch <= 0 {
                return Err(stale_plan(format!(
                    "{member_id} would move from epoch {member_epoch} to {new_member_epoch}; the target is at {}",
                    self.target.epoch
                )));
            }
        } else if new_member_epoch != member_epoch || !granted.is_empty() {
            // The rule that makes double ownership impossible across epochs:
            // a member with partitions to give up gets nothing new and stays
            // where it is.
            return Err(stale_plan(format!("{member_id} still revokes {pending}; its epoch must not move")));
        }
        let target = self.target_of(member_id);
        for (topic, partition) in granted.iter() {
            if !target.contains(topic, partition) {
                return Err(stale_plan(format!("{topic}-{partition} is not in the target of {member_id}")));
            }
            let free = match self.owner(topic, partition) {
                None => true,
                Some(owner) => owner.member_id == member_id && released.contains(topic, partition),
            };
            if !free {
                return Err(stale_plan(format!("{topic}-{partition} is still owned; it cannot go to {member_id}")));
            }
        }
        assigned.extend(granted);
        let state = if !pending.is_empty() {
            MemberState::UnrevokedPartitions
        } else if new_member_epoch == self.target.epoch && !target.is_subset(&assigned) {
            MemberState::UnreleasedPartitions
        } else {
            MemberState::Stable
        };
        self.release(released);
        self.take(granted, member_id, new_member_epoch);
        let member = self.members.get_mut(member_id).expect("checked above");
        if new_member_epoch != member.member_epoch {
            member.previous_member_epoch = member.member_epoch;
            member.member_epoch = new_member_epoch;
        }
        member.assigned = assigned;
        member.pending_revocation = pending;
        member.state = state;
        Ok(GroupResponse::Reconciled { member_id: member_id.to_string(), member_epoch: new_member_epoch, state })
    }

    /// Whether `member_id` at `member_epoch` may commit `topic-partition`:
    /// it owns the partition, and the partition's assignment epoch ≤
    /// `member_epoch` ≤ the member's epoch (KIP-1251). Transactional offset
    /// commits use the same check.
    pub fn check_commit(
        &self,
        member_id: &str,
        member_epoch: i32,
        topic: &str,
        partition: u32,
    ) -> Result<(), GroupError> {
        self.check_committer(member_id, member_epoch)?;
        match self.owner(topic, partition) {
            Some(owner) if owner.member_id == member_id && owner.assignment_epoch <= member_epoch => Ok(()),
            Some(owner) if owner.member_id == member_id => Err(GroupError::new(
                ErrorCode::StaleMemberEpoch,
                format!(
                    "{topic}-{partition} was assigned to member {member_id} at epoch {}, after the commit's epoch \
                     {member_epoch}",
                    owner.assignment_epoch
                ),
            )),
            _ => Err(GroupError::new(
                ErrorCode::StaleMemberEpoch,
                format!("member {member_id} does not own {topic}-{partition}"),
            )),
        }
    }

    /// A member that may commit at all: known, and not ahead of the group
    /// (an epoch the group never gave it, or a static member that is away).
    fn check_committer(&self, member_id: &str, member_epoch: i32) -> Result<(), GroupError> {
        let member = self.members.get(member_id).ok_or_else(|| self.unknown_member(member_id))?;
        if member_epoch > member.member_epoch {
            return Err(GroupError::new(
                ErrorCode::FencedMemberEpoch,
                format!(
                    "member {member_id} commits at epoch {member_epoch} but is at {}; drop every partition and \
                     rejoin",
                    member.member_epoch
                ),
            ));
        }
        Ok(())
    }

    fn check_offsets_room<'a>(&self, partitions: impl Iterator<Item = (&'a str, u32)>) -> Result<(), GroupError> {
        let existing: usize = self.offsets.values().map(BTreeMap::len).sum();
        let new = partitions.filter(|(t, p)| self.committed(t, *p).is_none()).count();
        if existing + new > MAX_COMMITTED_PARTITIONS_PER_GROUP {
            return Err(GroupError::new(
                ErrorCode::LimitReached,
                format!(
                    "group '{}' has offsets for {existing} partitions; the limit is \
                     {MAX_COMMITTED_PARTITIONS_PER_GROUP}",
                    self.group_id
                ),
            ));
        }
        Ok(())
    }

    fn commit(
        &mut self,
        member_id: &str,
        member_epoch: i32,
        offsets: &[OffsetCommit],
        commit_ms: u64,
    ) -> Result<GroupResponse, GroupError> {
        validate_offsets(offsets.iter().map(|o| (o.topic.as_str(), o.partition, o.metadata.as_str())))?;
        let outcomes: Vec<Option<GroupError>> = if member_id.is_empty() {
            if member_epoch != STANDALONE_COMMIT_EPOCH {
                return Err(invalid(format!(
                    "a commit without a member id is standalone and takes epoch -1, not {member_epoch}"
                )));
            }
            self.refuse_members("commit without a member id")?;
            vec![None; offsets.len()]
        } else {
            self.check_committer(member_id, member_epoch)?;
            offsets.iter().map(|o| self.check_commit(member_id, member_epoch, &o.topic, o.partition).err()).collect()
        };
        let accepted = offsets.iter().zip(&outcomes).filter(|(_, e)| e.is_none()).map(|(o, _)| o);
        self.check_offsets_room(accepted.clone().map(|o| (o.topic.as_str(), o.partition)))?;
        for commit in accepted {
            let committed = CommittedOffset { offset: commit.offset, metadata: commit.metadata.clone(), commit_ms };
            self.offsets.entry(commit.topic.clone()).or_default().insert(commit.partition, committed);
        }
        let partitions = offsets
            .iter()
            .zip(outcomes)
            .map(|(o, error)| CommitOutcome { topic: o.topic.clone(), partition: o.partition, error })
            .collect();
        Ok(GroupResponse::OffsetsCommitted { partitions })
    }

    /// The offsets due to expire at `now_ms`: last committed (or the group
    /// emptied) at least `retention_ms` ago.
    pub fn expired_offsets(&self, now_ms: u64, retention_ms: u64) -> impl Iterator<Item = (&str, u32)> + '_ {
        let emptied = self.empty_since_ms.unwrap_or(0);
        self.offsets.iter().flat_map(move |(topic, partitions)| {
            partitions
                .iter()
                .filter(move |(_, c)| c.commit_ms.max(emptied).saturating_add(retention_ms) <= now_ms)
                .map(move |(partition, _)| (topic.as_str(), *partition))
        })
    }

    fn expire_offsets(&mut self, now_ms: u64, retention_ms: u64) -> usize {
        let expired: Vec<(String, u32)> =
            self.expired_offsets(now_ms, retention_ms).map(|(t, p)| (t.to_string(), p)).collect();
        for (topic, partition) in &expired {
            let partitions = self.offsets.get_mut(topic).expect("listed above");
            partitions.remove(partition);
            if partitions.is_empty() {
                self.offsets.remove(topic);
            }
        }
        expired.len()
    }

    /// Checks every invariant of the module header; the error names the
    /// first one broken.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut owned: BTreeMap<(&str, u32), &str> = BTreeMap::new();
        let mut instances = BTreeSet::new();
        let mut subscriptions: BTreeMap<&str, u32> = BTreeMap::new();
        if self.members.len() > MAX_GROUP_MEMBERS {
            return Err(format!("{} members", self.members.len()));
        }
        if self.target.epoch > self.group_epoch {
            return Err(format!("target epoch {} past group epoch {}", self.target.epoch, self.group_epoch));
        }
        for (id, member) in &self.members {
            if id != &member.member_id {
                return Err(format!("member {} filed under {id}", member.member_id));
            }
            if let Some(instance) = &member.instance_id {
                if !instances.insert(instance) {
                    return Err(format!("instance id {instance} used twice"));
                }
            }
            let epoch = member.effective_epoch();
            if epoch < 0 || epoch > self.target.epoch {
                return Err(format!("member {id} at epoch {epoch}, target at {}", self.target.epoch));
            }
            if !member.assigned.is_disjoint(&member.pending_revocation) {
                return Err(format!("member {id} both keeps and revokes a partition"));
            }
            if member.pending_revocation.is_empty() == (member.state == MemberState::UnrevokedPartitions) {
                return Err(format!("member {id} is {:?} with pending {}", member.state, member.pending_revocation));
            }
            for (topic, partition) in member.assigned.iter().chain(member.pending_revocation.iter()) {
                if let Some(other) = owned.insert((topic, partition), id) {
                    return Err(format!("{topic}-{partition} owned by {other} and {id}"));
                }
                match self.owner(topic, partition) {
                    Some(owner) if owner.member_id == *id && owner.assignment_epoch <= epoch => {}
                    other => return Err(format!("{topic}-{partition} of {id} has owner record {other:?}")),
                }
            }
            for topic in &member.subscribed_topics {
                *subscriptions.entry(topic).or_default() += 1;
            }
        }
        let recorded: usize = self.owners.values().map(BTreeMap::len).sum();
        if recorded != owned.len() {
            return Err(format!("{recorded} owner records for {} owned partitions", owned.len()));
        }
        if subscriptions.iter().map(|(t, c)| (*t, *c)).ne(self.subscriptions.iter().map(|(t, c)| (t.as_str(), *c))) {
            return Err(format!("subscription counts {:?}, members say {subscriptions:?}", self.subscriptions));
        }
        if let Some(topic) = self.topics.keys().find(|t| !self.subscriptions.contains_key(*t)) {
            return Err(format!("topic {topic} kept without a subscriber"));
        }
        let mut targeted = BTreeSet::new();
        for (id, assignment) in &self.target.members {
            if !self.members.contains_key(id) {
                return Err(format!("target for unknown member {id}"));
            }
            for partition in assignment.iter() {
                if !targeted.insert(partition) {
                    return Err(format!("target gives {partition:?} twice"));
                }
            }
        }
        if !self.members.is_empty() && self.empty_since_ms.is_some() {
            return Err("a group with members has an empty-since time".into());
        }
        if self.state != self.compute_state() {
            return Err(format!("state {:?}, should be {:?}", self.state, self.compute_state()));
        }
        Ok(())
    }
}

impl GroupsState {
    /// Applies a command: the new state and the answer, or an error and no
    /// change at all.
    pub fn apply(&mut self, command: GroupCommand) -> GroupResponse {
        match self.try_apply(&command) {
            Ok(response) => response,
            Err(error) => GroupResponse::Error { code: error.code, message: error.message },
        }
    }

    /// The state of a group; Dead when there is none.
    pub fn group_state(&self, group_id: &str) -> GroupState {
        self.groups.get(group_id).map_or(GroupState::Dead, |g| g.state)
    }

    fn try_apply(&mut self, command: &GroupCommand) -> Result<GroupResponse, GroupError> {
        let group_id = command.group_id();
        validate_group_id(group_id)?;
        // Commands that may create their group: a join, a configuration, and
        // offsets set without members (admin tools, manual assignment).
        let creates = match command {
            GroupCommand::ConfigureGroup { .. }
            | GroupCommand::JoinMember { .. }
            | GroupCommand::ResetOffsets { .. } => true,
            GroupCommand::CommitOffsets { member_id, .. } => member_id.is_empty(),
            _ => false,
        };
        let Some(group) = self.groups.get_mut(group_id) else {
            if !creates {
                return Err(GroupError::new(
                    ErrorCode::GroupIdNotFound,
                    format!("group '{group_id}' does not exist; check the name with strata group list"),
                ));
            }
            if self.groups.len() >= MAX_GROUPS {
                return Err(GroupError::new(
                    ErrorCode::LimitReached,
                    format!("the cluster has {MAX_GROUPS} consumer groups, the limit; delete unused groups first"),
                ));
            }
            let mut group = ConsumerGroup::new(group_id.to_string());
            let response = group.apply(command)?;
            self.groups.insert(group_id.to_string(), group);
            return Ok(response);
        };
        let response = group.apply(command)?;
        let deleted = match &response {
            GroupResponse::GroupDeleted { .. } => true,
            GroupResponse::OffsetsExpired { group_deleted, .. } => *group_deleted,
            _ => false,
        };
        if deleted {
            self.groups.remove(group_id);
        }
        Ok(response)
    }
}
