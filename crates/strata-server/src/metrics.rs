//! Prometheus metrics of a node, served as text on `GET /metrics` when
//! `metrics_listen` is set.
//!
//! Request figures (produce, fetch, Raft commit) are counted as they happen
//! in the process-wide [`METRICS`]: a process runs one node, and a static
//! keeps the instrumentation at the call sites to one line each. Everything
//! else (partitions led, under-replicated partitions, follower lag, the
//! group-commit histograms and RocksDB figures) is read when scraped, so an
//! idle node does no metrics work at all.
//!
//! The HTTP side is a deliberately tiny HTTP/1.1 responder (one request per
//! connection, bounded header size, read deadline, bounded concurrency):
//! scrapers need nothing more, and it keeps an HTTP framework out of the
//! node.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::Instant as _;
use strata_core::metrics::{Counter, Histogram, HistogramSnapshot};
use strata_state::metadata::METADATA_GROUP_ID;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::error::ApiError;
use crate::node::Node;

/// Largest request head read; a scrape's is a few hundred bytes.
const MAX_REQUEST_HEAD_BYTES: usize = 8 * 1024;
/// How long a client may take to send its request head.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Scrapes served at once; more wait in the listen backlog.
const MAX_CONCURRENT_SCRAPES: usize = 8;
/// A replica whose last acknowledgement to the leader is older than this
/// counts as out of sync: several election timeouts, so a slow round trip
/// does not flap the gauge.
const OUT_OF_SYNC_AFTER: Duration = Duration::from_secs(5);
/// A replica further behind the leader's log than this many entries counts
/// as out of sync even when it answers heartbeats.
const OUT_OF_SYNC_ENTRIES: u64 = 1000;

/// Request figures of this process's node.
pub struct Metrics {
    pub produce_ok: Counter,
    pub produce_errors: Counter,
    /// Record batch bytes and records of accepted produce requests.
    pub produce_bytes: Counter,
    pub produce_records: Counter,
    /// Produce request handling time, µs (validation to answer).
    pub produce_latency_us: Histogram,
    pub fetch_ok: Counter,
    pub fetch_errors: Counter,
    /// Record bytes returned by fetches.
    pub fetch_bytes: Counter,
    /// Fetch handling time, µs, long-poll waits included.
    pub fetch_latency_us: Histogram,
    /// Time from proposing an entry to its apply result (commit + apply), µs.
    pub raft_commit_latency_us: Histogram,
}

impl Metrics {
    const fn new() -> Metrics {
        Metrics {
            produce_ok: Counter::new(),
            produce_errors: Counter::new(),
            produce_bytes: Counter::new(),
            produce_records: Counter::new(),
            produce_latency_us: Histogram::new(16),
            fetch_ok: Counter::new(),
            fetch_errors: Counter::new(),
            fetch_bytes: Counter::new(),
            fetch_latency_us: Histogram::new(16),
            raft_commit_latency_us: Histogram::new(16),
        }
    }
}

pub static METRICS: Metrics = Metrics::new();

/// Runs a produce handler and counts it: `batch_bytes` and the records the
/// answer says were stored when it succeeded.
pub async fn observe_produce(
    batch_bytes: usize,
    handler: impl Future<Output = Result<strata_proto::v1::ProduceResponse, ApiError>>,
) -> Result<strata_proto::v1::ProduceResponse, ApiError> {
    let started = Instant::now();
    let result = handler.await;
    METRICS.produce_latency_us.observe_duration(started.elapsed());
    match &result {
        Ok(answer) => {
            METRICS.produce_ok.inc();
            METRICS.produce_bytes.add(batch_bytes as u64);
            METRICS.produce_records.add(answer.record_count as u64);
        }
        Err(_) => METRICS.produce_errors.inc(),
    }
    result
}

/// Runs a fetch handler and counts it with the bytes it returns.
pub async fn observe_fetch<T>(
    handler: impl Future<Output = Result<(Vec<u8>, T), ApiError>>,
) -> Result<(Vec<u8>, T), ApiError> {
    let started = Instant::now();
    let result = handler.await;
    METRICS.fetch_latency_us.observe_duration(started.elapsed());
    match &result {
        Ok((records, _)) => {
            METRICS.fetch_ok.inc();
            METRICS.fetch_bytes.add(records.len() as u64);
        }
        Err(_) => METRICS.fetch_errors.inc(),
    }
    result
}

