//! `strata-docker-faults`: the load and the checker of the Docker fault test
//! (`scripts/docker-faults.sh`, which injects the faults).
//!
//! From the host, through the compose cluster's published ports, it creates
//! a topic, produces numbered records (the value is the number in decimal)
//! with acks=all and an idempotent producer, at a steady rate to every
//! partition in turn, and notes when each acknowledgement arrives. Once
//! every partition has an acknowledgement it writes the ready file (the
//! script then starts its faults, noting each start in the fault file). It
//! rewrites the progress file as it goes (so that the script can start each
//! fault only while every partition is being acknowledged, and a stall is
//! measured in the window of the fault that caused it). It
//! stops `--tail` seconds after the stop file appears, or after `--duration`
//! seconds in any case, waits (bounded) for the answers still out, reads
//! every partition back from offset 0 and checks:
//! - no acknowledged record is lost or stored elsewhere than its
//!   acknowledgement said, none is stored twice, nothing foreign is stored;
//! - after each fault, the longest time any partition went without an
//!   acknowledgement is within the fault's bound (from the fault file).
//!
//! It prints a JSON summary (and writes it to `--out`). Exit status: 0 every
//! check passed, 1 a check failed, 2 the run itself failed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use serde::Serialize;
use strata_client::{
    now_ms, Bytes, Client, ClientError, Consumer, ErrorCode, OffsetSpec, Producer, ProducerConfig, Record,
    RecordMetadata, StartOffset,
};
use strata_jepsen::faultcheck::{self, FaultReport, RecordCheck, Sent, Stored};

#[derive(Parser, Debug)]
#[command(
    name = "strata-docker-faults",
    about = "Load and checker of the Docker fault test (scripts/docker-faults.sh)"
)]
struct Args {
    /// Nodes to bootstrap through, comma separated (the compose file's published ports).
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:7171,127.0.0.1:7172,127.0.0.1:7173")]
    bootstrap: Vec<String>,
    /// The topic to create and write; it must not exist yet.
    #[arg(long, default_value = "faults")]
    topic: String,
    #[arg(long, default_value_t = 6)]
    partitions: u32,
    #[arg(long, default_value_t = 3)]
    replication_factor: u32,
    /// Records per second, sent to the partitions in turn.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Longest the load runs, seconds; it stops then even without the stop file.
    #[arg(long, default_value_t = 240)]
    duration: u64,
    /// The load stops `--tail` seconds after this file appears.
    #[arg(long)]
    stop_file: Option<PathBuf>,
    /// Seconds the load goes on after the stop file appears, so that the
    /// last fault's window ends with acknowledgements of a healthy cluster.
    #[arg(long, default_value_t = 2)]
    tail: u64,
    /// Written once every partition has an acknowledgement: faults may start.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Rewritten every 100 ms while the load runs: the oldest of the
    /// partitions' latest acknowledgement times (ms since the Unix epoch;
    /// 0 while some partition has none), i.e. when the partition that went
    /// longest without one was last acknowledged.
    #[arg(long)]
    progress_file: Option<PathBuf>,
    /// The faults' start times, read when the load has ended: one a line,
    /// `START_MS NAME BOUND_MS` (ms since the Unix epoch; BOUND_MS the
    /// longest acknowledgement gap allowed after it, or `-`).
    #[arg(long)]
    faults: Option<PathBuf>,
    /// Seconds to wait for the answers still out once the load stops.
    #[arg(long, default_value_t = 60)]
    settle: u64,
    /// Seconds the read back of every partition may take.
    #[arg(long, default_value_t = 60)]
    read_timeout: u64,
    /// Also write the JSON summary to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// How long the topic's partitions may take to elect leaders after the
/// create: about a second on a healthy cluster; 30 s means it is not one.
const LEADERS_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the load looks for the stop file and whether it is ready:
/// fine enough next to fault timings measured in seconds.
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// Distinct error messages kept in the summary, with their counts: enough to
/// see what the producer met, bounded when messages vary.
const ERROR_KINDS: usize = 20;

/// How long one fetch of the read back waits for records.
const READ_POLL_WAIT: Duration = Duration::from_millis(500);

/// What became of each record sent, by number.
#[derive(Clone, Debug)]
enum Outcome {
    Pending,
    Acked { offset: u64, at_ms: i64 },
    Failed,
}

#[derive(Default)]
struct State {
    outcomes: Vec<Outcome>,
    acked_per_partition: BTreeMap<u32, u64>,
    /// Each partition's latest acknowledgement time (ms since the Unix epoch).
    last_ack_ms: BTreeMap<u32, i64>,
    errors: BTreeMap<String, u64>,
}

impl State {
    fn fail(&mut self, number: u64, error: &ClientError) {
        self.outcomes[number as usize] = Outcome::Failed;
        let message = error.to_string();
        let message: String = message.chars().take(160).collect();
        if let Some(count) = self.errors.get_mut(&message) {
            *count += 1;
        } else if self.errors.len() < ERROR_KINDS {
            self.errors.insert(message, 1);
        } else {
            *self.errors.entry("(other errors)".into()).or_default() += 1;
        }
    }

