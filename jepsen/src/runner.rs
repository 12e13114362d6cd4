//! One run, start to end: network, nodes, topic, workload and faults side
//! by side, heal, recovery, drain, replica comparison, teardown, check and
//! report. Everything it starts is owned by a guard that stops it on drop,
//! so an error, a panic or a cancelled run (Ctrl-C) still cleans up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::{json, Value};
use strata_client::{Client, ClientError, Consumer, RetryClass, StartOffset};
use strata_testkit::{poll_until, MissingBinary};

use crate::checker::{self, CheckOptions, GroupCheckOptions, Verdict};
use crate::cluster::{Cluster, Faketime};
use crate::history::{OpType, Process, Recorder};
use crate::members;
use crate::nemesis::{self, FaultKind, Nemesis};
use crate::net::{self, Network};
use crate::report;
use crate::workload::{self, Workload, WorkloadConfig, WorkloadKind, PRODUCER_IDEMPOTENCE};

/// Everything `run` takes; see `strata-jepsen run --help`.
#[derive(Clone, Debug, Serialize)]
pub struct RunOptions {
    pub nodes: u64,
    pub workload: WorkloadKind,
    pub faults: Vec<FaultKind>,
    pub time_limit_s: u64,
    pub seed: u64,
    pub concurrency: usize,
    pub keys: u32,
    pub recovery_bound_s: u64,
    /// Rounds of the replica comparison after the drain.
    pub verify_rounds: u64,
    pub strata_bin: Option<PathBuf>,
    pub store: PathBuf,
    pub keep_data: bool,
}

pub struct RunResult {
    pub dir: PathBuf,
    pub verdict: Verdict,
}

const TOPIC: &str = "jepsen";
/// Bound on the cluster forming and the topic getting leaders.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on the final drain; it normally takes a second or two.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on a paused node's partitions moving to other leaders.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on reading every key in one replica comparison round; a healthy
/// cluster needs a few seconds, a sick one must not hold the run for long.
const VERIFY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on every replica of a key reaching the same high watermark before
/// the byte comparison; followers apply within a second of a healthy
/// leader, and a lagging one only narrows the compared range.
const REPLICA_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on a removal, rebuild or partition move still going at the final
/// heal ending before the drain: a removal moves each of the node's
/// replicas (a few seconds each, two at a time), a rebuild catches up every
/// group of the node; both took well under a minute in a healthy cluster of
/// these runs.
const MEMBERSHIP_SETTLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Spare nodes the membership fault can add, beyond `--nodes`: one, so a
/// run of 3 nodes can grow to 4 (and then remove one of them, which RF 3
/// on 3 nodes refuses), and removed nodes can join again, emptied, in turn.
const SPARE_NODES: u64 = 1;

/// The `keys` workload's topic trims records this long after their
/// timestamp: every key is trimmed many times in a 60-120 s run, and a
/// record outlives a fault window (4-12 s) and a quiet gap.
pub const KEYS_RETENTION_MS: u64 = 20_000;
/// The `keys` workload's nodes snapshot every this many Raft entries of a
/// group (the default is 1024), so followers that fall behind catch up
/// through snapshot installs, key rows included.
pub const KEYS_SNAPSHOT_EVERY_ENTRIES: u64 = 16;
/// How long past the run's fault phase and recovery bound the `keys`
/// topic's `dedup.window` reaches, so that no key expires before the
/// replica comparison ends when clocks are right (a clock fault may then
/// still expire keys early).
const KEYS_DEDUP_SLACK_S: u64 = 120;

