//! Faults: a schedule drawn from the seed, and the executor that applies and
//! heals it against the live cluster, recording every step in the history.
//!
//! The schedule is pure (seed in, windows out), so one seed always gives the
//! same fault windows, kinds and node picks. Only targets that depend on the
//! cluster's state (partition leaders, the metadata leader) are resolved at
//! run time.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Value};
use strata_client::Client;

use crate::cluster::{Cluster, ClusterError};
use crate::history::{OpType, Process, Recorder};
use crate::net::{ClientCut, NetError, Network};

mod membership;
pub use membership::{draw_action, impaired, wipe_candidates, Health, MembershipAction, Tally, Tracker};

/// What the user may ask for with `--faults`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    Kill,
    Pause,
    Partition,
    Netem,
    Clock,
    Corrupt,
    /// SIGKILL, then drop what the node wrote but never synced (a power
    /// loss), then restart at heal. Needs a `fault-hooks` build of strata.
    LostWrites,
    /// Drop the traffic between the harness's clients and some nodes
    /// (requests, answers or both); node-to-node traffic is untouched.
    ClientCut,
    /// For the whole run, every node drops the answer of every
    /// `ANSWER_DROP_EVERY`th committed produce and holds every
    /// `ANSWER_DELAY_EVERY`th one past the clients' timeouts (the produce
    /// answer hooks of a `fault-hooks` build); and in fault windows a node
    /// that leads partitions is SIGKILLed, which lands between commit and
    /// answer for every answer it holds at the time.
    Answers,
    /// Changes who holds what (see `MembershipAction`): moves partitions
    /// of the test topic to other replica sets (`ReassignPartition`: new
    /// replicas join as learners, then a joint-consensus change, and the
    /// replicas left out delete their copy) or asks for a rebalance; wipes
    /// a node's data directory and starts it again empty; starts a spare
    /// node with `--join`; decommissions a member (`remove-node`) and stops
    /// it once removed. Nothing is undone at heal: the cluster finishes
    /// moves, rebuilds and removals on its own.
    Membership,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::Netem => "netem",
            FaultKind::Clock => "clock",
            FaultKind::Corrupt => "corrupt",
            FaultKind::LostWrites => "lost-writes",
            FaultKind::ClientCut => "client-cut",
            FaultKind::Answers => "answers",
            FaultKind::Membership => "membership",
        }
    }
}

/// Which nodes a process fault hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Targets {
    One,
    Minority,
    Majority,
    All,
    /// The current partition leaders (resolved at run time; picked like
    /// `One` where no leader is known).
    Leaders,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shape {
    /// One node cut off from the others.
    OneIsolated,
    /// Two halves that cannot talk (the smaller one is a minority).
    Halves,
    /// Each node hears a majority, and no two hear the same one.
    MajoritiesRing,
    /// Every current partition leader cut off from every other node.
    LeadersIsolated,
    /// The metadata group's leader cut off.
    MetadataLeaderIsolated,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Corruption {
    /// Flip this many random bits in one data file.
    BitFlips(u32),
    /// Cut one data file to a random shorter length.
    Truncate,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "fault", rename_all = "lowercase")]
pub enum Fault {
    Kill {
        targets: Targets,
    },
    Pause {
        targets: Targets,
    },
    Partition {
        shape: Shape,
    },
    /// `tc netem` arguments, applied to every node's outgoing traffic.
    Netem {
        spec: Vec<String>,
    },
    /// Wall-clock skew of some nodes, in seconds.
    Clock {
        targets: Targets,
        offset_s: i64,
    },
    /// Kill a minority, damage one file of each, restart them.
    Corrupt {
        how: Corruption,
    },
    /// Kill nodes and cut their WAL back to what was synced.
    #[serde(rename = "lost-writes")]
    LostWrites {
        targets: Targets,
    },
    /// Cut the clients off from some nodes.
    #[serde(rename = "client-cut")]
    ClientCut {
        targets: Targets,
        direction: ClientCut,
    },
    /// A change of partition placement or of the node set.
    Membership {
        action: MembershipAction,
    },
    /// SIGKILL a node that leads partitions while it holds answers of
    /// committed produces (see `FaultKind::Answers`); restart it at heal.
    #[serde(rename = "kill-leaders-mid-answer")]
    KillLeadersMidAnswer,
}