    fn resolve(&mut self, number: u64, result: Result<RecordMetadata, ClientError>, at_ms: i64) {
        match result {
            Ok(RecordMetadata { partition, offset: Some(offset), .. }) => {
                self.outcomes[number as usize] = Outcome::Acked { offset, at_ms };
                *self.acked_per_partition.entry(partition).or_default() += 1;
                let last = self.last_ack_ms.entry(partition).or_insert(at_ms);
                *last = (*last).max(at_ms);
            }
            Ok(RecordMetadata { offset: None, .. }) => {
                self.fail(number, &ClientError::InvalidArgument("acknowledged without an offset".into()))
            }
            Err(error) => self.fail(number, &error),
        }
    }
}

/// A partition the read back did not read to its end.
#[derive(Serialize)]
struct ReadShort {
    partition: u32,
    reached: u64,
    target: u64,
}

#[derive(Serialize)]
struct Summary {
    ok: bool,
    /// What failed, one line each; empty when `ok`.
    failures: Vec<String>,
    topic: String,
    partitions: u32,
    replication_factor: u32,
    rate: u32,
    load_start_ms: i64,
    /// When every partition had an acknowledgement (the ready file).
    ready_ms: Option<i64>,
    load_end_ms: i64,
    /// `stop-file` or `duration`.
    stopped_by: &'static str,
    /// Records with no answer yet when the settle time ran out.
    unanswered: u64,
    records: RecordCheck,
    /// What the producer's failed records met, with counts.
    errors: BTreeMap<String, u64>,
    read_short: Vec<ReadShort>,
    /// The longest acknowledgement gap between ready and the first fault: what a healthy cluster shows.
    longest_ack_gap_before_faults_ms: Option<u64>,
    faults: Vec<FaultReport>,
}

fn main() -> ExitCode {
    strata_jepsen::init_logging();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("strata-docker-faults: error: cannot start the runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let outcome = runtime.block_on(async {
        tokio::select! {
            result = run(&args) => Some(result),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(5));
    match outcome {
        None => {
            eprintln!("strata-docker-faults: interrupted");
            ExitCode::from(2)
        }
        Some(Err(error)) => {
            eprintln!("strata-docker-faults: error: the run failed: {error:#}");
            ExitCode::from(2)
        }
        Some(Ok(summary)) => match report(&args, &summary) {
            Ok(()) if summary.ok => ExitCode::SUCCESS,
            Ok(()) => ExitCode::from(1),
            Err(error) => {
                eprintln!("strata-docker-faults: error: {error:#}");
                ExitCode::from(2)
            }
        },
    }
}

fn report(args: &Args, summary: &Summary) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(summary)?;
    println!("{json}");
    if let Some(out) = &args.out {
        std::fs::write(out, format!("{json}\n")).with_context(|| format!("writing {}", out.display()))?;
    }
    for failure in &summary.failures {
        eprintln!("strata-docker-faults: FAILED: {failure}");
    }
    Ok(())
}

/// Writes `text` to `path` whole: to a temporary file first, then renamed,
/// so a reader polling for the file never sees it half written.
fn write_whole(path: &Path, text: &str) -> anyhow::Result<()> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text).with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("renaming {} to {}", temporary.display(), path.display()))
}