/// The `strata` binary: the one given, else the one the workspace build put
/// beside this executable, else built now with the workspace's usual build
/// command.
pub fn strata_binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    match strata_testkit::strata_binary(given) {
        Ok(path) => return Ok(path),
        Err(MissingBinary::Given(path)) => bail!("--strata-bin {} does not exist", path.display()),
        Err(MissingBinary::NotBuilt(_)) => {}
        Err(error) => return Err(error.into()),
    }
    eprintln!("building strata (cargo build --workspace --all-targets)");
    let status = std::process::Command::new("cargo")
        .args(["build", "--workspace", "--all-targets"])
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("could not build strata; pass --strata-bin");
    }
    Ok(strata_testkit::strata_binary(None)?)
}

/// Where the machine-wide run lock lives.
const RUN_LOCK: &str = "/tmp/strata-jepsen.lock";

/// Takes the machine-wide lock that keeps a second harness run from
/// starting while one is going; released when the returned file closes
/// (also when the process dies).
fn exclusive_run_lock() -> anyhow::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(RUN_LOCK)
        .with_context(|| format!("opening {RUN_LOCK}"))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "another strata-jepsen run holds {RUN_LOCK}; runs share the network namespaces, so wait for it to end"
        ),
        Err(std::fs::TryLockError::Error(error)) => Err(error).with_context(|| format!("locking {RUN_LOCK}")),
    }
}

