//! `strata`: the one binary of Strata. `server` runs a node, `dev` a local
//! cluster; the other subcommands are clients of a running cluster.

mod bench;
mod cluster;
mod consume;
mod dev;
mod group;
mod partition;
mod pipe;
mod produce;
mod server;
mod topic;
mod txn;

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

    /// Log filter (e.g. warn, debug, strata_server=debug); RUST_LOG wins
    /// when set [default: info for `server` and `dev`, warn otherwise].
    #[arg(long, global = true, env = "STRATA_LOG_LEVEL")]
    pub log_level: Option<String>,

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
    /// Move a partition to other replicas.
    #[command(subcommand)]
    Partition(partition::PartitionCommand),
    /// List, describe, reset the offsets of, and delete consumer groups.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Run a filter command exactly once over a topic: read IN as a group
    /// member, write the command's output lines to OUT, commit both in one
    /// transaction.
    Pipe(pipe::PipeArgs),
    /// List, describe and abort transactions.
    #[command(subcommand)]
    Txn(txn::TxnCommand),
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

/// The log filter asked for, or by default info for a server (and the
/// nodes of `dev`) and warn for client commands, which stay quiet.
fn log_filter(cli: &Cli) -> String {
    cli.log_level.clone().unwrap_or_else(|| match &cli.command {
        Command::Server(_) | Command::Dev(_) | Command::Pipe(_) => "info".to_string(),
        _ => "warn".to_string(),
    })
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let default_level = log_filter(&cli);
    init_logging(&default_level);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Server(args) => server::run(args).await,
            Command::Dev(args) => dev::run(args, &default_level).await,
            Command::Topic(cmd) => topic::run(cmd, &cli.bootstrap, cli.json).await,
            Command::Produce(args) => produce::run(args, &cli.bootstrap, cli.json).await,
            Command::Consume(args) => consume::run(args, &cli.bootstrap, cli.json).await,
            Command::Cluster(cmd) => cluster::run(cmd, &cli.bootstrap, cli.json).await,
            Command::Partition(cmd) => partition::run(cmd, &cli.bootstrap, cli.json).await,
            Command::Bench(args) => bench::run(args, &cli.bootstrap, cli.json).await,
            Command::Group(cmd) => group::run(cmd, &cli.bootstrap, cli.json).await,
            Command::Txn(cmd) => txn::run(cmd, &cli.bootstrap, cli.json).await,
            Command::Pipe(args) => pipe::run(args, &cli.bootstrap).await,
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

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};

    use super::*;

    #[test]
    fn log_level_defaults_by_command_and_an_explicit_one_wins() {
        // Without the STRATA_LOG_LEVEL fallback, so the caller's environment cannot decide.
        let command = Cli::command().mut_arg("log_level", |arg| arg.env(None));
        let filter = |args: &[&str]| {
            let matches = command.clone().try_get_matches_from(args).expect("valid arguments");
            log_filter(&Cli::from_arg_matches(&matches).expect("matches parse"))
        };
        assert_eq!(filter(&["strata", "dev"]), "info");
        assert_eq!(filter(&["strata", "cluster", "status"]), "warn");
        // An explicit warn used to be taken for the default and raised to info.
        assert_eq!(filter(&["strata", "--log-level", "warn", "dev"]), "warn");
        assert_eq!(filter(&["strata", "--log-level", "debug", "cluster", "status"]), "debug");
    }
}
