//! The batching producer.
//!
//! `send` picks the partition, charges the record against the memory bound
//! and hands it to one background task per producer; the task batches records
//! per partition in an [`Accumulator`], sends ready batches to partition
//! leaders, and retries failures. Each record's outcome arrives through its
//! [`DeliveryFuture`].
//!
//! Retries: retryable errors (`RETRY`, `REFRESH_METADATA` — the cached leader
//! is dropped so the next attempt refreshes metadata —, `BACK_OFF` honouring
//! `retry_after_ms`, transport errors and timeouts) are retried with a
//! doubling back-off until the batch's delivery timeout; fatal errors fail the
//! batch's records at once. Order within a partition follows the
//! accumulator's rules (see [`crate::accumulator`]).
//!
//! Idempotence (on by default): the producer takes a producer id from the
//! cluster before its first send, and stamps each batch at its first send
//! with the id and the partition's next sequence number. A retry resends the
//! same bytes, so the partition recognises a batch it already stored and
//! answers with the original offsets: retries through timeouts, lost
//! answers, leader changes and restarts never store a record twice, and
//! with up to 5 requests in flight per partition order is kept (a batch
//! sent after a failed one is refused as OUT_OF_ORDER_SEQUENCE and requeued
//! behind it). If a batch fails for good (delivery timeout), or the
//! partition forgot this idle producer, and the next batch then finds a
//! gap, the partition's sequence restarts under a fresh producer id.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use strata_core::{limits, ErrorCode};
use strata_proto::v1 as proto;
use strata_record::{
    encode_batch, encoded_record_len, sequence_after, set_producer_fields, ProducerFields, Record, BATCH_HEADER_LEN,
};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::accumulator::{retry_delay, Accumulator, AccumulatorConfig, PendingBatch, TopicPartition};
use crate::client::{ProduceAnswer, ProducerId};
use crate::partitioner::{partition_for_key, StickyPartitions};
use crate::{Client, ClientError};

/// When a produce answer counts as success.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Acks {
    /// A majority of replicas has the batch on disk.
    #[default]
    All,
    /// The leader accepted the batch into its Raft log.
    Leader,
    /// The server answers at once; no offset is returned, nothing is promised.
    None,
}

impl Acks {
    pub(crate) fn to_wire(self) -> proto::Acks {
        match self {
            Acks::All => proto::Acks::All,
            Acks::Leader => proto::Acks::Leader,
            Acks::None => proto::Acks::None,
        }
    }
}

/// Settings of a [`Producer`]. Out-of-range values are clamped by `Producer::new`.
#[derive(Clone, Debug)]
pub struct ProducerConfig {
    /// How long a partly filled batch waits for more records.
    pub linger: Duration,
    /// Bound on one batch's encoded size (clamped to `limits::MAX_BATCH_BYTES`).
    pub max_batch_bytes: usize,
    /// Most produce requests in flight per partition (at least 1).
    pub max_in_flight: usize,
    pub acks: Acks,
    /// How long a record may take from `send` to acknowledgement, retries included.
    pub delivery_timeout: Duration,
    /// Deadline of one produce request (also the server's replication wait).
    pub request_timeout: Duration,
    /// First retry back-off; doubles per attempt up to `retry_backoff_max`.
    pub retry_backoff: Duration,
    /// Longest wait between two attempts (default 250 ms): the producer
    /// finds a new leader at most this late after its election, so longer
    /// caps lengthen the gap a failover leaves in the stream, and shorter
    /// ones retry more often while a partition has no leader.
    pub retry_backoff_max: Duration,
    /// Bound on the bytes of unsent and unacknowledged records; `send` waits
    /// when it is reached. At least one maximal record.
    pub buffer_bytes: usize,
    /// How long `send` waits for room in the buffer before it fails.
    pub max_block: Duration,
    /// Retries never store a record twice, and order holds with several
    /// requests in flight. Needs `acks = All`; `max_in_flight` is then at
    /// most 5 (what a partition remembers per producer).
    pub idempotence: bool,
    /// Optional stable name of this producer (idempotent only): a producer
    /// started with the same name fences this one.
    pub producer_name: Option<String>,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            linger: Duration::from_millis(limits::DEFAULT_LINGER_MS),
            max_batch_bytes: limits::DEFAULT_CLIENT_BATCH_BYTES,
            max_in_flight: limits::DEFAULT_MAX_IN_FLIGHT,
            acks: Acks::All,
            delivery_timeout: limits::DEFAULT_DELIVERY_TIMEOUT,
            request_timeout: limits::DEFAULT_CLIENT_REQUEST_TIMEOUT,
            retry_backoff: limits::DEFAULT_RETRY_BACKOFF,
            retry_backoff_max: limits::DEFAULT_RETRY_BACKOFF_MAX,
            buffer_bytes: limits::DEFAULT_PRODUCER_BUFFER_BYTES,
            max_block: limits::DEFAULT_MAX_BLOCK,
            idempotence: true,
            producer_name: None,
        }
    }
}

