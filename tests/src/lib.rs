//! Harness for cluster tests: starts real `strata server` processes on
//! loopback ports, kills and restarts them, and waits for conditions with
//! deadlines (never sleeps as synchronisation).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strata_proto::v1 as pb;
use strata_proto::v1::strata_client::StrataClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

pub use strata_testkit::{eventually, openmetrics};

/// The `strata` binary built beside the test executable (or $STRATA_BIN).
pub fn strata_binary() -> PathBuf {
    let given = std::env::var_os("STRATA_BIN").map(PathBuf::from);
    strata_testkit::strata_binary(given.as_deref()).unwrap_or_else(|error| panic!("{error}"))
}

/// How often `wait_exit` looks at a child that should exit: a refused
/// node exits within a second or so of starting; 50 ms costs nothing.
const EXIT_POLL: Duration = Duration::from_millis(50);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port").local_addr().expect("local addr").port()
}

pub struct NodeProcess {
    pub id: u64,
    pub address: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    /// Address of the node's /metrics endpoint, when the cluster serves metrics.
    pub metrics_address: Option<String>,
    child: Option<Child>,
}

impl NodeProcess {
    /// Started by the harness and not killed or stopped since.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// A cluster of `strata server` processes; killed when dropped.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<NodeProcess>,
    initial_cluster: String,
    /// Extra TOML lines given to every node through `--config`.
    extra_config: String,
    /// Nodes given other TOML lines than `extra_config` (`set_node_config`).
    node_config: std::collections::BTreeMap<u64, String>,
    /// Nodes started with `--join` these addresses instead of
    /// `--initial-cluster` (`plan_joining_node`, `set_join`).
    join: std::collections::BTreeMap<u64, Vec<String>>,
}

impl Cluster {
    /// Starts `count` nodes and waits until the metadata group serves.
    pub async fn start(count: u64) -> Cluster {
        Cluster::start_with_config(count, "").await
    }

    /// Starts `count` nodes whose config file holds `extra_config` (TOML).
    pub async fn start_with_config(count: u64, extra_config: &str) -> Cluster {
        Cluster::start_inner(count, extra_config, false).await
    }

    /// Starts `count` nodes, each serving Prometheus metrics on a port of its own.
    pub async fn start_with_metrics(count: u64) -> Cluster {
        Cluster::start_inner(count, "", true).await
    }

    /// `start_with_metrics` with `extra_config` (TOML) in every node's config file.
    pub async fn start_with_metrics_and_config(count: u64, extra_config: &str) -> Cluster {
        Cluster::start_inner(count, extra_config, true).await
    }

    /// Plans `count` nodes (addresses, data dirs) without starting any, so
    /// that a test can set up what the nodes need first (`set_node_config`);
    /// `start_all` starts them.
    pub fn planned(count: u64) -> Cluster {
        Cluster::plan(count, "", false)
    }

    /// Starts every planned node and waits until the metadata group serves.
    pub async fn start_all(&mut self) {
        let ids: Vec<u64> = self.nodes.iter().map(|n| n.id).collect();
        for id in ids {
            self.start_node(id);
        }
        self.wait_ready().await;
    }

    async fn start_inner(count: u64, extra_config: &str, metrics: bool) -> Cluster {
        let mut cluster = Cluster::plan(count, extra_config, metrics);
        cluster.start_all().await;
        cluster
    }