/// Times a Raft proposal (`client_write`) from proposal to apply result.
pub async fn observe_commit<T>(write: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let result = write.await;
    METRICS.raft_commit_latency_us.observe_duration(started.elapsed());
    result
}

/// Figures of the groups on this node, read from their Raft metrics.
#[derive(Debug, Default, PartialEq, Eq)]
struct GroupFigures {
    partitions_hosted: u64,
    partitions_led: u64,
    under_replicated: u64,
    /// Over partitions this node follows: committed entries not yet applied
    /// here, i.e. how far behind the leader this replica's consumer-visible
    /// high watermark is.
    follower_lag_entries_sum: u64,
    follower_lag_entries_max: u64,
    metadata_leader: bool,
}

fn group_figures(node: &Node) -> GroupFigures {
    let me = node.node_id();
    let mut figures = GroupFigures::default();
    // A quiet group sends no heartbeats by design: it was fully replicated
    // to beating followers when it went quiet.
    let quiet = node.quiescence.quiet_led();
    for handle in node.groups.all() {
        let metrics = handle.raft.metrics().borrow_watched().clone();
        if handle.group_id == METADATA_GROUP_ID {
            figures.metadata_leader = metrics.current_leader == Some(me);
            continue;
        }
        figures.partitions_hosted += 1;
        if metrics.current_leader == Some(me) {
            figures.partitions_led += 1;
            let last_index = metrics.last_log_index.unwrap_or(0);
            let out_of_sync = metrics.membership_config.voter_ids().filter(|id| *id != me).any(|id| {
                let matched = metrics.replication.as_ref().and_then(|r| r.get(&id).cloned().flatten());
                let acked = metrics.heartbeat.as_ref().and_then(|h| h.get(&id).cloned().flatten());
                let stale =
                    !quiet.contains(&handle.group_id) && acked.is_none_or(|at| (*at).elapsed() > OUT_OF_SYNC_AFTER);
                stale || last_index.saturating_sub(matched.map_or(0, |m| m.index)) > OUT_OF_SYNC_ENTRIES
            });
            figures.under_replicated += out_of_sync as u64;
        } else {
            let committed = metrics.cluster_committed.as_ref().map_or(0, |l| l.index);
            let applied = metrics.last_applied.as_ref().map_or(0, |l| l.index);
            let lag = committed.saturating_sub(applied);
            figures.follower_lag_entries_sum += lag;
            figures.follower_lag_entries_max = figures.follower_lag_entries_max.max(lag);
        }
    }
    figures
}

/// Prometheus text exposition (format 0.0.4).
struct Exposition(String);

impl Exposition {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.0, "{name}{labels} {value}");
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.header(name, "counter", help);
        self.sample(name, "", value);
    }

    fn gauge(&mut self, name: &str, help: &str, value: impl std::fmt::Display) {
        self.header(name, "gauge", help);
        self.sample(name, "", value);
    }

    /// Recorded values are divided by `divisor` to get the exported unit
    /// (1e6 for µs to seconds; division rounds exactly where a multiplication by 1e-6 would not).
    fn histogram(&mut self, name: &str, help: &str, snapshot: &HistogramSnapshot, divisor: f64) {
        self.header(name, "histogram", help);
        for (bound, count) in &snapshot.cumulative {
            self.sample(&format!("{name}_bucket"), &format!("{{le=\"{}\"}}", *bound as f64 / divisor), count);
        }
        self.sample(&format!("{name}_bucket"), "{le=\"+Inf\"}", snapshot.count);
        self.sample(&format!("{name}_sum"), "", snapshot.sum as f64 / divisor);
        self.sample(&format!("{name}_count"), "", snapshot.count);
    }
}

