//! Calibration: the physical floor and ceiling of this machine, measured in
//! the same run as the workloads. fio measures the disk (fdatasync latency
//! of small appends, and sequential bandwidth with one fdatasync per MiB);
//! loopback round trip and bandwidth are measured with our own TCP
//! ping-pong. Without fio, a small probe of our own measures the disk.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, Debug, Default, Serialize)]
pub struct Calibration {
    /// What measured the disk: "fio" or "own probe".
    pub disk_tool: String,
    /// Latency of one 4 KiB append followed by fdatasync, ms.
    pub fsync_p50_ms: f64,
    pub fsync_p99_ms: f64,
    /// Sequential write bandwidth with one fdatasync per MiB, bytes/s.
    pub write_bandwidth_bytes_per_sec: f64,
    /// Round trip of 1 KiB over loopback TCP, ms.
    pub loopback_rtt_p50_ms: f64,
    pub loopback_rtt_p99_ms: f64,
    /// One-way loopback TCP bandwidth, bytes/s.
    pub loopback_bandwidth_bytes_per_sec: f64,
}

impl Calibration {
    /// The W1 floor: one fsync plus one client round trip (replication to
    /// a follower overlaps the leader's own fsync in the ideal case).
    pub fn w1_floor_ms(&self) -> f64 {
        self.fsync_p50_ms + self.loopback_rtt_p50_ms
    }

    /// Records/s the disk allows for durable records of `record_size`
    /// bytes with 3 replicas on this one disk and write amplification `wa`.
    pub fn ceiling_records_per_sec(&self, record_size: usize, wa: f64) -> f64 {
        self.write_bandwidth_bytes_per_sec / (3.0 * wa.max(1.0) * record_size as f64)
    }
}

fn fio_json(dir: &Path, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let output = Command::new("fio")
        .arg(format!("--directory={}", dir.display()))
        .args(["--output-format=json", "--ioengine=sync", "--end_fsync=1"])
        .args(args)
        .output()
        .context("run fio")?;
    anyhow::ensure!(output.status.success(), "fio failed: {}", String::from_utf8_lossy(&output.stderr));
    // fio may print notes before the JSON object.
    let text = String::from_utf8_lossy(&output.stdout);
    let json = &text[text.find('{').context("no JSON from fio")?..];
    Ok(serde_json::from_str(json)?)
}

fn disk_with_fio(dir: &Path, quick: bool) -> anyhow::Result<(f64, f64, f64)> {
    let latency = fio_json(dir, &["--name=fsync", "--rw=write", "--bs=4k", "--size=4m", "--fdatasync=1"])?;
    let sync = &latency["jobs"][0]["sync"]["lat_ns"]["percentile"];
    let p50 = sync["50.000000"].as_f64().context("no fsync p50 in fio output")? / 1e6;
    let p99 = sync["99.000000"].as_f64().context("no fsync p99 in fio output")? / 1e6;
    let size = if quick { "128m" } else { "512m" };
    let bandwidth =
        fio_json(dir, &["--name=seq", "--rw=write", "--bs=1m", &format!("--size={size}"), "--fdatasync=1"])?;
    let bytes_per_sec = bandwidth["jobs"][0]["write"]["bw_bytes"].as_f64().context("no bandwidth in fio output")?;
    for entry in std::fs::read_dir(dir)?.flatten() {
        let _ = std::fs::remove_file(entry.path());
    }
    Ok((p50, p99, bytes_per_sec))
}

fn disk_with_probe(dir: &Path, quick: bool) -> anyhow::Result<(f64, f64, f64)> {
    let path = dir.join("probe");
    let mut file = std::fs::File::create(&path)?;
    let block = vec![0x5au8; 4096];
    let mut latencies = Vec::new();
    for _ in 0..500 {
        let started = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    let mebibyte = vec![0xa5u8; 1 << 20];
    let total: usize = if quick { 128 } else { 512 };
    let started = Instant::now();
    for _ in 0..total {
        file.write_all(&mebibyte)?;
        file.sync_data()?;
    }
    let bytes_per_sec = (total << 20) as f64 / started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok((latencies[latencies.len() / 2], latencies[latencies.len() * 99 / 100], bytes_per_sec))
}

async fn loopback() -> anyhow::Result<(f64, f64, f64)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let server = tokio::spawn(async move {
        // Echo for the round trips, then swallow the bandwidth stream.
        let (mut socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        let mut buffer = vec![0u8; 1024];
        loop {
            match socket.read_exact(&mut buffer).await {
                Ok(_) => socket.write_all(&buffer).await?,
                Err(_) => return anyhow::Ok(()),
            }
        }
    });
    let mut socket = tokio::net::TcpStream::connect(address).await?;
    socket.set_nodelay(true)?;
    let mut buffer = vec![7u8; 1024];
    let mut rtts = Vec::new();
    for _ in 0..5000 {
        let started = Instant::now();
        socket.write_all(&buffer).await?;
        socket.read_exact(&mut buffer).await?;
        rtts.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    drop(socket);
    server.await??;
    rtts.sort_by(f64::total_cmp);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let sink = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await?;
        let mut buffer = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = socket.read(&mut buffer).await?;
            if n == 0 {
                return anyhow::Ok(total);
            }
            total += n as u64;
        }
    });
    let mut socket = tokio::net::TcpStream::connect(address).await?;
    let chunk = vec![1u8; 1 << 20];
    let started = Instant::now();
    let deadline = started + Duration::from_secs(2);
    while Instant::now() < deadline {
        socket.write_all(&chunk).await?;
    }
    socket.shutdown().await?;
    let total = sink.await??;
    let bandwidth = total as f64 / started.elapsed().as_secs_f64();
    Ok((rtts[rtts.len() / 2], rtts[rtts.len() * 99 / 100], bandwidth))
}

pub async fn calibrate(dir: &Path, quick: bool) -> anyhow::Result<Calibration> {
    std::fs::create_dir_all(dir)?;
    let (tool, (fsync_p50, fsync_p99, bandwidth)) = match disk_with_fio(dir, quick) {
        Ok(figures) => ("fio".to_string(), figures),
        Err(error) => {
            eprintln!("fio calibration failed ({error:#}); using the built-in probe");
            ("own probe".to_string(), disk_with_probe(dir, quick)?)
        }
    };
    let (rtt_p50, rtt_p99, loop_bandwidth) = loopback().await?;
    Ok(Calibration {
        disk_tool: tool,
        fsync_p50_ms: fsync_p50,
        fsync_p99_ms: fsync_p99,
        write_bandwidth_bytes_per_sec: bandwidth,
        loopback_rtt_p50_ms: rtt_p50,
        loopback_rtt_p99_ms: rtt_p99,
        loopback_bandwidth_bytes_per_sec: loop_bandwidth,
    })
}
