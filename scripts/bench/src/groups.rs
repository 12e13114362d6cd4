//! The consumer group workloads (issue 14, "Performance"):
//! - G1: how long a group of 10 members over 100 partitions takes to be
//!   stable again after one more member joins, and after it leaves, in
//!   heartbeat intervals (the members are loops of `group_heartbeat` calls
//!   that give revoked partitions up at once, as the protocol asks);
//! - G2: standalone offset commits of many partitions each from many
//!   concurrent committers (offsets/s and commit latency), and topic
//!   creation latency alone and while they run (both go through the
//!   metadata group);
//! - G3: 4 members of one group consume a 12-partition topic while the
//!   load generator offers a fixed rate: records/s and end-to-end latency,
//!   beside NATS JetStream (4 pull subscribers of one durable consumer of
//!   one R3 stream) and RabbitMQ (4 consumers of one quorum queue).
//!
//! G1 and G2 run on Strata only; G3 on Strata, RabbitMQ and NATS (etcd has
//! nothing like a consumer group).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use strata_client::{
    Client, ClientError, GroupConsumer, GroupConsumerConfig, GroupDescription, GroupHeartbeat, GroupState, OffsetReset,
    OffsetToCommit, TopicPartitions, JOIN_EPOCH, LEAVE_EPOCH,
};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::args::Timing;
use crate::load::{self, Readers};
use crate::phases::{resources, OPEN_LOOP_WINDOW};
use crate::procs::{self, wait_for};
use crate::report::{CommitsResult, RebalanceResult, Timings, WorkloadResult};
use crate::sinks::{ClientSettings, SystemSink};
use crate::systems::{self, rabbit_queue, Cluster, System};

/// G1's group and topic: the sizes issue 14 names.
pub const G1_MEMBERS: usize = 10;
pub const G1_PARTITIONS: u32 = 100;
const G1_TOPIC: &str = "g1";
const G1_GROUP: &str = "g1";

/// Joins measured in G1, and as many leaves: each takes up to about two
/// heartbeat intervals (6 s at the default), so 3 keep quick mode within
/// a minute and 8 give the full mode a steadier median.
fn g1_rounds(quick: bool) -> usize {
    if quick {
        3
    } else {
        8
    }
}

/// How often G1 asks `describe_group` whether the group is stable: 1/30 of
/// the default heartbeat interval, fine enough for a figure reported in
/// intervals, and ten reads a second cost the metadata leader little.
const G1_POLL_EVERY: Duration = Duration::from_millis(100);

/// A G1 rebalance that takes this many heartbeat intervals failed: five
/// times the target, so a slow run is still measured rather than cut off.
const G1_TIMEOUT_INTERVALS: u32 = 10;

/// How long the 10 members may take to form a stable group in the first
/// place (each join is a rebalance of its own).
const G1_FORMATION_TIMEOUT: Duration = Duration::from_secs(180);

/// G2's committers: each has one commit in flight at a time for a group of
/// its own without members (standalone commits, as admin tools and manual
/// assignment make). 16 are enough to keep the metadata group's pipeline
/// full on this machine without the client side taking the cores.
pub const G2_COMMITTERS: usize = 16;
/// Partitions of G2's topic: every commit carries an offset for each, as a
/// consumer reading a whole topic commits.
pub const G2_PARTITIONS: u32 = 100;
const G2_TOPIC: &str = "g2";
/// Records written to each G2 partition before the commits: a commit past
/// the high watermark is refused, and offsets go up by one per commit to
/// this (then stay).
const G2_PREFILL_RECORDS: usize = 1000;
/// Bytes of each prefill record: only the offsets matter.
const G2_PREFILL_RECORD_BYTES: usize = 16;
/// How long the prefill may take.
const G2_PREFILL_TIMEOUT: Duration = Duration::from_secs(30);
/// Topics created alone, then as many spread over the commit window; each
/// with 3 partitions, a small topic's size.
const G2_TOPIC_CREATES: usize = 5;
const G2_CREATE_PARTITIONS: u32 = 3;
/// From fixing G2's clock to its committers' first commit.
const G2_LEAD_IN: Duration = Duration::from_millis(50);

