//! The transaction coordinator's state machine (Kafka's KIP-98 with
//! KIP-890's "transactions v2"), as plain Rust: one [`Transaction`] per
//! transactional id, changed only by applying a [`TxnCommand`].
//!
//! The flow it keeps:
//! 1. `InitProducer` bumps the producer epoch, which fences every older
//!    instance; a transaction the id left open is aborted first (the answer
//!    is `Pending` until that abort completes).
//! 2. A transaction begins implicitly: the first `AddPartitions` (a
//!    partition leader verifying a transactional produce) or `AddOffsets`
//!    of an epoch moves the id to `Ongoing`.
//! 3. `EndTxn` writes the decision: `PrepareCommit` or `PrepareAbort`, with
//!    the epoch bumped, so that (producer id, epoch) names exactly one
//!    transaction and a late produce of a finished one is refused.
//! 4. Once every partition has its marker, `Complete` moves it to
//!    `CompleteCommit` or `CompleteAbort` and hands out the staged offsets
//!    (of a commit) for the group state to store.
//! 5. `Abort` (an expired timeout, or an operator) aborts an ongoing
//!    transaction the same way, and remembers why, so that the producer is
//!    told "timed out" rather than "fenced".
//!
//! Invariants (checked by `check_invariants`, property-tested):
//! - Partitions and staged offsets are empty unless the transaction is
//!   `Ongoing` or preparing.
//! - A refused command changes nothing.
//! - The (producer id, epoch) of an id never goes back.
//!
//! The partition side (open transactions, the last stable offset, the
//! aborted index) is [`partition`]. Not here yet: the group fencing of
//! staged offsets (the metadata state is to check them against its groups
//! before it stages them), and expiry of idle ids.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use strata_core::limits::{MAX_PARTITIONS_PER_TRANSACTION, MAX_TRANSACTIONAL_ID_LEN, MAX_TRANSACTION_TIMEOUT_MS};
use strata_core::ErrorCode;

/// Where a transactional id is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnStatus {
    /// No transaction open (a fresh id, or one just initialised).
    Empty,
    Ongoing,
    /// The decision to commit is taken; markers are being written.
    PrepareCommit,
    /// The decision to abort is taken; markers are being written.
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl TxnStatus {
    /// The decision of a preparing or completed transaction.
    pub fn decision(self) -> Option<Decision> {
        match self {
            TxnStatus::PrepareCommit | TxnStatus::CompleteCommit => Some(Decision::Commit),
            TxnStatus::PrepareAbort | TxnStatus::CompleteAbort => Some(Decision::Abort),
            TxnStatus::Empty | TxnStatus::Ongoing => None,
        }
    }

    fn is_preparing(self) -> bool {
        matches!(self, TxnStatus::PrepareCommit | TxnStatus::PrepareAbort)
    }

    /// A new transaction may begin from here.
    fn is_idle(self) -> bool {
        matches!(self, TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    Commit,
    Abort,
}

/// Why the coordinator aborted a transaction on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AbortReason {
    /// It ran past its `transaction_timeout`.
    TimedOut,
    /// An operator aborted it (`strata txn abort`).
    Admin,
    /// A new instance initialised the same transactional id.
    NewInstance,
}

/// A partition a transaction wrote to.
pub type TopicPartition = (String, u32);

/// An offset staged by a transaction for a consumer group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedOffset {
    pub offset: u64,
    pub metadata: String,
}

/// One transactional id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub transactional_id: String,
    pub producer_id: u64,
    pub producer_epoch: i16,
    pub timeout_ms: u64,
    pub status: TxnStatus,
    /// Partitions written in the current (or preparing) transaction.
    pub partitions: BTreeSet<TopicPartition>,
    /// Offsets staged by the current transaction: group → partition → offset.
    pub offsets: BTreeMap<String, BTreeMap<TopicPartition, StagedOffset>>,
    /// Cluster time the current transaction began (its first add).
    pub started_ms: u64,
    /// Cluster time of the last change.
    pub updated_ms: u64,
    /// The producer id and epoch before the last bump, so that an `EndTxn`
    /// retried after its answer was lost is recognised.
    pub previous: Option<(u64, i16)>,
    /// The epoch a coordinator abort fenced, and why: a request at that
    /// epoch is told the reason.
    pub fenced: Option<(u64, i16, AbortReason)>,
}

