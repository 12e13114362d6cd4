//! The checker: reads a history and reports every anomaly of the design
//! note's table, each with the operations that witness it, plus liveness.
//!
//! It is pure: a history in, a [`Verdict`] out; no clock, no I/O. Keys are
//! partitions of the workload's topic, so "per key" means "per partition"
//! and offsets of one key are dense.
//!
//! What each value looks like is documented in `jepsen/README.md`; briefly:
//! - send: `{"key": K, "value": V}`, and on `ok` also `"offset": O`;
//! - poll (ok): `{"K": [[O, V], ...], ...}`;
//! - assign / subscribe (ok): `{"keys": [K...], "positions": {"K": O}}`;
//! - txn: `{"ops": [["send", K, V, O?] | ["poll", {"K": [[O, V]...]}]],
//!   "consumed": {"K": [O...]}, "commit": {"K": O}}`;
//! - commit (ok): `{"K": O}` (a consumer group's committed offsets), or from
//!   a group member `{"member": M, "epoch": E, "offsets": {"K": O},
//!   "refused": {"K": "CODE"}}` (only `offsets` were accepted);
//! - group members (see [`group`]): `subscribe` (a heartbeat), `poll`,
//!   `offset-fetch` (ok: `{"positions": {"K": O}}`, where the member's reads
//!   continue), `commit`; the harness's `describe-group` and `committed`;
//! - nemesis entries: `{"phase": "start" | "stop", "active": N, ...}` where
//!   `active` counts the faults still in force afterwards;
//! - log-start (ok): `{"key": K, "log_start": O, "high_watermark": O,
//!   "at_ms": T}`, `T` being the harness's wall clock at the answer;
//! - replica-read (ok): `{"key": K, "node": N, "log_start": O,
//!   "high_watermark": O, "batches": [[BASE, NEXT, LEN, "DIGEST"], ...]}`,
//!   one node's own copy of a key (see `runner::compare_replicas`);
//! - a send's invoke may carry `"ts"` (the record's timestamp, ms) and
//!   `"resend": true` (a record sent again with its idempotency key);
//! - a `harness`/`start` entry may carry `{"workload": W, "idempotence": B}`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::history::{Op, OpType, Process};

pub mod group;
pub mod txn;
pub use group::{
    GroupCheckOptions, COMMIT_BY_NON_OWNER, DOUBLE_OWNERSHIP, NOT_CONVERGED, POLL_BY_NON_OWNER, UNCONSUMED,
};
pub use txn::{G1C, HANGING_TRANSACTION, LOST_COMMITTED_WRITE, TORN_TRANSACTION};

pub type Key = u64;
pub type Offset = u64;
pub type Val = u64;

/// Anomaly names, as they appear in the verdict.
pub const LOST_WRITE: &str = "lost-write";
pub const UNSEEN: &str = "unseen";
pub const DUPLICATE: &str = "duplicate";
pub const INCONSISTENT_OFFSETS: &str = "inconsistent-offsets";
pub const ABORTED_READ: &str = "aborted-read";
pub const NONMONOTONIC_POLL: &str = "nonmonotonic-poll";
pub const SKIPPING_POLL: &str = "skipping-poll";
pub const NONMONOTONIC_SEND: &str = "nonmonotonic-send";
pub const UNCOMMITTED_READ: &str = "read-of-uncommitted";
pub const DIVERGENCE: &str = "divergence";
pub const EXACTLY_ONCE: &str = "exactly-once";
pub const OFFSET_REGRESSION: &str = "offset-regression";
pub const NEVER_SUCCEEDED: &str = "never-succeeded";
pub const NO_RECOVERY: &str = "writes-did-not-resume";
pub const EARLY_DELETION: &str = "early-deletion";

/// Operation kinds a client may run; each that was tried must succeed sometimes.
const CLIENT_FUNCTIONS: &[&str] = &["send", "poll", "assign", "subscribe", "txn", "commit", "offset-fetch"];

/// Most witnesses printed per anomaly kind in summaries; the verdict file
/// keeps them all.
pub const WITNESSES_SHOWN: usize = 8;

/// What the checker must know beyond the history.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Duplicates are failures (the producer promises idempotence); when
    /// false they are reported as allowed.
    pub duplicates_fatal: bool,
    /// After every fault is healed, an acknowledged send must complete
    /// within this bound.
    pub recovery_bound_ns: u64,
    /// The topic's time-based retention, when it has one: a record stamped
    /// `ts` may not be trimmed before wall-clock time `ts + retention_ms`.
    pub retention_ms: Option<u64>,
    /// The consumer group's settings; needed when the history has group
    /// members (the `group` workload).
    pub group: Option<GroupCheckOptions>,
    /// Reads skip offsets by design (the `txn` workload: read_committed
    /// readers never see markers or aborted records), so a poll that jumps
    /// is no `skipping-poll`; `lost-committed-write` and `torn-transaction`
    /// catch a committed record skipped.
    pub sparse_reads: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            duplicates_fatal: true,
            recovery_bound_ns: 30_000_000_000,
            retention_ms: None,
            group: None,
            sparse_reads: false,
        }
    }
}

