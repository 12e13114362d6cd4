//! The systems under test, each run as a 3-node cluster on 127.0.0.1 with
//! its data under one directory: Strata, etcd, RabbitMQ (quorum queues) and
//! NATS (JetStream, R3 file streams), and their topic equivalents. What the
//! load generator needs of each system is in `sinks.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;

use crate::procs::{free_ports, wait_for, Server};

/// How long a cluster may take to form and serve.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The Erlang cookie of the benchmark's RabbitMQ nodes (loopback only).
const ERLANG_COOKIE: &str = "STRATABENCHCOOKIE";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    Strata,
    Etcd,
    Rabbitmq,
    Nats,
}

impl System {
    pub const ALL: [System; 4] = [System::Strata, System::Etcd, System::Rabbitmq, System::Nats];

    /// The peers of Strata's durability class (fsync before the
    /// acknowledgement): the ones its figures are compared with.
    pub const FSYNC_CLASS_PEERS: [System; 2] = [System::Etcd, System::Rabbitmq];

    pub fn name(self) -> &'static str {
        match self {
            System::Strata => "strata",
            System::Etcd => "etcd",
            System::Rabbitmq => "rabbitmq",
            System::Nats => "nats",
        }
    }

    /// When an acknowledgement is given, as the benchmark spec classes them.
    pub fn durability(self) -> &'static str {
        match self {
            System::Strata | System::Etcd | System::Rabbitmq => "fsync before ack",
            System::Nats => "replication only (acks before fsync)",
        }
    }
}

/// A running 3-node cluster of one system.
pub struct Cluster {
    pub system: System,
    pub servers: Vec<Server>,
    /// Client addresses, one per node (host:port).
    pub endpoints: Vec<String>,
    /// Strata only: metrics endpoints, one per node.
    pub metrics: Vec<String>,
    pub version: String,
    /// Helpers that must stop with the cluster but are not measured (epmd).
    helpers: Vec<Server>,
}

impl Cluster {
    pub fn pids(&self) -> Vec<u32> {
        self.servers.iter().filter_map(Server::pid).collect()
    }

    pub fn stop(&mut self) {
        for server in &mut self.servers {
            server.stop();
        }
        for helper in &mut self.helpers {
            helper.stop();
        }
    }

