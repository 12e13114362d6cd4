//! The `txn` workload: read-process-write transactions under faults,
//! through the raw transaction calls of `strata-client`, so that every step
//! is part of an operation in the history.
//!
//! Worker `w` owns the keys `k` with `k % concurrency == w` as its input,
//! reads them with a read_committed `Consumer`, and commits what it consumed
//! as the offsets of its own group `jepsen-txn-w` (standalone commits: the
//! group has no members), inside its transactions. Its processes share the
//! transactional id `jepsen-txn-w`: a new process (after an operation with
//! an unknown outcome) initialises it again, which fences the old one and
//! aborts whatever transaction it left open, then starts reading at the
//! group's committed offsets.
//!
//! One transaction: poll the owned keys, send 1-3 records (one per request,
//! each to a key of the active window, with the producer's id, epoch and
//! sequence), stage the positions reached as the group's offsets, and
//! commit, or (one in 8) abort. A transaction that cannot go on (a send or
//! the offsets refused or unanswered) is aborted. History: invoke
//! `{"ops": []}`; the completion `{"ops": [["poll", {...}], ["send", K, V,
//! O]...], "consumed": {"K": [O...]}, "commit": {"K": O}}` is `ok` when the
//! commit was answered, `fail` when the abort was (or the coordinator
//! answered that it aborted the transaction itself), and `info` when the
//! end was not answered; the process then ends. After an abort the
//! consumer starts again at the committed offsets (an `assign`).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Value};
use strata_client::{Bytes, Client, ClientError, Consumer, ErrorCode, Record, StartOffset};

use crate::history::{OpType, Process};
use crate::workload::{connect, reads_value, Workload, OP_DEADLINE, POLL_WAIT, REQUEST_TIMEOUT};

/// The transactions' timeout: short, so a transaction a crashed process
/// left open is aborted within a fault window.
pub const TXN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long past its timeout an open transaction may still be open before
/// it counts as hanging: the coordinator's check interval (0.25 s), an
/// election of the metadata group (up to about 3 s), writing the markers
/// (a partition election, about 3 s more) and completing, with room.
pub const HANGING_BOUND: Duration = Duration::from_secs(15);

/// How often the harness lists the transactions while it waits for the
/// open ones to end: a list is one request, and the wait is 25 s at most,
/// so the end of the last one is seen within half a second.
const LIST_EVERY: Duration = Duration::from_millis(500);

/// One transaction in 8 is aborted on purpose.
const ABORT_ONE_IN: u32 = 8;

/// The transactional id and group of a worker.
pub fn transactional_id(worker: usize) -> String {
    format!("jepsen-txn-{worker}")
}

/// Why a transaction stopped before its end.
enum Stop {
    /// It must be aborted (a refusal or an unanswered step).
    Abort(String),
}

/// One process of a `txn` worker.
pub struct TxnProcess {
    workload: Arc<Workload>,
    process: Process,
    client: Client,
    consumer: Consumer,
    owned: Vec<u32>,
    id: String,
    producer: (u64, i16),
    /// The next sequence per key in the current epoch.
    sequences: BTreeMap<u32, i32>,
}

impl TxnProcess {
    /// Initialises the worker's transactional id (fencing its previous
    /// process) and reads the owned keys from the group's committed offsets.
    /// `None` when that did not work; the worker tries again as a new process.
    pub async fn start(workload: &Arc<Workload>, worker: usize, process: u64) -> Option<TxnProcess> {
        let config = workload.config();
        let owned: Vec<u32> = (0..config.keys).filter(|k| *k as usize % config.concurrency == worker).collect();
        let client = connect(&config.bootstrap);
        let id = transactional_id(worker);
        let process = Process::Client(process);
        workload.record(&process, OpType::Invoke, "txn-init", json!({"id": id}), None);
        let init = tokio::time::timeout(OP_DEADLINE, client.init_transactional_producer(&id, TXN_TIMEOUT)).await;
        let producer = match init {
            Ok(Ok(producer)) => producer,
            Ok(Err(error)) => {
                workload.record(&process, OpType::Info, "txn-init", json!({"id": id}), Some(error.to_string()));
                return None;
            }
            Err(_) => {
                workload.record(&process, OpType::Info, "txn-init", json!({"id": id}), Some("deadline".into()));
                return None;
            }
        };
        let value = json!({"id": id, "producer_id": producer.0, "producer_epoch": producer.1});
        workload.record(&process, OpType::Ok, "txn-init", value, None);
        let consumer = Consumer::new(connect(&config.bootstrap));
        let mut me = TxnProcess {
            workload: workload.clone(),
            process,
            client,
            consumer,
            owned,
            id,
            producer,
            sequences: BTreeMap::new(),
        };
        me.rewind().await.then_some(me)
    }