async fn run(args: &Args) -> anyhow::Result<Summary> {
    if args.partitions == 0 || args.rate == 0 {
        bail!("--partitions and --rate must be at least 1");
    }
    let client = Client::connect(&args.bootstrap).context("bad --bootstrap")?;
    match client.create_topic(&args.topic, args.partitions, args.replication_factor, BTreeMap::new()).await {
        Ok(_) => {}
        Err(error) if error.code() == Some(ErrorCode::TopicAlreadyExists) => {
            bail!("topic '{}' exists already: the load numbers records from 0 and needs a new topic", args.topic)
        }
        Err(error) => return Err(error).context(format!("creating topic '{}'", args.topic)),
    }
    let leaders = strata_testkit::poll_until(LEADERS_TIMEOUT, || async {
        let metadata = client.refresh_metadata().await.ok()?;
        let topic = metadata.topic(&args.topic)?;
        topic.partitions.iter().all(|p| p.leader.is_some()).then_some(())
    })
    .await;
    if leaders.is_none() {
        bail!(
            "topic '{}' has partitions without a leader {} s after its creation",
            args.topic,
            LEADERS_TIMEOUT.as_secs()
        );
    }

    let producer = Producer::new(client.clone(), ProducerConfig::default()).context("starting the producer")?;
    let state = Arc::new(Mutex::new(State::default()));
    let load_start_ms = now_ms();
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rate)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut next_check = Instant::now();
    let mut ready_ms = None;
    let mut stop_at: Option<Instant> = None;
    let mut stopped_by = "duration";
    let deadline = started + Duration::from_secs(args.duration);
    loop {
        ticker.tick().await;
        let now = Instant::now();
        if now >= deadline || stop_at.is_some_and(|at| now >= at) {
            break;
        }
        if now >= next_check {
            next_check = now + CHECK_EVERY;
            if ready_ms.is_none() {
                let acked = state.lock().expect("state lock").acked_per_partition.len() as u32;
                if acked == args.partitions {
                    let at = now_ms();
                    ready_ms = Some(at);
                    if let Some(path) = &args.ready_file {
                        write_whole(path, &format!("{at}\n"))?;
                    }
                }
            }
            if let Some(path) = &args.progress_file {
                let oldest = {
                    let state = state.lock().expect("state lock");
                    if state.last_ack_ms.len() as u32 == args.partitions {
                        state.last_ack_ms.values().copied().min().unwrap_or(0)
                    } else {
                        0
                    }
                };
                write_whole(path, &format!("{oldest}\n"))?;
            }
            if stop_at.is_none() && args.stop_file.as_deref().is_some_and(Path::exists) {
                stop_at = Some(now + Duration::from_secs(args.tail));
                stopped_by = "stop-file";
            }
        }
        let number = {
            let mut state = state.lock().expect("state lock");
            state.outcomes.push(Outcome::Pending);
            state.outcomes.len() as u64 - 1
        };
        let partition = (number % u64::from(args.partitions)) as u32;
        let record = Record { value: Some(Bytes::from(number.to_string())), ..Record::default() };
        match producer.send_to(&args.topic, partition, record).await {
            Ok(delivery) => {
                let state = state.clone();
                tokio::spawn(async move {
                    let result = delivery.await;
                    let at_ms = now_ms();
                    state.lock().expect("state lock").resolve(number, result, at_ms);
                });
            }
            Err(error) => state.lock().expect("state lock").fail(number, &error),
        }
    }
    let load_end_ms = now_ms();
    let sent_count = state.lock().expect("state lock").outcomes.len();
    eprintln!(
        "strata-docker-faults: load stopped ({stopped_by}) after {:.1} s and {sent_count} records; waiting for answers",
        started.elapsed().as_secs_f64()
    );
    let settled = tokio::time::timeout(Duration::from_secs(args.settle), producer.flush()).await.is_ok();
    let (sent, unanswered, errors) = {
        let state = state.lock().expect("state lock");
        let mut unanswered = 0;
        let sent: Vec<Sent> = state
            .outcomes
            .iter()
            .enumerate()
            .map(|(number, outcome)| Sent {
                number: number as u64,
                partition: (number as u64 % u64::from(args.partitions)) as u32,
                ack: match *outcome {
                    Outcome::Acked { offset, at_ms } => Some((offset, at_ms)),
                    Outcome::Pending => {
                        unanswered += 1;
                        None
                    }
                    Outcome::Failed => None,
                },
            })
            .collect();
        (sent, unanswered, state.errors.clone())
    };

    let mut failures = Vec::new();
    if !settled {
        failures.push(format!("{unanswered} records had no answer {} s after the load stopped", args.settle));
    }
    if stopped_by == "duration" && args.stop_file.is_some() {
        failures.push(format!("the stop file did not appear within --duration ({} s)", args.duration));
    }
    if ready_ms.is_none() {
        failures.push("no acknowledgement came from some partition: the load never got ready".into());
    }

    // Read every partition back, up to its high watermark or past its highest acknowledged offset.
    let mut targets: BTreeMap<u32, u64> = (0..args.partitions).map(|p| (p, 0)).collect();
    for record in &sent {
        if let Some((offset, _)) = record.ack {
            let target = targets.entry(record.partition).or_default();
            *target = (*target).max(offset + 1);
        }
    }
    let read_deadline = Instant::now() + Duration::from_secs(args.read_timeout);
    let (stored, read_short) = read_back(&client, &args.topic, &mut targets, read_deadline).await;
    for short in &read_short {
        failures.push(format!(
            "partition {} read back to offset {} only, not {} within {} s",
            short.partition, short.reached, short.target, args.read_timeout
        ));
    }
    let records = faultcheck::check_records(&sent, &stored);
    if records.lost > 0 {
        failures.push(format!("{} acknowledged records lost (e.g. {:?})", records.lost, records.lost_examples));
    }
    if records.misplaced > 0 {
        failures.push(format!(
            "{} acknowledged records not at their acknowledged offset (number, acknowledged, found: {:?})",
            records.misplaced, records.misplaced_examples
        ));
    }
    if records.duplicated > 0 {
        failures.push(format!(
            "{} records stored twice despite the idempotent producer (e.g. {:?})",
            records.duplicated, records.duplicated_examples
        ));
    }
    if records.unexpected > 0 {
        failures.push(format!(
            "{} records stored that this load did not send there (partition, offset: {:?})",
            records.unexpected, records.unexpected_examples
        ));
    }

    let faults = match &args.faults {
        None => Vec::new(),
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading the fault file {}", path.display()))?;
            faultcheck::parse_faults(&text).map_err(anyhow::Error::msg)?
        }
    };
    let acks = faultcheck::ack_times(&sent, args.partitions);
    let reports = faultcheck::fault_gaps(&faults, &acks, load_end_ms);
    for fault in reports.iter().filter(|f| !f.ok) {
        match fault.bound_ms {
            _ if fault.start_ms >= load_end_ms => {
                failures.push(format!("fault {} started after the load ended: nothing measured it", fault.name))
            }
            Some(bound) => failures.push(format!(
                "after fault {}, partition {} went {} ms without an acknowledgement (bound {bound} ms)",
                fault.name,
                fault.gap_partition.map_or("?".into(), |p| p.to_string()),
                fault.longest_ack_gap_ms
            )),
            None => failures.push(format!("fault {}: no partition to measure", fault.name)),
        }
    }
    for fault in &reports {
        eprintln!(
            "strata-docker-faults: fault {}: longest acknowledgement gap {} ms (partition {}, from {} ms after the start), \
             bound {}; stalled {} ms at the start",
            fault.name,
            fault.longest_ack_gap_ms,
            fault.gap_partition.map_or("-".into(), |p| p.to_string()),
            fault.gap_began_after_ms.map_or("-".into(), |ms| ms.to_string()),
            fault.bound_ms.map_or("none".into(), |ms| format!("{ms} ms")),
            fault.stalled_at_start_ms.map_or("?".into(), |ms| ms.to_string()),
        );
    }
    let first_fault_ms = faults.first().map_or(load_end_ms, |f| f.start_ms);
    let longest_ack_gap_before_faults_ms =
        ready_ms.and_then(|ready| faultcheck::longest_gap(&acks, ready, first_fault_ms.max(ready))).map(|g| g.ms());

    Ok(Summary {
        ok: failures.is_empty(),
        failures,
        topic: args.topic.clone(),
        partitions: args.partitions,
        replication_factor: args.replication_factor,
        rate: args.rate,
        load_start_ms,
        ready_ms,
        load_end_ms,
        stopped_by,
        unanswered,
        records,
        errors,
        read_short,
        longest_ack_gap_before_faults_ms,
        faults: reports,
    })
}

