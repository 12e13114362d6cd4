//! Node configuration: from `strata server` flags, a TOML file, or both
//! (flags win). Validated at start-up with messages that say what to fix.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use strata_core::limits;
use strata_core::limits::{
    DEFAULT_MAX_FETCH_BYTES_IN_FLIGHT, DEFAULT_MAX_PRODUCE_BYTES_IN_FLIGHT,
    DEFAULT_MAX_PRODUCE_BYTES_IN_FLIGHT_PER_CONNECTION, DEFAULT_PRODUCER_EXPIRY_MS, MAX_BATCH_BYTES, MAX_NODES,
    MAX_TIMESTAMP_LOOKUP_BATCHES,
};

/// A validated node configuration.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub node_id: u64,
    /// Address the gRPC server binds (clients and peers).
    pub listen: String,
    /// Address clients are told to reach this node at (HOST:PORT); by
    /// default its own `initial_cluster` address, the one peers use.
    pub advertise: String,
    pub data_dir: PathBuf,
    /// Every initial voter of the metadata group: node id -> address;
    /// empty for a node that joins a running cluster (`join`).
    pub initial_cluster: BTreeMap<u64, String>,
    /// Where peers reach this node (HOST:PORT): its `initial_cluster`
    /// entry, or `peer_address`.
    pub peer_address: String,
    /// Nodes of a running cluster to join through (HOST:PORT each); empty
    /// for a node of `initial_cluster`.
    pub join: Vec<String>,
    pub heartbeat_interval: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// A partition group healthy for this long stops its Raft timers,
    /// writes or not (see `quiesce`); `None` keeps every group's timers
    /// running.
    pub quiesce_after: Option<Duration>,
    /// A node that has led a partition this long hands leadership to the
    /// partition's preferred leader (the first replica) once that one is
    /// caught up (see `leaders`); `None` never does.
    pub leader_balance_delay: Option<Duration>,
    /// Raft entries between snapshots of a group (snapshots are cheap here:
    /// they hold offsets, not records), after which its log is purged.
    pub snapshot_every_entries: u64,
    /// How often a partition leader checks retention.
    pub retention_check_interval: Duration,
    /// A partition forgets an idempotent producer idle this long.
    pub producer_expiry: Duration,
    /// Produce payload bytes the node holds in flight before it answers BUSY.
    pub max_produce_bytes_in_flight: usize,
    /// The same bound for one client connection.
    pub max_produce_bytes_in_flight_per_connection: usize,
    /// Fetch answer bytes the node holds at once; past it fetches are
    /// shortened, or answered BUSY.
    pub max_fetch_bytes_in_flight: usize,
    /// Most batches a ListOffsets by timestamp reads before it answers
    /// LIMIT_REACHED; at most MAX_TIMESTAMP_LOOKUP_BATCHES.
    pub max_timestamp_lookup_batches: usize,
    /// Test-only faults (builds with the `fault-hooks` feature only).
    pub faults: FaultConfig,
    /// Address of the Prometheus `/metrics` endpoint; `None` serves none.
    pub metrics_listen: Option<String>,
    /// Session timeout of consumer groups created while this node leads the
    /// metadata group (a group keeps the one it was created with).
    pub group_session_timeout: Duration,
    /// Heartbeat interval of consumer groups created while this node leads.
    pub group_heartbeat_interval: Duration,
    /// How long the committed offsets of a group without members are kept.
    pub offsets_retention: Duration,
}

/// Faults injected into produce answers, for tests that prove retries are
/// safe. Only a build with the `fault-hooks` feature reads them; every
/// other build refuses a config that sets them.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FaultConfig {
    /// Every Nth committed produce answers UNAVAILABLE instead of its
    /// offset, as if the answer had been lost (0: never).
    #[serde(default)]
    pub drop_produce_answer_every: u64,
    /// Every Nth committed produce holds its answer this long (ms), past
    /// the client's request timeout (0: never).
    #[serde(default)]
    pub delay_produce_answer_every: u64,
    #[serde(default)]
    pub delay_produce_answer_ms: u64,
    /// Record after every WAL sync how much of the WAL is durable, in
    /// `DATA_DIR/db/SYNCED_WAL`, so a harness can drop unsynced writes
    /// after killing the node (see strata-storage's `synced_wal`).
    #[serde(default)]
    pub record_synced_wal: bool,
    /// Added to every wall-clock reading of the node (ms, may be negative),
    /// so a cluster test can run one node with a clock far off without
    /// libfaketime; its monotonic clock stays true (see `faults`).
    #[serde(default)]
    pub clock_offset_ms: i64,
    /// While this file exists, the transaction coordinator writes no
    /// markers (decided transactions stay preparing), so a test can kill a
    /// coordinator between its decision and its markers.
    #[serde(default)]
    pub hold_txn_markers_while: Option<String>,
}

