//! `strata topic alter` on a real 3-node cluster: a topic of 2 partitions
//! (replication factor 3) grows to 5. Every new partition gets a leader and
//! 3 replicas and stores what is produced to it; the old records stay as
//! they were; a group member subscribed before the alter is given the new
//! partitions and reads them; a producer whose metadata predates the alter
//! sends to them once its cache ages. Shrinking and bad configs are refused
//! with their codes and change nothing. `--config retention.ms=...` shows in
//! `strata topic describe` and retention applies it without a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use strata_client::{
    Client, ClientConfig, ErrorCode, GroupConsumer, GroupConsumerConfig, OffsetReset, Producer, ProducerConfig, Record,
};
use strata_cluster_tests::{
    create_topic, eventually, fetch_all, now_ms, partition_offsets, produce, produce_at, strata_cli, value_of, Cluster,
};

const TOPIC: &str = "grown";
/// Sessions long enough that a loaded machine never expires the member;
/// heartbeats often enough that it hears of new partitions quickly.
const STEADY: &str = "group_session_timeout = \"10s\"\ngroup_heartbeat_interval = \"500ms\"\n";
/// How long the cluster may take to settle after a change (leaders of new
/// partitions, a group's new assignment, a retention pass).
const SETTLE: Duration = Duration::from_secs(40);
/// How long one CLI command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(30);
/// The test producer's metadata max age: short, so the test sees the bound
/// at work without waiting the 30 s default.
const METADATA_MAX_AGE: Duration = Duration::from_secs(1);
/// Old records per old partition, stamped two hours ago.
const OLD_RECORDS: u64 = 4;

/// Runs `strata --bootstrap ... ARGS` against the cluster.
async fn strata(cluster: &Cluster, args: &[&str]) -> Output {
    strata_cli(cluster, args, COMMAND_TIMEOUT).await
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a `--json` command that must succeed and returns its JSON.
async fn json_of(cluster: &Cluster, args: &[&str]) -> Value {
    let mut with_json = vec!["--json"];
    with_json.extend_from_slice(args);
    let output = strata(cluster, &with_json).await;
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "strata {args:?} failed: {}\n{stdout}\n{stderr}", output.status);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("strata {args:?} printed no JSON ({e}):\n{stdout}"))
}

/// Runs a command that must fail with `code`, and returns its stderr.
async fn refused(cluster: &Cluster, args: &[&str], code: &str) -> String {
    let output = strata(cluster, args).await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "strata {args:?} must fail: {}\n{stderr}", text(&output.stdout));
    assert!(stderr.contains(&format!("error: {code}: ")), "strata {args:?} must say {code}:\n{stderr}");
    stderr
}

