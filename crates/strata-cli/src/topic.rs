//! `strata topic`: create, list, describe, alter and delete topics.

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::{ArgGroup, Subcommand};
use serde::Serialize;
use strata_client::{Client, ClientError, TopicDescription, TopicMetadata};

/// Replication factor used when none is given, if the cluster has that many nodes.
const DEFAULT_REPLICATION_FACTOR: usize = 3;

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        /// Topic name: 1-249 characters from [a-zA-Z0-9._-].
        name: String,
        /// Number of partitions.
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Replicas per partition [default: min(3, number of nodes)].
        #[arg(long)]
        replication_factor: Option<u32>,
        /// A topic setting, e.g. retention.ms=7d or retention.bytes=1073741824 (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
    },
    /// List topics.
    List,
    /// Show a topic's partitions: leader, replicas, high watermark, log start offset.
    Describe { name: String },
    /// Grow a topic's partition count and/or change its configs.
    #[command(group(ArgGroup::new("change").required(true).multiple(true).args(["partitions", "configs"])))]
    Alter {
        name: String,
        /// The new partition count: more than the topic has (a count only
        /// grows; records keep their partitions, and keys map over the new
        /// count from then on). New partitions get the topic's replication factor.
        #[arg(long)]
        partitions: Option<u32>,
        /// A topic setting to change, e.g. retention.ms=1d (repeatable);
        /// settings not named keep their value.
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
    },
    /// Delete a topic and all its records.
    Delete { name: String },
}

fn parse_key_value(setting: &str) -> Result<(String, String), String> {
    match setting.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => Ok((key.trim().to_string(), value.trim().to_string())),
        _ => Err(format!("'{setting}' is not KEY=VALUE")),
    }
}

/// A client error as the user should see it: `CODE: message`, then what to
/// do about it. Shared by the client subcommands; `main` prefixes `error: `.
pub(crate) fn explain(error: ClientError) -> anyhow::Error {
    match error.hint() {
        Some(help) => anyhow::anyhow!("{error}\n  hint: {help}"),
        None => anyhow::anyhow!("{error}"),
    }
}

/// Prints rows under a header, each column as wide as its widest cell.
pub(crate) fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

pub(crate) fn show_node(id: Option<u64>) -> String {
    id.map_or_else(|| "-".to_string(), |id| id.to_string())
}

fn show_nodes(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

#[derive(Serialize)]
struct JsonTopicMetadata<'a> {
    name: &'a str,
    configs: &'a BTreeMap<String, String>,
    partitions: Vec<JsonPartitionMetadata<'a>>,
}

#[derive(Serialize)]
struct JsonPartitionMetadata<'a> {
    partition: u32,
    leader: Option<u64>,
    replicas: &'a [u64],
}

impl<'a> From<&'a TopicMetadata> for JsonTopicMetadata<'a> {
    fn from(topic: &'a TopicMetadata) -> Self {
        JsonTopicMetadata {
            name: &topic.name,
            configs: &topic.configs,
            partitions: topic
                .partitions
                .iter()
                .map(|p| JsonPartitionMetadata { partition: p.partition, leader: p.leader, replicas: &p.replicas })
                .collect(),
        }
    }
}

#[derive(Serialize)]
struct JsonTopicSummary<'a> {
    name: &'a str,
    partitions: u32,
    replication_factor: usize,
    configs: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct JsonTopicDescription<'a> {
    name: &'a str,
    configs: &'a BTreeMap<String, String>,
    partitions: Vec<JsonPartitionDescription<'a>>,
}

#[derive(Serialize)]
struct JsonPartitionDescription<'a> {
    partition: u32,
    leader: Option<u64>,
    replicas: &'a [u64],
    high_watermark: u64,
    log_start_offset: u64,
    producers: u64,
    idempotency_keys: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

impl<'a> From<&'a TopicDescription> for JsonTopicDescription<'a> {
    fn from(topic: &'a TopicDescription) -> Self {
        JsonTopicDescription {
            name: &topic.name,
            configs: &topic.configs,
            partitions: topic
                .partitions
                .iter()
                .map(|p| JsonPartitionDescription {
                    partition: p.partition,
                    leader: p.leader,
                    replicas: &p.replicas,
                    high_watermark: p.high_watermark,
                    producers: p.producer_count,
                    idempotency_keys: p.idempotency_keys,
                    log_start_offset: p.log_start_offset,
                    error: p.error.as_deref(),
                })
                .collect(),
        }
    }
}

