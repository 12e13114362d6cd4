//! The body of a snapshot stream, apart from its transport.
//!
//! A snapshot holds a group's state; a partition's record batches and
//! idempotency keys travel beside it. The sender ([`SnapshotSource`]) yields
//! [`StreamPart`]s: the batches from the snapshot's log start up to its next
//! offset, read as they are sent (batches that retention trimmed after the
//! snapshot was built are skipped: a committed trim already deletes them);
//! then the keys as of the snapshot (rows below its next offset that expire
//! after its clock), in pages, even when no batch was left to send; then a
//! [`Trailer`] with the end offset, the counts and a CRC-32C of everything
//! sent. While a source lives, expired-key cleanup of its group stops at the
//! snapshot's clock (a pin, see [`KeyCleanup`]), so a long stream still finds
//! every key it has to send.
//!
//! The receiver ([`SnapshotSink`]) checks every part at the edge (framing,
//! order, offsets below the snapshot's end, key lengths) and stages it apart
//! from live state: batches in an SST file of its own (`sst_staging`), keys
//! as rows under `TAG_STAGED_KEY`. Only a stream that ends with a trailer
//! matching what arrived may be installed. The install
//! (`GroupStateMachine::install_snapshot`) sets the installing mark (synced),
//! ingests the file, moves the staged keys in and then writes the state, in
//! logged writes synced together; until that last write, rows it brought in
//! sit at or past the replica's next offset, where neither reads nor key
//! lookups look, and a crash before it drops them at open (the mark says
//! so). What a stream that failed, or whose install did not happen, staged
//! is dropped by [`StagedSnapshot::release`], by the next stream of the
//! group, or when the store or the group's state machine opens. One stream
//! per group is received at a time.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use rocksdb::WriteBatch;
use strata_core::limits::{MAX_IDEMPOTENCY_KEY_BYTES, SNAPSHOT_CHUNK_BYTES};
use tokio::sync::OwnedMutexGuard;

use crate::keys::{self, TAG_INSTALLING, TAG_STAGED_BATCH, TAG_STAGED_KEY};
use crate::sst_staging::{BatchFileWriter, StagedFile};
use crate::{blocking, record_flush, to_io, write_logged, KeyRow, SnapshotPayload, Store, SyncRecord, CF_DATA, CF_SM};

/// One part of a snapshot stream after its header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamPart {
    /// Concatenated record batches, in offset order.
    Batches(Vec<u8>),
    /// A page of idempotency keys.
    Keys(Vec<KeyRow>),
    /// The last part: what the sender sent.
    Trailer(Trailer),
}

/// Closes a snapshot stream: a receiver installs nothing without it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    /// The snapshot's next offset (0 for a group that is not a partition).
    pub end_offset: u64,
    pub batch_count: u64,
    pub key_row_count: u64,
    /// CRC-32C over every batch's bytes and every key row (see `Digest`).
    pub checksum: u32,
}

/// Why a snapshot stream cannot be sent or installed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("snapshot stream ended without its trailer (cut short); the leader sends the snapshot again")]
    NoTrailer,
    #[error("snapshot trailer does not match what arrived: {0}; the leader sends the snapshot again")]
    TrailerMismatch(String),
    #[error("bad snapshot stream part: {0}")]
    BadPart(String),
    #[error("the idempotency keys of this snapshot were cleaned up already; the leader sends a newer one")]
    KeysCleaned,
    #[error("snapshot storage: {0}")]
    Io(#[from] io::Error),
}

/// Running CRC-32C and counts of a stream's body, kept alike on both sides.
#[derive(Default)]
struct Digest {
    checksum: u32,
    batch_count: u64,
    key_row_count: u64,
}

impl Digest {
    fn batch(&mut self, bytes: &[u8]) {
        self.checksum = crc32c::crc32c_append(self.checksum, bytes);
        self.batch_count += 1;
    }

    fn key_row(&mut self, row: &KeyRow) {
        let mut c = crc32c::crc32c_append(self.checksum, &(row.key.len() as u64).to_be_bytes());
        c = crc32c::crc32c_append(c, &row.key);
        c = crc32c::crc32c_append(c, &row.offset.to_be_bytes());
        self.checksum = crc32c::crc32c_append(c, &row.expires_ms.to_be_bytes());
        self.key_row_count += 1;
    }