/// Renders every metric of the node.
pub async fn render(node: &Node) -> String {
    let m = &METRICS;
    let mut out = Exposition(String::with_capacity(16 * 1024));
    let requests = |out: &mut Exposition, name: &str, help: &str, ok: &Counter, errors: &Counter| {
        out.header(name, "counter", help);
        out.sample(name, "{result=\"ok\"}", ok.get());
        out.sample(name, "{result=\"error\"}", errors.get());
    };
    requests(
        &mut out,
        "strata_produce_requests_total",
        "Produce requests answered, by result.",
        &m.produce_ok,
        &m.produce_errors,
    );
    out.counter(
        "strata_produce_bytes_total",
        "Record batch bytes of accepted produce requests.",
        m.produce_bytes.get(),
    );
    out.counter("strata_produce_records_total", "Records of accepted produce requests.", m.produce_records.get());
    out.histogram(
        "strata_produce_latency_seconds",
        "Produce request handling time on the leader, validation to answer.",
        &m.produce_latency_us.snapshot(),
        1e6,
    );
    requests(
        &mut out,
        "strata_fetch_requests_total",
        "Fetch requests answered, by result.",
        &m.fetch_ok,
        &m.fetch_errors,
    );
    out.counter("strata_fetch_bytes_total", "Record bytes returned by fetches.", m.fetch_bytes.get());
    out.histogram(
        "strata_fetch_latency_seconds",
        "Fetch handling time, long-poll waits included.",
        &m.fetch_latency_us.snapshot(),
        1e6,
    );
    out.histogram(
        "strata_raft_commit_latency_seconds",
        "Time from proposing a produced batch to its apply result (replication, fsync on a majority, apply).",
        &m.raft_commit_latency_us.snapshot(),
        1e6,
    );

    let (fsync_latency, fsync_batch) = node.store.group_commit_histograms();
    out.histogram(
        "strata_group_commit_fsync_seconds",
        "Duration of each WAL fsync of the node-wide group-commit task.",
        &fsync_latency,
        1e6,
    );
    out.histogram(
        "strata_group_commit_batch_size",
        "Appends (of all groups) made durable by one group-commit fsync.",
        &fsync_batch,
        1.0,
    );

    let figures = group_figures(node);
    out.gauge("strata_partitions_hosted", "Partition replicas running on this node.", figures.partitions_hosted);
    out.gauge("strata_partitions_led", "Partitions this node leads.", figures.partitions_led);
    out.gauge(
        "strata_quiet_partitions",
        "Partition replicas on this node whose Raft timers are stopped (idle, quiet).",
        node.quiescence.timers_off(),
    );
    out.gauge(
        "strata_partitions_under_replicated",
        "Partitions led here with a replica that has not acknowledged for 5 s or is over 1000 entries behind.",
        figures.under_replicated,
    );
    out.gauge(
        "strata_follower_lag_entries",
        "Sum over partitions this node follows of committed entries not yet applied here (consumer-visible high watermark lag).",
        figures.follower_lag_entries_sum,
    );
    out.gauge(
        "strata_follower_lag_entries_max",
        "Largest committed-but-unapplied entry count over partitions this node follows.",
        figures.follower_lag_entries_max,
    );
    out.gauge("strata_metadata_leader", "1 when this node leads the metadata group.", figures.metadata_leader as u8);
    let clock = node.clock.now();
    out.gauge(
        "strata_clock_offset_ms",
        "This node's wall clock minus cluster time (the median of the nodes' clocks), ms; far from 0 means broken \
         time sync.",
        clock.local_offset_ms,
    );
    out.gauge(
        "strata_clock_trusted",
        "1 when a majority of the cluster's clocks agree on cluster time (stamps and time retention use it).",
        clock.trusted as u8,
    );
    out.gauge("strata_clock_peers_fresh", "Peers whose clock offset this node measured recently.", clock.fresh_peers);

    match node.store.engine_stats().await {
        Ok(engine) => {
            out.gauge("strata_rocksdb_write_stopped", "1 while RocksDB stops writes.", engine.write_stopped as u8);
            out.gauge(
                "strata_rocksdb_delayed_write_rate_bytes",
                "Rate RocksDB slows writes to, bytes/s; 0 when not delayed.",
                engine.delayed_write_rate_bytes,
            );
            if let Some(seconds) = engine.stall_seconds_total {
                out.header(
                    "strata_rocksdb_stall_seconds_total",
                    "counter",
                    "Time RocksDB writes stalled since the store opened.",
                );
                out.sample("strata_rocksdb_stall_seconds_total", "", seconds);
            }
            out.gauge("strata_rocksdb_running_compactions", "Compactions running now.", engine.running_compactions);
            out.gauge(
                "strata_rocksdb_compaction_pending",
                "Column families with a compaction pending.",
                engine.compaction_pending,
            );
            out.gauge(
                "strata_rocksdb_pending_compaction_bytes",
                "Bytes RocksDB estimates compaction must rewrite.",
                engine.pending_compaction_bytes,
            );
            out.gauge("strata_rocksdb_running_flushes", "Memtable flushes running now.", engine.running_flushes);
            out.header(
                "strata_rocksdb_written_bytes_total",
                "counter",
                "Bytes RocksDB wrote since the store opened, by kind: WAL, memtable flush, compaction.",
            );
            for (kind, bytes) in
                [("wal", engine.wal_bytes), ("flush", engine.flush_bytes), ("compaction", engine.compaction_bytes)]
            {
                out.sample("strata_rocksdb_written_bytes_total", &format!("{{kind=\"{kind}\"}}"), bytes);
            }
            out.header("strata_rocksdb_memtable_bytes", "gauge", "Memtable bytes by column family.");
            for (cf, memtable, _) in &engine.column_families {
                out.sample("strata_rocksdb_memtable_bytes", &format!("{{cf=\"{cf}\"}}"), memtable);
            }
            out.header("strata_rocksdb_sst_bytes", "gauge", "SST file bytes by column family.");
            for (cf, _, sst) in &engine.column_families {
                out.sample("strata_rocksdb_sst_bytes", &format!("{{cf=\"{cf}\"}}"), sst);
            }
        }
        Err(error) => tracing::warn!(%error, "cannot read rocksdb properties for metrics"),
    }
    out.0
}

