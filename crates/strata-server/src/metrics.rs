//! Prometheus metrics of a node, served on `GET /metrics` when
//! `metrics_listen` is set.
//!
//! Request figures (produce, fetch, Raft commit) are counted as they happen
//! in the process-wide [`METRICS`]: a process runs one node, and a static
//! keeps the instrumentation at the call sites to one line each. Everything
//! (those counters too) is read when scraped into a [`Scrape`], and the
//! partition, group-commit, clock and RocksDB figures are only computed
//! then, so an idle, unscraped node does no metrics work at all.
//!
//! Consumer group figures (members, rebalances, offset commits, lag; one
//! sample per group and family, labelled `group`) come from the group
//! coordinator and only from the metadata leader: a scrape of the leader
//! asks the partitions' leaders for the high watermarks lag is counted
//! from, and a node that does not lead (or cannot confirm it does) exports
//! no group figures. Groups, and so these label values, are bounded by
//! MAX_GROUPS.
//!
//! Encoding is `prometheus-client`'s: OpenMetrics 1.0 text for scrapers that
//! ask for it in `Accept` (Prometheus does), the Prometheus text format
//! 0.0.4 for the rest (curl, older scrapers). Sample names are the same in
//! both. HTTP is hyper's HTTP/1.1 server: one request per connection,
//! bounded header size, header read deadline, a deadline on the whole
//! exchange and bounded concurrency; a malformed request gets hyper's error
//! answer and closes its connection, nothing more.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, ACCEPT, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use openraft::async_runtime::WatchReceiver;
use openraft::Instant as _;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use strata_core::metrics::{Counter, Histogram, HistogramSnapshot};
use strata_state::metadata::METADATA_GROUP_ID;
use strata_storage::EngineStats;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::clock::ClusterNow;
use crate::coordinator::GroupMetrics;
use crate::error::ApiError;
use crate::node::Node;
use crate::service::StrataService;
use crate::transactions::TxnMetrics;

use strata_core::limits::{
    METRICS_EXCHANGE_TIMEOUT as EXCHANGE_TIMEOUT, METRICS_MAX_CONCURRENT_SCRAPES as MAX_CONCURRENT_SCRAPES,
    METRICS_MAX_REQUEST_HEAD_BYTES as MAX_REQUEST_HEAD_BYTES, METRICS_REQUEST_READ_TIMEOUT as REQUEST_READ_TIMEOUT,
    OUT_OF_SYNC_AFTER, OUT_OF_SYNC_ENTRIES,
};

/// Initial capacity of a rendered scrape: a node's exposition is 10-20 KB.
const SCRAPE_TEXT_CAPACITY: usize = 16 * 1024;

/// How long a scrape of the metadata leader may spend asking partition
/// leaders for the high watermarks of committed offsets: a quarter of
/// EXCHANGE_TIMEOUT, so the scrape still answers within Prometheus's
/// default scrape timeout (half EXCHANGE_TIMEOUT); partitions not asked by
/// then count with the last high watermark the coordinator saw.
const GROUP_LAG_LOOKUP_TIME: Duration = Duration::from_millis(EXCHANGE_TIMEOUT.as_millis() as u64 / 4);

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
    /// Bytes of entries and snapshot chunks sent to replicas joining a
    /// partition (partition moves), throttled or not.
    pub move_sent_bytes: Counter,
    /// Time those messages waited for the move throttle, µs.
    pub move_throttle_wait_us: Counter,
    /// Snapshot streams this node received whole and handed to the install.
    pub snapshots_received: Counter,
    /// Elections this node started, by group kind (see `elections`).
    pub elections_metadata: Counter,
    pub elections_partition: Counter,
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
            move_sent_bytes: Counter::new(),
            move_throttle_wait_us: Counter::new(),
            snapshots_received: Counter::new(),
            elections_metadata: Counter::new(),
            elections_partition: Counter::new(),
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
    /// Partitions led here with an open transaction: (topic, partition,
    /// high watermark minus last stable offset).
    lso_lag: Vec<(String, String, u64)>,
    /// Leader changes seen here of every partition hosted here: (topic,
    /// partition, changes).
    leader_changes: Vec<(String, String, u64)>,
    metadata_leader_changes: u64,
}

/// Partitions led here with a voter out of sync (the
/// `strata_partitions_under_replicated` figure), for `strata cluster status`.
pub(crate) fn under_replicated_led(node: &Node) -> u64 {
    group_figures(node).under_replicated
}