pub async fn run(options: RunOptions) -> anyhow::Result<RunResult> {
    if options.nodes < 1 || options.nodes > net::MAX_NODES {
        bail!("--nodes must be 1..={}", net::MAX_NODES);
    }
    // Runs share the namespace names, the bridge and the addresses, and each
    // cleans up the others' leftovers at start: two at once would wreck both
    // (and make each other's clients talk to the wrong cluster).
    let _lock = exclusive_run_lock()?;
    let binary = strata_binary(options.strata_bin.as_deref())?;
    let stamp = run_stamp();
    let dir = options.store.join(format!("{stamp}-{}-{}n-s{}", options.workload.name(), options.nodes, options.seed));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let latest = options.store.join("latest");
    let _ = std::fs::remove_file(&latest);
    let _ = std::os::unix::fs::symlink(dir.file_name().expect("run dir name"), &latest);
    println!("run directory: {}", dir.display());

    let wants_clock = options.faults.contains(&FaultKind::Clock);
    net::ensure_tools(wants_clock).context("installing network tools")?;
    let ids: Vec<u64> = (1..=options.nodes).collect();
    let spares: Vec<u64> = if options.faults.contains(&FaultKind::Membership) {
        (options.nodes + 1..=(options.nodes + SPARE_NODES).min(net::MAX_NODES)).collect()
    } else {
        Vec::new()
    };
    let planned: Vec<u64> = ids.iter().chain(&spares).copied().collect();
    let network = Arc::new(Network::create(&planned).context("creating the test network")?);
    let faketime = if wants_clock {
        Some(Faketime { library: net::faketime_library().context("libfaketime is not installed")? })
    } else {
        None
    };
    let mut nodes = Cluster::new(&binary, &ids, &spares, &dir, faketime)?;
    if options.faults.contains(&FaultKind::LostWrites) {
        nodes.record_synced_wal(&dir)?;
    }
    if options.faults.contains(&FaultKind::Answers) {
        nodes.configure(&dir, &[], &nemesis::answer_hook_config())?;
    }
    let keys_workload = options.workload == WorkloadKind::Keys;
    if keys_workload {
        let settings = [
            format!("snapshot_every_entries = {KEYS_SNAPSHOT_EVERY_ENTRIES}"),
            // Retention acts within a second of being due.
            "retention_check_interval = \"1s\"".to_string(),
        ];
        nodes.configure(&dir, &settings, &[])?;
    }
    let group_workload = options.workload == WorkloadKind::Group;
    if group_workload {
        nodes.configure(&dir, &members::node_settings(), &[])?;
    }
    let group_check = group_workload.then(|| GroupCheckOptions {
        keys: options.keys as u64,
        session_timeout_ns: members::SESSION_TIMEOUT.as_nanos() as u64,
        convergence_bound_ns: members::convergence_bound().as_nanos() as u64,
    });
    let retention_ms = keys_workload.then_some(KEYS_RETENTION_MS);
    let dedup_window_s = options.time_limit_s + options.recovery_bound_s + KEYS_DEDUP_SLACK_S;
    let cluster = Arc::new(Mutex::new(nodes));
    let bootstrap = cluster.lock().expect("cluster lock").bootstrap();
    for &id in &ids {
        cluster.lock().expect("cluster lock").start(id)?;
    }

    let recorder = Recorder::new(Some(&dir.join("history.jsonl")))?;
    // Transactional producers are idempotent too (sequence numbers).
    let duplicates_fatal = (options.workload == WorkloadKind::Idempotent && PRODUCER_IDEMPOTENCE)
        || keys_workload
        || options.workload == WorkloadKind::Txn;
    recorder.record(
        Process::Named("harness".into()),
        OpType::Info,
        "start",
        json!({
            "workload": options.workload.name(),
            "idempotence": PRODUCER_IDEMPOTENCE,
            "duplicates_fatal": duplicates_fatal,
            "recovery_bound_s": options.recovery_bound_s,
            "seed": options.seed,
            "nodes": options.nodes,
            "spare_nodes": spares,
            "faults": options.faults,
            "time_limit_s": options.time_limit_s,
            "retention_ms": retention_ms,
            "dedup_window_s": keys_workload.then_some(dedup_window_s),
            "snapshot_every_entries": keys_workload.then_some(KEYS_SNAPSHOT_EVERY_ENTRIES),
            "answer_hooks": options.faults.contains(&FaultKind::Answers).then(nemesis::answer_hook_config),
            "txn": (options.workload == WorkloadKind::Txn).then(|| json!({
                "timeout_ms": crate::txns::TXN_TIMEOUT.as_millis() as u64,
                "hanging_bound_ms": crate::txns::HANGING_BOUND.as_millis() as u64,
            })),
            "group": group_check.as_ref().map(|g| json!({
                "group_id": members::GROUP_ID,
                "keys": g.keys,
                "session_timeout_ms": members::SESSION_TIMEOUT.as_millis() as u64,
                "heartbeat_interval_ms": members::HEARTBEAT_INTERVAL.as_millis() as u64,
                "convergence_bound_ms": g.convergence_bound_ns / 1_000_000,
            })),
        }),
        None,
        None,
    );

    let admin = workload::connect(&bootstrap);
    let mut topic_config = BTreeMap::new();
    if keys_workload {
        topic_config.insert("retention.ms".to_string(), KEYS_RETENTION_MS.to_string());
        topic_config.insert("dedup.window".to_string(), format!("{dedup_window_s}s"));
    }
    setup_topic(&admin, &options, &topic_config).await?;
    println!("cluster of {} nodes ready; topic '{TOPIC}' has {} partitions", options.nodes, options.keys);

    let windows = nemesis::schedule(options.seed, &options.faults, options.time_limit_s * 1000);
    std::fs::write(dir.join("schedule.json"), serde_json::to_string_pretty(&windows)?)?;
    let workload = Workload::new(
        WorkloadConfig {
            kind: options.workload,
            topic: TOPIC.into(),
            keys: options.keys,
            active_keys: options.keys.min(3),
            rotate_every_sends: 50,
            concurrency: options.concurrency,
            op_pause_ms_max: 40,
            bootstrap: bootstrap.clone(),
            seed: options.seed,
        },
        recorder.clone(),
    );
    let nemesis = Nemesis {
        cluster: cluster.clone(),
        network: network.clone(),
        client: admin.clone(),
        topic: TOPIC.into(),
        recorder: recorder.clone(),
        run_dir: dir.clone(),
        damaged: Mutex::new(Default::default()),
        membership: Mutex::new(Default::default()),
        partitioned: Default::default(),
    };

    let started = Instant::now();
    let workers = workload.spawn();
    nemesis.run(&windows, started, started + Duration::from_secs(options.time_limit_s)).await;
    let healed = Instant::now();
    let healed_ns = recorder.now();
    workload.stop_client_crashes();
    println!("faults healed after {:.1} s; waiting for writes to resume", started.elapsed().as_secs_f64());
    let recovery = Duration::from_secs(options.recovery_bound_s);
    let resumed = poll_until(recovery, || async { (workload.last_ack_ns() > healed_ns).then_some(()) }).await;
    let mut notes = Vec::new();
    match resumed {
        Some(()) => notes.push(format!(
            "writes resumed {:.1} s after the final heal",
            (workload.last_ack_ns().saturating_sub(healed_ns)) as f64 / 1e9
        )),
        None => {
            notes.push(format!("no write was acknowledged within {} s of the final heal", options.recovery_bound_s))
        }
    }
    if group_workload {
        notes.extend(await_convergence(&admin, &recorder, &workload, options.keys, healed).await);
    }
    // Removals and rebuilds the faults started end before the drain (after
    // the group's convergence check, whose bound runs from the heal).
    if options.faults.contains(&FaultKind::Membership) {
        notes.extend(nemesis.settle(MEMBERSHIP_SETTLE_TIMEOUT).await);
    }
    workload.stop();
    for worker in workers {
        // Every operation has its own deadline, so this ends; the bound is
        // a second line of defence.
        if tokio::time::timeout(Duration::from_secs(60), worker).await.is_err() {
            notes.push("a worker did not stop within 60 s and was abandoned".into());
        }
    }

    if group_workload {
        notes.extend(read_committed(&admin, &recorder, options.keys).await);
    }
    if options.workload == WorkloadKind::Txn {
        // A transaction a killed process left open is aborted by its timeout;
        // the drain reads past it only then.
        let wait = crate::txns::TXN_TIMEOUT + crate::txns::HANGING_BOUND;
        notes.extend(crate::txns::record_open_transactions(&admin, &recorder, wait).await);
    }
    let targets = acknowledged_targets(&recorder, options.keys);
    let drained =
        workload::drain(&recorder, &bootstrap, TOPIC, targets.clone(), keys_workload, Instant::now() + DRAIN_TIMEOUT)
            .await;
    println!("drain: {} polls in {} ms", drained.polls, drained.elapsed_ms);
    if !drained.short.is_empty() {
        notes.push(format!("the drain stopped short on keys (reached, target): {:?}", drained.short));
    }
    // Right after the drain, before the verification rounds pause nodes:
    // with retention on, what the replicas hold shrinks as time passes.
    notes.extend(compare_replicas(&admin, &recorder, options.keys).await);
    // The members now: the membership fault may have added and removed nodes.
    let members = cluster.lock().expect("cluster lock").ids();
    for round in 0..options.verify_rounds.min(members.len().saturating_sub(1) as u64) {
        let paused = members[round as usize % members.len()];
        match verify_round(&cluster, &admin, &recorder, &bootstrap, &targets, paused).await {
            Ok(()) => {}
            Err(error) => notes.push(format!("verification round with node {paused} paused: {error}")),
        }
    }
    for (id, status) in cluster.lock().expect("cluster lock").reap_exited() {
        notes.push(format!("node {id} had exited by itself at the end ({status}); see n{id}/node.log"));
    }
    cluster.lock().expect("cluster lock").kill_all();
    if options.faults.contains(&FaultKind::Membership) {
        notes.push(nemesis.membership_note());
    }
    drop(nemesis);
    drop(network);
    recorder.flush();

    let history = recorder.ops();
    let check_options = CheckOptions {
        duplicates_fatal,
        recovery_bound_ns: options.recovery_bound_s * 1_000_000_000,
        retention_ms,
        group: group_check,
        sparse_reads: options.workload == WorkloadKind::Txn,
    };
    let mut verdict = checker::check(&history, &check_options).context("checking the history")?;
    if !duplicates_fatal {
        verdict.notes.push(format!(
            "duplicates are reported as allowed: the {} workload sends without an idempotent producer",
            options.workload.name()
        ));
    }
    verdict.notes.extend(notes);
    let starts: BTreeMap<u64, u32> =
        cluster.lock().expect("cluster lock").nodes.iter().map(|n| (n.id, n.starts)).collect();
    verdict.notes.push(format!("node starts: {starts:?}"));
    std::fs::write(dir.join("verdict.json"), serde_json::to_string_pretty(&verdict)?)?;
    report::write(&dir, &options, &windows, &history, &verdict)?;
    if !options.keep_data && verdict.valid {
        for &id in &planned {
            let _ = std::fs::remove_dir_all(dir.join(format!("n{id}")).join("data"));
        }
    }
    Ok(RunResult { dir, verdict })
}

