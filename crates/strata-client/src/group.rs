//! Consumer group calls on [`Client`]: the member heartbeat, offset commits
//! and fetches, and the admin calls (list, describe, delete, reset). Thin:
//! one request each, answered by the metadata leader (any node forwards),
//! in domain types. A group consumer that heartbeats, reconciles and
//! commits on a schedule is built on these.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use strata_proto::v1 as proto;

use crate::{Client, ClientError};

/// Partitions by topic: an assignment, or what a member owns.
pub type TopicPartitions = BTreeMap<String, BTreeSet<u32>>;

/// The member epoch of a join.
pub const JOIN_EPOCH: i32 = 0;
/// The member epoch of a leave: the member's partitions go to others at once.
pub const LEAVE_EPOCH: i32 = -1;
/// The member epoch of a static member leaving for now: it keeps its
/// partitions until its session times out, for a restart to take back.
pub const STATIC_LEAVE_EPOCH: i32 = -2;

/// One `ConsumerGroupHeartbeat` of a member.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupHeartbeat {
    pub group_id: String,
    /// Empty on a first join: the server makes one. A member that makes its
    /// own (a UUID) can repeat a join whose answer was lost.
    pub member_id: String,
    /// [`JOIN_EPOCH`], [`LEAVE_EPOCH`], [`STATIC_LEAVE_EPOCH`], or the epoch
    /// of the last answer.
    pub member_epoch: i32,
    /// Static membership: a restart with the same instance id within the
    /// session timeout gets the same partitions back.
    pub instance_id: Option<String>,
    /// How long the member may take to give up revoked partitions; read on
    /// join, `None` for the server's default.
    pub rebalance_timeout: Option<Duration>,
    /// Required on join; afterwards `None` means unchanged.
    pub subscribed_topics: Option<BTreeSet<String>>,
    /// `uniform` (the default) or `range`; `None`: the default on join,
    /// afterwards unchanged.
    pub assignor: Option<String>,
    /// The partitions the member owns, sent when they change (after it
    /// gave up revoked ones) and on a retried heartbeat. `None`: unchanged.
    pub owned_partitions: Option<TopicPartitions>,
    pub client_id: String,
}

impl GroupHeartbeat {
    /// A first join of `group_id` subscribed to `topics`.
    pub fn join(group_id: &str, topics: &[&str]) -> GroupHeartbeat {
        GroupHeartbeat {
            group_id: group_id.to_string(),
            member_epoch: JOIN_EPOCH,
            subscribed_topics: Some(topics.iter().map(|t| t.to_string()).collect()),
            ..Default::default()
        }
    }
}

/// The answer to a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupHeartbeatAnswer {
    pub member_id: String,
    /// The member's epoch now (-1 or -2 after a leave): send it next time.
    pub member_epoch: i32,
    /// Heartbeat this often.
    pub heartbeat_interval: Duration,
    /// Every partition the member may own now; it gives up any other.
    pub assignment: TopicPartitions,
}

/// One partition's offset to commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetToCommit {
    pub topic: String,
    pub partition: u32,
    /// The next offset to read: at most the partition's high watermark.
    pub offset: u64,
    /// Free text kept with the offset.
    pub metadata: String,
}

/// One partition's result of a commit.
#[derive(Clone, Debug)]
pub struct CommitResult {
    pub topic: String,
    pub partition: u32,
    /// `None`: stored. `STALE_MEMBER_EPOCH`: the member does not own the
    /// partition at that epoch; `OFFSET_OUT_OF_RANGE`: past the high
    /// watermark; `UNKNOWN_TOPIC`, `UNKNOWN_PARTITION`.
    pub error: Option<ClientError>,
}

/// A group's committed offset of one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: u64,
    pub metadata: String,
    /// Cluster time of the commit, ms since the Unix epoch.
    pub commit_time_ms: u64,
}

/// One partition of an offset fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchedOffset {
    pub topic: String,
    pub partition: u32,
    /// `None` when the group has no offset for it.
    pub committed: Option<CommittedOffset>,
}

