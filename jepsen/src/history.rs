//! The history: every operation's invocation and completion, and every fault
//! event, in the order the harness saw them, one JSON object per line.
//!
//! Invariant: a client process has at most one operation in flight, so its
//! completion is the next entry of the same process after its invocation.
//! A process whose last entry is `info` is never used again; the worker that
//! ran it continues as a fresh process with a new id.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The kind of history entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    /// An operation starts.
    Invoke,
    /// It took effect (for a send: it is acknowledged, with its offset).
    Ok,
    /// It certainly had no effect.
    Fail,
    /// Its outcome is unknown (timeout, lost connection); also used for
    /// fault events, which have no outcome.
    Info,
}

/// Who did it: a numbered client process, or a named actor (`nemesis` for
/// faults, `drain` for the final read).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Process {
    Client(u64),
    Named(String),
}

impl Process {
    pub fn nemesis() -> Process {
        Process::Named("nemesis".into())
    }

    pub fn is_nemesis(&self) -> bool {
        matches!(self, Process::Named(name) if name == "nemesis")
    }
}

impl std::fmt::Display for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Process::Client(id) => write!(f, "{id}"),
            Process::Named(name) => f.write_str(name),
        }
    }
}

/// One history entry. `value` depends on `f`; the shapes are documented in
/// `jepsen/README.md` and parsed by the checker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Op {
    pub index: u64,
    /// Nanoseconds since the run started (monotonic clock).
    pub time: u64,
    pub process: Process,
    #[serde(rename = "type")]
    pub kind: OpType,
    pub f: String,
    #[serde(default)]
    pub value: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cannot read history {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("history {path}, line {line}: {source}")]
    Parse { path: String, line: usize, source: serde_json::Error },
}

/// Reads a history file (JSON lines; blank lines are skipped).
pub fn load(path: &Path) -> Result<Vec<Op>, HistoryError> {
    let io = |source| HistoryError::Io { path: path.display().to_string(), source };
    let file = File::open(path).map_err(io)?;
    let mut ops = Vec::new();
    for (number, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let op = serde_json::from_str(&line).map_err(|source| HistoryError::Parse {
            path: path.display().to_string(),
            line: number + 1,
            source,
        })?;
        ops.push(op);
    }
    Ok(ops)
}

/// Records entries in memory and, line by line, in a file, so that a run
/// that dies still leaves the history up to that point.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Mutex<RecorderInner>>,
    started: Instant,
}

struct RecorderInner {
    ops: Vec<Op>,
    file: Option<BufWriter<File>>,
}

impl Recorder {
    pub fn new(path: Option<&Path>) -> std::io::Result<Recorder> {
        let file = match path {
            Some(path) => Some(BufWriter::new(File::create(path)?)),
            None => None,
        };
        Ok(Recorder { inner: Arc::new(Mutex::new(RecorderInner { ops: Vec::new(), file })), started: Instant::now() })
    }

    /// Nanoseconds since the recorder was made.
    pub fn now(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// Appends an entry, stamping index and time, and returns it.
    pub fn record(
        &self,
        process: Process,
        kind: OpType,
        f: &str,
        value: Value,
        node: Option<u64>,
        error: Option<String>,
    ) -> Op {
        let mut inner = self.inner.lock().expect("history lock");
        // Time is taken under the lock so that index order and time order agree.
        let op =
            Op { index: inner.ops.len() as u64, time: self.now(), process, kind, f: f.to_string(), value, node, error };
        if let Some(file) = inner.file.as_mut() {
            // A history that cannot be written makes the run meaningless.
            serde_json::to_writer(&mut *file, &op).expect("write history");
            file.write_all(b"\n").expect("write history");
        }
        inner.ops.push(op.clone());
        op
    }

    pub fn flush(&self) {
        if let Some(file) = self.inner.lock().expect("history lock").file.as_mut() {
            let _ = file.flush();
        }
    }

    pub fn ops(&self) -> Vec<Op> {
        self.inner.lock().expect("history lock").ops.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn entries_round_trip_through_a_file() {
        let dir = std::env::temp_dir().join(format!("strata-jepsen-history-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("history.jsonl");
        let recorder = Recorder::new(Some(&path)).unwrap();
        recorder.record(Process::Client(3), OpType::Invoke, "send", json!({"key": 1, "value": 7}), None, None);
        recorder.record(Process::nemesis(), OpType::Info, "kill", json!({"nodes": [2]}), Some(2), None);
        recorder.flush();
        let loaded = load(&path).unwrap();
        assert_eq!(loaded, recorder.ops());
        assert_eq!(loaded[1].process, Process::nemesis());
        assert!(loaded[0].time <= loaded[1].time);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.lines().next().unwrap().contains("\"type\":\"invoke\""), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