/// One witnessed anomaly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<Key>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<Offset>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Val>,
    pub message: String,
    /// Indices of the history entries that show it.
    pub ops: Vec<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Completions by function and type, e.g. `send` -> `ok` -> 812.
    pub completions: BTreeMap<String, BTreeMap<String, u64>>,
    pub acknowledged_sends: u64,
    pub records_read: u64,
    pub keys: u64,
    pub fault_events: u64,
    /// Acknowledged records never read because retention trimmed them.
    #[serde(default)]
    pub trimmed_unread: u64,
    /// Batches found identical on every replica by the replica comparison.
    #[serde(default)]
    pub replica_batches_agreed: u64,
    /// Consumer group counts (grants, heartbeats, member incarnations, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub group: BTreeMap<String, u64>,
}

/// The checker's answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub valid: bool,
    /// Anomalies that make the run invalid, by name.
    pub anomalies: BTreeMap<String, Vec<Anomaly>>,
    /// Anomalies found but allowed by the workload's promise, by name.
    pub allowed: BTreeMap<String, Vec<Anomaly>>,
    pub stats: Stats,
    pub notes: Vec<String>,
}

impl Verdict {
    fn flag(&mut self, name: &str, anomaly: Anomaly) {
        self.anomalies.entry(name.to_string()).or_default().push(anomaly);
    }

    /// A one-paragraph human summary.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        out.push_str(if self.valid { "valid: no anomalies\n" } else { "INVALID\n" });
        for (name, found) in &self.anomalies {
            out.push_str(&format!("  {name}: {}\n", found.len()));
            for anomaly in found.iter().take(WITNESSES_SHOWN) {
                out.push_str(&format!("    - {} (ops {:?})\n", anomaly.message, anomaly.ops));
            }
        }
        for (name, found) in &self.allowed {
            out.push_str(&format!("  {name} (allowed): {}\n", found.len()));
        }
        for note in &self.notes {
            out.push_str(&format!("  note: {note}\n"));
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("history entry {index}: {message}")]
    Malformed { index: u64, message: String },
}

fn malformed(op: &Op, message: impl Into<String>) -> CheckError {
    CheckError::Malformed { index: op.index, message: message.into() }
}

/// An operation with its completion (none when the history ended first).
#[derive(Clone, Copy, Debug)]
struct Pair<'a> {
    invoke: &'a Op,
    done: Option<&'a Op>,
}

impl Pair<'_> {
    fn kind(&self) -> OpType {
        self.done.map_or(OpType::Info, |d| d.kind)
    }

    fn witnesses(&self) -> Vec<u64> {
        let mut ops = vec![self.invoke.index];
        ops.extend(self.done.map(|d| d.index));
        ops
    }

    fn done_index(&self) -> u64 {
        self.done.map_or(self.invoke.index, |d| d.index)
    }

    fn done_time(&self) -> u64 {
        self.done.map_or(u64::MAX, |d| d.time)
    }
}

/// Pairs each invocation with the next entry of its process.
fn pair(history: &[Op]) -> Result<Vec<Pair<'_>>, CheckError> {
    let mut open: HashMap<&Process, usize> = HashMap::new();
    let mut pairs: Vec<Pair<'_>> = Vec::new();
    for op in history {
        if op.process.is_nemesis() || op.f == "start" {
            continue;
        }
        match op.kind {
            OpType::Invoke => {
                if open.contains_key(&op.process) {
                    return Err(malformed(op, format!("process {} invoked twice without a completion", op.process)));
                }
                open.insert(&op.process, pairs.len());
                pairs.push(Pair { invoke: op, done: None });
            }
            _ => {
                let Some(at) = open.remove(&op.process) else {
                    return Err(malformed(op, format!("completion of process {} without an invocation", op.process)));
                };
                if pairs[at].invoke.f != op.f {
                    return Err(malformed(op, format!("completes a '{}' with a '{}'", pairs[at].invoke.f, op.f)));
                }
                pairs[at].done = Some(op);
            }
        }
    }
    Ok(pairs)
}

fn as_u64(op: &Op, value: &Value, what: &str) -> Result<u64, CheckError> {
    value.as_u64().ok_or_else(|| malformed(op, format!("{what} is not a non-negative integer: {value}")))
}

fn field(op: &Op, value: &Value, name: &str) -> Result<u64, CheckError> {
    as_u64(op, value.get(name).unwrap_or(&Value::Null), name)
}

/// `{"K": [[O, V], ...]}` as (key, offset, value) triples.
fn parse_reads(op: &Op, value: &Value) -> Result<Vec<(Key, Offset, Val)>, CheckError> {
    let mut out = Vec::new();
    let Some(map) = value.as_object() else {
        if value.is_null() {
            return Ok(out);
        }
        return Err(malformed(op, "poll value is not an object of key -> [[offset, value]]"));
    };
    for (key, records) in map {
        let key: Key = key.parse().map_err(|_| malformed(op, format!("key '{key}' is not an integer")))?;
        for record in records.as_array().ok_or_else(|| malformed(op, "records are not a list"))? {
            let pair = record.as_array().filter(|p| p.len() == 2).ok_or_else(|| malformed(op, "record not [O, V]"))?;
            out.push((key, as_u64(op, &pair[0], "offset")?, as_u64(op, &pair[1], "value")?));
        }
    }
    Ok(out)
}

/// `{"K": O}` maps.
fn parse_offsets(op: &Op, value: &Value) -> Result<BTreeMap<Key, Offset>, CheckError> {
    let mut out = BTreeMap::new();
    if let Some(map) = value.as_object() {
        for (key, offset) in map {
            let key: Key = key.parse().map_err(|_| malformed(op, format!("key '{key}' is not an integer")))?;
            out.insert(key, as_u64(op, offset, "offset")?);
        }
    }
    Ok(out)
}