fn group_figures(node: &Node) -> GroupFigures {
    let me = node.node_id();
    let mut figures = GroupFigures::default();
    // A quiet group sends no heartbeats by design: it was fully replicated
    // to beating followers when it went quiet.
    let quiet = node.quiescence.quiet_led();
    // Groups led here with an open transaction; named once the loop is done.
    let mut lagging: Vec<(u64, u64)> = Vec::new();
    // Every partition hosted here, with its leader changes.
    let mut changes: Vec<(u64, u64)> = Vec::new();
    for handle in node.groups.all() {
        let metrics = handle.raft.metrics().borrow_watched().clone();
        let leader_changes = handle.leader_changes.load(std::sync::atomic::Ordering::Relaxed);
        if handle.group_id == METADATA_GROUP_ID {
            figures.metadata_leader = metrics.current_leader == Some(me);
            figures.metadata_leader_changes = leader_changes;
            continue;
        }
        figures.partitions_hosted += 1;
        changes.push((handle.group_id, leader_changes));
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
            let lag = handle.state.borrow().as_partition().map_or(0, |p| p.next_offset - p.last_stable_offset());
            if lag > 0 {
                lagging.push((handle.group_id, lag));
            }
        } else {
            let committed = metrics.cluster_committed.as_ref().map_or(0, |l| l.index);
            let applied = metrics.last_applied.as_ref().map_or(0, |l| l.index);
            let lag = committed.saturating_sub(applied);
            figures.follower_lag_entries_sum += lag;
            figures.follower_lag_entries_max = figures.follower_lag_entries_max.max(lag);
        }
    }
    if !lagging.is_empty() || !changes.is_empty() {
        let state = node.metadata_state();
        let assignments = state.assignments();
        let named = |group_id: u64, value: u64| {
            assignments.get(&group_id).map(|(topic, partition, _)| (topic.name.clone(), partition.to_string(), value))
        };
        figures.lso_lag = lagging.into_iter().filter_map(|(group_id, lag)| named(group_id, lag)).collect();
        // A partition hosted here but no longer in the metadata state (its
        // topic deleted, the group not stopped yet) has no name: left out.
        figures.leader_changes = changes.into_iter().filter_map(|(group_id, n)| named(group_id, n)).collect();
    }
    figures
}

/// The text formats a scrape can be answered in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text (ends with `# EOF`, declares units).
    OpenMetrics,
    /// The Prometheus text format, version 0.0.4.
    Prometheus,
}

impl Format {
    /// OpenMetrics when `accept` names `application/openmetrics-text` with
    /// a weight above 0, as Prometheus asks; the Prometheus text format
    /// otherwise, the one every scraper reads (the negotiation of the
    /// Prometheus project's own client libraries).
    fn negotiate(accept: Option<&str>) -> Format {
        let wants_openmetrics = accept.unwrap_or("").split(',').any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media_type = parts.next().unwrap_or("");
            let refused = parts.any(|parameter| {
                parameter.split_once('=').is_some_and(|(key, value)| {
                    key.trim() == "q" && value.trim().parse::<f64>().is_ok_and(|q| q <= 0.0)
                })
            });
            media_type.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        });
        if wants_openmetrics {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

/// Every figure of one scrape, read when the scrape arrives; encoding it
/// reads nothing more.
#[derive(Debug)]
struct Scrape {
    produce_ok: u64,
    produce_errors: u64,
    produce_bytes: u64,
    produce_records: u64,
    produce_latency_us: HistogramSnapshot,
    fetch_ok: u64,
    fetch_errors: u64,
    fetch_bytes: u64,
    fetch_latency_us: HistogramSnapshot,
    raft_commit_latency_us: HistogramSnapshot,
    move_sent_bytes: u64,
    move_throttle_wait_us: u64,
    snapshots_received: u64,
    /// The cluster's move throttle as this node's metadata state has it;
    /// 0 when off.
    move_throttle_bytes_per_sec: u64,
    fsync_latency_us: HistogramSnapshot,
    fsync_batch_appends: HistogramSnapshot,
    groups: GroupFigures,
    /// Elections this node started: (metadata group, partition groups).
    elections: (u64, u64),
    /// Consumer groups, by id; empty unless this node leads the metadata group.
    consumer_groups: Vec<GroupMetrics>,
    /// The transaction coordinator's figures; `None` unless this node leads
    /// the metadata group.
    transactions: Option<TxnMetrics>,
    /// Partitions moving to other replicas; `None` unless this node leads
    /// the metadata group.
    reassignments: Option<u64>,
    /// The cluster's nodes by membership (active, rebuilding, removing);
    /// empty unless this node leads the metadata group.
    members: Vec<([(&'static str, &'static str); 1], u64)>,
    quiet_partitions: u64,
    clock: ClusterNow,
    /// `None` when RocksDB's properties could not be read (logged).
    engine: Option<EngineStats>,
}

impl Scrape {
    async fn read(node: &Node) -> Scrape {
        let m = &METRICS;
        let (fsync_latency_us, fsync_batch_appends) = node.store.group_commit_histograms();
        let engine = match node.store.engine_stats().await {
            Ok(engine) => Some(engine),
            Err(error) => {
                tracing::warn!(%error, "cannot read rocksdb properties for metrics");
                None
            }
        };
        let lookup = StrataService::new(node.clone());
        let consumer_groups = node.coordinator.metrics(node, &lookup, GROUP_LAG_LOOKUP_TIME).await.unwrap_or_default();
        Scrape {
            produce_ok: m.produce_ok.get(),
            produce_errors: m.produce_errors.get(),
            produce_bytes: m.produce_bytes.get(),
            produce_records: m.produce_records.get(),
            produce_latency_us: m.produce_latency_us.snapshot(),
            fetch_ok: m.fetch_ok.get(),
            fetch_errors: m.fetch_errors.get(),
            fetch_bytes: m.fetch_bytes.get(),
            fetch_latency_us: m.fetch_latency_us.snapshot(),
            raft_commit_latency_us: m.raft_commit_latency_us.snapshot(),
            move_sent_bytes: m.move_sent_bytes.get(),
            move_throttle_wait_us: m.move_throttle_wait_us.get(),
            snapshots_received: m.snapshots_received.get(),
            move_throttle_bytes_per_sec: node.metadata_state().move_throttle_bytes_per_sec.unwrap_or(0),
            fsync_latency_us,
            fsync_batch_appends,
            groups: group_figures(node),
            elections: (m.elections_metadata.get(), m.elections_partition.get()),
            consumer_groups,
            transactions: node.transactions.metrics(node),
            reassignments: crate::coordinator::leading_term(node)
                .map(|_| node.metadata_state().reassignments.len() as u64),
            members: crate::coordinator::leading_term(node).map(|_| members_by_status(node)).unwrap_or_default(),
            quiet_partitions: node.quiescence.timers_off(),
            clock: node.clock.now(),
            engine,
        }
    }

    /// The scrape as text in `format`.
    fn encode(self, format: Format) -> Result<String, fmt::Error> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut text = String::with_capacity(SCRAPE_TEXT_CAPACITY);
        match format {
            Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut text, &registry)?,
            Format::Prometheus => prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)?,
        }
        Ok(text)
    }
}