    /// Reads the owned keys again from the group's committed offsets (0
    /// where it has none), on a fresh consumer; records an `assign`.
    async fn rewind(&mut self) -> bool {
        let workload = self.workload.clone();
        workload.record(&self.process, OpType::Invoke, "assign", json!({"keys": self.owned}), None);
        self.consumer = Consumer::new(connect(&workload.config().bootstrap));
        let topic = workload.config().topic.clone();
        let (client, consumer, owned, group) = (&self.client, &mut self.consumer, &self.owned, &self.id);
        let assigned = tokio::time::timeout(OP_DEADLINE, async {
            let wanted = [(topic.clone(), owned.iter().copied().collect())].into();
            let committed = match client.fetch_offsets(group, &wanted).await {
                Ok(committed) => committed,
                // Nothing committed yet: the group does not exist.
                Err(error) if error.code() == Some(ErrorCode::GroupIdNotFound) => Vec::new(),
                Err(error) => return Err(error),
            };
            let mut positions = BTreeMap::new();
            for &key in owned {
                let at = committed.iter().find(|c| c.partition == key).and_then(|c| c.committed.as_ref());
                let start = at.map_or(0, |c| c.offset);
                positions.insert(key.to_string(), consumer.assign(&topic, key, StartOffset::Offset(start)).await?);
            }
            Ok::<_, ClientError>(positions)
        })
        .await;
        match assigned {
            Ok(Ok(positions)) => {
                let value = json!({"keys": self.owned, "positions": positions});
                workload.record(&self.process, OpType::Ok, "assign", value, None);
                true
            }
            Ok(Err(error)) => {
                workload.record(
                    &self.process,
                    OpType::Info,
                    "assign",
                    json!({"keys": self.owned}),
                    Some(error.to_string()),
                );
                false
            }
            Err(_) => {
                let value = json!({"keys": self.owned});
                workload.record(&self.process, OpType::Info, "assign", value, Some("deadline".into()));
                false
            }
        }
    }

