//! Workloads: logical client processes that send and poll against the live
//! cluster and record every operation in the history, and the final drain.
//!
//! A key is a partition of the workload's topic; each key gets unique,
//! increasing integer values from a shared counter. A few keys are active at
//! a time and the active window moves on ("rotates") every
//! `rotate_every_sends` sends, so every key's history stays short.
//!
//! Outcomes: a send is `ok` with its offset when acknowledged, `fail` only
//! when the client certainly never sent it (a local error), and `info`
//! otherwise, because after a timeout or a lost connection, and after a
//! request the client may have tried at more than one node, nobody knows
//! whether it was stored. A process whose operation ends in `info` is
//! retired; its worker continues as a fresh process with a new client.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Value};
use strata_client::{
    now_ms, Acks, Bytes, Client, ClientConfig, ClientError, ConsumedRecord, Consumer, Header, ListedOffset, OffsetSpec,
    Producer, ProducerConfig, Record, StartOffset, IDEMPOTENCY_KEY_HEADER,
};

use crate::history::{OpType, Process, Recorder};
use crate::members::Member;
use crate::txns::TxnProcess;

/// Which workload runs.
///
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    /// One attempt per send (`Client::produce_batch`), no producer retries.
    Queue,
    /// Sends through the batching `Producer`, which retries through faults.
    Idempotent,
    /// One attempt per send, each record carrying an idempotency key; a
    /// send whose outcome is unknown is sent again by the worker's next
    /// process, and now and then an earlier record is re-sent on purpose.
    /// The topic has time-based retention and a `dedup.window` longer than
    /// the run, so a key stored at two offsets is a duplicate, and a
    /// record trimmed before its retention allows is an early deletion.
    Keys,
    /// Producers send as in `queue`; the other processes are members of one
    /// consumer group (see `members`), which heartbeat, read the partitions
    /// they hold from the committed offsets, and commit, through the raw
    /// group calls. Member processes crash or leave now and then while
    /// faults run.
    Group,
    /// Read-process-write transactions (see `txns`): each worker reads the
    /// keys it owns, sends 1-3 records and commits its consumed offsets in
    /// one transaction, or aborts (one in 8 on purpose).
    Txn,
}

impl WorkloadKind {
    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Queue => "queue",
            WorkloadKind::Idempotent => "idempotent",
            WorkloadKind::Keys => "keys",
            WorkloadKind::Group => "group",
            WorkloadKind::Txn => "txn",
        }
    }
}

/// Whether the client's producer promises not to duplicate on retries:
/// it does (idempotent producers), so the checker fails the `idempotent`
/// workload on any duplicate.
pub const PRODUCER_IDEMPOTENCE: bool = true;

/// The producer settings of the `idempotent` workload, for a process whose
/// requests wait `request_timeout`.
pub fn producer_config(request_timeout: Duration) -> ProducerConfig {
    ProducerConfig {
        idempotence: PRODUCER_IDEMPOTENCE,
        linger: Duration::ZERO,
        // One request in flight per partition keeps a process's sends in order.
        max_in_flight: 1,
        acks: Acks::All,
        delivery_timeout: SEND_RETRY_WINDOW,
        request_timeout,
        ..ProducerConfig::default()
    }
}

/// One process in `SHORT_TIMEOUT_ONE_IN` gives its produce requests a
/// deadline of 100-800 ms instead of `REQUEST_TIMEOUT`: shorter than a
/// commit during an election, a pause or a slow disk, so the server answers
/// TIMEOUT (or the client gives up) while the write may still commit, and
/// the outcome is unknown.
const SHORT_TIMEOUT_ONE_IN: u32 = 3;
const SHORT_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 100..=800;
/// The `keys` workload re-sends one earlier record (acknowledged or not)
/// instead of a new one in this many sends.
const RESEND_ONE_IN: u32 = 8;
/// Records a `keys` worker remembers for re-sending on purpose.
const RESEND_MEMORY: usize = 64;
/// How often the `keys` workload reads every key's log start, to catch
/// records trimmed before their retention allows.
const LOG_START_EVERY: Duration = Duration::from_millis(500);

