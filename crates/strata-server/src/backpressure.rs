//! Bounds on the produce bytes a node holds at once, in total and per client
//! connection. A produce that does not fit is answered BUSY with a
//! retry-after hint at once, instead of queueing: memory stays bounded under
//! any load, and nothing already accepted is dropped (a BUSY produce was
//! never proposed).
//!
//! Fetch answers have a node-wide bound of their own ([`FetchBudget`]): a
//! fetch that does not fit whole is shortened to the room left, and
//! answered BUSY only when not even one full batch fits.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use strata_core::limits::MAX_BATCH_BYTES;

pub use strata_core::limits::BUSY_RETRY_AFTER_MS;

#[derive(Debug)]
pub struct ProduceBudget {
    max_total: usize,
    max_per_connection: usize,
    inner: Mutex<Usage>,
}

#[derive(Debug, Default)]
struct Usage {
    total: usize,
    /// Only connections with bytes in flight have an entry.
    per_connection: HashMap<Option<SocketAddr>, usize>,
}

/// Which bound a produce hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exceeded {
    Node { limit: usize },
    Connection { limit: usize },
}

/// Bytes held by one produce; released when dropped.
#[derive(Debug)]
pub struct Held {
    budget: Arc<ProduceBudget>,
    connection: Option<SocketAddr>,
    bytes: usize,
}

impl ProduceBudget {
    pub fn new(max_total: usize, max_per_connection: usize) -> Arc<ProduceBudget> {
        assert!(max_per_connection <= max_total, "the per-connection bound is part of the node bound");
        Arc::new(ProduceBudget { max_total, max_per_connection, inner: Mutex::new(Usage::default()) })
    }

    /// Takes `bytes` for a produce from `connection`, or says which bound
    /// is full. A produce on an idle connection of an idle node always fits
    /// (the bounds are at least one batch), so no request waits forever.
    pub fn try_hold(self: &Arc<Self>, connection: Option<SocketAddr>, bytes: usize) -> Result<Held, Exceeded> {
        let mut usage = self.inner.lock().expect("budget lock");
        let mine = usage.per_connection.get(&connection).copied().unwrap_or(0);
        if mine > 0 && mine + bytes > self.max_per_connection {
            return Err(Exceeded::Connection { limit: self.max_per_connection });
        }
        if usage.total > 0 && usage.total + bytes > self.max_total {
            return Err(Exceeded::Node { limit: self.max_total });
        }
        usage.total += bytes;
        *usage.per_connection.entry(connection).or_insert(0) += bytes;
        Ok(Held { budget: self.clone(), connection, bytes })
    }

    /// Bytes held now, in total.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.inner.lock().expect("budget lock").total
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut usage = self.budget.inner.lock().expect("budget lock");
        usage.total -= self.bytes;
        let mine = usage.per_connection.get_mut(&self.connection).expect("held bytes are counted");
        *mine -= self.bytes;
        if *mine == 0 {
            usage.per_connection.remove(&self.connection);
        }
    }
}

/// The fetch answer bytes one node holds at once. A fetch reserves room
/// before it reads and keeps what its answer really uses until the answer
/// is built.
///
/// A fetch that does not fit whole is shortened to the room that is left
/// rather than refused: a consumer then still makes progress while the
/// node is busy, and the bound holds. It must get room for at least one
/// full batch ([`MAX_BATCH_BYTES`]), because a fetch answer always carries
/// its first batch whole, whatever `max_bytes` says; with less room than
/// that it is answered BUSY.
#[derive(Debug)]
pub struct FetchBudget {
    max_total: usize,
    held: Mutex<usize>,
}

/// Room held by one fetch; released when dropped.
#[derive(Debug)]
pub struct FetchHeld {
    budget: Arc<FetchBudget>,
    bytes: usize,
}

impl FetchBudget {
    pub fn new(max_total: usize) -> Arc<FetchBudget> {
        assert!(max_total >= MAX_BATCH_BYTES, "the fetch bound must hold one full batch");
        Arc::new(FetchBudget { max_total, held: Mutex::new(0) })
    }

    pub fn limit(&self) -> usize {
        self.max_total
    }