/// Microseconds, the unit latency histograms record in, per second, the
/// unit they are exported in.
const MICROS_PER_SECOND: f64 = 1e6;

/// Names are given without the suffixes the encoder adds: a counter's
/// `_total`, and the unit (`_seconds`, `_bytes`), which OpenMetrics also
/// declares in a `# UNIT` line. The exported names are those of the
/// README, the tests and the benchmark suite (`strata_produce_bytes_total`,
/// `strata_produce_latency_seconds_count`, ...).
impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let e = &mut encoder;
        let (seconds, bytes) = (Some(&Unit::Seconds), Some(&Unit::Bytes));
        let by_result = |ok, errors| [([("result", "ok")], ok), ([("result", "error")], errors)];
        let help = "Produce requests answered, by result.";
        labelled(
            e,
            MetricType::Counter,
            "strata_produce_requests",
            None,
            help,
            &by_result(self.produce_ok, self.produce_errors),
        )?;
        let help = "Record batch bytes of accepted produce requests.";
        counter(e, "strata_produce", bytes, help, self.produce_bytes)?;
        counter(e, "strata_produce_records", None, "Records of accepted produce requests.", self.produce_records)?;
        let help = "Produce request handling time on the leader, validation to answer.";
        histogram(e, "strata_produce_latency", seconds, help, &self.produce_latency_us, MICROS_PER_SECOND)?;
        let help = "Fetch requests answered, by result.";
        labelled(
            e,
            MetricType::Counter,
            "strata_fetch_requests",
            None,
            help,
            &by_result(self.fetch_ok, self.fetch_errors),
        )?;
        counter(e, "strata_fetch", bytes, "Record bytes returned by fetches.", self.fetch_bytes)?;
        let help = "Fetch handling time, long-poll waits included.";
        histogram(e, "strata_fetch_latency", seconds, help, &self.fetch_latency_us, MICROS_PER_SECOND)?;
        let help = "Time from proposing a produced batch to its apply result (replication, fsync on a majority, \
                    apply).";
        histogram(e, "strata_raft_commit_latency", seconds, help, &self.raft_commit_latency_us, MICROS_PER_SECOND)?;
        let help = "Duration of each WAL fsync of the node-wide group-commit task.";
        histogram(e, "strata_group_commit_fsync", seconds, help, &self.fsync_latency_us, MICROS_PER_SECOND)?;
        let help = "Appends (of all groups) made durable by one group-commit fsync.";
        histogram(e, "strata_group_commit_batch_size", None, help, &self.fsync_batch_appends, 1.0)?;

        let groups = &self.groups;
        gauge(
            e,
            "strata_partitions_hosted",
            None,
            "Partition replicas running on this node.",
            groups.partitions_hosted,
        )?;
        gauge(e, "strata_partitions_led", None, "Partitions this node leads.", groups.partitions_led)?;
        let help = "Partition replicas on this node whose Raft timers are stopped (idle, quiet).";
        gauge(e, "strata_quiet_partitions", None, help, self.quiet_partitions)?;
        let help = format!(
            "Partitions led here with a replica that has not acknowledged for {} s or is over {OUT_OF_SYNC_ENTRIES} \
             entries behind.",
            OUT_OF_SYNC_AFTER.as_secs()
        );
        gauge(e, "strata_partitions_under_replicated", None, &help, groups.under_replicated)?;
        let help = "Sum over partitions this node follows of committed entries not yet applied here \
                    (consumer-visible high watermark lag).";
        gauge(e, "strata_follower_lag_entries", None, help, groups.follower_lag_entries_sum)?;
        let help = "Largest committed-but-unapplied entry count over partitions this node follows.";
        gauge(e, "strata_follower_lag_entries_max", None, help, groups.follower_lag_entries_max)?;
        let help = "1 when this node leads the metadata group.";
        gauge(e, "strata_metadata_leader", None, help, u32::from(groups.metadata_leader))?;
        self.encode_leadership(e)?;
        let help = "This node's wall clock minus cluster time (the median of the nodes' clocks), ms; far from 0 \
                    means broken time sync.";
        gauge(e, "strata_clock_offset_ms", None, help, self.clock.local_offset_ms)?;
        let help = "1 when a majority of the cluster's clocks agree on cluster time (stamps and time retention use \
                    it).";
        gauge(e, "strata_clock_trusted", None, help, u32::from(self.clock.trusted))?;
        let help = "Peers whose clock offset this node measured recently.";
        gauge(e, "strata_clock_peers_fresh", None, help, self.clock.fresh_peers)?;
        self.encode_consumer_groups(e)?;
        self.encode_transactions(e)?;
        let help = "Bytes of entries and snapshot chunks this node sent to replicas joining a partition \
                    (partition moves).";
        counter(e, "strata_move_sent", bytes, help, self.move_sent_bytes)?;
        let help = "Time those messages waited for the move throttle.";
        counter(e, "strata_move_throttle_wait", seconds, help, self.move_throttle_wait_us as f64 / MICROS_PER_SECOND)?;
        let help = "Snapshot streams this node received whole and handed to the install: a new replica's copy of \
                    a partition, or a replica that fell behind the leader's log.";
        counter(e, "strata_snapshots_received", None, help, self.snapshots_received)?;
        // Bytes per second: not a unit OpenMetrics knows, so none is declared.
        let help = "The cluster's move throttle (--throttle) per sending node, bytes/s; 0 when off.";
        gauge(e, "strata_move_throttle_rate_bytes", None, help, self.move_throttle_bytes_per_sec)?;
        if let Some(moving) = self.reassignments {
            let help = "Partitions moving to other replicas (strata partition reassign; exported by the metadata \
                        leader).";
            gauge(e, "strata_partition_reassignments", None, help, moving)?;
        }
        if !self.members.is_empty() {
            let help = "The cluster's nodes by membership: active, rebuilding (back with an empty data dir, not \
                        voting until caught up), removing (exported by the metadata leader).";
            labelled(e, MetricType::Gauge, "strata_cluster_nodes", None, help, &self.members)?;
        }

        let Some(engine) = &self.engine else { return Ok(()) };
        gauge(
            e,
            "strata_rocksdb_write_stopped",
            None,
            "1 while RocksDB stops writes.",
            u32::from(engine.write_stopped),
        )?;
        // Bytes per second: not a unit OpenMetrics knows, so none is declared.
        let help = "Rate RocksDB slows writes to, bytes/s; 0 when not delayed.";
        gauge(e, "strata_rocksdb_delayed_write_rate_bytes", None, help, engine.delayed_write_rate_bytes)?;
        if let Some(stalled) = engine.stall_seconds_total {
            let help = "Time RocksDB writes stalled since the store opened.";
            counter(e, "strata_rocksdb_stall", seconds, help, stalled)?;
        }
        let help = "Compactions running now.";
        gauge(e, "strata_rocksdb_running_compactions", None, help, engine.running_compactions)?;
        let help = "Column families with a compaction pending.";
        gauge(e, "strata_rocksdb_compaction_pending", None, help, engine.compaction_pending)?;
        let help = "Bytes RocksDB estimates compaction must rewrite.";
        gauge(e, "strata_rocksdb_pending_compaction", bytes, help, engine.pending_compaction_bytes)?;
        gauge(e, "strata_rocksdb_running_flushes", None, "Memtable flushes running now.", engine.running_flushes)?;
        let help = "Bytes RocksDB wrote since the store opened, by kind: WAL, memtable flush, compaction.";
        let written = [
            ([("kind", "wal")], engine.wal_bytes),
            ([("kind", "flush")], engine.flush_bytes),
            ([("kind", "compaction")], engine.compaction_bytes),
        ];
        labelled(e, MetricType::Counter, "strata_rocksdb_written", bytes, help, &written)?;
        let memtable: Vec<_> =
            engine.column_families.iter().map(|(cf, memtable, _)| ([("cf", *cf)], *memtable)).collect();
        labelled(
            e,
            MetricType::Gauge,
            "strata_rocksdb_memtable",
            bytes,
            "Memtable bytes by column family.",
            &memtable,
        )?;
        let sst: Vec<_> = engine.column_families.iter().map(|(cf, _, sst)| ([("cf", *cf)], *sst)).collect();
        labelled(e, MetricType::Gauge, "strata_rocksdb_sst", bytes, "SST file bytes by column family.", &sst)
    }
}