/// A change to the transactions state; the data of one Raft entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnCommand {
    /// `InitProducerId` of a transactional producer.
    InitProducer { transactional_id: String, timeout_ms: u64, now_ms: u64 },
    /// A partition leader verifies that the transaction may write to these
    /// partitions (its first transactional produce to each).
    AddPartitions {
        transactional_id: String,
        producer_id: u64,
        producer_epoch: i16,
        partitions: BTreeSet<TopicPartition>,
        now_ms: u64,
    },
    /// `SendOffsetsToTransaction`. The metadata state first checks the
    /// offsets against the group as it checks an ordinary commit from
    /// `member_id` at `member_epoch` (an empty member id with epoch -1: a
    /// group without members), and stages nothing when that fails.
    AddOffsets {
        transactional_id: String,
        producer_id: u64,
        producer_epoch: i16,
        group_id: String,
        member_id: String,
        member_epoch: i32,
        offsets: BTreeMap<TopicPartition, StagedOffset>,
        now_ms: u64,
    },
    /// `EndTxn`: the decision.
    End { transactional_id: String, producer_id: u64, producer_epoch: i16, decision: Decision, now_ms: u64 },
    /// Every partition of the preparing transaction at `producer_epoch`
    /// has its marker.
    Complete { transactional_id: String, producer_epoch: i16, now_ms: u64 },
    /// The coordinator aborts the ongoing transaction at `producer_epoch`.
    /// For `TimedOut` it must have run past its timeout at `now_ms`.
    Abort { transactional_id: String, producer_epoch: i16, reason: AbortReason, now_ms: u64 },
}

/// A typed refusal; the state is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnError {
    pub code: ErrorCode,
    pub message: String,
}

impl TxnError {
    fn new(code: ErrorCode, message: impl Into<String>) -> TxnError {
        TxnError { code, message: message.into() }
    }
}

/// What applying a [`TxnCommand`] answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnResponse {
    /// The producer to use from now on.
    Producer {
        producer_id: u64,
        producer_epoch: i16,
    },
    /// The id's previous transaction is still being finished (it is now
    /// aborting, or was preparing); retry the init once it completes.
    Pending,
    /// Added or staged.
    Added,
    /// The decision is written; the producer continues at this epoch.
    Ended {
        producer_id: u64,
        producer_epoch: i16,
        decision: Decision,
    },
    /// Markers are written; a commit's staged offsets are for the group
    /// state to store now.
    Completed {
        decision: Decision,
        offsets: BTreeMap<String, BTreeMap<TopicPartition, StagedOffset>>,
    },
    /// The coordinator's abort is written.
    Aborting {
        producer_epoch: i16,
    },
    Error(TxnError),
}

/// Every transactional id, by id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionsState {
    pub transactions: BTreeMap<String, Transaction>,
}

fn validate_transactional_id(id: &str) -> Result<(), TxnError> {
    if id.is_empty() || id.len() > MAX_TRANSACTIONAL_ID_LEN || id.chars().any(char::is_control) {
        return Err(TxnError::new(
            ErrorCode::InvalidRequest,
            format!(
                "transactional id '{}' is not valid: use 1 to {MAX_TRANSACTIONAL_ID_LEN} bytes without control \
                 characters",
                id.escape_debug()
            ),
        ));
    }
    Ok(())
}

impl Transaction {
    /// The next (producer id, epoch): the epoch plus one, or a fresh id at
    /// epoch 0 once the epochs are used up.
    fn bump(&mut self, allocate: &mut dyn FnMut() -> u64) {
        self.previous = Some((self.producer_id, self.producer_epoch));
        if self.producer_epoch == i16::MAX {
            self.producer_id = allocate();
            self.producer_epoch = 0;
        } else {
            self.producer_epoch += 1;
        }
    }

