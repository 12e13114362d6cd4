//! `strata consume`: print the records of a topic, from the latest offset by
//! default (like Kafka's console consumer), until Ctrl-C, `--max` records,
//! or with `--until-end` the end each partition had when the command started.
//! With `--group` it reads as a member of a consumer group: the partitions
//! the group gives it, from the group's committed offsets, committing what
//! it printed; Ctrl-C or SIGTERM leaves the group at once.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{ErrorKind, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use base64::prelude::{Engine as _, BASE64_STANDARD};
use clap::Args;
use serde::Serialize;
use strata_client::{
    Client, ConsumedRecord, Consumer, GroupConsumer, GroupConsumerConfig, GroupEvent, OffsetReset, OffsetSpec,
    StartOffset,
};

use crate::topic::explain;

/// How long one poll waits for records; bounds how late Ctrl-C and the
/// end checks are noticed when the topic is idle.
const POLL_WAIT: Duration = Duration::from_millis(500);

/// How `--json` shows bytes; part of `strata consume --help`.
const OUTPUT_HELP: &str = "\
Output:
  Text output prints each value (with --print-key, key<SEP>value) as UTF-8;
  bytes that are not valid UTF-8 are shown as U+FFFD, so text output is not
  exact for binary data.

  With --json each record is one JSON object per line:
    {\"partition\":0,\"offset\":5,\"key\":\"k\",\"value\":\"v\",\"timestamp\":1700000000000,\"headers\":{\"h\":\"x\"}}
  A key or value that is valid UTF-8 is printed as a string under \"key\" or
  \"value\" (null when absent). One that is not valid UTF-8 is printed under
  \"key_base64\" or \"value_base64\" instead, as standard base64 with padding
  (RFC 4648), and the plain field is left out. Header values do the same:
  a header whose value is not valid UTF-8 appears in \"headers_base64\"
  (name -> base64) instead of \"headers\". Keys, values and header values
  are therefore exact; a header name repeated in one record shows only its
  last value.";

#[derive(Args, Debug)]
#[command(after_help = OUTPUT_HELP)]
pub struct ConsumeArgs {
    /// Topic to read.
    pub topic: String,
    /// Read as a member of this consumer group: the partitions the group
    /// assigns, from its committed offsets, committing what is printed.
    #[arg(long, value_name = "GROUP", conflicts_with_all = ["partition", "offset", "from_time", "until_end"])]
    pub group: Option<String>,
    /// Read only this partition [default: all partitions].
    #[arg(long)]
    pub partition: Option<u32>,
    /// Start at the earliest offset still stored (with --group: for
    /// partitions the group has no committed offset for).
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

pub(crate) fn parse_time_ms(text: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("'{text}' is not an RFC 3339 time such as 2024-05-01T12:00:00Z: {e}"))
}

/// One record as `--json` prints it (see [`OUTPUT_HELP`]). A field is
/// either its plain string (valid UTF-8, or null when absent) or its
/// `_base64` twin, never both.
#[derive(Serialize)]
struct JsonRecord<'a> {
    partition: u32,
    offset: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
    timestamp: i64,
    headers: BTreeMap<&'a str, Option<&'a str>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    headers_base64: BTreeMap<&'a str, String>,
}

/// Bytes as JSON shows them: `Ok(text)` when absent or valid UTF-8,
/// `Err(base64)` otherwise.
fn exact(bytes: &Option<strata_client::Bytes>) -> Result<Option<&str>, String> {
    match bytes.as_deref() {
        None => Ok(None),
        Some(b) => std::str::from_utf8(b).map(Some).map_err(|_| BASE64_STANDARD.encode(b)),
    }
}

fn split(shown: Result<Option<&str>, String>) -> (Option<Option<&str>>, Option<String>) {
    match shown {
        Ok(text) => (Some(text), None),
        Err(base64) => (None, Some(base64)),
    }
}

fn lossy(bytes: &Option<strata_client::Bytes>) -> Option<Cow<'_, str>> {
    bytes.as_deref().map(String::from_utf8_lossy)
}

