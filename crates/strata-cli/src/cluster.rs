//! `strata cluster`: cluster-wide commands.

use std::process::ExitCode;

use clap::Subcommand;
use serde::Serialize;
use strata_client::{Client, ClusterStatus, ThrottleRate};
use strata_core::limits::CLOCK_SKEW_TOLERANCE_MS;

use crate::topic::{explain, print_table, show_node};

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Show nodes (alive, partitions led and under-replicated, how far each
    /// node's wall clock is from cluster time), the metadata leader and the
    /// partitions moving to other replicas; exits 1 when the metadata group
    /// is not available. Under-replicated partitions and a clock off by more
    /// than 1 s are reported as warnings.
    Status,
    /// Even out partition replicas, then preferred leaders, over the nodes:
    /// prints the moves and records them; they run two at a time as
    /// `strata partition reassign` moves do (`cluster status` lists them).
    Rebalance {
        /// Print the moves without making them.
        #[arg(long)]
        dry_run: bool,
        /// Set the cluster's move throttle before moving: the most bytes
        /// per second each node sends to replicas joining a partition, e.g.
        /// 20MiB; `off` (or 0) clears it. It stays for later moves until
        /// changed (`cluster status` shows it).
        #[arg(long, value_name = "RATE", conflicts_with = "dry_run")]
        throttle: Option<ThrottleRate>,
    },
    /// Make a node that joined (`strata server --join`) a voter of the
    /// metadata group, once it has caught up. A cluster of 3 or 5 voters
    /// survives the loss of 1 or 2 of them.
    AddVoter {
        /// The node's id.
        node: u64,
    },
    /// Decommission a node: every partition replica on it moves to the
    /// other nodes (two at a time), leadership leaves it, then it leaves
    /// the metadata group. Refused when a partition would have nowhere to
    /// go or the metadata voters left would lack a live majority. Stop the
    /// node once it is removed.
    RemoveNode {
        /// The node's id.
        node: u64,
        /// Wait until the node holds nothing and has left the cluster.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this long (e.g. 10m).
        #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
}

/// How often `remove-node --wait` asks how far the removal is: moves take
/// seconds each, so a second is fine-grained enough and costs nothing.
const REMOVAL_POLL: std::time::Duration = std::time::Duration::from_secs(1);

async fn add_voter(client: &Client, node: u64, json: bool) -> anyhow::Result<ExitCode> {
    let voters = client.add_voter(node).await.map_err(explain)?;
    if json {
        println!("{}", serde_json::json!({ "node": node, "voters": voters }));
    } else {
        println!("node {node} is a metadata voter; the voters are {voters:?}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn remove_node(
    client: &Client,
    node: u64,
    wait: bool,
    timeout: std::time::Duration,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let (mut remaining, mut removed) = client.remove_node(node).await.map_err(explain)?;
    while wait && !removed {
        if started.elapsed() > timeout {
            anyhow::bail!(
                "node {node} still holds {remaining} replica(s) after {}; the removal goes on (strata cluster status)",
                humantime::format_duration(timeout)
            );
        }
        tokio::time::sleep(REMOVAL_POLL).await;
        (remaining, removed) = client.remove_node(node).await.map_err(explain)?;
    }
    if json {
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{}",
            serde_json::json!({ "node": node, "remaining_replicas": remaining, "removed": removed, "seconds": seconds })
        );
    } else if removed {
        println!("node {node} is removed: it holds nothing and left the cluster; stop it and delete its data dir");
    } else {
        println!("removing node {node}: {remaining} replica(s) still on it (strata cluster status shows the moves)");
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct JsonMove<'a> {
    topic: &'a str,
    partition: u32,
    from: &'a [u64],
    to: &'a [u64],
}

async fn rebalance(
    client: &Client,
    dry_run: bool,
    throttle: Option<ThrottleRate>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let moves = client.rebalance_throttled(dry_run, throttle).await.map_err(explain)?;
    if json {
        let rows: Vec<JsonMove> = moves
            .iter()
            .map(|(topic, partition, from, to)| JsonMove { topic, partition: *partition, from, to })
            .collect();
        println!("{}", serde_json::to_string(&rows)?);
    } else if moves.is_empty() {
        println!("replicas and preferred leaders are even: nothing to move");
    } else {
        let rows: Vec<Vec<String>> = moves
            .iter()
            .map(|(topic, partition, from, to)| {
                vec![format!("{topic}:{partition}"), format!("{from:?}"), format!("{to:?}")]
            })
            .collect();
        print_table(&["PARTITION", "FROM", "TO"], &rows);
        let verb = if dry_run { "would move (dry run)" } else { "moving; see strata cluster status" };
        println!("{} partition(s) {verb}", moves.len());
    }
    if let (Some(throttle), false) = (throttle, json) {
        println!("move throttle: {}", show_throttle(throttle.bytes_per_sec()));
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct JsonStatus<'a> {
    cluster_id: &'a str,
    metadata_available: bool,
    metadata_leader: Option<u64>,
    metadata_detail: &'a str,
    nodes: Vec<JsonNode<'a>>,
    reassignments: Vec<JsonReassignment<'a>>,
    /// Bytes per second each node sends to joining replicas (null: off).
    move_throttle_bytes_per_sec: Option<u64>,
}

#[derive(Serialize)]
struct JsonReassignment<'a> {
    topic: &'a str,
    partition: u32,
    from: &'a [u64],
    to: &'a [u64],
    age_ms: u64,
}

#[derive(Serialize)]
struct JsonNode<'a> {
    id: u64,
    address: &'a str,
    alive: bool,
    partitions_led: u32,
    partitions_hosted: u32,
    error: Option<&'a str>,
    /// The node's wall clock minus cluster time, ms (null: unknown).
    clock_offset_ms: Option<i64>,
    /// Drained of leadership (`strata node drain`).
    drained: bool,
    /// Partitions the node leads with a voter out of sync.
    partitions_under_replicated: u32,
    /// active, rebuilding, removing, or "" (not registered yet).
    membership: &'a str,
    /// voter, learner or "": its place in the metadata group.
    metadata_role: &'a str,
    /// Partition replicas placed on the node.
    partitions_assigned: u32,
}

impl<'a> From<&'a ClusterStatus> for JsonStatus<'a> {
    fn from(status: &'a ClusterStatus) -> Self {
        JsonStatus {
            metadata_available: status.metadata_available,
            metadata_leader: status.metadata_leader,
            metadata_detail: &status.metadata_detail,
            nodes: status
                .nodes
                .iter()
                .map(|n| JsonNode {
                    id: n.id,
                    address: &n.address,
                    alive: n.alive,
                    partitions_led: n.partitions_led,
                    partitions_hosted: n.partitions_hosted,
                    error: n.error.as_deref(),
                    clock_offset_ms: n.clock_offset_ms,
                    drained: n.drained,
                    partitions_under_replicated: n.partitions_under_replicated,
                    membership: &n.membership,
                    metadata_role: &n.metadata_role,
                    partitions_assigned: n.partitions_assigned,
                })
                .collect(),
            cluster_id: &status.cluster_id,
            reassignments: status
                .reassignments
                .iter()
                .map(|r| JsonReassignment {
                    topic: &r.topic,
                    partition: r.partition,
                    from: &r.from,
                    to: &r.to,
                    age_ms: r.age_ms,
                })
                .collect(),
            move_throttle_bytes_per_sec: status.move_throttle_bytes_per_sec,
        }
    }
}

/// What is wrong with the cluster, one line per problem; empty when healthy.
fn problems(status: &ClusterStatus) -> Vec<String> {
    let mut problems = Vec::new();
    if !status.metadata_available {
        let detail = if status.metadata_detail.is_empty() { "no detail given" } else { &status.metadata_detail };
        problems.push(format!("CLUSTER_UNAVAILABLE: the metadata group is not available: {detail}"));
    }
    for node in status.nodes.iter().filter(|n| !n.alive) {
        let why = node.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
        problems.push(format!("node {} ({}) is not answering{why}", node.id, node.address));
    }
    for node in status.nodes.iter().filter(|n| n.alive && n.partitions_under_replicated > 0) {
        problems.push(format!(
            "node {} ({}) leads {} under-replicated partition(s): a replica is behind or not answering",
            node.id, node.address, node.partitions_under_replicated
        ));
    }
    for node in status.nodes.iter().filter(|n| n.membership == "rebuilding") {
        problems.push(format!(
            "node {} ({}) lost its data and is being caught up; it does not vote until it is",
            node.id, node.address
        ));
    }
    for node in status.nodes.iter().filter(|n| n.alive) {
        if let Some(offset) = node.clock_offset_ms.filter(|o| o.unsigned_abs() > CLOCK_SKEW_TOLERANCE_MS) {
            problems.push(format!(
                "node {} ({}) has a wall clock {} cluster time; Strata stamps with cluster time, but fix the \
                 node's time sync (NTP)",
                node.id,
                node.address,
                show_clock_offset(Some(offset)),
            ));
        }
    }
    problems
}

/// `20 MiB/s per sending node` / `off`.
fn show_throttle(bytes_per_sec: Option<u64>) -> String {
    match bytes_per_sec {
        Some(rate) => format!("{} per sending node", strata_core::throttle::show_rate(rate)),
        None => "off".into(),
    }
}

/// `+1.234 s ahead of` / `0.002 s behind` / `unknown`.
fn show_clock_offset(offset_ms: Option<i64>) -> String {
    match offset_ms {
        None => "unknown".into(),
        Some(ms) => {
            let side = if ms >= 0 { "ahead of" } else { "behind" };
            format!("{}.{:03} s {side}", ms.unsigned_abs() / 1000, ms.unsigned_abs() % 1000)
        }
    }
}

pub async fn run(command: ClusterCommand, bootstrap: &[String], json: bool) -> anyhow::Result<ExitCode> {
    let client = Client::connect(bootstrap).map_err(explain)?;
    match command {
        ClusterCommand::Rebalance { dry_run, throttle } => return rebalance(&client, dry_run, throttle, json).await,
        ClusterCommand::AddVoter { node } => return add_voter(&client, node, json).await,
        ClusterCommand::RemoveNode { node, wait, timeout } => {
            return remove_node(&client, node, wait, timeout, json).await
        }
        ClusterCommand::Status => {}
    }
    let status = client.cluster_status().await.map_err(explain)?;
    if json {
        println!("{}", serde_json::to_string(&JsonStatus::from(&status))?);
    } else {
        let availability = if status.metadata_available { "available" } else { "unavailable" };
        println!("metadata leader: {} ({availability})", show_node(status.metadata_leader));
        if !status.cluster_id.is_empty() {
            println!("cluster id: {}", status.cluster_id);
        }
        let rows: Vec<Vec<String>> = status
            .nodes
            .iter()
            .map(|n| {
                vec![
                    n.id.to_string(),
                    n.address.clone(),
                    if n.alive { "yes" } else { "no" }.to_string(),
                    n.partitions_led.to_string(),
                    n.partitions_hosted.to_string(),
                    n.partitions_under_replicated.to_string(),
                    show_clock_offset(n.clock_offset_ms).replace(" of", ""),
                    if n.drained { "drained" } else { "" }.to_string(),
                    n.membership.clone(),
                    n.metadata_role.clone(),
                    n.partitions_assigned.to_string(),
                ]
            })
            .collect();
        let header = [
            "NODE",
            "ADDRESS",
            "ALIVE",
            "PARTITIONS LED",
            "PARTITIONS HOSTED",
            "UNDER-REPLICATED",
            "CLOCK",
            "LEADERSHIP",
            "MEMBERSHIP",
            "METADATA",
            "ASSIGNED",
        ];
        print_table(&header, &rows);
        println!("move throttle: {}", show_throttle(status.move_throttle_bytes_per_sec));
        if !status.reassignments.is_empty() {
            println!();
            let rows: Vec<Vec<String>> = status
                .reassignments
                .iter()
                .map(|r| {
                    vec![
                        format!("{}:{}", r.topic, r.partition),
                        format!("{:?}", r.from),
                        format!("{:?}", r.to),
                        format!("{:.1} s", r.age_ms as f64 / 1000.0),
                    ]
                })
                .collect();
            print_table(&["MOVING", "FROM", "TO", "FOR"], &rows);
        }
    }
    // Dead nodes are only a warning while the metadata group still works.
    let level = if status.metadata_available { "warning" } else { "error" };
    for problem in problems(&status) {
        eprintln!("{level}: {problem}");
    }
    if status.metadata_available {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("  hint: {}", strata_client::ErrorCode::ClusterUnavailable.help());
        Ok(ExitCode::FAILURE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_client::NodeStatus;

    #[test]
    fn problems_name_the_detail_and_dead_nodes() {
        let node = |id, alive| NodeStatus {
            id,
            address: format!("127.0.0.1:{}", 7170 + id),
            alive,
            partitions_led: 0,
            partitions_hosted: 0,
            error: (!alive).then(|| "connection refused".to_string()),
            clock_offset_ms: alive.then_some(3),
            drained: false,
            partitions_under_replicated: 0,
            membership: "active".into(),
            metadata_role: "voter".into(),
            partitions_assigned: 0,
        };
        let mut status = ClusterStatus {
            nodes: vec![node(1, true), node(2, false)],
            metadata_leader: None,
            metadata_available: false,
            metadata_detail: "no leader elected".into(),
            reassignments: Vec::new(),
            cluster_id: "c".into(),
            move_throttle_bytes_per_sec: None,
        };
        let found = problems(&status);
        assert_eq!(found.len(), 2);
        assert!(found[0].contains("no leader elected"));
        assert!(found[1].contains("node 2") && found[1].contains("connection refused"));
        status.metadata_available = true;
        status.nodes.pop();
        assert!(problems(&status).is_empty());
        // A clock a day ahead is named with its offset; unknown is not a problem.
        status.nodes[0].clock_offset_ms = Some(86_400_000);
        let found = problems(&status);
        assert_eq!(found.len(), 1);
        assert!(found[0].contains("node 1") && found[0].contains("86400.000 s ahead of cluster time"), "{found:?}");
        status.nodes[0].clock_offset_ms = None;
        assert!(problems(&status).is_empty());
        assert_eq!(show_clock_offset(Some(-1_500)), "1.500 s behind");
    }
}
