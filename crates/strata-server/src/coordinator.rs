//! The consumer group coordinator: the metadata leader's thin I/O around
//! the pure planner of `strata_state::group` (which says what to propose
//! and what to answer; this module only proposes, waits and keeps time).
//!
//! - Requests (heartbeat, commit, offset fetch, describe, delete, reset)
//!   run on the metadata leader; `service` forwards them there. Each first
//!   confirms the leadership with a lease read (a quorum read when the
//!   lease is stale), so nothing is answered from a deposed leader's state.
//! - A heartbeat is planned with `plan_heartbeat`; each planned command is
//!   one Raft entry (`MetaCommand::Group`) proposed in order, stopping at
//!   the first error, which is the answer; the answer is read from the
//!   state after apply (`Plan::answer`). A heartbeat that changes nothing
//!   writes nothing. One group's plans are planned, proposed and applied one
//!   at a time: an async lock per group id, held from planning to answer.
//! - A join that creates its group first proposes `ConfigureGroup` with
//!   this node's `group_session_timeout` and `group_heartbeat_interval`.
//! - Liveness lives in the leader's memory only: when each member was last
//!   heard, and since when it has had partitions pending revocation. When
//!   this node starts leading (a new term) every member is re-armed with its
//!   full session timeout. A member whose session timeout passes, or whose
//!   rebalance timeout passes while it holds partitions it must give up, is
//!   expired (`plan_member_expiry`). Checked every GROUP_TIMER_CHECK_INTERVAL.
//! - When topics are created or deleted, groups whose subscribed topics'
//!   partition counts no longer match get `plan_group_refresh` at once,
//!   without waiting for a heartbeat.
//! - Committed offsets of groups without members expire every
//!   OFFSETS_EXPIRY_CHECK_INTERVAL (`plan_offsets_expiry`), by cluster time
//!   and only once it is trusted: a fast clock must not expire them early.
//! - A commit or reset past a partition's high watermark is refused with
//!   OFFSET_OUT_OF_RANGE. The leader keeps the highest high watermark it
//!   has seen per partition (it never goes down while a topic lives; a
//!   topic created again has a new id) and asks the partition's leader
//!   (`ListOffsets`: this node's own replica when it leads the partition,
//!   else through a peer) only for an offset above it, so the usual commit
//!   (of offsets already read) asks nobody.
//!
//! - Figures for `/metrics` (`metrics`): per group its members, its group
//!   epoch (each bump computes a new target assignment: the rebalances),
//!   the partition offsets this node stored through `OffsetCommit` while it
//!   led, and the lag (high watermark minus committed offset) summed and
//!   maxed over the partitions whose high watermark it knows. A scrape
//!   first asks the partitions' leaders for fresh high watermarks, so the
//!   lag of a group that stopped committing still grows. Only a node that
//!   confirms its leadership answers them.
//!
//! Invariant: a group transition is applied (committed by a majority)
//! before any answer reports it.
//! Invariant: nothing replicated is stamped with this node's wall clock:
//! commit, leave and expiry times are cluster time (`Node::clock`).
//! Boundary: decisions are the planner's; this module never changes a
//! plan, only proposes it.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::impls::ProgressResponder;
use openraft::vote::RaftLeaderId;
use openraft::LinearizerOption;
use strata_core::limits::{
    GROUP_HIGH_WATERMARK_LOOKUPS_IN_FLIGHT, GROUP_TIMER_CHECK_INTERVAL, MAX_GROUPS, MAX_OFFSETS_PER_COMMIT,
    OFFSETS_EXPIRY_CHECK_INTERVAL, STATUS_TIMEOUT,
};
use strata_core::ErrorCode;
use strata_state::group::{
    plan_group_refresh, plan_heartbeat, plan_member_expiry, plan_offsets_expiry, validate_group_id, ConsumerGroup,
    GroupCommand, GroupError, GroupResponse, GroupsState, HeartbeatAnswer, HeartbeatRequest, OffsetCommit, TopicView,
    LEAVE_EPOCH,
};
use strata_state::metadata::Topic;
use strata_state::{Command, MetaCommand, MetaResponse, MetadataState, Response};
use strata_storage::TypeConfig;
use tokio::sync::OwnedMutexGuard;

use crate::error::ApiError;
use crate::node::{MetadataSnapshot, Node};

/// Why the coordinator did not serve a request here.
#[derive(Debug)]
pub(crate) enum CoordinatorError {
    /// Another node leads the metadata group: send the request there.
    Forward(u64),
    /// The answer is this error.
    Api(ApiError),
}

impl From<ApiError> for CoordinatorError {
    fn from(error: ApiError) -> CoordinatorError {
        CoordinatorError::Api(error)
    }
}

fn refused(error: GroupError) -> CoordinatorError {
    CoordinatorError::Api(ApiError::new(error.code, error.message))
}

/// Asks a partition's leader for its offsets: (log start, high watermark).
pub(crate) trait HighWatermarks: Sync {
    fn high_watermark(
        &self,
        topic: &Topic,
        partition: u32,
    ) -> impl Future<Output = Result<(u64, u64), ApiError>> + Send;
}

/// The coordinator's memory on this node; cheap to clone.
#[derive(Clone, Default)]
pub struct Coordinator {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// One lock per group with a request in progress; removed when unused.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    timers: Mutex<Timers>,
    /// (topic id, partition) → the highest high watermark seen. Entries of
    /// deleted topics are dropped when topics change.
    high_watermarks: Mutex<HashMap<(u64, u32), u64>>,
    /// group id → partition offsets this node stored through `OffsetCommit`
    /// while leading (for `/metrics`). At most MAX_GROUPS entries plus one:
    /// groups gone from the state are dropped before it grows past that.
    offset_commits: Mutex<HashMap<String, u64>>,
}