    /// Refuses a request of any producer but the current one.
    fn check_producer(&self, producer_id: u64, producer_epoch: i16) -> Result<(), TxnError> {
        if (producer_id, producer_epoch) == (self.producer_id, self.producer_epoch) {
            return Ok(());
        }
        if let Some((id, epoch, reason)) = self.fenced {
            if (id, epoch) == (producer_id, producer_epoch) {
                return Err(match reason {
                    AbortReason::TimedOut => TxnError::new(
                        ErrorCode::TransactionTimedOut,
                        format!(
                            "transaction of '{}' ran past its timeout of {} ms and was aborted",
                            self.transactional_id, self.timeout_ms
                        ),
                    ),
                    AbortReason::Admin => TxnError::new(
                        ErrorCode::TransactionAborted,
                        format!("an operator aborted the transaction of '{}'", self.transactional_id),
                    ),
                    AbortReason::NewInstance => self.fenced_error(producer_id, producer_epoch),
                });
            }
        }
        if self.is_older(producer_id, producer_epoch) {
            return Err(self.fenced_error(producer_id, producer_epoch));
        }
        Err(TxnError::new(
            ErrorCode::InvalidRequest,
            format!(
                "producer {producer_id} epoch {producer_epoch} was never given for '{}' (it is at producer {} \
                 epoch {}); use the producer id and epoch InitProducerId answered",
                self.transactional_id, self.producer_id, self.producer_epoch
            ),
        ))
    }

    /// True when (id, epoch) came before the current producer: an earlier
    /// epoch of the current id, or the id before the last change of id.
    fn is_older(&self, producer_id: u64, producer_epoch: i16) -> bool {
        (producer_id == self.producer_id && producer_epoch < self.producer_epoch)
            || self.previous.is_some_and(|(id, epoch)| id == producer_id && producer_epoch <= epoch)
            || producer_id < self.producer_id
    }

    fn fenced_error(&self, producer_id: u64, producer_epoch: i16) -> TxnError {
        TxnError::new(
            ErrorCode::ProducerFenced,
            format!(
                "producer {producer_id} epoch {producer_epoch} of '{}' is fenced: a newer instance (producer {} \
                 epoch {}) took over; close this one",
                self.transactional_id, self.producer_id, self.producer_epoch
            ),
        )
    }

    /// Opens a transaction if none is, for an add at `now_ms`.
    fn begin(&mut self, now_ms: u64) -> Result<(), TxnError> {
        if self.status.is_idle() {
            self.status = TxnStatus::Ongoing;
            self.started_ms = now_ms;
            return Ok(());
        }
        if self.status.is_preparing() {
            return Err(TxnError::new(
                ErrorCode::ConcurrentTransactions,
                format!("the transaction of '{}' is finishing; retry once it has", self.transactional_id),
            ));
        }
        Ok(())
    }
}

impl TransactionsState {
    /// Applies `command`. `allocate` hands out a fresh producer id (the
    /// metadata state's counter, so every replica draws the same). A
    /// refusal changes nothing.
    pub fn apply(&mut self, command: TxnCommand, allocate: &mut dyn FnMut() -> u64) -> TxnResponse {
        match self.apply_inner(command, allocate) {
            Ok(response) => response,
            Err(error) => TxnResponse::Error(error),
        }
    }

