//! The `group` workload's consumer processes: members of one consumer
//! group, each a plain sequential loop over the raw client calls
//! (`Client::group_heartbeat`, `Client::fetch_offsets`,
//! `Client::commit_offsets`, and a `Consumer` used only as a fetcher of the
//! partitions the member holds), so every protocol step is an operation in
//! the history. The rules the checker applies to them are in
//! `checker::group`.
//!
//! One member's loop:
//! - joins (epoch 0) under a member id the harness makes (`jepsen-member-P`,
//!   P its process), then heartbeats every heartbeat interval with its
//!   epoch and the partitions it owns (`subscribe` operations);
//! - a partition new in an answer is held from then on; before reading it
//!   the member fetches the group's committed offset (`offset-fetch`) and
//!   reads from there (from 0 when there is none);
//! - a partition missing from an answer is revoked: the member commits what
//!   it read of it, stops reading it, and heartbeats at once without it (the
//!   release);
//! - FENCED_MEMBER_EPOCH or UNKNOWN_MEMBER_ID, answered to a heartbeat or a
//!   commit, make it drop every partition and join again under its id;
//! - a heartbeat without an answer (timeout, lost connection, no leader) is
//!   sent again at the next interval with the same epoch and owned list;
//! - it polls the partitions it holds and commits, every COMMIT_EVERY, the
//!   next offset of what it read.
//!
//! While faults run, each member process ends after a random lifetime:
//! it crashes (it abandons its member without a word, as a killed consumer
//! would; its partitions move once its session times out), or leaves
//! cleanly (epoch -1); its worker then starts a new process with a new
//! member id. Or it stalls past its session timeout, as a paused consumer
//! would, and goes on: it is fenced (UNKNOWN_MEMBER_ID) and rejoins.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Value};
use strata_client::{
    Client, ClientError, Consumer, ErrorCode, GroupDescription, GroupHeartbeat, OffsetToCommit, StartOffset,
    TopicPartitions, JOIN_EPOCH, LEAVE_EPOCH,
};

use crate::history::{OpType, Process};
use crate::workload::{connect, outcome_of, reads_value, Workload, OP_DEADLINE, POLL_WAIT, REQUEST_TIMEOUT};

/// The workload's consumer group.
pub const GROUP_ID: &str = "jepsen";
/// The group's session timeout in these runs (nodes get it as
/// `group_session_timeout`): long enough for a member to live through its
/// own slowest step (an operation may take REQUEST_TIMEOUT, then a
/// heartbeat another), short enough that crashed members' partitions move
/// many times within a run.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(6);
/// The group's heartbeat interval in these runs (`group_heartbeat_interval`):
/// six heartbeats per session, so a member survives a few lost ones.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// How long the cluster may take after the final heal before group calls
/// are answered again: a metadata leader election and the clients finding
/// it. Writes resumed within 0.1-4.4 s of the heal in every soak so far.
const METADATA_RECOVERY: Duration = Duration::from_secs(10);
/// How often a member commits what it read.
const COMMIT_EVERY: Duration = Duration::from_millis(500);
/// A member process's lifetime while faults run, ms.
const LIFETIME_MS: std::ops::RangeInclusive<u64> = 5_000..=40_000;
/// At the end of its lifetime a member process leaves cleanly, stalls (a
/// paused consumer: no operation for longer than the session timeout, then
/// it goes on), or crashes, each about a third of the time.
const LEAVE_ONE_IN: u32 = 3;
const STALL_ONE_IN: u32 = 2;
/// How much longer than the session timeout a stall lasts, ms.
const STALL_PAST_SESSION_MS: std::ops::RangeInclusive<u64> = 500..=3_000;

/// Within how long of the final heal every partition must be owned by
/// exactly one live member. The metadata group comes back
/// (METADATA_RECOVERY); crashed members' sessions, re-armed with a full
/// session timeout by a new leader, run out (SESSION_TIMEOUT); a partition
/// then moves in three heartbeats (the holder learns of the revocation,
/// releases it, the new owner learns of the grant), each of which may wait
/// behind one operation of its member (REQUEST_TIMEOUT).
pub fn convergence_bound() -> Duration {
    METADATA_RECOVERY + SESSION_TIMEOUT + 3 * (HEARTBEAT_INTERVAL + REQUEST_TIMEOUT)
}