/// A send, from a plain send operation or inside a transaction.
#[derive(Clone, Debug)]
struct Send {
    key: Key,
    value: Val,
    offset: Option<Offset>,
    kind: OpType,
    process: Process,
    witnesses: Vec<u64>,
    /// Transaction sends: the index of the transaction's invocation.
    txn: Option<u64>,
    invoke_time: u64,
    done_time: u64,
    /// The record's timestamp (ms), when the send says.
    timestamp_ms: Option<i64>,
    /// A record sent again with its idempotency key: its offset is the
    /// original's, so it says nothing about the order of the process's sends.
    resend: bool,
}

/// A key's log start as seen at `at_ms` (harness wall clock).
#[derive(Clone, Debug)]
struct LogStart {
    key: Key,
    log_start: Offset,
    at_ms: i64,
    op: u64,
}

/// One node's copy of a key, from the replica comparison.
#[derive(Clone, Debug)]
struct ReplicaRead {
    key: Key,
    node: u64,
    log_start: Offset,
    high_watermark: Offset,
    /// base offset -> (next offset, length, digest)
    batches: BTreeMap<Offset, (Offset, u64, String)>,
    op: u64,
}

/// A record seen by a read.
#[derive(Clone, Debug)]
struct Read {
    key: Key,
    offset: Offset,
    value: Val,
    op: u64,
    node: Option<u64>,
    time: u64,
    done_time: u64,
    /// Set when the read ran inside this transaction (its invocation index).
    txn: Option<u64>,
}