impl Fault {
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::Kill { .. } => FaultKind::Kill,
            Fault::Pause { .. } => FaultKind::Pause,
            Fault::Partition { .. } => FaultKind::Partition,
            Fault::Netem { .. } => FaultKind::Netem,
            Fault::Clock { .. } => FaultKind::Clock,
            Fault::Corrupt { .. } => FaultKind::Corrupt,
            Fault::LostWrites { .. } => FaultKind::LostWrites,
            Fault::ClientCut { .. } => FaultKind::ClientCut,
            Fault::KillLeadersMidAnswer => FaultKind::Answers,
            Fault::Membership { .. } => FaultKind::Membership,
        }
    }
}

/// Faults that start together at `start_ms` and heal at `end_ms` (both
/// from the start of the workload).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Window {
    pub start_ms: u64,
    pub end_ms: u64,
    pub faults: Vec<Fault>,
    /// Seeds the node picks of this window.
    pub pick_seed: u64,
}

/// Bounds of the schedule, in milliseconds: long enough for an election
/// (about 1 s) to happen inside a fault window and for the cluster to
/// recover inside a quiet one.
const FIRST_FAULT_MS: u64 = 5_000;
const FAULT_MS_MIN: u64 = 4_000;
const FAULT_MS_MAX: u64 = 12_000;
const QUIET_MS_MIN: u64 = 3_000;
const QUIET_MS_MAX: u64 = 8_000;
/// One window in this many is left fault-free on purpose.
const FAULT_FREE_ONE_IN: u32 = 5;

/// Draws the schedule for a run of `duration_ms` from `seed`.
pub fn schedule(seed: u64, kinds: &[FaultKind], duration_ms: u64) -> Vec<Window> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut kinds: Vec<FaultKind> = kinds.iter().copied().collect::<BTreeSet<_>>().into_iter().collect();
    kinds.sort();
    let mut windows = Vec::new();
    let mut at = FIRST_FAULT_MS;
    while !kinds.is_empty() && at + FAULT_MS_MIN <= duration_ms {
        let length = rng.gen_range(FAULT_MS_MIN..=FAULT_MS_MAX).min(duration_ms - at);
        let quiet = rng.gen_range(QUIET_MS_MIN..=QUIET_MS_MAX);
        let pick_seed = rng.gen();
        if rng.gen_ratio(1, FAULT_FREE_ONE_IN) {
            at += length + quiet;
            continue;
        }
        let count = if kinds.len() > 1 && rng.gen_bool(0.4) { 2 } else { 1 };
        let chosen: Vec<FaultKind> = kinds.choose_multiple(&mut rng, count).copied().collect();
        let faults = chosen.into_iter().map(|kind| draw_fault(kind, &mut rng)).collect();
        windows.push(Window { start_ms: at, end_ms: at + length, faults, pick_seed });
        at += length + quiet;
    }
    windows
}

fn draw_fault(kind: FaultKind, rng: &mut StdRng) -> Fault {
    let targets =
        |rng: &mut StdRng| *[Targets::One, Targets::Minority, Targets::Majority, Targets::All].choose(rng).unwrap();
    match kind {
        FaultKind::Kill => Fault::Kill { targets: targets(rng) },
        FaultKind::LostWrites => Fault::LostWrites { targets: targets(rng) },
        FaultKind::Pause => Fault::Pause { targets: targets(rng) },
        FaultKind::Partition => Fault::Partition {
            shape: *[
                Shape::OneIsolated,
                Shape::Halves,
                Shape::MajoritiesRing,
                Shape::LeadersIsolated,
                Shape::MetadataLeaderIsolated,
            ]
            .choose(rng)
            .unwrap(),
        },
        FaultKind::Netem => {
            let spec: &[&str] = [
                &["delay", "100ms", "50ms"][..],
                &["loss", "10%"][..],
                &["duplicate", "10%"][..],
                &["delay", "20ms", "reorder", "25%", "50%"][..],
                &["delay", "50ms", "20ms", "loss", "3%", "duplicate", "2%", "reorder", "10%"][..],
            ]
            .choose(rng)
            .unwrap();
            Fault::Netem { spec: spec.iter().map(|s| s.to_string()).collect() }
        }
        FaultKind::Clock => {
            let magnitude = rng.gen_range(5..=300);
            let offset_s = if rng.gen_bool(0.5) { magnitude } else { -magnitude };
            Fault::Clock { targets: *[Targets::One, Targets::Minority].choose(rng).unwrap(), offset_s }
        }
        FaultKind::Corrupt => Fault::Corrupt {
            how: if rng.gen_bool(0.5) { Corruption::BitFlips(rng.gen_range(1..=16)) } else { Corruption::Truncate },
        },
        FaultKind::ClientCut => Fault::ClientCut {
            targets: *[Targets::One, Targets::Minority, Targets::Leaders].choose(rng).unwrap(),
            // Lost answers most often: they leave commits the client cannot see.
            direction: *[ClientCut::Answers, ClientCut::Answers, ClientCut::Requests, ClientCut::Both]
                .choose(rng)
                .unwrap(),
        },
        FaultKind::Answers => Fault::KillLeadersMidAnswer,
        FaultKind::Membership => Fault::Membership { action: draw_action(rng) },
    }
}