/// G3's label among each system's workloads.
pub const G3_LABEL: &str = "G3";
/// G3's consumers and partitions (issue 14), and its producers.
pub const G3_MEMBERS: usize = 4;
pub const G3_PARTITIONS: u32 = 12;
const G3_PRODUCERS: usize = 4;
/// G3's offered rate, 1 KiB records: a quarter of what the weakest
/// fsync-class peer took at max rate in earlier runs (W2, 6 queues), so
/// that one quorum queue can carry it and the figures compare consumers,
/// not saturated brokers.
pub const G3_RATE: f64 = 1000.0;
const G3_TOPIC: &str = "g3";
const G3_GROUP: &str = "g3";
/// NATS's stream of G3 (its subjects are `g3.<partition>`).
const G3_NATS_STREAM: &str = "G3";
/// Messages a RabbitMQ consumer may hold unacknowledged, and a NATS pull
/// subscriber asks for at once: deep enough that neither waits on a round
/// trip per message at this rate.
const G3_PREFETCH: u16 = 256;
/// How long one poll of a Strata member waits for records.
const G3_POLL_WAIT: Duration = Duration::from_millis(100);
/// How long G3's consumers may take to be ready before the load starts.
const G3_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a consumer may take to stop (a Strata member commits and
/// leaves) once the run is over.
const G3_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How the consumers of G3 read, per system, for the report.
pub fn g3_how(system: System) -> &'static str {
    match system {
        System::Strata => "4 GroupConsumers of one group, 12 partitions, auto-commit every 5 s",
        System::Nats => "4 pull subscribers of one durable consumer of one R3 file stream, each message acked",
        System::Rabbitmq => "4 consumers of one quorum queue, prefetch 256, each message acked",
        System::Etcd => "none (etcd has no consumer groups)",
    }
}

/// Failures of a workload's background tasks: how many, and the first.
#[derive(Default)]
struct ErrorTally {
    count: AtomicU64,
    first: Mutex<Option<String>>,
}