/// Deadline of one request: long enough for an election (about 1-3 s), short
/// enough that a client stuck on a paused node gives up within a window.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the `idempotent` producer keeps retrying one record.
const SEND_RETRY_WINDOW: Duration = Duration::from_secs(20);
/// Hard bound on any one operation, past the client's own deadlines; when it
/// fires the outcome is unknown.
pub(crate) const OP_DEADLINE: Duration = Duration::from_secs(30);
/// Long-poll wait of one poll.
pub(crate) const POLL_WAIT: Duration = Duration::from_millis(300);

/// A keyed record a `keys` worker sent, to be sent again with the same
/// idempotency key and timestamp.
#[derive(Clone, Copy, Debug)]
struct Sent {
    key: u32,
    value: u64,
    timestamp_ms: i64,
}

/// What a `keys` worker re-sends: records whose outcome it never learned
/// (sent again first, by its next process), and recent ones.
#[derive(Default)]
struct Resends {
    unknown: Vec<Sent>,
    recent: std::collections::VecDeque<Sent>,
}

/// The idempotency key of a `keys` record: one per (key, value).
pub fn idempotency_key(key: u32, value: u64) -> String {
    format!("{key}-{value}")
}

#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    pub kind: WorkloadKind,
    pub topic: String,
    /// Partitions of the topic = number of keys.
    pub keys: u32,
    /// Keys written at any one time.
    pub active_keys: u32,
    pub rotate_every_sends: u64,
    pub concurrency: usize,
    /// Upper bound of the random pause between one process's operations.
    pub op_pause_ms_max: u64,
    pub bootstrap: Vec<String>,
    pub seed: u64,
}

/// State shared by the workers of one run.
pub struct Workload {
    config: WorkloadConfig,
    recorder: Recorder,
    pub(crate) next_value: Vec<AtomicU64>,
    sends: AtomicU64,
    stop: AtomicBool,
    /// History time (ns) of the latest acknowledged send (or committed
    /// transaction).
    pub(crate) last_ack_ns: AtomicU64,
    /// `group`: whether member processes may still crash (only while faults run).
    client_crashes: AtomicBool,
    /// `group`: the member ids of the member processes running now.
    live_members: Mutex<BTreeSet<String>>,
}

pub fn client_config() -> ClientConfig {
    ClientConfig {
        request_timeout: REQUEST_TIMEOUT,
        connect_timeout: Duration::from_secs(1),
        ..ClientConfig::default()
    }
}

pub fn connect(bootstrap: &[String]) -> Client {
    Client::connect_with(bootstrap, client_config()).expect("the harness's own addresses are valid")
}

impl Workload {
    pub fn new(config: WorkloadConfig, recorder: Recorder) -> Arc<Workload> {
        assert!(config.keys >= 1 && config.active_keys >= 1 && config.concurrency >= 1);
        let next_value = (0..config.keys).map(|_| AtomicU64::new(0)).collect();
        Arc::new(Workload {
            config,
            recorder,
            next_value,
            sends: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            last_ack_ns: AtomicU64::new(0),
            client_crashes: AtomicBool::new(true),
            live_members: Mutex::new(BTreeSet::new()),
        })
    }

    /// Asks the workers to stop after their current operation.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// History time (ns) of the latest acknowledged send, 0 before any.
    pub fn last_ack_ns(&self) -> u64 {
        self.last_ack_ns.load(Ordering::SeqCst)
    }

    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    pub(crate) fn config(&self) -> &WorkloadConfig {
        &self.config
    }

    /// `group`: member processes stop crashing (called at the final heal).
    pub fn stop_client_crashes(&self) {
        self.client_crashes.store(false, Ordering::SeqCst);
    }

    pub(crate) fn client_crashes(&self) -> bool {
        self.client_crashes.load(Ordering::SeqCst)
    }

    pub(crate) fn member_started(&self, member_id: &str) {
        self.live_members.lock().expect("members lock").insert(member_id.to_string());
    }

    pub(crate) fn member_ended(&self, member_id: &str) {
        self.live_members.lock().expect("members lock").remove(member_id);
    }

    /// `group`: the member ids of the member processes running now.
    pub fn live_members(&self) -> BTreeSet<String> {
        self.live_members.lock().expect("members lock").clone()
    }

    /// `group`: how many workers are producers; the rest are members.
    fn producers(&self) -> usize {
        (self.config.concurrency / 3).max(1)
    }