/// The produce-answer hooks the `answers` fault turns on in every node
/// (`[faults]` of a `fault-hooks` build), as TOML lines. Every 7th committed
/// produce of a node loses its answer, and every 11th (unless also a 7th)
/// holds it 7 s: longer than any client deadline of the workloads (3 s
/// request timeout plus the client's 2 s slack for the server's own
/// TIMEOUT answer), so the client gives up on a write that committed.
pub const ANSWER_DROP_EVERY: u64 = 7;
pub const ANSWER_DELAY_EVERY: u64 = 11;
pub const ANSWER_DELAY_MS: u64 = 7_000;

pub fn answer_hook_config() -> Vec<String> {
    vec![
        format!("drop_produce_answer_every = {ANSWER_DROP_EVERY}"),
        format!("delay_produce_answer_every = {ANSWER_DELAY_EVERY}"),
        format!("delay_produce_answer_ms = {ANSWER_DELAY_MS}"),
    ]
}

/// Picks the nodes a process fault hits.
pub fn pick(targets: Targets, nodes: &[u64], rng: &mut StdRng) -> Vec<u64> {
    let n = nodes.len();
    let minority = (n - 1) / 2;
    let count = match targets {
        Targets::Minority => rng.gen_range(1..=minority.max(1)),
        Targets::Majority => rng.gen_range(n / 2 + 1..=n),
        Targets::All => n,
        Targets::One | Targets::Leaders => 1,
    };
    let mut chosen: Vec<u64> = nodes.choose_multiple(rng, count.min(n)).copied().collect();
    chosen.sort();
    chosen
}

/// For each node, the nodes it must not hear from.
pub fn grudges(shape_nodes: &Grouping, nodes: &[u64]) -> Vec<(u64, Vec<u64>)> {
    match shape_nodes {
        Grouping::Components(components) => nodes
            .iter()
            .map(|&node| {
                let own = components.iter().find(|c| c.contains(&node));
                let others =
                    nodes.iter().copied().filter(|other| *other != node && own.is_none_or(|c| !c.contains(other)));
                (node, others.collect())
            })
            .collect(),
        Grouping::Views(views) => views
            .iter()
            .map(|(node, view)| (*node, nodes.iter().copied().filter(|other| !view.contains(other)).collect()))
            .collect(),
    }
}

/// A partition as components (nodes in one component talk freely; nodes in
/// no listed component are alone) or as directed views (who hears whom).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grouping {
    Components(Vec<Vec<u64>>),
    Views(Vec<(u64, Vec<u64>)>),
}

/// The grouping of a shape that needs no cluster state.
pub fn grouping(shape: Shape, nodes: &[u64], isolated: &[u64], rng: &mut StdRng) -> Grouping {
    let mut shuffled = nodes.to_vec();
    shuffled.shuffle(rng);
    match shape {
        Shape::OneIsolated | Shape::MetadataLeaderIsolated | Shape::LeadersIsolated => {
            let rest: Vec<u64> = nodes.iter().copied().filter(|n| !isolated.contains(n)).collect();
            Grouping::Components(vec![rest])
        }
        Shape::Halves => {
            let (small, large) = shuffled.split_at(nodes.len() / 2);
            Grouping::Components(vec![small.to_vec(), large.to_vec()])
        }
        Shape::MajoritiesRing => {
            let n = shuffled.len();
            let majority = n / 2 + 1;
            Grouping::Views(
                (0..n).map(|i| (shuffled[i], (0..majority).map(|d| shuffled[(i + d) % n]).collect())).collect(),
            )
        }
    }
}

