//! The nodes: one `strata server` process per network namespace, started
//! through `ip netns exec` (which execs, so the child's pid is the server's),
//! killed with SIGKILL, paused with SIGSTOP/SIGCONT, and restarted on the
//! same data directory. For the membership fault some node ids are planned
//! as spares: they join the running cluster (`--join`) when added, leave it
//! when removed, and a member can lose its data directory (wipe) and start
//! again empty.
//!
//! Invariant: every child is in its own process group, so a Ctrl-C at the
//! terminal reaches only the harness, which then kills the nodes itself; and
//! every child is killed when the [`Cluster`] is dropped.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::net;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot start node {node}: {source}")]
    Start { node: u64, source: std::io::Error },
    #[error("cannot signal node {node}: {source}")]
    Signal { node: u64, source: nix::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("cannot delete node {node}'s data directory: {source}")]
    Wipe { node: u64, source: std::io::Error },
}

/// Where a node stands in the cluster, as the harness drives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Planned for the membership fault, never started: it may join.
    Spare,
    /// Part of the cluster (running or not): faults may hit it and the
    /// heals restart it.
    Member,
    /// Removed from the cluster (`cluster remove-node`) and stopped; it may
    /// join again with an emptied data directory.
    Removed,
}

/// libfaketime settings for nodes whose clock may be skewed.
#[derive(Clone, Debug)]
pub struct Faketime {
    pub library: String,
}

pub struct Node {
    pub id: u64,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    /// Holds the node's clock offset for libfaketime (`+0`, `+30`, `-10`).
    pub clock_file: PathBuf,
    child: Option<Child>,
    paused: bool,
    pub starts: u32,
    pub state: NodeState,
    /// Started with `--join` (it joined a running cluster) instead of
    /// `--initial-cluster`; it keeps doing so at every start, as an
    /// operator's config would.
    pub joined: bool,
}

impl Node {
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    binary: PathBuf,
    initial_cluster: String,
    faketime: Option<Faketime>,
    /// A node config (TOML) every node starts with, when a fault or the
    /// workload needs one.
    config_file: Option<PathBuf>,
    /// Its top-level settings and its `[faults]` settings, one per line.
    settings: Vec<String>,
    fault_settings: Vec<String>,
}

impl Cluster {
    /// The nodes `ids` form the cluster; `spares` are planned (directories,
    /// clock files) but start only when they join.
    pub fn new(
        binary: &Path,
        ids: &[u64],
        spares: &[u64],
        dir: &Path,
        faketime: Option<Faketime>,
    ) -> Result<Cluster, ClusterError> {
        let initial_cluster =
            ids.iter().map(|&id| format!("{id}={}", net::node_address(id))).collect::<Vec<_>>().join(",");
        let mut nodes = Vec::new();
        for &id in ids.iter().chain(spares) {
            let node_dir = dir.join(format!("n{id}"));
            std::fs::create_dir_all(&node_dir)
                .map_err(|source| ClusterError::Write { path: node_dir.display().to_string(), source })?;
            let node = Node {
                id,
                data_dir: node_dir.join("data"),
                log_path: node_dir.join("node.log"),
                clock_file: node_dir.join("faketime"),
                child: None,
                paused: false,
                starts: 0,
                state: if ids.contains(&id) { NodeState::Member } else { NodeState::Spare },
                joined: false,
            };
            write_file(&node.clock_file, "+0\n")?;
            nodes.push(node);
        }
        Ok(Cluster {
            nodes,
            binary: binary.to_path_buf(),
            initial_cluster,
            faketime,
            config_file: None,
            settings: Vec::new(),
            fault_settings: Vec::new(),
        })
    }

