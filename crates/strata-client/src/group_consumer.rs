//! A member of a consumer group: it subscribes to topics and reads the
//! partitions the group coordinator assigns it, committing its progress in
//! the group.
//!
//! Two halves share one [`Session`]:
//! - a background task heartbeats at the group's interval (and at once when
//!   the member gave partitions up or took new ones), listing the
//!   partitions the member owns, and keeps the latest answer: the member id,
//!   its epoch and its assignment. A fenced member (`FENCED_MEMBER_EPOCH`,
//!   `UNKNOWN_MEMBER_ID`) starts a new incarnation: it owns nothing and
//!   joins again with epoch 0.
//! - [`GroupConsumer::poll`], in the caller's task, brings what it reads to
//!   the latest assignment before it fetches: it gives up revoked
//!   partitions first (committing what it returned of them when
//!   auto-commit is on), then starts the new ones at their committed offset
//!   or at `auto_offset_reset`.
//!
//! Invariants:
//! - The member lists a partition in a heartbeat only while it reads it, so
//!   the coordinator grants a partition to another member only after this
//!   one stopped reading it (or was fenced, and then it drops everything on
//!   its next poll).
//! - A commit stores, per partition, the offset after the last record
//!   `poll` returned (or the position `seek` set), never past it; commits
//!   reach the cluster in the order they were made.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use strata_core::limits::{DEFAULT_AUTO_COMMIT_INTERVAL_MS, DEFAULT_GROUP_HEARTBEAT_INTERVAL_MS};
use strata_core::ErrorCode;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;

use crate::client::retry_wait;
use crate::consumer::{ConsumedRecord, Consumer, ConsumerConfig, StartOffset};
use crate::group::{
    GroupHeartbeat, GroupHeartbeatAnswer, OffsetToCommit, TopicPartitions, JOIN_EPOCH, LEAVE_EPOCH, STATIC_LEAVE_EPOCH,
};
use crate::{Client, ClientError};

/// Where a partition the group has no committed offset for starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OffsetReset {
    /// The log start offset: everything still stored.
    Earliest,
    /// The high watermark: records produced from now on (Kafka's default).
    #[default]
    Latest,
}

/// Settings of a [`GroupConsumer`].
#[derive(Clone, Debug)]
pub struct GroupConsumerConfig {
    /// Shown by `strata group describe`.
    pub client_id: String,
    /// Static membership: a restart with the same instance id within the
    /// session timeout gets the same partitions back without a rebalance,
    /// and `close` keeps them for it.
    pub instance_id: Option<String>,
    /// `uniform` or `range`; `None` for the server's default (`uniform`).
    pub assignor: Option<String>,
    /// How long the member may take to give up revoked partitions (between
    /// polls); `None` for the server's default of five minutes.
    pub rebalance_timeout: Option<Duration>,
    /// Commit what `poll` returned every `auto_commit_interval`, before
    /// giving partitions up, and on `close`.
    pub auto_commit: bool,
    pub auto_commit_interval: Duration,
    pub auto_offset_reset: OffsetReset,
    pub consumer: ConsumerConfig,
}

impl Default for GroupConsumerConfig {
    fn default() -> Self {
        GroupConsumerConfig {
            client_id: "strata-client".to_string(),
            instance_id: None,
            assignor: None,
            rebalance_timeout: None,
            auto_commit: true,
            auto_commit_interval: Duration::from_millis(DEFAULT_AUTO_COMMIT_INTERVAL_MS),
            auto_offset_reset: OffsetReset::default(),
            consumer: ConsumerConfig::default(),
        }
    }
}

/// A change of what the member reads, as `poll` made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupEvent {
    /// Partitions given to the member; reading starts at their committed
    /// offset, else at `auto_offset_reset`.
    Assigned(TopicPartitions),
    /// Partitions given up in a rebalance. With auto-commit on, what `poll`
    /// returned of them was committed first.
    Revoked(TopicPartitions),
    /// Partitions lost without a chance to commit: the group fenced the
    /// member (its session expired, or its epoch was stale), so others may
    /// already read them. The member joins again.
    Lost(TopicPartitions),
}

