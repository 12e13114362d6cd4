//! `strata produce`: one record per stdin line, sent as lines arrive (the
//! producer batches them by linger), so the command can sit in a pipe.
//! Exits 0 only when every record was acknowledged.

use std::borrow::Cow;
use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use futures::stream::{FuturesUnordered, StreamExt};
use serde::Serialize;
use strata_client::{Acks, Bytes, Client, ClientError, Header, Producer, ProducerConfig, Record, RecordMetadata};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

use strata_core::limits::MAX_IDEMPOTENCY_KEY_BYTES;
use strata_core::IDEMPOTENCY_KEY_HEADER;

use crate::topic::explain;

/// Lines read ahead of the producer; the producer's own buffer bounds the rest.
const LINES_AHEAD: usize = 1024;

/// Per-record errors printed before the rest are only counted: when the
/// cluster is down every record fails the same way.
const MAX_PRINTED_ERRORS: u64 = 20;

#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// Topic to write to.
    pub topic: String,
    /// Split each line at the first SEP into key and value (lines input).
    #[arg(long, value_name = "SEP", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub key_separator: Option<String>,
    /// When a record counts as written: all (a majority has it on disk),
    /// leader (the leader accepted it), none (sent, nothing promised).
    #[arg(long, value_enum, default_value_t = AcksArg::All)]
    pub acks: AcksArg,
    /// Input format: `lines` (one record value per line) or `json` (one
    /// object per line: "key", "value" (strings, optional), "headers" (object
    /// of string to string), "idempotency_key" (string: a record whose key
    /// was stored within the topic's dedup.window is not stored again)).
    #[arg(long, value_enum, default_value_t = InputFormat::Lines)]
    pub input: InputFormat,
    /// Send every record to this partition instead of choosing by key.
    #[arg(long)]
    pub partition: Option<u32>,
    /// Turn the idempotent producer off (it is on by default and needs
    /// --acks all): retries may then store a record twice.
    #[arg(long)]
    pub no_idempotence: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcksArg {
    All,
    Leader,
    #[value(name = "none")]
    NoAcks,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputFormat {
    Lines,
    Json,
}

/// What we remember of a record until its acknowledgement, for the output.
struct Sent {
    line: u64,
    key: Option<Bytes>,
    value: Option<Bytes>,
}

#[derive(Serialize)]
struct JsonAck<'a> {
    partition: u32,
    offset: Option<u64>,
    key: Option<Cow<'a, str>>,
    value: Option<Cow<'a, str>>,
}

/// Turns one input line (without its line end) into a record.
fn parse_line(line: &[u8], format: InputFormat, key_separator: Option<&str>) -> Result<Record, String> {
    match format {
        InputFormat::Lines => {
            let (key, value) = match key_separator {
                None => (None, line),
                Some(separator) => {
                    let separator = separator.as_bytes();
                    let at = line.windows(separator.len()).position(|w| w == separator).ok_or_else(|| {
                        format!("no key separator {:?} in the line", String::from_utf8_lossy(separator))
                    })?;
                    (Some(&line[..at]), &line[at + separator.len()..])
                }
            };
            Ok(Record {
                key: key.map(Bytes::copy_from_slice),
                value: Some(Bytes::copy_from_slice(value)),
                ..Default::default()
            })
        }
        InputFormat::Json => {
            let object: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(line).map_err(|e| format!("not a JSON object: {e}"))?;
            let text = |field: &str, value: Option<&serde_json::Value>| -> Result<Option<Bytes>, String> {
                match value {
                    None | Some(serde_json::Value::Null) => Ok(None),
                    Some(serde_json::Value::String(s)) => Ok(Some(Bytes::from(s.clone()))),
                    Some(other) => Err(format!("\"{field}\" must be a string or null, not {other}")),
                }
            };
            let mut headers = Vec::new();
            match object.get("headers") {
                None | Some(serde_json::Value::Null) => {}
                Some(serde_json::Value::Object(map)) => {
                    for (key, value) in map {
                        headers.push(Header { key: key.clone(), value: text(&format!("headers.{key}"), Some(value))? });
                    }
                }
                Some(other) => return Err(format!("\"headers\" must be an object, not {other}")),
            }
            if let Some(unknown) =
                object.keys().find(|k| !matches!(k.as_str(), "key" | "value" | "headers" | "idempotency_key"))
            {
                return Err(format!("unknown field \"{unknown}\"; use key, value, headers and idempotency_key"));
            }
            match text("idempotency_key", object.get("idempotency_key"))? {
                Some(key) if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES => {
                    return Err(format!("\"idempotency_key\" must have 1 to {MAX_IDEMPOTENCY_KEY_BYTES} bytes"))
                }
                Some(key) => headers.push(Header { key: IDEMPOTENCY_KEY_HEADER.to_string(), value: Some(key) }),
                None => {}
            }
            Ok(Record {
                key: text("key", object.get("key"))?,
                value: text("value", object.get("value"))?,
                headers,
                timestamp_ms: 0,
            })
        }
    }
}

