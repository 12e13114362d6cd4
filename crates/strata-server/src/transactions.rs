//! The transaction coordinator: the metadata leader's thin I/O around the
//! pure state machine of `strata_state::txn` (which decides every
//! transition; this module proposes, waits, writes markers and keeps time).
//!
//! - Requests (InitProducerId with a transactional id, the partition
//!   leaders' AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, and the admin
//!   list, describe and abort) run on the metadata leader; `service`
//!   forwards them there. Each first confirms the leadership (a lease read)
//!   and then proposes one `MetaCommand::Txn` entry; the answer is what
//!   applying it answered. Nothing is answered before its entry is
//!   committed, and nothing lives only in this node's memory but the set
//!   of transactions whose markers a task is writing now.
//! - EndTxn answers once the decision (PrepareCommit or PrepareAbort) is
//!   committed. The markers are then written by the driver: one
//!   `WriteTxnMarker` per partition of the transaction, all at once, each
//!   retried until its partition's leader takes it, and then `Complete`.
//!   A request of the producer's next transaction that meets the previous
//!   one still preparing waits for it (up to TXN_COMPLETION_WAIT) instead
//!   of failing, so a producer can begin again at once. It waits only
//!   until the markers are written and `Complete` is handed to the Raft
//!   core, not until `Complete` is committed: its own entry is logged
//!   after that one, and both go out in one replication round.
//! - The driver runs every TXN_CHECK_INTERVAL (and at once when a decision
//!   is written) while this node leads: it aborts transactions past their
//!   timeout (by cluster time against the start logged in the entries, so
//!   a new leader keeps the same deadlines) and writes the markers of every
//!   preparing transaction, which is how a new leader resumes the ones its
//!   predecessor left half done.
//! - Markers are idempotent: a partition takes a repeated marker as done,
//!   and refuses a stale one (older than its last of that producer) the
//!   same way on every replica, which also means the transaction ended.
//!
//! Invariant: a transaction completes only after every one of its
//! partitions has its marker (or its topic was deleted).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use strata_core::limits::{FORWARD_TIMEOUT, TXN_CHECK_INTERVAL, TXN_COMPLETION_WAIT, TXN_MARKER_RETRY_BACKOFF};
use strata_core::ErrorCode;
use strata_proto::v1 as pb;
use strata_proto::v1::strata_client::StrataClient;
use strata_state::txn::{
    AbortReason, Decision, StagedOffset, TopicPartition, Transaction, TxnCommand, TxnError, TxnResponse, TxnStatus,
};
use strata_state::{MetaCommand, MetaResponse};
use tokio::sync::{watch, Notify};

use crate::coordinator::{confirm_leader, leading_term, propose_meta, submit_meta, CoordinatorError};
use crate::error::ApiError;
use crate::node::Node;

/// Failed marker attempts between two warnings: 5 s at
/// TXN_MARKER_RETRY_BACKOFF.
const MARKER_WARN_EVERY: u32 = 50;

/// The coordinator's memory on this node; cheap to clone.
#[derive(Clone, Default)]
pub struct TxnCoordinator {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Transactional ids whose markers a task of this node is writing.
    completing: Mutex<HashSet<String>>,
    /// Wakes the driver: a decision was just written.
    wake: Notify,
    /// Transactional ids whose `Complete` this node handed to the metadata
    /// group and that is not answered yet, with the epoch it completes. A
    /// request of the id's next transaction proposed after that is logged
    /// after it, so it need not wait for the answer (the two share a
    /// replication round).
    completion_submitted: watch::Sender<HashMap<String, i16>>,
    /// Transactions this node completed while leading, by outcome, and
    /// those it aborted for their timeout (for `/metrics`).
    commits: AtomicU64,
    aborts: AtomicU64,
    timeouts: AtomicU64,
}

/// The coordinator's figures for `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TxnMetrics {
    /// Transactions open or preparing now (replicated state).
    pub open: u64,
    pub commits: u64,
    pub aborts: u64,
    pub timeouts: u64,
}