    fn plan(count: u64, extra_config: &str, metrics: bool) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let nodes: Vec<NodeProcess> = (1..=count)
            .map(|id| NodeProcess {
                id,
                address: format!("127.0.0.1:{}", free_port()),
                data_dir: dir.path().join(format!("node-{id}")),
                log_path: dir.path().join(format!("node-{id}.log")),
                metrics_address: metrics.then(|| format!("127.0.0.1:{}", free_port())),
                child: None,
            })
            .collect();
        let initial_cluster = nodes.iter().map(|n| format!("{}={}", n.id, n.address)).collect::<Vec<_>>().join(",");
        Cluster {
            dir,
            nodes,
            initial_cluster,
            extra_config: extra_config.to_string(),
            node_config: Default::default(),
            join: Default::default(),
        }
    }

    fn node_mut(&mut self, id: u64) -> &mut NodeProcess {
        self.nodes.iter_mut().find(|n| n.id == id).expect("known node id")
    }

    pub fn node(&self, id: u64) -> &NodeProcess {
        self.nodes.iter().find(|n| n.id == id).expect("known node id")
    }

    /// Starts (or restarts) node `id` on its data dir.
    pub fn start_node(&mut self, id: u64) {
        let initial_cluster = self.initial_cluster.clone();
        let join = self.join.get(&id).cloned();
        let config_path = self.dir.path().join(format!("node-{id}.toml"));
        let mut config = String::new();
        if let Some(address) = &self.node(id).metrics_address {
            config.push_str(&format!("metrics_listen = \"{address}\"\n"));
        }
        config.push_str(self.node_config.get(&id).unwrap_or(&self.extra_config));
        std::fs::write(&config_path, config).expect("write node config");
        let node = self.node_mut(id);
        assert!(node.child.is_none(), "node {id} is already running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log_path).expect("log file");
        let child = Command::new(strata_binary())
            .args([
                "--log-level",
                // STRATA_TEST_LOG overrides, to debug a failing test.
                &std::env::var("STRATA_TEST_LOG").unwrap_or_else(|_| "info,openraft=warn".into()),
                "server",
                "--node-id",
                &id.to_string(),
                "--listen",
                &node.address,
            ])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(match &join {
                Some(addresses) => ["--join".to_string(), addresses.join(",")],
                None => ["--initial-cluster".to_string(), initial_cluster],
            })
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start strata server");
        node.child = Some(child);
    }

    /// Plans one more node, to join the running cluster through the nodes
    /// `via` (`--join`); `start_node` starts it. Answers its id.
    pub fn plan_joining_node(&mut self, via: &[u64]) -> u64 {
        let id = self.nodes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
        let metrics = self.nodes.first().is_some_and(|n| n.metrics_address.is_some());
        self.nodes.push(NodeProcess {
            id,
            address: format!("127.0.0.1:{}", free_port()),
            data_dir: self.dir.path().join(format!("node-{id}")),
            log_path: self.dir.path().join(format!("node-{id}.log")),
            metrics_address: metrics.then(|| format!("127.0.0.1:{}", free_port())),
            child: None,
        });
        let addresses = via.iter().map(|v| self.node(*v).address.clone()).collect();
        self.join.insert(id, addresses);
        id
    }

    /// Runs one more `strata server` as node `id` with an empty data dir
    /// of its own, joining through the nodes `via`, until it exits by
    /// itself (a node the cluster refuses); answers its exit status and
    /// its log.
    pub async fn run_extra_node(&self, id: u64, via: &[u64], timeout: Duration) -> (std::process::ExitStatus, String) {
        let join: Vec<String> = via.iter().map(|v| self.node(*v).address.clone()).collect();
        let data_dir = tempfile::tempdir_in(self.dir.path()).expect("data dir");
        let output = tokio::process::Command::new(strata_binary())
            .args(["server", "--node-id", &id.to_string(), "--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--join", &join.join(",")])
            .arg("--data-dir")
            .arg(data_dir.path())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(timeout, output).await.expect("the node exits in time").expect("run strata");
        let log = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
        (output.status, log)
    }

    /// Starts node `id` with `--join addresses` from now on.
    pub fn set_join(&mut self, id: u64, addresses: Vec<String>) {
        self.join.insert(id, addresses);
    }

    /// Deletes node `id`'s data dir, as a lost disk would (the node must
    /// not be running).
    pub fn wipe(&self, id: u64) {
        let node = self.node(id);
        assert!(node.child.is_none(), "node {id} is running");
        if node.data_dir.exists() {
            std::fs::remove_dir_all(&node.data_dir).expect("delete the data dir");
        }
    }

    /// Waits until node `id` exits by itself, and answers its exit status.
    pub async fn wait_exit(&mut self, id: u64, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let node = self.node_mut(id);
            let child = node.child.as_mut().expect("node is running");
            if let Some(status) = child.try_wait().expect("poll the child") {
                node.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "node {id} did not exit within {timeout:?}");
            tokio::time::sleep(EXIT_POLL).await;
        }
    }

    /// Gives node `id` these TOML lines instead of the cluster's extra
    /// config from its next start on.
    pub fn set_node_config(&mut self, id: u64, toml: &str) {
        self.node_config.insert(id, toml.to_string());
    }

    /// SIGKILL: no clean shutdown, no final sync.
    pub fn kill(&mut self, id: u64) {
        let node = self.node_mut(id);
        let mut child = node.child.take().expect("node is running");
        child.kill().expect("kill");
        child.wait().expect("reap");
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self, id: u64) {
        let node = self.node_mut(id);
        let mut child = node.child.take().expect("node is running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)
            .expect("signal");
        let status = child.wait().expect("reap");
        assert!(status.success(), "node {id} exited with {status} after SIGTERM");
    }

    pub fn bootstrap(&self) -> Vec<String> {
        self.nodes.iter().filter(|n| n.child.is_some()).map(|n| n.address.clone()).collect()
    }

    pub async fn api(&self, id: u64) -> StrataClient<Channel> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", self.node(id).address))
            .expect("endpoint")
            .connect_lazy();
        StrataClient::new(channel).max_decoding_message_size(strata_core::limits::MAX_GRPC_MESSAGE_BYTES)
    }

    /// Waits until some running node reports a metadata leader confirmed by
    /// a quorum, and returns that leader's id.
    pub async fn wait_ready(&self) -> u64 {
        let running: Vec<u64> = self.nodes.iter().filter(|n| n.child.is_some()).map(|n| n.id).collect();
        eventually(Duration::from_secs(30), "a metadata leader", || async {
            for id in &running {
                let mut api = self.api(*id).await;
                if let Ok(status) = api.cluster_status(pb::ClusterStatusRequest {}).await {
                    let status = status.into_inner();
                    if status.metadata_available {
                        return Some(status.metadata_leader);
                    }
                }
            }
            None
        })
        .await
    }

    /// Waits until every partition of `topic` has a leader that serves
    /// ListOffsets, and returns the leaders by partition.
    pub async fn wait_topic_ready(&self, topic: &str, partitions: u32) -> Vec<u64> {
        eventually(Duration::from_secs(30), "every partition to have a serving leader", || async {
            let mut leaders = Vec::new();
            for partition in 0..partitions {
                leaders.push(partition_offsets(self, topic, partition).await?.0);
            }
            Some(leaders)
        })
        .await
    }

    /// The node logs, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- node {} ---\n{}", n.id, std::fs::read_to_string(&n.log_path).unwrap_or_default()))
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() && std::env::var_os("STRATA_TEST_KEEP").is_some() {
            let kept = self.dir.path().to_path_buf();
            eprintln!("keeping {}", kept.display());
            std::mem::forget(std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir")));
        }
    }
}