/// Checks a history.
pub fn check(history: &[Op], options: &CheckOptions) -> Result<Verdict, CheckError> {
    let pairs = pair(history)?;
    let mut verdict = Verdict::default();
    let mut sends: Vec<Send> = Vec::new();
    let mut reads: Vec<Read> = Vec::new();
    // Per process, the reads of each poll in order, with assignment resets.
    let mut consumer_events: BTreeMap<&Process, Vec<ConsumerEvent>> = BTreeMap::new();
    let mut txns: Vec<(Pair<'_>, BTreeMap<Key, Vec<Offset>>)> = Vec::new();
    let mut commits: Vec<(Pair<'_>, BTreeMap<Key, Offset>)> = Vec::new();
    let mut log_starts: Vec<LogStart> = Vec::new();
    let mut replica_reads: Vec<ReplicaRead> = Vec::new();

    for p in &pairs {
        let f = p.invoke.f.as_str();
        let kind = p.kind();
        *verdict.stats.completions.entry(f.to_string()).or_default().entry(kind_name(kind).into()).or_default() += 1;
        match f {
            "send" => {
                let value = p.done.map_or(&p.invoke.value, |d| &d.value);
                let offset = if kind == OpType::Ok { Some(field(p.done.unwrap(), value, "offset")?) } else { None };
                sends.push(Send {
                    key: field(p.invoke, &p.invoke.value, "key")?,
                    value: field(p.invoke, &p.invoke.value, "value")?,
                    offset,
                    kind,
                    process: p.invoke.process.clone(),
                    witnesses: p.witnesses(),
                    txn: None,
                    invoke_time: p.invoke.time,
                    done_time: p.done_time(),
                    timestamp_ms: p.invoke.value.get("ts").and_then(Value::as_i64),
                    resend: p.invoke.value.get("resend").and_then(Value::as_bool).unwrap_or(false),
                });
            }
            "log-start" if kind == OpType::Ok => {
                let done = p.done.unwrap();
                log_starts.push(LogStart {
                    key: field(done, &done.value, "key")?,
                    log_start: field(done, &done.value, "log_start")?,
                    at_ms: done
                        .value
                        .get("at_ms")
                        .and_then(Value::as_i64)
                        .ok_or_else(|| malformed(done, "no at_ms"))?,
                    op: done.index,
                });
            }
            "replica-read" if kind == OpType::Ok => {
                let done = p.done.unwrap();
                replica_reads.push(parse_replica_read(done)?);
            }
            "poll" if kind == OpType::Ok => {
                let done = p.done.unwrap();
                let found = parse_reads(done, &done.value)?;
                for &(key, offset, value) in &found {
                    reads.push(Read {
                        key,
                        offset,
                        value,
                        op: done.index,
                        node: done.node,
                        time: done.time,
                        done_time: done.time,
                        txn: None,
                    });
                }
                consumer_events.entry(&done.process).or_default().push(ConsumerEvent::Poll(done.index, found));
            }
            // A group member's heartbeat says nothing about positions; the
            // offset fetch after a grant says where its reads continue.
            "assign" | "subscribe" | "offset-fetch" if kind == OpType::Ok => {
                let done = p.done.unwrap();
                if let Some(positions) = done.value.get("positions") {
                    let positions = parse_offsets(done, positions)?;
                    consumer_events.entry(&done.process).or_default().push(ConsumerEvent::Assign(positions));
                } else if done.value.get("member").is_none() && f != "offset-fetch" {
                    consumer_events.entry(&done.process).or_default().push(ConsumerEvent::Assign(BTreeMap::new()));
                }
            }
            "txn" => {
                let consumed = parse_txn(p, &mut sends, &mut reads, &mut consumer_events)?;
                if kind == OpType::Ok {
                    let done = p.done.unwrap();
                    if let Some(commit) = done.value.get("commit") {
                        commits.push((*p, parse_offsets(done, commit)?));
                    }
                }
                txns.push((*p, consumed));
            }
            "commit" if kind == OpType::Ok => {
                let done = p.done.unwrap();
                // A member's commit: only `offsets` were accepted.
                let accepted = if done.value.get("member").is_some() {
                    done.value.get("offsets").unwrap_or(&Value::Null)
                } else {
                    &done.value
                };
                commits.push((*p, parse_offsets(done, accepted)?));
            }
            _ => {}
        }
    }
    verdict.stats.acknowledged_sends = sends.iter().filter(|s| s.kind == OpType::Ok).count() as u64;
    verdict.stats.records_read = reads.len() as u64;
    verdict.stats.fault_events = history.iter().filter(|op| op.process.is_nemesis()).count() as u64;
    let keys: BTreeSet<Key> = sends.iter().map(|s| s.key).chain(reads.iter().map(|r| r.key)).collect();
    verdict.stats.keys = keys.len() as u64;

    check_offsets(&sends, &reads, options, &mut verdict);
    check_lost_and_unseen(&sends, &reads, &log_starts, &mut verdict);
    check_early_deletion(&sends, &log_starts, options, &mut verdict);
    check_replicas(&replica_reads, &mut verdict);
    check_aborted_and_uncommitted(&sends, &reads, &mut verdict);
    check_polls(&consumer_events, options.sparse_reads, &mut verdict);
    check_send_order(&sends, &mut verdict);
    check_divergence(history, &reads, &mut verdict);
    check_exactly_once(&txns, &sends, &reads, &mut verdict);
    txn::check_torn(history, &sends, &reads, &mut verdict);
    txn::check_g1c(&sends, &reads, &mut verdict);
    txn::check_hanging(history, &mut verdict);
    check_offset_regression(&commits, &mut verdict);
    group::check_group(history, &pairs, &sends, options, &mut verdict)?;
    check_liveness(history, &pairs, &sends, options, &mut verdict);

    verdict.valid = verdict.anomalies.is_empty();
    Ok(verdict)
}

fn kind_name(kind: OpType) -> &'static str {
    match kind {
        OpType::Invoke => "invoke",
        OpType::Ok => "ok",
        OpType::Fail => "fail",
        OpType::Info => "info",
    }
}

enum ConsumerEvent {
    Assign(BTreeMap<Key, Offset>),
    Poll(u64, Vec<(Key, Offset, Val)>),
}

/// Collects a transaction's sends and reads; returns what it consumed.
fn parse_txn<'a>(
    p: &Pair<'a>,
    sends: &mut Vec<Send>,
    reads: &mut Vec<Read>,
    consumer_events: &mut BTreeMap<&'a Process, Vec<ConsumerEvent>>,
) -> Result<BTreeMap<Key, Vec<Offset>>, CheckError> {
    let kind = p.kind();
    let source = p.done.unwrap_or(p.invoke);
    let value = &source.value;
    let micro_ops = value.get("ops").and_then(Value::as_array).cloned().unwrap_or_default();
    for micro in &micro_ops {
        let parts = micro.as_array().ok_or_else(|| malformed(source, "txn op is not a list"))?;
        match parts.first().and_then(Value::as_str) {
            Some("send") => {
                let key = as_u64(source, parts.get(1).unwrap_or(&Value::Null), "key")?;
                let val = as_u64(source, parts.get(2).unwrap_or(&Value::Null), "value")?;
                let offset = match (kind, parts.get(3)) {
                    (OpType::Ok, Some(o)) => Some(as_u64(source, o, "offset")?),
                    _ => None,
                };
                sends.push(Send {
                    key,
                    value: val,
                    offset,
                    kind,
                    process: p.invoke.process.clone(),
                    witnesses: p.witnesses(),
                    txn: Some(p.invoke.index),
                    invoke_time: p.invoke.time,
                    done_time: p.done_time(),
                    timestamp_ms: None,
                    resend: false,
                });
            }
            Some("poll") if kind == OpType::Ok => {
                let found = parse_reads(source, parts.get(1).unwrap_or(&Value::Null))?;
                for &(key, offset, val) in &found {
                    reads.push(Read {
                        key,
                        offset,
                        value: val,
                        op: source.index,
                        node: source.node,
                        time: source.time,
                        done_time: source.time,
                        txn: Some(p.invoke.index),
                    });
                }
                consumer_events.entry(&p.invoke.process).or_default().push(ConsumerEvent::Poll(source.index, found));
            }
            Some("poll") => {}
            _ => return Err(malformed(source, format!("unknown txn op {micro}"))),
        }
    }
    let mut consumed = BTreeMap::new();
    if let Some(map) = value.get("consumed").and_then(Value::as_object) {
        for (key, offsets) in map {
            let key: Key = key.parse().map_err(|_| malformed(source, format!("key '{key}' is not an integer")))?;
            let list = offsets.as_array().ok_or_else(|| malformed(source, "consumed offsets are not a list"))?;
            let offsets = list.iter().map(|o| as_u64(source, o, "offset")).collect::<Result<Vec<_>, _>>()?;
            consumed.insert(key, offsets);
        }
    }
    Ok(consumed)
}