    /// Runs transactions until the workload stops or one ends unknown.
    pub async fn run(mut self, rng: &mut StdRng) {
        while !self.workload.stopped() {
            if !self.transaction(rng).await {
                return;
            }
            let pause = rng.gen_range(0..=self.workload.config().op_pause_ms_max);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }

    /// One transaction; false when its outcome is unknown (the process ends).
    async fn transaction(&mut self, rng: &mut StdRng) -> bool {
        let workload = self.workload.clone();
        workload.record(&self.process, OpType::Invoke, "txn", json!({"ops": []}), None);
        let mut ops: Vec<Value> = Vec::new();
        let mut consumed: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut commit: BTreeMap<String, u64> = BTreeMap::new();
        let stopped = self.run_steps(rng, &mut ops, &mut consumed, &mut commit).await;
        let decision = match &stopped {
            Ok(()) => !rng.gen_ratio(1, ABORT_ONE_IN),
            Err(_) => false,
        };
        let mut done = json!({"ops": ops, "consumed": consumed, "commit": commit});
        if let Err(Stop::Abort(why)) = &stopped {
            done["aborted_because"] = json!(why);
        }
        let ended = tokio::time::timeout(OP_DEADLINE, self.client.end_txn(&self.id, self.producer, decision)).await;
        match ended {
            Ok(Ok(next)) => {
                self.producer = next;
                self.sequences.clear();
                if decision {
                    let at = workload.record(&self.process, OpType::Ok, "txn", done, None);
                    workload.last_ack_ns.fetch_max(at, Ordering::SeqCst);
                    true
                } else {
                    workload.record(&self.process, OpType::Fail, "txn", done, None);
                    self.rewind().await
                }
            }
            // The coordinator aborted it itself (its timeout passed): a
            // known outcome, and the producer must initialise again.
            Ok(Err(error))
                if matches!(error.code(), Some(ErrorCode::TransactionTimedOut | ErrorCode::TransactionAborted)) =>
            {
                workload.record(&self.process, OpType::Fail, "txn", done, Some(error.to_string()));
                false
            }
            Ok(Err(error)) => {
                workload.record(&self.process, OpType::Info, "txn", done, Some(error.to_string()));
                false
            }
            Err(_) => {
                workload.record(&self.process, OpType::Info, "txn", done, Some("end deadline passed".into()));
                false
            }
        }
    }

    /// The steps before the end: poll, sends, offsets.
    async fn run_steps(
        &mut self,
        rng: &mut StdRng,
        ops: &mut Vec<Value>,
        consumed: &mut BTreeMap<String, Vec<u64>>,
        commit: &mut BTreeMap<String, u64>,
    ) -> Result<(), Stop> {
        let workload = self.workload.clone();
        let topic = workload.config().topic.clone();
        if !self.owned.is_empty() {
            let polled = tokio::time::timeout(OP_DEADLINE, self.consumer.poll(POLL_WAIT)).await;
            let records = match polled {
                Ok(Ok(records)) => records,
                Ok(Err(error)) => return Err(Stop::Abort(format!("poll: {error}"))),
                Err(_) => return Err(Stop::Abort("poll deadline passed".into())),
            };
            let value = reads_value(&records).map_err(|e| Stop::Abort(format!("poll read {e}")))?;
            for record in &records {
                consumed.entry(record.partition.to_string()).or_default().push(record.offset);
                commit.insert(record.partition.to_string(), record.offset + 1);
            }
            ops.push(json!(["poll", value]));
        }
        for _ in 0..rng.gen_range(1..=3) {
            let key = workload.pick_key(rng);
            let value = workload.next_value[key as usize].fetch_add(1, Ordering::SeqCst);
            let sequence = self.sequences.get(&key).copied().unwrap_or(0);
            let record = Record {
                key: Some(Bytes::from(key.to_string())),
                value: Some(Bytes::from(value.to_string())),
                headers: Vec::new(),
                timestamp_ms: strata_client::now_ms(),
            };
            let producer_id = i64::try_from(self.producer.0).expect("producer ids fit an i64");
            let fields = strata_client::batch::ProducerFields {
                producer_id,
                producer_epoch: self.producer.1,
                base_sequence: sequence,
            };
            let batch = strata_client::batch::encode_transactional_batch(&[record], fields)
                .expect("a one-record batch encodes");
            let sent = tokio::time::timeout(
                OP_DEADLINE,
                self.client.produce_transactional_batch(&topic, key, batch, &self.id, REQUEST_TIMEOUT),
            )
            .await;
            match sent {
                Ok(Ok(answer)) => {
                    self.sequences.insert(key, sequence + 1);
                    ops.push(json!(["send", key, value, answer.base_offset]));
                }
                Ok(Err(error)) => {
                    ops.push(json!(["send", key, value]));
                    return Err(Stop::Abort(format!("send: {error}")));
                }
                Err(_) => {
                    ops.push(json!(["send", key, value]));
                    return Err(Stop::Abort("send deadline passed".into()));
                }
            }
        }
        if !commit.is_empty() {
            let offsets: Vec<(String, u32, u64)> = commit
                .iter()
                .map(|(key, offset)| (topic.clone(), key.parse().expect("keys are numbers"), *offset))
                .collect();
            let staged = self.client.add_offsets_to_txn(&self.id, self.producer, &self.id, "", -1, &offsets);
            match tokio::time::timeout(OP_DEADLINE, staged).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Err(Stop::Abort(format!("offsets: {error}"))),
                Err(_) => return Err(Stop::Abort("offsets deadline passed".into())),
            }
        }
        Ok(())
    }
}

/// Lists the transactions once no transaction is open any more, or once
/// `wait` has passed, and records that list as `txn-list` of process
/// `txn-check`: ok `{"transactions": [{"id", "state", "age_ms",
/// "timeout_ms"}], "bound_ms": B}`. Returns a note when some were still open.
pub async fn record_open_transactions(
    client: &Client,
    recorder: &crate::history::Recorder,
    wait: Duration,
) -> Option<String> {
    let process = Process::Named("txn-check".into());
    recorder.record(process.clone(), OpType::Invoke, "txn-list", Value::Null, None, None);
    let open = |state: &str| matches!(state, "ONGOING" | "PREPARE_COMMIT" | "PREPARE_ABORT");
    let deadline = tokio::time::Instant::now() + wait;
    let mut last = None;
    loop {
        if let Ok(Ok(listed)) = tokio::time::timeout(OP_DEADLINE, client.list_transactions()).await {
            let still_open = listed.iter().filter(|t| open(&t.state)).count();
            last = Some(listed);
            if still_open == 0 {
                break;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(LIST_EVERY).await;
    }
    let Some(listed) = last else {
        recorder.record(process, OpType::Fail, "txn-list", Value::Null, None, Some("no answer".into()));
        return Some("the transactions could not be listed after the run".into());
    };
    let rows: Vec<Value> = listed
        .iter()
        .map(|t| json!({"id": t.transactional_id, "state": t.state, "age_ms": t.age_ms, "timeout_ms": t.timeout_ms}))
        .collect();
    let still_open = listed.iter().filter(|t| open(&t.state)).count();
    let value = json!({"transactions": rows, "bound_ms": HANGING_BOUND.as_millis() as u64});
    recorder.record(process, OpType::Ok, "txn-list", value, None, None);
    (still_open > 0)
        .then(|| format!("{still_open} transactions were still open {} s after the workload stopped", wait.as_secs()))
}