/// Everything the executor acts on.
pub struct Nemesis {
    pub cluster: Arc<Mutex<Cluster>>,
    pub network: Arc<Network>,
    pub client: Client,
    pub topic: String,
    pub recorder: Recorder,
    /// Where corruption events note what they damaged.
    pub run_dir: PathBuf,
    /// Nodes whose files were damaged during this run (and not wiped since).
    pub damaged: Mutex<BTreeSet<u64>>,
    /// The membership fault's removals and rebuilds in progress.
    pub membership: Mutex<Tracker>,
    /// A partition fault is in force (no wipe then).
    pub partitioned: AtomicBool,
}

/// Replicas of the test topic: every node up to three (see `runner`).
pub const TOPIC_REPLICATION: usize = 3;

/// Nodes to damage such that, with the nodes damaged before, the damaged
/// nodes stay a minority of every partition's replicas: with 3 replicas
/// (5 nodes as much as 3), at most one node over the whole run. Two
/// damaged nodes of 5 are a minority of the cluster but can be two of a
/// partition's three replicas, and no replicated system keeps data that
/// two of its three copies lost.
pub fn damage_targets(nodes: &[u64], damaged: &BTreeSet<u64>, rng: &mut StdRng) -> Vec<u64> {
    let replicas = nodes.len().min(TOPIC_REPLICATION);
    let most = (replicas.max(1) - 1) / 2;
    if most == 0 {
        // One or two nodes have no minority that may lose data.
        return Vec::new();
    }
    let pool: Vec<u64> = if damaged.len() >= most { damaged.iter().copied().collect() } else { nodes.to_vec() };
    let mut chosen = Vec::new();
    let mut union = damaged.clone();
    for node in pick(Targets::Minority, &pool, rng) {
        if union.contains(&node) || union.len() < most {
            union.insert(node);
            chosen.push(node);
        }
    }
    chosen
}

/// Why a fault could not be applied; recorded in the history's nemesis
/// event, and the window goes on with the faults that were applied.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Network(#[from] NetError),
    #[error("cannot drop node {node}'s unsynced writes: {source}")]
    DropWrites { node: u64, source: std::io::Error },
    #[error("clock faults need the nodes started with libfaketime")]
    NoFaketime,
}

/// What must be undone at the end of a window.
enum Applied {
    Killed(Vec<u64>),
    Paused(Vec<u64>),
    Partitioned,
    Netem,
    Clock(Vec<u64>),
    Corrupted(Vec<u64>),
    ClientsCut,
    Membership,
}

impl Nemesis {
    fn event(&self, f: &str, value: Value) {
        self.recorder.record(Process::nemesis(), OpType::Info, f, value, None, None);
    }

    fn nodes(&self) -> Vec<u64> {
        self.cluster.lock().expect("cluster lock").ids()
    }

    /// Applies and heals each window at its time, waits for `stop`, then
    /// heals everything. A window still open at `stop` is cut short.
    pub async fn run(&self, windows: &[Window], started: Instant, stop: Instant) {
        for window in windows {
            let start = started + Duration::from_millis(window.start_ms);
            if start >= stop {
                break;
            }
            self.sleep_tending(start).await;
            let mut rng = StdRng::seed_from_u64(window.pick_seed);
            let mut applied = Vec::new();
            for fault in &window.faults {
                match self.apply(fault, &mut rng, applied.len() as u64 + 1).await {
                    Ok(done) => applied.push((fault.kind(), done)),
                    Err(error) => {
                        self.event(fault.kind().name(), json!({"phase": "error", "error": error.to_string()}))
                    }
                }
            }
            let end = (started + Duration::from_millis(window.end_ms)).min(stop);
            self.sleep_tending(end).await;
            while let Some((kind, done)) = applied.pop() {
                let nodes = self.heal(done);
                self.event(kind.name(), json!({"phase": "stop", "nodes": nodes, "active": applied.len()}));
            }
        }
        // The workload runs for the whole time limit, the last stretch fault-free.
        self.sleep_tending(stop).await;
        self.heal_all();
    }

