//! Strata's fault-injection harness, modelled on Jepsen's queue tests: a live
//! cluster of `strata server` processes in network namespaces, client
//! processes that send and poll, real faults, a recorded history and a
//! checker that finds lost, duplicated and reordered records.
//!
//! Code map:
//! - [`history`]: the JSON-lines history ([`history::Op`]) and its recorder.
//! - [`checker`]: pure history -> [`checker::Verdict`]; every anomaly of the
//!   design note, each with witnesses, and the liveness checks.
//! - [`net`]: namespaces, bridge, partitions (iptables) and netem (tc).
//! - [`cluster`]: the node processes: start, SIGKILL, SIGSTOP/SIGCONT.
//! - [`nemesis`]: the seeded fault schedule and its executor.
//! - [`workload`]: the `queue`, `idempotent`, `keys` and `group` workloads
//!   and the drain; [`members`]: the `group` workload's consumer group members.
//! - [`runner`]: one run from setup to teardown; [`report`]: report and plot.
//! - [`faultcheck`]: the checks of the Docker fault test (the
//!   `strata-docker-faults` binary, driven by scripts/docker-faults.sh):
//!   lost records and acknowledgement gaps after each fault.
//!
//! Invariant: the checker depends on nothing but the history, so any history
//! file, recorded here or written by hand, can be checked (`check PATH`).
//! Boundary: the harness talks to Strata only through `strata-client` and
//! the `strata` binary; it must never depend on the server, storage or Raft
//! crates, so it tests what users get.

pub mod checker;
pub mod cluster;
pub mod faultcheck;
pub mod history;
pub mod members;
pub mod nemesis;
pub mod net;
pub mod report;
pub mod runner;
pub mod txns;

/// Logs of the harness's binaries to stderr: RUST_LOG, else warnings, with
/// the client's retried errors left out (the histories record them).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,strata_client=error")),
        )
        .with_writer(std::io::stderr)
        .init();
}
pub mod workload;
