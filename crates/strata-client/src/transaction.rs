//! Transactions: the client calls of the transaction coordinator and a
//! [`TransactionalProducer`] for exactly-once read-process-write jobs.
//!
//! A transactional producer owns a transactional id. `init` fences every
//! older instance with that id (their sends, offsets and commits fail with
//! PRODUCER_FENCED) and aborts whatever transaction it left open. Then, per
//! transaction: `begin`, `send` records, `send_offsets` of the records it
//! consumed (from a [`GroupConsumer`]), and `commit` or `abort`. Records
//! are buffered and sent at `flush` or `commit`, one batch at a time per
//! partition (so sequence numbers need no reordering), partitions in
//! parallel; `commit` returns once the decision is written, and readers
//! with `read_committed` (the default) see the records once every
//! partition has its marker, all of them or none.
//!
//! Errors come as a [`TransactionError`]:
//! - `Abortable`: the transaction cannot commit (a partition refused a
//!   send, the coordinator timed it out, an operator aborted it, offsets
//!   were fenced because the consumer lost its partitions): call `abort`,
//!   then run the transaction again. After a timeout or an operator's abort
//!   `abort` initialises the producer again by itself.
//! - `Fatal`: a newer instance with the same transactional id took over
//!   (PRODUCER_FENCED), or the id is unusable: close this producer. Every
//!   later call answers the same error.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use strata_core::limits::{DEFAULT_TRANSACTION_TIMEOUT_MS, MAX_BATCH_BYTES, MAX_RECORDS_PER_BATCH};
use strata_core::ErrorCode;
use strata_proto::v1 as proto;
use strata_record::{encode_transactional_batch, encoded_record_len, ProducerFields, Record, BATCH_HEADER_LEN};

use crate::client::retry_wait;
use crate::partitioner::partition_for_key;
use crate::{Client, ClientError, GroupConsumer};

/// One transactional id as the coordinator shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionDescription {
    pub transactional_id: String,
    /// EMPTY, ONGOING, PREPARE_COMMIT, PREPARE_ABORT, COMPLETE_COMMIT or
    /// COMPLETE_ABORT.
    pub state: String,
    pub producer_id: u64,
    pub producer_epoch: u32,
    pub timeout_ms: u64,
    /// How long the open transaction has been open; 0 when none is.
    pub age_ms: u64,
    /// The partitions of the open transaction, by topic.
    pub partitions: BTreeMap<String, Vec<u32>>,
    /// Groups with offsets staged by the open transaction.
    pub groups: Vec<String>,
}

impl From<proto::TransactionDescription> for TransactionDescription {
    fn from(t: proto::TransactionDescription) -> TransactionDescription {
        TransactionDescription {
            transactional_id: t.transactional_id,
            state: t.state,
            producer_id: t.producer_id,
            producer_epoch: t.producer_epoch,
            timeout_ms: t.timeout_ms,
            age_ms: t.age_ms,
            partitions: t.partitions.into_iter().map(|p| (p.topic, p.partitions)).collect(),
            groups: t.groups,
        }
    }
}

fn epoch_from_wire(epoch: u32) -> Result<i16, ClientError> {
    i16::try_from(epoch)
        .map_err(|_| ClientError::local(ErrorCode::Internal, format!("producer epoch {epoch} is out of range")))
}

impl Client {
    /// Initialises the transactional producer of `transactional_id`: its id
    /// at the next epoch, which fences older instances, once the
    /// transaction it left open is aborted. `timeout` bounds how long a
    /// transaction may stay open before the coordinator aborts it.
    pub async fn init_transactional_producer(
        &self,
        transactional_id: &str,
        timeout: Duration,
    ) -> Result<(u64, i16), ClientError> {
        let request = proto::InitProducerIdRequest {
            producer_name: String::new(),
            transactional_id: transactional_id.to_string(),
            transaction_timeout_ms: timeout.as_millis().clamp(1, u32::MAX as u128) as u32,
        };
        let answer =
            self.call_any(request, |mut stub, request| async move { stub.init_producer_id(request).await }).await?;
        Ok((answer.producer_id, epoch_from_wire(answer.producer_epoch)?))
    }