/// Reads every partition from offset 0 up to at least its target (raised
/// to the high watermark), until done or the deadline. Returns the records
/// read and the partitions left short.
async fn read_back(
    client: &Client,
    topic: &str,
    targets: &mut BTreeMap<u32, u64>,
    deadline: Instant,
) -> (Vec<Stored>, Vec<ReadShort>) {
    for (&partition, target) in targets.iter_mut() {
        while Instant::now() < deadline {
            match client.list_offsets(topic, partition, OffsetSpec::Latest).await {
                Ok(listed) => {
                    *target = (*target).max(listed.high_watermark);
                    break;
                }
                Err(_) => tokio::time::sleep(CHECK_EVERY).await,
            }
        }
    }
    let mut consumer = Consumer::new(client.clone());
    for &partition in targets.keys() {
        // An explicit offset needs only the topic's metadata; the topic has
        // no retention, so its log starts at 0.
        while Instant::now() < deadline {
            match consumer.assign(topic, partition, StartOffset::Offset(0)).await {
                Ok(_) => break,
                Err(_) => tokio::time::sleep(CHECK_EVERY).await,
            }
        }
    }
    let mut stored = Vec::new();
    let done = |consumer: &Consumer| targets.iter().all(|(&p, &t)| consumer.position(topic, p).unwrap_or(0) >= t);
    while !done(&consumer) && Instant::now() < deadline {
        let wait = READ_POLL_WAIT.min(deadline.saturating_duration_since(Instant::now()));
        // A failed poll backs the partition off inside the consumer; the loop asks again.
        if let Ok(records) = consumer.poll(wait).await {
            stored.extend(records.into_iter().map(|r| Stored {
                partition: r.partition,
                offset: r.offset,
                number: r.value.as_deref().and_then(|v| std::str::from_utf8(v).ok()).and_then(|v| v.parse().ok()),
            }));
        }
    }
    let short = targets
        .iter()
        .map(|(&partition, &target)| ReadShort {
            partition,
            reached: consumer.position(topic, partition).unwrap_or(0),
            target,
        })
        .filter(|s| s.reached < s.target)
        .collect();
    (stored, short)
}