fn refused(error: TxnError) -> CoordinatorError {
    CoordinatorError::Api(ApiError::new(error.code, error.message))
}

fn not_found(transactional_id: &str) -> CoordinatorError {
    CoordinatorError::Api(ApiError::new(
        ErrorCode::TransactionalIdNotFound,
        format!("no producer initialised transactional id '{transactional_id}'"),
    ))
}

fn unexpected(response: impl std::fmt::Debug) -> CoordinatorError {
    CoordinatorError::Api(ApiError::internal(format!("unexpected apply result {response:?}")))
}

/// Proposes one transaction command; a refusal is the error.
async fn propose_txn(node: &Node, command: TxnCommand) -> Result<TxnResponse, CoordinatorError> {
    txn_answer(propose_meta(node, MetaCommand::Txn(command)).await)
}

/// The answer to one transaction command; a refusal is the error.
fn txn_answer(written: Result<MetaResponse, CoordinatorError>) -> Result<TxnResponse, CoordinatorError> {
    match written? {
        MetaResponse::Txn(TxnResponse::Error(error)) => Err(refused(error)),
        MetaResponse::Txn(response) => Ok(response),
        other => Err(unexpected(other)),
    }
}

/// The wire name of a state.
pub(crate) fn state_name(status: TxnStatus) -> &'static str {
    match status {
        TxnStatus::Empty => "EMPTY",
        TxnStatus::Ongoing => "ONGOING",
        TxnStatus::PrepareCommit => "PREPARE_COMMIT",
        TxnStatus::PrepareAbort => "PREPARE_ABORT",
        TxnStatus::CompleteCommit => "COMPLETE_COMMIT",
        TxnStatus::CompleteAbort => "COMPLETE_ABORT",
    }
}

fn is_open(status: TxnStatus) -> bool {
    matches!(status, TxnStatus::Ongoing | TxnStatus::PrepareCommit | TxnStatus::PrepareAbort)
}

/// One transactional id as the admin RPCs show it; `now_ms` is cluster time.
pub(crate) fn describe(txn: &Transaction, now_ms: u64) -> pb::TransactionDescription {
    let mut partitions: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (topic, partition) in &txn.partitions {
        partitions.entry(topic).or_default().push(*partition);
    }
    pb::TransactionDescription {
        transactional_id: txn.transactional_id.clone(),
        state: state_name(txn.status).to_string(),
        producer_id: txn.producer_id,
        producer_epoch: txn.producer_epoch as u32,
        timeout_ms: txn.timeout_ms,
        age_ms: if is_open(txn.status) { now_ms.saturating_sub(txn.started_ms) } else { 0 },
        partitions: partitions
            .into_iter()
            .map(|(topic, partitions)| pb::TopicPartitions { topic: topic.to_string(), partitions })
            .collect(),
        groups: txn.offsets.keys().cloned().collect(),
    }
}

/// Removes a transactional id from the completing set when its task ends,
/// however it ends.
struct Completing {
    inner: Arc<Inner>,
    transactional_id: String,
}

impl Drop for Completing {
    fn drop(&mut self) {
        self.inner.completing.lock().expect("completing set").remove(&self.transactional_id);
    }
}

/// Why the marker writer stopped before every marker was written.
#[derive(Debug)]
struct Stopped;

impl TxnCoordinator {
    fn transaction(node: &Node, transactional_id: &str) -> Option<Transaction> {
        node.metadata_state().transactions.transactions.get(transactional_id).cloned()
    }