impl ProducerConfig {
    fn clamped(mut self) -> Self {
        self.max_batch_bytes = self.max_batch_bytes.clamp(BATCH_HEADER_LEN + 1, limits::MAX_BATCH_BYTES);
        self.max_in_flight = self.max_in_flight.max(1);
        let one_record = limits::MAX_RECORD_BYTES + limits::PRODUCER_RECORD_OVERHEAD_BYTES;
        self.buffer_bytes = self.buffer_bytes.clamp(one_record, u32::MAX as usize);
        self.retry_backoff_max = self.retry_backoff_max.max(self.retry_backoff);
        if self.idempotence {
            self.max_in_flight = self.max_in_flight.min(limits::PRODUCER_BATCHES_KEPT);
        }
        self
    }

    fn check(&self) -> Result<(), ClientError> {
        if self.idempotence && self.acks != Acks::All {
            return Err(ClientError::InvalidArgument(
                "an idempotent producer needs acks=all; set acks to All or turn idempotence off".into(),
            ));
        }
        if self.producer_name.is_some() && !self.idempotence {
            return Err(ClientError::InvalidArgument("a producer name needs idempotence".into()));
        }
        Ok(())
    }
}

/// Where a record was stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordMetadata {
    pub topic: String,
    pub partition: u32,
    /// `None` with `Acks::None`, which returns no offset.
    pub offset: Option<u64>,
}

/// Resolves when the record is acknowledged or has failed for good.
#[must_use = "a record's outcome is only known through its DeliveryFuture"]
pub struct DeliveryFuture {
    rx: oneshot::Receiver<Result<RecordMetadata, ClientError>>,
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|answer| answer.unwrap_or(Err(ClientError::Closed)))
    }
}

/// A record's link back to its sender, carried through the accumulator.
struct Completion {
    tx: oneshot::Sender<Result<RecordMetadata, ClientError>>,
    /// Flushes requested before this record arrived have epochs below this.
    flush_epoch: u64,
    /// The record's share of the memory bound, returned when it completes.
    _memory: OwnedSemaphorePermit,
}

enum Command {
    Append { tp: TopicPartition, record: Record, completion: Completion },
    Flush(oneshot::Sender<()>),
}

/// A batching producer. Clones share one background task; the task ends
/// after the last clone is dropped and everything queued has completed.
#[derive(Clone)]
pub struct Producer {
    shared: Arc<Shared>,
}

struct Shared {
    client: Client,
    config: ProducerConfig,
    commands: mpsc::UnboundedSender<Command>,
    memory: Arc<Semaphore>,
    /// Where records without a key go.
    sticky: Mutex<StickyPartitions>,
}

impl Producer {
    /// Starts a producer; must be called inside a Tokio runtime (it spawns
    /// the background task). Fails only on contradictory settings.
    pub fn new(client: Client, config: ProducerConfig) -> Result<Producer, ClientError> {
        config.check()?;
        let config = config.clamped();
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (outcome_tx, outcome_rx) = mpsc::unbounded_channel();
        let task = SenderTask {
            client: client.clone(),
            accumulator: Accumulator::new(AccumulatorConfig {
                max_batch_bytes: config.max_batch_bytes,
                linger: config.linger,
                max_in_flight: config.max_in_flight,
                delivery_timeout: config.delivery_timeout,
            }),
            config: config.clone(),
            outcome_tx,
            flush_epoch: 0,
            outstanding: BTreeMap::new(),
            flush_waiters: Vec::new(),
            producer: None,
            fatal: None,
            sequences: HashMap::new(),
            unacked: HashMap::new(),
            waiting_for_id: HashSet::new(),
            id_attempts: 0,
        };
        tokio::spawn(task.run(command_rx, outcome_rx));
        let sticky = Mutex::new(StickyPartitions::new(config.max_batch_bytes, config.linger));
        Ok(Producer {
            shared: Arc::new(Shared {
                memory: Arc::new(Semaphore::new(config.buffer_bytes)),
                client,
                config,
                commands,
                sticky,
            }),
        })
    }

