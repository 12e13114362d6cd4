//! `strata`: the one binary of Strata. `server` runs a node, `dev` a local
//! cluster; the other subcommands are clients of a running cluster.

mod bench;
mod cluster;
mod consume;
mod dev;
mod produce;
mod server;
mod topic;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "strata", version, about = "Strata: a replicated log and message queue")]
pub struct Cli {
    /// Addresses of one or more nodes to reach the cluster through.
    #[arg(long, global = true, env = "STRATA_BOOTSTRAP", default_value = "127.0.0.1:7171", value_delimiter = ',')]
    pub bootstrap: Vec<String>,

    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// Log filter (e.g. info, debug, strata_server=debug); RUST_LOG wins when set.
    #[arg(long, global = true, env = "STRATA_LOG_LEVEL", default_value = "warn")]
    pub log_level: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one node of a cluster.
    Server(server::ServerArgs),
    /// Run a local cluster of N nodes on 127.0.0.1 in the foreground.
    Dev(dev::DevArgs),
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Send stdin lines as records.
    Produce(produce::ProduceArgs),
    /// Print records of a topic.
    Consume(consume::ConsumeArgs),
    /// Cluster-wide commands.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Measure produce (and consume) throughput and latency against a cluster.
    Bench(bench::BenchArgs),
}

fn init_logging(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal();
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let default_level = match &cli.command {
        // A server logs at info unless told otherwise; clients stay quiet.
        Command::Server(_) | Command::Dev(_) if cli.log_level == "warn" => "info".to_string(),
        _ => cli.log_level.clone(),
    };
    init_logging(&default_level);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Server(args) => server::run(args).await,
            Command::Dev(args) => dev::run(args, &cli.log_level).await,
            Command::Topic(cmd) => topic::run(cmd, &cli.bootstrap, cli.json).await,
            Command::Produce(args) => produce::run(args, &cli.bootstrap, cli.json).await,
            Command::Consume(args) => consume::run(args, &cli.bootstrap, cli.json).await,
            Command::Cluster(cmd) => cluster::run(cmd, &cli.bootstrap, cli.json).await,
            Command::Bench(args) => bench::run(args, &cli.bootstrap, cli.json).await,
        }
    });
    // Dropping every task closes the node's database before the process
    // exits; RocksDB aborts when it is still open during exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(10));
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
