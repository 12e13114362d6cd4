//! `strata pipe --from IN --to OUT --group G -- CMD [ARGS...]`: an
//! exactly-once filter job for anyone, without writing Rust.
//!
//! The pipe is a static member of group G (instance id `--instance-id`,
//! by default the host name), so a restarted pipe takes its partitions back
//! at once. Its transactional id is `pipe-G-INSTANCE`: a restart fences the
//! instance before it. It starts CMD once, writes each consumed record's
//! value to CMD's stdin as one line, reads exactly one line back per input
//! line, in order, and produces it to OUT with the input record's key.
//! Every commit interval it commits the outputs and the consumed offsets in
//! one transaction, so OUT holds each input's output exactly once however
//! often the pipe is killed and started again.
//!
//! - A record value holding a newline, a filter that exits, one that prints
//!   no line for an input within FILTER_LINE_TIMEOUT, or one that prints
//!   more lines than it was given, stops the pipe with an error; the open
//!   transaction is aborted, so nothing of it is committed.
//! - A transaction that cannot commit (a partition moved to another
//!   member, a leader change that outlasted the retries) is aborted, the
//!   partitions are read again from their committed offsets, and the pipe
//!   goes on. A newer instance with the same transactional id stops it.
//! - Offsets are staged with the member epoch the records were read at, so
//!   a partition that moved away and back meanwhile refuses them (KIP-1251).
//! - Filters must not buffer their output: `sed -u`, `jq --unbuffered`,
//!   `stdbuf -oL CMD`, `python3 -u`.