/// The node settings that give the run's group these timeouts.
pub fn node_settings() -> Vec<String> {
    vec![
        format!("group_session_timeout = \"{}ms\"", SESSION_TIMEOUT.as_millis()),
        format!("group_heartbeat_interval = \"{}ms\"", HEARTBEAT_INTERVAL.as_millis()),
    ]
}

/// The member id of a process.
pub fn member_id(process: u64) -> String {
    format!("jepsen-member-{process}")
}

fn is_fencing(error: &ClientError) -> bool {
    matches!(error.code(), Some(ErrorCode::FencedMemberEpoch | ErrorCode::UnknownMemberId))
}

fn keys_of(partitions: &TopicPartitions, topic: &str) -> BTreeSet<u32> {
    partitions.get(topic).cloned().unwrap_or_default()
}

/// A partition the member holds.
#[derive(Clone, Copy, Debug, Default)]
struct Held {
    /// The next offset to read; None until the committed offset is fetched.
    position: Option<u64>,
    /// The group's committed offset as this member last knew it.
    committed: Option<u64>,
}

/// One member process.
pub struct Member {
    workload: Arc<Workload>,
    process: Process,
    member_id: String,
    client: Client,
    consumer: Consumer,
    epoch: i32,
    joined: bool,
    interval: Duration,
    next_heartbeat: Instant,
    last_commit: Instant,
    held: BTreeMap<u32, Held>,
    /// Held partitions the last answer left out: to give up.
    revoked: BTreeSet<u32>,
}

impl Member {
    pub fn new(workload: &Arc<Workload>, process: u64) -> Member {
        let bootstrap = &workload.config().bootstrap;
        Member {
            workload: workload.clone(),
            process: Process::Client(process),
            member_id: member_id(process),
            client: connect(bootstrap),
            // A fetcher on a client of its own: a fetch parked between polls
            // must not hold up a heartbeat (see `Session::assign`).
            consumer: Consumer::new(connect(bootstrap)),
            epoch: JOIN_EPOCH,
            joined: false,
            interval: HEARTBEAT_INTERVAL,
            next_heartbeat: Instant::now(),
            last_commit: Instant::now(),
            held: BTreeMap::new(),
            revoked: BTreeSet::new(),
        }
    }

    fn topic(&self) -> String {
        self.workload.config().topic.clone()
    }

    fn record(&self, kind: OpType, f: &str, value: Value, error: Option<String>) {
        self.workload.record(&self.process, kind, f, value, error);
    }