/// The TOML file; every key optional, flags override. See
/// `deploy/strata.toml` for a commented example.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub node_id: Option<u64>,
    pub listen: Option<String>,
    pub advertise: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub initial_cluster: Option<String>,
    pub join: Option<String>,
    pub peer_address: Option<String>,
    pub heartbeat_interval: Option<String>,
    pub election_timeout_min: Option<String>,
    pub election_timeout_max: Option<String>,
    pub quiesce_after: Option<String>,
    pub leader_balance_delay: Option<String>,
    pub snapshot_every_entries: Option<u64>,
    pub retention_check_interval: Option<String>,
    pub producer_expiry: Option<String>,
    pub max_produce_bytes_in_flight: Option<String>,
    pub max_produce_bytes_in_flight_per_connection: Option<String>,
    pub max_fetch_bytes_in_flight: Option<String>,
    pub max_timestamp_lookup_batches: Option<usize>,
    pub faults: Option<FaultConfig>,
    pub metrics_listen: Option<String>,
    pub group_session_timeout: Option<String>,
    pub group_heartbeat_interval: Option<String>,
    pub offsets_retention: Option<String>,
}

/// Every key of the file (but the test-only `[faults]` table), and whether
/// its value is a number (else a string). Each has an environment override,
/// `STRATA_` and the key in capitals; `the_example_file_has_every_key_with_an_override`
/// keeps this list, the struct and deploy/strata.toml together.
pub const KEYS: &[(&str, bool)] = &[
    ("node_id", true),
    ("listen", false),
    ("advertise", false),
    ("data_dir", false),
    ("initial_cluster", false),
    ("join", false),
    ("peer_address", false),
    ("heartbeat_interval", false),
    ("election_timeout_min", false),
    ("election_timeout_max", false),
    ("quiesce_after", false),
    ("leader_balance_delay", false),
    ("snapshot_every_entries", true),
    ("retention_check_interval", false),
    ("producer_expiry", false),
    ("max_produce_bytes_in_flight", false),
    ("max_produce_bytes_in_flight_per_connection", false),
    ("max_fetch_bytes_in_flight", false),
    ("max_timestamp_lookup_batches", true),
    ("metrics_listen", false),
    ("group_session_timeout", false),
    ("group_heartbeat_interval", false),
    ("offsets_retention", false),
];

/// The environment variable that overrides `key`.
pub fn env_var(key: &str) -> String {
    format!("STRATA_{}", key.to_uppercase())
}

