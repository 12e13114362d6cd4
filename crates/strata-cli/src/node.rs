//! `strata node`: commands on one node (drain before a restart).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Subcommand;
use serde::Serialize;
use strata_client::Client;

use crate::topic::explain;

/// How often `drain --wait` asks whether the node still leads anything:
/// the leaders' balancer looks every 2 s, and a transfer takes one election.
const WAIT_POLL_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// Move every leadership (partitions and the metadata group) off node N
    /// and keep it off, e.g. before restarting or upgrading it. The node
    /// keeps its replicas and stays drained across restarts until
    /// `strata node undrain N`.
    Drain {
        node_id: u64,
        /// Wait until the node leads nothing (or this long has passed: exit 1).
        #[arg(long, value_parser = humantime::parse_duration, num_args = 0..=1, default_missing_value = "2m")]
        wait: Option<Duration>,
    },
    /// End a drain: node N may lead again, and the partitions it is the
    /// preferred leader of move back to it after `leader_balance_delay`.
    Undrain { node_id: u64 },
}

#[derive(Serialize)]
struct JsonDrain {
    node_id: u64,
    drained: Vec<u64>,
    /// Partitions the node still led when the command returned (null: not
    /// waited for).
    partitions_led: Option<u32>,
}

pub async fn run(command: NodeCommand, bootstrap: &[String], json: bool) -> anyhow::Result<ExitCode> {
    let client = Client::connect(bootstrap).map_err(explain)?;
    let (node_id, drain, wait) = match command {
        NodeCommand::Drain { node_id, wait } => (node_id, true, wait),
        NodeCommand::Undrain { node_id } => (node_id, false, None),
    };
    let drained = client.drain_node(node_id, drain).await.map_err(explain)?;
    let mut led = None;
    if let Some(wait) = wait {
        let deadline = Instant::now() + wait;
        loop {
            led = leadership(&client, node_id).await;
            if led == Some(0) {
                break;
            }
            if Instant::now() >= deadline {
                eprintln!(
                    "error: node {node_id} still leads {} after {}; check that another replica of each of its \
                     partitions is up (strata cluster status)",
                    led.map_or("an unknown number of partitions".to_string(), |n| format!(
                        "{n} partition(s) or the \
                        metadata group"
                    )),
                    humantime::format_duration(wait)
                );
                return Ok(ExitCode::FAILURE);
            }
            tokio::time::sleep(WAIT_POLL_INTERVAL).await;
        }
    }
    if json {
        println!("{}", serde_json::to_string(&JsonDrain { node_id, drained, partitions_led: led })?);
    } else if drain {
        match led {
            Some(_) => println!("node {node_id} is drained and leads nothing"),
            None => println!("node {node_id} is drained; its leaderships move off within seconds"),
        }
    } else {
        println!("node {node_id} may lead again");
    }
    Ok(ExitCode::SUCCESS)
}

/// Partitions node `node_id` leads, plus one while it leads the metadata
/// group; `None` while the cluster cannot tell.
async fn leadership(client: &Client, node_id: u64) -> Option<u32> {
    let status = client.cluster_status().await.ok()?;
    let node = status.nodes.iter().find(|n| n.id == node_id && n.alive)?;
    Some(node.partitions_led + u32::from(status.metadata_leader == Some(node_id)))
}
