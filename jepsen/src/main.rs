//! `strata-jepsen`: runs a fault-injection test against a live cluster, or
//! re-checks a stored history.
//!
//! Exit status: 0 valid, 1 anomalies found, 2 the run itself failed.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use strata_jepsen::checker::{self, CheckOptions, GroupCheckOptions};
use strata_jepsen::history;
use strata_jepsen::nemesis::FaultKind;
use strata_jepsen::runner::{self, RunOptions};
use strata_jepsen::workload::{WorkloadKind, PRODUCER_IDEMPOTENCE};

#[derive(Parser, Debug)]
#[command(name = "strata-jepsen", about = "Fault-injection tests for Strata")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a cluster in network namespaces, run a workload under faults,
    /// then heal, drain, check and report. Needs root.
    Run {
        /// Number of nodes (1-9).
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        #[arg(long, value_enum, default_value_t = WorkloadKind::Queue)]
        workload: WorkloadKind,
        /// Comma-separated fault kinds; `--faults` with no value for none.
        /// `lost-writes` and `answers` need a `fault-hooks` build of strata
        /// (the workspace build is one).
        #[arg(long, value_enum, value_delimiter = ',', num_args = 0.., default_value = "kill,pause,partition")]
        faults: Vec<FaultKind>,
        /// Seconds of workload under faults (the heal, drain and checks follow).
        #[arg(long, default_value_t = 60)]
        time_limit: u64,
        /// Seeds the fault schedule and the clients' choices.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Client processes running at once.
        #[arg(long, default_value_t = 6)]
        concurrency: usize,
        /// Keys, i.e. partitions of the test topic.
        #[arg(long, default_value_t = 6)]
        keys: u32,
        /// Seconds within which writes must resume after the faults heal.
        #[arg(long, default_value_t = 30)]
        recovery_bound: u64,
        /// Rounds of the replica comparison after the drain (each pauses a node).
        #[arg(long, default_value_t = 2)]
        verify_rounds: u64,
        /// The `strata` binary; default: beside this executable, built if missing.
        #[arg(long)]
        strata_bin: Option<PathBuf>,
        /// Where run directories go.
        #[arg(long, default_value = "jepsen/store")]
        store: PathBuf,
        /// Keep the nodes' data directories even when the run is valid.
        #[arg(long)]
        keep_data: bool,
    },
    /// Check a stored history (JSON lines) and print the verdict as JSON.
    Check {
        path: PathBuf,
        /// Fail on duplicates; default: from the history's start entry
        /// (`duplicates_fatal`), else true.
        #[arg(long)]
        duplicates_fatal: Option<bool>,
        /// Seconds within which writes must resume after a heal; default:
        /// from the history's start entry, else 30.
        #[arg(long)]
        recovery_bound: Option<u64>,
    },
}

fn main() -> ExitCode {
    strata_jepsen::init_logging();
    let cli = Cli::parse();
    match cli.command {
        Command::Check { path, duplicates_fatal, recovery_bound } => {
            match check(path, duplicates_fatal, recovery_bound) {
                Ok(code) => code,
                Err(error) => {
                    eprintln!("error: {error:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Run {
            nodes,
            workload,
            faults,
            time_limit,
            seed,
            concurrency,
            keys,
            recovery_bound,
            verify_rounds,
            strata_bin,
            store,
            keep_data,
        } => {
            let options = RunOptions {
                nodes,
                workload,
                faults,
                time_limit_s: time_limit,
                seed,
                concurrency,
                keys,
                recovery_bound_s: recovery_bound,
                verify_rounds,
                strata_bin,
                store,
                keep_data,
            };
            run(options)
        }
    }
}

fn check(path: PathBuf, duplicates_fatal: Option<bool>, recovery_bound: Option<u64>) -> anyhow::Result<ExitCode> {
    let ops = history::load(&path)?;
    let start = ops.iter().find(|op| op.f == "start").map(|op| op.value.clone()).unwrap_or_default();
    let options = CheckOptions {
        duplicates_fatal: duplicates_fatal
            .or_else(|| start.get("duplicates_fatal").and_then(|v| v.as_bool()))
            .unwrap_or(true),
        recovery_bound_ns: recovery_bound
            .or_else(|| start.get("recovery_bound_s").and_then(|v| v.as_u64()))
            .unwrap_or(30)
            * 1_000_000_000,
        retention_ms: start.get("retention_ms").and_then(|v| v.as_u64()),
        sparse_reads: start.get("workload").and_then(|v| v.as_str()) == Some("txn"),
        group: start.get("group").filter(|g| !g.is_null()).map(|g| {
            let ms = |name: &str| g.get(name).and_then(|v| v.as_u64()).unwrap_or(0) * 1_000_000;
            GroupCheckOptions {
                keys: g.get("keys").and_then(|v| v.as_u64()).unwrap_or(0),
                session_timeout_ns: ms("session_timeout_ms"),
                convergence_bound_ns: ms("convergence_bound_ms"),
            }
        }),
    };
    let mut verdict = checker::check(&ops, &options).context("checking the history")?;
    if !options.duplicates_fatal {
        verdict.notes.push("duplicates are reported as allowed (no idempotent producer promised)".into());
    }
    println!("{}", serde_json::to_string_pretty(&verdict)?);
    eprint!("{}", verdict.summary());
    Ok(if verdict.valid { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn run(options: RunOptions) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let workload = options.workload;
    // A panic inside the run unwinds through its guards (nodes killed,
    // namespaces removed) and is then reported as a failed run.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(async move {
            let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("install the SIGTERM handler");
            // Cancelling drops the run, whose guards kill the nodes and remove
            // the namespaces before we exit.
            tokio::select! {
                result = runner::run(options) => Some(result),
                _ = tokio::signal::ctrl_c() => None,
                _ = terminate.recv() => None,
            }
        })
    }));
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    let Ok(outcome) = outcome else {
        eprintln!("error: the harness panicked; nodes stopped and namespaces removed");
        return ExitCode::from(2);
    };
    match outcome {
        None => {
            eprintln!("interrupted: nodes stopped and namespaces removed");
            ExitCode::from(2)
        }
        Some(Err(error)) => {
            eprintln!("error: the run failed: {error:#}");
            ExitCode::from(2)
        }
        Some(Ok(result)) => {
            print!("{}", result.verdict.summary());
            if workload == WorkloadKind::Idempotent && !PRODUCER_IDEMPOTENCE {
                println!("note: duplicates are allowed until the producer is idempotent (PRODUCER_IDEMPOTENCE)");
            }
            println!("report: {}", result.dir.join("report.md").display());
            // One line for scripts (the soak summary greps it).
            let anomalies: Vec<&str> = result.verdict.anomalies.keys().map(String::as_str).collect();
            let allowed: Vec<String> =
                result.verdict.allowed.iter().map(|(name, found)| format!("{name}:{}", found.len())).collect();
            println!(
                "RESULT valid={} anomalies={} allowed={} acked={} read={} dir={}",
                result.verdict.valid,
                if anomalies.is_empty() { "-".to_string() } else { anomalies.join(",") },
                if allowed.is_empty() { "-".to_string() } else { allowed.join(",") },
                result.verdict.stats.acknowledged_sends,
                result.verdict.stats.records_read,
                result.dir.display()
            );
            if result.verdict.valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}