    async fn apply(&self, fault: &Fault, rng: &mut StdRng, active: u64) -> Result<Applied, FaultError> {
        let nodes = self.nodes();
        let describe = serde_json::to_value(fault).expect("faults serialise");
        let (applied, hit, detail) = match fault {
            Fault::Kill { targets } => {
                let hit = pick(*targets, &nodes, rng);
                let mut cluster = self.cluster.lock().expect("cluster lock");
                for &id in &hit {
                    cluster.kill(id);
                }
                (Applied::Killed(hit.clone()), hit, Value::Null)
            }
            Fault::LostWrites { targets } => {
                let hit = pick(*targets, &nodes, rng);
                let mut cluster = self.cluster.lock().expect("cluster lock");
                let mut dropped = serde_json::Map::new();
                for &id in &hit {
                    cluster.kill(id);
                    let bytes = cluster
                        .drop_unsynced_writes(id)
                        .map_err(|source| FaultError::DropWrites { node: id, source })?;
                    dropped.insert(id.to_string(), json!(bytes));
                }
                (Applied::Killed(hit.clone()), hit, json!({ "unsynced_bytes_dropped": dropped }))
            }
            Fault::ClientCut { targets, direction } => {
                let hit = match targets {
                    Targets::Leaders => self.partition_leaders(&nodes, rng).await,
                    other => pick(*other, &nodes, rng),
                };
                for &id in &hit {
                    self.network.cut_clients(id, *direction)?;
                }
                (Applied::ClientsCut, hit, Value::Null)
            }
            Fault::KillLeadersMidAnswer => {
                // One leading node: its answers held at the time die with
                // it, and the other nodes keep a majority.
                let leaders = self.partition_leaders(&nodes, rng).await;
                let hit: Vec<u64> = leaders.choose(rng).copied().into_iter().collect();
                let mut cluster = self.cluster.lock().expect("cluster lock");
                for &id in &hit {
                    cluster.kill(id);
                }
                (Applied::Killed(hit.clone()), hit, Value::Null)
            }
            Fault::Pause { targets } => {
                let hit = pick(*targets, &nodes, rng);
                let mut cluster = self.cluster.lock().expect("cluster lock");
                for &id in &hit {
                    cluster.pause(id)?;
                }
                (Applied::Paused(hit.clone()), hit, Value::Null)
            }
            Fault::Partition { shape } => {
                self.partitioned.store(true, Ordering::SeqCst);
                let isolated = match shape {
                    Shape::OneIsolated => pick(Targets::One, &nodes, rng),
                    Shape::LeadersIsolated => self.partition_leaders(&nodes, rng).await,
                    Shape::MetadataLeaderIsolated => self.metadata_leader(&nodes, rng).await,
                    Shape::Halves | Shape::MajoritiesRing => Vec::new(),
                };
                let grouping = grouping(*shape, &nodes, &isolated, rng);
                for (node, from) in grudges(&grouping, &nodes) {
                    self.network.drop_from(node, &from)?;
                }
                (Applied::Partitioned, isolated, json!(format!("{grouping:?}")))
            }
            Fault::Netem { spec } => {
                let mut applied = Vec::new();
                for &node in &nodes {
                    applied.push(self.network.netem(node, spec)?);
                }
                applied.dedup();
                (Applied::Netem, nodes.clone(), json!(applied))
            }
            Fault::Clock { targets, offset_s } => {
                let cluster = self.cluster.lock().expect("cluster lock");
                if !cluster.faketime_enabled() {
                    return Err(FaultError::NoFaketime);
                }
                let hit = pick(*targets, &nodes, rng);
                for &id in &hit {
                    cluster.set_clock_offset(id, *offset_s)?;
                }
                (Applied::Clock(hit.clone()), hit, Value::Null)
            }
            Fault::Membership { action } => {
                let (hit, detail) = self.change_membership(*action, &nodes, rng).await?;
                (Applied::Membership, hit, detail)
            }
            Fault::Corrupt { how } => {
                // Damage stays with a node for the rest of the run, so the
                // damaged nodes together must stay a minority: beyond that no
                // replicated system can promise anything.
                // Nodes rebuilding after a wipe miss data too.
                let rebuilding = self.membership.lock().expect("membership lock").rebuilding();
                let mut damaged = self.damaged.lock().expect("damaged lock");
                let hit = damage_targets(&nodes, &impaired(&damaged, &rebuilding), rng);
                damaged.extend(hit.iter().copied());
                drop(damaged);
                let mut damaged_files = Vec::new();
                let mut cluster = self.cluster.lock().expect("cluster lock");
                for &id in &hit {
                    cluster.kill(id);
                    let data_dir = cluster.node(id).data_dir.clone();
                    damaged_files
                        .push(corrupt(&data_dir, *how, rng).unwrap_or_else(|e| format!("nothing damaged: {e}")));
                    cluster.start(id)?;
                }
                (Applied::Corrupted(hit.clone()), hit, json!(damaged_files))
            }
        };
        self.event(
            fault.kind().name(),
            json!({"phase": "start", "fault": describe, "nodes": hit, "detail": detail, "active": active}),
        );
        Ok(applied)
    }