/// Inconsistent offsets (two values at one offset) and duplicates (one value
/// at two offsets), from acknowledged sends and reads together.
fn check_offsets(sends: &[Send], reads: &[Read], options: &CheckOptions, verdict: &mut Verdict) {
    // key -> offset -> value -> witnesses
    let mut at_offset: BTreeMap<Key, BTreeMap<Offset, BTreeMap<Val, BTreeSet<u64>>>> = BTreeMap::new();
    for send in sends.iter().filter(|s| s.kind == OpType::Ok) {
        let offset = send.offset.expect("ok sends have offsets");
        at_offset
            .entry(send.key)
            .or_default()
            .entry(offset)
            .or_default()
            .entry(send.value)
            .or_default()
            .extend(send.witnesses.iter().copied());
    }
    for read in reads {
        at_offset
            .entry(read.key)
            .or_default()
            .entry(read.offset)
            .or_default()
            .entry(read.value)
            .or_default()
            .insert(read.op);
    }
    // key -> value -> offset -> witnesses
    let mut offsets_of: BTreeMap<(Key, Val), BTreeMap<Offset, BTreeSet<u64>>> = BTreeMap::new();
    for (&key, offsets) in &at_offset {
        for (&offset, values) in offsets {
            if values.len() > 1 {
                verdict.flag(
                    INCONSISTENT_OFFSETS,
                    Anomaly {
                        key: Some(key),
                        offset: Some(offset),
                        value: None,
                        message: format!(
                            "key {key} offset {offset} holds values {:?}",
                            values.keys().collect::<Vec<_>>()
                        ),
                        ops: values.values().flatten().copied().collect::<BTreeSet<_>>().into_iter().collect(),
                    },
                );
            }
            for (&value, witnesses) in values {
                offsets_of
                    .entry((key, value))
                    .or_default()
                    .entry(offset)
                    .or_default()
                    .extend(witnesses.iter().copied());
            }
        }
    }
    for ((key, value), offsets) in offsets_of {
        if offsets.len() > 1 {
            let anomaly = Anomaly {
                key: Some(key),
                offset: None,
                value: Some(value),
                message: format!("key {key} value {value} at offsets {:?}", offsets.keys().collect::<Vec<_>>()),
                ops: offsets.values().flatten().copied().collect::<BTreeSet<_>>().into_iter().collect(),
            };
            if options.duplicates_fatal {
                verdict.flag(DUPLICATE, anomaly);
            } else {
                verdict.allowed.entry(DUPLICATE.to_string()).or_default().push(anomaly);
            }
        }
    }
}

/// An acknowledged send never read is lost when a read got past its offset,
/// and unseen otherwise, unless retention trimmed it (a log start past its
/// offset was seen; whether that was too early is `check_early_deletion`'s
/// business).
fn check_lost_and_unseen(sends: &[Send], reads: &[Read], log_starts: &[LogStart], verdict: &mut Verdict) {
    let mut trimmed_below: BTreeMap<Key, Offset> = BTreeMap::new();
    for seen in log_starts {
        let below = trimmed_below.entry(seen.key).or_default();
        *below = (*below).max(seen.log_start);
    }
    let mut trimmed: BTreeSet<(Key, Val)> = BTreeSet::new();
    let read_values: BTreeSet<(Key, Val)> = reads.iter().map(|r| (r.key, r.value)).collect();
    // key -> (highest offset read, the read that saw it)
    let mut highest: BTreeMap<Key, (Offset, u64)> = BTreeMap::new();
    for read in reads {
        let entry = highest.entry(read.key).or_insert((read.offset, read.op));
        if read.offset > entry.0 {
            *entry = (read.offset, read.op);
        }
    }
    for send in sends.iter().filter(|s| s.kind == OpType::Ok) {
        if read_values.contains(&(send.key, send.value)) {
            continue;
        }
        let offset = send.offset.expect("ok sends have offsets");
        if trimmed_below.get(&send.key).is_some_and(|&below| below > offset) {
            trimmed.insert((send.key, send.value));
            continue;
        }
        match highest.get(&send.key) {
            Some(&(high, read_op)) if high > offset => {
                let mut ops = send.witnesses.clone();
                ops.push(read_op);
                verdict.flag(
                    if send.txn.is_some() { LOST_COMMITTED_WRITE } else { LOST_WRITE },
                    Anomaly {
                        key: Some(send.key),
                        offset: Some(offset),
                        value: Some(send.value),
                        message: format!(
                            "key {} value {} acknowledged at offset {offset} was never read, though offset {high} was",
                            send.key, send.value
                        ),
                        ops,
                    },
                );
            }
            _ => verdict.flag(
                UNSEEN,
                Anomaly {
                    key: Some(send.key),
                    offset: Some(offset),
                    value: Some(send.value),
                    message: format!(
                        "key {} value {} acknowledged at offset {offset} was not read by the end",
                        send.key, send.value
                    ),
                    ops: send.witnesses.clone(),
                },
            ),
        }
    }
    verdict.stats.trimmed_unread = trimmed.len() as u64;
}