    fn apply_inner(&mut self, command: TxnCommand, allocate: &mut dyn FnMut() -> u64) -> Result<TxnResponse, TxnError> {
        match command {
            TxnCommand::InitProducer { transactional_id, timeout_ms, now_ms } => {
                validate_transactional_id(&transactional_id)?;
                if timeout_ms == 0 || timeout_ms > MAX_TRANSACTION_TIMEOUT_MS {
                    return Err(TxnError::new(
                        ErrorCode::InvalidRequest,
                        format!(
                            "transaction timeout {timeout_ms} ms is out of bounds; use 1 to \
                             {MAX_TRANSACTION_TIMEOUT_MS} ms"
                        ),
                    ));
                }
                let Some(txn) = self.transactions.get_mut(&transactional_id) else {
                    let txn = Transaction {
                        transactional_id: transactional_id.clone(),
                        producer_id: allocate(),
                        producer_epoch: 0,
                        timeout_ms,
                        status: TxnStatus::Empty,
                        partitions: BTreeSet::new(),
                        offsets: BTreeMap::new(),
                        started_ms: now_ms,
                        updated_ms: now_ms,
                        previous: None,
                        fenced: None,
                    };
                    let response =
                        TxnResponse::Producer { producer_id: txn.producer_id, producer_epoch: txn.producer_epoch };
                    self.transactions.insert(transactional_id, txn);
                    return Ok(response);
                };
                match txn.status {
                    TxnStatus::Ongoing => {
                        // The previous instance left a transaction open: it
                        // is aborted (and its producer fenced) first.
                        txn.fenced = Some((txn.producer_id, txn.producer_epoch, AbortReason::NewInstance));
                        txn.bump(allocate);
                        txn.status = TxnStatus::PrepareAbort;
                        txn.updated_ms = now_ms;
                        Ok(TxnResponse::Pending)
                    }
                    TxnStatus::PrepareCommit | TxnStatus::PrepareAbort => Ok(TxnResponse::Pending),
                    TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort => {
                        txn.bump(allocate);
                        txn.timeout_ms = timeout_ms;
                        txn.status = TxnStatus::Empty;
                        txn.updated_ms = now_ms;
                        Ok(TxnResponse::Producer { producer_id: txn.producer_id, producer_epoch: txn.producer_epoch })
                    }
                }
            }
            TxnCommand::AddPartitions { transactional_id, producer_id, producer_epoch, partitions, now_ms } => {
                let txn = self.existing(&transactional_id)?;
                txn.check_producer(producer_id, producer_epoch)?;
                let total = txn.partitions.union(&partitions).count();
                if total > MAX_PARTITIONS_PER_TRANSACTION {
                    return Err(TxnError::new(
                        ErrorCode::LimitReached,
                        format!(
                            "a transaction writes to at most {MAX_PARTITIONS_PER_TRANSACTION} partitions; this one \
                             would write to {total}: commit and start another"
                        ),
                    ));
                }
                txn.begin(now_ms)?;
                txn.partitions.extend(partitions);
                txn.updated_ms = now_ms;
                Ok(TxnResponse::Added)
            }
            TxnCommand::AddOffsets {
                transactional_id, producer_id, producer_epoch, group_id, offsets, now_ms, ..
            } => {
                let txn = self.existing(&transactional_id)?;
                txn.check_producer(producer_id, producer_epoch)?;
                txn.begin(now_ms)?;
                txn.offsets.entry(group_id).or_default().extend(offsets);
                txn.updated_ms = now_ms;
                Ok(TxnResponse::Added)
            }
            TxnCommand::End { transactional_id, producer_id, producer_epoch, decision, now_ms } => {
                let txn = self.existing(&transactional_id)?;
                // A retry whose first answer was lost: the same decision,
                // from the producer as it was before the bump.
                if txn.status.decision() == Some(decision) && txn.previous == Some((producer_id, producer_epoch)) {
                    return Ok(TxnResponse::Ended {
                        producer_id: txn.producer_id,
                        producer_epoch: txn.producer_epoch,
                        decision,
                    });
                }
                txn.check_producer(producer_id, producer_epoch)?;
                match (txn.status, decision) {
                    (TxnStatus::Ongoing, _) => {
                        txn.bump(allocate);
                        txn.status = match decision {
                            Decision::Commit => TxnStatus::PrepareCommit,
                            Decision::Abort => TxnStatus::PrepareAbort,
                        };
                        txn.updated_ms = now_ms;
                        Ok(TxnResponse::Ended {
                            producer_id: txn.producer_id,
                            producer_epoch: txn.producer_epoch,
                            decision,
                        })
                    }
                    // Nothing open: aborting it is already done.
                    (status, Decision::Abort) if status.is_idle() => Ok(TxnResponse::Ended {
                        producer_id: txn.producer_id,
                        producer_epoch: txn.producer_epoch,
                        decision,
                    }),
                    (status, Decision::Commit) if status.is_idle() => Err(TxnError::new(
                        ErrorCode::InvalidTxnState,
                        format!(
                            "'{transactional_id}' has no open transaction to commit: send records or offsets in it \
                             first"
                        ),
                    )),
                    (status, _) => Err(TxnError::new(
                        ErrorCode::InvalidTxnState,
                        format!("'{transactional_id}' is {status:?}; the transaction is already decided"),
                    )),
                }
            }
            TxnCommand::Complete { transactional_id, producer_epoch, now_ms } => {
                let txn = self.existing(&transactional_id)?;
                if !txn.status.is_preparing() || txn.producer_epoch != producer_epoch {
                    return Err(stale(&transactional_id, txn));
                }
                let decision = txn.status.decision().expect("a preparing transaction has a decision");
                txn.status = match decision {
                    Decision::Commit => TxnStatus::CompleteCommit,
                    Decision::Abort => TxnStatus::CompleteAbort,
                };
                txn.partitions.clear();
                let staged = std::mem::take(&mut txn.offsets);
                txn.updated_ms = now_ms;
                let offsets = if decision == Decision::Commit { staged } else { BTreeMap::new() };
                Ok(TxnResponse::Completed { decision, offsets })
            }
            TxnCommand::Abort { transactional_id, producer_epoch, reason, now_ms } => {
                let txn = self.existing(&transactional_id)?;
                let expired = now_ms.saturating_sub(txn.started_ms) >= txn.timeout_ms;
                if txn.status != TxnStatus::Ongoing
                    || txn.producer_epoch != producer_epoch
                    || (reason == AbortReason::TimedOut && !expired)
                {
                    return Err(stale(&transactional_id, txn));
                }
                txn.fenced = Some((txn.producer_id, txn.producer_epoch, reason));
                txn.bump(allocate);
                txn.status = TxnStatus::PrepareAbort;
                txn.updated_ms = now_ms;
                Ok(TxnResponse::Aborting { producer_epoch: txn.producer_epoch })
            }
        }
    }