impl ErrorTally {
    fn add(&self, error: impl std::fmt::Display) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.first.lock().expect("error tally").get_or_insert_with(|| format!("{error:#}"));
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn first(&self) -> Option<String> {
        self.first.lock().expect("error tally").clone()
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

// ---- G1 -------------------------------------------------------------------

/// A member of G1's group: a task that heartbeats at the group's interval.
struct Member {
    /// The heartbeat interval of the join's answer.
    interval: Duration,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Member {
    /// Joins (one request), then heartbeats in the background.
    async fn join(cluster: &Cluster, errors: Arc<ErrorTally>) -> anyhow::Result<Member> {
        let client = Client::connect(&cluster.endpoints)?;
        let answer = client.group_heartbeat(&GroupHeartbeat::join(G1_GROUP, &[G1_TOPIC])).await.context("join")?;
        let (stop, stopped) = oneshot::channel();
        let interval = answer.heartbeat_interval;
        let state = MemberState {
            member_id: answer.member_id,
            epoch: answer.member_epoch,
            interval: answer.heartbeat_interval,
            owned: answer.assignment,
        };
        let task = tokio::spawn(heartbeats(client, state, stopped, errors));
        Ok(Member { interval, stop: Some(stop), task })
    }

    /// Stops heartbeating and leaves the group (one request).
    async fn leave(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.context("member task")?
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct MemberState {
    member_id: String,
    epoch: i32,
    interval: Duration,
    owned: TopicPartitions,
}

/// Whether `owned` holds a partition that `assignment` does not.
fn loses_any(owned: &TopicPartitions, assignment: &TopicPartitions) -> bool {
    owned
        .iter()
        .any(|(topic, partitions)| partitions.iter().any(|p| !assignment.get(topic).is_some_and(|a| a.contains(p))))
}

fn is_fencing(error: &ClientError) -> bool {
    matches!(
        error.code(),
        Some(strata_client::ErrorCode::FencedMemberEpoch | strata_client::ErrorCode::UnknownMemberId)
    )
}

/// One member's heartbeats: every interval after the previous one was
/// sent, listing what it owns; at once again when an answer took
/// partitions away (it gives them up at once). A fenced member rejoins.
/// On `stop` it leaves.
async fn heartbeats(
    client: Client,
    mut state: MemberState,
    mut stop: oneshot::Receiver<()>,
    errors: Arc<ErrorTally>,
) -> anyhow::Result<()> {
    let mut next = Instant::now() + state.interval;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep_until(next.into()) => {}
        }
        let beat = if state.epoch == JOIN_EPOCH {
            GroupHeartbeat::join(G1_GROUP, &[G1_TOPIC])
        } else {
            GroupHeartbeat {
                group_id: G1_GROUP.to_string(),
                member_id: state.member_id.clone(),
                member_epoch: state.epoch,
                owned_partitions: Some(state.owned.clone()),
                ..Default::default()
            }
        };
        let sent = Instant::now();
        match client.group_heartbeat(&beat).await {
            Ok(answer) => {
                let gave_up = loses_any(&state.owned, &answer.assignment);
                state = MemberState {
                    member_id: answer.member_id,
                    epoch: answer.member_epoch,
                    interval: answer.heartbeat_interval,
                    owned: answer.assignment,
                };
                next = if gave_up { Instant::now() } else { sent + state.interval };
            }
            Err(error) => {
                if is_fencing(&error) {
                    state.owned.clear();
                    state.epoch = JOIN_EPOCH;
                }
                errors.add(error);
                next = Instant::now() + state.interval;
            }
        }
    }
    if state.epoch != JOIN_EPOCH {
        let leave = GroupHeartbeat {
            group_id: G1_GROUP.to_string(),
            member_id: state.member_id,
            member_epoch: LEAVE_EPOCH,
            ..Default::default()
        };
        client.group_heartbeat(&leave).await.context("leave")?;
    }
    Ok(())
}

/// Waits until `group` is Stable with `members` members and every one of
/// `partitions` partitions of `topic` owned, asking every G1_POLL_EVERY.
async fn wait_stable(
    client: &Client,
    group: &str,
    topic: &str,
    members: usize,
    partitions: u32,
    timeout: Duration,
) -> anyhow::Result<GroupDescription> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match client.describe_group(group).await {
            Ok(d) => {
                let owned = d.partitions.iter().filter(|p| p.topic == topic && p.owner.is_some()).count();
                if d.state == GroupState::Stable && d.members.len() == members && owned == partitions as usize {
                    return Ok(d);
                }
                format!("{:?} with {} members, {owned} of {partitions} partitions owned", d.state, d.members.len())
            }
            Err(error) => error.to_string(),
        };
        anyhow::ensure!(Instant::now() < deadline, "group {group} not stable within {timeout:?}: {last}");
        tokio::time::sleep(G1_POLL_EVERY).await;
    }
}

/// G1: 10 members form a group over 100 partitions; then, again and again,
/// an 11th joins and later leaves, each timed to a stable group.
pub async fn g1(cluster: &Cluster, quick: bool) -> anyhow::Result<RebalanceResult> {
    systems::create_topic(cluster, G1_TOPIC, G1_PARTITIONS).await.context("create the G1 topic")?;
    let client = Client::connect(&cluster.endpoints)?;
    let errors = Arc::new(ErrorTally::default());
    let started = Instant::now();
    // The members join spread over one heartbeat interval, so their
    // heartbeats are spread over it too, as those of members started at
    // different times are (in step, a join would always wait one interval).
    let mut members: Vec<Member> = Vec::new();
    for index in 0..G1_MEMBERS {
        if let Some(first) = members.first() {
            let spacing = first.interval / G1_MEMBERS as u32;
            tokio::time::sleep_until((started + spacing * index as u32).into()).await;
        }
        members.push(Member::join(cluster, errors.clone()).await?);
    }
    let formed = wait_stable(&client, G1_GROUP, G1_TOPIC, G1_MEMBERS, G1_PARTITIONS, G1_FORMATION_TIMEOUT).await?;
    let formation_ms = ms(started.elapsed());
    let interval = formed.heartbeat_interval;
    let timeout = interval * G1_TIMEOUT_INTERVALS;
    let (mut joins, mut leaves) = (Vec::new(), Vec::new());
    for _ in 0..g1_rounds(quick) {
        let joined = Instant::now();
        let extra = Member::join(cluster, errors.clone()).await?;
        wait_stable(&client, G1_GROUP, G1_TOPIC, G1_MEMBERS + 1, G1_PARTITIONS, timeout)
            .await
            .context("after a join")?;
        joins.push(ms(joined.elapsed()));
        let left = Instant::now();
        extra.leave().await?;
        wait_stable(&client, G1_GROUP, G1_TOPIC, G1_MEMBERS, G1_PARTITIONS, timeout).await.context("after a leave")?;
        leaves.push(ms(left.elapsed()));
        eprintln!(
            "  G1: join {:.0} ms, leave {:.0} ms (heartbeat interval {:.0} ms)",
            joins.last().unwrap_or(&0.0),
            leaves.last().unwrap_or(&0.0),
            ms(interval)
        );
    }
    for member in members {
        if let Err(error) = member.leave().await {
            errors.add(error);
        }
    }
    Ok(RebalanceResult {
        members: G1_MEMBERS,
        partitions: G1_PARTITIONS,
        heartbeat_interval_ms: ms(interval),
        poll_every_ms: ms(G1_POLL_EVERY),
        formation_ms,
        join: Timings::of(joins),
        leave: Timings::of(leaves),
        heartbeat_errors: errors.count(),
        first_error: errors.first(),
    })
}

// ---- G2 -------------------------------------------------------------------

/// Writes G2_PREFILL_RECORDS small records to every partition of G2's
/// topic, one batch each, so that commits have offsets to go up to.
async fn prefill(client: &Client) -> anyhow::Result<()> {
    let records: Vec<strata_client::Record> = (0..G2_PREFILL_RECORDS)
        .map(|i| strata_client::Record {
            value: Some(strata_client::Bytes::from((i as u128).to_le_bytes()[..G2_PREFILL_RECORD_BYTES].to_vec())),
            timestamp_ms: strata_client::now_ms(),
            ..Default::default()
        })
        .collect();
    let batch = strata_client::batch::encode_batch(&records, strata_client::batch::ProducerFields::default())
        .map_err(|e| anyhow::anyhow!("encode the prefill batch: {e}"))?;
    let writes = (0..G2_PARTITIONS).map(|partition| {
        client.produce_batch(G2_TOPIC, partition, batch.clone(), strata_client::Acks::All, G2_PREFILL_TIMEOUT)
    });
    futures::future::try_join_all(writes).await.context("prefill G2's partitions")?;
    Ok(())
}

/// Creates `count` topics one at a time, the i-th not before `spread.0 + i
/// × spread.1` when spread over a window; the request-to-answer times, ms.
async fn create_topics(
    client: Client,
    prefix: &'static str,
    count: usize,
    spread: Option<(Instant, Duration)>,
) -> anyhow::Result<Vec<f64>> {
    let mut samples = Vec::new();
    for index in 0..count {
        if let Some((start, every)) = spread {
            tokio::time::sleep_until((start + every * index as u32).into()).await;
        }
        let started = Instant::now();
        client
            .create_topic(&format!("{prefix}-{index}"), G2_CREATE_PARTITIONS, 3, Default::default())
            .await
            .with_context(|| format!("create {prefix}-{index}"))?;
        samples.push(ms(started.elapsed()));
    }
    Ok(samples)
}

/// What G2's committers measured together.
#[derive(Default)]
struct CommitTally {
    latencies_ms: Vec<f64>,
    commits: u64,
    offsets: u64,
}

/// G2's measured window.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    measure_from: Instant,
    end: Instant,
}

