//! The record batches of a snapshot stream, staged in an SST file that the
//! install ingests into the data column family.
//!
//! A new replica receives a partition's whole data through a snapshot
//! stream. Staging its batches as rows (WAL, memtable, flush) and moving
//! them into live rows at the install (WAL, memtable, flush again) wrote
//! each byte four times. Here a writer thread per stream puts the batches,
//! in offset order, into an SST file of data-column-family rows
//! (`keys::data_key`), and the install ingests the file: RocksDB links it
//! into the store, so each byte is written once (and synced once, when the
//! file is finished). Ingestion gives the rows a sequence number above
//! every write before it, so they replace the replica's own rows with the
//! same keys, as the moved rows did.
//!
//! Files live in `snapshot-staging/` in the store's directory, named
//! `<group>-<n>.sst` with `n` unique in the process, so a writer thread
//! that outlives its stream (a cancelled receive) can never touch the
//! file of the group's next stream. Every file there is garbage when the
//! store opens (an install that ingested its file moved it into the store
//! first), so opening the store empties the directory.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::keys;

/// The directory, in the store's, that holds staging files.
const STAGING_DIR: &str = "snapshot-staging";

/// Chunks a writer thread may have queued: the stream's receiver reads the
/// next chunk while the thread writes one, and no further ahead (each is up
/// to `SNAPSHOT_CHUNK_BYTES` plus one batch).
const QUEUED_CHUNKS: usize = 2;

/// A complete staging file, waiting for the install; dropped, it removes
/// the file (gone already once an ingest moved it into the store).
#[derive(Debug)]
pub(crate) struct StagedFile {
    pub(crate) path: PathBuf,
    pub(crate) batch_count: u64,
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        remove_file(&self.path);
    }
}

/// The staging files of one store.
pub(crate) struct StagingFiles {
    dir: PathBuf,
    next_file: AtomicU64,
    /// Per group, its complete file (one stream per group at a time).
    complete: Mutex<HashMap<u64, StagedFile>>,
}

impl StagingFiles {
    /// Empties (or creates) the staging directory of the store in `store_dir`.
    pub(crate) fn open(store_dir: &Path) -> io::Result<StagingFiles> {
        let dir = store_dir.join(STAGING_DIR);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir_all(&dir)?;
        Ok(StagingFiles { dir, next_file: AtomicU64::new(0), complete: Mutex::default() })
    }

    /// Starts the writer of a new staging file for `group_id`.
    pub(crate) fn writer(&self, group_id: u64) -> BatchFileWriter {
        let n = self.next_file.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("{group_id}-{n}.sst"));
        BatchFileWriter::start(group_id, path)
    }

    /// Keeps `file` for the install of `group_id`'s snapshot.
    pub(crate) fn complete(&self, group_id: u64, file: StagedFile) {
        let replaced = self.complete.lock().expect("lock").insert(group_id, file);
        drop(replaced);
    }

    /// Takes the complete file of `group_id` for its install.
    pub(crate) fn take(&self, group_id: u64) -> Option<StagedFile> {
        self.complete.lock().expect("lock").remove(&group_id)
    }

    /// Batches in `group_id`'s complete file (0 without one).
    pub(crate) fn batch_count(&self, group_id: u64) -> u64 {
        self.complete.lock().expect("lock").get(&group_id).map_or(0, |f| f.batch_count)
    }

    /// Drops `group_id`'s complete file, if any.
    pub(crate) fn clear(&self, group_id: u64) {
        drop(self.take(group_id));
    }
}

fn remove_file(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a snapshot staging file");
        }
    }
}

enum Message {
    /// Concatenated batches, checked already, in offset order.
    Batches(Vec<u8>),
    /// Finish the file and answer with it.
    Finish,
}

/// Writes one stream's batches to a staging file, on a thread of its own
/// (an `SstFileWriter` borrows its options, so it cannot live across the
/// stream's awaits). Dropped without `finish`, it removes the file.
pub(crate) struct BatchFileWriter {
    tx: tokio::sync::mpsc::Sender<Message>,
    done: tokio::task::JoinHandle<io::Result<Option<StagedFile>>>,
}

impl BatchFileWriter {
    fn start(group_id: u64, path: PathBuf) -> BatchFileWriter {
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUED_CHUNKS);
        let done = tokio::task::spawn_blocking(move || {
            let result = write_file(group_id, &path, rx);
            if let Err(e) = &result {
                tracing::warn!(group = group_id, error = %e, "cannot write a snapshot staging file");
            }
            if !matches!(result, Ok(Some(_))) {
                remove_file(&path);
            }
            result
        });
        BatchFileWriter { tx, done }
    }

    /// Queues checked batches; waits while the thread is `QUEUED_CHUNKS` behind.
    pub(crate) async fn write(&self, batches: Vec<u8>) -> io::Result<()> {
        // A closed channel: the thread failed, and logged why.
        self.tx
            .send(Message::Batches(batches))
            .await
            .map_err(|_| io::Error::other("the snapshot staging file writer failed (see the log)"))
    }

    /// Finishes the file (synced): `None` when no batch was written.
    pub(crate) async fn finish(self) -> io::Result<Option<StagedFile>> {
        let BatchFileWriter { tx, done } = self;
        // A closed channel means the thread failed; its result says how.
        let _ = tx.send(Message::Finish).await;
        drop(tx);
        done.await.map_err(|e| io::Error::other(format!("snapshot staging file writer failed: {e}")))?
    }

    /// Gives the file up; the thread removes it.
    pub(crate) async fn abandon(self) {
        let BatchFileWriter { tx, done } = self;
        drop(tx);
        let _ = done.await;
    }
}

/// The writer thread: batches into `path` until `Finish` (the file, synced)
/// or until the channel closes (abandoned: `None`, and the caller removes
/// what was written).
fn write_file(
    group_id: u64,
    path: &Path,
    mut rx: tokio::sync::mpsc::Receiver<Message>,
) -> io::Result<Option<StagedFile>> {
    let mut options = rocksdb::Options::default();
    // As the data column family's own tables (the comparator is the default).
    options.set_compression_type(rocksdb::DBCompressionType::Lz4);
    // Starts writeback every MiB, so the sync at the end of a large file
    // finds little left to write and the page cache does not fill with it.
    options.set_bytes_per_sync(1 << 20);
    let mut writer = rocksdb::SstFileWriter::create(&options);
    let mut opened = false;
    let mut batch_count = 0;
    while let Some(message) = rx.blocking_recv() {
        match message {
            Message::Batches(batches) => {
                if !opened {
                    writer.open(path).map_err(crate::to_io)?;
                    opened = true;
                }
                for item in strata_record::BatchIter::new(&batches) {
                    let (header, bytes) = item.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    writer.put(keys::data_key(group_id, header.base_offset), bytes).map_err(crate::to_io)?;
                    batch_count += 1;
                }
            }
            Message::Finish => {
                if batch_count == 0 {
                    return Ok(None);
                }
                // Writes the footer and syncs the file.
                writer.finish().map_err(crate::to_io)?;
                return Ok(Some(StagedFile { path: path.to_path_buf(), batch_count }));
            }
        }
    }
    Ok(None)
}
