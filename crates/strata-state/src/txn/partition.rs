//! The partition side of transactions, as plain Rust: which producers have
//! a transaction open in this partition and where it began, the last
//! stable offset (LSO), and the index of aborted transactions that
//! read_committed fetches filter with.
//!
//! A transactional batch opens its producer's transaction at the batch's
//! offset (or continues it); a marker (a control batch written by the
//! coordinator) closes it, and an abort marker adds it to the aborted
//! index. Markers carry the epoch the coordinator bumped to at the
//! decision, so a marker is for the transaction of an older or equal epoch.
//!
//! Invariants:
//! - The LSO is the smallest first offset of an open transaction, else the
//!   high watermark; it never passes the first record of an open
//!   transaction, so read_committed readers never see one.
//! - A refused call changes nothing; a marker older than the last one of
//!   its producer is refused the same way on every replica, and one
//!   repeated (a new coordinator leader resuming) is taken as done.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use strata_core::ErrorCode;

use super::{Decision, TxnError};

/// A producer's open transaction in this partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenTxn {
    pub producer_epoch: i16,
    /// Offset of its first record here.
    pub first_offset: u64,
}

/// An aborted transaction: its records in [first_offset, marker_offset)
/// from `producer_id` are never shown to read_committed readers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortedTxn {
    pub producer_id: u64,
    pub first_offset: u64,
    pub marker_offset: u64,
}

/// What a marker did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MarkerOutcome {
    /// It closed an open transaction: append it.
    Closed,
    /// The producer had nothing open (a transaction that wrote nothing
    /// here yet, or one whose marker came first): append it, nothing to
    /// close.
    NothingOpen,
    /// The same marker was taken before (a new coordinator leader writing
    /// the markers of a decision again): nothing to append.
    Repeated,
}

/// The transactions of one partition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionTxns {
    /// Producer id → its open transaction.
    pub open: BTreeMap<u64, OpenTxn>,
    /// Producer id → the epoch of its last marker here.
    pub last_marker_epoch: BTreeMap<u64, i16>,
    /// Aborted transactions in marker order (so by marker offset).
    pub aborted: Vec<AbortedTxn>,
}

impl PartitionTxns {
    /// Checks a transactional batch of `producer_id` at `producer_epoch`
    /// that would be appended at `base_offset`, and opens (or continues)
    /// its transaction. The partition leader has verified with the
    /// coordinator that the transaction includes this partition.
    pub fn on_data(&mut self, producer_id: u64, producer_epoch: i16, base_offset: u64) -> Result<(), TxnError> {
        self.check_data(producer_id, producer_epoch)?;
        self.open.entry(producer_id).or_insert(OpenTxn { producer_epoch, first_offset: base_offset });
        Ok(())
    }

    /// Whether a transactional batch of `producer_id` at `producer_epoch`
    /// may be appended now, without changing anything.
    pub fn check_data(&self, producer_id: u64, producer_epoch: i16) -> Result<(), TxnError> {
        if let Some(&last) = self.last_marker_epoch.get(&producer_id) {
            if producer_epoch < last && !self.open.contains_key(&producer_id) {
                return Err(TxnError::new(
                    ErrorCode::ProducerFenced,
                    format!(
                        "producer {producer_id} epoch {producer_epoch}: its transaction here already ended (marker \
                         at epoch {last}); a late send of a finished transaction is refused"
                    ),
                ));
            }
        }
        match self.open.get(&producer_id) {
            Some(open) if open.producer_epoch == producer_epoch => Ok(()),
            Some(open) if open.producer_epoch > producer_epoch => Err(TxnError::new(
                ErrorCode::ProducerFenced,
                format!(
                    "producer {producer_id} epoch {producer_epoch} is older than its open transaction here (epoch \
                     {})",
                    open.producer_epoch
                ),
            )),
            Some(open) => Err(TxnError::new(
                ErrorCode::InvalidTxnState,
                format!(
                    "producer {producer_id} sends at epoch {producer_epoch} while its transaction of epoch {} is \
                     still open here (its marker is missing); retry once the coordinator has written it",
                    open.producer_epoch
                ),
            )),
            None => Ok(()),
        }
    }

    /// Whether `producer_id`'s transaction at `producer_epoch` is open here
    /// already: the partition leader then need not verify it again.
    pub fn is_open(&self, producer_id: u64, producer_epoch: i16) -> bool {
        self.open.get(&producer_id).is_some_and(|open| open.producer_epoch == producer_epoch)
    }