impl Window {
    fn contains(&self, at: Instant) -> bool {
        at >= self.measure_from && at < self.end
    }
}

/// One committer: commits every partition of G2's topic for `group`, one
/// commit at a time, from the window's start to its end; commit k stores
/// offset min(k, G2_PREFILL_RECORDS) for each partition.
async fn committer(
    client: Client,
    group: String,
    window: Window,
    tally: Arc<Mutex<CommitTally>>,
    errors: Arc<ErrorTally>,
) {
    tokio::time::sleep_until(window.start.into()).await;
    let mut round = 0u64;
    while Instant::now() < window.end {
        round += 1;
        let offset = round.min(G2_PREFILL_RECORDS as u64);
        let offsets: Vec<OffsetToCommit> = (0..G2_PARTITIONS)
            .map(|partition| OffsetToCommit { topic: G2_TOPIC.to_string(), partition, offset, metadata: String::new() })
            .collect();
        let sent = Instant::now();
        // Standalone: no member id, epoch -1.
        let answer = client.commit_offsets(&group, "", LEAVE_EPOCH, &offsets).await;
        let done = Instant::now();
        match answer {
            Ok(results) => {
                let mut stored = 0;
                for result in results {
                    match result.error {
                        None => stored += 1,
                        Some(error) => errors.add(format!("{}/{}: {error}", result.topic, result.partition)),
                    }
                }
                let mut tally = tally.lock().expect("commit tally");
                if window.contains(sent) {
                    tally.latencies_ms.push(ms(done - sent));
                }
                if window.contains(done) {
                    tally.commits += 1;
                    tally.offsets += stored;
                }
            }
            Err(error) => errors.add(error),
        }
    }
}

