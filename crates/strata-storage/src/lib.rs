//! The node store: one RocksDB per node holding the Raft log, votes and
//! applied state of every Raft group the node hosts.
//!
//! Layout: four column families, every key prefixed by the group id
//! (big-endian, so one group's keys are contiguous and ordered):
//!
//! | column family    | key                          | value                          |
//! |------------------|------------------------------|--------------------------------|
//! | `raft_log`       | group, log index             | postcard `Entry`               |
//! | `raft_state`     | group, tag (vote, committed, purged) | postcard value          |
//! | `partition_data` | group, base offset           | record batch (RecordBatch v2)  |
//! | `state_machine`  | group, tag (applied, snapshot) | postcard applied state       |
//!
//! Invariant: a Raft append is reported durable (its `IOFlushed` completed)
//! only after an fsync of the WAL that covers it. One node-wide thread, the
//! group-commit task, makes the pending appends of all groups durable with a
//! single `FlushWAL(sync)`.
//! Invariant: votes are written with a synchronous write before the call
//! returns, so a vote is never answered before it is on disk.
//! Boundary: RocksDB appears in this crate only; RocksDB calls and fsyncs run
//! on blocking threads, never on the async executor's workers.

mod engine_stats;
mod group_commit;
mod keys;
mod log_store;
mod state_machine;

use std::io;
use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, DB};

pub use engine_stats::EngineStats;
pub use group_commit::{GroupCommit, GroupCommitStats};
pub use log_store::LogStore;
pub use state_machine::{BatchInfo, GroupKind, GroupState, GroupStateMachine, PartitionReader};

openraft::declare_raft_types!(
    /// The one Raft type configuration of Strata: every group, metadata and
    /// partition alike, uses it so one transport carries them all.
    pub TypeConfig:
        D = strata_state::Command,
        R = strata_state::Response,
        NodeId = u64,
        Node = openraft::BasicNode,
);

pub(crate) const CF_LOG: &str = "raft_log";
pub(crate) const CF_RAFT: &str = "raft_state";
pub(crate) const CF_DATA: &str = "partition_data";
pub(crate) const CF_SM: &str = "state_machine";
const COLUMN_FAMILIES: [&str; 4] = [CF_LOG, CF_RAFT, CF_DATA, CF_SM];

/// The node's store: a cheap handle shared by every group.
#[derive(Clone)]
pub struct Store {
    // Field order matters: the group-commit thread is joined before the
    // last reference to the database drops, so the database closes here.
    pub(crate) group_commit: GroupCommit,
    pub(crate) db: Arc<DB>,
}

impl Store {
    /// Opens (or creates) the store in `path`.
    pub fn open(path: &Path) -> io::Result<Store> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        // Durability comes from our own FlushWAL(sync) calls; the WAL itself
        // is never disabled.
        options.set_manual_wal_flush(false);
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        options.increase_parallelism(2);
        let descriptors = COLUMN_FAMILIES.iter().map(|name| {
            let mut cf = Options::default();
            cf.set_compression_type(rocksdb::DBCompressionType::Lz4);
            ColumnFamilyDescriptor::new(*name, cf)
        });
        let db = DB::open_cf_descriptors(&options, path, descriptors).map_err(to_io)?;
        let db = Arc::new(db);
        let group_commit = GroupCommit::start(db.clone());
        Ok(Store { group_commit, db })
    }

    /// The Raft log storage of one group.
    pub fn log_store(&self, group_id: u64) -> LogStore {
        LogStore::new(self.clone(), group_id)
    }

    /// Opens the state machine of one group, loading its applied state.
    pub async fn state_machine(&self, group_id: u64, kind: GroupKind) -> io::Result<GroupStateMachine> {
        GroupStateMachine::open(self.clone(), group_id, kind).await
    }

    /// Reads the committed record batches of a partition group.
    pub fn partition_reader(&self, group_id: u64) -> PartitionReader {
        PartitionReader::new(self.clone(), group_id)
    }

    /// Removes every key of a group: log, votes, data and state. Used when a
    /// topic is deleted or a replica moves away; the group's Raft must be shut
    /// down first.
    pub async fn delete_group(&self, group_id: u64) -> io::Result<()> {
        let db = self.db.clone();
        blocking(move || {
            let mut batch = WriteBatch::default();
            let (start, end) = keys::group_range(group_id);
            for name in COLUMN_FAMILIES {
                let cf = db.cf_handle(name).expect("column family exists");
                batch.delete_range_cf(&cf, &start, &end);
            }
            db.write(batch).map_err(to_io)?;
            db.flush_wal(true).map_err(to_io)
        })
        .await
    }

    /// Group ids that have any Raft state on this node (to find leftovers of
    /// deleted topics at start-up).
    pub async fn stored_groups(&self) -> io::Result<Vec<u64>> {
        let db = self.db.clone();
        blocking(move || {
            let cf = db.cf_handle(CF_RAFT).expect("column family exists");
            let mut groups = Vec::new();
            let mut iter = db.raw_iterator_cf(&cf);
            iter.seek_to_first();
            while let Some(key) = iter.key() {
                let group = keys::group_of(key);
                groups.push(group);
                // Jump to the next group.
                match group.checked_add(1) {
                    Some(next) => iter.seek(keys::group_range(next).0),
                    None => break,
                }
            }
            iter.status().map_err(to_io)?;
            Ok(groups)
        })
        .await
    }

    /// Writes record batches received in a partition snapshot. Each batch
    /// goes under its own base offset. Safe to do before the snapshot is
    /// installed: committed batches are identical on every replica, so a
    /// batch written here either is already present or will be written with
    /// the same bytes by a later apply.
    pub async fn write_snapshot_batches(&self, group_id: u64, batches: Vec<u8>) -> io::Result<()> {
        let db = self.db.clone();
        blocking(move || {
            let cf = db.cf_handle(CF_DATA).expect("column family exists");
            let mut write = WriteBatch::default();
            for item in strata_record::BatchIter::new(&batches) {
                let (header, bytes) = item.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                write.put_cf(&cf, keys::data_key(group_id, header.base_offset), bytes);
            }
            db.write(write).map_err(to_io)
        })
        .await
    }

    /// Waits until every write made before the call is durable.
    pub async fn sync(&self) -> io::Result<()> {
        self.group_commit.sync().await
    }

    /// Counters of the group-commit task.
    pub fn group_commit_stats(&self) -> GroupCommitStats {
        self.group_commit.stats()
    }
}

pub(crate) fn to_io(err: rocksdb::Error) -> io::Error {
    io::Error::other(err.into_string())
}

pub(crate) fn decode_error(what: &str, err: postcard::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("corrupt {what}: {err}"))
}

/// Runs RocksDB work on the blocking pool, off the executor's workers.
pub(crate) async fn blocking<T, F>(work: F) -> io::Result<T>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work).await.map_err(|e| io::Error::other(format!("storage task failed: {e}")))?
}
