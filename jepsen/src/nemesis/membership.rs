//! The membership fault: partition moves and rebalances, and changes of the
//! node set itself. A node is wiped (killed, its data directory deleted,
//! started again empty with the same id and arguments: it rejoins as
//! "rebuilding"), a spare node joins (`--join`, then perhaps `add-voter`,
//! then a rebalance), or a member is decommissioned (`remove-node`, then
//! stopped once removed, then started once more on its old data directory,
//! which the cluster must refuse).
//!
//! Invariant: at any time at most as many nodes may miss data as a majority
//! of every group can spare (`wipe_candidates`): with three replicas, one
//! node, and a node that is down or paused counts as missing, as do nodes
//! that are rebuilding or damaged (the `corrupt` fault). A refused change
//! is an outcome to record, never a harness error.
//!
//! Removals and rebuilds outlast their fault window. The executor tends
//! them between and during windows (`tend`) and records each as an
//! operation of its own process (`remove-N`, `rebuild-N`): the invocation
//! when it starts, the completion when the cluster reports it done. The
//! checkers skip these functions; they document the run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use serde::Serialize;
use serde_json::{json, Value};
use strata_client::{ClientError, ClusterStatus, ErrorCode};

use super::{FaultError, Nemesis, TOPIC_REPLICATION};
use crate::history::{OpType, Process};

/// What one membership fault does; drawn from the seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MembershipAction {
    /// Move this many partitions of the test topic to random replica sets
    /// of the same size over the members.
    Move { partitions: u32 },
    /// Ask the cluster to even out replicas and preferred leaders.
    Rebalance,
    /// Kill a node, delete its data directory, start it again empty.
    Wipe,
    /// Start a spare (or removed) node with `--join`, make it a metadata
    /// voter when `voter`, then rebalance.
    Add { voter: bool },
    /// `remove-node` a random member; stop it once the cluster removed it.
    Remove,
}

/// Draws an action: the node-set changes most often, since moves alone
/// (the fault's first version) left the node set fixed.
pub fn draw_action(rng: &mut StdRng) -> MembershipAction {
    match rng.gen_range(0..10) {
        0..=2 => MembershipAction::Wipe,
        3..=4 => MembershipAction::Add { voter: rng.gen_bool(0.5) },
        5..=6 => MembershipAction::Remove,
        7..=8 => MembershipAction::Move { partitions: rng.gen_range(1..=3) },
        _ => MembershipAction::Rebalance,
    }
}

/// Bound on one admin call of the fault (status, remove-node, rebalance):
/// a healthy cluster answers within milliseconds; under faults the call is
/// repeated at the next tend instead of holding the schedule up.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on a started node showing up in `cluster status` (a wiped node as
/// rebuilding, a new one registered). It joins through the metadata
/// leader, which a fault may be re-electing; the server's own bound on a
/// join is 120 s, but a node that has not joined after this long is left to
/// it and the window goes on.
const JOIN_SEEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on `add-voter`: it waits for the node to catch up on the metadata
/// log, which takes a second or two unless faults stall it.
const ADD_VOTER_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a removed node started on its old data directory has to exit
/// (NODE_REMOVED): it is refused at its first contact with the metadata
/// leader, within seconds.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(20);
/// A wiped node whose "rebuilding" state the harness never saw (it was
/// rebuilt between two looks) counts as rebuilt once it shows as active
/// this long after the wipe.
const UNSEEN_REBUILD_GRACE: Duration = Duration::from_secs(60);
/// How often `sleep_tending` looks after removals and rebuilds in progress.
const TEND_EVERY: Duration = Duration::from_secs(1);

/// The cluster as far as wipes are concerned, at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    pub members: Vec<u64>,
    /// Members not running, or paused.
    pub down: BTreeSet<u64>,
    /// The metadata group's voters.
    pub voters: BTreeSet<u64>,
    /// Members back with an empty data directory, not yet caught up.
    pub rebuilding: BTreeSet<u64>,
    /// Members whose files the `corrupt` fault damaged.
    pub damaged: BTreeSet<u64>,
    /// A member being decommissioned.
    pub removing: Option<u64>,
    /// A network partition is in force.
    pub partitioned: bool,
}