    /// Undoes one applied fault; returns the nodes it touched.
    fn heal(&self, applied: Applied) -> Vec<u64> {
        let mut cluster = self.cluster.lock().expect("cluster lock");
        match applied {
            Applied::Killed(nodes) => {
                for &id in &nodes {
                    if let Err(error) = cluster.start(id) {
                        tracing::error!(node = id, %error, "cannot restart node");
                    }
                }
                nodes
            }
            Applied::Paused(nodes) => {
                for &id in &nodes {
                    let _ = cluster.resume(id);
                }
                nodes
            }
            Applied::Partitioned => {
                self.partitioned.store(false, Ordering::SeqCst);
                if let Err(error) = self.network.heal_partitions() {
                    tracing::error!(%error, "cannot heal the partition");
                }
                Vec::new()
            }
            Applied::Netem => {
                self.network.heal_netem();
                Vec::new()
            }
            Applied::Clock(nodes) => {
                for &id in &nodes {
                    let _ = cluster.set_clock_offset(id, 0);
                }
                nodes
            }
            Applied::Corrupted(nodes) => nodes,
            Applied::ClientsCut => {
                self.network.heal_client_cuts();
                Vec::new()
            }
            // The cluster finishes moves, rebuilds and removals on its
            // own (`sleep_tending` follows them); nothing to undo.
            Applied::Membership => Vec::new(),
        }
    }

    /// Heals everything, whatever the schedule left: resumes paused nodes,
    /// restarts dead ones, removes partitions, netem and clock skew.
    pub fn heal_all(&self) {
        let _ = self.network.heal_partitions();
        self.partitioned.store(false, Ordering::SeqCst);
        self.network.heal_client_cuts();
        self.network.heal_netem();
        let mut restarted = Vec::new();
        {
            let mut cluster = self.cluster.lock().expect("cluster lock");
            for (id, status) in cluster.reap_exited() {
                tracing::warn!(node = id, %status, "node had exited by itself");
            }
            for id in cluster.ids() {
                if cluster.node(id).is_paused() {
                    let _ = cluster.resume(id);
                }
                let _ = cluster.set_clock_offset(id, 0);
                if !cluster.node(id).is_running() {
                    restarted.push(id);
                    let _ = cluster.start(id);
                }
            }
        }
        self.event("heal-all", json!({"phase": "stop", "nodes": restarted, "active": 0}));
    }

    async fn partition_leaders(&self, nodes: &[u64], rng: &mut StdRng) -> Vec<u64> {
        let answer = tokio::time::timeout(Duration::from_secs(3), self.client.describe_topic(&self.topic)).await;
        let mut leaders: Vec<u64> = match answer {
            Ok(Ok(description)) => description.partitions.iter().filter_map(|p| p.leader).collect(),
            _ => Vec::new(),
        };
        leaders.sort();
        leaders.dedup();
        if leaders.is_empty() {
            // No leader known (an election under way): isolate anyone.
            return pick(Targets::One, nodes, rng);
        }
        leaders
    }

    /// Records moves of random partitions to random replica sets of the same
    /// size over `nodes` (or a rebalance); says what the cluster answered to
    /// each. A refused or failed move is part of the event, not an error:
    /// the cluster may be partitioned or electing at the time.
    async fn move_partitions(&self, nodes: &[u64], moves: u32, rebalance: bool, rng: &mut StdRng) -> Value {
        const CALL: Duration = Duration::from_secs(3);
        if rebalance {
            return match tokio::time::timeout(CALL, self.client.rebalance(false)).await {
                Ok(Ok(planned)) => json!({"rebalance": planned.len()}),
                Ok(Err(error)) => json!({"rebalance": error.to_string()}),
                Err(_) => json!({"rebalance": "no answer within 3 s"}),
            };
        }
        let partitions = match tokio::time::timeout(CALL, self.client.describe_topic(&self.topic)).await {
            Ok(Ok(description)) => description.partitions,
            _ => return json!({"moves": "the topic could not be described"}),
        };
        let mut made = Vec::new();
        for partition in partitions.choose_multiple(rng, moves as usize) {
            let size = partition.replicas.len().clamp(1, nodes.len());
            let to: Vec<u64> = nodes.choose_multiple(rng, size).copied().collect();
            let answer =
                tokio::time::timeout(CALL, self.client.reassign_partition(&self.topic, partition.partition, &to));
            let outcome = match answer.await {
                Ok(Ok(done)) => json!(if done { "done" } else { "moving" }),
                Ok(Err(error)) => json!(error.to_string()),
                Err(_) => json!("no answer within 3 s"),
            };
            made.push(
                json!({"partition": partition.partition, "from": partition.replicas, "to": to, "answer": outcome}),
            );
        }
        json!({"moves": made})
    }