/// With time-based retention, a record stamped `ts` must still be stored
/// at wall-clock time `ts + retention_ms`: a log start past its offset seen
/// by then (the answer's arrival time bounds when the trim happened) is an
/// early deletion. The harness stamps records and reads log starts with the
/// same clock, the one the nodes' clocks follow when no clock fault skews
/// them, so in a correct cluster this never happens.
fn check_early_deletion(sends: &[Send], log_starts: &[LogStart], options: &CheckOptions, verdict: &mut Verdict) {
    let Some(retention_ms) = options.retention_ms else { return };
    // (key, value, offset) -> (earliest stamp among its sends, witnesses)
    let mut stored: BTreeMap<(Key, Val, Offset), (i64, Vec<u64>)> = BTreeMap::new();
    for send in sends.iter().filter(|s| s.kind == OpType::Ok) {
        let (Some(offset), Some(ts)) = (send.offset, send.timestamp_ms) else { continue };
        let entry = stored.entry((send.key, send.value, offset)).or_insert((ts, Vec::new()));
        entry.0 = entry.0.min(ts);
        entry.1.extend(send.witnesses.iter().copied());
    }
    let mut by_key: BTreeMap<Key, Vec<&LogStart>> = BTreeMap::new();
    for seen in log_starts {
        by_key.entry(seen.key).or_default().push(seen);
    }
    for ((key, value, offset), (ts, witnesses)) in stored {
        let allowed_ms = ts.saturating_add(retention_ms as i64);
        let first_gone =
            by_key.get(&key).into_iter().flatten().filter(|seen| seen.log_start > offset).min_by_key(|seen| seen.at_ms);
        if let Some(seen) = first_gone.filter(|seen| seen.at_ms <= allowed_ms) {
            let mut ops = witnesses;
            ops.push(seen.op);
            verdict.flag(
                EARLY_DELETION,
                Anomaly {
                    key: Some(key),
                    offset: Some(offset),
                    value: Some(value),
                    message: format!(
                        "key {key} value {value} at offset {offset}, stamped {ts}, was trimmed by {} (log start {}), \
                         {} ms before its retention of {retention_ms} ms allowed",
                        seen.at_ms,
                        seen.log_start,
                        allowed_ms - seen.at_ms
                    ),
                    ops,
                },
            );
        }
    }
}

fn parse_replica_read(op: &Op) -> Result<ReplicaRead, CheckError> {
    let value = &op.value;
    let mut batches = BTreeMap::new();
    let list = value.get("batches").and_then(Value::as_array).ok_or_else(|| malformed(op, "no batches list"))?;
    for batch in list {
        let parts = batch.as_array().filter(|p| p.len() == 4).ok_or_else(|| malformed(op, "batch not [B, N, L, D]"))?;
        let digest = parts[3].as_str().ok_or_else(|| malformed(op, "batch digest is not a string"))?;
        batches.insert(
            as_u64(op, &parts[0], "base offset")?,
            (as_u64(op, &parts[1], "next offset")?, as_u64(op, &parts[2], "length")?, digest.to_string()),
        );
    }
    Ok(ReplicaRead {
        key: field(op, value, "key")?,
        node: field(op, value, "node")?,
        log_start: field(op, value, "log_start")?,
        high_watermark: field(op, value, "high_watermark")?,
        batches,
        op: op.index,
    })
}

/// The replica comparison: over the offsets every replica of a key holds
/// (from the highest log start to the lowest high watermark), every replica
/// must store the same batches, byte for byte (same boundaries, lengths and
/// digests). Each batch where they differ is a divergence. A node's latest
/// read of a key counts.
fn check_replicas(replica_reads: &[ReplicaRead], verdict: &mut Verdict) {
    let mut by_key: BTreeMap<Key, BTreeMap<u64, &ReplicaRead>> = BTreeMap::new();
    for read in replica_reads {
        by_key.entry(read.key).or_default().insert(read.node, read);
    }
    for (key, copies) in by_key {
        if copies.len() < 2 {
            continue;
        }
        let low = copies.values().map(|c| c.log_start).max().unwrap_or(0);
        let high = copies.values().map(|c| c.high_watermark).min().unwrap_or(0);
        let in_range = |c: &&ReplicaRead| -> BTreeMap<Offset, (Offset, u64, String)> {
            c.batches.range(low..high).map(|(&b, v)| (b, v.clone())).collect()
        };
        let ranges: BTreeMap<u64, BTreeMap<Offset, (Offset, u64, String)>> =
            copies.iter().map(|(&node, c)| (node, in_range(c))).collect();
        let bases: BTreeSet<Offset> = ranges.values().flat_map(|r| r.keys().copied()).collect();
        for base in bases {
            let held: BTreeMap<u64, Option<&(Offset, u64, String)>> =
                ranges.iter().map(|(&node, r)| (node, r.get(&base))).collect();
            let distinct: BTreeSet<Option<&(Offset, u64, String)>> = held.values().copied().collect();
            if distinct.len() == 1 {
                verdict.stats.replica_batches_agreed += 1;
                continue;
            }
            let describe = held
                .iter()
                .map(|(node, batch)| match batch {
                    Some((next, len, digest)) => format!("node {node}: {len} bytes up to {next}, digest {digest}"),
                    None => format!("node {node}: no batch starts here"),
                })
                .collect::<Vec<_>>()
                .join("; ");
            verdict.flag(
                DIVERGENCE,
                Anomaly {
                    key: Some(key),
                    offset: Some(base),
                    value: None,
                    message: format!(
                        "replicas of key {key} store different batches at offset {base} (common range {low}..{high}): {describe}"
                    ),
                    ops: copies.values().map(|c| c.op).collect(),
                },
            );
        }
    }
}