/// The members that may be wiped now, or why none may. Every group must
/// keep a majority of replicas that hold their data and run: with `RF`
/// replicas, `(RF - 1) / 2` nodes may miss (one with 3), counting down,
/// paused, damaged and rebuilding nodes. So with one node missing already,
/// only that node may be wiped (a damaged or dead node is repaired so).
/// A metadata voter may be wiped only when the other voters still form a
/// majority (a rebuilding node does not vote, and with two voters the one
/// left could never be elected again to finish the rebuild). Never during a
/// partition (a wiped node of the initial cluster that reaches none of its
/// peers would form a cluster of its own, as documented) or a removal.
pub fn wipe_candidates(health: &Health) -> Result<Vec<u64>, String> {
    if let Some(node) = health.removing {
        return Err(format!("node {node} is being removed"));
    }
    if health.partitioned {
        return Err("a partition is in force: the wiped node might reach none of its peers".into());
    }
    if let Some(node) = health.rebuilding.iter().next() {
        return Err(format!("node {node} is still rebuilding"));
    }
    let replicas = health.members.len().min(TOPIC_REPLICATION);
    let may_miss = replicas.saturating_sub(1) / 2;
    if may_miss == 0 {
        return Err(format!("{} members: no node may lose its data", health.members.len()));
    }
    let missing: BTreeSet<u64> = health.down.union(&health.damaged).copied().collect();
    let pool: Vec<u64> = match missing.len() {
        n if n > may_miss => return Err(format!("nodes {missing:?} are down or damaged already")),
        n if n == may_miss => missing.iter().copied().collect(),
        _ => health.members.clone(),
    };
    let voters_whole_without = |node: u64| {
        let whole = health.voters.iter().filter(|v| **v != node && !missing.contains(v)).count();
        !health.voters.contains(&node) || whole > health.voters.len() / 2
    };
    let candidates: Vec<u64> =
        pool.into_iter().filter(|n| health.members.contains(n) && voters_whole_without(*n)).collect();
    if candidates.is_empty() {
        return Err(format!("no node may be wiped: the metadata voters {:?} need every one", health.voters));
    }
    Ok(candidates)
}

/// The nodes that miss data, for the `corrupt` fault's budget: damaged
/// ones and those rebuilding after a wipe.
pub fn impaired(damaged: &BTreeSet<u64>, rebuilding: &BTreeSet<u64>) -> BTreeSet<u64> {
    damaged.union(rebuilding).copied().collect()
}

/// How many of each change a run made; the report's membership note.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Tally {
    pub wipes: u32,
    pub wipes_skipped: u32,
    pub rebuilt: u32,
    pub adds: u32,
    pub adds_skipped: u32,
    pub voters_added: u32,
    pub removes_started: u32,
    pub removes_refused: u32,
    pub removes_skipped: u32,
    pub removed: u32,
    /// Removed nodes started on their old data directory that exited, and
    /// those that were still running at the bound.
    pub restarts_refused: u32,
    pub restarts_not_refused: u32,
    pub moves: u32,
    pub rebalances: u32,
}

struct Rebuild {
    since: Instant,
    seen: bool,
}

struct Removal {
    node: u64,
    since: Instant,
}

struct Probe {
    node: u64,
    since: Instant,
    /// The node log's length when the probe started: the refusal is looked
    /// for after it.
    log_from: u64,
}

/// The changes in progress.
#[derive(Default)]
pub struct Tracker {
    rebuilding: BTreeMap<u64, Rebuild>,
    removing: Option<Removal>,
    probe: Option<Probe>,
    pub tally: Tally,
}

impl Tracker {
    fn idle(&self) -> bool {
        self.rebuilding.is_empty() && self.removing.is_none() && self.probe.is_none()
    }

    pub fn rebuilding(&self) -> BTreeSet<u64> {
        self.rebuilding.keys().copied().collect()
    }
}