/// A sortable run name prefix from the wall clock (UTC, seconds).
/// The run's start as a folder name: UTC, `20261129T171347`, so that run
/// folders sort by time (`scripts/jepsen-soak.sh` names its summaries alike).
fn run_stamp() -> String {
    chrono::Utc::now().format("%Y%m%dT%H%M%S").to_string()
}

/// Waits for the metadata group, creates the topic, waits for its leaders.
async fn setup_topic(client: &Client, options: &RunOptions, config: &BTreeMap<String, String>) -> anyhow::Result<()> {
    let ready = poll_until(SETUP_TIMEOUT, || async {
        client.cluster_status().await.ok().filter(|s| s.metadata_available).map(|_| ())
    })
    .await;
    ready.context("the cluster did not elect a metadata leader in time")?;
    let replication = options.nodes.min(crate::nemesis::TOPIC_REPLICATION as u64) as u32;
    let mut retried = false;
    let created = poll_until(SETUP_TIMEOUT, || {
        let was_retried = retried;
        retried = true;
        async move {
            match client.create_topic(TOPIC, options.keys, replication, config.clone()).await {
                Ok(_) => Some(Ok(())),
                Err(ClientError::Server { code, .. }) if was_retried && code.name() == "TOPIC_ALREADY_EXISTS" => {
                    Some(Ok(()))
                }
                Err(error) if error.retry_class() != RetryClass::Fatal => None,
                Err(error) => Some(Err(error)),
            }
        }
    })
    .await;
    created.context("topic creation timed out")??;
    for partition in 0..options.keys {
        poll_until(SETUP_TIMEOUT, || async {
            client.list_offsets(TOPIC, partition, strata_client::OffsetSpec::Latest).await.ok().map(|_| ())
        })
        .await
        .with_context(|| format!("partition {partition} got no leader in time"))?;
    }
    Ok(())
}