    pub fn logs(&self) -> String {
        self.servers.iter().map(|s| format!("--- {} ---\n{}\n", s.name, s.log_tail(20))).collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last lines of each server's log, to explain a failed start.
fn tails(servers: &[Server]) -> String {
    servers.iter().map(|s| format!("--- {} ---\n{}\n", s.name, s.log_tail(15))).collect()
}

fn version_of(program: &str, arg: &str) -> String {
    Command::new(program)
        .arg(arg)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or_default().trim().to_string())
        .unwrap_or_default()
}

/// Settings of the Strata nodes the suite starts, beside their defaults.
#[derive(Clone, Copy, Debug)]
pub struct StrataOptions {
    /// `group_heartbeat_interval` (ms) of every node.
    pub group_heartbeat_interval_ms: u64,
}

pub async fn start(system: System, dir: &Path, strata_bin: &Path, strata: StrataOptions) -> anyhow::Result<Cluster> {
    std::fs::create_dir_all(dir)?;
    match system {
        System::Strata => start_strata(dir, strata_bin, strata).await,
        System::Etcd => start_etcd(dir).await,
        System::Rabbitmq => start_rabbitmq(dir).await,
        System::Nats => start_nats(dir).await,
    }
}

// ---- Strata -------------------------------------------------------------

async fn start_strata(dir: &Path, bin: &Path, options: StrataOptions) -> anyhow::Result<Cluster> {
    start_strata_nodes(dir, bin, options, 3).await
}

/// A Strata cluster of `nodes` nodes (all initial voters); the partition
/// moves use 4.
pub async fn start_strata_nodes(
    dir: &Path,
    bin: &Path,
    options: StrataOptions,
    nodes: usize,
) -> anyhow::Result<Cluster> {
    std::fs::create_dir_all(dir)?;
    let ports: Vec<(u16, u16)> = free_ports(2 * nodes).chunks(2).map(|p| (p[0], p[1])).collect();
    let initial: Vec<String> = ports.iter().enumerate().map(|(i, (p, _))| format!("{}=127.0.0.1:{p}", i + 1)).collect();
    let mut servers = Vec::new();
    for (index, (port, metrics_port)) in ports.iter().enumerate() {
        let id = index + 1;
        let mut command = Command::new(bin);
        command
            // STRATA_BENCH_LOG overrides, to see why a phase failed.
            .args(["--log-level", &std::env::var("STRATA_BENCH_LOG").unwrap_or_else(|_| "warn".into())])
            .args(["server", "--node-id", &id.to_string()])
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(dir.join(format!("node-{id}")))
            .arg("--initial-cluster")
            .arg(initial.join(","))
            .arg("--metrics-listen")
            .arg(format!("127.0.0.1:{metrics_port}"))
            // Every config key has an environment override (no flag for this one).
            .env("STRATA_GROUP_HEARTBEAT_INTERVAL", format!("{}ms", options.group_heartbeat_interval_ms));
        servers.push(Server::spawn(&format!("strata-{id}"), command, &dir.join(format!("node-{id}.log")))?);
    }
    let endpoints: Vec<String> = ports.iter().map(|(p, _)| format!("127.0.0.1:{p}")).collect();
    let client = strata_client::Client::connect(&endpoints)?;
    wait_for(READY_TIMEOUT, "strata cluster", || async {
        let status = client.cluster_status().await?;
        anyhow::ensure!(status.metadata_available, "no metadata leader yet");
        Ok(())
    })
    .await
    .map_err(|e| e.context(tails(&servers)))?;
    Ok(Cluster {
        system: System::Strata,
        servers,
        endpoints,
        metrics: ports.iter().map(|(_, m)| format!("127.0.0.1:{m}")).collect(),
        version: version_of(bin.to_str().unwrap_or("strata"), "--version"),
        helpers: Vec::new(),
    })
}

// ---- etcd ---------------------------------------------------------------

async fn start_etcd(dir: &Path) -> anyhow::Result<Cluster> {
    let ports: Vec<(u16, u16)> = free_ports(6).chunks(2).map(|p| (p[0], p[1])).collect();
    let initial: Vec<String> =
        ports.iter().enumerate().map(|(i, (_, peer))| format!("e{}=http://127.0.0.1:{peer}", i + 1)).collect();
    let mut servers = Vec::new();
    for (index, (client_port, peer_port)) in ports.iter().enumerate() {
        let name = format!("e{}", index + 1);
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut command = Command::new("etcd");
        command
            .args(["--name", &name])
            .arg("--data-dir")
            .arg(dir.join(&name))
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &initial.join(","), "--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "strata-bench"])
            // Room for the benchmark's writes; the default 2 GiB quota could fill.
            .args(["--quota-backend-bytes", "8589934592"])
            .args(["--log-level", "warn"]);
        servers.push(Server::spawn(&format!("etcd-{}", index + 1), command, &dir.join(format!("{name}.log")))?);
    }
    let endpoints: Vec<String> = ports.iter().map(|(c, _)| format!("127.0.0.1:{c}")).collect();
    wait_for(READY_TIMEOUT, "etcd cluster", || async {
        let mut client = etcd_client::Client::connect(&endpoints, None).await?;
        client.put("strata-bench-ready", "1", None).await?;
        Ok(())
    })
    .await
    .map_err(|e| e.context(tails(&servers)))?;
    Ok(Cluster {
        system: System::Etcd,
        servers,
        endpoints,
        metrics: Vec::new(),
        version: version_of("etcd", "--version"),
        helpers: Vec::new(),
    })
}

// ---- RabbitMQ -----------------------------------------------------------

/// What `rabbitmqctl` needs to reach the benchmark's nodes.
#[derive(Clone)]
struct RabbitEnv {
    home: PathBuf,
    epmd_port: u16,
}

impl RabbitEnv {
    fn ctl(&self, node: &str, args: &[&str]) -> anyhow::Result<String> {
        let output = Command::new("/usr/lib/rabbitmq/bin/rabbitmqctl")
            .env("HOME", &self.home)
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .args(["-n", node])
            .args(args)
            .output()
            .context("run rabbitmqctl")?;
        if !output.status.success() {
            bail!(
                "rabbitmqctl -n {node} {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

fn find_epmd() -> anyhow::Result<PathBuf> {
    // The erts copy runs in the foreground without the `-daemon` wrapper logic.
    for entry in std::fs::read_dir("/usr/lib/erlang")?.flatten() {
        let candidate = entry.path().join("bin/epmd");
        if entry.file_name().to_string_lossy().starts_with("erts-") && candidate.exists() {
            return Ok(candidate);
        }
    }
    Ok(PathBuf::from("epmd"))
}

async fn start_rabbitmq(dir: &Path) -> anyhow::Result<Cluster> {
    let home = dir.join("home");
    std::fs::create_dir_all(&home)?;
    let cookie = home.join(".erlang.cookie");
    std::fs::write(&cookie, ERLANG_COOKIE)?;
    std::fs::set_permissions(&cookie, std::os::unix::fs::PermissionsExt::from_mode(0o400))?;
    let plugins = dir.join("enabled_plugins");
    std::fs::write(&plugins, "[].\n")?;
    // Our own epmd on a private port, so nothing is left running afterwards
    // and nothing listens beyond loopback.
    // Every port of the cluster at once, so none is handed out twice.
    let ports = free_ports(7);
    let epmd_port = ports[6];
    let mut epmd = Command::new(find_epmd()?);
    epmd.args(["-address", "127.0.0.1", "-port", &epmd_port.to_string()]);
    let helpers = vec![Server::spawn("epmd", epmd, &dir.join("epmd.log"))?];
    let env = RabbitEnv { home: home.clone(), epmd_port };

    let mut servers = Vec::new();
    let mut endpoints = Vec::new();
    let mut names = Vec::new();
    for index in 1..=3 {
        let (amqp_port, dist_port) = (ports[2 * (index - 1)], ports[2 * (index - 1) + 1]);
        let name = format!("bench{index}@localhost");
        let mut command = Command::new("/usr/lib/rabbitmq/bin/rabbitmq-server");
        command
            .env("HOME", &home)
            .env("ERL_EPMD_PORT", epmd_port.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODENAME", &name)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", amqp_port.to_string())
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join(format!("mnesia{index}")))
            .env("RABBITMQ_LOG_BASE", dir.join(format!("log{index}")))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", &plugins)
            .env("RABBITMQ_PID_FILE", dir.join(format!("node{index}.pid")))
            .env("RABBITMQ_CONFIG_FILE", dir.join(format!("none{index}")))
            .env("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", "-kernel inet_dist_use_interface {127,0,0,1}");
        servers.push(Server::spawn(&format!("rabbitmq-{index}"), command, &dir.join(format!("node{index}.log")))?);
        endpoints.push(format!("127.0.0.1:{amqp_port}"));
        names.push(name);
    }
    for name in &names {
        let env = env.clone();
        let name = name.clone();
        wait_for(READY_TIMEOUT, "rabbitmq node", move || {
            let (env, name) = (env.clone(), name.clone());
            async move { tokio::task::spawn_blocking(move || env.ctl(&name, &["await_startup"])).await? }
        })
        .await
        .map_err(|e| e.context(tails(&servers)))?;
    }
    for name in &names[1..] {
        env.ctl(name, &["stop_app"])?;
        env.ctl(name, &["join_cluster", &names[0]])?;
        env.ctl(name, &["start_app"])?;
    }
    let status = env.ctl(&names[0], &["cluster_status"])?;
    anyhow::ensure!(names.iter().all(|n| status.contains(n.as_str())), "rabbitmq cluster did not form: {status}");
    let version = env.ctl(&names[0], &["version"]).map(|v| v.trim().to_string()).unwrap_or_default();
    Ok(Cluster { system: System::Rabbitmq, servers, endpoints, metrics: Vec::new(), version, helpers })
}

// ---- NATS ---------------------------------------------------------------

async fn start_nats(dir: &Path) -> anyhow::Result<Cluster> {
    let ports: Vec<(u16, u16)> = free_ports(6).chunks(2).map(|p| (p[0], p[1])).collect();
    let routes: Vec<String> = ports.iter().map(|(_, r)| format!("nats-route://127.0.0.1:{r}")).collect();
    let mut servers = Vec::new();
    for (index, (client_port, route_port)) in ports.iter().enumerate() {
        let name = format!("n{}", index + 1);
        let store = dir.join(&name);
        let config = format!(
            "server_name: {name}\nlisten: 127.0.0.1:{client_port}\n\
             jetstream {{\n  store_dir: \"{}\"\n  max_memory_store: 256MB\n  max_file_store: 16GB\n}}\n\
             cluster {{\n  name: strata-bench\n  listen: 127.0.0.1:{route_port}\n  routes: [{}]\n}}\n",
            store.display(),
            routes.join(", ")
        );
        let config_path = dir.join(format!("{name}.conf"));
        std::fs::write(&config_path, config)?;
        let mut command = Command::new("nats-server");
        command.arg("-c").arg(&config_path);
        servers.push(Server::spawn(&format!("nats-{}", index + 1), command, &dir.join(format!("{name}.log")))?);
    }
    let endpoints: Vec<String> = ports.iter().map(|(c, _)| format!("127.0.0.1:{c}")).collect();
    // JetStream serves once its meta group has a leader: creating a
    // replicated stream is the check.
    wait_for(READY_TIMEOUT, "nats jetstream cluster", || async {
        let client = async_nats::connect(endpoints[0].as_str()).await?;
        let js = async_nats::jetstream::new(client);
        js.get_or_create_stream(async_nats::jetstream::stream::Config {
            name: "READY".into(),
            subjects: vec!["ready".into()],
            num_replicas: 3,
            storage: async_nats::jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(())
    })
    .await
    .map_err(|e| e.context(tails(&servers)))?;
    Ok(Cluster {
        system: System::Nats,
        servers,
        endpoints,
        metrics: Vec::new(),
        version: version_of("nats-server", "--version"),
        helpers: Vec::new(),
    })
}

// ---- topics / queues / streams -------------------------------------------

/// Creates the system's equivalent of a topic with `partitions` partitions,
/// replicated 3 times: a Strata topic, quorum queues, R3 file streams. etcd
/// has one Raft group and needs nothing.
pub async fn create_topic(cluster: &Cluster, name: &str, partitions: u32) -> anyhow::Result<()> {
    match cluster.system {
        System::Strata => {
            let client = strata_client::Client::connect(&cluster.endpoints)?;
            client.create_topic(name, partitions, 3, Default::default()).await?;
            for partition in 0..partitions {
                wait_for(READY_TIMEOUT, "strata partition leader", || async {
                    client.list_offsets(name, partition, strata_client::OffsetSpec::Latest).await?;
                    Ok(())
                })
                .await?;
            }
        }
        System::Etcd => {}
        System::Rabbitmq => {
            for partition in 0..partitions {
                // Declared through node p % 3 so queue leaders spread over the nodes.
                let (connection, channel) = rabbit_channel(cluster, partition as usize).await?;
                let mut arguments = lapin::types::FieldTable::default();
                arguments.insert("x-queue-type".into(), lapin::types::AMQPValue::LongString("quorum".into()));
                channel
                    .queue_declare(
                        rabbit_queue(name, partition).into(),
                        lapin::options::QueueDeclareOptions { durable: true, ..Default::default() },
                        arguments,
                    )
                    .await?;
                let _ = connection.close(200, "declared".into()).await;
            }
        }
        System::Nats => {
            let client = async_nats::connect(cluster.endpoints[0].as_str()).await?;
            let js = async_nats::jetstream::new(client);
            for partition in 0..partitions {
                js.create_stream(async_nats::jetstream::stream::Config {
                    name: nats_stream(name, partition),
                    subjects: vec![nats_subject(name, partition)],
                    num_replicas: 3,
                    storage: async_nats::jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| anyhow::anyhow!("create stream: {e}"))?;
            }
        }
    }
    Ok(())
}

/// A connection to node `index` of a RabbitMQ cluster (round robin over
/// its nodes) and a channel on it; the channel lives as long as the
/// connection is kept.
pub async fn rabbit_channel(cluster: &Cluster, index: usize) -> anyhow::Result<(lapin::Connection, lapin::Channel)> {
    let endpoint = &cluster.endpoints[index % cluster.endpoints.len()];
    let connection = lapin::Connection::connect(
        &format!("amqp://guest:guest@{endpoint}/%2f"),
        lapin::ConnectionProperties::default(),
    )
    .await?;
    let channel = connection.create_channel().await?;
    Ok((connection, channel))
}

pub fn rabbit_queue(topic: &str, partition: u32) -> String {
    format!("{topic}-{partition}")
}

fn nats_stream(topic: &str, partition: u32) -> String {
    format!("{}_{partition}", topic.replace(['.', '-'], "_").to_uppercase())
}

pub fn nats_subject(topic: &str, partition: u32) -> String {
    format!("{}.{partition}", topic.replace('.', "_"))
}

/// The node (index into `cluster.servers`) leading partition 0 of a Strata topic.
pub async fn strata_leader(cluster: &Cluster, topic: &str) -> anyhow::Result<usize> {
    let client = strata_client::Client::connect(&cluster.endpoints)?;
    let metadata = client.refresh_metadata().await?;
    let leader = metadata.partition(topic, 0).and_then(|p| p.leader).context("partition 0 has no known leader")?;
    Ok(leader as usize - 1)
}

/// Scrapes one Strata node's /metrics page.
pub async fn scrape(address: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        stream.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\n\r\n").as_bytes()).await?;
        let mut text = String::new();
        stream.read_to_string(&mut text).await?;
        anyhow::Ok(text.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default())
    };
    tokio::time::timeout(Duration::from_secs(10), exchange).await.context("metrics scrape timed out")?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_names_are_valid_for_their_systems() {
        assert_eq!(nats_stream("w2-6", 3), "W2_6_3");
        assert_eq!(nats_subject("w2.x", 1), "w2_x.1");
        assert_eq!(rabbit_queue("w2", 0), "w2-0");
    }
}