use std::collections::BTreeMap;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use strata_client::{
    Client, ConsumedRecord, GroupConsumer, GroupConsumerConfig, OffsetReset, Record, TransactionError,
    TransactionalConfig, TransactionalProducer,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::topic::explain;

/// How long the filter may take to answer one input line: far above any
/// reasonable per-record work, and what a filter that buffers its output
/// (or prints no line for an input) runs into.
const FILTER_LINE_TIMEOUT: Duration = Duration::from_secs(30);

/// One poll's wait when the commit interval leaves more.
const POLL_WAIT: Duration = Duration::from_millis(100);

#[derive(Args, Debug)]
pub struct PipeArgs {
    /// Topic to read.
    #[arg(long)]
    pub from: String,
    /// Topic to write the filter's lines to.
    #[arg(long)]
    pub to: String,
    /// Consumer group of the pipe's instances.
    #[arg(long)]
    pub group: String,
    /// Static member id of this instance [default: the host name]. Two
    /// running instances must not share it.
    #[arg(long)]
    pub instance_id: Option<String>,
    /// How often the outputs and the consumed offsets are committed
    /// together; readers see outputs after the commit.
    #[arg(long, default_value = "100ms", value_parser = parse_interval)]
    pub commit_interval: Duration,
    /// The filter and its arguments: reads one line per record on stdin,
    /// prints one line per record, unbuffered.
    #[arg(last = true, required = true, num_args = 1..)]
    pub command: Vec<String>,
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval =
        humantime::parse_duration(text).map_err(|e| format!("'{text}' is not a duration such as 100ms: {e}"))?;
    if interval.is_zero() {
        return Err("the commit interval must be above 0".to_string());
    }
    Ok(interval)
}

/// The transactional id of a pipe instance.
pub fn transactional_id(group: &str, instance: &str) -> String {
    format!("pipe-{group}-{instance}")
}

fn host_name() -> anyhow::Result<String> {
    let name = nix::unistd::gethostname().context("cannot read the host name; pass --instance-id")?;
    name.into_string().map_err(|_| anyhow::anyhow!("the host name is not UTF-8; pass --instance-id"))
}

/// The filter process and its two pipes.
struct Filter {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    program: String,
}

impl Filter {
    fn start(command: &[String]) -> anyhow::Result<Filter> {
        let (program, args) = command.split_first().expect("clap requires a command");
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start the filter '{program}'"))?;
        let stdin = child.stdin.take().expect("piped");
        let lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        Ok(Filter { child, stdin, lines, program: program.clone() })
    }

    async fn exited(&mut self) -> String {
        match tokio::time::timeout(Duration::from_secs(1), self.child.wait()).await {
            Ok(Ok(status)) => format!("the filter '{}' exited ({status})", self.program),
            _ => format!("the filter '{}' closed its output", self.program),
        }
    }

    /// One output line for one input line.
    async fn apply(&mut self, record: &ConsumedRecord) -> anyhow::Result<String> {
        let value = record.value.as_deref().unwrap_or_default();
        anyhow::ensure!(
            !value.contains(&b'\n'),
            "the record at {}/{} offset {} holds a newline; a pipe sends one line per record",
            record.topic,
            record.partition,
            record.offset
        );
        let mut line = Vec::with_capacity(value.len() + 1);
        line.extend_from_slice(value);
        line.push(b'\n');
        if self.stdin.write_all(&line).await.is_err() || self.stdin.flush().await.is_err() {
            anyhow::bail!("{}; it must read every line", self.exited().await);
        }
        match tokio::time::timeout(FILTER_LINE_TIMEOUT, self.lines.next_line()).await {
            Ok(Ok(Some(output))) => Ok(output),
            Ok(Ok(None)) | Ok(Err(_)) => {
                anyhow::bail!("{} before answering offset {}", self.exited().await, record.offset)
            }
            Err(_) => anyhow::bail!(
                "the filter '{}' printed no line for the record at {}/{} offset {} within {FILTER_LINE_TIMEOUT:?}; it \
                 must print one line per input line without buffering (sed -u, jq --unbuffered, stdbuf -oL)",
                self.program,
                record.topic,
                record.partition,
                record.offset
            ),
        }
    }

    /// Fails when the filter printed a line nobody asked for.
    async fn check_no_extra_line(&mut self) -> anyhow::Result<()> {
        if let Ok(Ok(Some(extra))) = tokio::time::timeout(Duration::ZERO, self.lines.next_line()).await {
            anyhow::bail!(
                "the filter '{}' printed more lines than it was given (an extra line: {extra:?}); it must print \
                 exactly one line per input line",
                self.program
            );
        }
        Ok(())
    }
}

/// The read side of one transaction: per partition, the offset after the
/// last record processed and the member epoch its first record was read at.
#[derive(Default)]
struct Progress {
    next: BTreeMap<(String, u32), u64>,
    epoch: Option<i32>,
}

impl Progress {
    fn offsets(&self) -> Vec<(String, u32, u64)> {
        self.next.iter().map(|((topic, partition), offset)| (topic.clone(), *partition, *offset)).collect()
    }
}

pub async fn run(args: PipeArgs, bootstrap: &[String]) -> anyhow::Result<ExitCode> {
    let instance = match &args.instance_id {
        Some(id) => id.clone(),
        None => host_name()?,
    };
    let client = Client::connect(bootstrap).map_err(explain)?;
    let out = client.topic_metadata(&args.to).await.map_err(explain)?;
    let out_partitions = out.partitions.len() as u32;
    let id = transactional_id(&args.group, &instance);
    let mut producer = TransactionalProducer::init(client.clone(), TransactionalConfig::new(&id))
        .await
        .map_err(|e| explain(e.error().clone()))?;
    let config = GroupConsumerConfig {
        client_id: format!("strata-pipe-{instance}"),
        instance_id: Some(instance.clone()),
        // Offsets are committed only inside the transactions.
        auto_commit: false,
        auto_offset_reset: OffsetReset::Earliest,
        ..GroupConsumerConfig::default()
    };
    let mut consumer = GroupConsumer::new(client.clone(), &args.group, config);
    consumer.subscribe(&[args.from.as_str()]).map_err(explain)?;
    let mut filter = Filter::start(&args.command)?;
    tracing::info!(group = %args.group, instance = %instance, transactional_id = %id, "pipe started");

    let stop = crate::consume::stop_signal();
    tokio::pin!(stop);
    let outcome: anyhow::Result<()> = async {
        loop {
            producer.begin().map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut progress = Progress::default();
            let deadline = Instant::now() + args.commit_interval;
            let mut stopping = false;
            while Instant::now() < deadline {
                let wait = deadline.saturating_duration_since(Instant::now()).min(POLL_WAIT);
                let records = tokio::select! {
                    _ = &mut stop => { stopping = true; break }
                    polled = consumer.poll(wait) => polled.map_err(explain)?,
                };
                for record in &records {
                    let output = filter.apply(record).await?;
                    let key = record.key.clone();
                    let sent =
                        Record { key: key.clone(), value: Some(output.into_bytes().into()), ..Default::default() };
                    let result = match key {
                        Some(_) => producer.send(&args.to, sent).await,
                        // Keyless: the input's partition number, so order holds per partition.
                        None => producer.send_to(&args.to, record.partition % out_partitions, sent),
                    };
                    result.map_err(|e| anyhow::anyhow!("{e}"))?;
                    progress.next.insert((record.topic.clone(), record.partition), record.offset + 1);
                    progress.epoch.get_or_insert(consumer.member_epoch());
                }
            }
            if stopping {
                // Nothing partial: what this transaction read is read again
                // by the next run.
                let _ = producer.abort().await;
                return Ok(());
            }
            filter.check_no_extra_line().await?;
            match commit(&mut producer, &consumer, &progress).await {
                Ok(()) => {}
                Err(error) if error.is_fatal() => return Err(anyhow::anyhow!("{error}")),
                Err(error) => {
                    tracing::warn!(%error, "transaction aborted; reading its partitions again from their commits");
                    producer.abort().await.map_err(|e| anyhow::anyhow!("{e}"))?;
                    rewind(&client, &mut consumer, &args.group, &progress).await?;
                }
            }
        }
    }
    .await;
    if outcome.is_err() {
        let _ = producer.abort().await;
    }
    let _ = filter.child.start_kill();
    let left = consumer.close().await.map_err(explain);
    outcome?;
    left?;
    Ok(ExitCode::SUCCESS)
}

/// Commits the transaction: stages the offsets read (at the epoch they were
/// read at) and ends it. Nothing read: nothing to commit.
async fn commit(
    producer: &mut TransactionalProducer,
    consumer: &GroupConsumer,
    progress: &Progress,
) -> Result<(), TransactionError> {
    if let Some(epoch) = progress.epoch {
        let offsets = progress.offsets();
        producer.send_offsets_for(consumer.group_id(), &consumer.member_id(), epoch, &offsets).await?;
    }
    producer.commit().await
}

/// After an abort: moves every partition the transaction read back to its
/// committed offset (or the log start when it has none).
async fn rewind(client: &Client, consumer: &mut GroupConsumer, group: &str, progress: &Progress) -> anyhow::Result<()> {
    for (topic, partition) in progress.next.keys() {
        let wanted = [(topic.clone(), [*partition].into())].into();
        let fetched = client.fetch_offsets(group, &wanted).await.map_err(explain)?;
        let committed = fetched.first().and_then(|f| f.committed.as_ref()).map(|c| c.offset);
        let offset = match committed {
            Some(offset) => offset,
            None => {
                let listed = client.list_offsets(topic, *partition, strata_client::OffsetSpec::Earliest).await;
                listed.map_err(explain)?.offset
            }
        };
        // A partition that moved to another member is simply not ours.
        consumer.seek(topic, *partition, offset);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        pipe: PipeArgs,
    }

    #[test]
    fn the_command_comes_after_the_double_dash() {
        let cli = Cli::try_parse_from(["x", "--from", "a", "--to", "b", "--group", "g", "--", "sed", "-u", "s/x/y/"])
            .unwrap();
        assert_eq!(cli.pipe.command, ["sed", "-u", "s/x/y/"]);
        assert_eq!(cli.pipe.commit_interval, Duration::from_millis(100));
        assert!(Cli::try_parse_from(["x", "--from", "a", "--to", "b", "--group", "g"]).is_err(), "a command is needed");
        let zero = Cli::try_parse_from([
            "x",
            "--from",
            "a",
            "--to",
            "b",
            "--group",
            "g",
            "--commit-interval",
            "0s",
            "--",
            "cat",
        ]);
        assert!(zero.is_err());
        assert_eq!(transactional_id("g", "host-1"), "pipe-g-host-1");
    }
}