/// Why a configuration was refused. The message names the key or the file
/// and says what to give instead.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    /// The file or an environment value is not valid TOML of the right shape.
    #[error("{what}: {message}")]
    Syntax { what: String, message: String },
    /// A key's value is missing, malformed or out of its bounds.
    #[error("{message}")]
    Invalid { key: &'static str, message: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, message: message.into() }
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        FileConfig::load_with_env(Some(path), |_| None)
    }

    /// The file at `path` (none: every key unset), with every key that
    /// `env` gives a `STRATA_*` value for overridden by it.
    pub fn load_with_env(path: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Result<FileConfig, ConfigError> {
        let mut table: toml::Table = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
                toml::from_str(&text).map_err(|e| ConfigError::Syntax {
                    what: format!("config {}", path.display()),
                    message: e.to_string(),
                })?
            }
            None => toml::Table::new(),
        };
        for (key, number) in KEYS {
            let var = env_var(key);
            if let Some(text) = env(&var) {
                let value = if *number {
                    let n: i64 = text.parse().map_err(|e| ConfigError::Syntax {
                        what: format!("{var}={text}"),
                        message: format!("{e}; give a whole number"),
                    })?;
                    toml::Value::Integer(n)
                } else {
                    toml::Value::String(text)
                };
                table.insert(key.to_string(), value);
            }
        }
        let what = path.map_or("the environment".to_string(), |p| format!("config {}", p.display()));
        table.try_into().map_err(|e: toml::de::Error| ConfigError::Syntax { what, message: e.to_string() })
    }

    /// Applies defaults and checks every value.
    pub fn validate(self) -> Result<NodeConfig, ConfigError> {
        let node_id = self
            .node_id
            .ok_or_else(|| invalid("node_id", "node_id is missing (--node-id or node_id in the config file)"))?;
        if node_id == 0 || node_id > MAX_NODES {
            return Err(invalid("node_id", format!("node_id {node_id} is out of range; use 1 to {MAX_NODES}")));
        }
        let listen = self.listen.unwrap_or_else(|| "127.0.0.1:7171".into());
        listen.parse::<std::net::SocketAddr>().map_err(|e| {
            invalid("listen", format!("listen address '{listen}' is not HOST:PORT with an IP host: {e}"))
        })?;
        let data_dir = self
            .data_dir
            .ok_or_else(|| invalid("data_dir", "data_dir is missing (--data-dir or data_dir in the config file)"))?;
        // Empty is unset, so an environment variable can clear the file's.
        let set = |value: Option<String>| value.map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let join = match set(self.join) {
            None => Vec::new(),
            Some(text) => parse_join(&text)?,
        };
        let given_peer = match set(self.peer_address) {
            None => None,
            Some(address) => {
                strata_state::metadata::check_advertised_address(&address).map_err(|problem| {
                    invalid("peer_address", format!("peer_address '{address}' {problem} (where peers reach this node)"))
                })?;
                Some(address)
            }
        };
        let initial_cluster =
            match (set(self.initial_cluster), join.is_empty()) {
                (Some(_), false) => return Err(invalid(
                    "join",
                    "give either initial_cluster (a node of a new cluster) or join (a node joining a running one), \
                     not both",
                )),
                (Some(text), true) => parse_initial_cluster(&text)?,
                (None, true) => BTreeMap::from([(node_id, given_peer.clone().unwrap_or_else(|| listen.clone()))]),
                (None, false) => BTreeMap::new(),
            };
        let peer_address = match (initial_cluster.get(&node_id), given_peer) {
            (Some(entry), Some(given)) if *entry != given => {
                return Err(invalid(
                    "peer_address",
                    format!("peer_address '{given}' differs from this node's initial_cluster entry '{entry}'"),
                ))
            }
            (Some(entry), _) => entry.clone(),
            (None, Some(given)) => given,
            (None, None) if !join.is_empty() => {
                let ip: std::net::SocketAddr = listen.parse().expect("checked above");
                if ip.ip().is_unspecified() {
                    return Err(invalid(
                        "peer_address",
                        format!("listen is '{listen}', which peers cannot dial; set peer_address (HOST:PORT)"),
                    ));
                }
                listen.clone()
            }
            (None, None) => {
                return Err(invalid("initial_cluster", format!("initial_cluster does not name this node ({node_id})")))
            }
        };
        let advertise = match set(self.advertise) {
            None => peer_address.clone(),
            Some(address) => {
                strata_state::metadata::check_advertised_address(&address).map_err(|problem| {
                    invalid(
                        "advertise",
                        format!("advertise address '{address}' {problem} (the address clients reach this node at)"),
                    )
                })?;
                address
            }
        };
        let duration = |value: Option<String>, default: Duration, key: &'static str| -> Result<Duration, ConfigError> {
            match value {
                None => Ok(default),
                Some(text) => humantime::parse_duration(&text)
                    .map_err(|e| invalid(key, format!("{key} = '{text}': {e}; use e.g. 150ms"))),
            }
        };
        let heartbeat_interval =
            duration(self.heartbeat_interval, limits::DEFAULT_HEARTBEAT_INTERVAL, "heartbeat_interval")?;
        let election_timeout_min =
            duration(self.election_timeout_min, limits::DEFAULT_ELECTION_TIMEOUT_MIN, "election_timeout_min")?;
        let election_timeout_max =
            duration(self.election_timeout_max, limits::DEFAULT_ELECTION_TIMEOUT_MAX, "election_timeout_max")?;
        if heartbeat_interval >= election_timeout_min || election_timeout_min >= election_timeout_max {
            return Err(invalid(
                "election_timeout_min",
                "need heartbeat_interval < election_timeout_min < election_timeout_max",
            ));
        }
        let quiesce_after = match self.quiesce_after.as_deref().map(str::trim) {
            Some("off") => None,
            other => {
                let after = duration(other.map(str::to_string), limits::DEFAULT_QUIESCE_AFTER, "quiesce_after")?;
                // Shorter, a partition written every second or so would go
                // quiet and wake between its writes.
                if after < election_timeout_max {
                    return Err(invalid(
                        "quiesce_after",
                        format!("quiesce_after must be at least election_timeout_max ({election_timeout_max:?}), or \"off\""),
                    ));
                }
                Some(after)
            }
        };
        let leader_balance_delay = match self.leader_balance_delay.as_deref().map(str::trim) {
            Some("off") => None,
            other => {
                Some(duration(other.map(str::to_string), limits::DEFAULT_LEADER_BALANCE_DELAY, "leader_balance_delay")?)
            }
        };
        let retention_check_interval = duration(
            self.retention_check_interval,
            limits::DEFAULT_RETENTION_CHECK_INTERVAL,
            "retention_check_interval",
        )?;
        let snapshot_every_entries = self.snapshot_every_entries.unwrap_or(limits::DEFAULT_SNAPSHOT_EVERY_ENTRIES);
        if snapshot_every_entries == 0 {
            return Err(invalid("snapshot_every_entries", "snapshot_every_entries must be at least 1"));
        }
        let producer_expiry =
            duration(self.producer_expiry, Duration::from_millis(DEFAULT_PRODUCER_EXPIRY_MS), "producer_expiry")?;
        if producer_expiry < Duration::from_secs(1) {
            return Err(invalid("producer_expiry", "producer_expiry must be at least 1s"));
        }
        let bytes = |value: Option<String>, default: usize, key: &'static str| -> Result<usize, ConfigError> {
            match value {
                None => Ok(default),
                Some(text) => {
                    parse_size(&text).ok_or_else(|| invalid(key, format!("{key} = '{text}': use bytes, e.g. 64MiB")))
                }
            }
        };
        let max_produce_bytes_in_flight = bytes(
            self.max_produce_bytes_in_flight,
            DEFAULT_MAX_PRODUCE_BYTES_IN_FLIGHT,
            "max_produce_bytes_in_flight",
        )?;
        let max_produce_bytes_in_flight_per_connection = bytes(
            self.max_produce_bytes_in_flight_per_connection,
            DEFAULT_MAX_PRODUCE_BYTES_IN_FLIGHT_PER_CONNECTION,
            "max_produce_bytes_in_flight_per_connection",
        )?;
        if max_produce_bytes_in_flight_per_connection < MAX_BATCH_BYTES
            || max_produce_bytes_in_flight < max_produce_bytes_in_flight_per_connection
        {
            return Err(invalid(
                "max_produce_bytes_in_flight_per_connection",
                format!(
                    "need {MAX_BATCH_BYTES} bytes (one batch) <= max_produce_bytes_in_flight_per_connection <= max_produce_bytes_in_flight"
                ),
            ));
        }
        let max_fetch_bytes_in_flight =
            bytes(self.max_fetch_bytes_in_flight, DEFAULT_MAX_FETCH_BYTES_IN_FLIGHT, "max_fetch_bytes_in_flight")?;
        if max_fetch_bytes_in_flight < MAX_BATCH_BYTES {
            return Err(invalid(
                "max_fetch_bytes_in_flight",
                format!("max_fetch_bytes_in_flight must be at least {MAX_BATCH_BYTES} bytes (one batch)"),
            ));
        }
        let max_timestamp_lookup_batches = self.max_timestamp_lookup_batches.unwrap_or(MAX_TIMESTAMP_LOOKUP_BATCHES);
        if max_timestamp_lookup_batches == 0 || max_timestamp_lookup_batches > MAX_TIMESTAMP_LOOKUP_BATCHES {
            return Err(invalid(
                "max_timestamp_lookup_batches",
                format!("max_timestamp_lookup_batches must be 1 to {MAX_TIMESTAMP_LOOKUP_BATCHES}"),
            ));
        }
        let faults = self.faults.unwrap_or_default();
        if faults != FaultConfig::default() && !cfg!(feature = "fault-hooks") {
            return Err(invalid("faults", "[faults] is only for test builds (feature fault-hooks); remove it"));
        }
        let metrics_listen = match self.metrics_listen.filter(|a| !a.trim().is_empty()) {
            None => None,
            Some(address) => {
                address.parse::<std::net::SocketAddr>().map_err(|e| {
                    invalid(
                        "metrics_listen",
                        format!("metrics_listen address '{address}' is not HOST:PORT with an IP host: {e}"),
                    )
                })?;
                if address == listen {
                    return Err(invalid(
                        "metrics_listen",
                        format!("metrics_listen must differ from listen ({listen})"),
                    ));
                }
                Some(address)
            }
        };
        let group_session_timeout = duration(
            self.group_session_timeout,
            Duration::from_millis(limits::DEFAULT_GROUP_SESSION_TIMEOUT_MS),
            "group_session_timeout",
        )?;
        let group_heartbeat_interval = duration(
            self.group_heartbeat_interval,
            Duration::from_millis(limits::DEFAULT_GROUP_HEARTBEAT_INTERVAL_MS),
            "group_heartbeat_interval",
        )?;
        strata_state::group::validate_timeouts(
            group_session_timeout.as_millis() as u64,
            group_heartbeat_interval.as_millis() as u64,
        )
        .map_err(|e| {
            invalid(
                "group_session_timeout",
                format!("group_session_timeout and group_heartbeat_interval: {}", e.message),
            )
        })?;
        let offsets_retention = duration(
            self.offsets_retention,
            Duration::from_millis(limits::DEFAULT_OFFSETS_RETENTION_MS),
            "offsets_retention",
        )?;
        if offsets_retention.as_millis() < limits::MIN_OFFSETS_RETENTION_MS as u128 {
            return Err(invalid(
                "offsets_retention",
                format!("offsets_retention must be at least {} s", limits::MIN_OFFSETS_RETENTION_MS / 1000),
            ));
        }
        Ok(NodeConfig {
            group_session_timeout,
            group_heartbeat_interval,
            offsets_retention,
            producer_expiry,
            max_produce_bytes_in_flight,
            max_produce_bytes_in_flight_per_connection,
            max_fetch_bytes_in_flight,
            max_timestamp_lookup_batches,
            faults,
            node_id,
            listen,
            advertise,
            data_dir,
            initial_cluster,
            peer_address,
            join,
            heartbeat_interval,
            election_timeout_min,
            election_timeout_max,
            quiesce_after,
            leader_balance_delay,
            snapshot_every_entries,
            retention_check_interval,
            metrics_listen,
        })
    }
}