    /// Starts the workers; each runs until `stop`. The `keys` workload
    /// also reads every key's log start now and then.
    pub fn spawn(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks: Vec<_> = (0..self.config.concurrency)
            .map(|worker| {
                let workload = self.clone();
                tokio::spawn(async move { workload.worker(worker).await })
            })
            .collect();
        if self.config.kind == WorkloadKind::Keys {
            let workload = self.clone();
            tasks.push(tokio::spawn(async move { workload.watch_log_starts().await }));
        }
        tasks
    }

    async fn worker(self: Arc<Self>, worker: usize) {
        let mut rng = StdRng::seed_from_u64(self.config.seed.wrapping_mul(1_000_003).wrapping_add(worker as u64));
        let mut generation = 0u64;
        let mut resends = Resends::default();
        let member = self.config.kind == WorkloadKind::Group && worker >= self.producers();
        while !self.stopped() {
            let process = worker as u64 + generation * self.config.concurrency as u64;
            generation += 1;
            if member {
                Member::new(&self, process).run(&mut rng).await;
                continue;
            }
            if self.config.kind == WorkloadKind::Txn {
                match TxnProcess::start(&self, worker, process).await {
                    Some(txns) => txns.run(&mut rng).await,
                    // Pacing, not synchronisation: the next process tries
                    // again after an operation's pause.
                    None => tokio::time::sleep(Duration::from_millis(self.config.op_pause_ms_max)).await,
                }
                continue;
            }
            let mut session = Session::new(&self, process, &mut rng);
            session.run(&mut rng, &mut resends).await;
        }
    }

    /// Records every key's log start every `LOG_START_EVERY`, as process
    /// `log-start`, until the workload stops.
    async fn watch_log_starts(self: Arc<Self>) {
        let process = Process::Named("log-start".into());
        let client = connect(&self.config.bootstrap);
        while !self.stopped() {
            for key in 0..self.config.keys {
                record_log_start(&self.recorder, &process, &client, &self.config.topic, key).await;
            }
            tokio::time::sleep(LOG_START_EVERY).await;
        }
    }

    pub(crate) fn record(&self, process: &Process, kind: OpType, f: &str, value: Value, error: Option<String>) -> u64 {
        self.recorder.record(process.clone(), kind, f, value, None, error).time
    }

    pub(crate) fn pick_key(&self, rng: &mut StdRng) -> u32 {
        let window = self.sends.fetch_add(1, Ordering::SeqCst) / self.config.rotate_every_sends.max(1);
        let first = (window * self.config.active_keys as u64) % self.config.keys as u64;
        ((first + rng.gen_range(0..self.config.active_keys as u64)) % self.config.keys as u64) as u32
    }
}

/// How one operation ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ended {
    Ok,
    Fail,
    Unknown,
}

/// One logical process: its own client, consumer and (for `idempotent`) producer.
struct Session {
    workload: Arc<Workload>,
    process: Process,
    client: Client,
    consumer: Consumer,
    producer: Option<Producer>,
    needs_assign: bool,
    /// Deadline of this process's produce requests.
    request_timeout: Duration,
}

pub(crate) fn outcome_of(error: &ClientError) -> OpType {
    match error {
        // Found by the client before anything went on the wire.
        ClientError::Local { .. } | ClientError::InvalidArgument(_) => OpType::Fail,
        _ => OpType::Info,
    }
}

impl Session {
    fn new(workload: &Arc<Workload>, process: u64, rng: &mut StdRng) -> Session {
        let client = connect(&workload.config.bootstrap);
        let request_timeout = if rng.gen_ratio(1, SHORT_TIMEOUT_ONE_IN) {
            Duration::from_millis(rng.gen_range(SHORT_TIMEOUT_MS))
        } else {
            REQUEST_TIMEOUT
        };
        let producer = match workload.config.kind {
            WorkloadKind::Queue | WorkloadKind::Keys | WorkloadKind::Group | WorkloadKind::Txn => None,
            WorkloadKind::Idempotent => Some(
                Producer::new(client.clone(), producer_config(request_timeout))
                    .expect("the workload's producer settings agree"),
            ),
        };
        Session {
            workload: workload.clone(),
            process: Process::Client(process),
            consumer: Consumer::new(connect(&workload.config.bootstrap)),
            client,
            producer,
            // A `group` producer only sends.
            needs_assign: workload.config.kind != WorkloadKind::Group,
            request_timeout,
        }
    }