/// G2: topic creation alone; then 16 committers of 100 offsets each, closed
/// loop, with topics created one at a time over the window.
pub async fn g2(cluster: &Cluster, timing: &Timing) -> anyhow::Result<CommitsResult> {
    systems::create_topic(cluster, G2_TOPIC, G2_PARTITIONS).await.context("create the G2 topic")?;
    let client = Client::connect(&cluster.endpoints)?;
    prefill(&client).await?;
    let create_alone = create_topics(client.clone(), "g2-alone", G2_TOPIC_CREATES, None).await?;

    let start = Instant::now() + G2_LEAD_IN;
    let measure_from = start + Duration::from_secs_f64(timing.warmup_secs);
    let duration = Duration::from_secs_f64(timing.duration_secs);
    let window = Window { start, measure_from, end: measure_from + duration };
    let tally = Arc::new(Mutex::new(CommitTally::default()));
    let errors = Arc::new(ErrorTally::default());
    let pids = cluster.pids();
    let before: Vec<procs::Usage> = pids.iter().map(|pid| procs::usage(*pid)).collect();
    let mut committers = Vec::new();
    for index in 0..G2_COMMITTERS {
        let client = Client::connect(&cluster.endpoints)?;
        committers.push(tokio::spawn(committer(client, format!("g2-{index}"), window, tally.clone(), errors.clone())));
    }
    let every = duration / G2_TOPIC_CREATES as u32;
    let creating =
        tokio::spawn(create_topics(client.clone(), "g2-during", G2_TOPIC_CREATES, Some((measure_from, every))));
    for task in committers {
        task.await.context("committer task")?;
    }
    let create_during = creating.await.context("topic creation task")??;
    let after: Vec<procs::Usage> = pids.iter().map(|pid| procs::usage(*pid)).collect();

    let mut tally = std::mem::take(&mut *tally.lock().expect("commit tally"));
    let latency_ms = percentiles(&mut tally.latencies_ms);
    let result = CommitsResult {
        committers: G2_COMMITTERS,
        partitions_per_commit: G2_PARTITIONS,
        prefilled_records_per_partition: G2_PREFILL_RECORDS,
        warmup_secs: timing.warmup_secs,
        duration_secs: timing.duration_secs,
        commits: tally.commits,
        offsets: tally.offsets,
        offsets_per_sec: tally.offsets as f64 / timing.duration_secs,
        latency_ms,
        errors: errors.count(),
        first_error: errors.first(),
        create_partitions: G2_CREATE_PARTITIONS,
        create_alone: Timings::of(create_alone),
        create_during: Timings::of(create_during),
        resources: resources(&before, &after, 0, 0),
    };
    eprintln!(
        "  G2: {:.0} offsets/s ({} commits), p50 {:.2} ms, p99 {:.2} ms, errors {}; topic creation p50 {:.1} ms alone, {:.1} ms during",
        result.offsets_per_sec,
        result.commits,
        result.latency_ms.p50,
        result.latency_ms.p99,
        result.errors,
        result.create_alone.p50_ms,
        result.create_during.p50_ms
    );
    Ok(result)
}

