//! The suite's command line, and the durations of its two modes.

use std::path::PathBuf;

use clap::Parser;

use crate::load::LoadSpec;
use crate::systems::System;

#[derive(Parser, Debug)]
#[command(about = "Benchmarks Strata against etcd, RabbitMQ quorum queues and NATS JetStream")]
pub struct Args {
    /// Short runs: the whole suite in under 10 minutes.
    #[arg(long)]
    pub quick: bool,
    /// The release `strata` binary.
    #[arg(long)]
    pub strata_bin: PathBuf,
    /// Where results go (<date>.json, <date>.md, <date>.svg).
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,
    /// Where the clusters keep their data (removed afterwards). Must be on
    /// the disk being measured, not a tmpfs.
    #[arg(long, default_value = "/var/tmp/strata-bench")]
    pub work_dir: PathBuf,
    /// Run W5 (1,000 partitions) also in quick mode.
    #[arg(long)]
    pub w5: bool,
    /// Run only W5 (implies --w5; for studying partition overhead).
    #[arg(long)]
    pub only_w5: bool,
    /// Systems to run (default: all): strata, etcd, rabbitmq, nats.
    #[arg(long, value_delimiter = ',')]
    pub systems: Vec<String>,
    /// Skip the consumer group workloads (G1 rebalance, G2 offset commits,
    /// G3 group consumption), which run in both modes otherwise.
    #[arg(long, conflicts_with = "only_groups")]
    pub no_groups: bool,
    /// Run only the consumer group workloads (G1, G2 on Strata; G3 on
    /// Strata, RabbitMQ and NATS).
    #[arg(long, conflicts_with = "only_w5")]
    pub only_groups: bool,
    /// Skip the transactional read-process-write workload (T1, Strata
    /// only), which runs in both modes otherwise.
    #[arg(long, conflicts_with = "only_txn")]
    pub no_txn: bool,
    /// Run only the transactional workload (T1 on Strata).
    #[arg(long, conflicts_with_all = ["only_w5", "only_groups"])]
    pub only_txn: bool,
    /// Also run the partition moves (M1: a 1 GiB move with no throttle;
    /// M2: producers during a throttled rebalance; M3: remove-node of a
    /// node holding about 100 partitions; Strata only, 4 nodes).
    /// Opt-in: the 1 GiB preloads take minutes.
    #[arg(long)]
    pub moves: bool,
    /// Run only the partition moves.
    #[arg(long, conflicts_with_all = ["only_w5", "only_groups", "only_txn"])]
    pub only_moves: bool,
    /// The Strata nodes' `group_heartbeat_interval` (ms): the heartbeat
    /// interval of every group they create, the unit G1 is reported in.
    #[arg(long, default_value_t = strata_core::limits::DEFAULT_GROUP_HEARTBEAT_INTERVAL_MS)]
    pub group_heartbeat_interval_ms: u64,
}

impl Args {
    /// The systems asked for, in the suite's order.
    pub fn wanted(&self) -> Vec<System> {
        if self.systems.is_empty() {
            System::ALL.to_vec()
        } else {
            System::ALL.into_iter().filter(|s| self.systems.iter().any(|n| n == s.name())).collect()
        }
    }

    /// Whether W5 runs: always outside quick mode, in quick mode when asked.
    pub fn runs_w5(&self) -> bool {
        (!self.quick || self.w5 || self.only_w5) && !self.only_groups && !self.only_txn && !self.only_moves
    }

    /// Whether phase A, W3 and W7 run: not when only W5, only the group
    /// workloads, only T1 or only the moves are asked for.
    pub fn runs_main(&self) -> bool {
        !self.only_w5 && !self.only_groups && !self.only_txn && !self.only_moves
    }

    /// Whether the consumer group workloads run: in both modes (they take
    /// about two minutes in quick mode) unless skipped, and not with
    /// --only-w5, --only-txn or --only-moves.
    pub fn runs_groups(&self) -> bool {
        !self.no_groups && !self.only_w5 && !self.only_txn && !self.only_moves
    }

    /// Whether T1 runs: in both modes unless skipped, and not with
    /// --only-w5, --only-groups or --only-moves.
    pub fn runs_txn(&self) -> bool {
        !self.no_txn && !self.only_w5 && !self.only_groups && !self.only_moves
    }

    /// Whether the partition moves run: only when asked for.
    pub fn runs_moves(&self) -> bool {
        self.moves || self.only_moves
    }
}

/// Durations of one mode.
pub struct Timing {
    pub warmup_secs: f64,
    pub duration_secs: f64,
    pub drain_secs: f64,
}

