//! Detects a store that lost writes it had made durable.
//!
//! After every group-commit fsync the node writes a RocksDB sequence number
//! the sync covered into `DURABLE_SEQUENCE` (8 bytes, overwritten in
//! place, not synced: it only has to survive the process, not the machine,
//! since a power loss never takes back synced writes). The number is a lower
//! bound of the newest logged write before the sync (see `write_logged`):
//! writes that skip the WAL also take sequence numbers, and a crash takes
//! them back by design, so they must not count. On open, a store whose
//! recovered sequence number is below the marker has lost durable data: its
//! WAL or tables were truncated or corrupted. Raft must not run on such a
//! store (it would vote and acknowledge as if it still had the entries), so
//! the node refuses to start and says what to do.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

pub const DURABLE_SEQUENCE_FILE: &str = "DURABLE_SEQUENCE";

/// What to do about a node that lost durable writes. Not "wipe it and
/// restart": with the same node id it would rejoin as the same voter
/// without its vote and its acknowledged entries, free to vote twice in a
/// term or to help elect a leader that lacks committed entries. Until a
/// node can rejoin as a new member, it must stay out.
const KEEP_STOPPED: &str = "Keep this node stopped: the other replicas keep serving while a majority of \
     nodes runs. Do not wipe the data dir and restart it under the same node id; it would rejoin without \
     its vote and acknowledged entries and could help elect a leader that lacks committed data. Nor restore \
     an older copy of the data dir: it is safe only if the node has not run since the copy was taken \
     (otherwise it holds an older vote and log, with the same hazard)";

pub struct DurableMarker {
    file: Option<File>,
    written: u64,
}

impl DurableMarker {
    /// Checks the store's recovered sequence number against the marker in
    /// `dir` and opens the marker for updates.
    pub fn open(dir: &Path, recovered: u64) -> io::Result<DurableMarker> {
        let path = dir.join(DURABLE_SEQUENCE_FILE);
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let durable = match bytes.len() {
            0 => 0,
            8 => u64::from_be_bytes(bytes.try_into().expect("8 bytes")),
            n => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} holds {n} bytes instead of 8: the data dir is damaged. {KEEP_STOPPED}", path.display()),
                ))
            }
        };
        if recovered < durable {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the store recovered up to write {recovered} but had made writes up to {durable} durable: \
                     its files were truncated or corrupted and acknowledged data is gone from this node. \
                     {KEEP_STOPPED}"
                ),
            ));
        }
        Ok(DurableMarker { file: Some(file), written: durable })
    }

    /// Records that writes up to `sequence` are durable.
    pub fn advance(&mut self, sequence: u64) {
        if sequence <= self.written {
            return;
        }
        if let Some(file) = &self.file {
            if let Err(error) = file.write_all_at(&sequence.to_be_bytes(), 0) {
                // Only detection is lost, never data: stop updating.
                tracing::warn!(%error, "cannot update the durable-sequence marker");
                self.file = None;
                return;
            }
        }
        self.written = sequence;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_behind_its_marker_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut marker = DurableMarker::open(dir.path(), 0).unwrap();
        marker.advance(40);
        marker.advance(30);
        drop(marker);
        assert!(DurableMarker::open(dir.path(), 40).is_ok());
        assert!(DurableMarker::open(dir.path(), 55).is_ok());
        let error = DurableMarker::open(dir.path(), 39).err().expect("behind the marker");
        assert!(error.to_string().contains("Keep this node stopped"), "{error}");
        assert!(!error.to_string().contains("rejoins as an empty replica"), "{error}");
        std::fs::write(dir.path().join(DURABLE_SEQUENCE_FILE), b"xyz").unwrap();
        assert!(DurableMarker::open(dir.path(), 100).is_err(), "a damaged marker is refused");
    }
}
