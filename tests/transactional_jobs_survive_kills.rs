//! Exactly-once jobs on a real cluster, killed with SIGKILL again and
//! again: the shipped `order_totals` example ends with totals equal to
//! those computed from its input and one output per order; `strata pipe`
//! ends with each input's output exactly once. A filter that exits, or
//! that prints the wrong number of lines, stops the pipe with a clear error
//! and nothing of its transaction committed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use strata_client::partitioner::partition_for_key;
use strata_client::{Client, IsolationLevel, OffsetSpec};
use strata_cluster_tests::{create_topic, eventually, produce, strata_binary, Cluster};

const GROUPS: &str = "group_session_timeout = \"6s\"\ngroup_heartbeat_interval = \"500ms\"\n";
/// How long a job may take to catch up with its input after the last kill.
const CATCH_UP: Duration = Duration::from_secs(90);
const KILLS: usize = 5;
const PARTITIONS: u32 = 3;

fn example_binary() -> PathBuf {
    strata_binary().parent().expect("target dir").join("examples").join("order_totals")
}

/// Every (key, value) of a topic a read_committed reader sees, partition
/// by partition.
async fn read_committed(client: &Client, topic: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for partition in 0..PARTITIONS {
        let mut offset = 0;
        loop {
            let answer = client
                .fetch_isolated(topic, partition, offset, 1 << 20, Duration::ZERO, IsolationLevel::ReadCommitted)
                .await
                .map_err(|e| eprintln!("read of {topic}/{partition} at {offset}: {e}"))
                .ok()?;
            let before = offset;
            let records = strata_record::decode_records_from(&answer.records, offset)
                .map_err(|e| eprintln!("decode of {topic}/{partition} at {offset}: {e}"))
                .ok()?;
            for r in records {
                let text = |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
                out.push((text(r.key.as_deref()), text(r.value.as_deref())));
                offset = r.offset + 1;
            }
            offset = offset.max(answer.next_offset);
            if offset == before {
                break;
            }
        }
    }
    Some(out)
}

/// Produces `(key, value)` records, each to the partition its key hashes to.
async fn produce_keyed(cluster: &Cluster, topic: &str, records: &[(String, String)]) {
    for (key, value) in records {
        let partition = partition_for_key(key.as_bytes(), PARTITIONS);
        produce(cluster, topic, partition, &[(Some(key.as_str()), value.as_str())], Duration::from_secs(30))
            .await
            .unwrap();
    }
}

/// Whether the group has committed every input offset there is.
async fn caught_up(client: &Client, group: &str, topic: &str) -> Option<()> {
    let wanted = [(topic.to_string(), (0..PARTITIONS).collect())].into();
    let committed = client.fetch_offsets(group, &wanted).await.ok()?;
    for partition in 0..PARTITIONS {
        let end = client.list_offsets(topic, partition, OffsetSpec::Latest).await.ok()?.offset;
        let at = committed.iter().find(|c| c.partition == partition)?.committed.as_ref().map_or(0, |c| c.offset);
        if at < end {
            return None;
        }
    }
    Some(())
}

/// The sum of the group's committed offsets of `topic`.
async fn progress(client: &Client, group: &str, topic: &str) -> u64 {
    let wanted = [(topic.to_string(), (0..PARTITIONS).collect())].into();
    let committed = client.fetch_offsets(group, &wanted).await.unwrap_or_default();
    committed.iter().filter_map(|c| c.committed.as_ref()).map(|c| c.offset).sum()
}

fn spawn(command: &mut Command) -> Child {
    command.stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().expect("start the job")
}

/// Runs a job through `KILLS` SIGKILLs, each once it has committed more
/// than before, with a wave of input produced before each start; then lets
/// it catch up and stops it.
async fn run_with_kills(
    cluster: &Cluster,
    client: &Client,
    group: &str,
    input: &str,
    waves: &[Vec<(String, String)>],
    mut start: impl FnMut() -> Child,
) {
    let mut committed = 0;
    for wave in waves {
        produce_keyed(cluster, input, wave).await;
        let mut job = start();
        committed = eventually(CATCH_UP, "the job to commit progress", || async {
            let now = progress(client, group, input).await;
            (now > committed).then_some(now)
        })
        .await;
        job.kill().expect("SIGKILL");
        job.wait().expect("reap");
    }
    let mut job = start();
    eventually(CATCH_UP, "the job to catch up with its input", || caught_up(client, group, input)).await;
    job.kill().expect("stop");
    job.wait().expect("reap");
}

