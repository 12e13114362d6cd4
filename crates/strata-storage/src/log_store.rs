//! openraft's log storage over the node's RocksDB, for one group.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Weak};

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::type_config::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::{LogState, OptionalSend, RaftLogReader};
use rocksdb::{WriteBatch, WriteOptions};
use strata_core::limits::MAX_APPEND_ENTRIES_BYTES;

use crate::group_commit::Waiter;
use crate::keys::{self, TAG_COMMITTED, TAG_PURGED, TAG_VOTE};
use crate::{blocking, decode_error, to_io, Store, TypeConfig, CF_LOG, CF_RAFT};

#[derive(Clone)]
pub struct LogStore {
    store: Store,
    group_id: u64,
    /// Held by this log store, its readers and its writes that may outlive
    /// the call that began them (see `Store::delete_group`'s caller).
    alive: Arc<()>,
}

impl LogStore {
    pub(crate) fn new(store: Store, group_id: u64) -> LogStore {
        LogStore { store, group_id, alive: Arc::new(()) }
    }

    /// Dead once this log store, its readers and their pending writes are
    /// all gone: after that nothing of this instance writes the group's rows.
    pub fn liveness(&self) -> Weak<()> {
        Arc::downgrade(&self.alive)
    }

    /// Entries from `start` up to `end` (exclusive; None: the last),
    /// stopping before the entry that would take their stored bytes past
    /// `byte_budget`; the first entry is read whatever its size.
    async fn read_entries(
        &self,
        start: u64,
        end: Option<u64>,
        byte_budget: usize,
    ) -> Result<Vec<EntryOf<TypeConfig>>, io::Error> {
        let db = self.store.db.clone();
        let group_id = self.group_id;
        // In place: replication and apply read the entries just appended,
        // from the memtable, on every round; the blocking pool would add two
        // thread hand-offs to each.
        crate::commit_round_io(&self.store, move || {
            let cf = db.cf_handle(CF_LOG).expect("column family exists");
            let mut entries = Vec::new();
            let mut bytes = 0usize;
            let mut iter = db.raw_iterator_cf(&cf);
            iter.seek(keys::log_key(group_id, start));
            while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
                if keys::group_of(key) != group_id {
                    break;
                }
                let index = keys::second_of(key);
                if end.is_some_and(|end| index >= end) {
                    break;
                }
                bytes = bytes.saturating_add(value.len());
                if bytes > byte_budget && !entries.is_empty() {
                    break;
                }
                let entry: EntryOf<TypeConfig> =
                    postcard::from_bytes(value).map_err(|e| decode_error("log entry", e))?;
                debug_assert_eq!(entry.index(), index);
                entries.push(entry);
                iter.next();
            }
            iter.status().map_err(to_io)?;
            Ok(entries)
        })
        .await
    }

    async fn read_tag<T>(&self, tag: u8, what: &'static str) -> io::Result<Option<T>>
    where
        T: serde::de::DeserializeOwned + Send + 'static,
    {
        let db = self.store.db.clone();
        let key = keys::tag_key(self.group_id, tag);
        blocking(move || {
            let cf = db.cf_handle(CF_RAFT).expect("column family exists");
            match db.get_pinned_cf(&cf, key).map_err(to_io)? {
                Some(bytes) => postcard::from_bytes(&bytes).map(Some).map_err(|e| decode_error(what, e)),
                None => Ok(None),
            }
        })
        .await
    }
}