/// Pause between two descriptions of the group while waiting for it to
/// converge: a few per heartbeat interval.
const DESCRIBE_EVERY: Duration = Duration::from_millis(300);
/// Bound on reading the group's final committed offsets once the members
/// have stopped; the cluster is healed and answering by then.
const COMMITTED_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// `group`: describes the group (process `group-check`, `describe-group`)
/// until every partition is owned by exactly one live member, or the
/// convergence bound from the final heal has passed (with a second's
/// margin, so that the checker, not this loop, judges a late answer).
/// The members keep running meanwhile.
async fn await_convergence(
    admin: &Client,
    recorder: &Recorder,
    workload: &Workload,
    keys: u32,
    healed: Instant,
) -> Vec<String> {
    let process = Process::Named("group-check".into());
    let deadline = healed + members::convergence_bound() + Duration::from_secs(1);
    let mut last = None;
    while Instant::now() < deadline {
        recorder.record(process.clone(), OpType::Invoke, "describe-group", Value::Null, None, None);
        match tokio::time::timeout(Duration::from_secs(5), admin.describe_group(members::GROUP_ID)).await {
            Ok(Ok(description)) => {
                let value = members::describe_value(&description, TOPIC, &workload.live_members());
                let problem = checker::group::not_converged(&value, keys as u64);
                recorder.record(process.clone(), OpType::Ok, "describe-group", value, None, None);
                match problem {
                    None => {
                        return vec![format!(
                            "the group converged {:.1} s after the final heal",
                            healed.elapsed().as_secs_f64()
                        )]
                    }
                    Some(problem) => last = Some(problem),
                }
            }
            Ok(Err(error)) => {
                let error = Some(error.to_string());
                recorder.record(process.clone(), OpType::Fail, "describe-group", Value::Null, None, error);
            }
            Err(_) => {
                let error = Some("deadline".to_string());
                recorder.record(process.clone(), OpType::Fail, "describe-group", Value::Null, None, error);
            }
        }
        tokio::time::sleep(DESCRIBE_EVERY).await;
    }
    vec![format!(
        "the group did not converge within {:.0} s of the final heal; last seen: {}",
        members::convergence_bound().as_secs_f64(),
        last.unwrap_or_else(|| "no description".into())
    )]
}