    fn existing(&mut self, transactional_id: &str) -> Result<&mut Transaction, TxnError> {
        validate_transactional_id(transactional_id)?;
        self.transactions.get_mut(transactional_id).ok_or_else(|| {
            TxnError::new(
                ErrorCode::TransactionalIdNotFound,
                format!("no producer initialised transactional id '{transactional_id}'; call InitProducerId first"),
            )
        })
    }

    /// Whether an open or preparing transaction has staged an offset for
    /// `group_id`'s `topic`-`partition`: its committed offset is not
    /// stable until that transaction ends.
    pub fn has_pending_offset(&self, group_id: &str, topic: &str, partition: u32) -> bool {
        self.transactions
            .values()
            .any(|t| t.offsets.get(group_id).is_some_and(|staged| staged.contains_key(&(topic.to_string(), partition))))
    }

    /// Transactions the coordinator must drive on: those preparing (a new
    /// leader writes their markers again) and those ongoing past their
    /// timeout at `now_ms` (to abort).
    pub fn needing_work(&self, now_ms: u64) -> Vec<&Transaction> {
        self.transactions
            .values()
            .filter(|t| {
                t.status.is_preparing()
                    || (t.status == TxnStatus::Ongoing && now_ms.saturating_sub(t.started_ms) >= t.timeout_ms)
            })
            .collect()
    }

    /// Panics when an invariant of the module documentation is broken.
    pub fn check_invariants(&self) {
        for (id, txn) in &self.transactions {
            assert_eq!(id, &txn.transactional_id, "transaction filed under another id");
            if txn.status.is_idle() {
                assert!(txn.partitions.is_empty() && txn.offsets.is_empty(), "{id}: idle with partitions or offsets");
            }
            if let Some((previous_id, previous_epoch)) = txn.previous {
                assert!(
                    (txn.producer_id, txn.producer_epoch) > (previous_id, previous_epoch)
                        || (txn.producer_id != previous_id && txn.producer_epoch == 0),
                    "{id}: producer went back"
                );
            }
        }
    }
}

/// The refusal of a coordinator command planned for a state that moved on.
fn stale(transactional_id: &str, txn: &Transaction) -> TxnError {
    TxnError::new(
        ErrorCode::InvalidTxnState,
        format!(
            "'{transactional_id}' is {:?} at epoch {}; the command was planned for another state",
            txn.status, txn.producer_epoch
        ),
    )
}

pub mod partition;

#[cfg(test)]
mod tests;