/// Percentiles (nearest rank) of samples in ms; all 0 when there are none.
fn percentiles(samples: &mut [f64]) -> strata_load::Percentiles {
    if samples.is_empty() {
        return strata_load::Percentiles::default();
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
    strata_load::Percentiles {
        count: samples.len() as u64,
        mean: samples.iter().sum::<f64>() / samples.len() as f64,
        p50: at(0.50),
        p95: at(0.95),
        p99: at(0.99),
        p999: at(0.999),
        max: samples[samples.len() - 1],
    }
}

// ---- G3 -------------------------------------------------------------------

type Reader = JoinHandle<anyhow::Result<()>>;

/// G3 on one system: its consumers start and get ready, then the load
/// generator offers G3_RATE records/s while they read.
pub async fn g3(cluster: &Cluster, timing: &Timing) -> anyhow::Result<WorkloadResult> {
    let readers = Arc::new(Readers::default());
    let (stop, stopped) = watch::channel(false);
    let (partitions, tasks) = match cluster.system {
        System::Strata => (G3_PARTITIONS, strata_members(cluster, &readers, &stopped).await?),
        System::Nats => (G3_PARTITIONS, nats_subscribers(cluster, &readers, &stopped).await?),
        // One quorum queue: the producers' sink sends every record to it.
        System::Rabbitmq => (1, rabbit_consumers(cluster, &readers, &stopped).await?),
        System::Etcd => anyhow::bail!("etcd has no consumer groups"),
    };
    let mut sinks = Vec::new();
    for index in 0..G3_PRODUCERS {
        let settings = ClientSettings { linger_ms: 5 };
        sinks.push(
            SystemSink::connect(cluster, G3_TOPIC, partitions, index, &settings).await.context("connect a producer")?,
        );
    }
    let spec = timing.spec(G3_PRODUCERS, Some(G3_RATE), OPEN_LOOP_WINDOW, 1024);
    let pids = cluster.pids();
    pids.iter().for_each(|pid| procs::reset_peak(*pid));
    let before: Vec<procs::Usage> = pids.iter().map(|pid| procs::usage(*pid)).collect();
    let mut result = load::run_with_readers(sinks, &spec, &readers).await;
    let after: Vec<procs::Usage> = pids.iter().map(|pid| procs::usage(*pid)).collect();
    let _ = stop.send(true);
    for task in tasks {
        let outcome = match tokio::time::timeout(G3_STOP_TIMEOUT, task).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(error)) => Err(anyhow::Error::from(error)),
            Err(_) => Err(anyhow::anyhow!("did not stop within {G3_STOP_TIMEOUT:?}")),
        };
        if let Err(error) = outcome {
            let message = format!("consumer: {error:#}");
            eprintln!("  G3 {} {message}", cluster.system.name());
            result.first_error.get_or_insert(message);
        }
    }
    let resources = resources(&before, &after, result.acked_total, spec.record_size);
    let consumed = result.consume.clone().unwrap_or_default();
    eprintln!(
        "  {:<9} {:<14} {:>8.0} rec/s acked, {:>8.0} consumed, end-to-end p50 {:>7.2} ms  p99 {:>8.2} ms, not received {}",
        cluster.system.name(),
        G3_LABEL,
        result.records_per_sec,
        consumed.records_per_sec,
        consumed.end_to_end_latency_ms.p50,
        consumed.end_to_end_latency_ms.p99,
        consumed.missing
    );
    Ok(WorkloadResult {
        workload: "G3".to_string(),
        label: G3_LABEL.to_string(),
        partitions,
        spec,
        result,
        resources,
        leadership: None,
    })
}

