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
//! | `state_machine`  | group, 3, producer id        | postcard producer entry        |
//! | `state_machine`  | group, 4, key len, key, offset | expiry of an idempotency key |
//! | `state_machine`  | group, 5, expiry, offset, key | empty (keys by expiry)        |
//!
//! Invariant: a Raft append is reported durable (its `IOFlushed` completed)
//! only after an fsync of the WAL that covers it. One node-wide thread, the
//! group-commit task, makes the pending appends of all groups durable with a
//! single `FlushWAL(sync)`.
//! Invariant: votes are written with a synchronous write before the call
//! returns, so a vote is never answered before it is on disk.
//! Invariant: state-machine writes (applies and built snapshots) skip the
//! WAL, since the Raft log already holds what rebuilds them; the bytes of a
//! record batch reach the WAL once, in its log entry. They become durable
//! through memtable flushes, which are atomic across column families
//! (`atomic_flush`), so a crash leaves the applied state and the data it
//! describes at one consistent point, and openraft re-applies the log from
//! there. A group's log is purged only after a flush that covers the
//! applies being purged (see `purger`).
//! Boundary: RocksDB appears in this crate only; RocksDB calls and fsyncs run
//! on blocking threads, except the short calls made on every commit round,
//! which run on the calling task while the engine holds no write back (see
//! `commit_round_io` and `write_pressure`).

mod durable;
mod engine_stats;
mod group_commit;
mod keys;
mod log_store;
mod purger;
mod snapshot_stream;
mod sst_staging;
mod state_machine;
#[cfg(feature = "fault-hooks")]
pub mod synced_wal;
mod write_pressure;

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};

pub use engine_stats::EngineStats;
pub use group_commit::{GroupCommit, GroupCommitStats};
pub use log_store::LogStore;
pub use snapshot_stream::{SnapshotSink, SnapshotSource, StagedSnapshot, StreamError, StreamPart, Trailer};
pub use state_machine::{BatchInfo, GroupKind, GroupState, GroupStateMachine, PartitionReader, SnapshotPayload};

/// One idempotency key of a partition, as a snapshot carries it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyRow {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    pub offset: u64,
    pub expires_ms: u64,
}

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

/// Size of one memtable per column family: RocksDB's default, set here
/// because `write_pressure` reasons about how full the active one is.
pub(crate) const MEMTABLE_BYTES: usize = 64 << 20;

/// Memtables per column family, the active one included (RocksDB's
/// default): with one waiting for its flush, writes stop when the active one
/// fills.
pub(crate) const MAX_MEMTABLES: i32 = 2;

/// The node's store: a cheap handle shared by every group.
#[derive(Clone)]
pub struct Store {
    // Field order matters: the group-commit thread is joined before the
    // last reference to the database drops, so the database closes here.
    pub(crate) group_commit: GroupCommit,
    pub(crate) purger: purger::Purger,
    pub(crate) db: Arc<DB>,
    pub(crate) sequences: Arc<Sequences>,
    /// Test builds: where WAL syncs are recorded (see `synced_wal`).
    pub(crate) synced_wal: SyncRecord,
    /// The options the database was opened with; they hold its statistics.
    pub(crate) options: Arc<Options>,
    /// Expired-key cleanup held back for snapshot streams being sent.
    pub(crate) key_cleanup: Arc<snapshot_stream::KeyCleanup>,
    /// Per group: held while a snapshot stream is received and installed.
    pub(crate) staging_locks: Arc<std::sync::Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>>>>,
    /// The SST files snapshot streams stage their batches in.
    pub(crate) staging_files: Arc<sst_staging::StagingFiles>,
    /// Whether commit-round work may run without a thread hand-off.
    pub(crate) write_pressure: Arc<write_pressure::WritePressure>,
}

/// Sequence-number bounds of the two kinds of writes (every RocksDB write
/// gets sequence numbers, with or without the WAL).
#[derive(Default)]
pub(crate) struct Sequences {
    /// At or below the sequence number of the newest logged write: what a
    /// WAL sync is known to cover, for the durable-sequence marker.
    pub(crate) wal_floor: AtomicU64,
    /// At or above the sequence number of the newest unlogged write: a
    /// flush whose cut reaches it leaves nothing unlogged in memory.
    pub(crate) unlogged: AtomicU64,
}

/// Writes `batch` through the WAL (not synced: the group commit syncs).
pub(crate) fn write_logged(db: &DB, sequences: &Sequences, batch: WriteBatch) -> io::Result<()> {
    if batch.is_empty() {
        // An empty batch gets no sequence number, so it must not move the floor.
        return Ok(());
    }
    // The write gets numbers above every one published before it.
    let before = db.latest_sequence_number();
    db.write(batch).map_err(to_io)?;
    sequences.wal_floor.fetch_max(before + 1, Ordering::AcqRel);
    Ok(())
}