    /// Runs operations until the workload stops or one ends unknown.
    async fn run(&mut self, rng: &mut StdRng, resends: &mut Resends) {
        while !self.workload.stopped() {
            let roll = rng.gen_range(0..100);
            let ended = if self.workload.config.kind == WorkloadKind::Group {
                self.send(rng).await
            } else if self.needs_assign || roll < 5 {
                self.assign(rng).await
            } else if self.workload.config.kind == WorkloadKind::Keys && (roll < 55 || !resends.unknown.is_empty()) {
                self.send_keyed(rng, resends).await
            } else if roll < 55 {
                self.send(rng).await
            } else {
                self.poll().await
            };
            if ended == Ended::Unknown {
                return;
            }
            let pause = rng.gen_range(0..=self.workload.config.op_pause_ms_max);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }

    async fn send(&mut self, rng: &mut StdRng) -> Ended {
        let workload = self.workload.clone();
        let key = workload.pick_key(rng);
        let value = workload.next_value[key as usize].fetch_add(1, Ordering::SeqCst);
        let invoke = json!({"key": key, "value": value});
        workload.record(&self.process, OpType::Invoke, "send", invoke.clone(), None);
        let record = Record {
            key: Some(Bytes::from(key.to_string())),
            value: Some(Bytes::from(value.to_string())),
            headers: Vec::new(),
            timestamp_ms: 0,
        };
        let topic = &workload.config.topic;
        let result: Result<Result<u64, ClientError>, _> = match &self.producer {
            None => {
                let mut record = record;
                record.timestamp_ms = now_ms();
                let batch =
                    strata_client::batch::encode_batch(&[record], strata_client::batch::ProducerFields::default())
                        .expect("a one-record batch encodes");
                tokio::time::timeout(
                    OP_DEADLINE,
                    self.client.produce_batch(topic, key, batch, Acks::All, self.request_timeout),
                )
                .await
                .map(|answer| answer.map(|a| a.base_offset))
            }
            Some(producer) => {
                tokio::time::timeout(OP_DEADLINE, async {
                    let delivery = producer.send_to(topic, key, record).await?;
                    let metadata = delivery.await?;
                    metadata.offset.ok_or(ClientError::InvalidArgument("acks=all answered without an offset".into()))
                })
                .await
            }
        };
        match result {
            Ok(Ok(offset)) => {
                let at = workload.record(
                    &self.process,
                    OpType::Ok,
                    "send",
                    json!({"key": key, "value": value, "offset": offset}),
                    None,
                );
                workload.last_ack_ns.fetch_max(at, Ordering::SeqCst);
                Ended::Ok
            }
            Ok(Err(error)) => {
                let kind = outcome_of(&error);
                workload.record(&self.process, kind, "send", invoke, Some(error.to_string()));
                if kind == OpType::Fail {
                    Ended::Fail
                } else {
                    Ended::Unknown
                }
            }
            Err(_) => {
                workload.record(&self.process, OpType::Info, "send", invoke, Some("operation deadline passed".into()));
                Ended::Unknown
            }
        }
    }

    /// A `keys` send: one record with an idempotency key, one attempt. An
    /// unknown outcome leaves the record for the worker's next process to
    /// send again; a re-send must be answered with the original's offset.
    async fn send_keyed(&mut self, rng: &mut StdRng, resends: &mut Resends) -> Ended {
        let workload = self.workload.clone();
        let (sent, resend) = if let Some(sent) = resends.unknown.pop() {
            (sent, true)
        } else if !resends.recent.is_empty() && rng.gen_ratio(1, RESEND_ONE_IN) {
            (resends.recent[rng.gen_range(0..resends.recent.len())], true)
        } else {
            let key = workload.pick_key(rng);
            let value = workload.next_value[key as usize].fetch_add(1, Ordering::SeqCst);
            (Sent { key, value, timestamp_ms: now_ms() }, false)
        };
        let Sent { key, value, timestamp_ms } = sent;
        let invoke = json!({"key": key, "value": value, "ts": timestamp_ms, "resend": resend});
        workload.record(&self.process, OpType::Invoke, "send", invoke.clone(), None);
        let record = Record {
            key: Some(Bytes::from(key.to_string())),
            value: Some(Bytes::from(value.to_string())),
            headers: vec![Header {
                key: IDEMPOTENCY_KEY_HEADER.into(),
                value: Some(Bytes::from(idempotency_key(key, value))),
            }],
            // The same event time on every attempt, as an application
            // re-sending one event would; retention counts from it.
            timestamp_ms,
        };
        let batch = strata_client::batch::encode_batch(&[record], strata_client::batch::ProducerFields::default())
            .expect("a one-record batch encodes");
        let topic = &workload.config.topic;
        let result = tokio::time::timeout(
            OP_DEADLINE,
            self.client.produce_batch(topic, key, batch, Acks::All, self.request_timeout),
        )
        .await;
        match result {
            Ok(Ok(answer)) => {
                let offset = answer.record_offsets(1)[0];
                let mut done = invoke;
                done["offset"] = json!(offset);
                let at = workload.record(&self.process, OpType::Ok, "send", done, None);
                workload.last_ack_ns.fetch_max(at, Ordering::SeqCst);
                if resends.recent.len() >= RESEND_MEMORY {
                    resends.recent.pop_front();
                }
                resends.recent.push_back(sent);
                Ended::Ok
            }
            Ok(Err(error)) => {
                let kind = outcome_of(&error);
                workload.record(&self.process, kind, "send", invoke, Some(error.to_string()));
                if kind == OpType::Fail {
                    Ended::Fail
                } else {
                    resends.unknown.push(sent);
                    Ended::Unknown
                }
            }
            Err(_) => {
                workload.record(&self.process, OpType::Info, "send", invoke, Some("operation deadline passed".into()));
                resends.unknown.push(sent);
                Ended::Unknown
            }
        }
    }

    async fn poll(&mut self) -> Ended {
        let workload = self.workload.clone();
        workload.record(&self.process, OpType::Invoke, "poll", Value::Null, None);
        match tokio::time::timeout(OP_DEADLINE, self.consumer.poll(POLL_WAIT)).await {
            Ok(Ok(records)) => match reads_value(&records) {
                Ok(value) => {
                    workload.record(&self.process, OpType::Ok, "poll", value, None);
                    Ended::Ok
                }
                Err(bad) => {
                    // A record the workload never wrote: the consumer has
                    // moved past it, so this process's reads end here.
                    workload.record(&self.process, OpType::Info, "poll", Value::Null, Some(bad.to_string()));
                    Ended::Unknown
                }
            },
            Ok(Err(error)) => {
                workload.record(&self.process, OpType::Fail, "poll", Value::Null, Some(error.to_string()));
                // A fatal answer (e.g. an offset out of range) repeats until
                // the assignment changes.
                self.needs_assign = !error.is_retryable();
                Ended::Fail
            }
            Err(_) => {
                // Dropping a poll midway may lose records it had taken in.
                workload.record(
                    &self.process,
                    OpType::Info,
                    "poll",
                    Value::Null,
                    Some("operation deadline passed".into()),
                );
                Ended::Unknown
            }
        }
    }

    async fn assign(&mut self, rng: &mut StdRng) -> Ended {
        let workload = self.workload.clone();
        let all: Vec<u32> = (0..workload.config.keys).collect();
        let count = rng.gen_range(1..=all.len());
        let mut keys: Vec<u32> = all.choose_multiple(rng, count).copied().collect();
        keys.sort();
        let starts: Vec<StartOffset> =
            keys.iter().map(|_| if rng.gen_bool(0.5) { StartOffset::Earliest } else { StartOffset::Latest }).collect();
        workload.record(&self.process, OpType::Invoke, "assign", json!({"keys": keys}), None);
        // A fresh consumer on a client of its own: a consumer keeps fetches
        // parked between polls, and a parked fetch that is refreshing
        // metadata holds its client's refresh lock until the next poll, so
        // any other call on that client (an assign here, a send if the
        // client were shared) would wait for it forever.
        self.consumer = Consumer::new(connect(&workload.config.bootstrap));
        let topic = workload.config.topic.clone();
        let consumer = &mut self.consumer;
        let assigned = tokio::time::timeout(OP_DEADLINE, async {
            let mut positions = BTreeMap::new();
            for (&key, &start) in keys.iter().zip(&starts) {
                positions.insert(key.to_string(), consumer.assign(&topic, key, start).await?);
            }
            Ok::<_, ClientError>(positions)
        })
        .await;
        match assigned {
            Ok(Ok(positions)) => {
                workload.record(
                    &self.process,
                    OpType::Ok,
                    "assign",
                    json!({"keys": keys, "positions": positions}),
                    None,
                );
                self.needs_assign = false;
                Ended::Ok
            }
            Ok(Err(error)) => {
                // Part of the assignment may have taken effect: start afresh.
                workload.record(&self.process, OpType::Info, "assign", json!({"keys": keys}), Some(error.to_string()));
                Ended::Unknown
            }
            Err(_) => {
                workload.record(
                    &self.process,
                    OpType::Info,
                    "assign",
                    json!({"keys": keys}),
                    Some("operation deadline passed".into()),
                );
                Ended::Unknown
            }
        }
    }
}

/// A record the workload never wrote, met by a read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ForeignRecord {
    #[error("key {key} offset {offset} holds '{value}', not an integer value")]
    NotAnInteger { key: u32, offset: u64, value: String },
    #[error("key {key} offset {offset} has record key '{record_key}'")]
    WrongKey { key: u32, offset: u64, record_key: String },
}

