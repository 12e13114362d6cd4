//! `strata consume`: print the records of a topic, from the latest offset by
//! default (like Kafka's console consumer), until Ctrl-C, `--max` records,
//! or with `--until-end` the end each partition had when the command started.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{ErrorKind, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use strata_client::{Client, ConsumedRecord, Consumer, OffsetSpec, StartOffset};

use crate::topic::explain;

/// How long one poll waits for records; bounds how late Ctrl-C and the
/// end checks are noticed when the topic is idle.
const POLL_WAIT: Duration = Duration::from_millis(500);

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    /// Topic to read.
    pub topic: String,
    /// Read only this partition [default: all partitions].
    #[arg(long)]
    pub partition: Option<u32>,
    /// Start at the earliest offset still stored.
    #[arg(long, conflicts_with_all = ["offset", "from_time"])]
    pub from_beginning: bool,
    /// Start at this offset (in every partition read).
    #[arg(long, conflicts_with = "from_time")]
    pub offset: Option<u64>,
    /// Start at the first record at or after this time, e.g. 2024-05-01T12:00:00Z.
    #[arg(long, value_name = "RFC3339", value_parser = parse_time_ms)]
    pub from_time: Option<i64>,
    /// Stop after this many records.
    #[arg(long)]
    pub max: Option<u64>,
    /// Stop once every partition is read up to the end it had at start.
    #[arg(long)]
    pub until_end: bool,
    /// Print `key<SEP>value` instead of the value alone (text output).
    #[arg(long)]
    pub print_key: bool,
    /// Separator between key and value with --print-key.
    #[arg(long, value_name = "SEP", default_value = "\t")]
    pub key_separator: String,
}

fn parse_time_ms(text: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("'{text}' is not an RFC 3339 time such as 2024-05-01T12:00:00Z: {e}"))
}

#[derive(Serialize)]
struct JsonRecord<'a> {
    partition: u32,
    offset: u64,
    key: Option<Cow<'a, str>>,
    value: Option<Cow<'a, str>>,
    timestamp: i64,
    headers: BTreeMap<&'a str, Option<Cow<'a, str>>>,
}

fn lossy(bytes: &Option<strata_client::Bytes>) -> Option<Cow<'_, str>> {
    bytes.as_deref().map(String::from_utf8_lossy)
}

fn format_record(record: &ConsumedRecord, json: bool, print_key: bool, key_separator: &str) -> String {
    if json {
        let shown = JsonRecord {
            partition: record.partition,
            offset: record.offset,
            key: lossy(&record.key),
            value: lossy(&record.value),
            timestamp: record.timestamp_ms,
            headers: record.headers.iter().map(|h| (h.key.as_str(), lossy(&h.value))).collect(),
        };
        return serde_json::to_string(&shown).expect("plain data serialises");
    }
    let value = lossy(&record.value).unwrap_or_default();
    if print_key {
        format!("{}{key_separator}{value}", lossy(&record.key).unwrap_or_default())
    } else {
        value.into_owned()
    }
}

pub async fn run(args: ConsumeArgs, bootstrap: &[String], json: bool) -> anyhow::Result<ExitCode> {
    let client = Client::connect(bootstrap).map_err(explain)?;
    let topic = client.topic_metadata(&args.topic).await.map_err(explain)?;
    let partitions: Vec<u32> = match args.partition {
        Some(partition) => {
            anyhow::ensure!(
                topic.partition(partition).is_some(),
                "UNKNOWN_PARTITION: topic '{}' has {} partitions, no partition {partition}",
                topic.name,
                topic.partition_count()
            );
            vec![partition]
        }
        None => topic.partitions.iter().map(|p| p.partition).collect(),
    };
    let start = match (args.from_beginning, args.offset, args.from_time) {
        (true, _, _) => StartOffset::Earliest,
        (_, Some(offset), _) => StartOffset::Offset(offset),
        (_, _, Some(ms)) => StartOffset::Timestamp(ms),
        _ => StartOffset::Latest,
    };

    // With --until-end, the end of each partition as it is now.
    let mut ends: BTreeMap<u32, u64> = BTreeMap::new();
    if args.until_end {
        for &partition in &partitions {
            let end = client.list_offsets(&topic.name, partition, OffsetSpec::Latest).await.map_err(explain)?;
            ends.insert(partition, end.offset);
        }
    }
    let mut consumer = Consumer::new(client);
    for &partition in &partitions {
        let position = consumer.assign(&topic.name, partition, start).await.map_err(explain)?;
        if ends.get(&partition).is_some_and(|&end| position >= end) {
            consumer.unassign(&topic.name, partition);
        }
    }

    let mut printed = 0u64;
    let limit_reached = |printed: u64| args.max.is_some_and(|max| printed >= max);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        if limit_reached(printed) || (args.until_end && consumer.assignment().is_empty()) {
            break;
        }
        let records = tokio::select! {
            _ = &mut ctrl_c => break,
            polled = consumer.poll(POLL_WAIT) => polled.map_err(explain)?,
        };
        let mut out = std::io::stdout().lock();
        for record in &records {
            if limit_reached(printed) {
                break;
            }
            if ends.get(&record.partition).is_some_and(|&end| record.offset >= end) {
                continue; // past the end this run was asked to reach
            }
            let line = format_record(record, json, args.print_key, &args.key_separator);
            match writeln!(out, "{line}") {
                Ok(()) => printed += 1,
                // The reader went away (`| head`): that is a normal end.
                Err(error) if error.kind() == ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
                Err(error) => return Err(error).context("writing to stdout"),
            }
        }
        match out.flush() {
            Err(error) if error.kind() == ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
            other => other.context("writing to stdout")?,
        }
        drop(out);
        for (&partition, &end) in &ends {
            if consumer.position(&topic.name, partition).is_some_and(|position| position >= end) {
                consumer.unassign(&topic.name, partition);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_client::{Bytes, Header};

    fn record() -> ConsumedRecord {
        ConsumedRecord {
            topic: "t".into(),
            partition: 0,
            offset: 5,
            timestamp_ms: 1_700_000_000_000,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"v")),
            headers: vec![Header { key: "h".into(), value: None }],
        }
    }

    #[test]
    fn text_and_json_output() {
        assert_eq!(format_record(&record(), false, false, "\t"), "v");
        assert_eq!(format_record(&record(), false, true, "\t"), "k\tv");
        assert_eq!(
            format_record(&record(), true, false, "\t"),
            r#"{"partition":0,"offset":5,"key":"k","value":"v","timestamp":1700000000000,"headers":{"h":null}}"#
        );
        let mut keyless = record();
        keyless.key = None;
        keyless.value = Some(Bytes::from_static(b"\xff"));
        assert_eq!(format_record(&keyless, false, true, ":"), ":\u{fffd}");
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(parse_time_ms("1970-01-01T00:00:01Z").unwrap(), 1000);
        assert_eq!(parse_time_ms("2023-11-14T22:13:20+00:00").unwrap(), 1_700_000_000_000);
        assert!(parse_time_ms("yesterday").is_err());
    }
}