    fn trailer(&self, end_offset: u64) -> Trailer {
        Trailer {
            end_offset,
            batch_count: self.batch_count,
            key_row_count: self.key_row_count,
            checksum: self.checksum,
        }
    }
}

/// What a partition snapshot covers, from its state.
#[derive(Clone, Copy)]
struct Bounds {
    log_start: u64,
    end: u64,
    clock_ms: u64,
}

fn bounds(payload: &SnapshotPayload) -> Option<Bounds> {
    payload.state.as_partition().map(|p| Bounds {
        log_start: p.log_start_offset,
        end: p.next_offset,
        clock_ms: p.clock_ms,
    })
}

/// Expired-key cleanup against snapshot streams being sent: per group, the
/// clocks of the streams in progress, and the highest cleanup bound used.
/// One mutex orders a pin against an apply round's bound: either the round
/// sees the pin, or the pin sees that the round already cleaned past it.
#[derive(Default)]
pub(crate) struct KeyCleanup {
    state: Mutex<CleanupState>,
}

#[derive(Default)]
struct CleanupState {
    pins: HashMap<u64, Vec<u64>>,
    cleaned_ms: HashMap<u64, u64>,
}

impl KeyCleanup {
    /// The bound an apply round of `group_id` may clean expired keys up to:
    /// `wanted_ms`, lowered to the clock of every stream in progress.
    pub(crate) fn bound(&self, group_id: u64, wanted_ms: u64) -> u64 {
        let mut state = self.state.lock().expect("lock");
        let pinned = state.pins.get(&group_id).and_then(|clocks| clocks.iter().min().copied());
        let bound = pinned.map_or(wanted_ms, |pin| pin.min(wanted_ms));
        let cleaned = state.cleaned_ms.entry(group_id).or_default();
        *cleaned = (*cleaned).max(bound);
        bound
    }

    fn pin(self: &Arc<Self>, group_id: u64, clock_ms: u64) -> Result<KeyPin, StreamError> {
        let mut state = self.state.lock().expect("lock");
        if state.cleaned_ms.get(&group_id).is_some_and(|cleaned| *cleaned > clock_ms) {
            return Err(StreamError::KeysCleaned);
        }
        state.pins.entry(group_id).or_default().push(clock_ms);
        Ok(KeyPin { cleanup: self.clone(), group_id, clock_ms })
    }

    pub(crate) fn forget(&self, group_id: u64) {
        self.state.lock().expect("lock").cleaned_ms.remove(&group_id);
    }
}

/// Holds cleanup of a group's keys at or below a stream's clock until dropped.
struct KeyPin {
    cleanup: Arc<KeyCleanup>,
    group_id: u64,
    clock_ms: u64,
}