    pub fn config(&self) -> &ProducerConfig {
        &self.shared.config
    }

    /// Queues a record for `topic`: partition by key hash, or without a key
    /// one partition per batch in turn (see `partitioner`). Returns once the
    /// record is queued (waiting only for topic metadata the first time, and
    /// for room when the buffer is full).
    /// A record with `timestamp_ms == 0` is stamped with the current time.
    pub async fn send(&self, topic: &str, record: Record) -> Result<DeliveryFuture, ClientError> {
        self.enqueue(topic, None, record).await
    }

    /// Queues a record for one partition of `topic`.
    pub async fn send_to(&self, topic: &str, partition: u32, record: Record) -> Result<DeliveryFuture, ClientError> {
        self.enqueue(topic, Some(partition), record).await
    }

    /// Waits until every record queued before this call has been delivered or failed.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.shared.commands.send(Command::Flush(tx)).is_ok() {
            // An error means the task is gone, and with it everything it held.
            let _ = rx.await;
        }
    }

    async fn enqueue(
        &self,
        topic: &str,
        partition: Option<u32>,
        mut record: Record,
    ) -> Result<DeliveryFuture, ClientError> {
        let mut partitions = self.shared.client.partition_count(topic).await?;
        if partition.is_some_and(|p| p >= partitions) {
            // The topic may have grown since the cache was filled.
            partitions = self.shared.client.refreshed_partition_count(topic).await?;
        }
        if partitions == 0 {
            return Err(ClientError::local(ErrorCode::UnknownPartition, format!("topic '{topic}' has no partitions")));
        }
        if record.timestamp_ms == 0 {
            record.timestamp_ms = strata_core::time::now_ms();
        }
        let size = encoded_record_len(&record, 0, 0);
        if size > limits::MAX_RECORD_BYTES {
            return Err(ClientError::local(
                ErrorCode::RecordTooLarge,
                format!("the record encodes to {size} bytes, over the limit of {} bytes", limits::MAX_RECORD_BYTES),
            ));
        }
        // Without a record key, a record's idempotency key picks its
        // partition, so a re-sent business event meets its first copy.
        let idempotency_key =
            record.headers.iter().find(|h| h.key == strata_core::IDEMPOTENCY_KEY_HEADER).and_then(|h| h.value.clone());
        let partition = match (partition, record.key.as_ref().or(idempotency_key.as_ref())) {
            (Some(p), _) if p >= partitions => {
                return Err(ClientError::local(
                    ErrorCode::UnknownPartition,
                    format!("topic '{topic}' has {partitions} partitions, no partition {p}"),
                ))
            }
            (Some(p), _) => p,
            (None, Some(key)) => partition_for_key(key, partitions),
            (None, None) => {
                self.shared.sticky.lock().expect("sticky lock").choose(topic, partitions, size, Instant::now())
            }
        };
        let charge = (size + limits::PRODUCER_RECORD_OVERHEAD_BYTES).min(self.shared.config.buffer_bytes) as u32;
        let max_block = self.shared.config.max_block;
        let memory = match tokio::time::timeout(max_block, self.shared.memory.clone().acquire_many_owned(charge)).await
        {
            Ok(permit) => permit.map_err(|_| ClientError::Closed)?,
            Err(_) => {
                return Err(ClientError::local(
                    ErrorCode::Busy,
                    format!(
                        "the producer's buffer of {} bytes stayed full for {} ms: records arrive faster than the \
                         cluster takes them (or it is unreachable); send slower, raise buffer_bytes or max_block",
                        self.shared.config.buffer_bytes,
                        max_block.as_millis()
                    ),
                ))
            }
        };
        let (tx, rx) = oneshot::channel();
        let tp = TopicPartition { topic: topic.to_string(), partition };
        let completion = Completion { tx, flush_epoch: 0, _memory: memory };
        self.shared.commands.send(Command::Append { tp, record, completion }).map_err(|_| ClientError::Closed)?;
        Ok(DeliveryFuture { rx })
    }
}