    /// Stages consumed offsets in the open transaction of the producer, as
    /// group member `member_id` at `member_epoch` (fenced like its own
    /// commit would be).
    #[allow(clippy::too_many_arguments)]
    pub async fn add_offsets_to_txn(
        &self,
        transactional_id: &str,
        producer: (u64, i16),
        group_id: &str,
        member_id: &str,
        member_epoch: i32,
        offsets: &[(String, u32, u64)],
    ) -> Result<(), ClientError> {
        let request = proto::AddOffsetsToTxnRequest {
            transactional_id: transactional_id.to_string(),
            producer_id: producer.0,
            producer_epoch: producer.1 as u32,
            group_id: group_id.to_string(),
            member_id: member_id.to_string(),
            member_epoch,
            offsets: offsets
                .iter()
                .map(|(topic, partition, offset)| proto::OffsetCommitPartition {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: *offset,
                    metadata: String::new(),
                })
                .collect(),
        };
        self.call_any(request, |mut stub, request| async move { stub.add_offsets_to_txn(request).await }).await?;
        Ok(())
    }

    /// Commits (or aborts) the producer's open transaction. Answers the id
    /// and epoch to go on with: every end bumps the epoch.
    pub async fn end_txn(
        &self,
        transactional_id: &str,
        producer: (u64, i16),
        commit: bool,
    ) -> Result<(u64, i16), ClientError> {
        let request = proto::EndTxnRequest {
            transactional_id: transactional_id.to_string(),
            producer_id: producer.0,
            producer_epoch: producer.1 as u32,
            commit,
        };
        let answer = self.call_any(request, |mut stub, request| async move { stub.end_txn(request).await }).await?;
        Ok((answer.producer_id, epoch_from_wire(answer.producer_epoch)?))
    }

    /// Every transactional id the cluster knows.
    pub async fn list_transactions(&self) -> Result<Vec<TransactionDescription>, ClientError> {
        let answer = self
            .call_any(proto::ListTransactionsRequest {}, |mut stub, request| async move {
                stub.list_transactions(request).await
            })
            .await?;
        Ok(answer.transactions.into_iter().map(TransactionDescription::from).collect())
    }

    /// One transactional id.
    pub async fn describe_transaction(&self, transactional_id: &str) -> Result<TransactionDescription, ClientError> {
        let request = proto::DescribeTransactionRequest { transactional_id: transactional_id.to_string() };
        let answer =
            self.call_any(request, |mut stub, request| async move { stub.describe_transaction(request).await }).await?;
        answer
            .transaction
            .map(TransactionDescription::from)
            .ok_or_else(|| ClientError::local(ErrorCode::Internal, "the answer has no transaction"))
    }

    /// Aborts the id's open transaction (an operator's abort): its producer
    /// gets TRANSACTION_ABORTED and must initialise again.
    pub async fn abort_transaction(&self, transactional_id: &str) -> Result<TransactionDescription, ClientError> {
        let request = proto::AbortTransactionRequest { transactional_id: transactional_id.to_string() };
        let answer =
            self.call_any(request, |mut stub, request| async move { stub.abort_transaction(request).await }).await?;
        answer
            .transaction
            .map(TransactionDescription::from)
            .ok_or_else(|| ClientError::local(ErrorCode::Internal, "the answer has no transaction"))
    }
}

/// Settings of a [`TransactionalProducer`].
#[derive(Clone, Debug)]
pub struct TransactionalConfig {
    pub transactional_id: String,
    /// How long a transaction may stay open before the coordinator aborts
    /// it (at most 15 minutes).
    pub transaction_timeout: Duration,
    /// How long one batch may take to be stored, retries included.
    pub delivery_timeout: Duration,
}

impl TransactionalConfig {
    pub fn new(transactional_id: &str) -> TransactionalConfig {
        TransactionalConfig {
            transactional_id: transactional_id.to_string(),
            transaction_timeout: Duration::from_millis(DEFAULT_TRANSACTION_TIMEOUT_MS),
            delivery_timeout: Duration::from_secs(30),
        }
    }
}

/// Why a transactional call failed, and what to do about it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum TransactionError {
    /// Abort the transaction and run it again.
    #[error("the transaction cannot commit (abort it and run it again): {0}")]
    Abortable(ClientError),
    /// Close the producer: a newer instance took over, or it cannot work.
    #[error("the transactional producer cannot go on (close it): {0}")]
    Fatal(ClientError),
}

impl TransactionError {
    pub fn is_fatal(&self) -> bool {
        matches!(self, TransactionError::Fatal(_))
    }

    /// The underlying client error.
    pub fn error(&self) -> &ClientError {
        match self {
            TransactionError::Abortable(error) | TransactionError::Fatal(error) => error,
        }
    }