/// `{"K": [[offset, value], ...]}`; an error names a record that is not one
/// of the workload's (its value is not an integer or its key is wrong).
pub(crate) fn reads_value(records: &[ConsumedRecord]) -> Result<Value, ForeignRecord> {
    let mut by_key: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for record in records {
        let (key, offset) = (record.partition, record.offset);
        let text = record.value.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
        let value: u64 =
            text.parse().map_err(|_| ForeignRecord::NotAnInteger { key, offset, value: text.to_string() })?;
        let record_key = record.key.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
        if record_key != key.to_string() {
            return Err(ForeignRecord::WrongKey { key, offset, record_key: record_key.to_string() });
        }
        by_key.entry(key.to_string()).or_default().push(json!([offset, value]));
    }
    Ok(json!(by_key))
}

/// How far the drain got.
#[derive(Debug, Default, Serialize)]
pub struct DrainOutcome {
    /// key -> (reached position, target)
    pub short: BTreeMap<u32, (u64, u64)>,
    pub polls: u64,
    pub elapsed_ms: u64,
}

/// Reads `key`'s log start and high watermark at its leader and records
/// them as a `log-start` operation of `process`: ok `{"key", "log_start",
/// "high_watermark", "at_ms"}`, `at_ms` being the harness's wall clock when
/// the answer arrived (retention counts wall-clock time from record
/// timestamps, which the workloads stamp with the same clock).
pub async fn record_log_start(
    recorder: &Recorder,
    process: &Process,
    client: &Client,
    topic: &str,
    key: u32,
) -> Option<ListedOffset> {
    recorder.record(process.clone(), OpType::Invoke, "log-start", json!({"key": key}), None, None);
    match tokio::time::timeout(OP_DEADLINE, client.list_offsets(topic, key, OffsetSpec::Earliest)).await {
        Ok(Ok(listed)) => {
            let value = json!({
                "key": key,
                "log_start": listed.log_start_offset,
                "high_watermark": listed.high_watermark,
                "at_ms": now_ms(),
            });
            recorder.record(process.clone(), OpType::Ok, "log-start", value, None, None);
            Some(listed)
        }
        Ok(Err(error)) => {
            // A read has no effect, whatever went wrong.
            recorder.record(
                process.clone(),
                OpType::Fail,
                "log-start",
                json!({"key": key}),
                None,
                Some(error.to_string()),
            );
            None
        }
        Err(_) => {
            recorder.record(
                process.clone(),
                OpType::Info,
                "log-start",
                json!({"key": key}),
                None,
                Some("deadline".into()),
            );
            None
        }
    }
}