enum Outcome {
    Produced {
        batch: Box<PendingBatch<Completion>>,
        result: Result<ProduceAnswer, ClientError>,
    },
    /// A producer id for the whole producer (`None`) or for one partition
    /// whose sequence restarts.
    ProducerId {
        for_partition: Option<TopicPartition>,
        result: Result<ProducerId, ClientError>,
    },
}

/// One partition's sequence under one producer id.
struct Sequence {
    producer: ProducerId,
    next: i32,
}

struct SenderTask {
    client: Client,
    config: ProducerConfig,
    accumulator: Accumulator<Completion>,
    outcome_tx: mpsc::UnboundedSender<Outcome>,
    /// Epoch given to arriving records; a flush request takes the current
    /// epoch and bumps it.
    flush_epoch: u64,
    /// Records not yet completed, per flush epoch.
    outstanding: BTreeMap<u64, usize>,
    /// Each waits for every record of its epoch and earlier.
    flush_waiters: Vec<(u64, oneshot::Sender<()>)>,
    /// The producer id of an idempotent producer, once known; until then
    /// nothing is sent.
    producer: Option<ProducerId>,
    /// The producer cannot send at all (no producer id could be had).
    fatal: Option<ClientError>,
    /// Per partition: the id and next sequence its new batches get.
    sequences: HashMap<TopicPartition, Sequence>,
    /// Per partition: creation numbers of batches sent and not yet finished.
    unacked: HashMap<TopicPartition, BTreeSet<u64>>,
    /// Partitions whose sequence restarts, waiting for a fresh producer id.
    waiting_for_id: HashSet<TopicPartition>,
    /// Failed attempts to get the producer id, for back-off.
    id_attempts: u32,
}