/// Parses a byte size: a plain number or one with a unit (KiB, MiB, GiB,
/// KB, MB, GB).
fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number.parse().ok()?;
    let scale: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    number.checked_mul(scale)
}

/// Parses `join`: HOST:PORT addresses of running nodes, comma separated.
fn parse_join(text: &str) -> Result<Vec<String>, ConfigError> {
    text.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            strata_state::metadata::check_advertised_address(part)
                .map(|()| part.to_string())
                .map_err(|problem| invalid("join", format!("join address '{part}' {problem}")))
        })
        .collect()
}

/// Parses `1=127.0.0.1:7171,2=127.0.0.1:7172`.
pub fn parse_initial_cluster(text: &str) -> Result<BTreeMap<u64, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| invalid("initial_cluster", format!("'{part}' in initial_cluster is not ID=HOST:PORT")))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| invalid("initial_cluster", format!("'{id}' in initial_cluster is not a node id")))?;
        if id == 0 || id > MAX_NODES {
            return Err(invalid(
                "initial_cluster",
                format!("node id {id} in initial_cluster is out of range; use 1 to {MAX_NODES}"),
            ));
        }
        if out.insert(id, addr.trim().to_string()).is_some() {
            return Err(invalid("initial_cluster", format!("node id {id} appears twice in initial_cluster")));
        }
    }
    if out.is_empty() {
        return Err(invalid("initial_cluster", "initial_cluster is empty"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> FileConfig {
        FileConfig { node_id: Some(1), data_dir: Some("/tmp/x".into()), ..Default::default() }
    }

    #[test]
    fn defaults_and_checks() {
        let c = base().validate().unwrap();
        assert_eq!(c.initial_cluster, BTreeMap::from([(1, "127.0.0.1:7171".to_string())]));
        let key_of = |config: FileConfig| match config.validate() {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected a refused key, got {other:?}"),
        };
        assert_eq!(key_of(FileConfig { node_id: None, ..base() }), "node_id");
        assert_eq!(key_of(FileConfig { initial_cluster: Some("2=a:1".into()), ..base() }), "initial_cluster");
        assert_eq!(key_of(FileConfig { snapshot_every_entries: Some(0), ..base() }), "snapshot_every_entries");
        assert!(FileConfig { initial_cluster: Some("2=a:1".into()), ..base() }.validate().is_err());
        assert!(FileConfig { listen: Some("nope".into()), ..base() }.validate().is_err());
        assert!(FileConfig { heartbeat_interval: Some("2s".into()), ..base() }.validate().is_err());
        assert_eq!(c.max_produce_bytes_in_flight, DEFAULT_MAX_PRODUCE_BYTES_IN_FLIGHT);
        assert_eq!(c.quiesce_after, Some(Duration::from_secs(2)));
        assert_eq!(FileConfig { quiesce_after: Some("off".into()), ..base() }.validate().unwrap().quiesce_after, None);
        let flapping = FileConfig { quiesce_after: Some("200ms".into()), ..base() }.validate().unwrap_err().to_string();
        assert!(flapping.contains("election_timeout_max"), "{flapping}");
        let small = FileConfig { max_produce_bytes_in_flight_per_connection: Some("1KiB".into()), ..base() };
        assert!(small.validate().is_err(), "below one batch");
        assert_eq!(c.max_fetch_bytes_in_flight, DEFAULT_MAX_FETCH_BYTES_IN_FLIGHT);
        let small = FileConfig { max_fetch_bytes_in_flight: Some("1KiB".into()), ..base() };
        assert!(small.validate().is_err(), "fetch bound below one batch");
        assert_eq!(c.max_timestamp_lookup_batches, MAX_TIMESTAMP_LOOKUP_BATCHES);
        let over = FileConfig { max_timestamp_lookup_batches: Some(MAX_TIMESTAMP_LOOKUP_BATCHES + 1), ..base() };
        assert!(over.validate().is_err(), "over the limit");
        let c = FileConfig { max_produce_bytes_in_flight: Some("128MiB".into()), ..base() }.validate().unwrap();
        assert_eq!(c.max_produce_bytes_in_flight, 128 << 20);
        assert_eq!(parse_size("2GB"), Some(2_000_000_000));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(c.metrics_listen, None, "metrics are off unless asked for");
        let with_metrics = FileConfig { metrics_listen: Some("127.0.0.1:9171".into()), ..base() };
        assert_eq!(with_metrics.validate().unwrap().metrics_listen.as_deref(), Some("127.0.0.1:9171"));
        assert!(FileConfig { metrics_listen: Some("nope".into()), ..base() }.validate().is_err());
        assert!(FileConfig { metrics_listen: Some("127.0.0.1:7171".into()), ..base() }.validate().is_err());
        assert_eq!(c.group_session_timeout, Duration::from_secs(45));
        assert_eq!(c.group_heartbeat_interval, Duration::from_secs(3));
        assert_eq!(c.offsets_retention, Duration::from_secs(7 * 24 * 3600));
        let short = FileConfig { group_session_timeout: Some("2s".into()), ..base() };
        assert_eq!(key_of(short), "group_session_timeout", "the heartbeat interval must be shorter");
        let fast = FileConfig {
            group_session_timeout: Some("2s".into()),
            group_heartbeat_interval: Some("500ms".into()),
            ..base()
        };
        assert_eq!(fast.validate().unwrap().group_session_timeout, Duration::from_secs(2));
        assert_eq!(key_of(FileConfig { group_session_timeout: Some("1s".into()), ..base() }), "group_session_timeout");
        assert_eq!(key_of(FileConfig { offsets_retention: Some("10s".into()), ..base() }), "offsets_retention");
    }

    #[test]
    fn a_joining_node_gives_join_and_a_peer_address_instead_of_initial_cluster() {
        let joining = FileConfig {
            join: Some("strata-1:7171, strata-2:7171".into()),
            listen: Some("10.0.0.4:7171".into()),
            ..base()
        };
        let c = joining.validate().unwrap();
        assert_eq!(c.join, vec!["strata-1:7171".to_string(), "strata-2:7171".to_string()]);
        assert!(c.initial_cluster.is_empty(), "it forms nothing");
        assert_eq!(c.peer_address, "10.0.0.4:7171", "the listen address by default");
        assert_eq!(c.advertise, "10.0.0.4:7171");
        let named = FileConfig {
            join: Some("strata-1:7171".into()),
            listen: Some("0.0.0.0:7171".into()),
            peer_address: Some("strata-4:7171".into()),
            ..base()
        };
        assert_eq!(named.validate().unwrap().peer_address, "strata-4:7171");
        // An empty initial_cluster (a flag clearing the file's) is unset.
        let cleared = FileConfig {
            join: Some("strata-1:7171".into()),
            initial_cluster: Some(String::new()),
            listen: Some("10.0.0.4:7171".into()),
            ..base()
        };
        assert!(cleared.validate().is_ok());
        let refusals = [
            (FileConfig { join: Some("a:1".into()), initial_cluster: Some("1=a:1".into()), ..base() }, "join"),
            (FileConfig { join: Some("a:1".into()), listen: Some("0.0.0.0:7171".into()), ..base() }, "peer_address"),
            (FileConfig { join: Some("no-port".into()), ..base() }, "join"),
            (FileConfig { join: Some("a:1".into()), peer_address: Some("x".into()), ..base() }, "peer_address"),
            (
                FileConfig { initial_cluster: Some("1=a:1,2=b:1".into()), peer_address: Some("c:1".into()), ..base() },
                "peer_address",
            ),
        ];
        for (config, key) in refusals {
            match config.validate() {
                Err(ConfigError::Invalid { key: got, message }) => assert_eq!(got, key, "{message}"),
                other => panic!("expected {key} refused, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_advertised_address_defaults_to_the_peer_address_and_is_checked() {
        assert_eq!(base().validate().unwrap().advertise, "127.0.0.1:7171", "the node's own listen address");
        let cluster = Some("1=strata-1:7171,2=strata-2:7171".to_string());
        let in_cluster = FileConfig { initial_cluster: cluster.clone(), listen: Some("0.0.0.0:7171".into()), ..base() };
        assert_eq!(in_cluster.validate().unwrap().advertise, "strata-1:7171", "its initial_cluster entry");
        for given in ["127.0.0.1:17171", "strata.example.com:7171", "[::1]:7171"] {
            let c = FileConfig { advertise: Some(given.into()), ..base() }.validate().unwrap();
            assert_eq!(c.advertise, given);
        }
        let cleared = FileConfig { advertise: Some(" ".into()), initial_cluster: cluster, ..base() };
        assert_eq!(cleared.validate().unwrap().advertise, "strata-1:7171", "empty is unset");
        for (bad, says) in [
            ("127.0.0.1", "no port"),
            ("127.0.0.1:0", "port 0"),
            ("host:http", "port 'http'"),
            ("http://host:7171", "host 'http"),
            ("a b:7171", "host 'a b'"),
        ] {
            let refused = FileConfig { advertise: Some(bad.into()), ..base() }.validate().unwrap_err();
            let ConfigError::Invalid { key, message } = &refused else { panic!("{refused:?}") };
            assert_eq!(*key, "advertise");
            assert!(message.contains(bad) && message.contains(says), "{message} should name '{bad}' and say {says}");
        }
    }

    #[test]
    fn initial_cluster_parsing() {
        let m = parse_initial_cluster("1=127.0.0.1:7171, 2=127.0.0.1:7172").unwrap();
        assert_eq!(m.len(), 2);
        assert!(parse_initial_cluster("1=a,1=b").is_err());
        assert!(parse_initial_cluster("x=a").is_err());
        assert!(parse_initial_cluster("0=a").is_err());
        assert!(parse_initial_cluster("").is_err());
    }

    #[test]
    fn toml_file_parses() {
        let text = "node_id = 2\nlisten = \"127.0.0.1:7172\"\ndata_dir = \"/tmp/d\"\ninitial_cluster = \"1=127.0.0.1:7171,2=127.0.0.1:7172\"\nheartbeat_interval = \"100ms\"\n";
        let file: FileConfig = toml::from_str(text).unwrap();
        let c = file.validate().unwrap();
        assert_eq!(c.node_id, 2);
        assert_eq!(c.heartbeat_interval, Duration::from_millis(100));
        assert!(toml::from_str::<FileConfig>("bogus = 1").is_err());
    }
}

#[cfg(test)]
mod example_file {
    use super::*;

    #[test]
    fn the_example_file_has_every_key_with_an_override() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/strata.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        // Keys set in the file, and keys shown commented out (`# key = ...`).
        let in_file: Vec<&str> = text
            .lines()
            .filter_map(|line| {
                let line = line.trim_start_matches('#').trim_start();
                let (key, _) = line.split_once(" = ")?;
                key.chars().all(|c| c.is_ascii_lowercase() || c == '_').then_some(key)
            })
            .collect();
        let keys: Vec<&str> = KEYS.iter().map(|(key, _)| *key).collect();
        assert_eq!(in_file, keys, "deploy/strata.toml and config::KEYS list other keys or another order");
        // Every key is a field of the file (unknown keys are refused) and
        // its variable overrides the file.
        let file: toml::Table = toml::from_str(&text).unwrap();
        for (key, _) in KEYS {
            // metrics_listen is off by default, so only shown commented out.
            let value = file.get(*key).cloned().unwrap_or_else(|| toml::Value::String("127.0.0.1:9171".into()));
            let text = match &value {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let var = env_var(key);
            let from_env = FileConfig::load_with_env(None, |name| (name == var).then(|| text.clone()))
                .unwrap_or_else(|e| panic!("{var}: {e}"));
            let from_file: FileConfig = toml::from_str(&format!("{key} = {value}")).unwrap();
            assert_eq!(format!("{from_env:?}"), format!("{from_file:?}"), "{var} sets {key} as the file does");
        }
        // A variable wins over the file.
        let overridden =
            FileConfig::load_with_env(Some(&path), |name| (name == "STRATA_HEARTBEAT_INTERVAL").then(|| "50ms".into()))
                .unwrap()
                .validate()
                .unwrap();
        assert_eq!(overridden.heartbeat_interval, Duration::from_millis(50));
        assert!(FileConfig::load_with_env(None, |name| (name == "STRATA_NODE_ID").then(|| "two".into())).is_err());
    }

    #[test]
    fn the_example_file_holds_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/strata.toml");
        let example = FileConfig::load(&path).unwrap().validate().unwrap();
        let defaults = FileConfig {
            node_id: Some(example.node_id),
            listen: Some(example.listen.clone()),
            data_dir: Some(example.data_dir.clone()),
            initial_cluster: FileConfig::load(&path).unwrap().initial_cluster,
            ..FileConfig::default()
        }
        .validate()
        .unwrap();
        assert_eq!(format!("{example:?}"), format!("{defaults:?}"), "deploy/strata.toml must show the defaults");
    }

    #[test]
    fn the_shipped_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/strata.toml");
        let config = FileConfig::load(&path).unwrap().validate().unwrap();
        assert_eq!(config.initial_cluster.len(), 3);
        assert_eq!(config.election_timeout_max, limits::DEFAULT_ELECTION_TIMEOUT_MAX);
    }
}