/// A group's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    /// No members (it may hold committed offsets).
    Empty,
    /// Membership or topics changed; a new target assignment is due.
    Assigning,
    /// Some members have not reached the target assignment yet.
    Reconciling,
    /// Every member owns exactly its target.
    Stable,
    /// A state this client does not know (a newer server).
    Unknown,
}

impl GroupState {
    fn from_wire(state: i32) -> GroupState {
        match proto::ConsumerGroupState::try_from(state) {
            Ok(proto::ConsumerGroupState::Empty) => GroupState::Empty,
            Ok(proto::ConsumerGroupState::Assigning) => GroupState::Assigning,
            Ok(proto::ConsumerGroupState::Reconciling) => GroupState::Reconciling,
            Ok(proto::ConsumerGroupState::Stable) => GroupState::Stable,
            _ => GroupState::Unknown,
        }
    }
}

/// Where a member is on its way to its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    Stable,
    /// It must give up partitions before its epoch moves.
    UnrevokedPartitions,
    /// It waits for partitions another member still owns.
    UnreleasedPartitions,
    /// A state this client does not know.
    Unknown,
}

impl MemberState {
    fn from_wire(state: i32) -> MemberState {
        match proto::GroupMemberState::try_from(state) {
            Ok(proto::GroupMemberState::Stable) => MemberState::Stable,
            Ok(proto::GroupMemberState::UnrevokedPartitions) => MemberState::UnrevokedPartitions,
            Ok(proto::GroupMemberState::UnreleasedPartitions) => MemberState::UnreleasedPartitions,
            _ => MemberState::Unknown,
        }
    }
}

/// One group of `list_groups`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub state: GroupState,
    pub members: u32,
    pub group_epoch: i32,
}

/// One member of `describe_group`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    /// -2 while a static member is away.
    pub member_epoch: i32,
    pub client_id: String,
    pub client_host: String,
    /// Partitions it owns and keeps.
    pub assignment: TopicPartitions,
    /// Partitions it still owns but must give up.
    pub pending_revocation: TopicPartitions,
    pub subscribed_topics: BTreeSet<String>,
    pub state: MemberState,
}

/// One partition of `describe_group`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupPartitionDescription {
    pub topic: String,
    pub partition: u32,
    /// The member that owns it.
    pub owner: Option<String>,
    pub committed_offset: Option<u64>,
    /// `None` when its leader could not be asked.
    pub high_watermark: Option<u64>,
    /// High watermark minus committed offset, when both are known.
    pub lag: Option<u64>,
}

/// Answer of `describe_group`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: GroupState,
    pub group_epoch: i32,
    /// The group epoch the target assignment was computed for.
    pub target_epoch: i32,
    pub assignor: String,
    pub session_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub members: Vec<GroupMemberDescription>,
    /// Every partition the group reads, owns or has an offset for, by
    /// topic and partition.
    pub partitions: Vec<GroupPartitionDescription>,
}

fn to_wire(partitions: &TopicPartitions) -> Vec<proto::TopicPartitions> {
    partitions
        .iter()
        .filter(|(_, p)| !p.is_empty())
        .map(|(topic, p)| proto::TopicPartitions { topic: topic.clone(), partitions: p.iter().copied().collect() })
        .collect()
}