    /// The members: the nodes faults hit and heals restart.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().filter(|n| n.state == NodeState::Member).map(|n| n.id).collect()
    }

    /// Every planned node, spares and removed ones included.
    pub fn all_ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// Nodes that may join: spares, and removed nodes (with their data
    /// directory emptied first, as a removed node must be to join again).
    pub fn joinable(&self) -> Vec<u64> {
        self.nodes.iter().filter(|n| n.state != NodeState::Member).map(|n| n.id).collect()
    }

    pub fn node(&self, id: u64) -> &Node {
        self.nodes.iter().find(|n| n.id == id).expect("known node id")
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.id == id).expect("known node id")
    }

    /// Every planned node's address: a client that knows them all finds
    /// the cluster whichever nodes were removed or added.
    pub fn bootstrap(&self) -> Vec<String> {
        self.nodes.iter().map(|n| net::node_address(n.id)).collect()
    }

    /// Starts member `id` unless it runs. Spares and removed nodes are
    /// left alone: a heal that restarts the nodes it killed must not bring
    /// back one that was removed meanwhile.
    pub fn start(&mut self, id: u64) -> Result<(), ClusterError> {
        if self.node(id).state != NodeState::Member {
            return Ok(());
        }
        self.spawn(id)
    }

    /// Kills node `id`, deletes its data directory and starts it again
    /// empty, with the same id and the same arguments.
    pub fn wipe(&mut self, id: u64) -> Result<(), ClusterError> {
        self.kill(id);
        remove_dir(&self.node(id).data_dir).map_err(|source| ClusterError::Wipe { node: id, source })?;
        self.start(id)
    }

    /// Makes a spare or removed node a member that joins the running
    /// cluster through the other members (`--join`), and starts it. A
    /// removed node's data directory is emptied first.
    pub fn join(&mut self, id: u64) -> Result<(), ClusterError> {
        let node = self.node_mut(id);
        assert!(node.state != NodeState::Member, "node {id} is a member already");
        if node.state == NodeState::Removed {
            remove_dir(&node.data_dir).map_err(|source| ClusterError::Wipe { node: id, source })?;
        }
        node.state = NodeState::Member;
        node.joined = true;
        self.start(id)
    }

    /// Stops a node the cluster has removed; it is no member from now on.
    pub fn mark_removed(&mut self, id: u64) {
        self.kill(id);
        self.node_mut(id).state = NodeState::Removed;
    }

    /// Starts a removed node on its old data directory, which the cluster
    /// must refuse (the node exits with NODE_REMOVED); see `exited`.
    pub fn start_removed(&mut self, id: u64) -> Result<(), ClusterError> {
        assert_eq!(self.node(id).state, NodeState::Removed, "only a removed node");
        self.spawn(id)
    }

    /// The exit status of node `id` when its process has exited by itself.
    pub fn exited(&mut self, id: u64) -> Option<String> {
        let node = self.node_mut(id);
        let status = node.child.as_mut()?.try_wait().ok()??;
        node.child = None;
        node.paused = false;
        Some(status.to_string())
    }

    fn spawn(&mut self, id: u64) -> Result<(), ClusterError> {
        let binary = self.binary.clone();
        let initial_cluster = self.initial_cluster.clone();
        let faketime = self.faketime.clone();
        let config_file = self.config_file.clone();
        // A joined node joins through the other members, whichever they are
        // now (`--join` needs one that runs; the node tries each).
        let join: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.state == NodeState::Member && n.id != id)
            .map(|n| net::node_address(n.id))
            .collect();
        let node = self.node_mut(id);
        if node.child.is_some() {
            return Ok(());
        }
        let membership_args: Vec<String> = if node.joined {
            vec!["--join".into(), join.join(","), "--peer-address".into(), net::node_address(id)]
        } else {
            vec!["--initial-cluster".into(), initial_cluster]
        };
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .map_err(|source| ClusterError::Start { node: id, source })?;
        let err_log = log.try_clone().map_err(|source| ClusterError::Start { node: id, source })?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &net::namespace(id)])
            .arg(&binary)
            .args(["--log-level", "info,openraft=warn", "server", "--node-id", &id.to_string()])
            .args(["--listen", &net::node_address(id)])
            .args(membership_args)
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(config_file.iter().flat_map(|path| [std::ffi::OsStr::new("--config"), path.as_os_str()]))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .process_group(0);
        if let Some(faketime) = faketime {
            // Only the wall clock is skewed: separate machines disagree on
            // the time of day, while each one's monotonic clock still runs.
            command
                .env("LD_PRELOAD", faketime.library)
                .env("FAKETIME_TIMESTAMP_FILE", &node.clock_file)
                .env("FAKETIME_CACHE_DURATION", "1")
                .env("DONT_FAKE_MONOTONIC", "1");
        }
        let child = command.spawn().map_err(|source| ClusterError::Start { node: id, source })?;
        node.child = Some(child);
        node.paused = false;
        node.starts += 1;
        Ok(())
    }

    /// Makes every node record, after each WAL sync, how much of its WAL is
    /// durable (`[faults] record_synced_wal`), for the lost-writes fault.
    /// Takes effect at each node's next start.
    pub fn record_synced_wal(&mut self, dir: &Path) -> Result<(), ClusterError> {
        self.configure(dir, &[], &["record_synced_wal = true".to_string()])
    }

    /// Adds lines to the node config every node starts with: top-level
    /// `settings` (e.g. `snapshot_every_entries = 16`) and `[faults]`
    /// settings (those need a `fault-hooks` build). Takes effect at each
    /// node's next start.
    pub fn configure(&mut self, dir: &Path, settings: &[String], faults: &[String]) -> Result<(), ClusterError> {
        self.settings.extend(settings.iter().cloned());
        self.fault_settings.extend(faults.iter().cloned());
        let mut text = self.settings.join("\n");
        if !self.fault_settings.is_empty() {
            text.push_str(&format!("\n[faults]\n{}", self.fault_settings.join("\n")));
        }
        text.push('\n');
        let path = dir.join("node-config.toml");
        write_file(&path, &text)?;
        self.config_file = Some(path);
        Ok(())
    }

    /// Cuts a dead node's WAL back to what it last recorded as synced (see
    /// `cut_wal_to_synced`). Returns the bytes dropped.
    pub fn drop_unsynced_writes(&mut self, id: u64) -> std::io::Result<u64> {
        cut_wal_to_synced(&self.node(id).data_dir.join("db"))
    }

    /// SIGKILL, and reap. A node that is not running is left alone.
    pub fn kill(&mut self, id: u64) {
        let node = self.node_mut(id);
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
    }

    pub fn pause(&mut self, id: u64) -> Result<(), ClusterError> {
        self.signal(id, Signal::SIGSTOP)?;
        let node = self.node_mut(id);
        node.paused = node.child.is_some();
        Ok(())
    }

    pub fn resume(&mut self, id: u64) -> Result<(), ClusterError> {
        self.signal(id, Signal::SIGCONT)?;
        self.node_mut(id).paused = false;
        Ok(())
    }

    fn signal(&mut self, id: u64, signal: Signal) -> Result<(), ClusterError> {
        let node = self.node_mut(id);
        if let Some(child) = node.child.as_ref() {
            kill(Pid::from_raw(child.id() as i32), signal)
                .map_err(|source| ClusterError::Signal { node: id, source })?;
        }
        Ok(())
    }

    /// Notices nodes that exited by themselves (for example after
    /// corruption) and returns their ids with the exit status.
    pub fn reap_exited(&mut self) -> Vec<(u64, String)> {
        let mut exited = Vec::new();
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    exited.push((node.id, status.to_string()));
                    node.child = None;
                    node.paused = false;
                }
            }
        }
        exited
    }

    /// Sets a node's wall-clock offset in seconds (takes effect within the
    /// one-second cache of libfaketime).
    pub fn set_clock_offset(&self, id: u64, offset_s: i64) -> Result<(), ClusterError> {
        write_file(&self.node(id).clock_file, &format!("{offset_s:+}\n"))
    }

    pub fn faketime_enabled(&self) -> bool {
        self.faketime.is_some()
    }

    pub fn kill_all(&mut self) {
        for id in self.all_ids() {
            self.kill(id);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Deletes a directory tree; one that does not exist is gone already.
fn remove_dir(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn write_file(path: &Path, text: &str) -> Result<(), ClusterError> {
    std::fs::write(path, text).map_err(|source| ClusterError::Write { path: path.display().to_string(), source })
}

/// What a power loss would leave of the RocksDB directory `db`: the WAL
/// named in `SYNCED_WAL` cut to its recorded length, newer WALs emptied.
/// The record's format belongs to strata-storage (`synced_wal`); the
/// harness reads it itself because it must not depend on the server's
/// crates. Returns the bytes dropped (0 without a record).
pub fn cut_wal_to_synced(db: &Path) -> std::io::Result<u64> {
    let text = match std::fs::read_to_string(db.join("SYNCED_WAL")) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut fields = text.split_whitespace();
    let (Some(name), Some(len)) = (fields.next(), fields.next().and_then(|l| l.parse::<u64>().ok())) else {
        return Err(std::io::Error::other(format!("bad SYNCED_WAL record {text:?}")));
    };
    let number = |file: &str| file.strip_suffix(".log").and_then(|n| n.parse::<u64>().ok());
    let recorded = number(name).ok_or_else(|| std::io::Error::other(format!("bad WAL name {name}")))?;
    let mut dropped = 0;
    for entry in std::fs::read_dir(db)? {
        let entry = entry?;
        let Some(current) = entry.file_name().to_str().and_then(number) else { continue };
        let keep = match current.cmp(&recorded) {
            std::cmp::Ordering::Less => continue,
            std::cmp::Ordering::Equal => len,
            std::cmp::Ordering::Greater => 0,
        };
        let size = entry.metadata()?.len();
        if size > keep {
            OpenOptions::new().write(true).open(entry.path())?.set_len(keep)?;
            dropped += size - keep;
        }
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spares_join_and_removed_nodes_stay_down_until_they_join_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = Cluster::new(Path::new("/nonexistent/strata"), &[1, 2, 3], &[4], dir.path(), None).unwrap();
        assert_eq!(cluster.ids(), vec![1, 2, 3], "a spare is no member");
        assert_eq!(cluster.all_ids(), vec![1, 2, 3, 4]);
        assert_eq!(cluster.joinable(), vec![4]);
        assert_eq!(cluster.bootstrap().len(), 4, "clients know the spare's address too");
        cluster.start(4).unwrap();
        assert!(!cluster.node(4).is_running(), "a spare starts only when it joins");
        cluster.mark_removed(2);
        assert_eq!(cluster.ids(), vec![1, 3]);
        assert_eq!(cluster.joinable(), vec![2, 4]);
        // A heal restarting the nodes it killed must not bring back one
        // that was removed meanwhile.
        cluster.start(2).unwrap();
        assert!(!cluster.node(2).is_running());
        assert!(!cluster.node(2).joined);
    }

    #[test]
    fn the_wal_is_cut_to_the_record_and_newer_wals_are_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path();
        assert_eq!(cut_wal_to_synced(db).unwrap(), 0, "no record, nothing cut");
        std::fs::write(db.join("000004.log"), vec![1u8; 50]).unwrap();
        std::fs::write(db.join("000009.log"), vec![1u8; 40]).unwrap();
        std::fs::write(db.join("000011.log"), vec![1u8; 8]).unwrap();
        std::fs::write(db.join("000012.sst"), vec![1u8; 99]).unwrap();
        std::fs::write(db.join("SYNCED_WAL"), "000009.log 25\n").unwrap();
        assert_eq!(cut_wal_to_synced(db).unwrap(), 15 + 8);
        let len = |name: &str| std::fs::metadata(db.join(name)).unwrap().len();
        assert_eq!((len("000004.log"), len("000009.log"), len("000011.log"), len("000012.sst")), (50, 25, 0, 99));
        std::fs::write(db.join("SYNCED_WAL"), "garbage").unwrap();
        assert!(cut_wal_to_synced(db).is_err());
    }
}