fn format_record(record: &ConsumedRecord, json: bool, print_key: bool, key_separator: &str) -> String {
    if json {
        let (key, key_base64) = split(exact(&record.key));
        let (value, value_base64) = split(exact(&record.value));
        let mut headers = BTreeMap::new();
        let mut headers_base64 = BTreeMap::new();
        for header in &record.headers {
            match exact(&header.value) {
                Ok(text) => {
                    headers.insert(header.key.as_str(), text);
                }
                Err(base64) => {
                    headers_base64.insert(header.key.as_str(), base64);
                }
            }
        }
        let shown = JsonRecord {
            partition: record.partition,
            offset: record.offset,
            key,
            key_base64,
            value,
            value_base64,
            timestamp: record.timestamp_ms,
            headers,
            headers_base64,
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

/// Writes `lines` to stdout. Ok(false): the reader went away (`| head`),
/// which is a normal end.
fn print_lines(lines: &[String]) -> anyhow::Result<bool> {
    let mut out = std::io::stdout().lock();
    for line in lines {
        match writeln!(out, "{line}") {
            Ok(()) => {}
            Err(error) if error.kind() == ErrorKind::BrokenPipe => return Ok(false),
            Err(error) => return Err(error).context("writing to stdout"),
        }
    }
    match out.flush() {
        Err(error) if error.kind() == ErrorKind::BrokenPipe => Ok(false),
        other => other.context("writing to stdout").map(|()| true),
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The offsets to commit after printing `printed`: per partition, the
/// offset after the last one printed.
fn next_offsets(printed: &[&ConsumedRecord]) -> Vec<(String, u32, u64)> {
    let mut next: BTreeMap<(&str, u32), u64> = BTreeMap::new();
    for record in printed {
        let offset = next.entry((record.topic.as_str(), record.partition)).or_default();
        *offset = (*offset).max(record.offset + 1);
    }
    next.into_iter().map(|((topic, partition), offset)| (topic.to_string(), partition, offset)).collect()
}

/// `consume --group`: a member of the group until a stop signal, `--max`
/// records or a closed stdout; commits what it printed after each batch,
/// and leaves the group on the way out.
async fn run_in_group(args: &ConsumeArgs, group: &str, client: Client, json: bool) -> anyhow::Result<ExitCode> {
    let config = GroupConsumerConfig {
        client_id: "strata-cli".to_string(),
        // Commits follow what was printed, not what was polled.
        auto_commit: false,
        auto_offset_reset: if args.from_beginning { OffsetReset::Earliest } else { OffsetReset::Latest },
        ..GroupConsumerConfig::default()
    };
    let mut consumer = GroupConsumer::new(client, group, config);
    consumer.subscribe(&[args.topic.as_str()]).map_err(explain)?;
    let mut printed = 0u64;
    let stop = stop_signal();
    tokio::pin!(stop);
    let outcome: anyhow::Result<()> = async {
        while args.max.is_none_or(|max| printed < max) {
            let records = tokio::select! {
                _ = &mut stop => break,
                polled = consumer.poll(POLL_WAIT) => polled.map_err(explain)?,
            };
            for event in consumer.take_events() {
                log_event(group, &event);
            }
            let room = args.max.map_or(usize::MAX, |max| (max - printed) as usize);
            let shown: Vec<&ConsumedRecord> = records.iter().take(room).collect();
            let lines: Vec<String> =
                shown.iter().map(|r| format_record(r, json, args.print_key, &args.key_separator)).collect();
            let open = print_lines(&lines)?;
            printed += shown.len() as u64;
            if !shown.is_empty() {
                if let Err(error) = consumer.commit_offsets(&next_offsets(&shown)).await {
                    // Refused after the partition moved: its next owner
                    // prints it again from the last commit.
                    tracing::warn!(group, error = %error, "commit refused");
                }
            }
            if !open {
                break;
            }
        }
        Ok(())
    }
    .await;
    let left = consumer.close().await.map_err(explain);
    outcome?;
    left?;
    Ok(ExitCode::SUCCESS)
}

fn log_event(group: &str, event: &GroupEvent) {
    let (what, partitions) = match event {
        GroupEvent::Assigned(p) => ("assigned", p),
        GroupEvent::Revoked(p) => ("revoked", p),
        GroupEvent::Lost(p) => ("lost", p),
    };
    tracing::info!(group, ?partitions, "partitions {what}");
}

pub async fn run(args: ConsumeArgs, bootstrap: &[String], json: bool) -> anyhow::Result<ExitCode> {
    let client = Client::connect(bootstrap).map_err(explain)?;
    if let Some(group) = &args.group {
        return run_in_group(&args, group, client, json).await;
    }
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
    fn json_output_is_exact_for_bytes_that_are_not_utf8() {
        let mut binary = record();
        binary.key = Some(Bytes::from_static(b"\xffk"));
        binary.value = Some(Bytes::from_static(b"\xff"));
        binary.headers = vec![
            Header { key: "text".into(), value: Some(Bytes::from_static(b"x")) },
            Header { key: "bin".into(), value: Some(Bytes::from_static(b"\x00\xfe\xff")) },
        ];
        let line = format_record(&binary, true, false, "\t");
        assert_eq!(
            line,
            r#"{"partition":0,"offset":5,"key_base64":"/2s=","value_base64":"/w==","timestamp":1700000000000,"headers":{"text":"x"},"headers_base64":{"bin":"AP7/"}}"#
        );
        // The bytes come back exactly.
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        let decode = |v: &serde_json::Value| BASE64_STANDARD.decode(v.as_str().unwrap()).unwrap();
        assert_eq!(decode(&parsed["value_base64"]), b"\xff");
        assert_eq!(decode(&parsed["key_base64"]), b"\xffk");
        assert_eq!(decode(&parsed["headers_base64"]["bin"]), b"\x00\xfe\xff");
        assert!(parsed.get("value").is_none() && parsed.get("key").is_none());
        // Valid UTF-8 (not only ASCII) stays a plain string; absent stays null.
        let mut text = record();
        text.key = None;
        text.value = Some(Bytes::from("é€".as_bytes().to_vec()));
        let parsed: serde_json::Value = serde_json::from_str(&format_record(&text, true, false, "\t")).unwrap();
        assert_eq!(parsed["value"], "é€");
        assert!(parsed["key"].is_null() && parsed.get("key_base64").is_none());
    }

    #[test]
    fn help_says_how_json_shows_binary_data() {
        use clap::CommandFactory;
        let mut cli = crate::Cli::command();
        let help = cli.find_subcommand_mut("consume").expect("consume command").render_long_help().to_string();
        for needle in ["value_base64", "key_base64", "headers_base64", "RFC 4648", "U+FFFD"] {
            assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
        }
    }

    #[test]
    fn a_group_commits_the_offset_after_the_last_record_printed_per_partition() {
        let at = |partition, offset| ConsumedRecord { partition, offset, ..record() };
        let records = [at(0, 5), at(1, 2), at(0, 6), at(1, 3)];
        let shown: Vec<&ConsumedRecord> = records.iter().take(3).collect();
        assert_eq!(next_offsets(&shown), vec![("t".to_string(), 0, 7), ("t".to_string(), 1, 3)]);
    }

    #[test]
    fn group_reading_conflicts_with_choosing_partitions_and_offsets() {
        use clap::Parser;
        let parse = |args: &[&str]| crate::Cli::try_parse_from(args).map(|_| ());
        assert!(parse(&["strata", "consume", "t", "--group", "g", "--from-beginning"]).is_ok());
        for conflicting in [["--partition", "1"], ["--offset", "3"], ["--from-time", "1970-01-01T00:00:01Z"]] {
            let mut args = vec!["strata", "consume", "t", "--group", "g"];
            args.extend(conflicting);
            assert!(parse(&args).is_err(), "{conflicting:?} must conflict with --group");
        }
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(parse_time_ms("1970-01-01T00:00:01Z").unwrap(), 1000);
        assert_eq!(parse_time_ms("2023-11-14T22:13:20+00:00").unwrap(), 1_700_000_000_000);
        assert!(parse_time_ms("yesterday").is_err());
    }
}