impl Drop for KeyPin {
    fn drop(&mut self) {
        let mut state = self.cleanup.state.lock().expect("lock");
        if let Some(clocks) = state.pins.get_mut(&self.group_id) {
            if let Some(at) = clocks.iter().position(|c| *c == self.clock_ms) {
                clocks.swap_remove(at);
            }
            if clocks.is_empty() {
                state.pins.remove(&self.group_id);
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Batches,
    Keys,
    Trailer,
    Done,
}

/// The sending side of one snapshot stream.
pub struct SnapshotSource {
    store: Store,
    group_id: u64,
    bounds: Option<Bounds>,
    /// The next offset to send batches from.
    next_offset: u64,
    key_cursor: Vec<u8>,
    phase: Phase,
    digest: Digest,
    _pin: Option<KeyPin>,
}

impl SnapshotSource {
    /// The next part to send; `None` after the trailer. An error ends the
    /// stream without a trailer, so the receiver installs nothing.
    pub async fn next_part(&mut self) -> Result<Option<StreamPart>, StreamError> {
        loop {
            match (self.phase, self.bounds) {
                (Phase::Batches, Some(bounds)) if self.next_offset < bounds.end => {
                    let reader = self.store.partition_reader(self.group_id);
                    let batches = reader.read(self.next_offset, bounds.end, SNAPSHOT_CHUNK_BYTES).await?;
                    if batches.is_empty() {
                        // Trimmed by retention after the snapshot was built.
                        self.phase = Phase::Keys;
                        continue;
                    }
                    let mut next = self.next_offset;
                    for item in strata_record::BatchIter::new(&batches) {
                        let (header, bytes) = item.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                        next = header.next_offset();
                        self.digest.batch(bytes);
                    }
                    if next <= self.next_offset {
                        let message = format!("stored batches of group {} do not advance", self.group_id);
                        return Err(io::Error::new(io::ErrorKind::InvalidData, message).into());
                    }
                    self.next_offset = next;
                    return Ok(Some(StreamPart::Batches(batches)));
                }
                (Phase::Batches, _) => self.phase = Phase::Keys,
                (Phase::Keys, Some(bounds)) => {
                    let cursor = std::mem::take(&mut self.key_cursor);
                    let (rows, next) = self
                        .store
                        .read_snapshot_keys(self.group_id, cursor, bounds.end, bounds.clock_ms, SNAPSHOT_CHUNK_BYTES)
                        .await?;
                    match next {
                        Some(next) => self.key_cursor = next,
                        None => self.phase = Phase::Trailer,
                    }
                    if !rows.is_empty() {
                        rows.iter().for_each(|row| self.digest.key_row(row));
                        return Ok(Some(StreamPart::Keys(rows)));
                    }
                }
                (Phase::Keys, None) => self.phase = Phase::Trailer,
                (Phase::Trailer, _) => {
                    self.phase = Phase::Done;
                    let end = self.bounds.map_or(0, |b| b.end);
                    return Ok(Some(StreamPart::Trailer(self.digest.trailer(end))));
                }
                (Phase::Done, _) => return Ok(None),
            }
        }
    }
}

/// The receiving side of one snapshot stream: checks and stages parts.
pub struct SnapshotSink {
    store: Store,
    group_id: u64,
    bounds: Option<Bounds>,
    /// The next offset of the last batch staged: batches come in order.
    staged_end: u64,
    digest: Digest,
    trailer: Option<Trailer>,
    /// The staging file's writer, from the first batch on.
    batch_file: Option<BatchFileWriter>,
    guard: OwnedMutexGuard<()>,
}

impl SnapshotSink {
    /// Checks one part and stages it.
    pub async fn accept(&mut self, part: StreamPart) -> Result<(), StreamError> {
        if self.trailer.is_some() {
            return Err(StreamError::BadPart("a part after the trailer".into()));
        }
        match part {
            StreamPart::Batches(batches) => self.stage_batches(batches).await,
            StreamPart::Keys(rows) => self.stage_keys(rows).await,
            StreamPart::Trailer(trailer) => {
                let arrived = self.digest.trailer(self.bounds.map_or(0, |b| b.end));
                if trailer != arrived {
                    return Err(StreamError::TrailerMismatch(format!("sent {trailer:?}, arrived {arrived:?}")));
                }
                self.trailer = Some(trailer);
                Ok(())
            }
        }
    }

    async fn stage_batches(&mut self, batches: Vec<u8>) -> Result<(), StreamError> {
        let Some(bounds) = self.bounds else {
            return Err(StreamError::BadPart("record batches in a snapshot of a group that is not a partition".into()));
        };
        for item in strata_record::BatchIter::new(&batches) {
            let (header, bytes) = item.map_err(|e| StreamError::BadPart(format!("record batch: {e}")))?;
            let (base, next) = (header.base_offset, header.next_offset());
            if header.last_offset_delta < 0 || base < self.staged_end.max(bounds.log_start) || next > bounds.end {
                return Err(StreamError::BadPart(format!(
                    "batch [{base}, {next}) is out of order or outside [{}, {}) after {}",
                    bounds.log_start, bounds.end, self.staged_end
                )));
            }
            self.staged_end = next;
            self.digest.batch(bytes);
        }
        // Checked in offset order, so the file's keys ascend as SST files need.
        let writer = self.batch_file.get_or_insert_with(|| self.store.staging_files.writer(self.group_id));
        Ok(writer.write(batches).await?)
    }

    async fn stage_keys(&mut self, rows: Vec<KeyRow>) -> Result<(), StreamError> {
        let Some(bounds) = self.bounds else {
            return Err(StreamError::BadPart(
                "idempotency keys in a snapshot of a group that is not a partition".into(),
            ));
        };
        let mut write = WriteBatch::default();
        let cf = self.store.db.cf_handle(CF_SM).expect("column family exists");
        for row in &rows {
            if row.key.is_empty() || row.key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
                return Err(StreamError::BadPart(format!(
                    "an idempotency key of {} bytes; keys hold 1 to {MAX_IDEMPOTENCY_KEY_BYTES}",
                    row.key.len()
                )));
            }
            if row.offset >= bounds.end || row.expires_ms <= bounds.clock_ms {
                return Err(StreamError::BadPart(format!(
                    "key at offset {} expiring at {} ms is not part of a snapshot ending at {} with clock {} ms",
                    row.offset, row.expires_ms, bounds.end, bounds.clock_ms
                )));
            }
            self.digest.key_row(row);
            write.put_cf(&cf, keys::staged_key(self.group_id, &row.key, row.offset), row.expires_ms.to_be_bytes());
        }
        self.write(write).await
    }

    async fn write(&self, write: WriteBatch) -> Result<(), StreamError> {
        let (db, sequences) = (self.store.db.clone(), self.store.sequences.clone());
        Ok(blocking(move || write_logged(&db, &sequences, write)).await?)
    }

    /// Ends the stream: complete only when its trailer arrived and matched.
    /// The staged rows wait for the install; on an error they are dropped.
    pub async fn finish(self) -> Result<StagedSnapshot, StreamError> {
        let staged = StagedSnapshot { store: self.store, group_id: self.group_id, _guard: self.guard };
        if self.trailer.is_none() {
            if let Some(writer) = self.batch_file {
                writer.abandon().await;
            }
            staged.release().await?;
            return Err(StreamError::NoTrailer);
        }
        if let Some(writer) = self.batch_file {
            match writer.finish().await {
                Ok(Some(file)) => staged.store.staging_files.complete(staged.group_id, file),
                Ok(None) => {}
                Err(e) => {
                    staged.release().await?;
                    return Err(e.into());
                }
            }
        }
        Ok(staged)
    }

    /// Gives the stream up and drops what it staged.
    pub async fn discard(self) -> io::Result<()> {
        if let Some(writer) = self.batch_file {
            writer.abandon().await;
        }
        StagedSnapshot { store: self.store, group_id: self.group_id, _guard: self.guard }.release().await
    }
}

/// A complete stream's staged rows, held for the install; the group's next
/// stream waits until this is released.
pub struct StagedSnapshot {
    store: Store,
    group_id: u64,
    _guard: OwnedMutexGuard<()>,
}

impl std::fmt::Debug for StagedSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedSnapshot").field("group_id", &self.group_id).finish()
    }
}

