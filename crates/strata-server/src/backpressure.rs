//! Bounds on the produce bytes a node holds at once, in total and per client
//! connection. A produce that does not fit is answered BUSY with a
//! retry-after hint at once, instead of queueing: memory stays bounded under
//! any load, and nothing already accepted is dropped (a BUSY produce was
//! never proposed).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// How long a client should wait after BUSY. About one group-commit round
/// under load: by then the answers in flight have released their bytes.
pub const BUSY_RETRY_AFTER_MS: u64 = 50;

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
}