    async fn metadata_leader(&self, nodes: &[u64], rng: &mut StdRng) -> Vec<u64> {
        match tokio::time::timeout(Duration::from_secs(3), self.client.cluster_status()).await {
            Ok(Ok(status)) => match status.metadata_leader {
                Some(leader) if nodes.contains(&leader) => vec![leader],
                _ => pick(Targets::One, nodes, rng),
            },
            _ => pick(Targets::One, nodes, rng),
        }
    }
}

/// Damages one file under `data_dir`, preferring table and log files; says what it did.
pub fn corrupt(data_dir: &Path, how: Corruption, rng: &mut StdRng) -> std::io::Result<String> {
    let mut files = Vec::new();
    collect_files(data_dir, &mut files)?;
    files.sort();
    let preferred: Vec<&(PathBuf, u64)> = files
        .iter()
        .filter(|(path, len)| *len > 0 && path.extension().is_some_and(|e| e == "sst" || e == "log"))
        .collect();
    let pool: Vec<&(PathBuf, u64)> =
        if preferred.is_empty() { files.iter().filter(|(_, len)| *len > 0).collect() } else { preferred };
    let Some((path, len)) = pool.choose(rng).map(|f| (f.0.clone(), f.1)) else {
        return Err(std::io::Error::other("no non-empty file"));
    };
    let path = path.as_path();
    match how {
        Corruption::BitFlips(count) => {
            let mut bytes = std::fs::read(path)?;
            for _ in 0..count {
                let at = rng.gen_range(0..bytes.len());
                bytes[at] ^= 1 << rng.gen_range(0..8);
            }
            std::fs::write(path, &bytes)?;
            Ok(format!("flipped {count} bits in {}", path.display()))
        }
        Corruption::Truncate => {
            let keep = rng.gen_range(0..len);
            std::fs::OpenOptions::new().write(true).open(path)?.set_len(keep)?;
            Ok(format!("truncated {} from {len} to {keep} bytes", path.display()))
        }
    }
}