    /// Waits until `transactional_id` is not preparing (its markers are
    /// written and its `Complete` is applied, or handed to the metadata
    /// group by this node, so that what the caller proposes next is logged
    /// after it), up to `deadline`; CONCURRENT_TRANSACTIONS past it.
    async fn wait_until_settled(
        &self,
        node: &Node,
        transactional_id: &str,
        deadline: tokio::time::Instant,
    ) -> Result<(), CoordinatorError> {
        self.inner.wake.notify_one();
        let mut watch = node.metadata().state.clone();
        let mut submitted = self.inner.completion_submitted.subscribe();
        loop {
            let preparing_epoch = watch
                .borrow_and_update()
                .as_metadata()
                .and_then(|m| m.transactions.transactions.get(transactional_id))
                .filter(|t| matches!(t.status, TxnStatus::PrepareCommit | TxnStatus::PrepareAbort))
                .map(|t| t.producer_epoch);
            let Some(epoch) = preparing_epoch else { return Ok(()) };
            if submitted.borrow_and_update().get(transactional_id) == Some(&epoch) {
                return Ok(());
            }
            let changed = async {
                tokio::select! {
                    changed = watch.changed() => changed.is_ok(),
                    changed = submitted.changed() => changed.is_ok(),
                }
            };
            match tokio::time::timeout_at(deadline, changed).await {
                Ok(true) => continue,
                Ok(false) => {
                    return Err(CoordinatorError::Api(ApiError::new(
                        ErrorCode::ClusterUnavailable,
                        "the metadata group is stopping",
                    )))
                }
                Err(_) => {
                    return Err(CoordinatorError::Api(ApiError::new(
                        ErrorCode::ConcurrentTransactions,
                        format!(
                            "'{transactional_id}' is still writing the markers of its previous transaction after \
                             {TXN_COMPLETION_WAIT:?}"
                        ),
                    )))
                }
            }
        }
    }

    /// Serves InitProducerId with a transactional id: the id's producer at
    /// its next epoch, once any transaction it left open is aborted.
    pub(crate) async fn init_producer(
        &self,
        node: &Node,
        transactional_id: &str,
        timeout_ms: u64,
    ) -> Result<(u64, i16), CoordinatorError> {
        confirm_leader(node).await?;
        let deadline = tokio::time::Instant::now() + TXN_COMPLETION_WAIT;
        loop {
            let command = TxnCommand::InitProducer {
                transactional_id: transactional_id.to_string(),
                timeout_ms,
                now_ms: node.clock.now().ms,
            };
            match propose_txn(node, command).await? {
                TxnResponse::Producer { producer_id, producer_epoch } => {
                    tracing::info!(transactional_id, producer_id, producer_epoch, "transactional producer initialised");
                    return Ok((producer_id, producer_epoch));
                }
                TxnResponse::Pending => self.wait_until_settled(node, transactional_id, deadline).await?,
                other => return Err(unexpected(other)),
            }
        }
    }