impl Scrape {
    /// Elections and leader changes (see `crate::elections`).
    fn encode_leadership(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let help = "Elections this node started since it started, by group kind: terms in which it campaigned \
                    (voted for itself as a Candidate, or led a new term before the Candidate was seen). Pre-vote \
                    rounds that did not become an election are not counted; campaigns closer together than two \
                    readings of openraft's metrics count once.";
        let (metadata, partition) = self.elections;
        let by_kind = [([("kind", "metadata")], metadata), ([("kind", "partition")], partition)];
        labelled(e, MetricType::Counter, "strata_raft_elections", None, help, &by_kind)?;
        let help = "Leader changes of the metadata group seen by this node since it started: a known leader whose \
                    term or node differs from the last known one (the first leader seen is not a change).";
        counter(e, "strata_metadata_leader_changes", None, help, self.groups.metadata_leader_changes)?;
        // One sample per partition hosted here: up to
        // MAX_PARTITION_REPLICAS_PER_NODE series, tens of KB per scrape at a
        // thousand partitions. Zero samples are kept so that a rate starts
        // from the partition's first change, not its second.
        let help = "Leader changes of each partition hosted here, seen by this node since it hosted it: a known \
                    leader whose term or node differs from the last known one (the first leader seen is not a \
                    change). The sample leaves with the replica.";
        let changes: Vec<_> = self
            .groups
            .leader_changes
            .iter()
            .map(|(topic, partition, n)| ([("topic", topic.as_str()), ("partition", partition.as_str())], *n))
            .collect();
        labelled(e, MetricType::Counter, "strata_leader_changes", None, help, &changes)
    }