impl Timing {
    pub fn of(quick: bool) -> Timing {
        if quick {
            Timing { warmup_secs: 1.0, duration_secs: 5.0, drain_secs: 30.0 }
        } else {
            Timing { warmup_secs: 3.0, duration_secs: 20.0, drain_secs: 60.0 }
        }
    }

    pub fn spec(&self, producers: usize, rate: Option<f64>, window: usize, record_size: usize) -> LoadSpec {
        LoadSpec {
            producers,
            rate,
            window,
            record_size,
            warmup_secs: self.warmup_secs,
            duration_secs: self.duration_secs,
            drain_secs: self.drain_secs,
            track_acks: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systems_are_chosen_by_name_in_the_suites_order() {
        let args = Args::parse_from(["suite", "--strata-bin", "strata", "--systems", "nats,strata,kafka"]);
        assert_eq!(args.wanted(), [System::Strata, System::Nats]);
        let all = Args::parse_from(["suite", "--strata-bin", "strata", "--quick"]);
        assert_eq!(all.wanted(), System::ALL);
        assert!(!all.runs_w5());
        assert!(Args::parse_from(["suite", "--strata-bin", "strata", "--quick", "--only-w5"]).runs_w5());
        assert!(Args::parse_from(["suite", "--strata-bin", "strata"]).runs_w5());
    }

    #[test]
    fn group_workloads_run_unless_skipped_or_another_only_is_asked() {
        let all = Args::parse_from(["suite", "--strata-bin", "strata", "--quick"]);
        assert!(all.runs_groups() && all.runs_main());
        assert_eq!(all.group_heartbeat_interval_ms, 3000);
        let only = Args::parse_from(["suite", "--strata-bin", "strata", "--only-groups"]);
        assert!(only.runs_groups() && !only.runs_main() && !only.runs_w5());
        let none = Args::parse_from(["suite", "--strata-bin", "strata", "--no-groups"]);
        assert!(!none.runs_groups() && none.runs_main());
        assert!(!Args::parse_from(["suite", "--strata-bin", "strata", "--only-w5"]).runs_groups());
        assert!(Args::try_parse_from(["suite", "--strata-bin", "strata", "--only-groups", "--only-w5"]).is_err());
    }

    #[test]
    fn the_moves_run_only_when_asked() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["suite", "--strata-bin", "strata", "--quick"];
            argv.extend_from_slice(extra);
            Args::parse_from(argv)
        };
        assert!(!parse(&[]).runs_moves());
        let with = parse(&["--moves"]);
        assert!(with.runs_moves() && with.runs_main() && with.runs_groups() && with.runs_txn());
        let only = parse(&["--only-moves"]);
        assert!(only.runs_moves() && !only.runs_main() && !only.runs_groups() && !only.runs_txn());
        assert!(!parse(&["--only-moves", "--w5"]).runs_w5());
        for clash in [["--only-moves", "--only-txn"], ["--only-moves", "--only-groups"], ["--only-moves", "--only-w5"]]
        {
            let mut argv = vec!["suite", "--strata-bin", "strata"];
            argv.extend_from_slice(&clash);
            assert!(Args::try_parse_from(argv).is_err(), "{clash:?}");
        }
    }

    #[test]
    fn the_transactional_workload_runs_unless_skipped_or_another_only_is_asked() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["suite", "--strata-bin", "strata", "--quick"];
            argv.extend_from_slice(extra);
            Args::parse_from(argv)
        };
        let all = parse(&[]);
        assert!(all.runs_txn() && all.runs_main() && all.runs_groups());
        let only = parse(&["--only-txn"]);
        assert!(only.runs_txn() && !only.runs_main() && !only.runs_groups() && !only.runs_w5());
        assert!(!parse(&["--only-txn", "--w5"]).runs_w5());
        let none = parse(&["--no-txn"]);
        assert!(!none.runs_txn() && none.runs_main() && none.runs_groups());
        assert!(!parse(&["--only-groups"]).runs_txn());
        assert!(!parse(&["--only-w5"]).runs_txn());
        assert!(parse(&["--no-groups"]).runs_txn());
        for clash in [["--only-txn", "--no-txn"], ["--only-txn", "--only-groups"], ["--only-txn", "--only-w5"]] {
            let mut argv = vec!["suite", "--strata-bin", "strata"];
            argv.extend_from_slice(&clash);
            assert!(Args::try_parse_from(argv).is_err(), "{clash:?}");
        }
    }
}