pub async fn run(command: TopicCommand, bootstrap: &[String], json: bool) -> anyhow::Result<ExitCode> {
    let client = Client::connect(bootstrap).map_err(explain)?;
    match command {
        TopicCommand::Create { name, partitions, replication_factor, configs } => {
            let replication_factor = match replication_factor {
                Some(factor) => factor,
                None => {
                    let nodes = client.metadata().await.map_err(explain)?.nodes.len();
                    nodes.clamp(1, DEFAULT_REPLICATION_FACTOR) as u32
                }
            };
            let configs: BTreeMap<String, String> = configs.into_iter().collect();
            let topic = client.create_topic(&name, partitions, replication_factor, configs).await.map_err(explain)?;
            if json {
                println!("{}", serde_json::to_string(&JsonTopicMetadata::from(&topic))?);
            } else {
                println!(
                    "created topic {}: {} partitions, replication factor {}",
                    topic.name,
                    topic.partition_count(),
                    topic.replication_factor()
                );
            }
        }
        TopicCommand::List => {
            let topics = client.list_topics().await.map_err(explain)?;
            if json {
                let summaries: Vec<JsonTopicSummary> = topics
                    .iter()
                    .map(|t| JsonTopicSummary {
                        name: &t.name,
                        partitions: t.partition_count(),
                        replication_factor: t.replication_factor(),
                        configs: &t.configs,
                    })
                    .collect();
                println!("{}", serde_json::to_string(&summaries)?);
            } else if topics.is_empty() {
                eprintln!("no topics");
            } else {
                let rows: Vec<Vec<String>> = topics
                    .iter()
                    .map(|t| vec![t.name.clone(), t.partition_count().to_string(), t.replication_factor().to_string()])
                    .collect();
                print_table(&["NAME", "PARTITIONS", "REPLICATION FACTOR"], &rows);
            }
        }
        TopicCommand::Describe { name } => {
            let topic = client.describe_topic(&name).await.map_err(explain)?;
            if json {
                println!("{}", serde_json::to_string(&JsonTopicDescription::from(&topic))?);
            } else {
                let configs: Vec<String> = topic.configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!("topic {}  {}", topic.name, configs.join(" "));
                let rows: Vec<Vec<String>> = topic
                    .partitions
                    .iter()
                    .map(|p| {
                        vec![
                            p.partition.to_string(),
                            show_node(p.leader),
                            show_nodes(&p.replicas),
                            p.high_watermark.to_string(),
                            p.log_start_offset.to_string(),
                            p.producer_count.to_string(),
                            p.idempotency_keys.to_string(),
                            p.error.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                print_table(
                    &[
                        "PARTITION",
                        "LEADER",
                        "REPLICAS",
                        "HIGH WATERMARK",
                        "LOG START OFFSET",
                        "PRODUCERS",
                        "KEYS",
                        "ERROR",
                    ],
                    &rows,
                );
            }
        }
        TopicCommand::Alter { name, partitions, configs } => {
            let configs: BTreeMap<String, String> = configs.into_iter().collect();
            let topic = client.alter_topic(&name, partitions, configs).await.map_err(explain)?;
            if json {
                println!("{}", serde_json::to_string(&JsonTopicMetadata::from(&topic))?);
            } else {
                let configs: Vec<String> = topic.configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!(
                    "altered topic {}: {} partitions, replication factor {}, {}",
                    topic.name,
                    topic.partition_count(),
                    topic.replication_factor(),
                    configs.join(" ")
                );
            }
        }
        TopicCommand::Delete { name } => {
            client.delete_topic(&name).await.map_err(explain)?;
            if json {
                println!("{}", serde_json::json!({ "deleted": name }));
            } else {
                println!("deleted topic {name}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_settings() {
        assert_eq!(parse_key_value("retention.ms=7d").unwrap(), ("retention.ms".into(), "7d".into()));
        assert_eq!(parse_key_value("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=x").is_err());
    }

    #[test]
    fn alter_needs_a_partition_count_or_a_config() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(subcommand)]
            topic: TopicCommand,
        }
        let parse = |args: &[&str]| Cli::try_parse_from([&["topic"], args].concat()).map(|cli| cli.topic);
        let error = parse(&["alter", "orders"]).expect_err("nothing to change");
        assert_eq!(error.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let TopicCommand::Alter { partitions, configs, .. } =
            parse(&["alter", "orders", "--partitions", "6", "--config", "retention.ms=1d", "--config", "a=b"]).unwrap()
        else {
            panic!("an alter")
        };
        assert_eq!(partitions, Some(6));
        assert_eq!(configs, vec![("retention.ms".into(), "1d".into()), ("a".into(), "b".into())]);
        assert!(matches!(
            parse(&["alter", "orders", "--config", "x=1"]),
            Ok(TopicCommand::Alter { partitions: None, .. })
        ));
        assert!(parse(&["alter", "orders", "--config", "novalue"]).is_err());
    }

    #[test]
    fn describe_json_has_the_documented_shape() {
        let topic = TopicDescription {
            name: "orders".into(),
            configs: BTreeMap::from([("retention.ms".to_string(), "-1".to_string())]),
            partitions: vec![strata_client::PartitionDescription {
                partition: 0,
                leader: Some(1),
                replicas: vec![1, 2, 3],
                high_watermark: 10,
                log_start_offset: 0,
                error: None,
                producer_count: 2,
                idempotency_keys: 5,
            }],
        };
        assert_eq!(
            serde_json::to_string(&JsonTopicDescription::from(&topic)).unwrap(),
            r#"{"name":"orders","configs":{"retention.ms":"-1"},"partitions":[{"partition":0,"leader":1,"replicas":[1,2,3],"high_watermark":10,"log_start_offset":0,"producers":2,"idempotency_keys":5}]}"#
        );
    }
}