/// Creates a topic through node `via` and waits until it serves. Back-off
/// errors (a node that has not yet heard of the metadata leader) are retried,
/// as the error contract asks; any other error fails the test.
pub async fn create_topic(
    cluster: &Cluster,
    via: u64,
    name: &str,
    partitions: u32,
    rf: u32,
    configs: &[(&str, &str)],
) -> Vec<u64> {
    let retried = std::cell::Cell::new(false);
    eventually(Duration::from_secs(30), "topic creation", || async {
        let mut api = cluster.api(via).await;
        let answer = api
            .create_topic(pb::CreateTopicRequest {
                name: name.into(),
                partitions,
                replication_factor: rf,
                configs: configs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            })
            .await
            .expect("create topic rpc")
            .into_inner();
        match answer.error {
            None => Some(()),
            // A back-off error does not say the proposal never committed.
            Some(error) if retried.get() && error.name == "TOPIC_ALREADY_EXISTS" => Some(()),
            Some(error) if error.retry == pb::RetryClass::BackOff as i32 => {
                retried.set(true);
                None
            }
            Some(error) => panic!("create topic failed: {error:?}"),
        }
    })
    .await;
    cluster.wait_topic_ready(name, partitions).await
}

/// Produces one batch of `values` (keys optional) to a partition, following
/// NOT_LEADER answers and retrying unavailable leaders until `timeout`.
/// Returns the base offset, or the last error when it gives up.
pub async fn produce(
    cluster: &Cluster,
    topic: &str,
    partition: u32,
    records: &[(Option<&str>, &str)],
    timeout: Duration,
) -> Result<u64, String> {
    produce_at(cluster, topic, partition, records, now_ms(), timeout).await
}

