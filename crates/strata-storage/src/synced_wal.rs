//! Test-only record of how much of the RocksDB write-ahead log is known to
//! be on disk (feature `fault-hooks`). After every WAL sync the store writes
//! the newest WAL file's name and a length up to which it is durable into
//! `SYNCED_WAL`. A fault-injection harness that kills the node can then
//! truncate the WAL to that length, which is what a power loss would leave:
//! writes that reached the page cache but were never synced are lost, and
//! nothing the node reported durable is.
//!
//! Lengths are conservative: for a `FlushWAL(sync)` the length is taken
//! before the sync (everything written before it is covered), for a
//! synchronous write after it (the write itself is covered; later bytes may
//! be counted too, which only makes the fault milder).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The record's file name inside the database directory.
pub const SYNCED_WAL_FILE: &str = "SYNCED_WAL";

pub struct SyncedWal {
    dir: PathBuf,
    /// The last (file, length) written, so a record never moves backwards.
    last: Mutex<Option<(String, u64)>>,
}

impl SyncedWal {
    pub fn new(dir: &Path) -> SyncedWal {
        SyncedWal { dir: dir.to_path_buf(), last: Mutex::new(None) }
    }

    /// The newest WAL file (RocksDB numbers them; the highest is current)
    /// and its length now.
    pub fn newest(&self) -> Option<(String, u64)> {
        let entries = fs::read_dir(&self.dir).ok()?;
        entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let number: u64 = name.strip_suffix(".log")?.parse().ok()?;
                Some((number, name, e.metadata().ok()?.len()))
            })
            .max_by_key(|(number, _, _)| *number)
            .map(|(_, name, len)| (name, len))
    }

    /// Records `point` (from `newest`) as durable, if it is past the last record.
    pub fn record(&self, point: Option<(String, u64)>) {
        let Some((name, len)) = point else { return };
        let mut last = self.last.lock().expect("synced wal lock");
        if let Some((last_name, last_len)) = last.as_ref() {
            if wal_number(last_name) > wal_number(&name) || (*last_name == name && *last_len >= len) {
                return;
            }
        }
        if let Err(error) = self.write(&name, len) {
            tracing::warn!(%error, "cannot write the synced-WAL record");
            return;
        }
        *last = Some((name, len));
    }

    fn write(&self, name: &str, len: u64) -> io::Result<()> {
        // Written aside and renamed, so a kill never leaves half a record.
        let temporary = self.dir.join(format!("{SYNCED_WAL_FILE}.tmp"));
        fs::write(&temporary, format!("{name} {len}\n"))?;
        fs::rename(&temporary, self.dir.join(SYNCED_WAL_FILE))
    }
}

/// What a power loss would leave of the database in `dir` (the node must
/// be dead): every WAL file newer than the recorded one is emptied and the
/// recorded one is cut to its recorded length. Returns the bytes dropped.
/// Without a record nothing was synced through this hook and nothing is cut.
pub fn drop_unsynced_writes(dir: &Path) -> io::Result<u64> {
    let text = match fs::read_to_string(dir.join(SYNCED_WAL_FILE)) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut fields = text.split_whitespace();
    let (Some(name), Some(len)) = (fields.next(), fields.next().and_then(|l| l.parse::<u64>().ok())) else {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("bad {SYNCED_WAL_FILE}: {text:?}")));
    };
    let mut dropped = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(file) = entry.file_name().into_string() else { continue };
        if !file.ends_with(".log") {
            continue;
        }
        let keep = match wal_number(&file).cmp(&wal_number(name)) {
            std::cmp::Ordering::Less => continue,
            std::cmp::Ordering::Equal => len,
            std::cmp::Ordering::Greater => 0,
        };
        let size = entry.metadata()?.len();
        if size > keep {
            fs::OpenOptions::new().write(true).open(entry.path())?.set_len(keep)?;
            dropped += size - keep;
        }
    }
    Ok(dropped)
}

fn wal_number(name: &str) -> u64 {
    name.strip_suffix(".log").and_then(|n| n.parse().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_the_newest_wal_and_never_moves_back() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("000004.log"), vec![0u8; 10]).unwrap();
        fs::write(dir.path().join("000012.log"), vec![0u8; 30]).unwrap();
        fs::write(dir.path().join("MANIFEST-000005"), b"x").unwrap();
        let wal = SyncedWal::new(dir.path());
        let newest = wal.newest();
        assert_eq!(newest, Some(("000012.log".to_string(), 30)));
        wal.record(newest);
        wal.record(Some(("000012.log".to_string(), 20)));
        wal.record(Some(("000004.log".to_string(), 99)));
        let text = fs::read_to_string(dir.path().join(SYNCED_WAL_FILE)).unwrap();
        assert_eq!(text, "000012.log 30\n");
        // More was written after the sync, and a newer WAL was started.
        fs::write(dir.path().join("000012.log"), vec![0u8; 45]).unwrap();
        fs::write(dir.path().join("000013.log"), vec![0u8; 7]).unwrap();
        assert_eq!(drop_unsynced_writes(dir.path()).unwrap(), 22);
        assert_eq!(fs::metadata(dir.path().join("000012.log")).unwrap().len(), 30);
        assert_eq!(fs::metadata(dir.path().join("000013.log")).unwrap().len(), 0);
        assert_eq!(fs::metadata(dir.path().join("000004.log")).unwrap().len(), 10);
    }
}