/// The member as the heartbeat task knows it; shared with `poll`.
#[derive(Debug)]
struct Session {
    group_id: String,
    /// Empty until the first answer.
    member_id: String,
    /// JOIN_EPOCH until the first answer of an incarnation.
    member_epoch: i32,
    /// Bumped when the member is fenced: what it owned is lost.
    incarnation: u64,
    /// The latest assignment answered in this incarnation.
    assignment: TopicPartitions,
    /// What `poll` reads; listed in every heartbeat.
    owned: TopicPartitions,
    subscription: BTreeSet<String>,
    /// The subscription changed and no answer has acknowledged it yet.
    subscription_pending: bool,
    heartbeat_interval: Duration,
    /// A refusal no retry fixes (invalid group id, unknown assignor): the
    /// heartbeats stopped and every poll returns it.
    fatal: Option<ClientError>,
}

/// What one heartbeat's outcome means for the loop.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Answered; `changed` when the assignment or the member's incarnation
    /// changed, so a waiting poll must look.
    Answered { changed: bool },
    /// The member was fenced: a new incarnation joins at once.
    Fenced,
    /// Try again after this long.
    Retry(Duration),
    /// Stop heartbeating.
    Fatal,
    /// The answer belongs to an incarnation that ended meanwhile.
    Stale,
}

impl Session {
    /// The heartbeat to send now.
    fn next_heartbeat(&self, config: &GroupConsumerConfig) -> GroupHeartbeat {
        let joining = self.member_epoch == JOIN_EPOCH;
        GroupHeartbeat {
            group_id: self.group_id.clone(),
            member_id: self.member_id.clone(),
            member_epoch: self.member_epoch,
            instance_id: config.instance_id.clone(),
            rebalance_timeout: config.rebalance_timeout,
            subscribed_topics: (joining || self.subscription_pending).then(|| self.subscription.clone()),
            assignor: config.assignor.clone(),
            // Always listed: a heartbeat retried with an older epoch is
            // accepted only with the partitions it owns.
            owned_partitions: Some(self.owned.clone()),
            client_id: config.client_id.clone(),
        }
    }

    /// Takes the outcome of `sent`, sent during `incarnation`.
    fn absorb(
        &mut self,
        sent: &GroupHeartbeat,
        incarnation: u64,
        result: Result<GroupHeartbeatAnswer, ClientError>,
    ) -> Outcome {
        if incarnation != self.incarnation {
            return Outcome::Stale;
        }
        match result {
            Ok(answer) => {
                self.member_id = answer.member_id;
                self.member_epoch = answer.member_epoch;
                self.heartbeat_interval = answer.heartbeat_interval.max(Duration::from_millis(1));
                if sent.subscribed_topics.as_ref() == Some(&self.subscription) {
                    self.subscription_pending = false;
                }
                let changed = answer.assignment != self.assignment;
                self.assignment = answer.assignment;
                Outcome::Answered { changed }
            }
            Err(error) if is_fencing(&error) => {
                tracing::info!(group = %self.group_id, member = %self.member_id, error = %error,
                    "member fenced; its partitions are lost and it joins again");
                self.incarnation += 1;
                self.member_epoch = JOIN_EPOCH;
                if error.code() != Some(ErrorCode::FencedMemberEpoch) {
                    // The group forgot the member: it joins under a new id.
                    self.member_id.clear();
                }
                self.owned.clear();
                self.assignment.clear();
                Outcome::Fenced
            }
            Err(error) if error.is_retryable() || error.code() == Some(ErrorCode::UnreleasedInstanceId) => {
                // Unreleased instance id: the previous run of this static
                // member is still live; its session ends within the timeout.
                tracing::debug!(group = %self.group_id, error = %error, "heartbeat failed, retrying");
                Outcome::Retry(retry_wait(error.retry_after()).min(self.heartbeat_interval))
            }
            Err(error) => {
                tracing::warn!(group = %self.group_id, error = %error, "heartbeat refused; the consumer stops");
                self.fatal = Some(error);
                Outcome::Fatal
            }
        }
    }
}

/// An answer that means the member must drop its partitions and rejoin.
fn is_fencing(error: &ClientError) -> bool {
    matches!(error.code(), Some(ErrorCode::FencedMemberEpoch | ErrorCode::UnknownMemberId | ErrorCode::GroupIdNotFound))
}

struct Shared {
    session: Mutex<Session>,
    /// Wakes the heartbeat task: what the member owns or subscribes changed.
    beat_now: Notify,
    /// Wakes a poll: the assignment changed or the member was fenced.
    changed: Notify,
}