/// `produce` with every record stamped `timestamp_ms`.
pub async fn produce_at(
    cluster: &Cluster,
    topic: &str,
    partition: u32,
    records: &[(Option<&str>, &str)],
    timestamp_ms: i64,
    timeout: Duration,
) -> Result<u64, String> {
    let batch = strata_record::encode_batch(
        &records
            .iter()
            .map(|(k, v)| strata_record::Record {
                key: k.map(|k| bytes::Bytes::copy_from_slice(k.as_bytes())),
                value: Some(bytes::Bytes::copy_from_slice(v.as_bytes())),
                headers: vec![],
                timestamp_ms,
            })
            .collect::<Vec<_>>(),
        strata_record::ProducerFields::default(),
    )
    .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    let running: Vec<u64> = cluster.nodes.iter().filter(|n| n.child.is_some()).map(|n| n.id).collect();
    let mut target = running[0];
    let mut last = String::new();
    while Instant::now() < deadline {
        let mut api = cluster.api(target).await;
        let request = pb::ProduceRequest {
            topic: topic.into(),
            partition,
            batch: batch.clone(),
            acks: pb::Acks::All as i32,
            timeout_ms: 5_000,
            ..Default::default()
        };
        match tokio::time::timeout(Duration::from_secs(6), api.produce(request)).await {
            Ok(Ok(answer)) => {
                let answer = answer.into_inner();
                match answer.error {
                    None => return Ok(answer.base_offset),
                    Some(error) if error.retry == pb::RetryClass::Fatal as i32 => return Err(format!("{error:?}")),
                    Some(error) => {
                        last = format!("{}: {}", error.name, error.message);
                        if error.leader_id != 0 && running.contains(&error.leader_id) {
                            target = error.leader_id;
                            continue;
                        }
                    }
                }
            }
            Ok(Err(status)) => last = status.to_string(),
            Err(_) => last = "produce timed out".into(),
        }
        // Try the next running node.
        let index = running.iter().position(|id| *id == target).unwrap_or(0);
        target = running[(index + 1) % running.len()];
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("gave up producing: {last}"))
}

/// (serving node, log start, high watermark) of a partition, as the first
/// running node that answers ListOffsets for it (its leader) says.
pub async fn partition_offsets(cluster: &Cluster, topic: &str, partition: u32) -> Option<(u64, u64, u64)> {
    for node in cluster.nodes.iter().filter(|n| n.is_running()) {
        let mut api = cluster.api(node.id).await;
        let request = pb::ListOffsetsRequest {
            topic: topic.into(),
            partition,
            spec: pb::OffsetSpec::Latest as i32,
            timestamp_ms: 0,
            with_stats: false,
        };
        if let Ok(answer) = api.list_offsets(request).await {
            let answer = answer.into_inner();
            if answer.error.is_none() {
                return Some((node.id, answer.log_start_offset, answer.high_watermark));
            }
        }
    }
    None
}