fn trim_line_end(mut line: &[u8]) -> &[u8] {
    if let Some(rest) = line.strip_suffix(b"\n") {
        line = rest;
    }
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Reads stdin line by line on its own task, so records go out while the
/// input is still open.
fn read_stdin_lines() -> mpsc::Receiver<std::io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(LINES_AHEAD);
    tokio::spawn(async move {
        let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
        loop {
            let mut line = Vec::new();
            match stdin.read_until(b'\n', &mut line).await {
                Ok(0) => return,
                Ok(_) => {
                    if tx.send(Ok(line)).await.is_err() {
                        return;
                    }
                }
                Err(error) => {
                    let _ = tx.send(Err(error)).await;
                    return;
                }
            }
        }
    });
    rx
}

pub async fn run(args: ProduceArgs, bootstrap: &[String], json: bool) -> anyhow::Result<ExitCode> {
    let client = Client::connect(bootstrap).map_err(explain)?;
    // Fail fast on a wrong topic or partition rather than per record.
    let topic = client.topic_metadata(&args.topic).await.map_err(explain)?;
    if let Some(partition) = args.partition {
        anyhow::ensure!(
            partition < topic.partition_count(),
            "UNKNOWN_PARTITION: topic '{}' has {} partitions, no partition {partition}",
            topic.name,
            topic.partition_count()
        );
    }
    let acks = match args.acks {
        AcksArg::All => Acks::All,
        AcksArg::Leader => Acks::Leader,
        AcksArg::NoAcks => Acks::None,
    };
    if !args.no_idempotence && acks != Acks::All {
        anyhow::bail!("the idempotent producer needs --acks all; pass --no-idempotence to use --acks leader or none");
    }
    let config = ProducerConfig { acks, idempotence: !args.no_idempotence, ..Default::default() };
    let producer = Producer::new(client, config).map_err(explain)?;

    let mut lines = read_stdin_lines();
    let mut pending = FuturesUnordered::new();
    let mut stdin_open = true;
    let (mut line_number, mut acknowledged, mut failed) = (0u64, 0u64, 0u64);
    let mut first_error: Option<ClientError> = None;
    let mut stdout = std::io::stdout();
    loop {
        tokio::select! {
            line = lines.recv(), if stdin_open => {
                let Some(line) = line else {
                    stdin_open = false;
                    producer.flush().await;
                    continue;
                };
                let line = line.context("reading stdin")?;
                line_number += 1;
                let line = trim_line_end(&line);
                if args.input == InputFormat::Json && line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let record = match parse_line(line, args.input, args.key_separator.as_deref()) {
                    Ok(record) => record,
                    Err(reason) => {
                        report(failed, format_args!("line {line_number}: {reason}"));
                        failed += 1;
                        continue;
                    }
                };
                let sent = Sent { line: line_number, key: record.key.clone(), value: record.value.clone() };
                let queued = match args.partition {
                    Some(partition) => producer.send_to(&args.topic, partition, record).await,
                    None => producer.send(&args.topic, record).await,
                };
                match queued {
                    Ok(delivery) => pending.push(async move { (sent, delivery.await) }),
                    Err(error) => {
                        report(failed, format_args!("line {line_number}: {error}"));
                        failed += 1;
                        first_error.get_or_insert(error);
                    }
                }
            }
            Some((sent, outcome)) = pending.next(), if !pending.is_empty() => {
                match outcome {
                    Ok(metadata) => {
                        acknowledged += 1;
                        if json {
                            print_ack(&mut stdout, &metadata, &sent);
                        }
                    }
                    Err(error) => {
                        report(failed, format_args!("line {}: {error}", sent.line));
                        failed += 1;
                        first_error.get_or_insert(error);
                    }
                }
            }
            else => break,
        }
    }

    if !json {
        eprintln!("produced {acknowledged} records to {}", args.topic);
    }
    if failed == 0 {
        return Ok(ExitCode::SUCCESS);
    }
    let hint = first_error.and_then(|e| e.hint()).map(|help| format!("\n  hint: {help}")).unwrap_or_default();
    eprintln!("error: {failed} of {} records were not produced{hint}", acknowledged + failed);
    Ok(ExitCode::FAILURE)
}