/// One consumer group's figures for `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct GroupMetrics {
    pub group_id: String,
    pub members: u64,
    /// The group epoch: how many times membership, subscriptions or topics
    /// changed since the group was created, each computing a new target
    /// assignment. The same on every leader (it is replicated).
    pub rebalances: u64,
    /// Partition offsets this node stored through `OffsetCommit` while it
    /// led the metadata group (standalone and member commits; not resets).
    pub offset_commits: u64,
    /// Lag (high watermark minus committed offset) over the partitions with
    /// a committed offset whose high watermark is known; `None` when none is.
    pub lag: Option<Lag>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Lag {
    pub sum: u64,
    pub max: u64,
}

/// Every group's figures, by group id: `high_watermarks` by (topic id,
/// partition), `commits` by group id. Committed offsets of topics deleted
/// since (or of partitions they no longer have) count for no lag.
fn group_metrics(
    state: &MetadataState,
    high_watermarks: &HashMap<(u64, u32), u64>,
    commits: &HashMap<String, u64>,
) -> Vec<GroupMetrics> {
    state
        .groups
        .groups
        .values()
        .map(|group| {
            let mut lag: Option<Lag> = None;
            for (topic, offsets) in &group.offsets {
                let Some(topic) = state.topics.get(topic) else { continue };
                for (partition, committed) in offsets {
                    if *partition as usize >= topic.partitions.len() {
                        continue;
                    }
                    if let Some(high_watermark) = high_watermarks.get(&(topic.id, *partition)) {
                        let behind = high_watermark.saturating_sub(committed.offset);
                        let lag = lag.get_or_insert_with(Lag::default);
                        lag.sum += behind;
                        lag.max = lag.max.max(behind);
                    }
                }
            }
            GroupMetrics {
                group_id: group.group_id.clone(),
                members: group.members.len() as u64,
                rebalances: u64::try_from(group.group_epoch).unwrap_or(0),
                offset_commits: commits.get(&group.group_id).copied().unwrap_or(0),
                lag,
            }
        })
        .collect()
}

/// Holds one group's lock; frees the lock's entry when no one else wants it.
struct GroupLock {
    inner: Arc<Inner>,
    group_id: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for GroupLock {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.inner.locks.lock().expect("lock map");
        // Clones are only made under this map's lock, so a count of one
        // (the map's own) means no request holds or waits for it.
        if locks.get(&self.group_id).is_some_and(|lock| Arc::strong_count(lock) == 1) {
            locks.remove(&self.group_id);
        }
    }
}

/// One member's liveness on the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MemberTimer {
    /// Its last heartbeat (or when this node started leading).
    heard: Instant,
    /// Since when it has had partitions pending revocation.
    revoking_since: Option<Instant>,
}

/// Every member's liveness, while this node leads the metadata group.
#[derive(Debug, Default)]
struct Timers {
    /// The metadata term they were armed in; None while not leading.
    term: Option<u64>,
    /// group id → member id → timer.
    groups: HashMap<String, HashMap<String, MemberTimer>>,
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

impl Timers {
    /// Forgets every timer: this node does not lead.
    fn stand_down(&mut self) {
        self.term = None;
        self.groups.clear();
    }

    /// When `term` is new, re-arms every member with a full session from
    /// `now` (the previous leader's timers are gone) and returns true.
    fn arm(&mut self, term: u64, groups: &GroupsState, now: Instant) -> bool {
        if self.term == Some(term) {
            return false;
        }
        self.term = Some(term);
        self.groups.clear();
        for group in groups.groups.values() {
            let timers = self.groups.entry(group.group_id.clone()).or_default();
            for member in group.members.values() {
                let revoking_since = (!member.pending_revocation.is_empty()).then_some(now);
                timers.insert(member.member_id.clone(), MemberTimer { heard: now, revoking_since });
            }
        }
        true
    }

    /// A heartbeat of the member, answered with `revoking`: whether it has
    /// partitions pending revocation now.
    fn heard(&mut self, group_id: &str, member_id: &str, revoking: bool, now: Instant) {
        let timers = self.groups.entry(group_id.to_string()).or_default();
        let timer = timers.entry(member_id.to_string()).or_insert(MemberTimer { heard: now, revoking_since: None });
        timer.heard = now;
        if !revoking {
            timer.revoking_since = None;
        } else if timer.revoking_since.is_none() {
            timer.revoking_since = Some(now);
        }
    }

    fn forget(&mut self, group_id: &str, member_id: &str) {
        if let Some(timers) = self.groups.get_mut(group_id) {
            timers.remove(member_id);
            if timers.is_empty() {
                self.groups.remove(group_id);
            }
        }
    }

    /// Whether the member's session timeout, or its rebalance timeout while
    /// it revokes partitions, has passed at `now`.
    fn expired(timer: &MemberTimer, member: &strata_state::group::Member, now: Instant) -> bool {
        let session_over = now.saturating_duration_since(timer.heard) >= millis(member.session_timeout_ms);
        let rebalance_over = timer
            .revoking_since
            .is_some_and(|since| now.saturating_duration_since(since) >= millis(member.rebalance_timeout_ms));
        session_over || rebalance_over
    }