/// How often the drain starts over after retention moved a log start past
/// its position (only topics with retention, i.e. the `keys` workload).
const DRAIN_RESTARTS: u32 = 5;

/// Reads every key from its log start up to `targets` (one past the highest
/// acknowledged offset, or the high watermark when higher), recording the
/// reads as process `drain`, until done or `deadline`. With
/// `from_log_start` (topics with retention) reading starts at each key's
/// log start as the drain saw it, and starts over there when retention
/// moves it on; otherwise at offset 0, which needs no leader to answer.
pub async fn drain(
    recorder: &Recorder,
    bootstrap: &[String],
    topic: &str,
    mut targets: BTreeMap<u32, u64>,
    from_log_start: bool,
    deadline: Instant,
) -> DrainOutcome {
    let started = Instant::now();
    let process = Process::Named("drain".into());
    let client = connect(bootstrap);
    let mut outcome = DrainOutcome::default();
    let mut restarts = 0;
    let keys: Vec<u32> = targets.keys().copied().collect();
    let mut consumer;
    'start: loop {
        let mut starts: BTreeMap<u32, u64> = BTreeMap::new();
        for (&key, target) in targets.iter_mut() {
            while Instant::now() < deadline {
                match record_log_start(recorder, &process, &client, topic, key).await {
                    Some(listed) => {
                        *target = (*target).max(listed.high_watermark);
                        starts.insert(key, if from_log_start { listed.log_start_offset } else { 0 });
                        break;
                    }
                    None => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
        consumer = Consumer::new(client.clone());
        recorder.record(process.clone(), OpType::Invoke, "assign", json!({"keys": keys}), None, None);
        let mut positions = BTreeMap::new();
        for &key in &keys {
            // An explicit offset needs only the topic's metadata, which a
            // cluster that has just come back may serve before its leaders.
            let start = starts.get(&key).copied().unwrap_or(0);
            loop {
                match consumer.assign(topic, key, StartOffset::Offset(start)).await {
                    Ok(position) => {
                        positions.insert(key.to_string(), position);
                        break;
                    }
                    Err(error) if Instant::now() >= deadline => {
                        recorder.record(
                            process,
                            OpType::Info,
                            "assign",
                            json!({"keys": keys}),
                            None,
                            Some(error.to_string()),
                        );
                        outcome.short = targets.iter().map(|(&k, &t)| (k, (0, t))).collect();
                        outcome.elapsed_ms = started.elapsed().as_millis() as u64;
                        return outcome;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
        recorder.record(
            process.clone(),
            OpType::Ok,
            "assign",
            json!({"keys": keys, "positions": positions}),
            None,
            None,
        );
        let done = |consumer: &Consumer| targets.iter().all(|(&k, &t)| consumer.position(topic, k).unwrap_or(0) >= t);
        while !done(&consumer) && Instant::now() < deadline {
            outcome.polls += 1;
            recorder.record(process.clone(), OpType::Invoke, "poll", Value::Null, None, None);
            match tokio::time::timeout(OP_DEADLINE, consumer.poll(POLL_WAIT)).await {
                Ok(Ok(records)) => match reads_value(&records) {
                    Ok(value) => {
                        recorder.record(process.clone(), OpType::Ok, "poll", value, None, None);
                    }
                    Err(bad) => {
                        recorder.record(
                            process.clone(),
                            OpType::Info,
                            "poll",
                            Value::Null,
                            None,
                            Some(bad.to_string()),
                        );
                        break;
                    }
                },
                Ok(Err(error)) => {
                    let retryable = error.is_retryable();
                    recorder.record(process.clone(), OpType::Fail, "poll", Value::Null, None, Some(error.to_string()));
                    // Retention moved a log start past the position.
                    if !retryable && from_log_start && restarts < DRAIN_RESTARTS {
                        restarts += 1;
                        continue 'start;
                    }
                }
                Err(_) => {
                    recorder.record(process.clone(), OpType::Info, "poll", Value::Null, None, Some("deadline".into()));
                    break;
                }
            };
        }
        break;
    }
    for (&key, &target) in &targets {
        let reached = consumer.position(topic, key).unwrap_or(0);
        if reached < target {
            outcome.short.insert(key, (reached, target));
        }
    }
    outcome.elapsed_ms = started.elapsed().as_millis() as u64;
    outcome
}
