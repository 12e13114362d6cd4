//! Proposal order for idempotent producers on a partition leader.
//!
//! A producer keeps up to 5 batches per partition in flight on one
//! connection, but the node handles each request on a task of its own, so a
//! batch can reach Raft before the one sent ahead of it. The partition would
//! then refuse it (OUT_OF_ORDER_SEQUENCE) and the client would send it again,
//! which costs a round trip and, under load, most of the pipelining. So a
//! leader holds a batch whose predecessor has not been proposed yet, for at
//! most [`REORDER_WAIT`], until the predecessor goes to Raft.
//!
//! This is only an ordering hint: the partition state machine still decides
//! what is a retry, a gap or a fenced epoch. Losing the hints (a new leader,
//! a full table) costs at most one wait per producer.

use std::collections::HashMap;
use std::sync::Mutex;

use strata_core::limits::{REORDER_WAIT, SEQUENCER_MAX_ENTRIES as MAX_ENTRIES};
use tokio::sync::Notify;

/// A producer on one partition: group id, producer id, epoch.
pub type ProducerKey = (u64, i64, i16);

#[derive(Default)]
pub struct Sequencer {
    /// The sequence after the last batch proposed, per producer key.
    next: Mutex<HashMap<ProducerKey, i32>>,
    proposed: Notify,
}

impl Sequencer {
    /// True when a batch starting at `sequence` may be proposed now: its
    /// predecessor was proposed, or it is a producer's first batch.
    fn ready(&self, key: ProducerKey, sequence: i32) -> bool {
        match self.next.lock().expect("sequencer lock").get(&key) {
            Some(next) => sequence <= *next,
            None => sequence == 0,
        }
    }

    /// Waits (at most `REORDER_WAIT`) until a batch starting at `sequence`
    /// is next in line.
    pub async fn wait_turn(&self, key: ProducerKey, sequence: i32) {
        let deadline = tokio::time::Instant::now() + REORDER_WAIT;
        loop {
            // Registered before the check, so a proposal in between wakes us.
            let proposed = self.proposed.notified();
            if self.ready(key, sequence) {
                return;
            }
            if tokio::time::timeout_at(deadline, proposed).await.is_err() {
                return;
            }
        }
    }

    /// A batch ending before `next_sequence` was handed to Raft.
    pub fn proposed(&self, key: ProducerKey, next_sequence: i32) {
        {
            let mut next = self.next.lock().expect("sequencer lock");
            if next.len() >= MAX_ENTRIES && !next.contains_key(&key) {
                next.clear();
            }
            let entry = next.entry(key).or_insert(next_sequence);
            // Sequences wrap to 0 after i32::MAX; a wrapped one is smaller.
            if next_sequence > *entry || next_sequence < *entry / 2 {
                *entry = next_sequence;
            }
        }
        self.proposed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn a_batch_waits_for_its_predecessor_to_be_proposed() {
        let sequencer = Arc::new(Sequencer::default());
        let key = (7, 1, 0);
        let waiter = {
            let sequencer = sequencer.clone();
            tokio::spawn(async move {
                let started = tokio::time::Instant::now();
                sequencer.wait_turn(key, 10).await;
                started.elapsed()
            })
        };
        tokio::task::yield_now().await;
        sequencer.proposed(key, 10);
        let waited = waiter.await.unwrap();
        assert!(waited < REORDER_WAIT, "woken by the proposal, not the deadline ({waited:?})");
        // First batches and retries never wait.
        assert!(sequencer.ready((7, 2, 0), 0));
        assert!(sequencer.ready(key, 3));
    }

    #[tokio::test]
    async fn a_missing_predecessor_costs_one_bounded_wait() {
        let sequencer = Sequencer::default();
        let started = tokio::time::Instant::now();
        sequencer.wait_turn((1, 1, 0), 500).await;
        assert!(started.elapsed() >= REORDER_WAIT);
    }
}