    /// The members due to expire at `now`, as (group id, member id). Keeps
    /// the timers in step with the state on the way: members it has not
    /// seen are armed from `now`, members gone are dropped, and the start
    /// and end of revocations are noted.
    fn due(&mut self, groups: &GroupsState, now: Instant) -> Vec<(String, String)> {
        self.groups.retain(|group_id, timers| {
            let Some(group) = groups.groups.get(group_id) else { return false };
            timers.retain(|member_id, _| group.members.contains_key(member_id));
            !timers.is_empty()
        });
        let mut due = Vec::new();
        for group in groups.groups.values().filter(|g| !g.members.is_empty()) {
            // Looked up before inserting: most ticks insert nothing, and
            // a key is only copied for an insert.
            if !self.groups.contains_key(&group.group_id) {
                self.groups.insert(group.group_id.clone(), HashMap::new());
            }
            let timers = self.groups.get_mut(&group.group_id).expect("inserted above");
            for member in group.members.values() {
                if !timers.contains_key(&member.member_id) {
                    timers.insert(member.member_id.clone(), MemberTimer { heard: now, revoking_since: None });
                }
                let timer = timers.get_mut(&member.member_id).expect("inserted above");
                if member.pending_revocation.is_empty() {
                    timer.revoking_since = None;
                } else if timer.revoking_since.is_none() {
                    timer.revoking_since = Some(now);
                }
                if Timers::expired(timer, member, now) {
                    due.push((group.group_id.clone(), member.member_id.clone()));
                }
            }
        }
        due
    }

    /// Whether the member is (still) due to expire at `now`.
    fn is_due(&self, groups: &GroupsState, group_id: &str, member_id: &str, now: Instant) -> bool {
        let member = groups.groups.get(group_id).and_then(|g| g.members.get(member_id));
        let timer = self.groups.get(group_id).and_then(|t| t.get(member_id));
        match (member, timer) {
            (Some(member), Some(timer)) => Timers::expired(timer, member, now),
            _ => false,
        }
    }
}

/// Whether a group's view of its subscribed topics' partition counts is
/// not what `topics` says now (the same comparison the planner makes).
fn topics_changed(group: &ConsumerGroup, topics: &dyn TopicView) -> bool {
    let mut seen = 0;
    for topic in group.subscriptions.keys() {
        match topics.partition_count(topic).filter(|count| *count > 0) {
            Some(count) if group.topics.get(topic) == Some(&count) => seen += 1,
            None if !group.topics.contains_key(topic) => {}
            _ => return true,
        }
    }
    seen != group.topics.len()
}

/// The metadata term this node leads in, once it has applied an entry of
/// that term (so its state holds every committed transition).
pub(crate) fn leading_term(node: &Node) -> Option<u64> {
    let metrics = node.metadata().raft.metrics().borrow_watched().clone();
    let own_term_applied =
        metrics.last_applied.as_ref().is_some_and(|id| id.committed_leader_id().term() == metrics.current_term);
    (metrics.current_leader == Some(node.node_id()) && own_term_applied).then_some(metrics.current_term)
}

fn not_leading(leader: Option<u64>, me: u64) -> CoordinatorError {
    match leader {
        Some(leader) if leader != me => CoordinatorError::Forward(leader),
        _ => CoordinatorError::Api(ApiError::new(
            ErrorCode::ClusterUnavailable,
            "the metadata group has no leader right now (an election is in progress)",
        )),
    }
}

/// Confirms that this node leads the metadata group and that its state
/// holds everything committed: a lease read (a majority acknowledged this
/// leader within the lease), and when the lease is stale (just elected, or
/// out of touch with its followers) one round of heartbeats to a majority.
pub(crate) async fn confirm_leader(node: &Node) -> Result<(), CoordinatorError> {
    let raft = node.metadata().raft;
    let read = LinearizerOption::new(None, true);
    match tokio::time::timeout(STATUS_TIMEOUT, raft.ensure_linearizable(read)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(forward)))) => {
            Err(not_leading(forward.leader_id, node.node_id()))
        }
        Ok(Err(error)) => Err(CoordinatorError::Api(ApiError::new(
            ErrorCode::ClusterUnavailable,
            format!("the metadata leader could not confirm its leadership: {error}"),
        ))),
        Err(_) => Err(CoordinatorError::Api(ApiError::new(
            ErrorCode::ClusterUnavailable,
            format!("no majority of the metadata group answered within {STATUS_TIMEOUT:?}"),
        ))),
    }
}

/// Proposes one command as a Raft entry of the metadata group and returns
/// what applying it answered (a refusal inside that answer included).
pub(crate) async fn propose_meta(node: &Node, command: MetaCommand) -> Result<MetaResponse, CoordinatorError> {
    submit_meta(node, command).await?.await
}

/// Hands one command to the metadata group's Raft core and returns what
/// waits for its answer. Once this returns, a command this node proposes
/// later is logged after it (the core takes its requests in order), so
/// the two may share one replication round.
pub(crate) async fn submit_meta(
    node: &Node,
    command: MetaCommand,
) -> Result<impl Future<Output = Result<MetaResponse, CoordinatorError>>, CoordinatorError> {
    let raft = node.metadata().raft;
    let node_id = node.node_id();
    let (responder, answer) = ProgressResponder::<TypeConfig, _>::complete_only();
    raft.write(Command::Meta(command)).responder(responder).await.map_err(|fatal| {
        CoordinatorError::Api(ApiError::new(
            ErrorCode::ClusterUnavailable,
            format!("the metadata group is stopped: {fatal}"),
        ))
    })?;
    Ok(async move {
        let written = answer
            .await
            .map_err(|_| {
                CoordinatorError::Api(ApiError::new(
                    ErrorCode::ClusterUnavailable,
                    "the metadata group stopped before the command was written",
                ))
            })?
            .map_err(|error| match error {
                ClientWriteError::ForwardToLeader(forward) => not_leading(forward.leader_id, node_id),
                other => CoordinatorError::Api(ApiError::new(
                    ErrorCode::ClusterUnavailable,
                    format!("the metadata group: {other}"),
                )),
            })?;
        match written.data {
            Response::Meta(response) => Ok(response),
            other => Err(CoordinatorError::Api(ApiError::internal(format!("unexpected apply result {other:?}")))),
        }
    })
}