/// Reads of values whose send failed or whose transaction aborted, and reads
/// of uncommitted transactional values.
fn check_aborted_and_uncommitted(sends: &[Send], reads: &[Read], verdict: &mut Verdict) {
    let mut by_value: HashMap<(Key, Val), Vec<&Send>> = HashMap::new();
    for send in sends {
        by_value.entry((send.key, send.value)).or_default().push(send);
    }
    for read in reads {
        let Some(writers) = by_value.get(&(read.key, read.value)) else { continue };
        // A value may be sent by exactly one operation; if any of its sends
        // did not certainly fail, the read may be legitimate.
        if writers.iter().all(|s| s.kind == OpType::Fail) {
            let mut ops: Vec<u64> = writers.iter().flat_map(|s| s.witnesses.iter().copied()).collect();
            ops.push(read.op);
            verdict.flag(
                ABORTED_READ,
                Anomaly {
                    key: Some(read.key),
                    offset: Some(read.offset),
                    value: Some(read.value),
                    message: format!(
                        "key {} value {} was read at offset {}, but its send failed",
                        read.key, read.value, read.offset
                    ),
                    ops,
                },
            );
        }
        for writer in writers.iter().filter(|s| s.txn.is_some()) {
            let own = read.txn.is_some() && read.txn == writer.txn;
            // A read that finished before the writing transaction even began
            // cannot have seen a committed value.
            let before = !own && read.done_time < writer.invoke_time;
            if own || before {
                let mut ops = writer.witnesses.clone();
                ops.push(read.op);
                ops.dedup();
                verdict.flag(
                    UNCOMMITTED_READ,
                    Anomaly {
                        key: Some(read.key),
                        offset: Some(read.offset),
                        value: Some(read.value),
                        message: if own {
                            format!(
                                "a transaction read its own uncommitted send of key {} value {}",
                                read.key, read.value
                            )
                        } else {
                            format!(
                                "key {} value {} was read before the transaction that sent it began",
                                read.key, read.value
                            )
                        },
                        ops,
                    },
                );
            }
        }
    }
}

/// Within one assignment, each key's reads continue exactly where the last
/// one stopped (offsets are dense).
fn check_polls(consumer_events: &BTreeMap<&Process, Vec<ConsumerEvent>>, sparse: bool, verdict: &mut Verdict) {
    for (process, events) in consumer_events {
        // key -> (next expected offset, the op that set it)
        let mut expected: BTreeMap<Key, (Offset, Option<u64>)> = BTreeMap::new();
        for event in events {
            match event {
                ConsumerEvent::Assign(positions) => {
                    expected = positions.iter().map(|(&k, &o)| (k, (o, None))).collect();
                }
                ConsumerEvent::Poll(op, found) => {
                    for &(key, offset, value) in found {
                        if let Some(&(next, previous)) = expected.get(&key) {
                            let ops: Vec<u64> = previous.into_iter().chain([*op]).collect();
                            if offset < next {
                                verdict.flag(
                                    NONMONOTONIC_POLL,
                                    Anomaly {
                                        key: Some(key),
                                        offset: Some(offset),
                                        value: Some(value),
                                        message: format!(
                                            "process {process} read key {key} offset {offset} after reaching {next}"
                                        ),
                                        ops,
                                    },
                                );
                            } else if offset > next && !sparse {
                                verdict.flag(
                                    SKIPPING_POLL,
                                    Anomaly {
                                        key: Some(key),
                                        offset: Some(offset),
                                        value: Some(value),
                                        message: format!(
                                            "process {process} jumped on key {key} from offset {next} to {offset}"
                                        ),
                                        ops,
                                    },
                                );
                            }
                        }
                        expected.insert(key, (offset + 1, Some(*op)));
                    }
                }
            }
        }
    }
}

/// One process's acknowledged sends to a key land in the order it sent them.
fn check_send_order(sends: &[Send], verdict: &mut Verdict) {
    let mut last: BTreeMap<(&Process, Key), &Send> = BTreeMap::new();
    for send in sends.iter().filter(|s| s.kind == OpType::Ok && !s.resend) {
        let offset = send.offset.expect("ok sends have offsets");
        if let Some(previous) = last.get(&(&send.process, send.key)) {
            let before = previous.offset.expect("ok sends have offsets");
            // Sends of one transaction share witnesses; order among them is
            // the transaction's own business.
            if offset <= before && !(send.txn.is_some() && send.txn == previous.txn) {
                let mut ops = previous.witnesses.clone();
                ops.extend(send.witnesses.iter().copied());
                verdict.flag(
                    NONMONOTONIC_SEND,
                    Anomaly {
                        key: Some(send.key),
                        offset: Some(offset),
                        value: Some(send.value),
                        message: format!(
                            "process {} sent key {} value {} after value {}, but it landed at offset {offset} <= {before}",
                            send.process, send.key, send.value, previous.value
                        ),
                        ops,
                    },
                );
            }
        }
        last.insert((&send.process, send.key), send);
    }
}

/// After the last fault event, reads served by different nodes must agree
/// on every offset both returned.
fn check_divergence(history: &[Op], reads: &[Read], verdict: &mut Verdict) {
    let healed_at = history.iter().filter(|op| op.process.is_nemesis()).map(|op| op.time).max().unwrap_or(0);
    // (key, offset) -> node -> (value, op)
    let mut seen: BTreeMap<(Key, Offset), BTreeMap<u64, (Val, u64)>> = BTreeMap::new();
    for read in reads.iter().filter(|r| r.time >= healed_at) {
        if let Some(node) = read.node {
            seen.entry((read.key, read.offset)).or_default().entry(node).or_insert((read.value, read.op));
        }
    }
    for ((key, offset), by_node) in seen {
        let values: BTreeSet<Val> = by_node.values().map(|(v, _)| *v).collect();
        if values.len() > 1 {
            verdict.flag(
                DIVERGENCE,
                Anomaly {
                    key: Some(key),
                    offset: Some(offset),
                    value: None,
                    message: format!(
                        "after healing, nodes disagree on key {key} offset {offset}: {}",
                        by_node.iter().map(|(n, (v, _))| format!("node {n} has {v}")).collect::<Vec<_>>().join(", ")
                    ),
                    ops: by_node.values().map(|(_, op)| *op).collect(),
                },
            );
        }
    }
}