impl StagedSnapshot {
    /// Drops whatever the install did not take (all of it when the install
    /// was refused or not needed), and lets the group's next stream in.
    pub async fn release(self) -> io::Result<()> {
        self.store.clear_staged(self.group_id).await
    }
}

impl Store {
    /// Starts sending a snapshot of `group_id` whose data is `payload`.
    pub fn snapshot_source(&self, group_id: u64, payload: &SnapshotPayload) -> Result<SnapshotSource, StreamError> {
        let bounds = bounds(payload);
        let pin = match bounds {
            Some(b) => Some(self.key_cleanup.pin(group_id, b.clock_ms)?),
            None => None,
        };
        Ok(SnapshotSource {
            store: self.clone(),
            group_id,
            bounds,
            next_offset: bounds.map_or(0, |b| b.log_start),
            key_cursor: Vec::new(),
            phase: Phase::Batches,
            digest: Digest::default(),
            _pin: pin,
        })
    }

    /// Starts receiving a snapshot of `group_id` whose data is `payload`;
    /// waits while another stream of the group is being received.
    pub async fn snapshot_sink(&self, group_id: u64, payload: &SnapshotPayload) -> io::Result<SnapshotSink> {
        let lock = self.staging_locks.lock().expect("lock").entry(group_id).or_default().clone();
        let guard = lock.lock_owned().await;
        self.clear_staged(group_id).await?;
        Ok(SnapshotSink {
            store: self.clone(),
            group_id,
            bounds: bounds(payload),
            staged_end: 0,
            digest: Digest::default(),
            trailer: None,
            batch_file: None,
            guard,
        })
    }