fn waves(make: impl Fn(usize) -> (String, String), per_wave: usize) -> Vec<Vec<(String, String)>> {
    (0..KILLS).map(|w| (w * per_wave..(w + 1) * per_wave).map(&make).collect()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_order_totals_example_counts_every_order_once_across_kills() {
    let cluster = Cluster::start_with_config(3, GROUPS).await;
    create_topic(&cluster, 1, "orders", PARTITIONS, 3, &[]).await;
    create_topic(&cluster, 1, "order-totals", PARTITIONS, 3, &[]).await;
    let client = Client::connect(&cluster.bootstrap()).unwrap();
    let orders = waves(|i| (format!("customer-{}", i % 7), ((i % 13) + 1).to_string()), 120);
    let bootstrap = cluster.bootstrap()[0].clone();
    run_with_kills(&cluster, &client, "order-totals", "orders", &orders, || {
        spawn(Command::new(example_binary()).arg(&bootstrap).arg("instance-1"))
    })
    .await;

    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for (customer, amount) in orders.iter().flatten() {
        *expected.entry(customer.clone()).or_default() += amount.parse::<i64>().unwrap();
    }
    let outputs = eventually(CATCH_UP, "a read of the outputs", || read_committed(&client, "order-totals")).await;
    assert_eq!(outputs.len(), orders.iter().map(Vec::len).sum::<usize>(), "one output per order, none twice");
    let mut totals: BTreeMap<String, i64> = BTreeMap::new();
    for (customer, total) in outputs {
        // Partitioned by customer: the last output of each is its total.
        totals.insert(customer, total.parse().unwrap());
    }
    assert_eq!(totals, expected, "every order counted exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strata_pipe_writes_each_output_exactly_once_across_kills() {
    let cluster = Cluster::start_with_config(3, GROUPS).await;
    create_topic(&cluster, 1, "in", PARTITIONS, 3, &[]).await;
    create_topic(&cluster, 1, "out", PARTITIONS, 3, &[]).await;
    let client = Client::connect(&cluster.bootstrap()).unwrap();
    let inputs = waves(|i| (format!("k{}", i % 11), format!("v{i}")), 150);
    let bootstrap = cluster.bootstrap().join(",");
    run_with_kills(&cluster, &client, "p", "in", &inputs, || {
        spawn(
            Command::new(strata_binary())
                .args(["--bootstrap", &bootstrap, "pipe", "--from", "in", "--to", "out", "--group", "p"])
                .args(["--instance-id", "i1", "--commit-interval", "100ms", "--", "sed", "-u", "s/^/out-/"]),
        )
    })
    .await;

    let mut outputs = eventually(CATCH_UP, "a read of the outputs", || read_committed(&client, "out")).await;
    let mut expected: Vec<(String, String)> =
        inputs.iter().flatten().map(|(k, v)| (k.clone(), format!("out-{v}"))).collect();
    outputs.sort();
    expected.sort();
    assert_eq!(outputs, expected, "each input's output exactly once, with the input's key");
}

/// Runs a pipe with `filter` over five inputs and returns its exit status
/// and what it printed to stderr.
async fn failing_pipe(cluster: &Cluster, group: &str, filter: &str) -> (std::process::ExitStatus, String) {
    let bootstrap = cluster.bootstrap().join(",");
    let output = tokio::process::Command::new(strata_binary())
        .args(["--bootstrap", &bootstrap, "pipe", "--from", "in", "--to", "out", "--group", group])
        .args(["--instance-id", "i1", "--commit-interval", "1s", "--", "sh", "-c", filter])
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output).await.expect("the pipe stops").unwrap();
    (output.status, String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_filter_that_exits_or_miscounts_stops_the_pipe_with_nothing_committed() {
    let cluster = Cluster::start_with_config(1, GROUPS).await;
    create_topic(&cluster, 1, "in", 1, 1, &[]).await;
    create_topic(&cluster, 1, "out", 1, 1, &[]).await;
    let client = Client::connect(&cluster.bootstrap()).unwrap();
    let values: Vec<(Option<&str>, &str)> = vec![(None, "a"), (None, "b"), (None, "c"), (None, "d"), (None, "e")];
    produce(&cluster, "in", 0, &values, Duration::from_secs(30)).await.unwrap();

    let (status, stderr) = failing_pipe(&cluster, "exits", "read line; echo \"x$line\"; exit 3").await;
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("exited"), "the error says the filter exited: {stderr}");
    let (status, stderr) =
        failing_pipe(&cluster, "doubles", "while read line; do echo \"$line\"; echo extra; done").await;
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("more lines than it was given"), "{stderr}");
    for group in ["exits", "doubles"] {
        let id = format!("pipe-{group}-i1");
        let state = eventually(Duration::from_secs(30), "the pipe's transaction to end", || async {
            let state = client.describe_transaction(&id).await.ok()?.state;
            matches!(state.as_str(), "EMPTY" | "COMPLETE_ABORT").then_some(state)
        })
        .await;
        assert_ne!(state, "COMPLETE_COMMIT");
        let wanted = [("in".to_string(), [0].into())].into();
        let offsets = client.fetch_offsets(group, &wanted).await.unwrap();
        assert!(offsets.iter().all(|o| o.committed.is_none()), "no offset committed for {group}: {offsets:?}");
    }
    // No transaction holds the reader back, and it reads no output.
    let answer =
        client.fetch_isolated("out", 0, 0, 1 << 20, Duration::ZERO, IsolationLevel::ReadCommitted).await.unwrap();
    assert_eq!(answer.last_stable_offset, answer.high_watermark);
    assert_eq!(read_committed_one(&client).await, Vec::<String>::new(), "nothing of the pipe was committed");
}

async fn read_committed_one(client: &Client) -> Vec<String> {
    let answer =
        client.fetch_isolated("out", 0, 0, 1 << 20, Duration::ZERO, IsolationLevel::ReadCommitted).await.unwrap();
    strata_record::decode_records_from(&answer.records, 0)
        .unwrap()
        .into_iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect()
}