    fn classify(error: ClientError) -> TransactionError {
        match error.code() {
            Some(
                ErrorCode::ProducerFenced
                | ErrorCode::TransactionalIdNotFound
                | ErrorCode::InvalidRequest
                | ErrorCode::UnsupportedFeature,
            ) => TransactionError::Fatal(error),
            _ => TransactionError::Abortable(error),
        }
    }
}

fn misuse(message: &str) -> TransactionError {
    TransactionError::Abortable(ClientError::local(ErrorCode::InvalidTxnState, message))
}

/// Records waiting to be sent to one partition.
type Pending = BTreeMap<(String, u32), Vec<Record>>;

/// A producer of transactions. See the module documentation.
pub struct TransactionalProducer {
    client: Client,
    config: TransactionalConfig,
    producer: (u64, i16),
    /// A transaction is begun (locally).
    in_transaction: bool,
    /// The transaction has sent records or offsets (so the coordinator
    /// knows it): ending it needs EndTxn.
    touched: bool,
    /// Set by a failure inside the transaction: only `abort` is allowed.
    failed: Option<ClientError>,
    /// The coordinator aborted the transaction itself (timeout, operator):
    /// `abort` initialises the producer again.
    needs_init: bool,
    fatal: Option<ClientError>,
    pending: Pending,
    /// The next sequence per partition in this epoch.
    sequences: BTreeMap<(String, u32), i32>,
    /// Partition counts of topics sent to, for keyed partitioning.
    partition_counts: BTreeMap<String, u32>,
}

impl TransactionalProducer {
    /// Initialises the producer (see [`Client::init_transactional_producer`]).
    pub async fn init(client: Client, config: TransactionalConfig) -> Result<TransactionalProducer, TransactionError> {
        let producer = client
            .init_transactional_producer(&config.transactional_id, config.transaction_timeout)
            .await
            .map_err(TransactionError::classify)?;
        Ok(TransactionalProducer {
            client,
            config,
            producer,
            in_transaction: false,
            touched: false,
            failed: None,
            needs_init: false,
            fatal: None,
            pending: Pending::new(),
            sequences: BTreeMap::new(),
            partition_counts: BTreeMap::new(),
        })
    }

    /// The producer id and epoch of the current transaction.
    pub fn producer(&self) -> (u64, i16) {
        self.producer
    }

    pub fn transactional_id(&self) -> &str {
        &self.config.transactional_id
    }

    fn check_usable(&self) -> Result<(), TransactionError> {
        match &self.fatal {
            Some(error) => Err(TransactionError::Fatal(error.clone())),
            None => Ok(()),
        }
    }

    fn check_open(&self) -> Result<(), TransactionError> {
        self.check_usable()?;
        if !self.in_transaction {
            return Err(misuse("no transaction is begun: call begin first"));
        }
        if let Some(error) = &self.failed {
            return Err(TransactionError::Abortable(error.clone()));
        }
        Ok(())
    }

    /// Remembers a failure: fatal ones for good, others until `abort`.
    fn fail(&mut self, error: ClientError) -> TransactionError {
        let error = TransactionError::classify(error);
        match &error {
            TransactionError::Fatal(e) => self.fatal = Some(e.clone()),
            TransactionError::Abortable(e) => {
                if matches!(e.code(), Some(ErrorCode::TransactionTimedOut | ErrorCode::TransactionAborted)) {
                    self.needs_init = true;
                }
                self.failed = Some(e.clone());
            }
        }
        error
    }

    /// Begins a transaction.
    pub fn begin(&mut self) -> Result<(), TransactionError> {
        self.check_usable()?;
        if self.in_transaction {
            return Err(misuse("a transaction is already begun: commit or abort it first"));
        }
        self.in_transaction = true;
        Ok(())
    }

    /// Adds a record to the transaction, to the partition its key hashes to
    /// (round robin over a keyless record's topic is not offered: a
    /// transaction's records of one key stay in order in one partition).
    pub async fn send(&mut self, topic: &str, record: Record) -> Result<(), TransactionError> {
        self.check_open()?;
        let partitions = match self.partition_counts.get(topic) {
            Some(count) => *count,
            None => {
                let metadata = self.client.topic_metadata(topic).await.map_err(|e| self.fail(e))?;
                let count = metadata.partitions.len() as u32;
                self.partition_counts.insert(topic.to_string(), count);
                count
            }
        };
        let partition = match &record.key {
            Some(key) => partition_for_key(key, partitions),
            None => 0,
        };
        self.send_to(topic, partition, record)
    }