/// Writes `batch` without the WAL. Only for writes the Raft log can rebuild.
pub(crate) fn write_unlogged(db: &DB, sequences: &Sequences, batch: WriteBatch) -> io::Result<()> {
    let mut options = WriteOptions::default();
    options.disable_wal(true);
    db.write_opt(batch, &options).map_err(to_io)?;
    sequences.unlogged.fetch_max(db.latest_sequence_number(), Ordering::AcqRel);
    Ok(())
}

#[cfg(feature = "fault-hooks")]
pub(crate) type SyncRecord = Option<Arc<synced_wal::SyncedWal>>;
#[cfg(not(feature = "fault-hooks"))]
pub(crate) type SyncRecord = ();

/// Runs `sync` (a `FlushWAL(sync)`), then records the WAL length taken
/// before it as durable when a record is kept.
#[allow(clippy::let_unit_value, unused_variables)]
pub(crate) fn record_flush(record: &SyncRecord, sync: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
    #[cfg(feature = "fault-hooks")]
    let before = record.as_ref().and_then(|r| r.newest());
    sync()?;
    #[cfg(feature = "fault-hooks")]
    if let Some(record) = record {
        record.record(before);
    }
    Ok(())
}

/// Records the WAL length after a synchronous write when a record is kept.
#[allow(unused_variables)]
pub(crate) fn record_sync_write(record: &SyncRecord) {
    #[cfg(feature = "fault-hooks")]
    if let Some(record) = record {
        record.record(record.newest());
    }
}

impl Store {
    /// Opens (or creates) the store in `path`.
    pub fn open(path: &Path) -> io::Result<Store> {
        Store::open_inner(path, Default::default())
    }

    /// Opens the store and records every WAL sync in `path/SYNCED_WAL`, for
    /// fault injection that drops unsynced writes (test builds only).
    #[cfg(feature = "fault-hooks")]
    pub fn open_recording_syncs(path: &Path) -> io::Result<Store> {
        Store::open_inner(path, Some(Arc::new(synced_wal::SyncedWal::new(path))))
    }

