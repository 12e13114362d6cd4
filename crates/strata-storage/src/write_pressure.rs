//! Whether the RocksDB work of a commit round may run right on the calling
//! task, without a thread hand-off.
//!
//! Every commit round makes a few short RocksDB calls on each replica (the
//! log append, the reads of the entries for replication and apply, the
//! commit-index write, the apply round). Each takes tens of microseconds
//! from the memtable. Run under `block_in_place`, each one also wakes a
//! blocking-pool thread to take over the worker's other tasks, and on two
//! shared cores those wake-ups cost more CPU than the calls themselves.
//!
//! A RocksDB write can block for long only when the engine holds writes
//! back: writes stopped or delayed (too many L0 files or pending compaction
//! bytes), or a memtable waiting to be flushed while the active one fills,
//! so that writes stop when it is full. Such conditions build up over many
//! writes, so a sample of them taken at most `RECHECK` ago decides: while
//! none holds, the work runs on the calling task; while any holds, it runs
//! under `block_in_place` and a stall cannot hold up the worker's other
//! tasks (heartbeats among them).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rocksdb::DB;

use crate::{COLUMN_FAMILIES, MEMTABLE_BYTES};

/// How old a sample of the engine's write conditions may be. A stop or
/// delay builds up over hundreds of milliseconds (L0 files and compaction
/// debt grow with every flush; a memtable fills in seconds at the rates one
/// node takes), so 20 ms sees one coming; a sample costs ten property reads
/// under RocksDB's DB mutex, about 50 per second per node at most.
const RECHECK: Duration = Duration::from_millis(20);

/// The engine's conditions that can make a write wait.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct WriteConditions {
    /// `rocksdb.is-write-stopped`.
    stopped: bool,
    /// `rocksdb.actual-delayed-write-rate`, 0 when writes are not delayed.
    delayed_rate: u64,
    /// Column families with a memtable waiting for its flush
    /// (`rocksdb.num-immutable-mem-table`) while the active one is at least
    /// half full (`rocksdb.cur-size-active-mem-table`): with
    /// `MAX_MEMTABLES`, writes stop when that one fills before the flush
    /// ends. Half a memtable (32 MiB) takes seconds to fill at the rates
    /// one node takes; an atomic flush writes at most one memtable per
    /// column family, about a second at the slowest disk measured here
    /// (229 MB/s).
    memtables_near_stop: u64,
}

impl WriteConditions {
    /// Whether a write now returns without waiting on the engine.
    fn write_cannot_wait(&self) -> bool {
        !self.stopped && self.delayed_rate == 0 && self.memtables_near_stop == 0
    }

    fn read(db: &DB) -> WriteConditions {
        let int = |name: &str| db.property_int_value(name).ok().flatten().unwrap_or(0);
        let mut conditions = WriteConditions {
            stopped: int("rocksdb.is-write-stopped") != 0,
            delayed_rate: int("rocksdb.actual-delayed-write-rate"),
            memtables_near_stop: 0,
        };
        for name in COLUMN_FAMILIES {
            if let Some(cf) = db.cf_handle(name) {
                // An unreadable property counts as near a stop: the safe side.
                let int = |property: &str| db.property_int_value_cf(&cf, property).ok().flatten();
                let waiting = int("rocksdb.num-immutable-mem-table").unwrap_or(1) > 0;
                let half_full =
                    int("rocksdb.cur-size-active-mem-table").is_none_or(|bytes| bytes >= MEMTABLE_BYTES as u64 / 2);
                conditions.memtables_near_stop += u64::from(waiting && half_full);
            }
        }
        conditions
    }
}

/// The latest sample of one store's write conditions.
pub(crate) struct WritePressure {
    start: Instant,
    /// When the sample was taken, in microseconds since `start`, plus one
    /// (0: never).
    sampled_at_us: AtomicU64,
    inline: AtomicBool,
}

impl WritePressure {
    pub(crate) fn new() -> WritePressure {
        WritePressure { start: Instant::now(), sampled_at_us: AtomicU64::new(0), inline: AtomicBool::new(false) }
    }

    /// Whether commit-round work may run on the calling task now; samples
    /// the engine first when the last sample is older than `RECHECK` (one
    /// caller samples, the others use the previous answer meanwhile).
    pub(crate) fn allows_inline(&self, db: &DB) -> bool {
        self.allows_inline_at(db, self.start.elapsed())
    }

    /// `allows_inline` at `elapsed` since this sampler was made.
    fn allows_inline_at(&self, db: &DB, elapsed: Duration) -> bool {
        let now_us = elapsed.as_micros() as u64 + 1;
        let sampled = self.sampled_at_us.load(Ordering::Acquire);
        let stale = sampled == 0 || now_us.saturating_sub(sampled) >= RECHECK.as_micros() as u64;
        if stale && self.sampled_at_us.compare_exchange(sampled, now_us, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            self.inline.store(WriteConditions::read(db).write_cannot_wait(), Ordering::Release);
        }
        self.inline.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_condition_that_can_make_a_write_wait_rules_out_inline_work() {
        assert!(WriteConditions::default().write_cannot_wait());
        assert!(!WriteConditions { stopped: true, ..Default::default() }.write_cannot_wait());
        assert!(!WriteConditions { delayed_rate: 16 << 20, ..Default::default() }.write_cannot_wait());
        assert!(!WriteConditions { memtables_near_stop: 1, ..Default::default() }.write_cannot_wait());
    }

    #[test]
    fn a_fresh_database_allows_inline_work_and_is_sampled_once_per_recheck() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = rocksdb::Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let db = DB::open_cf(&options, dir.path(), COLUMN_FAMILIES).unwrap();
        let pressure = WritePressure::new();
        let at = |ms: u64| Duration::from_millis(ms);
        assert!(pressure.allows_inline_at(&db, at(5)), "{:?}", WriteConditions::read(&db));
        // Within RECHECK of the sample its answer stands (here forced to
        // "no", as if the engine had been under pressure)...
        pressure.inline.store(false, Ordering::Release);
        assert!(!pressure.allows_inline_at(&db, at(5) + RECHECK - at(1)));
        // ...and once it is RECHECK old, the engine is sampled again.
        assert!(pressure.allows_inline_at(&db, at(5) + RECHECK));
    }
}