    /// The transaction families: the last stable offset's lag on every
    /// node, the coordinator's figures on the metadata leader.
    fn encode_transactions(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let help = "Records between the last stable offset and the high watermark of a partition led here, which \
                    read_committed readers wait for (partitions with an open transaction only).";
        let lags: Vec<_> = self
            .groups
            .lso_lag
            .iter()
            .map(|(topic, partition, lag)| ([("topic", topic.as_str()), ("partition", partition.as_str())], *lag))
            .collect();
        labelled(e, MetricType::Gauge, "strata_partition_lso_lag", None, help, &lags)?;
        let Some(txns) = &self.transactions else { return Ok(()) };
        let help = "Transactions open or writing their markers (exported by the metadata leader).";
        gauge(e, "strata_transactions_open", None, help, txns.open)?;
        let help = "Transactions completed through this node while it led the metadata group, by outcome.";
        let ended = [([("result", "commit")], txns.commits), ([("result", "abort")], txns.aborts)];
        labelled(e, MetricType::Counter, "strata_transactions", None, help, &ended)?;
        let help = "Transactions this node aborted because they ran past their transaction timeout.";
        counter(e, "strata_transaction_timeouts", None, help, txns.timeouts)
    }

    /// The consumer group families, when there are groups (only the
    /// metadata leader has them): one sample per group in each.
    fn encode_consumer_groups(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        if self.consumer_groups.is_empty() {
            return Ok(());
        }
        let groups = &self.consumer_groups;
        let help = "Members of the consumer group (exported by the metadata leader).";
        labelled(e, MetricType::Gauge, "strata_group_members", None, help, &by_group(groups, |g| Some(g.members)))?;
        let help = "Consumer group rebalances: group epoch bumps (a join, leave, expiry, subscription or topic \
                    change), each computing a new target assignment.";
        labelled(
            e,
            MetricType::Counter,
            "strata_group_rebalances",
            None,
            help,
            &by_group(groups, |g| Some(g.rebalances)),
        )?;
        let help = "Partition offsets committed to the consumer group through this node while it led the \
                    metadata group.";
        let commits = by_group(groups, |g| Some(g.offset_commits));
        labelled(e, MetricType::Counter, "strata_group_offset_commits", None, help, &commits)?;
        let help = "Records behind: high watermark minus committed offset, summed over the group's partitions \
                    with a committed offset.";
        labelled(e, MetricType::Gauge, "strata_group_lag", None, help, &by_group(groups, |g| g.lag.map(|l| l.sum)))?;
        let help = "Largest lag of one partition of the consumer group.";
        labelled(e, MetricType::Gauge, "strata_group_lag_max", None, help, &by_group(groups, |g| g.lag.map(|l| l.max)))
    }
}

/// One sample per group that has a value, labelled with the group id.
fn by_group(
    groups: &[GroupMetrics],
    value: impl Fn(&GroupMetrics) -> Option<u64>,
) -> Vec<([(&'static str, &str); 1], u64)> {
    groups.iter().filter_map(|g| value(g).map(|v| ([("group", g.group_id.as_str())], v))).collect()
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    unit: Option<&Unit>,
    help: &str,
    value: impl EncodeCounterValue,
) -> fmt::Result {
    encoder.encode_descriptor(name, help, unit, MetricType::Counter)?.encode_counter::<NoLabelSet, _, u64>(&value, None)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    unit: Option<&Unit>,
    help: &str,
    value: impl EncodeGaugeValue,
) -> fmt::Result {
    encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?.encode_gauge(&value)
}

/// How many of the cluster's nodes are in each membership status (a node
/// of initial_cluster that has not registered yet counts as active).
fn members_by_status(node: &Node) -> Vec<([(&'static str, &'static str); 1], u64)> {
    use strata_state::members::MemberStatus;
    let state = node.metadata_state();
    let mut counts = [0u64; 3];
    for id in node.cluster_nodes() {
        let status = state.members.nodes.get(&id).map_or(MemberStatus::Active, |m| m.status);
        counts[status as usize] += 1;
    }
    [MemberStatus::Active, MemberStatus::Rebuilding, MemberStatus::Removing]
        .into_iter()
        .map(|status| ([("membership", status.name())], counts[status as usize]))
        .collect()
}

/// One counter or gauge family with a sample per label set.
fn labelled(
    encoder: &mut DescriptorEncoder,
    kind: MetricType,
    name: &str,
    unit: Option<&Unit>,
    help: &str,
    samples: &[(impl EncodeLabelSet, u64)],
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, unit, kind)?;
    for (labels, value) in samples {
        let mut sample = family.encode_family(labels)?;
        match kind {
            MetricType::Counter => sample.encode_counter::<NoLabelSet, _, u64>(value, None)?,
            MetricType::Gauge => sample.encode_gauge(value)?,
            other => unreachable!("labelled families are counters or gauges, not {other:?}"),
        }
    }
    Ok(())
}

/// Recorded values are divided by `divisor` to get the exported unit
/// (1e6 for µs to seconds; division rounds exactly where a multiplication
/// by 1e-6 would not). The encoder takes each bucket's own count and sums
/// them itself, so the snapshot's cumulative counts are taken apart, and
/// values above the last bound go to an explicit `+Inf` bucket.
fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    unit: Option<&Unit>,
    help: &str,
    snapshot: &HistogramSnapshot,
    divisor: f64,
) -> fmt::Result {
    let mut buckets = Vec::with_capacity(snapshot.cumulative.len() + 1);
    let mut below = 0;
    for &(bound, cumulative) in &snapshot.cumulative {
        buckets.push((bound as f64 / divisor, cumulative.saturating_sub(below)));
        below = cumulative;
    }
    buckets.push((f64::INFINITY, snapshot.count.saturating_sub(below)));
    encoder.encode_descriptor(name, help, unit, MetricType::Histogram)?.encode_histogram::<NoLabelSet>(
        snapshot.sum as f64 / divisor,
        snapshot.count,
        &buckets,
        None,
    )
}