/// What the group member saw: its assignment after each poll, and the
/// partitions and values of the records it read.
#[derive(Default)]
struct Seen {
    assignment: BTreeSet<u32>,
    records: Vec<(u32, String)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_grows_and_its_configs_change_online() {
    let cluster = Cluster::start_with_config(3, STEADY).await;
    // Kept forever at first, so the old records stay until the alter of
    // retention.ms below.
    create_topic(&cluster, 1, TOPIC, 2, 3, &[("retention.ms", "-1")]).await;
    let two_hours_ago = now_ms() - 2 * 3600 * 1000;
    let mut old: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for partition in 0..2 {
        for i in 0..OLD_RECORDS {
            let value = format!("old-{partition}-{i}");
            produce_at(&cluster, TOPIC, partition, &[(None, &value)], two_hours_ago, PRODUCE_TIMEOUT).await.unwrap();
            old.entry(partition).or_default().push(value);
        }
    }

    // A group member subscribed before the alter, reading all along.
    let client = Client::connect(&cluster.bootstrap()).unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let member = {
        let config = GroupConsumerConfig {
            client_id: "early".into(),
            auto_offset_reset: OffsetReset::Earliest,
            ..GroupConsumerConfig::default()
        };
        let mut consumer = GroupConsumer::new(client.clone(), "readers", config);
        consumer.subscribe(&[TOPIC]).expect("subscribe");
        let seen = seen.clone();
        tokio::spawn(async move {
            while !*stopped.borrow() {
                let records = consumer.poll(Duration::from_millis(200)).await.expect("poll");
                let mut seen = seen.lock().unwrap();
                seen.assignment = consumer.assignment().get(TOPIC).cloned().unwrap_or_default();
                seen.records.extend(records.iter().map(|r| {
                    (r.partition, String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
                }));
            }
            consumer.close().await.expect("close leaves the group");
        })
    };
    eventually(SETTLE, "the member to own both partitions and read the old records", || async {
        let seen = seen.lock().unwrap();
        (seen.assignment == BTreeSet::from([0, 1]) && seen.records.len() as u64 == 2 * OLD_RECORDS).then_some(())
    })
    .await;

    // A producer whose metadata cache knows 2 partitions.
    let aging = ClientConfig { metadata_max_age: METADATA_MAX_AGE, ..ClientConfig::default() };
    let producer =
        Producer::new(Client::connect_with(&cluster.bootstrap(), aging).unwrap(), ProducerConfig::default()).unwrap();
    let keyed =
        |i: u32| Record { key: Some(format!("key-{i}").into()), value: Some("keyed".into()), ..Default::default() };
    let first = producer.send(TOPIC, keyed(0)).await.unwrap().await.unwrap();
    assert!(first.partition < 2);

    // Grow through the CLI.
    let altered = json_of(&cluster, &["topic", "alter", TOPIC, "--partitions", "5"]).await;
    let partitions = altered["partitions"].as_array().expect("partitions").clone();
    assert_eq!(partitions.len(), 5, "{altered}");
    for (index, partition) in partitions.iter().enumerate() {
        assert_eq!(partition["partition"], index);
        assert_eq!(partition["replicas"].as_array().map(Vec::len), Some(3), "{altered}");
    }
    assert_eq!(altered["configs"]["retention.ms"], "-1", "a grow changes no config");

    // Every partition gets a serving leader; describe shows 3 replicas each.
    cluster.wait_topic_ready(TOPIC, 5).await;
    let described = client.describe_topic(TOPIC).await.unwrap();
    assert_eq!(described.partitions.len(), 5);
    for p in &described.partitions {
        assert!(p.leader.is_some_and(|l| p.replicas.contains(&l)), "partition {} has a leader: {p:?}", p.partition);
        assert_eq!(p.replicas.iter().collect::<BTreeSet<_>>(), BTreeSet::from([&1, &2, &3]), "{p:?}");
        assert_eq!(p.error, None);
    }

    // Records go to the new partitions and come back; the old ones are intact.
    for partition in 2..5 {
        let values: Vec<String> = (0..3).map(|i| format!("new-{partition}-{i}")).collect();
        let records: Vec<(Option<&str>, &str)> = values.iter().map(|v| (None, v.as_str())).collect();
        assert_eq!(produce(&cluster, TOPIC, partition, &records, PRODUCE_TIMEOUT).await.unwrap(), 0);
        let read: Vec<String> = fetch_all(&cluster, TOPIC, partition, 0).await.iter().map(value_of).collect();
        assert_eq!(read, values, "partition {partition}");
    }
    for partition in 0..2 {
        let read = fetch_all(&cluster, TOPIC, partition, 0).await;
        let values: Vec<String> = read.iter().take(OLD_RECORDS as usize).map(value_of).collect();
        assert_eq!(values, old[&partition], "partition {partition} keeps its records and offsets");
        assert_eq!(read[0].offset, 0);
    }

    // The producer's cache ages and it sends keys over 5 partitions.
    let reached = eventually(SETTLE, "a keyed send to reach an added partition", || async {
        for i in 1..=20 {
            let delivered = producer.send(TOPIC, keyed(i)).await.unwrap().await.unwrap();
            if delivered.partition >= 2 {
                return Some(delivered.partition);
            }
        }
        None
    })
    .await;
    assert!(reached < 5);

    // The member subscribed before the alter owns and reads the new partitions.
    eventually(SETTLE, "the member to own and read every partition", || async {
        let seen = seen.lock().unwrap();
        let read: BTreeSet<u32> = seen.records.iter().map(|(p, _)| *p).collect();
        (seen.assignment == BTreeSet::from([0, 1, 2, 3, 4]) && (2..5).all(|p| read.contains(&p))).then_some(())
    })
    .await;
    {
        let seen = seen.lock().unwrap();
        for partition in 2..5 {
            let values: Vec<&str> =
                seen.records.iter().filter(|(p, v)| *p == partition && v.starts_with("new")).map(|r| &*r.1).collect();
            assert_eq!(values, [0, 1, 2].map(|i| format!("new-{partition}-{i}")), "partition {partition} read once");
        }
    }

    // Shrinking is refused with its code, through the client and the CLI;
    // a grow with a bad config is refused whole.
    let error = client.alter_topic(TOPIC, Some(3), BTreeMap::new()).await.expect_err("a shrink is refused");
    assert_eq!(error.code(), Some(ErrorCode::InvalidPartitions), "{error}");
    assert!(error.to_string().contains("can only grow"), "{error}");
    refused(&cluster, &["topic", "alter", TOPIC, "--partitions", "4"], "INVALID_PARTITIONS").await;
    let stderr =
        refused(&cluster, &["topic", "alter", TOPIC, "--partitions", "7", "--config", "nope=1"], "INVALID_CONFIG")
            .await;
    assert!(stderr.contains("unknown topic config 'nope'"), "{stderr}");
    let unchanged = json_of(&cluster, &["topic", "describe", TOPIC]).await;
    assert_eq!(unchanged["partitions"].as_array().map(Vec::len), Some(5), "refusals change nothing: {unchanged}");
    assert_eq!(unchanged["configs"]["retention.ms"], "-1");

    // A config change shows in describe, keeps the other keys, and
    // retention drops the two-hour-old records without a restart.
    let dedup_window = unchanged["configs"]["dedup.window"].clone();
    json_of(&cluster, &["topic", "alter", TOPIC, "--config", "retention.ms=1h"]).await;
    let described = json_of(&cluster, &["topic", "describe", TOPIC]).await;
    assert_eq!(described["configs"]["retention.ms"], "3600000", "{described}");
    assert_eq!(described["configs"]["dedup.window"], dedup_window, "keys not named keep their value");
    for partition in 0..2 {
        eventually(SETTLE, &format!("retention to drop partition {partition}'s old records"), || async {
            let (_, log_start, _) = partition_offsets(&cluster, TOPIC, partition).await?;
            (log_start == OLD_RECORDS).then_some(())
        })
        .await;
    }
    for partition in 2..5 {
        let (_, log_start, high_watermark) = partition_offsets(&cluster, TOPIC, partition).await.expect("a leader");
        assert_eq!(log_start, 0, "partition {partition}'s fresh records stay");
        assert!(high_watermark >= 3);
    }

    stop.send(true).unwrap();
    member.await.unwrap();
}
