//! Test-only faults in produce answers (feature `fault-hooks`): a committed
//! produce whose answer is lost or late, so tests can prove that a client's
//! retries never store a record twice. Without the feature this module
//! never injects anything, and the config refuses `[faults]`.

use std::sync::atomic::{AtomicU64, Ordering};
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