/// Proposes `commands` in order, each as one Raft entry of the metadata
/// group, and stops at the first refusal, which is returned.
async fn propose(node: &Node, commands: Vec<GroupCommand>) -> Result<Vec<GroupResponse>, CoordinatorError> {
    let mut responses = Vec::with_capacity(commands.len());
    for command in commands {
        match propose_meta(node, MetaCommand::Group(command)).await? {
            MetaResponse::Group(GroupResponse::Error { code, message }) => {
                return Err(CoordinatorError::Api(ApiError::new(code, message)))
            }
            MetaResponse::Group(response) => responses.push(response),
            other => {
                return Err(CoordinatorError::Api(ApiError::internal(format!("unexpected apply result {other:?}"))))
            }
        }
    }
    Ok(responses)
}

/// A fresh member id: a random (version 4) UUID.
fn fresh_member_id() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// A commit, reset or describe's reason to refuse one partition's offset.
fn unknown_partition(state: &MetadataState, topic: &str, partition: u32) -> Option<ApiError> {
    match state.topics.get(topic) {
        None => Some(ApiError::new(ErrorCode::UnknownTopic, format!("topic '{topic}' does not exist"))),
        Some(t) if partition as usize >= t.partitions.len() => Some(ApiError::new(
            ErrorCode::UnknownPartition,
            format!("topic '{topic}' has {} partitions; {partition} does not exist", t.partitions.len()),
        )),
        Some(_) => None,
    }
}

