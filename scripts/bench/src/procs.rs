//! Server processes: starting them with a log file, stopping them always,
//! and reading what they cost from /proc (CPU seconds, bytes written to
//! disk, peak resident memory), summed over each process's tree so that a
//! wrapper script and the runtime it starts count as one server.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// `count` distinct free TCP ports on 127.0.0.1. All are held open until
/// every one is chosen, so the kernel cannot hand out the same port twice
/// (taking them one at a time let two nodes of a cluster get one port).
pub fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> =
        (0..count).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a port on 127.0.0.1")).collect();
    listeners.iter().map(|l| l.local_addr().expect("bound address").port()).collect()
}

/// One server process of a cluster. Killed (with its tree) when dropped.
pub struct Server {
    pub name: String,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Server {
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> anyhow::Result<Server> {
        let file = std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("start {name}: {command:?}"))?;
        Ok(Server { name: name.to_string(), log: log.to_path_buf(), child: Some(child) })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL to the process and everything it started.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            for pid in process_tree(child.id()) {
                signal(pid, libc::SIGKILL);
            }
            let _ = child.wait();
        }
    }

    /// SIGTERM to the tree, then SIGKILL after a grace period.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let tree = process_tree(child.id());
        for pid in &tree {
            signal(*pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) && tree.iter().all(|p| !alive(*p)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for pid in tree {
            signal(pid, libc::SIGKILL);
        }
        let _ = child.wait();
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory effects; a stale pid only yields ESRCH.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

/// Fields of /proc/PID/stat after the command name: (state, ppid, utime, stime).
fn stat_fields(pid: u32) -> Option<(u32, u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = text.rsplit_once(") ")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    Some((fields.get(1)?.parse().ok()?, fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?))
}

/// `root` and all its descendants that are alive now.
pub fn process_tree(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            if let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) {
                if let Some((ppid, _, _)) = stat_fields(pid) {
                    parents.push((pid, ppid));
                }
            }
        }
    }
    let mut tree = vec![root];
    let mut index = 0;
    while index < tree.len() {
        let parent = tree[index];
        tree.extend(parents.iter().filter(|(_, ppid)| *ppid == parent).map(|(pid, _)| *pid));
        index += 1;
    }
    tree
}

/// What a server (process tree) has used so far.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Usage {
    pub cpu_seconds: f64,
    /// Bytes the processes caused to be written to storage (/proc/PID/io write_bytes).
    pub write_bytes: u64,
    /// Sum of the processes' peak resident set (VmHWM) since the last reset.
    pub peak_rss_bytes: u64,
    /// Sum of the processes' resident set now (VmRSS).
    pub rss_bytes: u64,
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant of the system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// A field of a /proc/PID/status text, in KiB (0 when absent).
fn status_kib(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn io_write_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|text| text.lines().find_map(|l| l.strip_prefix("write_bytes:").and_then(|v| v.trim().parse().ok())))
        .unwrap_or(0)
}

/// Reads the usage of a process tree now.
pub fn usage(root: u32) -> Usage {
    let ticks = clock_ticks_per_second();
    let mut total = Usage::default();
    for pid in process_tree(root) {
        if let Some((_, utime, stime)) = stat_fields(pid) {
            total.cpu_seconds += (utime + stime) as f64 / ticks;
        }
        total.write_bytes += io_write_bytes(pid);
        // Both from one reading, which the kernel keeps consistent (the
        // peak at least the current); two readings could see memory grow
        // in between.
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        total.peak_rss_bytes += status_kib(&status, "VmHWM:") * 1024;
        total.rss_bytes += status_kib(&status, "VmRSS:") * 1024;
    }
    total
}

/// Resets the peak resident set of a process tree (writing 5 to
/// clear_refs), so the next reading covers one workload only. Best effort:
/// kernels without it keep the lifetime peak.
pub fn reset_peak(root: u32) {
    for pid in process_tree(root) {
        let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    }
}

/// Usage between two readings (CPU and bytes as differences, memory as the later peak).
pub fn delta(before: &Usage, after: &Usage) -> Usage {
    Usage {
        cpu_seconds: (after.cpu_seconds - before.cpu_seconds).max(0.0),
        write_bytes: after.write_bytes.saturating_sub(before.write_bytes),
        peak_rss_bytes: after.peak_rss_bytes,
        rss_bytes: after.rss_bytes,
    }
}

/// Waits until `probe` succeeds, polling, or fails after `timeout` naming `what`.
pub async fn wait_for<F, Fut, T>(timeout: Duration, what: &str, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(value) => return Ok(value),
            Err(error) if Instant::now() >= deadline => {
                return Err(error.context(format!("{what} not ready within {timeout:?}")))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct() {
        let mut ports = free_ports(12);
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 12);
    }

    #[test]
    fn this_process_can_be_measured() {
        let me = std::process::id();
        let usage = usage(me);
        assert!(usage.rss_bytes > 0);
        assert!(usage.peak_rss_bytes >= usage.rss_bytes);
        assert!(process_tree(me).contains(&me));
        assert!(alive(me));
    }
}