/// `group`: reads the group's committed offsets after the members stopped
/// (process `group-check`, `committed`: ok `{"offsets": {"K": O}}`, keys
/// without an offset left out).
async fn read_committed(admin: &Client, recorder: &Recorder, keys: u32) -> Vec<String> {
    let process = Process::Named("group-check".into());
    let wanted = strata_client::TopicPartitions::from([(TOPIC.to_string(), (0..keys).collect())]);
    let deadline = Instant::now() + COMMITTED_READ_TIMEOUT;
    while Instant::now() < deadline {
        recorder.record(
            process.clone(),
            OpType::Invoke,
            "committed",
            json!({"keys": (0..keys).collect::<Vec<_>>()}),
            None,
            None,
        );
        match tokio::time::timeout(Duration::from_secs(5), admin.fetch_offsets(members::GROUP_ID, &wanted)).await {
            Ok(Ok(fetched)) => {
                let offsets: BTreeMap<String, u64> = fetched
                    .iter()
                    .filter(|o| o.topic == TOPIC)
                    .filter_map(|o| Some((o.partition.to_string(), o.committed.as_ref()?.offset)))
                    .collect();
                recorder.record(process, OpType::Ok, "committed", json!({"offsets": offsets}), None, None);
                return Vec::new();
            }
            Ok(Err(error)) => {
                let error = Some(error.to_string());
                recorder.record(process.clone(), OpType::Fail, "committed", Value::Null, None, error);
            }
            Err(_) => {
                let error = Some("deadline".to_string());
                recorder.record(process.clone(), OpType::Fail, "committed", Value::Null, None, error);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    vec![format!("the group's committed offsets could not be read within {} s", COMMITTED_READ_TIMEOUT.as_secs())]
}

/// Per key, one past the highest acknowledged offset (0 for keys never written).
fn acknowledged_targets(recorder: &Recorder, keys: u32) -> BTreeMap<u32, u64> {
    let mut targets: BTreeMap<u32, u64> = (0..keys).map(|k| (k, 0)).collect();
    for op in recorder.ops() {
        if op.f == "send" && op.kind == OpType::Ok {
            if let (Some(key), Some(offset)) = (op.value["key"].as_u64(), op.value["offset"].as_u64()) {
                let target = targets.entry(key as u32).or_default();
                *target = (*target).max(offset + 1);
            }
        }
    }
    targets
}

/// Pauses one node so that its partitions move to other leaders, then reads
/// every key up to its target from whichever node leads it now, recording
/// the reads with that node: the checker compares them across rounds.
async fn verify_round(
    cluster: &Arc<Mutex<Cluster>>,
    admin: &Client,
    recorder: &Recorder,
    bootstrap: &[String],
    targets: &BTreeMap<u32, u64>,
    paused: u64,
) -> anyhow::Result<()> {
    cluster.lock().expect("cluster lock").pause(paused)?;
    let result = async {
        let leaders = poll_until(FAILOVER_TIMEOUT, || async {
            let description = admin.describe_topic(TOPIC).await.ok()?;
            let leaders: BTreeMap<u32, u64> =
                description.partitions.iter().filter_map(|p| Some((p.partition, p.leader?))).collect();
            let moved = leaders.len() == targets.len() && leaders.values().all(|&l| l != paused);
            moved.then_some(leaders)
        })
        .await
        .context("partitions did not move off the paused node in time")?;
        let process = Process::Named(format!("verify-{paused}"));
        let deadline = Instant::now() + VERIFY_READ_TIMEOUT;
        for (&key, &target) in targets {
            if target == 0 {
                continue;
            }
            let node = leaders.get(&key).copied();
            // The paused node would only make the client wait for it.
            let reachable: Vec<String> =
                bootstrap.iter().filter(|a| **a != net::node_address(paused)).cloned().collect();
            // From the log start: retention may have trimmed the beginning.
            let assign = || async {
                let mut consumer = Consumer::new(workload::connect(&reachable));
                recorder.record(process.clone(), OpType::Invoke, "assign", json!({"keys": [key]}), node, None);
                let position = consumer.assign(TOPIC, key, StartOffset::Earliest).await;
                match &position {
                    Ok(position) => {
                        let positions = json!({"keys": [key], "positions": {key.to_string(): position}});
                        recorder.record(process.clone(), OpType::Ok, "assign", positions, node, None);
                    }
                    Err(error) => {
                        let keys = json!({"keys": [key]});
                        recorder.record(process.clone(), OpType::Fail, "assign", keys, node, Some(error.to_string()));
                    }
                }
                position.map(|_| consumer)
            };
            let mut consumer = assign().await?;
            while consumer.position(TOPIC, key).unwrap_or(0) < target && Instant::now() < deadline {
                recorder.record(process.clone(), OpType::Invoke, "poll", Value::Null, node, None);
                match tokio::time::timeout(Duration::from_secs(15), consumer.poll(Duration::from_millis(200))).await {
                    Ok(Ok(records)) => {
                        let records: Vec<_> = records.into_iter().filter(|r| r.offset < target).collect();
                        let mut reads: BTreeMap<String, Vec<Value>> = BTreeMap::new();
                        for r in &records {
                            let value: Option<u64> = r
                                .value
                                .as_deref()
                                .and_then(|v| std::str::from_utf8(v).ok())
                                .and_then(|v| v.parse().ok());
                            match value {
                                Some(v) => reads.entry(key.to_string()).or_default().push(json!([r.offset, v])),
                                None => bail!("key {key} offset {} holds a value the workload never wrote", r.offset),
                            }
                        }
                        recorder.record(process.clone(), OpType::Ok, "poll", json!(reads), node, None);
                    }
                    Ok(Err(error)) => {
                        let retryable = error.is_retryable();
                        recorder.record(
                            process.clone(),
                            OpType::Fail,
                            "poll",
                            Value::Null,
                            node,
                            Some(error.to_string()),
                        );
                        // Retention moved the log start past the position.
                        if !retryable {
                            consumer = assign().await?;
                        }
                    }
                    Err(_) => {
                        recorder.record(
                            process.clone(),
                            OpType::Info,
                            "poll",
                            Value::Null,
                            node,
                            Some("deadline".into()),
                        );
                        bail!("a read of key {key} hung");
                    }
                }
            }
            if Instant::now() >= deadline {
                bail!("reads did not reach every target within {} s", VERIFY_READ_TIMEOUT.as_secs());
            }
        }
        Ok(())
    }
    .await;
    cluster.lock().expect("cluster lock").resume(paused)?;
    result
}

/// The replica comparison of every run, after the heal, the drain and the
/// verification rounds, with every node up: reads each key's batches from
/// each of its replicas' own copies (replica reads, leader or follower)
/// once they reach one high watermark, and records every copy as a
/// `replica-read` of process `replicas`, each batch as its base and next
/// offset, length and a 64-bit FNV-1a digest of its bytes exactly as
/// stored. The checker compares them over the range all copies hold
/// (`checker::check_replicas`). Returns notes for the verdict.
async fn compare_replicas(admin: &Client, recorder: &Recorder, keys: u32) -> Vec<String> {
    let mut notes = Vec::new();
    let process = Process::Named("replicas".into());
    let described = poll_until(SETUP_TIMEOUT, || async { admin.describe_topic(TOPIC).await.ok() }).await;
    let Some(description) = described else {
        notes.push("replica comparison skipped: the topic could not be described".into());
        return notes;
    };
    // Every key at once: with retention on, what the copies hold shrinks
    // while one key waits for a lagging replica.
    let mut reads = Vec::new();
    for partition in description.partitions.iter().filter(|p| p.partition < keys) {
        let (admin, key, replicas) = (admin.clone(), partition.partition, partition.replicas.clone());
        reads.push(tokio::spawn(async move {
            let read_all = || async {
                let mut copies = BTreeMap::new();
                for &node in &replicas {
                    copies.insert(node, admin.read_replica(&net::node_address(node), TOPIC, key).await);
                }
                copies
            };
            let caught_up = poll_until(REPLICA_CATCH_UP_TIMEOUT, || async {
                let copies = read_all().await;
                let ends: std::collections::BTreeSet<Option<u64>> =
                    copies.values().map(|c| c.as_ref().ok().map(|c| c.high_watermark)).collect();
                (ends.len() == 1 && !ends.contains(&None)).then_some(copies)
            })
            .await;
            match caught_up {
                Some(copies) => (key, copies, None),
                None => {
                    let note = format!(
                        "replicas of key {key} did not reach one high watermark within {} s; compared what they hold",
                        REPLICA_CATCH_UP_TIMEOUT.as_secs()
                    );
                    (key, read_all().await, Some(note))
                }
            }
        }));
    }
    for read in reads {
        let Ok((key, copies, note)) = read.await else {
            notes.push("a replica comparison task panicked".into());
            continue;
        };
        notes.extend(note);
        for (node, copy) in copies {
            recorder.record(
                process.clone(),
                OpType::Invoke,
                "replica-read",
                json!({"key": key, "node": node}),
                Some(node),
                None,
            );
            match copy {
                Ok(copy) => {
                    let batches: Vec<Value> = copy
                        .batches
                        .iter()
                        .map(|(base, bytes)| {
                            let next = strata_client::batch::read_header(bytes).map_or(*base, |h| h.next_offset());
                            json!([base, next, bytes.len(), format!("{:016x}", fnv1a64(bytes))])
                        })
                        .collect();
                    let value = json!({
                        "key": key,
                        "node": node,
                        "log_start": copy.log_start_offset,
                        "high_watermark": copy.high_watermark,
                        "batches": batches,
                    });
                    recorder.record(process.clone(), OpType::Ok, "replica-read", value, Some(node), None);
                }
                Err(error) => {
                    let value = json!({"key": key, "node": node});
                    recorder.record(
                        process.clone(),
                        OpType::Fail,
                        "replica-read",
                        value,
                        Some(node),
                        Some(error.to_string()),
                    );
                    notes.push(format!("replica read of key {key} from node {node} failed: {error}"));
                }
            }
        }
    }
    notes
}

/// 64-bit FNV-1a: a digest of a stored batch for the history (the batches
/// themselves would make it megabytes). Not cryptographic; an accidental
/// difference between two replicas' bytes goes unnoticed with probability
/// 2^-64 per batch, next to the length, which is compared too.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}
