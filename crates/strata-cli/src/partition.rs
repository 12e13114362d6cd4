//! `strata partition`: commands on single partitions.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Subcommand;
use serde::Serialize;
use strata_client::{Client, ThrottleRate};

use crate::topic::explain;

/// How often `reassign --wait` asks whether the move is done: a move takes
/// at least two membership changes, tens of milliseconds each.
const WAIT_POLL_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Subcommand, Debug)]
pub enum PartitionCommand {
    /// Move a partition to other replicas, e.g. `orders:0 --replicas 1,2,4`:
    /// new replicas join and catch up, then the replica set changes by joint
    /// consensus and the replicas left out delete their copy. The first node
    /// listed becomes the preferred leader. Safe to interrupt: the cluster
    /// finishes the move on its own (`strata cluster status` lists it).
    Reassign {
        /// TOPIC:PARTITION.
        #[arg(value_parser = parse_topic_partition)]
        partition: (String, u32),
        /// The new replica set: node ids, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        replicas: Vec<u64>,
        /// Wait until the move is done (or this long has passed: exit 1).
        #[arg(long, value_parser = humantime::parse_duration, num_args = 0..=1, default_missing_value = "5m")]
        wait: Option<Duration>,
        /// Set the cluster's move throttle first: the most bytes per second
        /// each node sends to replicas joining a partition, e.g. 20MiB;
        /// `off` (or 0) clears it. It stays for later moves until changed
        /// (`strata cluster status` shows it).
        #[arg(long, value_name = "RATE")]
        throttle: Option<ThrottleRate>,
    },
}

fn parse_topic_partition(text: &str) -> Result<(String, u32), String> {
    let (topic, partition) = text.rsplit_once(':').ok_or_else(|| format!("'{text}' is not TOPIC:PARTITION"))?;
    let partition = partition.parse().map_err(|_| format!("'{partition}' in '{text}' is not a partition number"))?;
    if topic.is_empty() {
        return Err(format!("'{text}' names no topic"));
    }
    Ok((topic.to_string(), partition))
}

#[derive(Serialize)]
struct JsonReassign<'a> {
    topic: &'a str,
    partition: u32,
    replicas: &'a [u64],
    /// The move is done: the partition's replicas are `replicas`.
    done: bool,
}

pub async fn run(command: PartitionCommand, bootstrap: &[String], json: bool) -> anyhow::Result<ExitCode> {
    let PartitionCommand::Reassign { partition: (topic, partition), replicas, wait, throttle } = command;
    let client = Client::connect(bootstrap).map_err(explain)?;
    let mut done =
        client.reassign_partition_throttled(&topic, partition, &replicas, throttle).await.map_err(explain)?;
    if let Some(wait) = wait.filter(|_| !done) {
        let deadline = Instant::now() + wait;
        while !done {
            if Instant::now() >= deadline {
                eprintln!(
                    "error: {topic}:{partition} is still moving after {}; it goes on in the cluster (strata \
                     cluster status)",
                    humantime::format_duration(wait)
                );
                return Ok(ExitCode::FAILURE);
            }
            tokio::time::sleep(WAIT_POLL_INTERVAL).await;
            done = is_moved(&client, &topic, partition, &replicas).await;
        }
    }
    if json {
        println!("{}", serde_json::to_string(&JsonReassign { topic: &topic, partition, replicas: &replicas, done })?);
    } else if done {
        println!("{topic}:{partition} has replicas {replicas:?}");
    } else {
        println!("{topic}:{partition} is moving to {replicas:?}; `strata cluster status` shows it until it is done");
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether the cluster lists no move of the partition and its replicas are
/// `replicas`; false while either cannot be read.
async fn is_moved(client: &Client, topic: &str, partition: u32, replicas: &[u64]) -> bool {
    let Ok(status) = client.cluster_status().await else { return false };
    if status.reassignments.iter().any(|r| r.topic == topic && r.partition == partition) {
        return false;
    }
    let Ok(description) = client.describe_topic(topic).await else { return false };
    description.partitions.iter().any(|p| p.partition == partition && p.replicas == replicas)
}