    fn open_inner(path: &Path, synced_wal: SyncRecord) -> io::Result<Store> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        // Durability of logged writes comes from our own FlushWAL(sync)
        // calls; state-machine writes skip the WAL and are made durable by
        // flushes, which must then cover every column family at the same
        // point (see the crate docs).
        options.set_manual_wal_flush(false);
        options.set_atomic_flush(true);
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        options.increase_parallelism(2);
        // Tickers only (no histograms or timers, the costly part): the
        // bytes written to the WAL, by flushes and by compactions, which
        // is where write amplification comes from.
        options.enable_statistics();
        options.set_statistics_level(rocksdb::statistics::StatsLevel::ExceptHistogramOrTimers);
        let descriptors = COLUMN_FAMILIES.iter().map(|name| {
            let mut cf = Options::default();
            cf.set_compression_type(rocksdb::DBCompressionType::Lz4);
            cf.set_write_buffer_size(MEMTABLE_BYTES);
            cf.set_max_write_buffer_number(MAX_MEMTABLES);
            ColumnFamilyDescriptor::new(*name, cf)
        });
        let db = DB::open_cf_descriptors(&options, path, descriptors).map_err(to_io)?;
        let db = Arc::new(db);
        let marker = durable::DurableMarker::open(path, db.latest_sequence_number())?;
        let sequences = Arc::new(Sequences::default());
        let group_commit = GroupCommit::start(db.clone(), sequences.clone(), synced_wal.clone(), marker);
        let purger = purger::Purger::start(db.clone(), sequences.clone());
        let staging_files = Arc::new(sst_staging::StagingFiles::open(path)?);
        Ok(Store {
            group_commit,
            purger,
            db,
            sequences,
            synced_wal,
            options: Arc::new(options),
            key_cleanup: Arc::default(),
            staging_locks: Arc::default(),
            staging_files,
            write_pressure: Arc::new(write_pressure::WritePressure::new()),
        })
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
        // No queued purge may write the group's purge marker after this.
        self.purger.forget(group_id).await?;
        self.key_cleanup.forget(group_id);
        self.staging_locks.lock().expect("lock").remove(&group_id);
        self.staging_files.clear(group_id);
        let db = self.db.clone();
        let sequences = self.sequences.clone();
        let record = self.synced_wal.clone();
        blocking(move || {
            let mut batch = WriteBatch::default();
            let (start, end) = keys::group_range(group_id);
            for name in COLUMN_FAMILIES {
                let cf = db.cf_handle(name).expect("column family exists");
                batch.delete_range_cf(&cf, &start, &end);
            }
            write_logged(&db, &sequences, batch)?;
            record_flush(&record, || db.flush_wal(true).map_err(to_io))
        })
        .await
    }

    /// Group ids that have any row on this node, in any column family: Raft
    /// state, log, data or state-machine rows (to find leftovers of deleted
    /// groups, including rows a late apply or snapshot chunk wrote after
    /// `delete_group`). One seek per group and column family.
    pub async fn stored_groups(&self) -> io::Result<Vec<u64>> {
        let db = self.db.clone();
        blocking(move || {
            let mut groups = std::collections::BTreeSet::new();
            for name in COLUMN_FAMILIES {
                let cf = db.cf_handle(name).expect("column family exists");
                let mut iter = db.raw_iterator_cf(&cf);
                iter.seek_to_first();
                while let Some(key) = iter.key() {
                    let group = keys::group_of(key);
                    groups.insert(group);
                    // Jump to the next group.
                    match group.checked_add(1) {
                        Some(next) => iter.seek(keys::group_range(next).0),
                        None => break,
                    }
                }
                iter.status().map_err(to_io)?;
            }
            Ok(groups.into_iter().collect())
        })
        .await
    }

    /// Idempotency keys of a partition for a snapshot: rows stored below
    /// `below_offset` (the snapshot's next offset) and expiring after
    /// `after_ms` (its clock), from `cursor` on (the cursor the previous
    /// call returned; empty to start), about `max_bytes` at most. Returns the
    /// rows and the cursor for the next call, `None` at the end.
    pub(crate) async fn read_snapshot_keys(
        &self,
        group_id: u64,
        cursor: Vec<u8>,
        below_offset: u64,
        after_ms: u64,
        max_bytes: usize,
    ) -> io::Result<(Vec<KeyRow>, Option<Vec<u8>>)> {
        let db = self.db.clone();
        blocking(move || {
            let cf = db.cf_handle(CF_SM).expect("column family exists");
            let prefix = keys::tag_key(group_id, keys::TAG_KEY);
            let mut iter = db.raw_iterator_cf(&cf);
            // The cursor is the first row not yet returned.
            if cursor.is_empty() {
                iter.seek(prefix);
            } else {
                iter.seek(&cursor);
            }
            let (mut rows, mut bytes) = (Vec::new(), 0);
            while let (Some(row), Some(value)) = (iter.key(), iter.value()) {
                if !row.starts_with(&prefix) {
                    iter.status().map_err(to_io)?;
                    return Ok((rows, None));
                }
                if bytes >= max_bytes {
                    return Ok((rows, Some(row.to_vec())));
                }
                let (key, offset) = keys::parse_idempotency_key(row)
                    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "corrupt key-index row"))?;
                let expires_ms = u64::from_be_bytes(
                    value.try_into().map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "corrupt key expiry"))?,
                );
                if offset < below_offset && expires_ms > after_ms {
                    bytes += key.len() + 16;
                    rows.push(KeyRow { key: key.to_vec(), offset, expires_ms });
                }
                iter.next();
            }
            iter.status().map_err(to_io)?;
            Ok((rows, None))
        })
        .await
    }

    /// How many idempotency keys a partition holds on this node, from the
    /// count kept in step with the key index (a point read).
    pub async fn idempotency_key_count(&self, group_id: u64) -> io::Result<u64> {
        let db = self.db.clone();
        blocking(move || {
            let cf = db.cf_handle(CF_SM).expect("column family exists");
            match db.get_pinned_cf(&cf, keys::tag_key(group_id, keys::TAG_KEY_COUNT)).map_err(to_io)? {
                Some(value) => Ok(u64::from_be_bytes(
                    value
                        .as_ref()
                        .try_into()
                        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "corrupt key count"))?,
                )),
                None => Ok(0),
            }
        })
        .await
    }

    /// Counts the idempotency keys a partition holds on this node (a scan:
    /// for tests, to check `idempotency_key_count` against).
    pub async fn count_idempotency_keys(&self, group_id: u64) -> io::Result<u64> {
        let db = self.db.clone();
        blocking(move || {
            let cf = db.cf_handle(CF_SM).expect("column family exists");
            let prefix = keys::tag_key(group_id, keys::TAG_KEY);
            let mut iter = db.raw_iterator_cf(&cf);
            iter.seek(prefix);
            let mut count = 0;
            while iter.key().is_some_and(|row| row.starts_with(&prefix)) {
                count += 1;
                iter.next();
            }
            iter.status().map_err(to_io)?;
            Ok(count)
        })
        .await
    }

    /// An unsynced write of a raw key (under the last group id, which no
    /// group uses), for tests of the fault hooks.
    #[cfg(feature = "fault-hooks")]
    pub async fn put_for_test(&self, key: &[u8], value: &[u8]) -> io::Result<()> {
        let (db, sequences, key, value) = (self.db.clone(), self.sequences.clone(), test_key(key), value.to_vec());
        blocking(move || {
            let mut batch = WriteBatch::default();
            batch.put_cf(&db.cf_handle(CF_SM).expect("column family exists"), key, value);
            write_logged(&db, &sequences, batch)
        })
        .await
    }

    /// The first half of an install (staged rows moved in, the state not
    /// yet written), so tests can copy the store as a crash would leave it.
    #[cfg(feature = "fault-hooks")]
    pub async fn move_staged_for_test(&self, group_id: u64) -> io::Result<()> {
        let (db, sequences, record) = (self.db.clone(), self.sequences.clone(), self.synced_wal.clone());
        let file = self.staging_files.take(group_id);
        blocking(move || snapshot_stream::move_staged(&db, &sequences, &record, group_id, file)).await
    }

    /// Makes every apply so far durable (a flush of the state-machine
    /// column families), so a copy of the store keeps them.
    #[cfg(feature = "fault-hooks")]
    pub async fn flush_for_test(&self) -> io::Result<()> {
        let db = self.db.clone();
        blocking(move || purger::flush_state_machines(&db).map(drop)).await
    }

    #[cfg(feature = "fault-hooks")]
    pub async fn get_for_test(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let (db, key) = (self.db.clone(), test_key(key));
        blocking(move || db.get_cf(&db.cf_handle(CF_SM).expect("column family exists"), key).map_err(to_io)).await
    }

    /// Waits until every logged write made before the call is durable.
    /// State-machine writes are not covered (the Raft log rebuilds them).
    pub async fn sync(&self) -> io::Result<()> {
        self.group_commit.sync().await
    }

    /// Counters of the group-commit task.
    pub fn group_commit_stats(&self) -> GroupCommitStats {
        self.group_commit.stats()
    }

    /// This store's id, and whether it was made now: the id stored at
    /// creation, or `new_id` written (synced) when the store has none,
    /// i.e. it is new or its data was lost. It lives in the default column
    /// family, outside every group's key range, so it goes with the data:
    /// a node whose data dir is emptied gets a new id, and the cluster
    /// knows it lost what it held (strata-state's `members`).
    pub async fn identity(&self, new_id: u64) -> io::Result<(u64, bool)> {
        let db = self.db.clone();
        blocking(move || {
            if let Some(stored) = db.get(STORE_ID_KEY).map_err(to_io)? {
                let bytes: [u8; 8] = stored
                    .as_slice()
                    .try_into()
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "store id is not 8 bytes"))?;
                return Ok((u64::from_be_bytes(bytes), false));
            }
            let mut options = rocksdb::WriteOptions::default();
            options.set_sync(true);
            db.put_opt(STORE_ID_KEY, new_id.to_be_bytes(), &options).map_err(to_io)?;
            Ok((new_id, true))
        })
        .await
    }
}