    /// Serves AddPartitionsToTxn (a partition leader before a transaction's
    /// first batch there). Partitions already in the transaction write
    /// nothing.
    pub(crate) async fn add_partitions(
        &self,
        node: &Node,
        transactional_id: &str,
        producer_id: u64,
        producer_epoch: i16,
        partitions: BTreeSet<TopicPartition>,
    ) -> Result<(), CoordinatorError> {
        confirm_leader(node).await?;
        let state = node.metadata_state();
        for (topic, partition) in &partitions {
            match state.topics.get(topic) {
                Some(t) if (*partition as usize) < t.partitions.len() => {}
                Some(_) | None => {
                    return Err(CoordinatorError::Api(ApiError::new(
                        ErrorCode::UnknownTopic,
                        format!("{topic}/{partition} does not exist (was its topic deleted?); abort the transaction"),
                    )))
                }
            }
        }
        let txn = state.transactions.transactions.get(transactional_id);
        if txn.is_some_and(|t| {
            t.status == TxnStatus::Ongoing
                && (t.producer_id, t.producer_epoch) == (producer_id, producer_epoch)
                && partitions.is_subset(&t.partitions)
        }) {
            return Ok(());
        }
        self.settle_previous(node, transactional_id, txn).await?;
        let command = TxnCommand::AddPartitions {
            transactional_id: transactional_id.to_string(),
            producer_id,
            producer_epoch,
            partitions,
            now_ms: node.clock.now().ms,
        };
        match propose_txn(node, command).await? {
            TxnResponse::Added => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Waits for the id's previous transaction to finish when it is still
    /// preparing (the producer began its next one right after EndTxn).
    async fn settle_previous(
        &self,
        node: &Node,
        transactional_id: &str,
        txn: Option<&Transaction>,
    ) -> Result<(), CoordinatorError> {
        if txn.is_some_and(|t| matches!(t.status, TxnStatus::PrepareCommit | TxnStatus::PrepareAbort)) {
            let deadline = tokio::time::Instant::now() + TXN_COMPLETION_WAIT;
            self.wait_until_settled(node, transactional_id, deadline).await?;
        }
        Ok(())
    }

    /// Serves AddOffsetsToTxn: the offsets are fenced against the group and
    /// staged in the transaction.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn add_offsets(
        &self,
        node: &Node,
        transactional_id: &str,
        producer_id: u64,
        producer_epoch: i16,
        group_id: &str,
        member_id: &str,
        member_epoch: i32,
        offsets: BTreeMap<TopicPartition, StagedOffset>,
    ) -> Result<(), CoordinatorError> {
        confirm_leader(node).await?;
        let state = node.metadata_state();
        self.settle_previous(node, transactional_id, state.transactions.transactions.get(transactional_id)).await?;
        let command = TxnCommand::AddOffsets {
            transactional_id: transactional_id.to_string(),
            producer_id,
            producer_epoch,
            group_id: group_id.to_string(),
            member_id: member_id.to_string(),
            member_epoch,
            offsets,
            now_ms: node.clock.now().ms,
        };
        match propose_txn(node, command).await? {
            TxnResponse::Added => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Serves EndTxn: writes the decision and answers the producer's next
    /// id and epoch; the markers follow (see the module documentation).
    pub(crate) async fn end(
        &self,
        node: &Node,
        transactional_id: &str,
        producer_id: u64,
        producer_epoch: i16,
        decision: Decision,
    ) -> Result<(u64, i16), CoordinatorError> {
        confirm_leader(node).await?;
        let command = TxnCommand::End {
            transactional_id: transactional_id.to_string(),
            producer_id,
            producer_epoch,
            decision,
            now_ms: node.clock.now().ms,
        };
        match propose_txn(node, command).await? {
            TxnResponse::Ended { producer_id, producer_epoch, .. } => {
                self.inner.wake.notify_one();
                Ok((producer_id, producer_epoch))
            }
            other => Err(unexpected(other)),
        }
    }

    /// Serves the admin abort (`strata txn abort`): the open transaction is
    /// aborted and its producer fenced with TRANSACTION_ABORTED.
    pub(crate) async fn abort(&self, node: &Node, transactional_id: &str) -> Result<Transaction, CoordinatorError> {
        confirm_leader(node).await?;
        let txn = Self::transaction(node, transactional_id).ok_or_else(|| not_found(transactional_id))?;
        if txn.status != TxnStatus::Ongoing {
            return Err(CoordinatorError::Api(ApiError::new(
                ErrorCode::InvalidTxnState,
                format!("'{transactional_id}' has no open transaction to abort: it is {}", state_name(txn.status)),
            )));
        }
        let command = TxnCommand::Abort {
            transactional_id: transactional_id.to_string(),
            producer_epoch: txn.producer_epoch,
            reason: AbortReason::Admin,
            now_ms: node.clock.now().ms,
        };
        match propose_txn(node, command).await? {
            TxnResponse::Aborting { .. } => {
                tracing::info!(transactional_id, "transaction aborted by an operator");
                self.inner.wake.notify_one();
            }
            other => return Err(unexpected(other)),
        }
        Self::transaction(node, transactional_id).ok_or_else(|| unexpected("the transaction vanished"))
    }

    /// Every transactional id, for `ListTransactions`, after confirming the
    /// leadership; with the cluster time the ages are measured at.
    pub(crate) async fn list(&self, node: &Node) -> Result<(Vec<Transaction>, u64), CoordinatorError> {
        confirm_leader(node).await?;
        let state = node.metadata_state();
        Ok((state.transactions.transactions.values().cloned().collect(), node.clock.now().ms))
    }

    /// One transactional id, for `DescribeTransaction`, after confirming the
    /// leadership; with the cluster time its age is measured at.
    pub(crate) async fn describe(
        &self,
        node: &Node,
        transactional_id: &str,
    ) -> Result<(Transaction, u64), CoordinatorError> {
        confirm_leader(node).await?;
        let txn = Self::transaction(node, transactional_id).ok_or_else(|| not_found(transactional_id))?;
        Ok((txn, node.clock.now().ms))
    }

    /// The figures for `/metrics`; `None` when this node does not lead.
    pub(crate) fn metrics(&self, node: &Node) -> Option<TxnMetrics> {
        leading_term(node)?;
        let state = node.metadata_state();
        Some(TxnMetrics {
            open: state.transactions.transactions.values().filter(|t| is_open(t.status)).count() as u64,
            commits: self.inner.commits.load(Ordering::Relaxed),
            aborts: self.inner.aborts.load(Ordering::Relaxed),
            timeouts: self.inner.timeouts.load(Ordering::Relaxed),
        })
    }

    /// The driver (see the module documentation); runs for the node's life.
    pub(crate) async fn run(self, node: Node) {
        let mut tick = tokio::time::interval(TXN_CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.inner.wake.notified() => {}
            }
            let Some(term) = leading_term(&node) else { continue };
            let state = node.metadata_state();
            let now_ms = node.clock.now().ms;
            for txn in state.transactions.needing_work(now_ms) {
                if txn.status == TxnStatus::Ongoing {
                    self.time_out(&node, txn, now_ms).await;
                    continue;
                }
                let fresh = self.inner.completing.lock().expect("completing set").insert(txn.transactional_id.clone());
                if fresh {
                    let guard =
                        Completing { inner: self.inner.clone(), transactional_id: txn.transactional_id.clone() };
                    tokio::spawn(self.clone().complete(node.clone(), txn.clone(), term, guard));
                }
            }
        }
    }

    async fn time_out(&self, node: &Node, txn: &Transaction, now_ms: u64) {
        let command = TxnCommand::Abort {
            transactional_id: txn.transactional_id.clone(),
            producer_epoch: txn.producer_epoch,
            reason: AbortReason::TimedOut,
            now_ms,
        };
        match propose_txn(node, command).await {
            Ok(_) => {
                self.inner.timeouts.fetch_add(1, Ordering::Relaxed);
                self.inner.wake.notify_one();
                tracing::warn!(
                    transactional_id = %txn.transactional_id,
                    timeout_ms = txn.timeout_ms,
                    "transaction ran past its timeout: aborted"
                );
            }
            Err(error) => {
                tracing::debug!(transactional_id = %txn.transactional_id, ?error, "timeout abort not written")
            }
        }
    }

    /// Writes the markers of a preparing transaction, then completes it.
    async fn complete(self, node: Node, txn: Transaction, term: u64, _guard: Completing) {
        let Some(decision) = txn.status.decision() else { return };
        while crate::faults::txn_markers_held(&node.config.faults) {
            if leading_term(&node) != Some(term) {
                return;
            }
            tokio::time::sleep(TXN_MARKER_RETRY_BACKOFF).await;
        }
        let writes = txn
            .partitions
            .iter()
            .map(|(topic, partition)| write_marker_until_done(&node, topic, *partition, &txn, decision, term));
        if futures::future::join_all(writes).await.iter().any(Result::is_err) {
            return; // no longer leading: the next leader resumes it
        }
        let command = TxnCommand::Complete {
            transactional_id: txn.transactional_id.clone(),
            producer_epoch: txn.producer_epoch,
            now_ms: node.clock.now().ms,
        };
        let answer = match submit_meta(&node, MetaCommand::Txn(command)).await {
            Ok(answer) => answer,
            Err(error) => {
                tracing::debug!(transactional_id = %txn.transactional_id, ?error, "completion not written");
                return;
            }
        };
        let id = txn.transactional_id.clone();
        self.inner.completion_submitted.send_modify(|submitted| {
            submitted.insert(id, txn.producer_epoch);
        });
        let written = answer.await;
        self.inner.completion_submitted.send_if_modified(|submitted| {
            let ours = submitted.get(&txn.transactional_id) == Some(&txn.producer_epoch);
            if ours {
                submitted.remove(&txn.transactional_id);
            }
            ours
        });
        match txn_answer(written) {
            Ok(TxnResponse::Completed { decision, .. }) => {
                let counter = match decision {
                    Decision::Commit => &self.inner.commits,
                    Decision::Abort => &self.inner.aborts,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(transactional_id = %txn.transactional_id, ?decision, partitions = txn.partitions.len(),
                    "transaction completed");
            }
            Ok(other) => tracing::warn!(?other, "unexpected answer to a completion"),
            Err(error) => tracing::debug!(transactional_id = %txn.transactional_id, ?error, "completion not written"),
        }
    }
}

/// Writes one partition's marker, retrying until its leader takes it, for
/// as long as this node leads the metadata group in `term`.
async fn write_marker_until_done(
    node: &Node,
    topic: &str,
    partition: u32,
    txn: &Transaction,
    decision: Decision,
    term: u64,
) -> Result<(), Stopped> {
    let request = pb::WriteTxnMarkerRequest {
        topic: topic.to_string(),
        partition,
        producer_id: txn.producer_id,
        producer_epoch: txn.producer_epoch as u32,
        commit: decision == Decision::Commit,
        coordinator_epoch: term,
    };
    let mut attempts = 0u32;
    loop {
        if leading_term(node) != Some(term) {
            return Err(Stopped);
        }
        match send_marker(node, &request).await {
            Ok(()) => return Ok(()),
            // The topic is gone: nothing of the transaction is left there.
            Err(error) if matches!(error.code, ErrorCode::UnknownTopic | ErrorCode::UnknownPartition) => return Ok(()),
            // A later marker of the producer is there already: this
            // transaction ended there before.
            Err(error) if error.code == ErrorCode::InvalidTxnState => return Ok(()),
            Err(error) => {
                attempts += 1;
                // One warning every 5 s at the back-off, not one per attempt.
                if attempts.is_multiple_of(MARKER_WARN_EVERY) {
                    tracing::warn!(topic, partition, transactional_id = %txn.transactional_id, error = %error.message,
                        code = error.code.name(), attempts,
                        "transaction marker still not written, retrying");
                }
                tokio::time::sleep(TXN_MARKER_RETRY_BACKOFF).await;
            }
        }
    }
}

/// Sends one marker to the partition's leader: the leader this node knows
/// first, then each replica, following a NOT_LEADER's hint once.
async fn send_marker(node: &Node, request: &pb::WriteTxnMarkerRequest) -> Result<(), ApiError> {
    let state = node.metadata_state();
    let topic = state
        .topics
        .get(&request.topic)
        .ok_or_else(|| ApiError::new(ErrorCode::UnknownTopic, format!("topic '{}' does not exist", request.topic)))?;
    let assignment = topic.partitions.get(request.partition as usize).ok_or_else(|| {
        ApiError::new(ErrorCode::UnknownPartition, format!("{}/{} does not exist", request.topic, request.partition))
    })?;
    crate::leader_call::on_partition_leader(node, assignment.group_id, &assignment.replicas, |target| {
        call_marker(node, target, request.clone())
    })
    .await
}

async fn call_marker(node: &Node, target: u64, request: pb::WriteTxnMarkerRequest) -> Result<(), ApiError> {
    let channel = node.peers.channel(target).map_err(ApiError::internal)?;
    let mut client = StrataClient::new(channel);
    let mut call = tonic::Request::new(request);
    call.set_timeout(FORWARD_TIMEOUT);
    let answer = client
        .write_txn_marker(call)
        .await
        .map_err(|status| ApiError::new(ErrorCode::LeaderNotAvailable, format!("node {target}: {status}")))?
        .into_inner();
    match answer.error {
        Some(error) if error.code != 0 => Err(ApiError::from_proto(&error)),
        _ => Ok(()),
    }
}
