//! The wall clock, read in one place.
//!
//! State machines never call this: the time they need comes in the commands
//! they apply, so replicas decide alike (tests/repository_rules_hold.rs
//! checks that strata-state reads no clock).

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch by this machine's wall clock; 0 for a
/// clock set before 1970.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_a_time_after_this_code_was_written() {
        // 2026-01-01T00:00:00Z: a clock behind it is wrong, not early.
        assert!(super::now_ms() > 1_767_225_600_000);
    }
}