fn collect_files(dir: &Path, out: &mut Vec<(PathBuf, u64)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            collect_files(&entry.path(), out)?;
        } else if meta.is_file() && !entry.file_name().to_string_lossy().starts_with("LOCK") {
            out.push((entry.path(), meta.len()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[FaultKind] = &[
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::Netem,
        FaultKind::Clock,
        FaultKind::Corrupt,
        FaultKind::LostWrites,
        FaultKind::ClientCut,
        FaultKind::Answers,
    ];

    #[test]
    fn one_seed_gives_one_schedule() {
        assert_eq!(schedule(7, ALL, 120_000), schedule(7, ALL, 120_000));
        assert_ne!(schedule(7, ALL, 120_000), schedule(8, ALL, 120_000));
    }

    #[test]
    fn windows_stay_inside_the_run_and_leave_quiet_gaps() {
        for seed in 0..50 {
            let windows = schedule(seed, ALL, 90_000);
            assert!(!windows.is_empty());
            for pair in windows.windows(2) {
                assert!(pair[1].start_ms >= pair[0].end_ms + QUIET_MS_MIN, "seed {seed}: {pair:?}");
            }
            for window in &windows {
                assert!(window.end_ms <= 90_000 && window.start_ms < window.end_ms);
                assert!((1..=2).contains(&window.faults.len()));
                let kinds: BTreeSet<FaultKind> = window.faults.iter().map(Fault::kind).collect();
                assert_eq!(kinds.len(), window.faults.len(), "no kind twice in a window");
            }
        }
    }

    #[test]
    fn only_requested_kinds_are_scheduled() {
        let windows = schedule(3, &[FaultKind::Pause], 60_000);
        assert!(windows.iter().flat_map(|w| &w.faults).all(|f| f.kind() == FaultKind::Pause));
        assert!(schedule(3, &[], 60_000).is_empty());
    }

    #[test]
    fn picks_respect_their_size() {
        let nodes = [1, 2, 3, 4, 5];
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..100 {
            assert_eq!(pick(Targets::One, &nodes, &mut rng).len(), 1);
            assert!((1..=2).contains(&pick(Targets::Minority, &nodes, &mut rng).len()));
            assert!((3..=5).contains(&pick(Targets::Majority, &nodes, &mut rng).len()));
            assert_eq!(pick(Targets::All, &nodes, &mut rng), nodes.to_vec());
        }
        assert_eq!(pick(Targets::Minority, &[1, 2, 3], &mut rng).len(), 1);
    }

    #[test]
    fn majorities_ring_gives_every_node_a_distinct_majority() {
        for n in [3u64, 5] {
            let nodes: Vec<u64> = (1..=n).collect();
            let mut rng = StdRng::seed_from_u64(n);
            let grouping = grouping(Shape::MajoritiesRing, &nodes, &[], &mut rng);
            let Grouping::Views(views) = &grouping else { panic!("views expected") };
            let distinct: BTreeSet<Vec<u64>> = views
                .iter()
                .map(|(_, v)| {
                    let mut v = v.clone();
                    v.sort();
                    v
                })
                .collect();
            assert_eq!(distinct.len(), n as usize);
            for (node, view) in views {
                assert!(view.contains(node));
                assert_eq!(view.len() as u64, n / 2 + 1);
            }
            for (node, grudge) in grudges(&grouping, &nodes) {
                assert_eq!(grudge.len() as u64, n - (n / 2 + 1), "node {node}");
            }
        }
    }

    #[test]
    fn isolating_a_node_cuts_it_both_ways_and_halves_split_cleanly() {
        let nodes = [1, 2, 3, 4, 5];
        let mut rng = StdRng::seed_from_u64(9);
        let isolated = grudges(&grouping(Shape::OneIsolated, &nodes, &[3], &mut rng), &nodes);
        for (node, from) in isolated {
            if node == 3 {
                assert_eq!(from, vec![1, 2, 4, 5]);
            } else {
                assert_eq!(from, vec![3]);
            }
        }
        let halves = grudges(&grouping(Shape::Halves, &nodes, &[], &mut rng), &nodes);
        let sizes: BTreeSet<usize> = halves.iter().map(|(_, from)| from.len()).collect();
        assert_eq!(sizes, BTreeSet::from([2, 3]));
        let leaders = grudges(&grouping(Shape::LeadersIsolated, &nodes, &[1, 2], &mut rng), &nodes);
        assert_eq!(leaders[0], (1, vec![2, 3, 4, 5]), "isolated leaders are cut from each other too");
    }

    #[test]
    fn damaged_nodes_stay_a_minority_of_every_replica_set_over_a_run() {
        for (n, most) in [(1u64, 0), (3, 1), (5, 1)] {
            let nodes: Vec<u64> = (1..=n).collect();
            let mut rng = StdRng::seed_from_u64(n);
            let mut damaged = BTreeSet::new();
            for _ in 0..50 {
                damaged.extend(damage_targets(&nodes, &damaged, &mut rng));
                assert!(damaged.len() <= most, "{n} nodes: {damaged:?}");
            }
            assert_eq!(damaged.len(), most, "{n} nodes: the budget is used");
        }
    }

    #[test]
    fn corruption_changes_a_file() {
        let dir = std::env::temp_dir().join(format!("strata-jepsen-corrupt-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/000001.sst"), vec![0u8; 4096]).unwrap();
        std::fs::write(dir.join("CURRENT"), b"MANIFEST-1\n").unwrap();
        let mut rng = StdRng::seed_from_u64(5);
        let what = corrupt(&dir, Corruption::BitFlips(3), &mut rng).unwrap();
        assert!(what.contains("000001.sst"), "{what}");
        assert!(std::fs::read(dir.join("sub/000001.sst")).unwrap().iter().any(|&b| b != 0));
        let what = corrupt(&dir, Corruption::Truncate, &mut rng).unwrap();
        assert!(std::fs::metadata(dir.join("sub/000001.sst")).unwrap().len() < 4096, "{what}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