fn from_wire(partitions: Vec<proto::TopicPartitions>) -> TopicPartitions {
    let mut out = TopicPartitions::new();
    for topic in partitions.into_iter().filter(|t| !t.partitions.is_empty()) {
        out.entry(topic.topic).or_default().extend(topic.partitions);
    }
    out
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

impl Client {
    /// Sends one group heartbeat (join, heartbeat, leave). Back-off answers
    /// (no metadata leader yet) are retried within the request timeout;
    /// `FENCED_MEMBER_EPOCH` and `UNKNOWN_MEMBER_ID` mean the member must
    /// drop its partitions and rejoin with epoch 0.
    pub async fn group_heartbeat(&self, heartbeat: &GroupHeartbeat) -> Result<GroupHeartbeatAnswer, ClientError> {
        let request = proto::ConsumerGroupHeartbeatRequest {
            group_id: heartbeat.group_id.clone(),
            member_id: heartbeat.member_id.clone(),
            member_epoch: heartbeat.member_epoch,
            instance_id: heartbeat.instance_id.clone().unwrap_or_default(),
            rebalance_timeout_ms: heartbeat
                .rebalance_timeout
                .map_or(0, |t| t.as_millis().clamp(1, u32::MAX as u128) as u32),
            has_subscribed_topics: heartbeat.subscribed_topics.is_some(),
            subscribed_topics: heartbeat.subscribed_topics.iter().flatten().cloned().collect(),
            assignor: heartbeat.assignor.clone().unwrap_or_default(),
            has_owned_partitions: heartbeat.owned_partitions.is_some(),
            owned_partitions: heartbeat.owned_partitions.as_ref().map(to_wire).unwrap_or_default(),
            client_id: heartbeat.client_id.clone(),
        };
        let answer = self
            .call_any(request, |mut stub, request| async move { stub.consumer_group_heartbeat(request).await })
            .await?;
        Ok(GroupHeartbeatAnswer {
            member_id: answer.member_id,
            member_epoch: answer.member_epoch,
            heartbeat_interval: Duration::from_millis(answer.heartbeat_interval_ms as u64),
            assignment: from_wire(answer.assignment),
        })
    }

    /// Commits offsets of many partitions in one request, as member
    /// `member_id` at `member_epoch`, or standalone (empty member id, epoch
    /// -1) for a group without members. A refusal of the whole commit
    /// (unknown group or member, a fenced member) is the error; otherwise
    /// each partition has its result, in the order given.
    pub async fn commit_offsets(
        &self,
        group_id: &str,
        member_id: &str,
        member_epoch: i32,
        offsets: &[OffsetToCommit],
    ) -> Result<Vec<CommitResult>, ClientError> {
        let request = proto::OffsetCommitRequest {
            group_id: group_id.to_string(),
            member_id: member_id.to_string(),
            member_epoch,
            partitions: offsets
                .iter()
                .map(|o| proto::OffsetCommitPartition {
                    topic: o.topic.clone(),
                    partition: o.partition,
                    offset: o.offset,
                    metadata: o.metadata.clone(),
                })
                .collect(),
        };
        let answer =
            self.call_any(request, |mut stub, request| async move { stub.offset_commit(request).await }).await?;
        Ok(answer
            .partitions
            .into_iter()
            .map(|p| CommitResult { topic: p.topic, partition: p.partition, error: ClientError::from_wire(p.error) })
            .collect())
    }

    /// The group's committed offsets of `partitions`, or of every partition
    /// it has one for when `partitions` is empty.
    pub async fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: &TopicPartitions,
    ) -> Result<Vec<FetchedOffset>, ClientError> {
        let request = proto::OffsetFetchRequest { group_id: group_id.to_string(), partitions: to_wire(partitions) };
        let answer =
            self.call_any(request, |mut stub, request| async move { stub.offset_fetch(request).await }).await?;
        Ok(answer
            .offsets
            .into_iter()
            .map(|o| FetchedOffset {
                committed: o.has_offset.then_some(CommittedOffset {
                    offset: o.offset,
                    metadata: o.metadata,
                    commit_time_ms: o.commit_time_ms,
                }),
                topic: o.topic,
                partition: o.partition,
            })
            .collect())
    }

    /// Every consumer group, by id.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>, ClientError> {
        let answer = self
            .call_any(proto::ListGroupsRequest {}, |mut stub, request| async move { stub.list_groups(request).await })
            .await?;
        Ok(answer
            .groups
            .into_iter()
            .map(|g| GroupListing {
                group_id: g.group_id,
                state: GroupState::from_wire(g.state),
                members: g.members,
                group_epoch: g.group_epoch,
            })
            .collect())
    }

    /// A group: its state, members and their partitions, and per partition
    /// its owner, committed offset, high watermark and lag.
    pub async fn describe_group(&self, group_id: &str) -> Result<GroupDescription, ClientError> {
        let request = proto::DescribeGroupRequest { group_id: group_id.to_string() };
        let answer =
            self.call_any(request, |mut stub, request| async move { stub.describe_group(request).await }).await?;
        Ok(GroupDescription {
            group_id: answer.group_id,
            state: GroupState::from_wire(answer.state),
            group_epoch: answer.group_epoch,
            target_epoch: answer.target_epoch,
            assignor: answer.assignor,
            session_timeout: Duration::from_millis(answer.session_timeout_ms),
            heartbeat_interval: Duration::from_millis(answer.heartbeat_interval_ms),
            members: answer
                .members
                .into_iter()
                .map(|m| GroupMemberDescription {
                    member_id: m.member_id,
                    instance_id: non_empty(m.instance_id),
                    member_epoch: m.member_epoch,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    assignment: from_wire(m.assignment),
                    pending_revocation: from_wire(m.pending_revocation),
                    subscribed_topics: m.subscribed_topics.into_iter().collect(),
                    state: MemberState::from_wire(m.state),
                })
                .collect(),
            partitions: answer
                .partitions
                .into_iter()
                .map(|p| {
                    let known = p.has_committed_offset && p.has_high_watermark;
                    GroupPartitionDescription {
                        owner: non_empty(p.owner),
                        committed_offset: p.has_committed_offset.then_some(p.committed_offset),
                        high_watermark: p.has_high_watermark.then_some(p.high_watermark),
                        lag: known.then_some(p.lag),
                        topic: p.topic,
                        partition: p.partition,
                    }
                })
                .collect(),
        })
    }

    /// Deletes a group without members, offsets and all.
    pub async fn delete_group(&self, group_id: &str) -> Result<(), ClientError> {
        let request = proto::DeleteGroupRequest { group_id: group_id.to_string() };
        self.call_any(request, |mut stub, request| async move { stub.delete_group(request).await }).await?;
        Ok(())
    }

    /// Sets a group's committed offsets, as (topic, partition, offset); the
    /// group must have no members. All or nothing: an offset past its
    /// partition's high watermark refuses the whole reset.
    pub async fn reset_offsets(&self, group_id: &str, offsets: &[(String, u32, u64)]) -> Result<(), ClientError> {
        let request = proto::ResetOffsetsRequest {
            group_id: group_id.to_string(),
            offsets: offsets
                .iter()
                .map(|(topic, partition, offset)| proto::PartitionOffset {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: *offset,
                })
                .collect(),
        };
        self.call_any(request, |mut stub, request| async move { stub.reset_offsets(request).await }).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_round_trip_and_empty_topics_drop() {
        let mut partitions = TopicPartitions::new();
        partitions.insert("a".into(), [2, 0].into());
        partitions.insert("empty".into(), BTreeSet::new());
        let wire = to_wire(&partitions);
        assert_eq!(wire.len(), 1);
        assert_eq!(wire[0].partitions, vec![0, 2]);
        partitions.remove("empty");
        assert_eq!(from_wire(wire), partitions);
    }

    #[test]
    fn a_join_names_its_subscription() {
        let join = GroupHeartbeat::join("g", &["t", "u"]);
        assert_eq!(join.member_epoch, JOIN_EPOCH);
        assert_eq!(join.subscribed_topics, Some(["t".to_string(), "u".to_string()].into()));
        assert!(join.member_id.is_empty() && join.owned_partitions.is_none());
    }

    #[test]
    fn unknown_states_from_a_newer_server_are_kept_apart() {
        assert_eq!(GroupState::from_wire(proto::ConsumerGroupState::Stable as i32), GroupState::Stable);
        assert_eq!(GroupState::from_wire(99), GroupState::Unknown);
        assert_eq!(MemberState::from_wire(99), MemberState::Unknown);
    }
}