    /// Adds a record to the transaction, to a chosen partition. A record
    /// with `timestamp_ms == 0` is stamped with the current time.
    pub fn send_to(&mut self, topic: &str, partition: u32, mut record: Record) -> Result<(), TransactionError> {
        self.check_open()?;
        if record.timestamp_ms == 0 {
            record.timestamp_ms = strata_core::time::now_ms();
        }
        self.pending.entry((topic.to_string(), partition)).or_default().push(record);
        Ok(())
    }

    /// Sends every buffered record and waits until all are stored.
    pub async fn flush(&mut self) -> Result<(), TransactionError> {
        self.check_open()?;
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            return Ok(());
        }
        self.touched = true;
        let sends = pending.into_iter().map(|((topic, partition), records)| {
            let sequence = self.sequences.get(&(topic.clone(), partition)).copied().unwrap_or(0);
            let client = self.client.clone();
            let (id, producer, timeout) =
                (self.config.transactional_id.clone(), self.producer, self.config.delivery_timeout);
            async move {
                let result =
                    send_partition(&client, &id, producer, &topic, partition, records, sequence, timeout).await;
                ((topic, partition), result)
            }
        });
        let mut first_error = None;
        for ((topic, partition), result) in futures::future::join_all(sends).await {
            match result {
                Ok(next) => {
                    self.sequences.insert((topic, partition), next);
                }
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) => Err(self.fail(error)),
            None => Ok(()),
        }
    }

    /// Stages the offsets of what `consumer` returned of its partitions:
    /// they are stored for its group when the transaction commits, fenced
    /// like the member's own commit (it must still own them). Buffered
    /// records are sent meanwhile (see `send_offsets_for`).
    pub async fn send_offsets(&mut self, consumer: &GroupConsumer) -> Result<(), TransactionError> {
        let mut offsets = Vec::new();
        for (topic, partitions) in consumer.assignment() {
            for partition in partitions {
                if let Some(offset) = consumer.position(topic, *partition) {
                    offsets.push((topic.clone(), *partition, offset));
                }
            }
        }
        self.send_offsets_for(consumer.group_id(), &consumer.member_id(), consumer.member_epoch(), &offsets).await
    }

    /// Stages explicit offsets `(topic, partition, next offset to read)`
    /// for `group_id`, as member `member_id` at `member_epoch` (an empty
    /// member id with epoch -1 for a group without members). The records
    /// buffered so far are sent at the same time (as `flush` sends them),
    /// so that staging costs no round trip of its own; it returns once both
    /// are done.
    pub async fn send_offsets_for(
        &mut self,
        group_id: &str,
        member_id: &str,
        member_epoch: i32,
        offsets: &[(String, u32, u64)],
    ) -> Result<(), TransactionError> {
        self.check_open()?;
        if offsets.is_empty() {
            return self.flush().await;
        }
        self.touched = true;
        let (client, id, producer) = (self.client.clone(), self.config.transactional_id.clone(), self.producer);
        let staging =
            async move { client.add_offsets_to_txn(&id, producer, group_id, member_id, member_epoch, offsets).await };
        let (flushed, staged) = tokio::join!(self.flush(), staging);
        let staged = staged.map_err(|e| self.fail(e));
        match (flushed, staged) {
            // A fenced producer matters more than a refused send.
            (_, Err(error)) if error.is_fatal() => Err(error),
            (Err(error), _) | (Ok(()), Err(error)) => Err(error),
            (Ok(()), Ok(())) => Ok(()),
        }
    }

    /// Sends what is buffered and commits the transaction. On an error the
    /// transaction is left to `abort` (or, if fatal, the producer to close).
    pub async fn commit(&mut self) -> Result<(), TransactionError> {
        self.flush().await?;
        if !self.touched {
            // Nothing was sent: there is nothing to commit.
            self.reset_transaction();
            return Ok(());
        }
        let id = self.config.transactional_id.clone();
        match self.client.end_txn(&id, self.producer, true).await {
            Ok(next) => {
                self.next_epoch(next);
                Ok(())
            }
            Err(error) => Err(self.fail(error)),
        }
    }

    /// Aborts the transaction: nothing of it becomes visible. After the
    /// coordinator aborted it itself (timeout, operator) the producer is
    /// initialised again here.
    pub async fn abort(&mut self) -> Result<(), TransactionError> {
        self.check_usable()?;
        if !self.in_transaction {
            return Err(misuse("no transaction is begun: there is nothing to abort"));
        }
        self.pending.clear();
        let id = self.config.transactional_id.clone();
        if self.needs_init {
            let producer = self
                .client
                .init_transactional_producer(&id, self.config.transaction_timeout)
                .await
                .map_err(|e| self.fail(e))?;
            self.needs_init = false;
            self.next_epoch(producer);
            return Ok(());
        }
        if self.touched {
            match self.client.end_txn(&id, self.producer, false).await {
                Ok(next) => self.next_epoch(next),
                Err(error) => return Err(self.fail(error)),
            }
        } else {
            self.reset_transaction();
        }
        Ok(())
    }

    fn reset_transaction(&mut self) {
        self.in_transaction = false;
        self.touched = false;
        self.failed = None;
        self.pending.clear();
    }

    /// Goes on at the epoch the coordinator answered: sequences restart.
    fn next_epoch(&mut self, producer: (u64, i16)) {
        self.producer = producer;
        self.sequences.clear();
        self.reset_transaction();
    }
}