impl Coordinator {
    fn timers(&self) -> std::sync::MutexGuard<'_, Timers> {
        self.inner.timers.lock().expect("timers lock")
    }

    async fn lock(&self, group_id: &str) -> GroupLock {
        let lock = self.inner.locks.lock().expect("lock map").entry(group_id.to_string()).or_default().clone();
        let guard = lock.lock_owned().await;
        GroupLock { inner: self.inner.clone(), group_id: group_id.to_string(), guard: Some(guard) }
    }

    /// The metadata state, once this node confirmed it leads (see
    /// `confirm_leader`): what reads of groups answer from.
    pub(crate) async fn read_state(&self, node: &Node) -> Result<MetadataSnapshot, CoordinatorError> {
        confirm_leader(node).await?;
        Ok(node.metadata_state())
    }

    /// Serves one `ConsumerGroupHeartbeat`.
    pub(crate) async fn heartbeat(
        &self,
        node: &Node,
        request: HeartbeatRequest,
    ) -> Result<HeartbeatAnswer, CoordinatorError> {
        validate_group_id(&request.group_id).map_err(refused)?;
        confirm_leader(node).await?;
        let _lock = self.lock(&request.group_id).await;
        let state = node.metadata_state();
        let now_ms = node.clock.now().ms;
        let plan = plan_heartbeat(&state.groups, &request, &*state, &fresh_member_id(), now_ms).map_err(refused)?;
        let mut commands = plan.commands.clone();
        if !commands.is_empty() && !state.groups.groups.contains_key(&request.group_id) {
            // The join creates the group: with this cluster's timeouts.
            commands.insert(
                0,
                GroupCommand::ConfigureGroup {
                    group_id: request.group_id.clone(),
                    session_timeout_ms: node.config.group_session_timeout.as_millis() as u64,
                    heartbeat_interval_ms: node.config.group_heartbeat_interval.as_millis() as u64,
                },
            );
        }
        let proposed = commands.len();
        propose(node, commands).await?;
        let state = node.metadata_state();
        let answer = plan.answer(&state.groups).map_err(refused)?;
        let now = Instant::now();
        if request.member_epoch == LEAVE_EPOCH {
            self.timers().forget(&request.group_id, plan.member_id());
        } else {
            let revoking = state
                .groups
                .groups
                .get(&request.group_id)
                .and_then(|g| g.members.get(plan.member_id()))
                .is_some_and(|m| !m.pending_revocation.is_empty());
            self.timers().heard(&request.group_id, plan.member_id(), revoking, now);
        }
        if proposed > 0 {
            tracing::debug!(
                group = %request.group_id,
                member = %answer.member_id,
                epoch = answer.member_epoch,
                entries = proposed,
                "group heartbeat applied"
            );
        }
        Ok(answer)
    }

    /// Serves one `OffsetCommit`: per offset, None when stored, else why
    /// not. A refusal of the whole commit (unknown group or member, a
    /// fenced member) is the error.
    pub(crate) async fn commit<L: HighWatermarks>(
        &self,
        node: &Node,
        lookup: &L,
        group_id: &str,
        member_id: &str,
        member_epoch: i32,
        offsets: Vec<OffsetCommit>,
    ) -> Result<Vec<Option<ApiError>>, CoordinatorError> {
        validate_group_id(group_id).map_err(refused)?;
        if offsets.is_empty() || offsets.len() > MAX_OFFSETS_PER_COMMIT {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("a commit carries {} partitions; send 1 to {MAX_OFFSETS_PER_COMMIT}", offsets.len()),
            )
            .into());
        }
        confirm_leader(node).await?;
        let state = node.metadata_state();
        if !member_id.is_empty() {
            // Refusals of the whole commit come before any high watermark
            // is looked up (apply checks them again).
            let group = state.groups.groups.get(group_id).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::GroupIdNotFound,
                    format!("group '{group_id}' does not exist; join it before committing as a member"),
                )
            })?;
            let first = &offsets[0];
            if let Err(error) = group.check_commit(member_id, member_epoch, &first.topic, first.partition) {
                // Not owning this one partition is that partition's answer.
                if error.code != ErrorCode::StaleMemberEpoch {
                    return Err(refused(error));
                }
            }
        }
        let keys: Vec<(&str, u32, u64)> = offsets.iter().map(|o| (o.topic.as_str(), o.partition, o.offset)).collect();
        let mut outcomes = self.check_offsets(lookup, &state, &keys).await;
        let accepted: Vec<OffsetCommit> =
            offsets.iter().zip(&outcomes).filter(|(_, outcome)| outcome.is_none()).map(|(o, _)| o.clone()).collect();
        if accepted.is_empty() {
            return Ok(outcomes);
        }
        let command = GroupCommand::CommitOffsets {
            group_id: group_id.to_string(),
            member_id: member_id.to_string(),
            member_epoch,
            offsets: accepted,
            commit_ms: node.clock.now().ms,
        };
        let Some(GroupResponse::OffsetsCommitted { partitions }) = propose(node, vec![command]).await?.pop() else {
            return Err(ApiError::internal("a commit answered something else").into());
        };
        // The command's answers are in the order of the offsets it carried.
        let mut results = partitions.into_iter();
        for outcome in outcomes.iter_mut().filter(|o| o.is_none()) {
            let result = results.next().ok_or_else(|| ApiError::internal("a commit answered too few partitions"))?;
            *outcome = result.error.map(|e| ApiError::new(e.code, e.message));
        }
        let stored = outcomes.iter().filter(|o| o.is_none()).count() as u64;
        self.count_commits(group_id, stored, &node.metadata_state().groups);
        Ok(outcomes)
    }

    /// Serves one `ResetOffsets`: every offset is checked, and nothing is
    /// stored unless all are valid.
    pub(crate) async fn reset_offsets<L: HighWatermarks>(
        &self,
        node: &Node,
        lookup: &L,
        group_id: &str,
        offsets: Vec<(String, u32, u64)>,
    ) -> Result<(), CoordinatorError> {
        validate_group_id(group_id).map_err(refused)?;
        if offsets.is_empty() || offsets.len() > MAX_OFFSETS_PER_COMMIT {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("a reset carries {} partitions; send 1 to {MAX_OFFSETS_PER_COMMIT}", offsets.len()),
            )
            .into());
        }
        confirm_leader(node).await?;
        let _lock = self.lock(group_id).await;
        let state = node.metadata_state();
        let keys: Vec<(&str, u32, u64)> = offsets.iter().map(|(t, p, o)| (t.as_str(), *p, *o)).collect();
        let problems = self.check_offsets(lookup, &state, &keys).await;
        if let Some(problem) = problems.into_iter().flatten().next() {
            return Err(problem.into());
        }
        let command =
            GroupCommand::ResetOffsets { group_id: group_id.to_string(), offsets, now_ms: node.clock.now().ms };
        propose(node, vec![command]).await?;
        Ok(())
    }

    /// Serves one `DeleteGroup` (refused while the group has members).
    pub(crate) async fn delete_group(&self, node: &Node, group_id: &str) -> Result<(), CoordinatorError> {
        validate_group_id(group_id).map_err(refused)?;
        confirm_leader(node).await?;
        let _lock = self.lock(group_id).await;
        propose(node, vec![GroupCommand::DeleteGroup { group_id: group_id.to_string() }]).await?;
        // A group created again under this id counts its commits afresh.
        self.inner.offset_commits.lock().expect("commit counts").remove(group_id);
        Ok(())
    }

    /// Per offset (topic, partition, offset), None when it may be stored,
    /// else why not: its topic or partition does not exist, it is past the
    /// partition's high watermark, or the partition's leader could not be
    /// asked.
    async fn check_offsets<L: HighWatermarks>(
        &self,
        lookup: &L,
        state: &MetadataState,
        offsets: &[(&str, u32, u64)],
    ) -> Vec<Option<ApiError>> {
        let mut outcomes: Vec<Option<ApiError>> = vec![None; offsets.len()];
        let mut to_ask: Vec<(usize, &Topic, u32)> = Vec::new();
        {
            let known = self.inner.high_watermarks.lock().expect("high watermark cache");
            for (index, (topic, partition, offset)) in offsets.iter().enumerate() {
                if let Some(problem) = unknown_partition(state, topic, *partition) {
                    outcomes[index] = Some(problem);
                    continue;
                }
                let topic = &state.topics[*topic];
                if known.get(&(topic.id, *partition)).is_none_or(|hw| offset > hw) {
                    to_ask.push((index, topic, *partition));
                }
            }
        }
        let partitions: Vec<(&Topic, u32)> = to_ask.iter().map(|(_, topic, partition)| (*topic, *partition)).collect();
        let asked = self.look_up(lookup, &partitions).await;
        for ((index, topic, partition), answer) in to_ask.into_iter().zip(asked) {
            let offset = offsets[index].2;
            outcomes[index] = match answer {
                Ok((_, high_watermark)) if offset <= high_watermark => None,
                Ok((log_start, high_watermark)) => Some(ApiError {
                    range: Some((log_start, high_watermark)),
                    ..ApiError::new(
                        ErrorCode::OffsetOutOfRange,
                        format!(
                            "{}/{partition}: offset {offset} is past the high watermark {high_watermark}; commit \
                             the offset after the last record read, at most the high watermark",
                            topic.name
                        ),
                    )
                }),
                Err(error) => Some(error),
            };
        }
        outcomes
    }

    /// Adds `stored` partition offsets to the group's commit count.
    fn count_commits(&self, group_id: &str, stored: u64, groups: &GroupsState) {
        let mut counts = self.inner.offset_commits.lock().expect("commit counts");
        if !counts.contains_key(group_id) && counts.len() >= MAX_GROUPS {
            counts.retain(|id, _| groups.groups.contains_key(id));
        }
        *counts.entry(group_id.to_string()).or_default() += stored;
    }

    /// Every group's figures for `/metrics`, or `None` when this node does
    /// not lead the metadata group (or cannot confirm it does): a deposed
    /// leader exports nothing rather than its last figures. First asks the
    /// leaders of the partitions with committed offsets for their high
    /// watermarks, for at most `lookup_time`; partitions not asked by then
    /// count with the highest high watermark seen before.
    pub(crate) async fn metrics<L: HighWatermarks>(
        &self,
        node: &Node,
        lookup: &L,
        lookup_time: Duration,
    ) -> Option<Vec<GroupMetrics>> {
        let state = self.read_state(node).await.ok()?;
        let mut committed: BTreeSet<(u64, u32)> = BTreeSet::new();
        let mut partitions: Vec<(&Topic, u32)> = Vec::new();
        for group in state.groups.groups.values() {
            for (name, offsets) in &group.offsets {
                let Some(topic) = state.topics.get(name) else { continue };
                for partition in offsets.keys().filter(|p| (**p as usize) < topic.partitions.len()) {
                    if committed.insert((topic.id, *partition)) {
                        partitions.push((topic, *partition));
                    }
                }
            }
        }
        if tokio::time::timeout(lookup_time, self.look_up(lookup, &partitions)).await.is_err() {
            tracing::debug!(
                partitions = partitions.len(),
                "not every high watermark was asked for within {lookup_time:?}"
            );
        }
        let high_watermarks = self.inner.high_watermarks.lock().expect("high watermark cache");
        let commits = self.inner.offset_commits.lock().expect("commit counts");
        Some(group_metrics(&state, &high_watermarks, &commits))
    }

    /// Asks the partitions' leaders for their offsets (log start, high
    /// watermark), a bounded number at once, and remembers the high
    /// watermarks. Answers in the given order.
    pub(crate) async fn look_up<L: HighWatermarks>(
        &self,
        lookup: &L,
        partitions: &[(&Topic, u32)],
    ) -> Vec<Result<(u64, u64), ApiError>> {
        let mut answers = Vec::with_capacity(partitions.len());
        for chunk in partitions.chunks(GROUP_HIGH_WATERMARK_LOOKUPS_IN_FLIGHT) {
            let asked =
                futures::future::join_all(chunk.iter().map(|(topic, p)| lookup.high_watermark(topic, *p))).await;
            let mut known = self.inner.high_watermarks.lock().expect("high watermark cache");
            for ((topic, partition), answer) in chunk.iter().zip(&asked) {
                if let Ok((_, high_watermark)) = answer {
                    let entry = known.entry((topic.id, *partition)).or_default();
                    *entry = (*entry).max(*high_watermark);
                }
            }
            answers.extend(asked);
        }
        answers
    }

    /// The leader's timers and housekeeping, for as long as the node runs:
    /// member expiry, group refresh after topic changes, offsets expiry.
    pub(crate) async fn run(self, node: Node) {
        let mut tick = tokio::time::interval(GROUP_TIMER_CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // (next topic id, next group id, topic count) when groups were last
        // brought up to date with the topics: a create raises the first, an
        // alter that adds partitions the second, a delete lowers the third,
        // and a partition count never shrinks.
        let mut topics_seen: Option<(u64, u64, usize)> = None;
        let mut offsets_checked: Option<Instant> = None;
        loop {
            tick.tick().await;
            let Some(term) = leading_term(&node) else {
                self.timers().stand_down();
                topics_seen = None;
                continue;
            };
            let state = node.metadata_state();
            let now = Instant::now();
            let due = {
                let mut timers = self.timers();
                if timers.arm(term, &state.groups, now) {
                    tracing::info!(term, groups = state.groups.groups.len(), "leading the group coordinator");
                    topics_seen = None;
                }
                timers.due(&state.groups, now)
            };
            for (group_id, member_id) in due {
                self.expire_member(&node, &group_id, &member_id).await;
            }
            let signature = (state.next_topic_id, state.next_group_id, state.topics.len());
            if topics_seen != Some(signature) && self.refresh_groups(&node).await {
                topics_seen = Some(signature);
                let live: std::collections::HashSet<u64> = state.topics.values().map(|t| t.id).collect();
                self.inner.high_watermarks.lock().expect("high watermark cache").retain(|(id, _), _| live.contains(id));
            }
            if offsets_checked.is_none_or(|at| at.elapsed() >= OFFSETS_EXPIRY_CHECK_INTERVAL) {
                self.expire_offsets(&node).await;
                offsets_checked = Some(Instant::now());
            }
        }
    }

    /// Expires a member whose timer fired, unless a heartbeat came since.
    async fn expire_member(&self, node: &Node, group_id: &str, member_id: &str) {
        let _lock = self.lock(group_id).await;
        let state = node.metadata_state();
        if !self.timers().is_due(&state.groups, group_id, member_id, Instant::now()) {
            return;
        }
        let commands = match plan_member_expiry(&state.groups, group_id, member_id, &*state, node.clock.now().ms) {
            Ok(commands) => commands,
            Err(error) => {
                tracing::warn!(group = group_id, member = member_id, %error, "cannot plan a member expiry");
                return;
            }
        };
        match propose(node, commands).await {
            Ok(_) => {
                self.timers().forget(group_id, member_id);
                tracing::info!(group = group_id, member = member_id, "member expired: no heartbeat within its timeout");
            }
            Err(error) => tracing::warn!(group = group_id, member = member_id, ?error, "member expiry not applied"),
        }
    }

    /// Brings every group with members whose topics changed up to date;
    /// false when one could not be (it is tried again next tick).
    async fn refresh_groups(&self, node: &Node) -> bool {
        let state = node.metadata_state();
        let stale: Vec<String> = state
            .groups
            .groups
            .values()
            .filter(|g| !g.members.is_empty() && topics_changed(g, &*state))
            .map(|g| g.group_id.clone())
            .collect();
        let mut done = true;
        for group_id in stale {
            let _lock = self.lock(&group_id).await;
            let state = node.metadata_state();
            let commands = match plan_group_refresh(&state.groups, &group_id, &*state) {
                Ok(commands) => commands,
                Err(error) if error.code == ErrorCode::GroupIdNotFound => continue,
                Err(error) => {
                    tracing::warn!(group = %group_id, %error, "cannot plan a group refresh");
                    done = false;
                    continue;
                }
            };
            if let Err(error) = propose(node, commands).await {
                tracing::warn!(group = %group_id, ?error, "group refresh not applied");
                done = false;
            }
        }
        done
    }

    /// Expires committed offsets past retention (and deletes groups left
    /// with neither members nor offsets), once cluster time is trusted.
    async fn expire_offsets(&self, node: &Node) {
        let now = node.clock.now();
        if !now.trusted {
            return;
        }
        let retention_ms = node.config.offsets_retention.as_millis() as u64;
        let planned = plan_offsets_expiry(&node.metadata_state().groups, now.ms, retention_ms);
        for command in planned {
            let group_id = command.group_id().to_string();
            let _lock = self.lock(&group_id).await;
            match propose(node, vec![command]).await {
                Ok(responses) => {
                    if let Some(GroupResponse::OffsetsExpired { expired, group_deleted }) = responses.first() {
                        tracing::info!(group = %group_id, expired, group_deleted, "committed offsets expired");
                    }
                }
                // A member joined since it was planned: nothing expires.
                Err(CoordinatorError::Api(error)) if error.code == ErrorCode::GroupNotEmpty => {}
                Err(error) => tracing::warn!(group = %group_id, ?error, "offsets expiry not applied"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use strata_state::group::plan_heartbeat;

    use super::*;

    fn join(state: &mut GroupsState, topics: &BTreeMap<String, u32>, member: &str) {
        let request = HeartbeatRequest {
            group_id: "g".into(),
            member_id: member.into(),
            member_epoch: 0,
            instance_id: None,
            rebalance_timeout_ms: 60_000,
            subscribed_topics: Some(["t".to_string()].into()),
            assignor: None,
            owned_partitions: None,
            client_id: String::new(),
            client_host: String::new(),
        };
        let plan = plan_heartbeat(state, &request, topics, member, 0).unwrap();
        for command in plan.commands {
            assert!(!matches!(state.apply(command), GroupResponse::Error { .. }));
        }
    }

    fn group_of(members: &[&str]) -> (GroupsState, BTreeMap<String, u32>) {
        let topics = BTreeMap::from([("t".to_string(), 4)]);
        let mut state = GroupsState::default();
        for member in members {
            join(&mut state, &topics, member);
        }
        (state, topics)
    }

    #[test]
    fn a_new_term_rearms_every_member_with_a_full_session() {
        let (state, _) = group_of(&["a", "b"]);
        let session = millis(state.groups["g"].members["a"].session_timeout_ms);
        let start = Instant::now();
        let mut timers = Timers::default();
        assert!(timers.arm(3, &state, start));
        assert!(!timers.arm(3, &state, start + session), "the same term re-arms nothing");
        // Heard long ago under the old term: a new term starts them afresh.
        timers.heard("g", "a", false, start);
        let later = start + session * 2;
        assert!(timers.arm(4, &state, later));
        assert!(timers.due(&state, later + session - millis(1)).is_empty());
        let due = timers.due(&state, later + session);
        assert_eq!(due, vec![("g".to_string(), "a".to_string()), ("g".to_string(), "b".to_string())]);
        timers.stand_down();
        assert_eq!(timers.term, None);
        assert!(timers.groups.is_empty());
    }

    #[test]
    fn a_member_expires_after_its_session_timeout_unless_heard() {
        let (state, _) = group_of(&["a", "b"]);
        let session = millis(state.groups["g"].members["a"].session_timeout_ms);
        let start = Instant::now();
        let mut timers = Timers::default();
        timers.arm(1, &state, start);
        let half = start + session / 2;
        timers.heard("g", "b", false, half);
        assert!(timers.due(&state, start + session - millis(1)).is_empty());
        let at_timeout = start + session;
        assert_eq!(timers.due(&state, at_timeout), vec![("g".to_string(), "a".to_string())]);
        assert!(timers.is_due(&state, "g", "a", at_timeout));
        assert!(!timers.is_due(&state, "g", "b", at_timeout), "b was heard since");
        // A heartbeat between the check and the expiry saves it.
        timers.heard("g", "a", false, at_timeout);
        assert!(!timers.is_due(&state, "g", "a", at_timeout));
        // Members that left are forgotten.
        timers.forget("g", "a");
        assert!(!timers.is_due(&state, "g", "a", at_timeout + session * 2));
    }

    #[test]
    fn the_rebalance_timeout_runs_only_while_partitions_are_pending_revocation() {
        let (mut state, topics) = group_of(&["a"]);
        // "b" joins: the target moves partitions from a, which must revoke.
        join(&mut state, &topics, "b");
        let request = HeartbeatRequest {
            group_id: "g".into(),
            member_id: "a".into(),
            member_epoch: state.groups["g"].members["a"].member_epoch,
            instance_id: None,
            rebalance_timeout_ms: 0,
            subscribed_topics: None,
            assignor: None,
            owned_partitions: None,
            client_id: String::new(),
            client_host: String::new(),
        };
        let plan = plan_heartbeat(&state, &request, &topics, "x", 0).unwrap();
        for command in plan.commands {
            assert!(!matches!(state.apply(command), GroupResponse::Error { .. }));
        }
        let a = state.groups["g"].members["a"].clone();
        assert!(!a.pending_revocation.is_empty(), "a must give up partitions");
        let rebalance = millis(a.rebalance_timeout_ms);
        let session = millis(a.session_timeout_ms);
        assert!(rebalance < session * 2);
        let start = Instant::now();
        let mut timers = Timers::default();
        timers.arm(1, &state, start);
        // Heartbeats keep the session alive, but not past the rebalance timeout.
        let mut now = start;
        while now < start + rebalance {
            timers.heard("g", "a", true, now);
            timers.heard("g", "b", false, now);
            assert!(timers.due(&state, now).is_empty());
            now += session / 2;
        }
        timers.heard("g", "a", true, now);
        timers.heard("g", "b", false, now);
        assert_eq!(timers.due(&state, now), vec![("g".to_string(), "a".to_string())]);
        // Once nothing is pending the rebalance timer stops.
        let mut released = state.clone();
        let member = released.groups.get_mut("g").unwrap().members.get_mut("a").unwrap();
        member.assigned.extend(&std::mem::take(&mut member.pending_revocation));
        timers.heard("g", "a", false, now);
        assert!(timers.due(&released, now).is_empty());
    }

    #[test]
    fn groups_whose_topics_changed_are_found() {
        let (state, topics) = group_of(&["a"]);
        let group = &state.groups["g"];
        assert!(!topics_changed(group, &topics));
        assert!(topics_changed(group, &BTreeMap::from([("t".to_string(), 5)])), "a count changed");
        assert!(topics_changed(group, &BTreeMap::<String, u32>::new()), "the topic was deleted");
        assert!(!topics_changed(group, &BTreeMap::from([("t".to_string(), 4), ("u".to_string(), 2)])));
        // A subscription to a topic that does not exist yet, created since.
        let mut waiting = group.clone();
        waiting.subscriptions.insert("u".into(), 1);
        assert!(!topics_changed(&waiting, &topics));
        assert!(topics_changed(&waiting, &BTreeMap::from([("t".to_string(), 4), ("u".to_string(), 2)])));
    }

    fn standalone_commit(state: &mut GroupsState, group: &str, offsets: &[(&str, u32, u64)]) {
        let command = GroupCommand::CommitOffsets {
            group_id: group.into(),
            member_id: String::new(),
            member_epoch: LEAVE_EPOCH,
            offsets: offsets
                .iter()
                .map(|(topic, partition, offset)| OffsetCommit {
                    topic: topic.to_string(),
                    partition: *partition,
                    offset: *offset,
                    metadata: String::new(),
                })
                .collect(),
            commit_ms: 0,
        };
        assert!(!matches!(state.apply(command), GroupResponse::Error { .. }));
    }

    #[test]
    fn group_metrics_count_lag_only_where_the_high_watermark_is_known() {
        let mut state = MetadataState::default();
        for (name, partitions) in [("t", 4), ("u", 1)] {
            let create = MetaCommand::CreateTopic {
                name: name.into(),
                partitions,
                replication_factor: 1,
                config: Default::default(),
                nodes: vec![1],
                created_ms: 0,
            };
            assert!(matches!(state.apply(create), MetaResponse::TopicCreated(_)));
        }
        let (mut groups, _) = group_of(&["a"]);
        let g_epoch = groups.groups["g"].group_epoch;
        assert!(g_epoch >= 1, "a join bumps the group epoch");
        // "gone" was deleted after the commit; t/9 no longer exists.
        let offsets = [("t", 0, 4), ("t", 1, 5), ("t", 2, 1), ("u", 0, 2), ("gone", 0, 3), ("t", 9, 0)];
        standalone_commit(&mut groups, "h", &offsets);
        state.groups = groups;
        let (t, u) = (state.topics["t"].id, state.topics["u"].id);
        // t/2's high watermark is not known; (u, 1) is not a partition.
        let high_watermarks = HashMap::from([((t, 0), 10), ((t, 1), 5), ((u, 0), 7), ((u, 1), 99)]);
        let commits = HashMap::from([("h".to_string(), 6), ("deleted".to_string(), 3)]);
        let figures = group_metrics(&state, &high_watermarks, &commits);
        assert_eq!(
            figures,
            vec![
                GroupMetrics {
                    group_id: "g".into(),
                    members: 1,
                    rebalances: g_epoch as u64,
                    offset_commits: 0,
                    lag: None
                },
                GroupMetrics {
                    group_id: "h".into(),
                    members: 0,
                    rebalances: 0,
                    offset_commits: 6,
                    // t/0 is 6 behind, t/1 none, u/0 5.
                    lag: Some(Lag { sum: 11, max: 6 }),
                },
            ]
        );
    }

    #[test]
    fn commit_counts_keep_at_most_one_entry_past_max_groups() {
        let coordinator = Coordinator::default();
        let (mut groups, _) = group_of(&[]);
        standalone_commit(&mut groups, "kept", &[("t", 0, 0)]);
        coordinator.count_commits("kept", 2, &groups);
        for n in 1..MAX_GROUPS {
            coordinator.count_commits(&format!("deleted-{n}"), 1, &groups);
        }
        coordinator.count_commits("kept", 1, &groups);
        assert_eq!(coordinator.inner.offset_commits.lock().unwrap().len(), MAX_GROUPS);
        // A new group past the bound drops the groups the state no longer has.
        coordinator.count_commits("new", 1, &groups);
        let counts = coordinator.inner.offset_commits.lock().unwrap().clone();
        assert_eq!(counts, HashMap::from([("kept".to_string(), 3), ("new".to_string(), 1)]));
    }

    #[test]
    fn member_ids_are_uuids() {
        let a = fresh_member_id();
        assert_eq!(a.len(), 36);
        assert_eq!(a.as_bytes()[14], b'4', "version 4: {a}");
        assert_eq!(a.matches('-').count(), 4);
        assert_ne!(a, fresh_member_id());
    }
}