    /// Takes the coordinator's marker for `producer_id`'s transaction,
    /// written at `marker_offset` with `marker_epoch` (the epoch bumped to
    /// at the decision).
    pub fn on_marker(
        &mut self,
        producer_id: u64,
        marker_epoch: i16,
        decision: Decision,
        marker_offset: u64,
    ) -> Result<MarkerOutcome, TxnError> {
        if let Some(&last) = self.last_marker_epoch.get(&producer_id) {
            if marker_epoch == last {
                return Ok(MarkerOutcome::Repeated);
            }
            if marker_epoch < last {
                return Err(TxnError::new(
                    ErrorCode::InvalidTxnState,
                    format!(
                        "marker of producer {producer_id} at epoch {marker_epoch} is stale: its last marker here \
                         was at epoch {last}"
                    ),
                ));
            }
        }
        if let Some(open) = self.open.get(&producer_id) {
            if open.producer_epoch > marker_epoch {
                return Err(TxnError::new(
                    ErrorCode::InvalidTxnState,
                    format!(
                        "marker of producer {producer_id} at epoch {marker_epoch} is older than its open \
                         transaction (epoch {})",
                        open.producer_epoch
                    ),
                ));
            }
        }
        self.last_marker_epoch.insert(producer_id, marker_epoch);
        let Some(open) = self.open.remove(&producer_id) else {
            return Ok(MarkerOutcome::NothingOpen);
        };
        if decision == Decision::Abort {
            self.aborted.push(AbortedTxn { producer_id, first_offset: open.first_offset, marker_offset });
        }
        Ok(MarkerOutcome::Closed)
    }

    /// The last stable offset: read_committed readers stop below it.
    pub fn last_stable_offset(&self, high_watermark: u64) -> u64 {
        self.open.values().map(|t| t.first_offset).min().map_or(high_watermark, |first| first.min(high_watermark))
    }

    /// Where retention may delete up to (exclusive), asked for `wanted`:
    /// never at or past the LSO, so an open transaction keeps its records.
    pub fn retention_bound(&self, wanted: u64, high_watermark: u64) -> u64 {
        wanted.min(self.last_stable_offset(high_watermark))
    }

    /// Forgets aborted transactions wholly below `log_start_offset`.
    pub fn trim(&mut self, log_start_offset: u64) {
        self.aborted.retain(|a| a.marker_offset >= log_start_offset);
    }