/// Strata: 4 GroupConsumers of one group, starting at the latest offset;
/// ready once the group is stable and the members read all 12 partitions.
async fn strata_members(
    cluster: &Cluster,
    readers: &Arc<Readers>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<Reader>> {
    systems::create_topic(cluster, G3_TOPIC, G3_PARTITIONS).await.context("create the G3 topic")?;
    let reading: Arc<Vec<AtomicUsize>> = Arc::new((0..G3_MEMBERS).map(|_| AtomicUsize::new(0)).collect());
    let mut tasks = Vec::new();
    for index in 0..G3_MEMBERS {
        let config = GroupConsumerConfig { auto_offset_reset: OffsetReset::Latest, ..Default::default() };
        let mut consumer = GroupConsumer::new(Client::connect(&cluster.endpoints)?, G3_GROUP, config);
        consumer.subscribe(&[G3_TOPIC])?;
        tasks.push(tokio::spawn(strata_member(consumer, index, reading.clone(), readers.clone(), stop.clone())));
    }
    let client = Client::connect(&cluster.endpoints)?;
    wait_for(G3_READY_TIMEOUT, "the G3 group", || async {
        let total: usize = reading.iter().map(|r| r.load(Ordering::Relaxed)).sum();
        anyhow::ensure!(total == G3_PARTITIONS as usize, "the members read {total} of {G3_PARTITIONS} partitions");
        let group = client.describe_group(G3_GROUP).await?;
        anyhow::ensure!(
            group.state == GroupState::Stable && group.members.len() == G3_MEMBERS,
            "group {:?} with {} members",
            group.state,
            group.members.len()
        );
        Ok(())
    })
    .await?;
    Ok(tasks)
}

/// One Strata member: polls until stopped, then closes (commits and leaves).
async fn strata_member(
    mut consumer: GroupConsumer,
    index: usize,
    reading: Arc<Vec<AtomicUsize>>,
    readers: Arc<Readers>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let outcome = loop {
        tokio::select! {
            _ = stop.changed() => break Ok(()),
            polled = consumer.poll(G3_POLL_WAIT) => match polled {
                Ok(records) => readers.received(records.iter().filter_map(|r| r.value.as_deref())),
                Err(error) => break Err(anyhow::Error::from(error).context("poll")),
            },
        }
        reading[index].store(consumer.assignment().values().map(|p| p.len()).sum(), Ordering::Relaxed);
    };
    let closed = consumer.close().await.context("close");
    outcome.and(closed)
}

/// NATS: one R3 file stream over the 12 subjects, one durable pull
/// consumer with explicit acks, 4 subscribers pulling from it.
async fn nats_subscribers(
    cluster: &Cluster,
    readers: &Arc<Readers>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<Reader>> {
    use async_nats::jetstream::{self, consumer, stream};
    let js = jetstream::new(async_nats::connect(cluster.endpoints[0].as_str()).await?);
    let created = js
        .create_stream(stream::Config {
            name: G3_NATS_STREAM.to_string(),
            subjects: vec![format!("{G3_TOPIC}.*")],
            num_replicas: 3,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("create stream: {e}"))?;
    created
        .create_consumer(consumer::pull::Config {
            durable_name: Some(G3_GROUP.to_string()),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("create consumer: {e}"))?;
    let errors = Arc::new(ErrorTally::default());
    let mut tasks = Vec::new();
    for index in 0..G3_MEMBERS {
        let endpoint = &cluster.endpoints[index % cluster.endpoints.len()];
        let js = jetstream::new(async_nats::connect(endpoint.as_str()).await?);
        let pull: consumer::PullConsumer = js
            .get_consumer_from_stream(G3_GROUP, G3_NATS_STREAM)
            .await
            .map_err(|e| anyhow::anyhow!("get consumer: {e}"))?;
        let mut messages = pull
            .stream()
            .max_messages_per_batch(G3_PREFETCH as usize)
            .messages()
            .await
            .map_err(|e| anyhow::anyhow!("pull: {e}"))?;
        let (readers, mut stop, errors) = (readers.clone(), stop.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    next = messages.next() => match next {
                        Some(Ok(message)) => {
                            readers.received([message.payload.as_ref()]);
                            message.ack().await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
                        }
                        // Pull errors (a missed idle heartbeat, a timeout) pass: the stream goes on.
                        Some(Err(error)) => errors.add(error),
                        None => break,
                    },
                }
            }
            match errors.first() {
                Some(first) => Err(anyhow::anyhow!("{} pull errors, the first: {first}", errors.count())),
                None => Ok(()),
            }
        }));
    }
    Ok(tasks)
}

