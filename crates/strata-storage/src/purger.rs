//! Log purging behind memtable flushes.
//!
//! State-machine writes skip the WAL (see the crate docs): after a crash
//! they come back only as far as the last memtable flush, and openraft
//! rebuilds the rest by re-applying the Raft log. So a group's log may be
//! purged up to an index only once a flush has made the applies up to that
//! index durable.
//!
//! One node-wide thread owns every purge. A purge request whose applies are
//! already flushed (no unlogged write happened since the last flush) is
//! carried out at once. Otherwise it waits for the next flush of the
//! state-machine column families, which the thread forces at most once per
//! `LOG_PURGE_FLUSH_INTERVAL` and then carries out every waiting purge in
//! one write. Until then openraft counts the entries as purged while they
//! are still stored, which is safe: the log only keeps more than it must.
//! One thread doing every purge keeps each group's purge marker moving
//! forward only.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use openraft::type_config::alias::LogIdOf;
use rocksdb::{FlushOptions, WriteBatch, DB};
use strata_core::limits::LOG_PURGE_FLUSH_INTERVAL;
use tokio::sync::oneshot;

use crate::keys::{self, TAG_PURGED};
use crate::{to_io, Sequences, TypeConfig, CF_DATA, CF_LOG, CF_RAFT, CF_SM};

enum Request {
    /// Purge `log_id` and everything before it, now or after the next flush.
    Purge { group_id: u64, log_id: LogIdOf<TypeConfig> },
    /// Drop a group's queued purge (its keys are about to be deleted);
    /// `done` hears once no purge of the group can be written any more.
    Forget { group_id: u64, done: oneshot::Sender<()> },
    /// The purge queued for a group, if any.
    Queued { group_id: u64, reply: oneshot::Sender<Option<LogIdOf<TypeConfig>>> },
}

#[derive(Clone)]
pub(crate) struct Purger {
    // Field order matters: the sender must drop before the thread is joined.
    sender: mpsc::Sender<Request>,
    _thread: Arc<crate::group_commit::JoinOnDrop>,
}

impl Purger {
    pub(crate) fn start(db: Arc<DB>, sequences: Arc<Sequences>) -> Purger {
        let (sender, receiver) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("log-purger".into())
            .spawn(move || run(Arc::downgrade(&db), receiver, sequences, LOG_PURGE_FLUSH_INTERVAL))
            .expect("spawn log-purger thread");
        Purger { sender, _thread: Arc::new(crate::group_commit::JoinOnDrop::new(thread)) }
    }

    /// Queues a purge of a group's log up to `log_id`, carried out now or
    /// after the next flush. Returns at once: openraft awaits purges on the
    /// group's core task, which must never wait for a flush. Requests are
    /// handled in order, so a later `queued` call sees this one.
    pub(crate) fn purge(&self, group_id: u64, log_id: LogIdOf<TypeConfig>) -> io::Result<()> {
        self.sender.send(Request::Purge { group_id, log_id }).map_err(|_| stopped())
    }

    /// The purge queued for a group behind the next flush, if any. Until it
    /// is written, the log still holds the entries it covers, and a reader
    /// of the log state must count them as purged (openraft already does).
    pub(crate) async fn queued(&self, group_id: u64) -> io::Result<Option<LogIdOf<TypeConfig>>> {
        let (reply, answer) = oneshot::channel();
        self.sender.send(Request::Queued { group_id, reply }).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())
    }

    /// Drops a group's queued purge, so none is written after its keys go.
    pub(crate) async fn forget(&self, group_id: u64) -> io::Result<()> {
        let (done, answer) = oneshot::channel();
        self.sender.send(Request::Forget { group_id, done }).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())
    }
}

fn stopped() -> io::Error {
    io::Error::other("the log-purger thread has stopped")
}

/// Holds the database weakly, like the group-commit thread. Ends when every
/// sender is gone; purges still queued then are dropped, which only leaves
/// more log behind.
fn run(db: Weak<DB>, receiver: mpsc::Receiver<Request>, sequences: Arc<Sequences>, interval: Duration) {
    let mut queued: BTreeMap<u64, LogIdOf<TypeConfig>> = BTreeMap::new();
    // Every unlogged write with a sequence number up to this one is flushed.
    let mut flushed_seq = 0;
    let mut last_flush: Option<Instant> = None;
    loop {
        let request = if queued.is_empty() {
            match receiver.recv() {
                Ok(request) => Some(request),
                Err(_) => return,
            }
        } else {
            let due = last_flush.map_or(Duration::ZERO, |at| interval.saturating_sub(at.elapsed()));
            match receiver.recv_timeout(due) {
                Ok(request) => Some(request),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        };
        let Some(db) = db.upgrade() else { return };
        match request {
            Some(Request::Purge { group_id, log_id }) => {
                let target = queued.entry(group_id).or_insert(log_id);
                if log_id.index() > target.index() {
                    *target = log_id;
                }
                // Applies of this group up to `log_id` were written before
                // the request; if nothing unlogged was written since the
                // last flush, they are durable already.
                if flushed_seq >= sequences.unlogged.load(Ordering::Acquire) {
                    if let Err(error) = write_purges(&db, &sequences, &mut queued) {
                        tracing::warn!(%error, groups = queued.len(), "log purge failed; it is retried after the next flush");
                    }
                }
            }
            Some(Request::Forget { group_id, done }) => {
                queued.remove(&group_id);
                let _ = done.send(());
            }
            Some(Request::Queued { group_id, reply }) => {
                let _ = reply.send(queued.get(&group_id).copied());
            }
            None => {
                last_flush = Some(Instant::now());
                match flush_state_machines(&db) {
                    Ok(cut) => {
                        flushed_seq = cut;
                        if let Err(error) = write_purges(&db, &sequences, &mut queued) {
                            tracing::warn!(%error, groups = queued.len(), "log purge failed; it is retried after the next flush");
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, groups = queued.len(), "memtable flush before a log purge failed; it is retried")
                    }
                }
            }
        }
    }
}

/// Flushes the state-machine column families (atomically, see `Store::open`)
/// and returns a sequence number every write up to which is now durable.
pub(crate) fn flush_state_machines(db: &DB) -> io::Result<u64> {
    let cut = db.latest_sequence_number();
    let data = db.cf_handle(CF_DATA).expect("column family exists");
    let sm = db.cf_handle(CF_SM).expect("column family exists");
    let mut options = FlushOptions::default();
    options.set_wait(true);
    db.flush_cfs_opt(&[&data, &sm], &options).map_err(to_io)?;
    Ok(cut)
}

/// Writes every queued purge in one logged write and empties the queue.
/// Not synced: a purge lost in a crash only leaves more log behind.
fn write_purges(db: &DB, sequences: &Sequences, queued: &mut BTreeMap<u64, LogIdOf<TypeConfig>>) -> io::Result<()> {
    if queued.is_empty() {
        return Ok(());
    }
    let raft = db.cf_handle(CF_RAFT).expect("column family exists");
    let log = db.cf_handle(CF_LOG).expect("column family exists");
    let mut batch = WriteBatch::default();
    for (group_id, log_id) in queued.iter() {
        let bytes = postcard::to_allocvec(log_id).map_err(|e| io::Error::other(e.to_string()))?;
        batch.put_cf(&raft, keys::tag_key(*group_id, TAG_PURGED), bytes);
        batch.delete_range_cf(&log, keys::log_key(*group_id, 0), keys::log_key(*group_id, log_id.index() + 1));
    }
    crate::write_logged(db, sequences, batch)?;
    queued.clear();
    Ok(())
}