    /// Deletes a group's staged snapshot rows and file.
    pub(crate) async fn clear_staged(&self, group_id: u64) -> io::Result<()> {
        self.staging_files.clear(group_id);
        let (db, sequences) = (self.db.clone(), self.sequences.clone());
        blocking(move || {
            let mut write = WriteBatch::default();
            clear_staged_rows(&db, group_id, &mut write);
            write_logged(&db, &sequences, write)
        })
        .await
    }

    /// Staged batches and key rows of a partition, for tests.
    pub async fn count_staged(&self, group_id: u64) -> io::Result<(u64, u64)> {
        let db = self.db.clone();
        blocking(move || count_prefix(&db, &keys::tag_key(group_id, TAG_STAGED_KEY)))
            .await
            .map(|keys| (self.staging_files.batch_count(group_id), keys))
    }
}

fn count_prefix(db: &rocksdb::DB, prefix: &[u8]) -> io::Result<u64> {
    let cf = db.cf_handle(CF_SM).expect("column family exists");
    let mut iter = db.raw_iterator_cf(&cf);
    iter.seek(prefix);
    let mut count = 0;
    while iter.key().is_some_and(|row| row.starts_with(prefix)) {
        count += 1;
        iter.next();
    }
    iter.status().map_err(to_io)?;
    Ok(count)
}

/// Adds the deletion of every staged row of `group_id` to `write`, when
/// there is any (a range tombstone per group opened would cost reads).
fn clear_staged_rows(db: &rocksdb::DB, group_id: u64, write: &mut WriteBatch) {
    let cf = db.cf_handle(CF_SM).expect("column family exists");
    let (start, end) = (keys::tag_key(group_id, TAG_STAGED_BATCH), keys::tag_key(group_id, TAG_STAGED_KEY + 1));
    let mut iter = db.raw_iterator_cf(&cf);
    iter.seek(start);
    if iter.key().is_some_and(|row| row < &end[..]) {
        write.delete_range_cf(&cf, start, end);
    }
}

/// Most bytes of staged key rows one logged write of an install moves in.
const MOVE_WRITE_BYTES: usize = 4 * SNAPSHOT_CHUNK_BYTES;

/// Moves a group's staged batches (`file`, ingested) and key rows into
/// live state, the rows in logged writes of about `MOVE_WRITE_BYTES`,
/// after setting the installing mark. The caller's last write (the state)
/// clears the mark; blocking work.
pub(crate) fn move_staged(
    db: &rocksdb::DB,
    sequences: &crate::Sequences,
    record: &SyncRecord,
    group_id: u64,
    file: Option<StagedFile>,
) -> io::Result<()> {
    let sm = db.cf_handle(CF_SM).expect("column family exists");
    let data = db.cf_handle(CF_DATA).expect("column family exists");
    let mut mark = WriteBatch::default();
    mark.put_cf(&sm, keys::tag_key(group_id, TAG_INSTALLING), []);
    write_logged(db, sequences, mark)?;
    if let Some(file) = file {
        // An ingested file is durable at once: the mark that makes a crash
        // drop its rows must be durable first.
        record_flush(record, || db.flush_wal(true).map_err(to_io))?;
        let mut options = rocksdb::IngestExternalFileOptions::default();
        // Linked into the store, not copied; the staging name goes.
        options.set_move_files(true);
        db.ingest_external_file_cf_opts(&data, &options, vec![&file.path]).map_err(to_io)?;
    }
    let prefix = keys::tag_key(group_id, TAG_STAGED_KEY);
    let mut iter = db.raw_iterator_cf(&sm);
    iter.seek(prefix);
    let (mut write, mut bytes) = (WriteBatch::default(), 0);
    while let (Some(row), Some(value)) = (iter.key(), iter.value()) {
        if !row.starts_with(&prefix) {
            break;
        }
        let (key, offset) = keys::parse_idempotency_key(row).ok_or_else(|| corrupt("staged key row"))?;
        let expires = u64::from_be_bytes(value.try_into().map_err(|_| corrupt("staged key expiry"))?);
        write.put_cf(&sm, keys::idempotency_key(group_id, key, offset), value);
        write.put_cf(&sm, keys::expiry_key(group_id, expires, offset, key), []);
        write.delete_cf(&sm, row);
        bytes += row.len() + value.len();
        if bytes >= MOVE_WRITE_BYTES {
            write_logged(db, sequences, std::mem::take(&mut write))?;
            bytes = 0;
        }
        iter.next();
    }
    iter.status().map_err(to_io)?;
    write_logged(db, sequences, write)
}