/// RabbitMQ: 4 consumers of one quorum queue, each on its own connection
/// to a node in turn, acking every message.
async fn rabbit_consumers(
    cluster: &Cluster,
    readers: &Arc<Readers>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<Reader>> {
    use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
    systems::create_topic(cluster, G3_TOPIC, 1).await.context("declare the G3 queue")?;
    let mut tasks = Vec::new();
    for index in 0..G3_MEMBERS {
        let (connection, channel) = systems::rabbit_channel(cluster, index).await?;
        channel.basic_qos(G3_PREFETCH, BasicQosOptions::default()).await?;
        let mut consumer = channel
            .basic_consume(
                rabbit_queue(G3_TOPIC, 0).into(),
                format!("g3-{index}").into(),
                BasicConsumeOptions::default(),
                lapin::types::FieldTable::default(),
            )
            .await?;
        let (readers, mut stop) = (readers.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let _connection = connection;
            loop {
                tokio::select! {
                    _ = stop.changed() => return Ok(()),
                    next = consumer.next() => match next {
                        Some(Ok(delivery)) => {
                            readers.received([delivery.data.as_slice()]);
                            delivery.ack(BasicAckOptions::default()).await?;
                        }
                        Some(Err(error)) => return Err(error.into()),
                        None => return Ok(()),
                    },
                }
            }
        }));
    }
    Ok(tasks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_loses_a_partition_only_when_the_assignment_lacks_it() {
        let owned: TopicPartitions = [("t".to_string(), [0, 1].into())].into();
        let same: TopicPartitions = [("t".to_string(), [0, 1, 2].into())].into();
        let fewer: TopicPartitions = [("t".to_string(), [1].into())].into();
        assert!(!loses_any(&owned, &same));
        assert!(loses_any(&owned, &fewer));
        assert!(loses_any(&owned, &TopicPartitions::new()));
        assert!(!loses_any(&TopicPartitions::new(), &fewer));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut samples: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let p = percentiles(&mut samples);
        assert_eq!((p.count, p.p50, p.p99, p.max), (100, 50.0, 99.0, 100.0));
        assert_eq!(p.mean, 50.5);
        assert_eq!(percentiles(&mut []).count, 0);
        let one = percentiles(&mut [7.0]);
        assert_eq!((one.p50, one.p999, one.max), (7.0, 7.0, 7.0));
    }

    #[test]
    fn timings_keep_their_order_and_take_the_lower_median() {
        let t = Timings::of(vec![300.0, 100.0, 200.0, 400.0]);
        assert_eq!(t.samples_ms, [300.0, 100.0, 200.0, 400.0]);
        assert_eq!((t.p50_ms, t.max_ms), (200.0, 400.0));
        assert_eq!(Timings::of(vec![]).max_ms, 0.0);
    }
}