/// Binds `address` now (so a bad address fails start-up) and serves
/// `/metrics` on it until the returned task is aborted.
pub async fn serve(address: &str, node: Node) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(address).await?;
    tracing::info!(address = %listener.local_addr()?, "metrics endpoint listening");
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_SCRAPES));
    Ok(tokio::spawn(async move {
        loop {
            let permit = permits.clone().acquire_owned().await.expect("the semaphore is never closed");
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors and the like: pause, do not spin.
                    tracing::warn!(%error, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let node = node.clone();
            tokio::spawn(async move {
                if let Err(error) = answer(stream, &node).await {
                    tracing::debug!(%error, "metrics request failed");
                }
                drop(permit);
            });
        }
    }))
}

/// Reads one request head and answers it; the connection then closes.
async fn answer(mut stream: TcpStream, node: &Node) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let read_head = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            if head.len() > MAX_REQUEST_HEAD_BYTES {
                return Err(std::io::Error::other("request head too large"));
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::other("connection closed before the request head ended"));
            }
            head.extend_from_slice(&chunk[..n]);
        }
        Ok(())
    };
    tokio::time::timeout(REQUEST_READ_TIMEOUT, read_head)
        .await
        .map_err(|_| std::io::Error::other("request head not received in time"))??;
    let request_line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let request_line = String::from_utf8_lossy(request_line);
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", render(node).await),
        ("GET", _) => ("404 Not Found", "only /metrics is served here\n".to_string()),
        _ => ("405 Method Not Allowed", "use GET /metrics\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_render_cumulative_buckets_in_seconds() {
        let histogram = Histogram::new(16);
        histogram.observe(10);
        histogram.observe(1000);
        let mut out = Exposition(String::new());
        out.histogram("x_seconds", "help", &histogram.snapshot(), 1e6);
        let text = out.0;
        assert!(text.starts_with("# HELP x_seconds help\n# TYPE x_seconds histogram\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{le=\"0.000016\"} 1\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{le=\"0.001024\"} 2\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{le=\"+Inf\"} 2\n"), "{text}");
        assert!(text.contains("x_seconds_sum 0.00101\n"), "{text}");
        assert!(text.contains("x_seconds_count 2\n"), "{text}");
    }

    #[tokio::test]
    async fn observers_count_outcomes() {
        let before = (METRICS.produce_ok.get(), METRICS.produce_errors.get(), METRICS.produce_records.get());
        let answer = strata_proto::v1::ProduceResponse { base_offset: 7, record_count: 3, ..Default::default() };
        let ok = observe_produce(100, async { Ok(answer.clone()) }).await;
        assert_eq!(ok.unwrap(), answer);
        let failed = observe_produce(100, async { Err(ApiError::internal("boom")) }).await;
        assert!(failed.is_err());
        // Other tests in this process may produce too: only check growth.
        assert!(METRICS.produce_ok.get() > before.0);
        assert!(METRICS.produce_errors.get() > before.1);
        assert!(METRICS.produce_records.get() >= before.2 + 3);
        assert_eq!(observe_commit(async { 5 }).await, 5);
        assert!(METRICS.raft_commit_latency_us.count() >= 1);
    }
}
