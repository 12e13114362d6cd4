//! `strata txn`: list, describe and abort transactions. A transaction left
//! open holds back read_committed readers of its partitions (at its first
//! record) until it ends or its timeout aborts it; `list` shows how long
//! each has been open, and `abort` ends one at once.

use std::process::ExitCode;

use clap::Subcommand;
use serde::Serialize;
use strata_client::{Client, TransactionDescription};

use crate::topic::{explain, print_table};

#[derive(Subcommand, Debug)]
pub enum TxnCommand {
    /// List transactional ids: state, producer, age of the open transaction
    /// and its partitions.
    List,
    /// Show one transactional id.
    Describe {
        /// Transactional id.
        transactional_id: String,
    },
    /// Abort the id's open transaction (its producer gets
    /// TRANSACTION_ABORTED and must initialise again).
    Abort {
        /// Transactional id.
        transactional_id: String,
    },
}

/// One transaction as `--json` prints it.
#[derive(Serialize, Debug, PartialEq, Eq)]
struct JsonTxn {
    transactional_id: String,
    state: String,
    producer_id: u64,
    producer_epoch: u32,
    age_ms: u64,
    /// "topic/partition" of each partition of the open transaction.
    partitions: Vec<String>,
    timeout_ms: u64,
    groups: Vec<String>,
}

fn partitions_of(t: &TransactionDescription) -> Vec<String> {
    t.partitions.iter().flat_map(|(topic, partitions)| partitions.iter().map(move |p| format!("{topic}/{p}"))).collect()
}

fn to_json(t: &TransactionDescription) -> JsonTxn {
    JsonTxn {
        transactional_id: t.transactional_id.clone(),
        state: t.state.clone(),
        producer_id: t.producer_id,
        producer_epoch: t.producer_epoch,
        age_ms: t.age_ms,
        partitions: partitions_of(t),
        timeout_ms: t.timeout_ms,
        groups: t.groups.clone(),
    }
}

fn row(t: &TransactionDescription) -> Vec<String> {
    let age = if t.age_ms > 0 { format!("{:.1}s", t.age_ms as f64 / 1000.0) } else { "-".to_string() };
    let partitions = partitions_of(t);
    vec![
        t.transactional_id.clone(),
        t.state.clone(),
        t.producer_id.to_string(),
        t.producer_epoch.to_string(),
        age,
        format!("{}s", t.timeout_ms / 1000),
        if partitions.is_empty() { "-".to_string() } else { partitions.join(",") },
    ]
}

const HEADER: [&str; 7] = ["TRANSACTIONAL ID", "STATE", "PRODUCER", "EPOCH", "AGE", "TIMEOUT", "PARTITIONS"];

pub async fn run(command: TxnCommand, bootstrap: &[String], json: bool) -> anyhow::Result<ExitCode> {
    let client = Client::connect(bootstrap).map_err(explain)?;
    match command {
        TxnCommand::List => {
            let transactions = client.list_transactions().await.map_err(explain)?;
            if json {
                let rows: Vec<JsonTxn> = transactions.iter().map(to_json).collect();
                println!("{}", serde_json::to_string(&rows)?);
            } else if transactions.is_empty() {
                eprintln!("no transactional ids");
            } else {
                print_table(&HEADER, &transactions.iter().map(row).collect::<Vec<_>>());
            }
        }
        TxnCommand::Describe { transactional_id } => {
            let txn = client.describe_transaction(&transactional_id).await.map_err(explain)?;
            if json {
                println!("{}", serde_json::to_string(&to_json(&txn))?);
            } else {
                print_table(&HEADER, &[row(&txn)]);
                if !txn.groups.is_empty() {
                    println!("offsets staged for groups: {}", txn.groups.join(", "));
                }
            }
        }
        TxnCommand::Abort { transactional_id } => {
            let txn = client.abort_transaction(&transactional_id).await.map_err(explain)?;
            if json {
                println!("{}", serde_json::to_string(&to_json(&txn))?);
            } else {
                println!("aborting the transaction of {transactional_id}: {}", txn.state);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn json_rows_have_the_fields_the_issue_names() {
        let txn = TransactionDescription {
            transactional_id: "job".into(),
            state: "ONGOING".into(),
            producer_id: 7,
            producer_epoch: 3,
            timeout_ms: 60_000,
            age_ms: 1_500,
            partitions: BTreeMap::from([("out".to_string(), vec![0, 2])]),
            groups: vec!["g".into()],
        };
        let value = serde_json::to_value(to_json(&txn)).unwrap();
        for field in ["transactional_id", "state", "producer_id", "producer_epoch", "age_ms", "partitions"] {
            assert!(value.get(field).is_some(), "{field} missing from {value}");
        }
        assert_eq!(value["partitions"], serde_json::json!(["out/0", "out/2"]));
        assert_eq!(row(&txn)[4], "1.5s");
    }
}