    /// True when a read_committed reader may see the batch of `producer_id`
    /// at `base_offset`: not a control batch, below the LSO, and not part
    /// of an aborted transaction.
    pub fn visible(&self, producer_id: Option<u64>, base_offset: u64, is_control: bool, high_watermark: u64) -> bool {
        if is_control || base_offset >= self.last_stable_offset(high_watermark) {
            return false;
        }
        let Some(producer_id) = producer_id else { return true };
        !self
            .aborted
            .iter()
            .any(|a| a.producer_id == producer_id && a.first_offset <= base_offset && base_offset < a.marker_offset)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn an_open_transaction_holds_the_lso_and_a_commit_releases_it() {
        let mut p = PartitionTxns::default();
        assert_eq!(p.last_stable_offset(10), 10);
        p.on_data(7, 0, 10).unwrap();
        p.on_data(7, 0, 12).unwrap();
        assert_eq!(p.last_stable_offset(15), 10);
        assert!(!p.visible(Some(8), 11, false, 15), "past the LSO: not yet");
        assert!(p.visible(Some(8), 9, false, 15));
        assert_eq!(p.retention_bound(14, 15), 10, "retention stops at the LSO");
        assert_eq!(p.on_marker(7, 1, Decision::Commit, 15), Ok(MarkerOutcome::Closed));
        assert_eq!(p.last_stable_offset(16), 16);
        assert!(p.visible(Some(7), 10, false, 16) && !p.visible(Some(7), 15, true, 16), "data yes, the marker no");
    }

    #[test]
    fn aborted_records_stay_hidden_and_stale_markers_and_late_sends_are_refused() {
        let mut p = PartitionTxns::default();
        p.on_data(7, 0, 3).unwrap();
        p.on_data(8, 4, 4).unwrap();
        assert_eq!(p.on_marker(7, 1, Decision::Abort, 6), Ok(MarkerOutcome::Closed));
        assert_eq!(p.last_stable_offset(7), 4, "producer 8 still open");
        assert!(!p.visible(Some(7), 3, false, 7), "aborted");
        let before = p.clone();
        assert_eq!(p.on_marker(7, 1, Decision::Abort, 7), Ok(MarkerOutcome::Repeated), "a resumed coordinator");
        assert_eq!(p.on_marker(7, 0, Decision::Abort, 7).unwrap_err().code, ErrorCode::InvalidTxnState, "stale");
        assert_eq!(p.on_data(7, 0, 7).unwrap_err().code, ErrorCode::ProducerFenced, "a zombie's late send");
        assert_eq!(p.on_data(8, 3, 7).unwrap_err().code, ErrorCode::ProducerFenced, "older than the open one");
        assert_eq!(p.on_data(8, 5, 7).unwrap_err().code, ErrorCode::InvalidTxnState, "its marker is missing");
        assert_eq!(p.on_marker(8, 3, Decision::Commit, 7).unwrap_err().code, ErrorCode::InvalidTxnState);
        assert_eq!(p, before, "refusals change nothing");
        // The next transaction of producer 7 runs at the marker's epoch.
        p.on_data(7, 1, 7).unwrap();
        assert_eq!(p.on_marker(7, 2, Decision::Commit, 8), Ok(MarkerOutcome::Closed));
        assert!(!p.visible(Some(7), 7, false, 9), "committed, but past producer 8's open transaction");
        assert_eq!(p.on_marker(8, 5, Decision::Commit, 9), Ok(MarkerOutcome::Closed));
        assert!(p.visible(Some(7), 7, false, 10) && p.visible(Some(8), 4, false, 10));
        assert!(!p.visible(Some(7), 3, false, 10), "still aborted");
        p.trim(7);
        assert!(p.aborted.is_empty(), "the aborted transaction is wholly below the log start");
        assert_eq!(p.on_marker(9, 1, Decision::Abort, 9), Ok(MarkerOutcome::NothingOpen));
    }

    /// One step of a random interleaving: a producer (0..3) sends a record,
    /// or its transaction ends.
    #[derive(Clone, Debug)]
    enum Step {
        Send(u64),
        End(u64, Decision),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0u64..3).prop_map(Step::Send),
            1 => (0u64..3, prop::bool::ANY)
                .prop_map(|(p, c)| Step::End(p, if c { Decision::Commit } else { Decision::Abort })),
        ]
    }

    proptest! {
        /// A model of the log: what read_committed shows below the LSO is
        /// exactly the records of committed transactions there, never an
        /// aborted or open one's, and the LSO never passes an open
        /// transaction's first record.
        #[test]
        fn read_committed_sees_exactly_committed_records(steps in prop::collection::vec(step(), 1..120)) {
            let mut p = PartitionTxns::default();
            let mut epochs = [0i16; 3];
            // offset → (producer, is_control); and each producer's records of its open transaction.
            let mut log: Vec<(u64, bool)> = Vec::new();
            let mut pending: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
            let mut committed: BTreeSet<u64> = BTreeSet::new();
            for step in steps {
                let offset = log.len() as u64;
                match step {
                    Step::Send(producer) => {
                        p.on_data(producer, epochs[producer as usize], offset).unwrap();
                        log.push((producer, false));
                        pending.entry(producer).or_default().push(offset);
                    }
                    Step::End(producer, decision) => {
                        let epoch = epochs[producer as usize] + 1;
                        let outcome = p.on_marker(producer, epoch, decision, offset).unwrap();
                        let records = pending.remove(&producer).unwrap_or_default();
                        prop_assert_eq!(outcome == MarkerOutcome::Closed, !records.is_empty());
                        if decision == Decision::Commit {
                            committed.extend(records);
                        }
                        epochs[producer as usize] = epoch;
                        log.push((producer, true));
                    }
                }
                let high_watermark = log.len() as u64;
                let lso = p.last_stable_offset(high_watermark);
                let first_open = pending.values().filter_map(|r| r.first().copied()).min();
                prop_assert_eq!(lso, first_open.unwrap_or(high_watermark));
                for (offset, &(producer, control)) in log.iter().enumerate() {
                    let offset = offset as u64;
                    let shown = p.visible(Some(producer), offset, control, high_watermark);
                    prop_assert_eq!(shown, offset < lso && committed.contains(&offset), "offset {}", offset);
                }
            }
        }
    }
}