/// No input record is consumed by two committed transactions. A transaction
/// counts as committed when it is `ok`, or `info` with a send that was read.
fn check_exactly_once(
    txns: &[(Pair<'_>, BTreeMap<Key, Vec<Offset>>)],
    sends: &[Send],
    reads: &[Read],
    verdict: &mut Verdict,
) {
    let read_values: BTreeSet<(Key, Val)> = reads.iter().map(|r| (r.key, r.value)).collect();
    let mut consumers: BTreeMap<(Key, Offset), Vec<u64>> = BTreeMap::new();
    for (p, consumed) in txns {
        let committed = match p.kind() {
            OpType::Ok => true,
            OpType::Info => {
                sends.iter().filter(|s| s.txn == Some(p.invoke.index)).any(|s| read_values.contains(&(s.key, s.value)))
            }
            _ => false,
        };
        if !committed {
            continue;
        }
        for (&key, offsets) in consumed {
            for &offset in offsets {
                consumers.entry((key, offset)).or_default().push(p.done_index());
            }
        }
    }
    for ((key, offset), ops) in consumers {
        if ops.len() > 1 {
            verdict.flag(
                EXACTLY_ONCE,
                Anomaly {
                    key: Some(key),
                    offset: Some(offset),
                    value: None,
                    message: format!(
                        "input key {key} offset {offset} was consumed by {} committed transactions",
                        ops.len()
                    ),
                    ops,
                },
            );
        }
    }
}

/// A group's committed offset of a key never moves backwards (in the order
/// the commits were acknowledged).
fn check_offset_regression(commits: &[(Pair<'_>, BTreeMap<Key, Offset>)], verdict: &mut Verdict) {
    let mut ordered: Vec<&(Pair<'_>, BTreeMap<Key, Offset>)> = commits.iter().collect();
    ordered.sort_by_key(|(p, _)| p.done_time());
    let mut last: BTreeMap<Key, (Offset, u64)> = BTreeMap::new();
    for (p, offsets) in ordered {
        for (&key, &offset) in offsets {
            if let Some(&(before, op)) = last.get(&key) {
                if offset < before {
                    verdict.flag(
                        OFFSET_REGRESSION,
                        Anomaly {
                            key: Some(key),
                            offset: Some(offset),
                            value: None,
                            message: format!("committed offset of key {key} went back from {before} to {offset}"),
                            ops: vec![op, p.done_index()],
                        },
                    );
                }
            }
            last.insert(key, (offset, p.done_index()));
        }
    }
}

/// Every kind of client operation that was tried succeeded sometimes, and
/// writes were acknowledged again soon after every heal.
fn check_liveness(history: &[Op], pairs: &[Pair<'_>], sends: &[Send], options: &CheckOptions, verdict: &mut Verdict) {
    let client = |p: &&Pair<'_>| matches!(p.invoke.process, Process::Client(_));
    for f in CLIENT_FUNCTIONS {
        let tried: Vec<&Pair<'_>> = pairs.iter().filter(client).filter(|p| p.invoke.f == *f).collect();
        if !tried.is_empty() && tried.iter().all(|p| p.kind() != OpType::Ok) {
            verdict.flag(
                NEVER_SUCCEEDED,
                Anomaly {
                    key: None,
                    offset: None,
                    value: None,
                    message: format!("no '{f}' succeeded in {} attempts", tried.len()),
                    ops: tried.iter().take(WITNESSES_SHOWN).map(|p| p.invoke.index).collect(),
                },
            );
        }
    }

    let faults: Vec<&Op> = history.iter().filter(|op| op.process.is_nemesis()).collect();
    let heals: Vec<(usize, &Op)> = faults
        .iter()
        .enumerate()
        .filter(|(_, op)| {
            op.value.get("phase").and_then(Value::as_str) == Some("stop")
                && op.value.get("active").and_then(Value::as_u64) == Some(0)
        })
        .map(|(i, op)| (i, *op))
        .collect();
    // Acknowledged sends, and the sends of committed transactions (acknowledged
    // when the commit was).
    let ack_times: Vec<u64> = sends.iter().filter(|s| s.kind == OpType::Ok).map(|s| s.done_time).collect();
    let history_end = history.last().map_or(0, |op| op.time);
    for (position, (at, heal)) in heals.iter().enumerate() {
        let next_fault = faults.get(at + 1).map_or(history_end, |op| op.time);
        let deadline = heal.time + options.recovery_bound_ns;
        if ack_times.iter().any(|&t| t >= heal.time && t <= deadline) {
            continue;
        }
        let last_heal = position + 1 == heals.len();
        if next_fault >= deadline || last_heal {
            verdict.flag(
                NO_RECOVERY,
                Anomaly {
                    key: None,
                    offset: None,
                    value: None,
                    message: format!(
                        "no send was acknowledged within {:.1} s after every fault healed at {:.1} s",
                        options.recovery_bound_ns as f64 / 1e9,
                        heal.time as f64 / 1e9
                    ),
                    ops: vec![heal.index],
                },
            );
        }
    }
}

#[cfg(test)]
mod tests;