/// A refusal of the cluster (nothing changed), as opposed to an answer
/// lost to a fault.
fn refused(error: &ClientError) -> bool {
    matches!(
        error.code(),
        Some(ErrorCode::UnsafeMembershipChange | ErrorCode::UnknownNode | ErrorCode::ReassignmentInProgress)
    )
}

fn row(status: &ClusterStatus, node: u64) -> Option<&strata_client::NodeStatus> {
    status.nodes.iter().find(|n| n.id == node)
}

impl Nemesis {
    fn tracker(&self) -> std::sync::MutexGuard<'_, Tracker> {
        self.membership.lock().expect("membership lock")
    }

    fn record_change(&self, process: String, kind: OpType, f: &str, value: Value, error: Option<String>) {
        self.recorder.record(Process::Named(process), kind, f, value, None, error);
    }

    /// A remove-node the cluster refused (recorded as the call's failure).
    fn record_refused_removal(&self, process: String, node: u64, error: &ClientError) {
        self.record_change(process, OpType::Fail, "remove-node", json!({"node": node}), Some(error.to_string()));
    }

    async fn status(&self) -> Option<ClusterStatus> {
        tokio::time::timeout(CALL_TIMEOUT, self.client.cluster_status()).await.ok()?.ok()
    }

    /// The cluster's health for `wipe_candidates`; None when the cluster
    /// cannot say who votes (then no wipe).
    async fn health(&self) -> Option<Health> {
        let status = self.status().await.filter(|s| s.metadata_available)?;
        let tracker_rebuilding = self.tracker().rebuilding();
        let tracker_removing = self.tracker().removing.as_ref().map(|r| r.node);
        let cluster = self.cluster.lock().expect("cluster lock");
        let members = cluster.ids();
        let down = members
            .iter()
            .copied()
            .filter(|&id| !cluster.node(id).is_running() || cluster.node(id).is_paused())
            .collect();
        drop(cluster);
        let by_status = |what: &'static str| status.nodes.iter().filter(move |n| n.membership == what).map(|n| n.id);
        Some(Health {
            members,
            down,
            voters: status.nodes.iter().filter(|n| n.metadata_role == "voter").map(|n| n.id).collect(),
            rebuilding: tracker_rebuilding.into_iter().chain(by_status("rebuilding")).collect(),
            damaged: self.damaged.lock().expect("damaged lock").clone(),
            removing: tracker_removing.or_else(|| by_status("removing").next()),
            partitioned: self.partitioned.load(Ordering::SeqCst),
        })
    }

    /// Applies one membership action; returns the nodes it touched and
    /// what happened (a skipped or refused change included).
    pub(super) async fn change_membership(
        &self,
        action: MembershipAction,
        nodes: &[u64],
        rng: &mut StdRng,
    ) -> Result<(Vec<u64>, Value), FaultError> {
        match action {
            MembershipAction::Move { partitions } => {
                self.tracker().tally.moves += 1;
                Ok((Vec::new(), self.move_partitions(nodes, partitions, false, rng).await))
            }
            MembershipAction::Rebalance => {
                self.tracker().tally.rebalances += 1;
                Ok((Vec::new(), self.move_partitions(nodes, 0, true, rng).await))
            }
            MembershipAction::Wipe => self.wipe(rng).await,
            MembershipAction::Add { voter } => self.add(voter).await,
            MembershipAction::Remove => Ok(self.remove(nodes, rng).await),
        }
    }

    async fn wipe(&self, rng: &mut StdRng) -> Result<(Vec<u64>, Value), FaultError> {
        let candidates = match self.health().await {
            None => Err("the cluster status (metadata voters) is unavailable".to_string()),
            Some(health) => wipe_candidates(&health),
        };
        let node = match candidates {
            Ok(candidates) => *candidates.choose(rng).expect("candidates are not empty"),
            Err(reason) => {
                self.tracker().tally.wipes_skipped += 1;
                return Ok((Vec::new(), json!({"action": "wipe", "skipped": reason})));
            }
        };
        self.cluster.lock().expect("cluster lock").wipe(node)?;
        // Fresh data: whatever damage it had is gone with the directory.
        self.damaged.lock().expect("damaged lock").remove(&node);
        {
            let mut tracker = self.tracker();
            tracker.tally.wipes += 1;
            tracker.rebuilding.insert(node, Rebuild { since: Instant::now(), seen: false });
        }
        self.record_change(format!("rebuild-{node}"), OpType::Invoke, "rebuild", json!({"node": node}), None);
        // Wait for the node to rejoin before the window's next fault: its
        // first start looks for its peers, and must find them.
        let started = Instant::now();
        let seen = strata_testkit::poll_until(JOIN_SEEN_TIMEOUT, || async {
            let status = self.status().await?;
            (row(&status, node)?.membership == "rebuilding").then_some(())
        })
        .await;
        let rejoined_ms = seen.map(|()| started.elapsed().as_millis() as u64);
        if let Some(rebuild) = self.tracker().rebuilding.get_mut(&node) {
            rebuild.seen = seen.is_some();
        }
        Ok((vec![node], json!({"action": "wipe", "node": node, "rebuilding_seen_after_ms": rejoined_ms})))
    }

    async fn add(&self, voter: bool) -> Result<(Vec<u64>, Value), FaultError> {
        let Some(node) = self.cluster.lock().expect("cluster lock").joinable().first().copied() else {
            self.tracker().tally.adds_skipped += 1;
            return Ok((Vec::new(), json!({"action": "add", "skipped": "no spare node"})));
        };
        self.cluster.lock().expect("cluster lock").join(node)?;
        self.tracker().tally.adds += 1;
        let started = Instant::now();
        let registered = strata_testkit::poll_until(JOIN_SEEN_TIMEOUT, || async {
            let status = self.status().await?;
            (!row(&status, node)?.membership.is_empty()).then_some(())
        })
        .await;
        let joined_ms = registered.map(|()| started.elapsed().as_millis() as u64);
        let mut detail = json!({"action": "add", "node": node, "registered_after_ms": joined_ms});
        if voter {
            let answer = tokio::time::timeout(ADD_VOTER_TIMEOUT, self.client.add_voter(node)).await;
            detail["add_voter"] = match answer {
                Ok(Ok(voters)) => {
                    self.tracker().tally.voters_added += 1;
                    json!({"voters": voters})
                }
                Ok(Err(error)) => json!(error.to_string()),
                Err(_) => json!(format!("no answer within {} s", ADD_VOTER_TIMEOUT.as_secs())),
            };
        }
        detail["rebalance"] = match tokio::time::timeout(CALL_TIMEOUT, self.client.rebalance(false)).await {
            Ok(Ok(moves)) => json!(moves.len()),
            Ok(Err(error)) => json!(error.to_string()),
            Err(_) => json!("no answer"),
        };
        Ok((vec![node], detail))
    }

    async fn remove(&self, nodes: &[u64], rng: &mut StdRng) -> (Vec<u64>, Value) {
        if let Some(removal) = self.tracker().removing.as_ref() {
            let node = removal.node;
            self.tracker().tally.removes_skipped += 1;
            return (Vec::new(), json!({"action": "remove", "skipped": format!("node {node} is being removed")}));
        }
        let Some(&node) = nodes.choose(rng) else {
            return (Vec::new(), json!({"action": "remove", "skipped": "no member"}));
        };
        let process = format!("remove-{node}");
        self.record_change(process.clone(), OpType::Invoke, "remove-node", json!({"node": node}), None);
        let answer = tokio::time::timeout(CALL_TIMEOUT, self.client.remove_node(node)).await;
        let outcome = match answer {
            Ok(Ok((remaining, _))) => json!({"remaining_replicas": remaining}),
            Ok(Err(error)) if refused(&error) => {
                self.tracker().tally.removes_refused += 1;
                self.record_refused_removal(process, node, &error);
                return (vec![node], json!({"action": "remove", "node": node, "refused": error.to_string()}));
            }
            // Unknown: the removal may have been recorded. `tend` asks
            // again, which either reports it or starts it, as an operator
            // retrying `remove-node` would.
            Ok(Err(error)) => json!({"unknown": error.to_string()}),
            Err(_) => json!({"unknown": "no answer within 3 s"}),
        };
        let mut tracker = self.tracker();
        tracker.tally.removes_started += 1;
        tracker.removing = Some(Removal { node, since: Instant::now() });
        (vec![node], json!({"action": "remove", "node": node, "answer": outcome}))
    }

    /// Sleeps until `deadline`, tending the changes in progress meanwhile.
    pub(super) async fn sleep_tending(&self, deadline: Instant) {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            if !self.tracker().idle() {
                self.tend().await;
            }
            tokio::time::sleep(TEND_EVERY.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
    }

    /// One look at the changes in progress: a removal the cluster finished
    /// stops its node (and starts the refusal probe), a probe that exited or
    /// ran out of time ends, and wiped nodes seen active again are rebuilt.
    async fn tend(&self) {
        let removing = self.tracker().removing.as_ref().map(|r| (r.node, r.since));
        if let Some((node, since)) = removing {
            let process = format!("remove-{node}");
            match tokio::time::timeout(CALL_TIMEOUT, self.client.remove_node(node)).await {
                Ok(Ok((_, true))) => {
                    let log_from = {
                        let mut cluster = self.cluster.lock().expect("cluster lock");
                        cluster.mark_removed(node);
                        let log_from = std::fs::metadata(&cluster.node(node).log_path).map_or(0, |m| m.len());
                        if let Err(error) = cluster.start_removed(node) {
                            tracing::error!(node, %error, "cannot start the removed node");
                        }
                        log_from
                    };
                    self.damaged.lock().expect("damaged lock").remove(&node);
                    let seconds = since.elapsed().as_secs_f64();
                    self.record_change(
                        process.clone(),
                        OpType::Ok,
                        "remove-node",
                        json!({"node": node, "seconds": seconds}),
                        None,
                    );
                    self.record_change(process, OpType::Invoke, "restart-removed", json!({"node": node}), None);
                    let mut tracker = self.tracker();
                    tracker.tally.removed += 1;
                    tracker.removing = None;
                    if tracker.rebuilding.remove(&node).is_some() {
                        drop(tracker);
                        let value = json!({"node": node, "removed": true});
                        self.record_change(format!("rebuild-{node}"), OpType::Info, "rebuild", value, None);
                        tracker = self.tracker();
                    }
                    tracker.probe = Some(Probe { node, since: Instant::now(), log_from });
                }
                Ok(Err(error)) if refused(&error) => {
                    let mut tracker = self.tracker();
                    tracker.tally.removes_refused += 1;
                    tracker.removing = None;
                    drop(tracker);
                    self.record_refused_removal(process, node, &error);
                }
                _ => {}
            }
        }
        let probe = self.tracker().probe.as_ref().map(|p| (p.node, p.since, p.log_from));
        if let Some((node, since, log_from)) = probe {
            let exited = self.cluster.lock().expect("cluster lock").exited(node);
            let timed_out = exited.is_none() && since.elapsed() >= REFUSAL_TIMEOUT;
            if exited.is_some() || timed_out {
                if timed_out {
                    self.cluster.lock().expect("cluster lock").kill(node);
                }
                let log_path = self.cluster.lock().expect("cluster lock").node(node).log_path.clone();
                let named = log_after(&log_path, log_from).contains("NODE_REMOVED");
                let value = json!({"node": node, "exit": exited, "node_removed_logged": named});
                let mut tracker = self.tracker();
                tracker.probe = None;
                if let Some(status) = exited {
                    tracker.tally.restarts_refused += 1;
                    drop(tracker);
                    tracing::info!(node, %status, named, "removed node refused on its old data");
                    self.record_change(format!("remove-{node}"), OpType::Ok, "restart-removed", value, None);
                } else {
                    tracker.tally.restarts_not_refused += 1;
                    drop(tracker);
                    let error = format!("still running {} s after its start; killed", REFUSAL_TIMEOUT.as_secs());
                    self.record_change(format!("remove-{node}"), OpType::Info, "restart-removed", value, Some(error));
                }
            }
        }
        if !self.tracker().rebuilding.is_empty() {
            let Some(status) = self.status().await else { return };
            let mut done = Vec::new();
            {
                let mut tracker = self.tracker();
                for (&node, rebuild) in tracker.rebuilding.iter_mut() {
                    let membership = row(&status, node).map(|r| r.membership.as_str()).unwrap_or("");
                    rebuild.seen |= membership == "rebuilding";
                    let unseen_but_late = rebuild.since.elapsed() >= UNSEEN_REBUILD_GRACE;
                    if membership == "active" && (rebuild.seen || unseen_but_late) {
                        done.push((node, rebuild.since.elapsed().as_secs_f64(), rebuild.seen));
                    }
                }
                for (node, _, _) in &done {
                    tracker.rebuilding.remove(node);
                    tracker.tally.rebuilt += 1;
                }
            }
            for (node, seconds, seen) in done {
                let value = json!({"node": node, "seconds": seconds, "rebuilding_seen": seen});
                self.record_change(format!("rebuild-{node}"), OpType::Ok, "rebuild", value, None);
            }
        }
    }

    /// After the final heal: waits up to `bound` for the removal, the
    /// rebuilds and the partition moves in progress to end, so that the
    /// drain and the replica comparison meet a settled cluster (a move that
    /// ends during the comparison leaves a replica it had just listed).
    /// Returns notes for the verdict.
    pub async fn settle(&self, bound: Duration) -> Vec<String> {
        let started = Instant::now();
        let mut moving = None;
        while started.elapsed() < bound {
            self.tend().await;
            moving = self.status().await.map(|s| s.reassignments.len());
            if self.tracker().idle() && moving == Some(0) {
                break;
            }
            tokio::time::sleep(TEND_EVERY).await;
        }
        let tracker = self.tracker();
        let mut notes = Vec::new();
        if let Some(removal) = &tracker.removing {
            notes.push(format!(
                "the removal of node {} was not done {} s after the heal",
                removal.node,
                bound.as_secs()
            ));
        }
        for node in tracker.rebuilding.keys() {
            notes.push(format!("node {node} was still rebuilding {} s after the heal", bound.as_secs()));
        }
        match moving {
            Some(0) => {}
            Some(count) => {
                notes.push(format!("{count} partition move(s) still running {} s after the heal", bound.as_secs()))
            }
            None => notes.push("the cluster status was unavailable at the end of the membership settling".into()),
        }
        notes.push(format!("membership changes settled {:.1} s after the heal", started.elapsed().as_secs_f64()));
        notes
    }

    /// What the membership fault did over the run, for the verdict.
    pub fn membership_note(&self) -> String {
        format!("membership: {}", serde_json::to_string(&self.tracker().tally).expect("tally serialises"))
    }
}