/// Reads every record of a partition from its leader, from `from` up to the
/// high watermark seen by the first fetch.
pub async fn fetch_all(cluster: &Cluster, topic: &str, partition: u32, from: u64) -> Vec<strata_record::StoredRecord> {
    let mut out = Vec::new();
    let mut offset = from;
    let mut end = None;
    let mut last_error = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for node in cluster.nodes.iter().filter(|n| n.child.is_some()) {
            let mut api = cluster.api(node.id).await;
            loop {
                let request = pb::FetchRequest {
                    topic: topic.into(),
                    partition,
                    offset,
                    max_bytes: 0,
                    max_wait_ms: 0,
                    replica_read: false,
                    ..Default::default()
                };
                let answer = match api.fetch(request).await {
                    Ok(answer) => answer.into_inner(),
                    Err(status) => {
                        last_error = format!("node {}: {status}", node.id);
                        break;
                    }
                };
                if let Some(error) = &answer.error {
                    last_error = format!("node {}: {} {}", node.id, error.name, error.message);
                    break;
                }
                let end_offset = *end.get_or_insert(answer.high_watermark);
                let records = strata_record::decode_records_from(&answer.records, offset).expect("valid batches");
                for record in records {
                    if record.offset < end_offset {
                        assert_eq!(record.offset, offset, "offsets are dense");
                        offset = record.offset + 1;
                        out.push(record);
                    }
                }
                if offset >= end_offset {
                    return out;
                }
            }
        }
        assert!(Instant::now() < deadline, "timed out reading {topic}/{partition} at offset {offset}: {last_error}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub use strata_core::time::now_ms;

/// Runs the `strata` CLI against the running nodes of `cluster`, killed if
/// it takes longer than `timeout`.
pub async fn strata_cli(cluster: &Cluster, args: &[&str], timeout: Duration) -> std::process::Output {
    let output = tokio::process::Command::new(strata_binary())
        .arg("--bootstrap")
        .arg(cluster.bootstrap().join(","))
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(timeout, output).await.expect("the command finishes in time").expect("run strata")
}

/// Every value node `id`'s own copy of `topic`/`partition` holds, through
/// replica reads (no leader involved), up to what it has applied; `None`
/// while the node cannot answer.
pub async fn replica_values(cluster: &Cluster, id: u64, topic: &str, partition: u32) -> Option<Vec<String>> {
    let mut api = cluster.api(id).await;
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let request =
            pb::FetchRequest { topic: topic.into(), partition, offset, replica_read: true, ..Default::default() };
        let answer = api.fetch(request).await.ok()?.into_inner();
        if answer.error.is_some() {
            return None;
        }
        let records = strata_record::decode_records_from(&answer.records, offset).ok()?;
        if records.is_empty() {
            return Some(out);
        }
        for record in records {
            offset = record.offset + 1;
            out.push(value_of(&record));
        }
    }
}

pub fn value_of(record: &strata_record::StoredRecord) -> String {
    String::from_utf8_lossy(record.value.as_deref().unwrap_or_default()).into_owned()
}

/// How long a test waits for a metrics answer: a scrape takes milliseconds.
const HTTP_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP answer from a node's metrics port.
pub struct HttpAnswer {
    /// As on the wire: `HTTP/1.1 200 OK`.
    pub status_line: String,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

/// One HTTP/1.1 request (hyper's client) on a connection of its own.
pub async fn http_request(address: &str, method: &str, path: &str, accept: &str) -> HttpAnswer {
    use http_body_util::BodyExt;
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(address).await.expect("connect to the metrics port");
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.expect("handshake");
        let connection = tokio::spawn(connection);
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, address)
            .header(hyper::header::ACCEPT, accept)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("a valid request");
        let answer = sender.send_request(request).await.expect("an HTTP answer");
        let status_line = format!("{:?} {}", answer.version(), answer.status());
        let headers = answer.headers().clone();
        let body = answer.into_body().collect().await.expect("the whole body").to_bytes();
        // The node closes each connection after one answer.
        connection.await.expect("connection task").expect("a clean close");
        HttpAnswer { status_line, headers, body: String::from_utf8(body.to_vec()).expect("a text answer") }
    };
    tokio::time::timeout(HTTP_ANSWER_TIMEOUT, exchange).await.expect("metrics answer in time")
}

/// `GET path` asking for the Prometheus text format; the status line and the body.
pub async fn http_get(address: &str, path: &str) -> (String, String) {
    let answer = http_request(address, "GET", path, "text/plain").await;
    (answer.status_line, answer.body)
}

/// Writes `request` as is (it may be malformed on purpose) and reads the
/// answer until the node closes the connection.
pub async fn raw_http_exchange(address: &str, request: &[u8]) -> String {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect to the metrics port");
        stream.write_all(request).await.expect("send the request");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.expect("read the answer");
        String::from_utf8_lossy(&answer).into_owned()
    };
    tokio::time::timeout(HTTP_ANSWER_TIMEOUT, exchange).await.expect("an answer and a close in time")
}

/// The value of a sample line `name{labels} value` (exact name and labels).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}
