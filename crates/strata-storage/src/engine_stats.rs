//! Figures of the RocksDB engine and the group-commit task, read on demand
//! for the node's metrics endpoint.
//!
//! Only DB properties are read: no statistics object is enabled (that would
//! change the engine's options and cost on every operation).

use strata_core::metrics::HistogramSnapshot;

use rocksdb::statistics::Ticker;

use crate::{blocking, Store, COLUMN_FAMILIES};

/// A sample of the engine's state. Gauges unless named `_total`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EngineStats {
    /// Writes are stopped right now (too many L0 files or memtables).
    pub write_stopped: bool,
    /// Rate writes are delayed to, in bytes per second; 0 when not delayed.
    pub delayed_write_rate_bytes: u64,
    /// Time writes have stalled since the database opened, from
    /// `rocksdb.dbstats` ("Cumulative stall"); `None` if it cannot be read.
    pub stall_seconds_total: Option<f64>,
    /// Compactions running now, and whether one is pending, over all column families.
    pub running_compactions: u64,
    pub compaction_pending: u64,
    /// Bytes compaction estimates it must rewrite to reach its targets.
    pub pending_compaction_bytes: u64,
    pub running_flushes: u64,
    /// Per column family: (name, memtable bytes, SST bytes on disk).
    pub column_families: Vec<(&'static str, u64, u64)>,
    /// Bytes RocksDB wrote since the store opened: to the WAL, by memtable
    /// flushes and by compactions.
    pub wal_bytes: u64,
    pub flush_bytes: u64,
    pub compaction_bytes: u64,
}

/// Seconds in a "Cumulative stall: 00:00:1.234 H:M:S" line of `rocksdb.dbstats`.
fn parse_cumulative_stall(dbstats: &str) -> Option<f64> {
    let line = dbstats.lines().find(|l| l.trim_start().starts_with("Cumulative stall:"))?;
    let clock = line.split(':').skip(1).collect::<Vec<_>>().join(":");
    let clock = clock.split_whitespace().next()?;
    let mut parts = clock.split(':');
    let hours: f64 = parts.next()?.parse().ok()?;
    let minutes: f64 = parts.next()?.parse().ok()?;
    let seconds: f64 = parts.next()?.parse().ok()?;
    Some(hours * 3600.0 + minutes * 60.0 + seconds)
}

impl Store {
    /// Reads the engine's properties (on the blocking pool: these are
    /// RocksDB calls).
    pub async fn engine_stats(&self) -> std::io::Result<EngineStats> {
        let db = self.db.clone();
        let options = self.options.clone();
        blocking(move || {
            let int = |name: &str| db.property_int_value(name).ok().flatten().unwrap_or(0);
            let mut stats = EngineStats {
                wal_bytes: options.get_ticker_count(Ticker::WalFileBytes),
                flush_bytes: options.get_ticker_count(Ticker::FlushWriteBytes),
                compaction_bytes: options.get_ticker_count(Ticker::CompactWriteBytes),
                write_stopped: int("rocksdb.is-write-stopped") != 0,
                delayed_write_rate_bytes: int("rocksdb.actual-delayed-write-rate"),
                stall_seconds_total: db
                    .property_value("rocksdb.dbstats")
                    .ok()
                    .flatten()
                    .and_then(|text| parse_cumulative_stall(&text)),
                ..Default::default()
            };
            for name in COLUMN_FAMILIES {
                let cf = db.cf_handle(name).expect("column family exists");
                let int = |property: &str| db.property_int_value_cf(&cf, property).ok().flatten().unwrap_or(0);
                stats.running_compactions += int("rocksdb.num-running-compactions");
                stats.compaction_pending += int("rocksdb.compaction-pending");
                stats.pending_compaction_bytes += int("rocksdb.estimate-pending-compaction-bytes");
                stats.running_flushes += int("rocksdb.num-running-flushes");
                stats.column_families.push((
                    name,
                    int("rocksdb.cur-size-all-mem-tables"),
                    int("rocksdb.total-sst-files-size"),
                ));
            }
            Ok(stats)
        })
        .await
    }

    /// Histograms of the group-commit task: fsync latency (µs) and waiters per fsync.
    pub fn group_commit_histograms(&self) -> (HistogramSnapshot, HistogramSnapshot) {
        self.group_commit.histograms()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cumulative_stall_is_read_from_dbstats() {
        let text = "** DB Stats **\nUptime(secs): 5.0 total, 5.0 interval\nCumulative stall: 00:01:2.500 H:M:S, 0.0 percent\nInterval stall: 00:00:0.000 H:M:S, 0.0 percent\n";
        assert_eq!(parse_cumulative_stall(text), Some(62.5));
        assert_eq!(parse_cumulative_stall("no such line"), None);
    }

    #[tokio::test]
    async fn a_fresh_store_reports_its_column_families() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.sync().await.unwrap();
        let stats = store.engine_stats().await.unwrap();
        assert_eq!(stats.column_families.len(), COLUMN_FAMILIES.len());
        assert!(!stats.write_stopped);
        assert_eq!(stats.stall_seconds_total, Some(0.0), "{stats:?}");
        let (latency, batch) = store.group_commit_histograms();
        assert_eq!(latency.count, 1, "the sync above was one fsync");
        assert_eq!(batch.sum, 1);
    }
}
