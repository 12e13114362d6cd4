//! `strata server`: runs one node until SIGINT or SIGTERM.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use strata_server::FileConfig;

#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// This node's id (1..=1024), unique in the cluster.
    #[arg(long, env = "STRATA_NODE_ID")]
    pub node_id: Option<u64>,
    /// Address to listen on for clients and peers, HOST:PORT.
    #[arg(long, env = "STRATA_LISTEN")]
    pub listen: Option<String>,
    /// Address clients are told to reach this node at, HOST:PORT (a name or
    /// an IP) [default: this node's --initial-cluster address].
    #[arg(long, env = "STRATA_ADVERTISE")]
    pub advertise: Option<String>,
    /// Directory for this node's data; created when missing.
    #[arg(long, env = "STRATA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Every initial node: ID=HOST:PORT,ID=HOST:PORT,...
    #[arg(long, env = "STRATA_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// Addresses of running nodes to join a running cluster through,
    /// HOST:PORT,... (instead of --initial-cluster).
    #[arg(long, env = "STRATA_JOIN")]
    pub join: Option<String>,
    /// Where the other nodes reach this one, HOST:PORT, with --join
    /// [default: --listen].
    #[arg(long, env = "STRATA_PEER_ADDRESS")]
    pub peer_address: Option<String>,
    /// Address of the Prometheus /metrics endpoint, HOST:PORT [default: off].
    #[arg(long, env = "STRATA_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// A TOML config file (see deploy/strata.toml); flags override it.
    #[arg(long, env = "STRATA_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed
/// when this is called, not when the future is first polled: a node calls
/// it first thing, so a SIGTERM that arrives while it is still starting
/// (opening its store, probing its peers) stops it cleanly once started,
/// instead of killing it (a cluster test stopped a node just restarted).
pub fn stop_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    }
}

pub async fn run(args: ServerArgs) -> anyhow::Result<ExitCode> {
    let stop = stop_signal();
    // Every key of the file has a STRATA_* variable, which wins over the
    // file; flags win over both.
    let mut file =
        FileConfig::load_with_env(args.config.as_deref(), |var| std::env::var(var).ok()).map_err(anyhow::Error::msg)?;
    file.node_id = args.node_id.or(file.node_id);
    file.listen = args.listen.or(file.listen);
    file.advertise = args.advertise.or(file.advertise);
    file.data_dir = args.data_dir.or(file.data_dir);
    file.initial_cluster = args.initial_cluster.or(file.initial_cluster);
    file.join = args.join.or(file.join);
    file.peer_address = args.peer_address.or(file.peer_address);
    file.metrics_listen = args.metrics_listen.or(file.metrics_listen);
    let config = file.validate().map_err(anyhow::Error::msg).context("invalid configuration")?;
    if cfg!(feature = "mutation-no-dedup") {
        // The harness's mutation check greps the node logs for this line.
        tracing::warn!("MUTATION BUILD (mutation-no-dedup): idempotent batches are not deduplicated; test use only");
    }
    strata_server::run(config, stop).await?;
    Ok(ExitCode::SUCCESS)
}