/// At open: drops staged rows, and when an install was cut (its mark is
/// set) the rows it moved past the applied next offset, which the install's
/// last write would have made live. Rows below it are the replica's own.
/// Blocking work, before the group's Raft runs.
pub(crate) fn recover_staging(
    db: &rocksdb::DB,
    sequences: &crate::Sequences,
    group_id: u64,
    next_offset: u64,
) -> io::Result<()> {
    let sm = db.cf_handle(CF_SM).expect("column family exists");
    let data = db.cf_handle(CF_DATA).expect("column family exists");
    let mark = keys::tag_key(group_id, TAG_INSTALLING);
    let mut write = WriteBatch::default();
    clear_staged_rows(db, group_id, &mut write);
    if db.get_pinned_cf(&sm, mark).map_err(to_io)?.is_some() {
        write.delete_range_cf(&data, keys::data_key(group_id, next_offset).to_vec(), keys::group_range(group_id).1);
        let prefix = keys::tag_key(group_id, keys::TAG_KEY);
        let mut iter = db.raw_iterator_cf(&sm);
        iter.seek(prefix);
        while let (Some(row), Some(value)) = (iter.key(), iter.value()) {
            if !row.starts_with(&prefix) {
                break;
            }
            let (key, offset) = keys::parse_idempotency_key(row).ok_or_else(|| corrupt("key-index row"))?;
            if offset >= next_offset {
                let expires = u64::from_be_bytes(value.try_into().map_err(|_| corrupt("key expiry"))?);
                write.delete_cf(&sm, keys::expiry_key(group_id, expires, offset, key));
                write.delete_cf(&sm, row);
            }
            iter.next();
        }
        iter.status().map_err(to_io)?;
        write.delete_cf(&sm, mark);
        // Recounted at open from what is left (see `key_count`).
        write.delete_cf(&sm, keys::tag_key(group_id, keys::TAG_KEY_COUNT));
        tracing::warn!(group = group_id, next_offset, "dropped the rows of a snapshot install cut by a crash");
    }
    write_logged(db, sequences, write)
}

/// Rows in a group's key index, by scan (at install and at open only).
pub(crate) fn count_key_rows(db: &rocksdb::DB, group_id: u64) -> io::Result<u64> {
    count_prefix(db, &keys::tag_key(group_id, keys::TAG_KEY))
}

/// The group's key count row, written from a scan when it is missing (a
/// store from before the row existed). Blocking work, at open.
pub(crate) fn key_count(db: &rocksdb::DB, sequences: &crate::Sequences, group_id: u64) -> io::Result<u64> {
    let sm = db.cf_handle(CF_SM).expect("column family exists");
    let row = keys::tag_key(group_id, keys::TAG_KEY_COUNT);
    if let Some(value) = db.get_pinned_cf(&sm, row).map_err(to_io)? {
        return Ok(u64::from_be_bytes(value.as_ref().try_into().map_err(|_| corrupt("key count"))?));
    }
    let count = count_key_rows(db, group_id)?;
    if count > 0 {
        let mut write = WriteBatch::default();
        write.put_cf(&sm, row, count.to_be_bytes());
        write_logged(db, sequences, write)?;
    }
    Ok(count)
}

fn corrupt(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("corrupt {what}"))
}