    /// Runs until the workload stops (then commits and leaves) or, while
    /// faults run, its lifetime ends (then it crashes or leaves).
    pub async fn run(mut self, rng: &mut StdRng) {
        let mut end_of_life = Instant::now() + Duration::from_millis(rng.gen_range(LIFETIME_MS));
        self.workload.member_started(&self.member_id);
        loop {
            if self.workload.stopped() {
                self.leave().await;
                break;
            }
            if self.workload.client_crashes() && Instant::now() >= end_of_life {
                if rng.gen_ratio(1, LEAVE_ONE_IN) {
                    self.leave().await;
                } else if rng.gen_ratio(1, STALL_ONE_IN) {
                    let stall = SESSION_TIMEOUT + Duration::from_millis(rng.gen_range(STALL_PAST_SESSION_MS));
                    let value = json!({"member": self.member_id, "ms": stall.as_millis() as u64});
                    self.record(OpType::Invoke, "stall", value.clone(), None);
                    tokio::time::sleep(stall).await;
                    self.record(OpType::Ok, "stall", value, None);
                    end_of_life = Instant::now() + Duration::from_millis(rng.gen_range(LIFETIME_MS));
                    continue;
                } else {
                    let value = json!({"member": self.member_id});
                    self.record(OpType::Invoke, "crash", value.clone(), None);
                    self.record(OpType::Info, "crash", value, Some("abandoned without leaving".into()));
                }
                break;
            }
            if !self.joined && Instant::now() >= self.next_heartbeat {
                self.heartbeat().await;
            } else if !self.joined {
                tokio::time::sleep(self.next_heartbeat.saturating_duration_since(Instant::now())).await;
            } else if !self.revoked.is_empty() {
                self.give_up_revoked().await;
            } else if Instant::now() >= self.next_heartbeat {
                self.heartbeat().await;
            } else if self.held.values().any(|h| h.position.is_none()) {
                self.fetch_positions().await;
            } else if !self.held.is_empty() {
                self.poll().await;
                if self.last_commit.elapsed() >= COMMIT_EVERY {
                    let keys: Vec<u32> = self.held.keys().copied().collect();
                    self.commit(&keys).await;
                }
            } else {
                let nap = self.next_heartbeat.saturating_duration_since(Instant::now()).min(POLL_WAIT);
                tokio::time::sleep(nap).await;
            }
            let pause = rng.gen_range(0..=self.workload.config().op_pause_ms_max);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        self.workload.member_ended(&self.member_id);
    }

    /// Forgets every partition (after fencing); the next heartbeat joins.
    fn drop_everything(&mut self) {
        let topic = self.topic();
        for &key in self.held.keys() {
            self.consumer.unassign(&topic, key);
        }
        self.held.clear();
        self.revoked.clear();
        self.joined = false;
        self.epoch = JOIN_EPOCH;
        self.next_heartbeat = Instant::now();
    }

    async fn heartbeat(&mut self) {
        let topic = self.topic();
        // Epoch 0 is a join, also after a join answered without an epoch
        // yet (the group's target was not ready): the join is repeated.
        let joining = !self.joined || self.epoch == JOIN_EPOCH;
        let epoch = if joining { JOIN_EPOCH } else { self.epoch };
        let owned: BTreeSet<u32> = self.held.keys().copied().collect();
        let request = GroupHeartbeat {
            group_id: GROUP_ID.into(),
            member_id: self.member_id.clone(),
            member_epoch: epoch,
            subscribed_topics: joining.then(|| BTreeSet::from([topic.clone()])),
            owned_partitions: (!joining).then(|| TopicPartitions::from([(topic.clone(), owned.clone())])),
            client_id: self.member_id.clone(),
            ..GroupHeartbeat::default()
        };
        let owned_list: Vec<u32> = if joining { Vec::new() } else { owned.iter().copied().collect() };
        let invoke = json!({"member": self.member_id, "epoch": epoch, "owned": owned_list});
        self.record(OpType::Invoke, "subscribe", invoke.clone(), None);
        let sent = Instant::now();
        let answer = tokio::time::timeout(OP_DEADLINE, self.client.group_heartbeat(&request)).await;
        match answer {
            Ok(Ok(answer)) => {
                self.joined = true;
                self.epoch = answer.member_epoch;
                self.interval = answer.heartbeat_interval.max(Duration::from_millis(100));
                self.next_heartbeat = sent + self.interval;
                let assignment = keys_of(&answer.assignment, &topic);
                for &key in &assignment {
                    self.held.entry(key).or_default();
                }
                self.revoked = self.held.keys().copied().filter(|k| !assignment.contains(k)).collect();
                self.record(
                    OpType::Ok,
                    "subscribe",
                    json!({"member": self.member_id, "epoch": answer.member_epoch, "assignment": assignment}),
                    None,
                );
            }
            Ok(Err(error)) if is_fencing(&error) => {
                let mut value = invoke;
                value["fenced"] = json!(true);
                self.record(OpType::Fail, "subscribe", value, Some(error.to_string()));
                self.drop_everything();
            }
            Ok(Err(error)) => {
                self.record(outcome_of(&error), "subscribe", invoke, Some(error.to_string()));
                self.next_heartbeat = Instant::now() + self.interval;
            }
            Err(_) => {
                self.record(OpType::Info, "subscribe", invoke, Some("operation deadline passed".into()));
                self.next_heartbeat = Instant::now() + self.interval;
            }
        }
    }

    /// Commits what it read of the revoked partitions, stops reading them,
    /// and heartbeats without them at once.
    async fn give_up_revoked(&mut self) {
        let revoked: Vec<u32> = self.revoked.iter().copied().collect();
        if !self.commit(&revoked).await {
            return; // fenced: everything is dropped already
        }
        let topic = self.topic();
        for key in revoked {
            self.consumer.unassign(&topic, key);
            self.held.remove(&key);
        }
        self.revoked.clear();
        self.next_heartbeat = Instant::now();
    }

    /// Fetches the committed offsets of held partitions that have no
    /// position yet and starts reading them there.
    async fn fetch_positions(&mut self) {
        let topic = self.topic();
        let new: Vec<u32> = self.held.iter().filter(|(_, h)| h.position.is_none()).map(|(&k, _)| k).collect();
        let invoke = json!({"member": self.member_id, "keys": new});
        self.record(OpType::Invoke, "offset-fetch", invoke.clone(), None);
        let wanted = TopicPartitions::from([(topic.clone(), new.iter().copied().collect())]);
        let (client, consumer) = (&self.client, &mut self.consumer);
        let fetched = tokio::time::timeout(OP_DEADLINE, async {
            let offsets = client.fetch_offsets(GROUP_ID, &wanted).await?;
            let committed: BTreeMap<u32, Option<u64>> = new
                .iter()
                .map(|&k| {
                    let found = offsets.iter().find(|o| o.topic == topic && o.partition == k);
                    (k, found.and_then(|o| o.committed.as_ref()).map(|c| c.offset))
                })
                .collect();
            for (&key, &start) in &committed {
                consumer.assign(&topic, key, StartOffset::Offset(start.unwrap_or(0))).await?;
            }
            Ok::<_, ClientError>(committed)
        })
        .await;
        match fetched {
            Ok(Ok(committed)) => {
                for (key, start) in &committed {
                    if let Some(held) = self.held.get_mut(key) {
                        *held = Held { position: Some(start.unwrap_or(0)), committed: *start };
                    }
                }
                let positions: BTreeMap<String, u64> =
                    self.held.iter().filter_map(|(k, h)| Some((k.to_string(), h.position?))).collect();
                let committed: BTreeMap<String, Option<u64>> =
                    committed.iter().map(|(k, c)| (k.to_string(), *c)).collect();
                self.record(
                    OpType::Ok,
                    "offset-fetch",
                    json!({"member": self.member_id, "committed": committed, "positions": positions}),
                    None,
                );
            }
            // A read: whatever went wrong, it changed nothing.
            Ok(Err(error)) => self.record(OpType::Fail, "offset-fetch", invoke, Some(error.to_string())),
            Err(_) => self.record(OpType::Fail, "offset-fetch", invoke, Some("operation deadline passed".into())),
        }
    }

    /// Reads the held partitions once; records of anything else the fetcher
    /// still had are dropped unread.
    async fn poll(&mut self) {
        let keys: Vec<u32> = self.held.keys().copied().collect();
        let invoke = json!({"member": self.member_id, "keys": keys});
        self.record(OpType::Invoke, "poll", invoke.clone(), None);
        match tokio::time::timeout(OP_DEADLINE, self.consumer.poll(POLL_WAIT)).await {
            Ok(Ok(records)) => {
                let records: Vec<_> = records.into_iter().filter(|r| self.held.contains_key(&r.partition)).collect();
                match reads_value(&records) {
                    Ok(value) => {
                        for record in &records {
                            if let Some(held) = self.held.get_mut(&record.partition) {
                                held.position = Some(record.offset + 1);
                            }
                        }
                        self.record(OpType::Ok, "poll", value, None);
                    }
                    Err(bad) => {
                        self.record(OpType::Info, "poll", invoke, Some(bad.to_string()));
                        self.restart_fetcher();
                    }
                }
            }
            Ok(Err(error)) => {
                let retryable = error.is_retryable();
                self.record(OpType::Fail, "poll", invoke, Some(error.to_string()));
                if !retryable {
                    self.restart_fetcher();
                }
            }
            Err(_) => {
                // Dropping a poll midway may lose records it had taken in.
                self.record(OpType::Info, "poll", invoke, Some("operation deadline passed".into()));
                self.restart_fetcher();
            }
        }
    }

    /// A fresh fetcher; every held partition starts again from the group's
    /// committed offset.
    fn restart_fetcher(&mut self) {
        self.consumer = Consumer::new(connect(&self.workload.config().bootstrap));
        for held in self.held.values_mut() {
            held.position = None;
        }
    }

    /// Commits the next offset to read of `keys` where it moved past what
    /// the group has. Returns false when the member was fenced.
    async fn commit(&mut self, keys: &[u32]) -> bool {
        self.last_commit = Instant::now();
        let topic = self.topic();
        let due: BTreeMap<u32, u64> = keys
            .iter()
            .filter_map(|k| {
                let held = self.held.get(k)?;
                let position = held.position?;
                (position > held.committed.unwrap_or(0)).then_some((*k, position))
            })
            .collect();
        if due.is_empty() {
            return true;
        }
        let offsets: Vec<OffsetToCommit> = due
            .iter()
            .map(|(&partition, &offset)| OffsetToCommit {
                topic: topic.clone(),
                partition,
                offset,
                metadata: String::new(),
            })
            .collect();
        let as_json: BTreeMap<String, u64> = due.iter().map(|(k, o)| (k.to_string(), *o)).collect();
        let invoke = json!({"member": self.member_id, "epoch": self.epoch, "offsets": as_json});
        self.record(OpType::Invoke, "commit", invoke.clone(), None);
        let result = tokio::time::timeout(
            OP_DEADLINE,
            self.client.commit_offsets(GROUP_ID, &self.member_id, self.epoch, &offsets),
        )
        .await;
        match result {
            Ok(Ok(results)) => {
                let mut accepted = BTreeMap::new();
                let mut refused = BTreeMap::new();
                for result in results.iter().filter(|r| r.topic == topic) {
                    match &result.error {
                        None => {
                            let offset = due[&result.partition];
                            accepted.insert(result.partition.to_string(), offset);
                            if let Some(held) = self.held.get_mut(&result.partition) {
                                held.committed = Some(offset);
                            }
                        }
                        Some(error) => {
                            let code = error.code().map_or_else(|| error.to_string(), |c| c.name().to_string());
                            refused.insert(result.partition.to_string(), code);
                        }
                    }
                }
                let value =
                    json!({"member": self.member_id, "epoch": self.epoch, "offsets": accepted, "refused": refused});
                self.record(OpType::Ok, "commit", value, None);
                true
            }
            Ok(Err(error)) if is_fencing(&error) => {
                let mut value = invoke;
                value["fenced"] = json!(true);
                self.record(OpType::Fail, "commit", value, Some(error.to_string()));
                self.drop_everything();
                false
            }
            Ok(Err(error)) => {
                self.record(outcome_of(&error), "commit", invoke, Some(error.to_string()));
                true
            }
            Err(_) => {
                self.record(OpType::Info, "commit", invoke, Some("operation deadline passed".into()));
                true
            }
        }
    }

    /// Commits what it read and leaves the group (epoch -1).
    async fn leave(&mut self) {
        if !self.joined {
            return;
        }
        let keys: Vec<u32> = self.held.keys().copied().collect();
        if !self.commit(&keys).await {
            return;
        }
        let invoke = json!({"member": self.member_id, "epoch": LEAVE_EPOCH, "owned": []});
        self.record(OpType::Invoke, "subscribe", invoke.clone(), None);
        let request = GroupHeartbeat {
            group_id: GROUP_ID.into(),
            member_id: self.member_id.clone(),
            member_epoch: LEAVE_EPOCH,
            client_id: self.member_id.clone(),
            ..GroupHeartbeat::default()
        };
        let topic = self.topic();
        for &key in self.held.keys() {
            self.consumer.unassign(&topic, key);
        }
        self.held.clear();
        self.joined = false;
        match tokio::time::timeout(OP_DEADLINE, self.client.group_heartbeat(&request)).await {
            Ok(Ok(answer)) => self.record(
                OpType::Ok,
                "subscribe",
                json!({"member": self.member_id, "epoch": answer.member_epoch, "assignment": []}),
                None,
            ),
            Ok(Err(error)) => self.record(outcome_of(&error), "subscribe", invoke, Some(error.to_string())),
            Err(_) => self.record(OpType::Info, "subscribe", invoke, Some("operation deadline passed".into())),
        }
    }
}

/// A `describe-group` answer for the history: `{"state", "group_epoch",
/// "members": {M: {"epoch", "partitions": [K], "pending": [K]}}, "owners":
/// {"K": M | null}, "committed": {"K": O | null}, "live": [M]}`, partitions
/// of `topic` only, `live` the member ids of the processes running now.
pub fn describe_value(description: &GroupDescription, topic: &str, live: &BTreeSet<String>) -> Value {
    let members: BTreeMap<&str, Value> = description
        .members
        .iter()
        .map(|m| {
            let value = json!({
                "epoch": m.member_epoch,
                "partitions": keys_of(&m.assignment, topic),
                "pending": keys_of(&m.pending_revocation, topic),
            });
            (m.member_id.as_str(), value)
        })
        .collect();
    let partitions = description.partitions.iter().filter(|p| p.topic == topic);
    let owners: BTreeMap<String, Option<&str>> =
        partitions.clone().map(|p| (p.partition.to_string(), p.owner.as_deref())).collect();
    let committed: BTreeMap<String, Option<u64>> =
        partitions.map(|p| (p.partition.to_string(), p.committed_offset)).collect();
    json!({
        "state": format!("{:?}", description.state).to_lowercase(),
        "group_epoch": description.group_epoch,
        "members": members,
        "owners": owners,
        "committed": committed,
        "live": live,
    })
}