/// Prints one record's failure, unless many were printed already.
fn report(failed_before: u64, what: std::fmt::Arguments) {
    if failed_before < MAX_PRINTED_ERRORS {
        eprintln!("error: {what}");
    } else if failed_before == MAX_PRINTED_ERRORS {
        eprintln!("error: more records failed; only their count is reported below");
    }
}

fn print_ack(stdout: &mut std::io::Stdout, metadata: &RecordMetadata, sent: &Sent) {
    let ack = JsonAck {
        partition: metadata.partition,
        offset: metadata.offset,
        key: sent.key.as_deref().map(String::from_utf8_lossy),
        value: sent.value.as_deref().map(String::from_utf8_lossy),
    };
    let line = serde_json::to_string(&ack).expect("plain data serialises");
    // A closed stdout (e.g. `| head`) must not stop the records from going out.
    let mut out = stdout.lock();
    let _ = writeln!(out, "{line}").and_then(|_| out.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_at_the_first_separator() {
        let record = parse_line(b"k1:v:1", InputFormat::Lines, Some(":")).unwrap();
        assert_eq!(record.key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(record.value.as_deref(), Some(&b"v:1"[..]));
        let record = parse_line(b"plain", InputFormat::Lines, None).unwrap();
        assert_eq!((record.key, record.value.as_deref()), (None, Some(&b"plain"[..])));
        assert!(parse_line(b"no separator", InputFormat::Lines, Some("\t")).is_err());
        assert_eq!(trim_line_end(b"value\r\n"), b"value");
        assert_eq!(trim_line_end(b"last"), b"last");
    }

    #[test]
    fn json_lines_carry_key_value_and_headers() {
        let record =
            parse_line(br#"{"key":"k","value":"v","headers":{"h":"x","n":null}}"#, InputFormat::Json, None).unwrap();
        assert_eq!(record.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(record.value.as_deref(), Some(&b"v"[..]));
        assert_eq!(record.headers.len(), 2);
        assert_eq!(record.headers[0].value.as_deref(), Some(&b"x"[..]));
        assert_eq!(record.headers[1].value, None);

        let bare = parse_line(br#"{"value":"only"}"#, InputFormat::Json, None).unwrap();
        assert_eq!(bare.key, None);
        assert!(parse_line(br#"{"value":5}"#, InputFormat::Json, None).is_err());
        assert!(parse_line(br#"{"valeu":"typo"}"#, InputFormat::Json, None).is_err());
        let keyed = parse_line(br#"{"value":"v","idempotency_key":"order-7"}"#, InputFormat::Json, None).unwrap();
        assert_eq!(keyed.headers.len(), 1);
        assert_eq!(keyed.headers[0].key, IDEMPOTENCY_KEY_HEADER);
        assert_eq!(keyed.headers[0].value.as_deref(), Some(&b"order-7"[..]));
        assert!(parse_line(br#"{"value":"v","idempotency_key":""}"#, InputFormat::Json, None).is_err());
        assert!(parse_line(b"not json", InputFormat::Json, None).is_err());
    }

    #[test]
    fn ack_json_has_the_documented_shape() {
        let ack = JsonAck { partition: 0, offset: Some(5), key: None, value: Some(Cow::Borrowed("v")) };
        assert_eq!(serde_json::to_string(&ack).unwrap(), r#"{"partition":0,"offset":5,"key":null,"value":"v"}"#);
    }
}
