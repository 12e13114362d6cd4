//! Test-only faults (feature `fault-hooks`): a committed produce whose
//! answer is lost or late, so tests can prove that a client's retries never
//! store a record twice; and a wall clock set off by a fixed amount, so
//! tests can prove that one node's clock cannot expire keys or data early.
//! Without the feature this module never injects anything, and the config
//! refuses `[faults]`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::config::FaultConfig;

/// What to do with the answer of a committed produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerFault {
    /// Answer with a transport error instead, as if the answer was lost.
    Drop,
    /// Hold the answer this long first.
    Delay(Duration),
}

#[derive(Debug, Default)]
pub struct Faults {
    config: FaultConfig,
    committed: AtomicU64,
}

impl Faults {
    pub fn new(config: FaultConfig) -> Faults {
        Faults { config, committed: AtomicU64::new(0) }
    }

    /// Called once per committed produce; says whether to break its answer.
    pub fn after_commit(&self) -> Option<AnswerFault> {
        if !cfg!(feature = "fault-hooks") {
            return None;
        }
        let n = self.committed.fetch_add(1, Ordering::Relaxed) + 1;
        let every = |k: u64| k > 0 && n.is_multiple_of(k);
        if every(self.config.drop_produce_answer_every) {
            Some(AnswerFault::Drop)
        } else if every(self.config.delay_produce_answer_every) {
            Some(AnswerFault::Delay(Duration::from_millis(self.config.delay_produce_answer_ms)))
        } else {
            None
        }
    }
}

/// Whether the `hold_txn_markers_while` file of `config` exists now
/// (never without the feature).
pub fn txn_markers_held(config: &FaultConfig) -> bool {
    cfg!(feature = "fault-hooks")
        && config.hold_txn_markers_while.as_deref().is_some_and(|path| std::path::Path::new(path).exists())
}

/// The skew `clock_offset_ms` adds to this process's wall clock. A static:
/// a process runs one node, and every wall-clock reading of the server
/// (`node::local_wall_ms`) must see it, including free functions.
static CLOCK_OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// Sets the wall-clock skew of this process (ignored without the feature).
pub fn set_clock_offset_ms(offset_ms: i64) {
    if cfg!(feature = "fault-hooks") {
        CLOCK_OFFSET_MS.store(offset_ms, Ordering::Relaxed);
    }
}

/// The wall-clock skew of this process: 0 unless a test build set one.
pub fn clock_offset_ms() -> i64 {
    if cfg!(feature = "fault-hooks") {
        CLOCK_OFFSET_MS.load(Ordering::Relaxed)
    } else {
        0
    }
}

#[cfg(all(test, feature = "fault-hooks"))]
mod tests {
    use super::*;

    #[test]
    fn every_nth_answer_is_broken() {
        let faults = Faults::new(FaultConfig {
            drop_produce_answer_every: 3,
            delay_produce_answer_every: 2,
            delay_produce_answer_ms: 7,
            ..Default::default()
        });
        let seen: Vec<_> = (0..6).map(|_| faults.after_commit()).collect();
        let delay = Some(AnswerFault::Delay(Duration::from_millis(7)));
        assert_eq!(seen, vec![None, delay, Some(AnswerFault::Drop), delay, None, Some(AnswerFault::Drop)]);
    }
}