impl Shared {
    fn session(&self) -> MutexGuard<'_, Session> {
        // Nothing panics while holding the lock; a poisoned lock still holds
        // a consistent session.
        self.session.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

async fn heartbeat_loop(client: Client, shared: Arc<Shared>, config: Arc<GroupConsumerConfig>) {
    loop {
        let (request, incarnation) = {
            let session = shared.session();
            (session.next_heartbeat(&config), session.incarnation)
        };
        let result = client.group_heartbeat(&request).await;
        let (outcome, interval) = {
            let mut session = shared.session();
            (session.absorb(&request, incarnation, result), session.heartbeat_interval)
        };
        let wait = match outcome {
            Outcome::Answered { changed } => {
                if changed {
                    shared.changed.notify_one();
                }
                interval
            }
            Outcome::Fenced => {
                shared.changed.notify_one();
                retry_wait(None)
            }
            Outcome::Retry(wait) => wait,
            Outcome::Stale => Duration::ZERO,
            Outcome::Fatal => {
                shared.changed.notify_one();
                return;
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.beat_now.notified() => {}
        }
    }
}

/// Partitions of `a` not in `b`.
fn minus(a: &TopicPartitions, b: &TopicPartitions) -> TopicPartitions {
    let mut out = TopicPartitions::new();
    for (topic, partitions) in a {
        let rest: BTreeSet<u32> = match b.get(topic) {
            Some(other) => partitions.difference(other).copied().collect(),
            None => partitions.clone(),
        };
        if !rest.is_empty() {
            out.insert(topic.clone(), rest);
        }
    }
    out
}

fn each(partitions: &TopicPartitions) -> impl Iterator<Item = (&str, u32)> {
    partitions.iter().flat_map(|(topic, p)| p.iter().map(move |&p| (topic.as_str(), p)))
}

type Position = (String, u32);

/// A commit started by [`GroupConsumer::commit_async`].
pub struct PendingCommit(oneshot::Receiver<Result<(), ClientError>>);

impl PendingCommit {
    /// Waits for the commit's outcome.
    pub async fn wait(self) -> Result<(), ClientError> {
        self.0.await.unwrap_or_else(|_| {
            Err(ClientError::local(ErrorCode::Internal, "the commit task ended without an answer (runtime shutdown)"))
        })
    }
}

/// A member of a consumer group. See the module documentation.
pub struct GroupConsumer {
    client: Client,
    group_id: String,
    config: Arc<GroupConsumerConfig>,
    consumer: Consumer,
    shared: Arc<Shared>,
    heartbeats: Option<JoinHandle<()>>,
    /// The session incarnation `owned` belongs to.
    incarnation: u64,
    /// The partitions this member reads.
    owned: TopicPartitions,
    /// Per owned partition, the offset after the last record `poll`
    /// returned: what a commit stores.
    returned: BTreeMap<Position, u64>,
    /// Offsets the group accepted, to commit only what moved.
    committed: Arc<Mutex<BTreeMap<Position, u64>>>,
    /// The latest commit; the next one waits for it, so commits are stored
    /// in the order they were made.
    last_commit: Option<JoinHandle<()>>,
    next_auto_commit: Instant,
    events: Vec<GroupEvent>,
    /// Partitions assigned that could not start yet (their offsets could not
    /// be looked up): poll retries them soon.
    starting_failed: bool,
}

impl GroupConsumer {
    /// A consumer of group `group_id`; it joins on [`GroupConsumer::subscribe`].
    pub fn new(client: Client, group_id: &str, config: GroupConsumerConfig) -> GroupConsumer {
        let session = Session {
            group_id: group_id.to_string(),
            member_id: String::new(),
            member_epoch: JOIN_EPOCH,
            incarnation: 0,
            assignment: TopicPartitions::new(),
            owned: TopicPartitions::new(),
            subscription: BTreeSet::new(),
            subscription_pending: false,
            heartbeat_interval: Duration::from_millis(DEFAULT_GROUP_HEARTBEAT_INTERVAL_MS),
            fatal: None,
        };
        let consumer = Consumer::with_config(client.clone(), config.consumer.clone());
        GroupConsumer {
            client,
            group_id: group_id.to_string(),
            next_auto_commit: Instant::now() + config.auto_commit_interval,
            config: Arc::new(config),
            consumer,
            shared: Arc::new(Shared { session: Mutex::new(session), beat_now: Notify::new(), changed: Notify::new() }),
            heartbeats: None,
            incarnation: 0,
            owned: TopicPartitions::new(),
            returned: BTreeMap::new(),
            committed: Arc::new(Mutex::new(BTreeMap::new())),
            last_commit: None,
            events: Vec::new(),
            starting_failed: false,
        }
    }

    /// Subscribes to `topics` (replacing an earlier subscription) and joins
    /// the group in the background. A topic that does not exist yet is
    /// read once it is created. Must be called inside a Tokio runtime.
    pub fn subscribe(&mut self, topics: &[&str]) -> Result<(), ClientError> {
        if topics.is_empty() {
            return Err(ClientError::local(
                ErrorCode::InvalidRequest,
                "subscribe to at least one topic; to stop reading, close the consumer",
            ));
        }
        {
            let mut session = self.shared.session();
            session.subscription = topics.iter().map(|t| t.to_string()).collect();
            session.subscription_pending = true;
        }
        match &self.heartbeats {
            Some(_) => self.shared.beat_now.notify_one(),
            None => {
                let task = heartbeat_loop(self.client.clone(), self.shared.clone(), self.config.clone());
                self.heartbeats = Some(tokio::spawn(task));
            }
        }
        Ok(())
    }

    /// Waits up to `max_wait` for records of the member's partitions and
    /// returns those that arrived (possibly none). First it follows the
    /// group: gives up revoked partitions and starts assigned ones (see
    /// [`GroupConsumer::take_events`]). Returns the error that stopped the
    /// member (e.g. `INVALID_GROUP_ID`), or a fatal fetch error.
    pub async fn poll(&mut self, max_wait: Duration) -> Result<Vec<ConsumedRecord>, ClientError> {
        let deadline = Instant::now() + max_wait;
        let shared = self.shared.clone();
        loop {
            self.follow_the_group().await?;
            self.maybe_auto_commit();
            let mut wait = deadline.saturating_duration_since(Instant::now());
            if self.starting_failed {
                wait = wait.min(retry_wait(None));
            }
            let polled = tokio::select! {
                polled = self.consumer.poll(wait) => match polled {
                    Ok(records) => Some(records),
                    Err(error) if error.code() == Some(ErrorCode::OffsetOutOfRange) => {
                        if !self.reset_out_of_range(&error).await? {
                            return Err(error);
                        }
                        None
                    }
                    Err(error) => return Err(error),
                },
                _ = shared.changed.notified() => None,
            };
            match polled {
                Some(records) if !records.is_empty() || Instant::now() >= deadline => {
                    for record in &records {
                        self.returned.insert((record.topic.clone(), record.partition), record.offset + 1);
                    }
                    return Ok(records);
                }
                // The group changed, a start is retried, or an early empty
                // answer: follow and wait the rest.
                _ => continue,
            }
        }
    }

    /// The changes of what the member reads since the last call, in order.
    pub fn take_events(&mut self) -> Vec<GroupEvent> {
        std::mem::take(&mut self.events)
    }

    /// The group this consumer is a member of.
    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    /// The partitions the member reads now.
    pub fn assignment(&self) -> &TopicPartitions {
        &self.owned
    }

    /// The member id the group gave (empty before the first answer).
    pub fn member_id(&self) -> String {
        self.shared.session().member_id.clone()
    }

    /// The member epoch of the latest answer (0 while joining).
    pub fn member_epoch(&self) -> i32 {
        self.shared.session().member_epoch
    }

    /// The offset the next commit stores for a partition the member reads.
    pub fn position(&self, topic: &str, partition: u32) -> Option<u64> {
        self.returned.get(&(topic.to_string(), partition)).copied()
    }

    /// Moves the position of a partition the member reads: `poll` goes on
    /// from `offset`, and the next commit stores it. Returns false when the
    /// member does not read the partition.
    pub fn seek(&mut self, topic: &str, partition: u32, offset: u64) -> bool {
        if !self.consumer.seek(topic, partition, offset) {
            return false;
        }
        self.returned.insert((topic.to_string(), partition), offset);
        true
    }

    /// Stops fetching a partition the member reads, keeping it and its
    /// position (e.g. while a downstream is slow). Returns false when the
    /// member does not read it. A revoked partition is given up anyway.
    pub fn pause(&mut self, topic: &str, partition: u32) -> bool {
        self.consumer.pause(topic, partition)
    }

    /// Fetches a paused partition again.
    pub fn resume(&mut self, topic: &str, partition: u32) -> bool {
        self.consumer.resume(topic, partition)
    }

    /// Commits what `poll` returned of every partition the member reads,
    /// and waits. Returns the first partition the group refused (e.g.
    /// `STALE_MEMBER_EPOCH` after the partition moved away).
    pub async fn commit_sync(&mut self) -> Result<(), ClientError> {
        let offsets = self.uncommitted(&self.owned.clone());
        self.start_commit(offsets).wait().await
    }

    /// Starts committing what `poll` returned of every partition the member
    /// reads; commits are stored in the order they were made.
    pub fn commit_async(&mut self) -> PendingCommit {
        let offsets = self.uncommitted(&self.owned.clone());
        self.start_commit(offsets)
    }

    /// Commits `offsets` (the next offset to read, per partition) and waits.
    pub async fn commit_offsets(&mut self, offsets: &[(String, u32, u64)]) -> Result<(), ClientError> {
        let offsets = offsets
            .iter()
            .map(|(topic, partition, offset)| OffsetToCommit {
                topic: topic.clone(),
                partition: *partition,
                offset: *offset,
                metadata: String::new(),
            })
            .collect();
        self.start_commit(offsets).wait().await
    }

    /// Leaves the group at once: commits what `poll` returned (auto-commit
    /// on), stops heartbeating and sends the leave, so the partitions go to
    /// other members without waiting for the session timeout. A static
    /// member keeps its partitions for its restart instead, until the
    /// session timeout.
    pub async fn close(mut self) -> Result<(), ClientError> {
        let committed =
            if self.config.auto_commit && !self.owned.is_empty() { self.commit_sync().await } else { Ok(()) };
        if let Some(last) = self.last_commit.take() {
            let _ = last.await;
        }
        if let Some(task) = self.heartbeats.take() {
            task.abort();
            let _ = task.await;
        }
        let leave = {
            let session = self.shared.session();
            let mut leave = session.next_heartbeat(&self.config);
            leave.member_epoch = if self.config.instance_id.is_some() { STATIC_LEAVE_EPOCH } else { LEAVE_EPOCH };
            leave.subscribed_topics = None;
            leave
        };
        if !leave.member_id.is_empty() {
            match self.client.group_heartbeat(&leave).await {
                Ok(_) => {}
                // Already gone: nothing to leave.
                Err(error) if is_fencing(&error) => {}
                Err(error) => return Err(error),
            }
        }
        committed
    }

    /// Offsets of `partitions` that moved since their last commit.
    fn uncommitted(&self, partitions: &TopicPartitions) -> Vec<OffsetToCommit> {
        let committed = self.committed.lock().unwrap_or_else(|p| p.into_inner());
        each(partitions)
            .filter_map(|(topic, partition)| {
                let position = (topic.to_string(), partition);
                let offset = *self.returned.get(&position)?;
                (committed.get(&position) != Some(&offset)).then(|| OffsetToCommit {
                    topic: topic.to_string(),
                    partition,
                    offset,
                    metadata: String::new(),
                })
            })
            .collect()
    }

    fn start_commit(&mut self, offsets: Vec<OffsetToCommit>) -> PendingCommit {
        let (tell, told) = oneshot::channel();
        let previous = self.last_commit.take();
        let (client, shared, committed, group_id) =
            (self.client.clone(), self.shared.clone(), self.committed.clone(), self.group_id.clone());
        self.last_commit = Some(tokio::spawn(async move {
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            let result = commit(&client, &shared, &committed, &group_id, &offsets).await;
            let _ = tell.send(result);
        }));
        PendingCommit(told)
    }

    fn maybe_auto_commit(&mut self) {
        if !self.config.auto_commit || Instant::now() < self.next_auto_commit {
            return;
        }
        self.next_auto_commit = Instant::now() + self.config.auto_commit_interval;
        let offsets = self.uncommitted(&self.owned.clone());
        if !offsets.is_empty() {
            // Its outcome is logged by `commit`; the next one retries what failed.
            drop(self.start_commit(offsets));
        }
    }

    /// Brings what the consumer reads to the session's assignment.
    async fn follow_the_group(&mut self) -> Result<(), ClientError> {
        let (incarnation, assignment, fatal) = {
            let session = self.shared.session();
            (session.incarnation, session.assignment.clone(), session.fatal.clone())
        };
        if let Some(error) = fatal {
            return Err(error);
        }
        if incarnation != self.incarnation {
            self.incarnation = incarnation;
            let lost = std::mem::take(&mut self.owned);
            self.drop_partitions(&lost);
            if !lost.is_empty() {
                self.events.push(GroupEvent::Lost(lost));
            }
        }
        let revoked = minus(&self.owned, &assignment);
        if !revoked.is_empty() {
            if self.config.auto_commit {
                let offsets = self.uncommitted(&revoked);
                if let Err(error) = self.start_commit(offsets).wait().await {
                    tracing::warn!(group = %self.group_id, error = %error,
                        "committing revoked partitions failed; their next owner re-reads from the last commit");
                }
            }
            self.drop_partitions(&revoked);
            self.owned = minus(&self.owned, &revoked);
            self.events.push(GroupEvent::Revoked(revoked));
            self.publish_owned();
        }
        let added = minus(&assignment, &self.owned);
        self.starting_failed = false;
        if !added.is_empty() {
            let started = self.start_partitions(&added).await?;
            if !started.is_empty() {
                for (topic, partition) in each(&started) {
                    self.owned.entry(topic.to_string()).or_default().insert(partition);
                }
                self.events.push(GroupEvent::Assigned(started));
                self.publish_owned();
            }
        }
        Ok(())
    }

    /// Moves partitions whose position fell out of the log (a committed
    /// offset below the log start after retention, or past the end after
    /// an unclean reset) to `auto_offset_reset`, as Kafka does. Returns
    /// false when no partition of this member was out of range.
    async fn reset_out_of_range(&mut self, error: &ClientError) -> Result<bool, ClientError> {
        let mut reset = false;
        for (topic, partition) in self.consumer.take_out_of_range() {
            if !self.owned.get(&topic).is_some_and(|p| p.contains(&partition)) {
                continue;
            }
            let start = match self.config.auto_offset_reset {
                OffsetReset::Earliest => StartOffset::Earliest,
                OffsetReset::Latest => StartOffset::Latest,
            };
            let from = self.returned.get(&(topic.clone(), partition)).copied();
            let offset = self.consumer.assign(&topic, partition, start).await?;
            tracing::warn!(group = %self.group_id, topic, partition, from, to = offset, %error,
                "position out of range; moved to auto_offset_reset");
            self.returned.insert((topic, partition), offset);
            reset = true;
        }
        Ok(reset)
    }

    fn drop_partitions(&mut self, partitions: &TopicPartitions) {
        for (topic, partition) in each(partitions) {
            self.consumer.unassign(topic, partition);
            self.returned.remove(&(topic.to_string(), partition));
        }
    }

    /// Tells the heartbeat task what the member owns now, unless the member
    /// was fenced meanwhile (the next poll drops everything then).
    fn publish_owned(&self) {
        let mut session = self.shared.session();
        if session.incarnation == self.incarnation {
            session.owned = self.owned.clone();
            drop(session);
            self.shared.beat_now.notify_one();
        }
    }

    /// Starts reading `partitions` at their committed offsets, else at
    /// `auto_offset_reset`; returns those that started. A partition whose
    /// offsets cannot be looked up now is retried by a later poll.
    async fn start_partitions(&mut self, partitions: &TopicPartitions) -> Result<TopicPartitions, ClientError> {
        let committed = match self.client.fetch_offsets(&self.group_id, partitions).await {
            Ok(fetched) => fetched,
            Err(error) if error.is_retryable() => {
                tracing::debug!(group = %self.group_id, error = %error, "committed offsets not available yet");
                self.starting_failed = true;
                return Ok(TopicPartitions::new());
            }
            Err(error) => return Err(error),
        };
        let committed: BTreeMap<Position, u64> =
            committed.into_iter().filter_map(|f| Some(((f.topic, f.partition), f.committed?.offset))).collect();
        let mut started = TopicPartitions::new();
        for (topic, partition) in each(partitions) {
            let position = (topic.to_string(), partition);
            let start = match (committed.get(&position), self.config.auto_offset_reset) {
                (Some(&offset), _) => StartOffset::Offset(offset),
                (None, OffsetReset::Earliest) => StartOffset::Earliest,
                (None, OffsetReset::Latest) => StartOffset::Latest,
            };
            match self.consumer.assign(topic, partition, start).await {
                Ok(offset) => {
                    if let Some(&offset) = committed.get(&position) {
                        self.committed.lock().unwrap_or_else(|p| p.into_inner()).insert(position.clone(), offset);
                    }
                    self.returned.insert(position, offset);
                    started.entry(topic.to_string()).or_default().insert(partition);
                }
                Err(error) => {
                    // A topic deleted meanwhile leaves the assignment with the
                    // next heartbeat; anything else is retried.
                    tracing::debug!(group = %self.group_id, topic, partition, error = %error,
                        "could not start a partition, retrying");
                    self.starting_failed = true;
                }
            }
        }
        Ok(started)
    }
}

impl Drop for GroupConsumer {
    /// Without `close` the member is not left: its partitions move after
    /// the session timeout, as after a crash.
    fn drop(&mut self) {
        if let Some(task) = self.heartbeats.take() {
            task.abort();
        }
    }
}

/// Sends one commit as the member is now, and records what was stored.
async fn commit(
    client: &Client,
    shared: &Shared,
    committed: &Mutex<BTreeMap<Position, u64>>,
    group_id: &str,
    offsets: &[OffsetToCommit],
) -> Result<(), ClientError> {
    if offsets.is_empty() {
        return Ok(());
    }
    let (member_id, member_epoch) = {
        let session = shared.session();
        (session.member_id.clone(), session.member_epoch)
    };
    let results = match client.commit_offsets(group_id, &member_id, member_epoch, offsets).await {
        Ok(results) => results,
        Err(error) => {
            tracing::debug!(group = %group_id, error = %error, "commit failed");
            return Err(error);
        }
    };
    let sent: BTreeMap<Position, u64> = offsets.iter().map(|o| ((o.topic.clone(), o.partition), o.offset)).collect();
    let mut first_error = None;
    let mut stored = committed.lock().unwrap_or_else(|p| p.into_inner());
    for result in results {
        let position = (result.topic, result.partition);
        match result.error {
            None => {
                if let Some(&offset) = sent.get(&position) {
                    stored.insert(position, offset);
                }
            }
            Some(error) => {
                tracing::debug!(group = %group_id, topic = %position.0, partition = position.1, error = %error,
                    "commit of a partition refused");
                first_error.get_or_insert(error);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partitions(list: &[(&str, u32)]) -> TopicPartitions {
        let mut out = TopicPartitions::new();
        for &(topic, partition) in list {
            out.entry(topic.to_string()).or_default().insert(partition);
        }
        out
    }

    fn session() -> Session {
        Session {
            group_id: "g".into(),
            member_id: String::new(),
            member_epoch: JOIN_EPOCH,
            incarnation: 0,
            assignment: TopicPartitions::new(),
            owned: TopicPartitions::new(),
            subscription: ["t".to_string()].into(),
            subscription_pending: true,
            heartbeat_interval: Duration::from_secs(3),
            fatal: None,
        }
    }

    fn answer(epoch: i32, assignment: TopicPartitions) -> Result<GroupHeartbeatAnswer, ClientError> {
        Ok(GroupHeartbeatAnswer {
            member_id: "m1".into(),
            member_epoch: epoch,
            heartbeat_interval: Duration::from_millis(500),
            assignment,
        })
    }

    fn refused(code: ErrorCode) -> Result<GroupHeartbeatAnswer, ClientError> {
        Err(ClientError::Server { code, message: "m".into(), details: Default::default() })
    }

    #[test]
    fn a_join_names_the_subscription_and_later_beats_only_when_it_changes() {
        let config = GroupConsumerConfig::default();
        let mut session = session();
        let join = session.next_heartbeat(&config);
        assert_eq!(join.member_epoch, JOIN_EPOCH);
        assert_eq!(join.subscribed_topics, Some(["t".to_string()].into()));
        assert_eq!(join.owned_partitions, Some(TopicPartitions::new()));

        let outcome = session.absorb(&join, 0, answer(1, partitions(&[("t", 0)])));
        assert_eq!(outcome, Outcome::Answered { changed: true });
        assert_eq!((session.member_id.as_str(), session.member_epoch), ("m1", 1));
        assert_eq!(session.heartbeat_interval, Duration::from_millis(500));
        let beat = session.next_heartbeat(&config);
        assert_eq!((beat.member_id.as_str(), beat.member_epoch), ("m1", 1));
        assert_eq!(beat.subscribed_topics, None, "acknowledged: not sent again");

        session.subscription = ["t".to_string(), "u".to_string()].into();
        session.subscription_pending = true;
        let beat = session.next_heartbeat(&config);
        assert_eq!(beat.subscribed_topics.as_ref().map(|s| s.len()), Some(2));
        // An answer to a heartbeat sent before the change does not clear it.
        session.absorb(&join, 0, answer(1, partitions(&[("t", 0)])));
        assert!(session.subscription_pending);
        assert_eq!(session.absorb(&beat, 0, answer(1, partitions(&[("t", 0)]))), Outcome::Answered { changed: false });
        assert!(!session.subscription_pending);
    }

    #[test]
    fn a_fenced_member_loses_everything_and_rejoins() {
        let config = GroupConsumerConfig::default();
        let mut session = session();
        let join = session.next_heartbeat(&config);
        session.absorb(&join, 0, answer(3, partitions(&[("t", 0), ("t", 1)])));
        session.owned = partitions(&[("t", 0), ("t", 1)]);
        let beat = session.next_heartbeat(&config);
        assert_eq!(session.absorb(&beat, 0, refused(ErrorCode::FencedMemberEpoch)), Outcome::Fenced);
        assert_eq!(session.incarnation, 1);
        assert!(session.owned.is_empty() && session.assignment.is_empty());
        let rejoin = session.next_heartbeat(&config);
        assert_eq!((rejoin.member_id.as_str(), rejoin.member_epoch), ("m1", JOIN_EPOCH), "same id, epoch 0");
        assert!(rejoin.subscribed_topics.is_some());
        // An answer to a heartbeat of the old incarnation changes nothing.
        assert_eq!(session.absorb(&beat, 0, answer(3, partitions(&[("t", 0)]))), Outcome::Stale);
        assert!(session.assignment.is_empty());
        // A member the group forgot joins under a new id.
        assert_eq!(session.absorb(&rejoin, 1, refused(ErrorCode::UnknownMemberId)), Outcome::Fenced);
        assert!(session.member_id.is_empty());
    }

    #[test]
    fn retryable_refusals_retry_within_the_interval_and_others_stop_the_member() {
        let config = GroupConsumerConfig::default();
        let mut session = session();
        let join = session.next_heartbeat(&config);
        match session.absorb(&join, 0, refused(ErrorCode::LeaderNotAvailable)) {
            Outcome::Retry(wait) => assert!(wait <= session.heartbeat_interval),
            other => panic!("{other:?}"),
        }
        assert!(matches!(session.absorb(&join, 0, refused(ErrorCode::UnreleasedInstanceId)), Outcome::Retry(_)));
        assert_eq!(session.absorb(&join, 0, refused(ErrorCode::InvalidGroupId)), Outcome::Fatal);
        assert_eq!(session.fatal.as_ref().and_then(|e| e.code()), Some(ErrorCode::InvalidGroupId));
    }

    #[test]
    fn revoked_and_added_are_set_differences() {
        let owned = partitions(&[("t", 0), ("t", 1), ("u", 0)]);
        let target = partitions(&[("t", 1), ("t", 2)]);
        assert_eq!(minus(&owned, &target), partitions(&[("t", 0), ("u", 0)]));
        assert_eq!(minus(&target, &owned), partitions(&[("t", 2)]));
        assert!(minus(&owned, &owned).is_empty());
    }

    #[test]
    fn only_offsets_that_moved_are_committed() {
        let client = Client::connect(&["127.0.0.1:1".to_string()]).unwrap();
        let mut consumer = GroupConsumer::new(client, "g", GroupConsumerConfig::default());
        consumer.owned = partitions(&[("t", 0), ("t", 1), ("t", 2)]);
        consumer.returned.insert(("t".into(), 0), 5);
        consumer.returned.insert(("t".into(), 1), 7);
        consumer.committed.lock().unwrap().insert(("t".into(), 1), 7);
        let offsets = consumer.uncommitted(&consumer.owned.clone());
        let got: Vec<(u32, u64)> = offsets.iter().map(|o| (o.partition, o.offset)).collect();
        assert_eq!(got, vec![(0, 5)], "1 is unchanged and 2 has no position yet");
    }
}
