//! Idempotent-producer state of one partition: for each producer id its
//! epoch and the sequence ranges and offsets of its last batches.
//!
//! Invariant: `by_last_seen` holds exactly one `(last_seen_ms, producer_id)`
//! pair per entry, so expiry finds the idlest producers without a scan.
//! Invariant: an entry holds at most [`PRODUCER_BATCHES_KEPT`] batches,
//! oldest first, with consecutive sequence ranges.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use strata_core::limits::{MAX_PRODUCERS_PER_PARTITION, PRODUCER_BATCHES_KEPT};

/// One stored (or fully deduplicated) batch of a producer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRecord {
    pub first_sequence: i32,
    pub last_sequence: i32,
    /// Offset of the first stored record; the partition's next offset when
    /// every record was a duplicate by idempotency key.
    pub base_offset: u64,
    /// Records stored (duplicates by idempotency key are not stored).
    pub record_count: u32,
    /// Records dropped as duplicates by idempotency key: (index in the
    /// batch as sent, offset of the original). Kept so that a retry of
    /// the batch gets exactly the first answer.
    pub duplicates: Vec<(u32, u64)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// Oldest first.
    pub batches: Vec<BatchRecord>,
    /// Partition clock when the producer last appended.
    pub last_seen_ms: u64,
}

impl ProducerEntry {
    pub fn last_sequence(&self) -> Option<i32> {
        self.batches.last().map(|b| b.last_sequence)
    }
}

/// Every producer's entry, with an index by idleness.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerTable {
    entries: BTreeMap<i64, ProducerEntry>,
    by_last_seen: BTreeSet<(u64, i64)>,
}

impl ProducerTable {
    pub fn from_entries(entries: impl IntoIterator<Item = (i64, ProducerEntry)>) -> ProducerTable {
        let mut table = ProducerTable::default();
        for (id, entry) in entries {
            table.put(id, entry);
        }
        table
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.entries.get(&producer_id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&i64, &ProducerEntry)> {
        self.entries.iter()
    }

    pub fn put(&mut self, producer_id: i64, entry: ProducerEntry) {
        if let Some(old) = self.entries.get(&producer_id) {
            self.by_last_seen.remove(&(old.last_seen_ms, producer_id));
        }
        self.by_last_seen.insert((entry.last_seen_ms, producer_id));
        self.entries.insert(producer_id, entry);
        debug_assert_eq!(self.entries.len(), self.by_last_seen.len());
    }

    fn remove(&mut self, producer_id: i64) -> Option<ProducerEntry> {
        let entry = self.entries.remove(&producer_id)?;
        self.by_last_seen.remove(&(entry.last_seen_ms, producer_id));
        Some(entry)
    }

    /// Removes producers idle since before `cutoff_ms`; returns their ids.
    pub fn expire(&mut self, cutoff_ms: u64) -> Vec<i64> {
        let mut gone = Vec::new();
        while let Some(&(last_seen, id)) = self.by_last_seen.first() {
            if last_seen >= cutoff_ms {
                break;
            }
            self.remove(id);
            gone.push(id);
        }
        gone
    }

    /// Makes room for one more producer by dropping the idlest when the
    /// table is full; returns the dropped id.
    pub fn make_room(&mut self) -> Option<i64> {
        if self.entries.len() < MAX_PRODUCERS_PER_PARTITION {
            return None;
        }
        let &(_, id) = self.by_last_seen.first()?;
        self.remove(id);
        Some(id)
    }

    /// Records an accepted batch of `producer_id` at `epoch`.
    pub fn record(&mut self, producer_id: i64, epoch: i16, batch: BatchRecord, now_ms: u64) -> &ProducerEntry {
        let mut entry = match self.remove(producer_id) {
            Some(entry) if entry.epoch == epoch => entry,
            _ => ProducerEntry { epoch, batches: Vec::new(), last_seen_ms: now_ms },
        };
        entry.batches.push(batch);
        if entry.batches.len() > PRODUCER_BATCHES_KEPT {
            entry.batches.remove(0);
        }
        entry.last_seen_ms = now_ms;
        self.put(producer_id, entry);
        &self.entries[&producer_id]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(first: i32, last: i32) -> BatchRecord {
        BatchRecord { first_sequence: first, last_sequence: last, base_offset: 0, record_count: 1, duplicates: vec![] }
    }

    #[test]
    fn keeps_the_last_batches_and_expires_the_idle() {
        let mut table = ProducerTable::default();
        for i in 0..8 {
            table.record(7, 0, batch(i, i), 100 + i as u64);
        }
        let entry = table.get(7).unwrap();
        assert_eq!(entry.batches.len(), PRODUCER_BATCHES_KEPT);
        assert_eq!(entry.batches[0].first_sequence, 8 - PRODUCER_BATCHES_KEPT as i32);
        table.record(9, 0, batch(0, 0), 500);
        assert_eq!(table.expire(108), vec![7]);
        assert_eq!(table.len(), 1);
        assert_eq!(table.expire(501), vec![9]);
        assert!(table.is_empty());
    }

    #[test]
    fn a_new_epoch_starts_a_fresh_entry() {
        let mut table = ProducerTable::default();
        table.record(1, 0, batch(0, 4), 1);
        let entry = table.record(1, 1, batch(0, 0), 2);
        assert_eq!(entry.epoch, 1);
        assert_eq!(entry.batches.len(), 1);
    }
}