/// The default column family's key of the store id (see `Store::identity`).
const STORE_ID_KEY: &[u8] = b"strata/store-id";

#[cfg(feature = "fault-hooks")]
fn test_key(key: &[u8]) -> Vec<u8> {
    let mut out = u64::MAX.to_be_bytes().to_vec();
    out.extend_from_slice(key);
    out
}

pub(crate) fn to_io(err: rocksdb::Error) -> io::Error {
    io::Error::other(err.into_string())
}

/// postcard's encoding of `value`, written once into a buffer of its exact
/// size. `postcard::to_allocvec` grows its buffer by doubling, which on the
/// write path copied each byte of a 1 MiB record batch about once more
/// (a log append, an AppendEntries to a peer).
pub fn encode_sized<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    let size = postcard::experimental::serialized_size(value)?;
    postcard::to_io(value, Vec::with_capacity(size))
}

pub(crate) fn decode_error(what: &str, err: postcard::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("corrupt {what}: {err}"))
}

/// Runs short RocksDB work made on every commit round (a log append, the
/// read of entries for replication and apply, the commit-index write, an
/// apply round) on the calling task.
///
/// While the engine holds no write back (see `write_pressure`), the work
/// runs right here: tens of microseconds from the memtable, cheaper than
/// waking another thread. Otherwise, on a multi-threaded runtime, the
/// worker is marked as blocking for the call (`block_in_place`), so its
/// other tasks move to another thread and a RocksDB write stall never holds
/// them up; that hand-off wakes a blocking-pool thread, where the blocking
/// pool itself (the fallback on a current-thread runtime) would cost two.
pub(crate) async fn commit_round_io<T, F>(store: &Store, work: F) -> io::Result<T>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    if store.write_pressure.allows_inline(&store.db) {
        return work();
    }
    if tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
        tokio::task::block_in_place(work)
    } else {
        blocking(work).await
    }
}

/// Runs RocksDB work on the blocking pool, off the executor's workers.
pub(crate) async fn blocking<T, F>(work: F) -> io::Result<T>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work).await.map_err(|e| io::Error::other(format!("storage task failed: {e}")))?
}