impl SenderTask {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut outcomes: mpsc::UnboundedReceiver<Outcome>,
    ) {
        let mut input_open = true;
        if self.config.idempotence {
            self.request_producer_id(None, Duration::ZERO);
        }
        loop {
            let now = Instant::now();
            for mut batch in self.accumulator.expire(now) {
                self.forget_unacked(&batch);
                let last_error = batch.last_error.take().map(Box::new);
                let error = ClientError::DeliveryTimeout {
                    timeout_ms: self.config.delivery_timeout.as_millis() as u64,
                    last_error,
                };
                self.fail(batch, error);
            }
            // Once every producer handle is gone, send what is left without lingering.
            let flushing = !self.flush_waiters.is_empty() || !input_open;
            if self.producer.is_some() || !self.config.idempotence || self.fatal.is_some() {
                for batch in self.accumulator.drain_ready(now, flushing) {
                    self.dispatch(batch);
                }
            }
            self.wake_flush_waiters();
            if !input_open && self.accumulator.is_empty() {
                debug_assert!(self.outstanding.is_empty());
                return;
            }
            let wakeup = self.accumulator.next_wakeup(now, flushing);
            tokio::select! {
                command = commands.recv(), if input_open => match command {
                    Some(command) => {
                        self.on_command(command);
                        for _ in 1..limits::PRODUCER_COMMANDS_PER_TURN {
                            match commands.try_recv() {
                                Ok(command) => self.on_command(command),
                                Err(_) => break,
                            }
                        }
                    }
                    None => input_open = false,
                },
                Some(outcome) = outcomes.recv() => self.on_outcome(outcome),
                _ = sleep_until_opt(wakeup), if wakeup.is_some() => {}
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Append { tp, record, mut completion } => {
                completion.flush_epoch = self.flush_epoch;
                *self.outstanding.entry(self.flush_epoch).or_default() += 1;
                self.accumulator.append(tp, record, completion, Instant::now());
            }
            Command::Flush(waiter) => {
                self.flush_waiters.push((self.flush_epoch, waiter));
                self.flush_epoch += 1;
            }
        }
    }

    fn wake_flush_waiters(&mut self) {
        let outstanding = &self.outstanding;
        self.flush_waiters.retain_mut(|(epoch, _)| outstanding.range(..=*epoch).next().is_some());
        // `retain_mut` dropped the finished waiters' senders; dropping one
        // wakes its `flush` (which ignores the error) just like a send would.
    }

    /// Asks the cluster for a producer id after `delay`, on a task of its own.
    fn request_producer_id(&mut self, for_partition: Option<TopicPartition>, delay: Duration) {
        let client = self.client.clone();
        let outcome_tx = self.outcome_tx.clone();
        let name = if for_partition.is_none() { self.config.producer_name.clone() } else { None };
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let result = client.init_producer_id(name.as_deref()).await;
            let _ = outcome_tx.send(Outcome::ProducerId { for_partition, result });
        });
    }

    fn on_producer_id(&mut self, for_partition: Option<TopicPartition>, result: Result<ProducerId, ClientError>) {
        match (for_partition, result) {
            (None, Ok(producer)) => {
                tracing::debug!(producer_id = producer.id, epoch = producer.epoch, "idempotent producer ready");
                self.producer = Some(producer);
                self.id_attempts = 0;
            }
            (Some(tp), Ok(producer)) => {
                tracing::debug!(topic = %tp.topic, partition = tp.partition, producer_id = producer.id,
                    "partition sequence restarts under a fresh producer id");
                self.sequences.insert(tp.clone(), Sequence { producer, next: 0 });
                self.waiting_for_id.remove(&tp);
                self.accumulator.resume(&tp);
            }
            (for_partition, Err(error)) => {
                self.id_attempts += 1;
                let delay = retry_delay(
                    error.retry_class(),
                    self.id_attempts,
                    error.retry_after(),
                    self.config.retry_backoff,
                    self.config.retry_backoff_max,
                );
                match delay {
                    Some(delay) => {
                        tracing::debug!(%error, ?delay, "retrying producer id request");
                        self.request_producer_id(for_partition, delay);
                    }
                    None => {
                        // Nothing can be sent: fail what waits, and keep
                        // failing new records the same way.
                        tracing::warn!(%error, "cannot get a producer id");
                        self.fatal = Some(error);
                    }
                }
            }
        }
    }

    /// Gives a batch its producer id and sequence at its first send.
    fn stamp(&mut self, batch: &mut PendingBatch<Completion>) {
        if !self.config.idempotence || batch.stamp.is_some() {
            return;
        }
        let producer = self.producer.expect("batches are sent only once the producer id is known");
        let sequence = self.sequences.entry(batch.tp.clone()).or_insert(Sequence { producer, next: 0 });
        batch.stamp = Some(ProducerFields {
            producer_id: sequence.producer.id,
            producer_epoch: sequence.producer.epoch,
            base_sequence: sequence.next,
        });
        sequence.next = sequence_after(sequence.next, batch.len() as u32);
        if let Some(bytes) = batch.encoded.take() {
            let mut bytes = bytes.to_vec();
            set_producer_fields(&mut bytes, batch.stamp.expect("set above"));
            batch.encoded = Some(bytes.into());
        }
    }

    /// Encodes the batch once and sends it on a task of its own.
    fn dispatch(&mut self, mut batch: PendingBatch<Completion>) {
        if let Some(error) = self.fatal.clone() {
            self.accumulator.complete(&batch.tp, batch.sequence);
            self.fail(batch, error);
            return;
        }
        if self.waiting_for_id.contains(&batch.tp) {
            // Its partition waits for a fresh producer id: back in line.
            self.accumulator.requeue(batch, Instant::now() + self.config.delivery_timeout);
            return;
        }
        self.stamp(&mut batch);
        let unacked = self.unacked.entry(batch.tp.clone()).or_default();
        batch.sent_behind = unacked.range(..batch.sequence).next().is_some();
        unacked.insert(batch.sequence);
        if batch.encoded.is_none() {
            match encode_batch(&batch.records, batch.stamp.unwrap_or_default()) {
                Ok(bytes) => {
                    batch.encoded = Some(bytes);
                    // The bytes are all a retry needs.
                    batch.records = Vec::new();
                }
                Err(error) => {
                    self.finish(&batch);
                    let error = ClientError::local(error.code(), format!("cannot encode a batch: {error}"));
                    self.fail(batch, error);
                    return;
                }
            }
        }
        let bytes = batch.encoded.clone().expect("encoded above");
        let client = self.client.clone();
        let outcome_tx = self.outcome_tx.clone();
        let (acks, timeout) = (self.config.acks, self.config.request_timeout);
        tokio::spawn(async move {
            let result = client.produce_batch(&batch.tp.topic, batch.tp.partition, bytes, acks, timeout).await;
            // The receiver lives as long as the task that owns `self`.
            let _ = outcome_tx.send(Outcome::Produced { batch: Box::new(batch), result });
        });
    }

    /// The batch is finished for good (delivered or failed).
    fn finish(&mut self, batch: &PendingBatch<Completion>) {
        self.accumulator.complete(&batch.tp, batch.sequence);
        self.forget_unacked(batch);
    }

    fn forget_unacked(&mut self, batch: &PendingBatch<Completion>) {
        if let Some(unacked) = self.unacked.get_mut(&batch.tp) {
            unacked.remove(&batch.sequence);
            if unacked.is_empty() {
                self.unacked.remove(&batch.tp);
            }
        }
    }

    /// OUT_OF_ORDER_SEQUENCE: the partition has not stored this batch. Either
    /// an earlier batch is, or was when this one was sent, on its way
    /// (requeue behind it), or the
    /// batch was stamped under an id the partition has left (stamp it
    /// again), or an earlier batch failed for good and left a gap (restart
    /// the partition's sequence under a fresh producer id).
    fn on_out_of_order(
        &mut self,
        mut batch: PendingBatch<Completion>,
        error: ClientError,
    ) -> Result<(), Box<(PendingBatch<Completion>, ClientError)>> {
        let earlier_pending =
            self.unacked.get(&batch.tp).is_some_and(|unacked| unacked.range(..batch.sequence).next().is_some());
        let stamped = batch.stamp.map(|s| s.producer_id);
        let current = self.sequences.get(&batch.tp).map(|s| s.producer.id);
        let now = Instant::now();
        if now >= batch.created_at + self.config.delivery_timeout {
            return Err(Box::new((batch, error)));
        }
        if earlier_pending || batch.sent_behind {
            // Requests are handled concurrently, so a batch sent behind
            // another can reach the partition first: no back-off, just get
            // in line (if its predecessor is stored by now, it goes through).
            batch.last_error = Some(error);
            self.accumulator.requeue(batch, now);
        } else if stamped != current || self.waiting_for_id.contains(&batch.tp) {
            batch.stamp = None;
            batch.last_error = Some(error);
            self.accumulator.requeue(batch, now);
        } else if self.config.producer_name.is_some() {
            // A named producer's id is shared by its instances; it cannot
            // switch ids on its own.
            return Err(Box::new((batch, error)));
        } else {
            tracing::debug!(topic = %batch.tp.topic, partition = batch.tp.partition, %error,
                "sequence gap after a failed batch; restarting the partition's sequence");
            self.waiting_for_id.insert(batch.tp.clone());
            self.request_producer_id(Some(batch.tp.clone()), Duration::ZERO);
            batch.stamp = None;
            batch.last_error = Some(error);
            self.accumulator.requeue(batch, now + self.config.delivery_timeout);
        }
        Ok(())
    }

    fn on_outcome(&mut self, outcome: Outcome) {
        let (mut batch, result) = match outcome {
            Outcome::Produced { batch, result } => (*batch, result),
            Outcome::ProducerId { for_partition, result } => return self.on_producer_id(for_partition, result),
        };
        if let Err(error) = &result {
            // The batch stays among the unacknowledged while it is requeued:
            // a later batch refused meanwhile must wait behind it.
            if error.code() == Some(ErrorCode::OutOfOrderSequence) && batch.stamp.is_some() {
                match self.on_out_of_order(batch, error.clone()) {
                    Ok(()) => return,
                    Err(failed) => {
                        let (failed, error) = *failed;
                        self.finish(&failed);
                        return self.fail(failed, error);
                    }
                }
            }
        }
        match result {
            Ok(answer) => {
                self.finish(&batch);
                let acked = self.config.acks != Acks::None;
                let stored = answer.record_count as usize + answer.duplicates.len();
                if acked && stored != batch.len() {
                    tracing::warn!(
                        topic = %batch.tp.topic, partition = batch.tp.partition,
                        sent = batch.len(), stored,
                        "the server answered for a different number of records than the batch held"
                    );
                }
                let offsets = answer.record_offsets(batch.len());
                let TopicPartition { topic, partition } = batch.tp.clone();
                for (index, completion) in std::mem::take(&mut batch.completions).into_iter().enumerate() {
                    let offset = if acked { offsets.get(index).copied() } else { None };
                    self.resolve(completion, Ok(RecordMetadata { topic: topic.clone(), partition, offset }));
                }
            }
            Err(error) => {
                let now = Instant::now();
                let expired = now >= batch.created_at + self.config.delivery_timeout;
                let delay = retry_delay(
                    error.retry_class(),
                    batch.attempts,
                    error.retry_after(),
                    self.config.retry_backoff,
                    self.config.retry_backoff_max,
                );
                match delay {
                    Some(delay) if !expired => {
                        tracing::debug!(
                            topic = %batch.tp.topic, partition = batch.tp.partition,
                            attempts = batch.attempts, ?delay, %error, "retrying batch"
                        );
                        batch.last_error = Some(error);
                        self.accumulator.requeue(batch, now + delay);
                    }
                    _ => {
                        self.finish(&batch);
                        let error = if expired && error.is_retryable() {
                            ClientError::DeliveryTimeout {
                                timeout_ms: self.config.delivery_timeout.as_millis() as u64,
                                last_error: Some(Box::new(error)),
                            }
                        } else {
                            error
                        };
                        self.fail(batch, error);
                    }
                }
            }
        }
    }

    fn fail(&mut self, mut batch: PendingBatch<Completion>, error: ClientError) {
        tracing::debug!(topic = %batch.tp.topic, partition = batch.tp.partition, records = batch.len(), %error, "batch failed");
        for completion in std::mem::take(&mut batch.completions) {
            self.resolve(completion, Err(error.clone()));
        }
    }

    fn resolve(&mut self, completion: Completion, result: Result<RecordMetadata, ClientError>) {
        let count = self.outstanding.get_mut(&completion.flush_epoch).expect("every queued record is counted");
        *count -= 1;
        if *count == 0 {
            self.outstanding.remove(&completion.flush_epoch);
        }
        // The caller may have dropped its DeliveryFuture; that is its choice.
        let _ = completion.tx.send(result);
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_clamped_to_limits() {
        let config = ProducerConfig {
            max_batch_bytes: usize::MAX,
            max_in_flight: 0,
            buffer_bytes: 1,
            retry_backoff: Duration::from_secs(5),
            retry_backoff_max: Duration::from_secs(1),
            ..Default::default()
        }
        .clamped();
        assert_eq!(config.max_batch_bytes, limits::MAX_BATCH_BYTES);
        assert_eq!(config.max_in_flight, 1);
        assert!(config.buffer_bytes >= limits::MAX_RECORD_BYTES, "one maximal record always fits");
        assert_eq!(config.retry_backoff_max, Duration::from_secs(5));
    }

    #[test]
    fn defaults_follow_the_limits_module() {
        let config = ProducerConfig::default();
        assert_eq!(config.linger, Duration::from_millis(limits::DEFAULT_LINGER_MS));
        assert_eq!(config.max_batch_bytes, limits::DEFAULT_CLIENT_BATCH_BYTES);
        assert_eq!(config.max_in_flight, limits::DEFAULT_MAX_IN_FLIGHT);
        assert_eq!(config.acks, Acks::All);
        assert_eq!(Acks::None.to_wire(), proto::Acks::None);
    }

    #[tokio::test]
    async fn sending_to_an_unreachable_cluster_fails_without_queueing() {
        // Nothing listens on port 1: the metadata look-up fails, and send
        // says so instead of queueing a record it cannot place.
        let client = Client::connect_with(
            &["127.0.0.1:1".to_string()],
            crate::ClientConfig {
                request_timeout: Duration::from_millis(300),
                connect_timeout: Duration::from_millis(100),
                ..Default::default()
            },
        )
        .unwrap();
        let producer = Producer::new(client, ProducerConfig::default()).unwrap();
        let error = producer.send("t", Record::default()).await.err().expect("no cluster");
        assert!(error.is_retryable(), "{error}");
        producer.flush().await; // nothing queued: returns at once
    }
}
