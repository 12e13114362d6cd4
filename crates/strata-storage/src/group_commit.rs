//! Group commit: one thread per node makes the pending Raft appends of every
//! group durable with one WAL fsync.
//!
//! An append writes its entries to RocksDB without syncing, then hands its
//! completion callback here. The thread takes every callback waiting (up to
//! `GROUP_COMMIT_MAX_WAITERS`), calls `FlushWAL(sync = true)` once, and only
//! then completes them. A callback is queued after its write returned, so
//! the fsync that follows covers it.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Weak};

use openraft::storage::IOFlushed;
use rocksdb::DB;
use strata_core::limits::GROUP_COMMIT_MAX_WAITERS;
use strata_core::metrics::{Histogram, HistogramSnapshot};

use crate::TypeConfig;

pub(crate) enum Waiter {
    Raft(IOFlushed<TypeConfig>),
    Channel(tokio::sync::oneshot::Sender<io::Result<()>>),
}

impl Waiter {
    fn complete(self, result: io::Result<()>) {
        match self {
            Waiter::Raft(callback) => callback.io_completed(result),
            Waiter::Channel(sender) => {
                let _ = sender.send(result);
            }
        }
    }
}

struct Counters {
    fsyncs: AtomicU64,
    waiters: AtomicU64,
    /// Duration of each WAL fsync, in microseconds.
    fsync_latency_us: Histogram,
    /// Waiters made durable by each fsync (the group-commit batch size).
    fsync_batch_size: Histogram,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            fsyncs: AtomicU64::new(0),
            waiters: AtomicU64::new(0),
            fsync_latency_us: Histogram::new(16),
            fsync_batch_size: Histogram::new(1),
        }
    }
}

/// Counters of the group-commit task, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupCommitStats {
    /// WAL fsyncs done.
    pub fsyncs: u64,
    /// Appends made durable; `waiters / fsyncs` is the mean batch size.
    pub waiters: u64,
}

#[derive(Clone)]
pub struct GroupCommit {
    // Field order matters: the sender must drop before the thread is joined.
    sender: mpsc::Sender<Waiter>,
    counters: Arc<Counters>,
    _thread: Arc<JoinOnDrop>,
}

/// Joins a store thread (group commit, log purger) when the last handle
/// goes, so the thread never outlives the store (a RocksDB handle alive at
/// process exit aborts).
pub(crate) struct JoinOnDrop(Option<std::thread::JoinHandle<()>>);

impl JoinOnDrop {
    pub(crate) fn new(thread: std::thread::JoinHandle<()>) -> JoinOnDrop {
        JoinOnDrop(Some(thread))
    }
}

impl Drop for JoinOnDrop {
    fn drop(&mut self) {
        if let Some(thread) = self.0.take() {
            // Every sender is gone by now (they drop first), so the thread's
            // receive loop ends after its current fsync.
            let _ = thread.join();
        }
    }
}

impl GroupCommit {
    pub(crate) fn start(
        db: Arc<DB>,
        sequences: Arc<crate::Sequences>,
        record: crate::SyncRecord,
        marker: crate::durable::DurableMarker,
    ) -> GroupCommit {
        let (sender, receiver) = mpsc::channel::<Waiter>();
        let counters = Arc::new(Counters::default());
        let thread_counters = counters.clone();
        let thread = std::thread::Builder::new()
            .name("group-commit".into())
            .spawn(move || run(Arc::downgrade(&db), receiver, thread_counters, sequences, record, marker))
            .expect("spawn group-commit thread");
        GroupCommit { sender, counters, _thread: Arc::new(JoinOnDrop::new(thread)) }
    }

    pub(crate) fn submit(&self, waiter: Waiter) {
        if let Err(mpsc::SendError(waiter)) = self.sender.send(waiter) {
            waiter.complete(Err(io::Error::other("group-commit task has stopped")));
        }
    }

    /// Waits until everything written before this call is durable.
    pub async fn sync(&self) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(Waiter::Channel(tx));
        rx.await.map_err(|_| io::Error::other("group-commit task has stopped"))?
    }

    /// Histograms of fsync latency (µs) and batch size, for metrics.
    pub fn histograms(&self) -> (HistogramSnapshot, HistogramSnapshot) {
        (self.counters.fsync_latency_us.snapshot(), self.counters.fsync_batch_size.snapshot())
    }

    pub fn stats(&self) -> GroupCommitStats {
        GroupCommitStats {
            fsyncs: self.counters.fsyncs.load(Ordering::Relaxed),
            waiters: self.counters.waiters.load(Ordering::Relaxed),
        }
    }
}

/// Holds the database weakly: the last `Store` handle closes it, at once and
/// on the dropping thread, rather than whenever this thread notices.
fn run(
    db: Weak<DB>,
    receiver: mpsc::Receiver<Waiter>,
    counters: Arc<Counters>,
    sequences: Arc<crate::Sequences>,
    record: crate::SyncRecord,
    mut marker: crate::durable::DurableMarker,
) {
    let mut pending = Vec::with_capacity(64);
    // Ends when every sender (every Store handle) is gone.
    while let Ok(first) = receiver.recv() {
        pending.push(first);
        while pending.len() < GROUP_COMMIT_MAX_WAITERS {
            match receiver.try_recv() {
                Ok(next) => pending.push(next),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let result = match db.upgrade() {
            Some(db) => {
                // Some logged write at or past this sequence number is
                // covered by the sync (unlogged writes are not, so the
                // newest sequence number would overstate it).
                let durable = sequences.wal_floor.load(Ordering::Acquire);
                crate::record_flush(&record, || db.flush_wal(true).map_err(crate::to_io))
                    .map(|()| marker.advance(durable))
                    .map_err(|e| e.to_string())
            }
            None => Err("the store is closed".to_string()),
        };
        counters.fsync_latency_us.observe_duration(started.elapsed());
        counters.fsync_batch_size.observe(pending.len() as u64);
        counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        counters.waiters.fetch_add(pending.len() as u64, Ordering::Relaxed);
        match result {
            Ok(()) => pending.drain(..).for_each(|w| w.complete(Ok(()))),
            Err(err) => {
                // A failed fsync leaves the WAL's durability unknown; every
                // waiter hears the error and Raft stops the group.
                tracing::error!(error = %err, waiters = pending.len(), "wal fsync failed");
                pending.drain(..).for_each(|w| w.complete(Err(io::Error::other(err.clone()))));
            }
        }
    }
}