/// Splits records into batches that fit the batch bounds.
fn batches(records: Vec<Record>) -> Vec<Vec<Record>> {
    let mut out: Vec<Vec<Record>> = Vec::new();
    let mut size = BATCH_HEADER_LEN;
    for record in records {
        let base = out.last().and_then(|b| b.first()).map_or(record.timestamp_ms, |r| r.timestamp_ms);
        let count = out.last().map_or(0, Vec::len);
        let len = encoded_record_len(&record, count as i32, record.timestamp_ms.saturating_sub(base));
        let full = out.last().is_none_or(|b| b.len() >= MAX_RECORDS_PER_BATCH || size + len > MAX_BATCH_BYTES);
        if full {
            out.push(Vec::new());
            size = BATCH_HEADER_LEN;
        }
        size += len;
        out.last_mut().expect("pushed above").push(record);
    }
    out
}

/// Sends one partition's records in order, batch after batch, each retried
/// (with its sequence, so a retry of a stored batch stores nothing) until
/// stored or `timeout` passes. Returns the next sequence.
#[allow(clippy::too_many_arguments)]
async fn send_partition(
    client: &Client,
    transactional_id: &str,
    producer: (u64, i16),
    topic: &str,
    partition: u32,
    records: Vec<Record>,
    mut sequence: i32,
    timeout: Duration,
) -> Result<i32, ClientError> {
    let producer_id = i64::try_from(producer.0)
        .map_err(|_| ClientError::local(ErrorCode::Internal, format!("producer id {} is out of range", producer.0)))?;
    for batch in batches(records) {
        let count = batch.len() as u32;
        let fields = ProducerFields { producer_id, producer_epoch: producer.1, base_sequence: sequence };
        let bytes = encode_transactional_batch(&batch, fields)
            .map_err(|e| ClientError::local(e.code(), format!("cannot encode a batch for {topic}/{partition}: {e}")))?;
        let deadline = Instant::now() + timeout;
        loop {
            let sent = client.produce_transactional_batch(topic, partition, bytes.clone(), transactional_id, timeout);
            match sent.await {
                Ok(_) => break,
                // A topic deleted meanwhile does not come back for this
                // transaction: no retry.
                Err(error) if error.code() == Some(ErrorCode::UnknownTopic) => return Err(error),
                Err(error) if error.is_retryable() && Instant::now() < deadline => {
                    tokio::time::sleep(retry_wait(error.retry_after())).await;
                }
                Err(error) => return Err(error),
            }
        }
        sequence = strata_record::sequence_after(sequence, count);
    }
    Ok(sequence)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_split_to_fit_the_batch_bounds() {
        let record = |size: usize| Record { value: Some(vec![7u8; size].into()), ..Default::default() };
        let split = batches(vec![record(10); 3]);
        assert_eq!(split.iter().map(Vec::len).collect::<Vec<_>>(), vec![3]);
        let big = MAX_BATCH_BYTES / 3;
        let split = batches(vec![record(big); 4]);
        assert!(split.len() >= 2, "four records of a third of a batch need two batches at least");
        for batch in &split {
            assert!(encode_transactional_batch(batch, ProducerFields::default()).is_ok(), "each batch encodes");
        }
        assert_eq!(split.iter().map(Vec::len).sum::<usize>(), 4);
    }

    #[test]
    fn fenced_producers_are_fatal_and_timeouts_abortable() {
        let server = |code: ErrorCode| ClientError::local(code, "x");
        assert!(TransactionError::classify(server(ErrorCode::ProducerFenced)).is_fatal());
        assert!(!TransactionError::classify(server(ErrorCode::TransactionTimedOut)).is_fatal());
        assert!(!TransactionError::classify(server(ErrorCode::StaleMemberEpoch)).is_fatal());
    }
}