/// The text of a log file from byte `from` on (empty when unreadable).
fn log_after(path: &std::path::Path, from: u64) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes[(from as usize).min(bytes.len())..]).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(members: &[u64]) -> Health {
        Health { members: members.to_vec(), voters: members.iter().copied().collect(), ..Health::default() }
    }

    #[test]
    fn a_healthy_cluster_may_lose_any_one_node() {
        assert_eq!(wipe_candidates(&health(&[1, 2, 3])), Ok(vec![1, 2, 3]));
        assert_eq!(wipe_candidates(&health(&[1, 2, 3, 4, 5])), Ok(vec![1, 2, 3, 4, 5]));
    }

    #[test]
    fn a_node_already_missing_is_the_only_one_that_may_be_wiped() {
        for missing in [
            Health { down: BTreeSet::from([2]), ..health(&[1, 2, 3]) },
            Health { damaged: BTreeSet::from([2]), ..health(&[1, 2, 3]) },
            Health { down: BTreeSet::from([2]), damaged: BTreeSet::from([2]), ..health(&[1, 2, 3, 4, 5]) },
        ] {
            assert_eq!(wipe_candidates(&missing), Ok(vec![2]), "{missing:?}");
        }
        let two_missing =
            Health { down: BTreeSet::from([2]), damaged: BTreeSet::from([4]), ..health(&[1, 2, 3, 4, 5]) };
        assert!(wipe_candidates(&two_missing).is_err());
        let two_down = Health { down: BTreeSet::from([1, 3]), ..health(&[1, 2, 3]) };
        assert!(wipe_candidates(&two_down).is_err());
    }

    #[test]
    fn no_wipe_while_a_node_rebuilds_is_removed_or_a_partition_holds() {
        let rebuilding = Health { rebuilding: BTreeSet::from([3]), ..health(&[1, 2, 3, 4]) };
        assert!(wipe_candidates(&rebuilding).unwrap_err().contains("rebuilding"));
        let removing = Health { removing: Some(4), ..health(&[1, 2, 3, 4]) };
        assert!(wipe_candidates(&removing).is_err());
        let partitioned = Health { partitioned: true, ..health(&[1, 2, 3]) };
        assert!(wipe_candidates(&partitioned).is_err());
    }

    #[test]
    fn clusters_without_a_spare_copy_lose_nothing() {
        assert!(wipe_candidates(&health(&[1])).is_err());
        assert!(wipe_candidates(&health(&[1, 2])).is_err());
    }

    #[test]
    fn a_metadata_voter_is_wiped_only_when_the_other_voters_are_a_majority() {
        // Node 1 was removed and node 4 joined as a learner: two voters.
        let two_voters = Health { voters: BTreeSet::from([2, 3]), ..health(&[2, 3, 4]) };
        assert_eq!(wipe_candidates(&two_voters), Ok(vec![4]));
        // Four voters survive one missing.
        assert_eq!(wipe_candidates(&health(&[1, 2, 3, 4])), Ok(vec![1, 2, 3, 4]));
        // Two voters of two, one down: the down one is a voter, and the
        // other alone is no majority of two.
        let stuck = Health { voters: BTreeSet::from([2, 3]), down: BTreeSet::from([3]), ..health(&[2, 3, 4]) };
        assert!(wipe_candidates(&stuck).is_err());
    }

    #[test]
    fn over_many_draws_at_most_one_node_misses_data() {
        // Simulates draws on a 3-node cluster: a wiped node rebuilds until
        // a later draw; a node killed now and then. The missing nodes (down,
        // damaged, rebuilding) never exceed one after a wipe.
        let mut rng = <StdRng as rand::SeedableRng>::seed_from_u64(3);
        let mut state = health(&[1, 2, 3]);
        for _ in 0..500 {
            state.down.clear();
            if rng.gen_bool(0.3) {
                state.down.insert(*state.members.choose(&mut rng).unwrap());
            }
            if rng.gen_bool(0.5) {
                state.rebuilding.clear();
            }
            if let Ok(candidates) = wipe_candidates(&state) {
                let wiped = *candidates.choose(&mut rng).unwrap();
                let missing: BTreeSet<u64> =
                    state.down.iter().chain(&state.rebuilding).chain([&wiped]).copied().collect();
                assert_eq!(missing.len(), 1, "{state:?} then wipe {wiped}");
                state.rebuilding.insert(wiped);
            }
        }
    }

    #[test]
    fn the_corrupt_budget_counts_rebuilding_nodes() {
        let damaged = BTreeSet::new();
        let impaired = impaired(&damaged, &BTreeSet::from([2]));
        let mut rng = <StdRng as rand::SeedableRng>::seed_from_u64(1);
        for _ in 0..50 {
            let hit = super::super::damage_targets(&[1, 2, 3], &impaired, &mut rng);
            assert!(hit.iter().all(|n| *n == 2), "{hit:?}");
        }
    }

    #[test]
    fn actions_cover_every_kind() {
        let mut rng = <StdRng as rand::SeedableRng>::seed_from_u64(5);
        let drawn: BTreeSet<String> = (0..200)
            .map(|_| format!("{:?}", draw_action(&mut rng)).split([' ', '{']).next().unwrap().to_string())
            .collect();
        assert_eq!(drawn.len(), 5, "{drawn:?}");
    }
}