    /// Room for a fetch of up to `max_bytes`: all it may need, or what is
    /// left when that is at least one batch. `None` when not even one batch
    /// fits. Read at most [`FetchHeld::bytes`] for the answer.
    pub fn try_hold(self: &Arc<Self>, max_bytes: usize) -> Option<FetchHeld> {
        // The answer is at most max_bytes, or one batch when the first
        // batch alone is larger.
        let need = max_bytes.max(MAX_BATCH_BYTES);
        let mut held = self.held.lock().expect("fetch budget lock");
        let free = self.max_total - *held;
        if free < MAX_BATCH_BYTES {
            return None;
        }
        let bytes = need.min(free);
        *held += bytes;
        Some(FetchHeld { budget: self.clone(), bytes })
    }

    /// Bytes held now, in total.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        *self.held.lock().expect("fetch budget lock")
    }
}

impl FetchHeld {
    /// The most bytes the answer may carry (at least one batch).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Gives back the room the answer did not use.
    pub fn shrink_to(&mut self, used: usize) {
        if used < self.bytes {
            *self.budget.held.lock().expect("fetch budget lock") -= self.bytes - used;
            self.bytes = used;
        }
    }
}

impl Drop for FetchHeld {
    fn drop(&mut self) {
        *self.budget.held.lock().expect("fetch budget lock") -= self.bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> Option<SocketAddr> {
        Some(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[test]
    fn bounds_hold_per_connection_and_per_node_and_release_on_drop() {
        let budget = ProduceBudget::new(100, 60);
        let a1 = budget.try_hold(addr(1), 50).unwrap();
        assert_eq!(budget.try_hold(addr(1), 20).unwrap_err(), Exceeded::Connection { limit: 60 });
        let b1 = budget.try_hold(addr(2), 40).unwrap();
        assert_eq!(budget.try_hold(addr(3), 20).unwrap_err(), Exceeded::Node { limit: 100 });
        assert_eq!(budget.held(), 90);
        drop(a1);
        let c1 = budget.try_hold(addr(3), 20).unwrap();
        drop((b1, c1));
        assert_eq!(budget.held(), 0);
        assert!(budget.inner.lock().unwrap().per_connection.is_empty());
    }

    #[test]
    fn one_request_larger_than_a_bound_still_fits_an_idle_node() {
        let budget = ProduceBudget::new(100, 60);
        let big = budget.try_hold(addr(1), 80).unwrap();
        assert!(budget.try_hold(addr(2), 30).is_err());
        drop(big);
        assert!(budget.try_hold(addr(2), 30).is_ok());
    }

    const MIB: usize = 1024 * 1024;

    #[test]
    fn fetches_are_shortened_to_the_room_left_then_refused() {
        let budget = FetchBudget::new(40 * MIB);
        let a = budget.try_hold(16 * MIB).unwrap();
        let b = budget.try_hold(16 * MIB).unwrap();
        assert_eq!((a.bytes(), b.bytes()), (16 * MIB, 16 * MIB));
        // 8 MiB left: the third fetch gets them, not its 16.
        let c = budget.try_hold(16 * MIB).unwrap();
        assert_eq!(c.bytes(), 8 * MIB);
        assert_eq!(budget.held(), 40 * MIB);
        // Nothing left: refused, and nothing was taken.
        assert!(budget.try_hold(MIB).is_none());
        assert_eq!(budget.held(), 40 * MIB);
        drop(c);
        // A small fetch reserves one batch: its first batch comes whole.
        let mut d = budget.try_hold(1000).unwrap();
        assert_eq!(d.bytes(), MAX_BATCH_BYTES);
        d.shrink_to(300);
        assert_eq!(budget.held(), 32 * MIB + 300);
        // Less than one batch left: refused even for a small fetch.
        let e = budget.try_hold(8 * MIB - 300).unwrap();
        assert_eq!(budget.held(), 40 * MIB);
        assert!(budget.try_hold(1).is_none());
        drop((a, b, d, e));
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn concurrent_fetches_never_hold_more_than_the_bound() {
        let budget = FetchBudget::new(8 * MIB);
        let peak = Arc::new(Mutex::new(0usize));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (budget, peak) = (budget.clone(), peak.clone());
                std::thread::spawn(move || {
                    let mut refused = 0;
                    for round in 0..2000 {
                        match budget.try_hold((i + round) % 5 * MIB) {
                            Some(mut held) => {
                                assert!(held.bytes() >= MAX_BATCH_BYTES);
                                let now = budget.held();
                                let mut p = peak.lock().unwrap();
                                *p = (*p).max(now);
                                drop(p);
                                held.shrink_to(held.bytes() / 2);
                            }
                            None => refused += 1,
                        }
                    }
                    refused
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(*peak.lock().unwrap() <= 8 * MIB);
        assert_eq!(budget.held(), 0);
    }
}