/// Binds `address` now (so a bad address fails start-up) and serves
/// `/metrics` on it until the returned task is aborted.
pub async fn serve(address: &str, node: Node) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(address).await?;
    tracing::info!(address = %listener.local_addr()?, "metrics endpoint listening");
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_SCRAPES));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(REQUEST_READ_TIMEOUT)
        .max_header_size(MAX_REQUEST_HEAD_BYTES)
        // One request per connection: scrapes are seconds apart, and no
        // idle connection holds a slot between them.
        .keep_alive(false);
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
            let service = hyper::service::service_fn(move |request| {
                let node = node.clone();
                async move { Ok::<_, Infallible>(answer(&request, &node).await) }
            });
            let connection = http.serve_connection(TokioIo::new(stream), service);
            tokio::spawn(async move {
                match tokio::time::timeout(EXCHANGE_TIMEOUT, connection).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => tracing::debug!(%error, "metrics request failed"),
                    Err(_) => tracing::debug!("metrics exchange cut off after {EXCHANGE_TIMEOUT:?}"),
                }
                drop(permit);
            });
        }
    }))
}

fn plain_text(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// 200 with the scrape for `GET` or `HEAD /metrics` (query ignored), 405 for
/// other methods there, 404 for every other path.
async fn answer<B>(request: &Request<B>, node: &Node) -> Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        return plain_text(StatusCode::NOT_FOUND, "only /metrics is served here\n");
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain_text(StatusCode::METHOD_NOT_ALLOWED, "use GET /metrics\n");
        response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let format = Format::negotiate(request.headers().get(ACCEPT).and_then(|value| value.to_str().ok()));
    match Scrape::read(node).await.encode(format) {
        Ok(text) => {
            let mut response = Response::new(Full::new(Bytes::from(text)));
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
            response
        }
        Err(error) => {
            tracing::error!(%error, "cannot encode the metrics");
            plain_text(StatusCode::INTERNAL_SERVER_ERROR, "the metrics could not be encoded; see the node's log\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_testkit::openmetrics;

    /// A scrape with every family present: RocksDB figures, a stall time,
    /// a latency above the last bucket, and a label value to escape.
    fn full_scrape() -> Scrape {
        let latency = Histogram::new(16);
        latency.observe(10);
        latency.observe(1000);
        // Above the last bound (16 µs << 23, about 134 s): +Inf only.
        latency.observe(200_000_000);
        let batch = Histogram::new(1);
        batch.observe(3);
        Scrape {
            produce_ok: 5,
            produce_errors: 1,
            produce_bytes: 700,
            produce_records: 9,
            produce_latency_us: latency.snapshot(),
            fetch_ok: 2,
            fetch_errors: 0,
            fetch_bytes: 300,
            fetch_latency_us: Histogram::new(16).snapshot(),
            raft_commit_latency_us: latency.snapshot(),
            move_sent_bytes: 4096,
            move_throttle_wait_us: 1_500_000,
            snapshots_received: 1,
            move_throttle_bytes_per_sec: 20 << 20,
            fsync_latency_us: latency.snapshot(),
            fsync_batch_appends: batch.snapshot(),
            groups: GroupFigures {
                partitions_hosted: 4,
                partitions_led: 2,
                under_replicated: 1,
                follower_lag_entries_sum: 7,
                follower_lag_entries_max: 5,
                metadata_leader: true,
                lso_lag: vec![("orders".into(), "2".into(), 4)],
                leader_changes: vec![("orders".into(), "2".into(), 3), ("orders".into(), "3".into(), 0)],
                metadata_leader_changes: 1,
            },
            elections: (2, 7),
            consumer_groups: vec![
                GroupMetrics {
                    group_id: "readers".into(),
                    members: 3,
                    rebalances: 4,
                    offset_commits: 120,
                    lag: Some(crate::coordinator::Lag { sum: 9, max: 5 }),
                },
                // No partition with both a committed offset and a known high
                // watermark: no lag sample.
                GroupMetrics {
                    group_id: "new \"one\"".into(),
                    members: 1,
                    rebalances: 1,
                    offset_commits: 0,
                    lag: None,
                },
            ],
            transactions: Some(TxnMetrics { open: 1, commits: 5, aborts: 2, timeouts: 1 }),
            reassignments: Some(2),
            members: vec![([("membership", "active")], 3), ([("membership", "rebuilding")], 1)],
            quiet_partitions: 3,
            clock: ClusterNow { ms: 1, local_offset_ms: -12, trusted: true, fresh_peers: 2 },
            engine: Some(EngineStats {
                stall_seconds_total: Some(1.5),
                column_families: vec![("default", 10, 20), ("odd \"cf\"", 30, 40)],
                wal_bytes: 100,
                ..EngineStats::default()
            }),
        }
    }

    /// Every sample name a node exposes: the README, the tests, jepsen and
    /// the benchmark suite read these, so a rename must fail here first.
    const SAMPLE_NAMES: &[&str] = &[
        "strata_produce_requests_total",
        "strata_produce_bytes_total",
        "strata_produce_records_total",
        "strata_produce_latency_seconds_sum",
        "strata_produce_latency_seconds_count",
        "strata_produce_latency_seconds_bucket",
        "strata_fetch_requests_total",
        "strata_fetch_bytes_total",
        "strata_fetch_latency_seconds_sum",
        "strata_fetch_latency_seconds_count",
        "strata_fetch_latency_seconds_bucket",
        "strata_raft_commit_latency_seconds_sum",
        "strata_raft_commit_latency_seconds_count",
        "strata_raft_commit_latency_seconds_bucket",
        "strata_group_commit_fsync_seconds_sum",
        "strata_group_commit_fsync_seconds_count",
        "strata_group_commit_fsync_seconds_bucket",
        "strata_group_commit_batch_size_sum",
        "strata_group_commit_batch_size_count",
        "strata_group_commit_batch_size_bucket",
        "strata_partitions_hosted",
        "strata_partitions_led",
        "strata_quiet_partitions",
        "strata_partitions_under_replicated",
        "strata_follower_lag_entries",
        "strata_follower_lag_entries_max",
        "strata_metadata_leader",
        "strata_raft_elections_total",
        "strata_metadata_leader_changes_total",
        "strata_leader_changes_total",
        "strata_clock_offset_ms",
        "strata_clock_trusted",
        "strata_clock_peers_fresh",
        "strata_group_members",
        "strata_group_rebalances_total",
        "strata_group_offset_commits_total",
        "strata_group_lag",
        "strata_group_lag_max",
        "strata_partition_lso_lag",
        "strata_transactions_open",
        "strata_transactions_total",
        "strata_transaction_timeouts_total",
        "strata_move_sent_bytes_total",
        "strata_move_throttle_wait_seconds_total",
        "strata_snapshots_received_total",
        "strata_move_throttle_rate_bytes",
        "strata_partition_reassignments",
        "strata_cluster_nodes",
        "strata_rocksdb_write_stopped",
        "strata_rocksdb_delayed_write_rate_bytes",
        "strata_rocksdb_stall_seconds_total",
        "strata_rocksdb_running_compactions",
        "strata_rocksdb_compaction_pending",
        "strata_rocksdb_pending_compaction_bytes",
        "strata_rocksdb_running_flushes",
        "strata_rocksdb_written_bytes_total",
        "strata_rocksdb_memtable_bytes",
        "strata_rocksdb_sst_bytes",
    ];

    /// Every sample, in order.
    fn samples(families: &[openmetrics::Family]) -> Vec<&openmetrics::Sample> {
        families.iter().flat_map(|f| &f.samples).collect()
    }

    #[test]
    fn a_scrape_is_strict_openmetrics_with_the_documented_names() {
        let text = full_scrape().encode(Format::OpenMetrics).unwrap();
        let families = openmetrics::parse(&text).unwrap_or_else(|error| panic!("{error}\n{text}"));
        assert!(families.iter().all(|f| f.help.as_deref().is_some_and(|h| !h.is_empty())), "{text}");
        let mut names: Vec<&str> = samples(&families).into_iter().map(|s| s.name.as_str()).collect();
        names.dedup();
        assert_eq!(names, SAMPLE_NAMES, "{text}");

        let value = |name: &str, labels: &[(&str, &str)]| {
            let labels: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            samples(&families).into_iter().find(|s| s.name == name && s.labels == labels).map(|s| s.value)
        };
        assert_eq!(value("strata_produce_requests_total", &[("result", "ok")]), Some(5.0));
        assert_eq!(value("strata_produce_requests_total", &[("result", "error")]), Some(1.0));
        assert_eq!(value("strata_produce_bytes_total", &[]), Some(700.0));
        assert_eq!(value("strata_metadata_leader", &[]), Some(1.0));
        assert_eq!(value("strata_raft_elections_total", &[("kind", "metadata")]), Some(2.0));
        assert_eq!(value("strata_raft_elections_total", &[("kind", "partition")]), Some(7.0));
        assert_eq!(value("strata_metadata_leader_changes_total", &[]), Some(1.0));
        assert_eq!(value("strata_leader_changes_total", &[("topic", "orders"), ("partition", "2")]), Some(3.0));
        assert_eq!(value("strata_leader_changes_total", &[("topic", "orders"), ("partition", "3")]), Some(0.0));
        assert_eq!(value("strata_clock_offset_ms", &[]), Some(-12.0));
        assert_eq!(value("strata_rocksdb_stall_seconds_total", &[]), Some(1.5));
        assert_eq!(value("strata_rocksdb_written_bytes_total", &[("kind", "wal")]), Some(100.0));
        assert_eq!(value("strata_rocksdb_sst_bytes", &[("cf", "odd \"cf\"")]), Some(40.0));
        let readers = [("group", "readers")];
        assert_eq!(value("strata_group_members", &readers), Some(3.0));
        assert_eq!(value("strata_group_rebalances_total", &readers), Some(4.0));
        assert_eq!(value("strata_group_offset_commits_total", &readers), Some(120.0));
        assert_eq!(value("strata_group_lag", &readers), Some(9.0));
        assert_eq!(value("strata_group_lag_max", &readers), Some(5.0));
        let other = [("group", "new \"one\"")];
        assert_eq!(value("strata_group_members", &other), Some(1.0));
        assert_eq!((value("strata_group_lag", &other), value("strata_group_lag_max", &other)), (None, None));
        // Microseconds exported as seconds, buckets cumulative, the value
        // above the last bound only in +Inf and the count.
        let latency =
            |suffix: &str, labels: &[(&str, &str)]| value(&format!("strata_produce_latency_seconds_{suffix}"), labels);
        assert_eq!(latency("bucket", &[("le", "0.000016")]), Some(1.0), "{text}");
        assert_eq!(latency("bucket", &[("le", "0.001024")]), Some(2.0), "{text}");
        assert_eq!(latency("bucket", &[("le", "+Inf")]), Some(3.0), "{text}");
        assert_eq!(latency("count", &[]), Some(3.0));
        assert_eq!(latency("sum", &[]), Some(200.00101));
        assert!(text.contains("# UNIT strata_produce_latency_seconds seconds\n"), "{text}");
        assert!(text.contains("# TYPE strata_produce_bytes counter\n# UNIT strata_produce_bytes bytes\n"), "{text}");
    }

    #[test]
    fn the_prometheus_format_has_the_same_samples() {
        let openmetrics_text = full_scrape().encode(Format::OpenMetrics).unwrap();
        let prometheus_text = full_scrape().encode(Format::Prometheus).unwrap();
        assert!(!prometheus_text.contains("# EOF") && !prometheus_text.contains("# UNIT"), "{prometheus_text}");
        assert!(prometheus_text.contains("# TYPE strata_produce_requests_total counter\n"), "{prometheus_text}");
        assert!(prometheus_text.contains("# TYPE strata_produce_latency_seconds histogram\n"), "{prometheus_text}");
        // Bucket bounds may be spelled differently (the Prometheus format
        // writes them as Go does), so compare the bucket samples by name
        // and the others whole.
        let samples = |text: &str| -> Vec<String> {
            let mut lines: Vec<String> =
                text.lines()
                    .filter(|line| !line.starts_with('#'))
                    .map(|line| {
                        if line.contains("le=") {
                            line.split('{').next().unwrap().to_string()
                        } else {
                            line.to_string()
                        }
                    })
                    .collect();
            lines.sort();
            lines
        };
        assert_eq!(samples(&openmetrics_text), samples(&prometheus_text));
    }

    #[test]
    fn openmetrics_only_when_asked_for() {
        let prometheus_asks = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                               version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus_asks)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("Application/OpenMetrics-Text")), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("application/openmetrics-text; q=0")), Format::Prometheus);
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Prometheus);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Prometheus);
        assert_eq!(Format::negotiate(None), Format::Prometheus);
        assert!(Format::OpenMetrics.content_type().starts_with("application/openmetrics-text; version=1.0.0"));
        assert!(Format::Prometheus.content_type().starts_with("text/plain; version=0.0.4"));
    }

    #[test]
    fn a_scrape_without_consumer_groups_has_no_group_families() {
        let scrape = Scrape { consumer_groups: Vec::new(), ..full_scrape() };
        let families = openmetrics::parse(&scrape.encode(Format::OpenMetrics).unwrap()).unwrap();
        assert!(families
            .iter()
            .all(|f| !f.name.starts_with("strata_group_") || f.name.starts_with("strata_group_commit")));
        assert!(families.last().unwrap().name.starts_with("strata_rocksdb_sst"), "the rest is still there");
    }

    #[test]
    fn a_scrape_without_rocksdb_figures_is_still_whole() {
        let scrape = Scrape { engine: None, ..full_scrape() };
        let families = openmetrics::parse(&scrape.encode(Format::OpenMetrics).unwrap()).unwrap();
        assert!(families.iter().all(|f| !f.name.starts_with("strata_rocksdb")));
        assert_eq!(families.last().unwrap().name, "strata_cluster_nodes");
    }

    #[test]
    fn transactions_are_counted_and_the_stable_offset_lag_is_per_partition() {
        let text = full_scrape().encode(Format::OpenMetrics).unwrap();
        let families = openmetrics::parse(&text).unwrap();
        let value = |name: &str, labels: &[(&str, &str)]| {
            let labels: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            samples(&families).into_iter().find(|s| s.name == name && s.labels == labels).map(|s| s.value)
        };
        assert_eq!(value("strata_partition_lso_lag", &[("topic", "orders"), ("partition", "2")]), Some(4.0));
        assert_eq!(value("strata_transactions_open", &[]), Some(1.0));
        assert_eq!(value("strata_transactions_total", &[("result", "commit")]), Some(5.0));
        assert_eq!(value("strata_transactions_total", &[("result", "abort")]), Some(2.0));
        assert_eq!(value("strata_transaction_timeouts_total", &[]), Some(1.0));
        assert_eq!(value("strata_partition_reassignments", &[]), Some(2.0));
        assert_eq!(value("strata_cluster_nodes", &[("membership", "rebuilding")]), Some(1.0));
        let follower = Scrape { transactions: None, reassignments: None, members: Vec::new(), ..full_scrape() }
            .encode(Format::OpenMetrics)
            .unwrap();
        assert!(!follower.contains("strata_transactions_open"), "only the metadata leader counts transactions");
        assert!(!follower.contains("strata_partition_reassignments"), "nor partition moves");
        assert!(!follower.contains("strata_cluster_nodes"), "nor nodes");
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