fn bounds<RB: RangeBounds<u64>>(range: &RB) -> (u64, Option<u64>) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s + 1,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.checked_add(1),
        Bound::Excluded(&e) => Some(e),
        Bound::Unbounded => None,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<EntryOf<TypeConfig>>, io::Error> {
        let (start, end) = bounds(&range);
        self.read_entries(start, end, usize::MAX).await
    }

    /// Replication asks for up to `max_payload_entries` (300) entries per
    /// message, which for full batches is 300 MiB, while the transport
    /// sends at most MAX_APPEND_ENTRIES_BYTES of them: reading the whole
    /// range made every message of a catch-up read and decode up to 75
    /// times what it sent. This reads up to that many bytes of entries
    /// (at least one), and openraft goes on from the last one.
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<EntryOf<TypeConfig>>, io::Error> {
        self.read_entries(start, Some(end), MAX_APPEND_ENTRIES_BYTES).await
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<TypeConfig>>, io::Error> {
        self.read_tag(TAG_VOTE, "vote").await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        // A purge still queued behind a flush counts: its entries are gone
        // for openraft, though still stored (a crash would bring them back
        // together with the stored purge mark, a consistent state too).
        // Asked before the stored mark is read: a purge written in between
        // then shows in the mark.
        let queued = self.store.purger.queued(self.group_id).await?;
        let last_purged: Option<LogIdOf<TypeConfig>> = self.read_tag(TAG_PURGED, "purged log id").await?;
        let db = self.store.db.clone();
        let group_id = self.group_id;
        // Entries at or below the stored snapshot count as purged too: a
        // snapshot install's purge waits behind a flush like any other, and
        // a crash before it would otherwise leave a hole between the old
        // purge mark and the entries appended after the snapshot, which
        // openraft cannot start from.
        let (last_in_log, snapshot) = blocking(move || {
            let snapshot = crate::state_machine::stored_snapshot_log_id(&db, group_id)?;
            let cf = db.cf_handle(CF_LOG).expect("column family exists");
            let mut iter = db.raw_iterator_cf(&cf);
            iter.seek_for_prev(keys::log_key(group_id, u64::MAX));
            let found = match (iter.key(), iter.value()) {
                (Some(key), Some(value)) if keys::group_of(key) == group_id => {
                    let entry: EntryOf<TypeConfig> =
                        postcard::from_bytes(value).map_err(|e| decode_error("log entry", e))?;
                    Some(entry.log_id())
                }
                _ => None,
            };
            iter.status().map_err(to_io)?;
            Ok((found, snapshot))
        })
        .await?;
        let last_purged = [last_purged, queued, snapshot].into_iter().flatten().max_by_key(|id| id.index());
        // Entries a queued purge covers may still be stored; the last log id
        // is never below the purge mark.
        let last_log_id = [last_in_log, last_purged].into_iter().flatten().max_by_key(|id| id.index());
        Ok(LogState { last_purged_log_id: last_purged, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<TypeConfig>) -> Result<(), io::Error> {
        let bytes = postcard::to_allocvec(vote).map_err(|e| io::Error::other(e.to_string()))?;
        let db = self.store.db.clone();
        let record = self.store.synced_wal.clone();
        let key = keys::tag_key(self.group_id, TAG_VOTE);
        let alive = self.alive.clone();
        blocking(move || {
            let _alive = alive;
            let cf = db.cf_handle(CF_RAFT).expect("column family exists");
            let mut options = WriteOptions::default();
            // A vote must be on disk before it is answered.
            options.set_sync(true);
            db.put_cf_opt(&cf, key, bytes, &options).map_err(to_io)?;
            crate::record_sync_write(&record);
            Ok(())
        })
        .await
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<TypeConfig>>) -> Result<(), io::Error> {
        // Not synced: it only speeds up recovery (re-applying on restart), and
        // a lost value just means re-learning the commit index from the leader.
        let bytes = postcard::to_allocvec(&committed).map_err(|e| io::Error::other(e.to_string()))?;
        let db = self.store.db.clone();
        let key = keys::tag_key(self.group_id, TAG_COMMITTED);
        // In place, like appends: one small write on every commit round.
        crate::commit_round_io(&self.store, move || {
            let cf = db.cf_handle(CF_RAFT).expect("column family exists");
            db.put_cf(&cf, key, bytes).map_err(to_io)
        })
        .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<TypeConfig>>, io::Error> {
        Ok(self.read_tag::<Option<LogIdOf<TypeConfig>>>(TAG_COMMITTED, "committed log id").await?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let group_id = self.group_id;
        let mut batch = WriteBatch::default();
        {
            let db = &self.store.db;
            let cf = db.cf_handle(CF_LOG).expect("column family exists");
            for entry in entries {
                let bytes = crate::encode_sized(&entry).map_err(|e| io::Error::other(e.to_string()))?;
                batch.put_cf(&cf, keys::log_key(group_id, entry.index()), bytes);
            }
        }
        let (db, sequences) = (self.store.db.clone(), self.store.sequences.clone());
        crate::commit_round_io(&self.store, move || crate::write_logged(&db, &sequences, batch)).await?;
        // Durable once the group-commit task's next fsync is done.
        self.store.group_commit.submit(Waiter::Raft(callback));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<TypeConfig>>) -> Result<(), io::Error> {
        // Not synced on its own: the WAL is sequential, so any later append
        // that is reported durable makes this delete durable too.
        let from = last_log_id.map_or(0, |id| id.index() + 1);
        let (db, sequences) = (self.store.db.clone(), self.store.sequences.clone());
        let group_id = self.group_id;
        let alive = self.alive.clone();
        blocking(move || {
            let _alive = alive;
            let cf = db.cf_handle(CF_LOG).expect("column family exists");
            let end = keys::group_range(group_id).1;
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(&cf, keys::log_key(group_id, from).as_slice(), end.as_slice());
            crate::write_logged(&db, &sequences, batch)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogIdOf<TypeConfig>) -> Result<(), io::Error> {
        // The purged entries are what rebuilds the state machine's unlogged
        // writes after a crash, so they go only once a flush covers those
        // writes: at once when one already does, else after the next one.
        self.store.purger.purge(self.group_id, log_id)
    }
}
