//! Group consumers on a real cluster: members of one group read a topic's
//! partitions disjointly and completely; a member that joins takes only
//! the partitions that move, and the others never stop reading theirs; a
//! consumer process killed with SIGKILL loses its partitions to the others
//! within the session timeout and 2 s; one stopped with SIGTERM leaves at
//! once with everything it printed committed; pause, resume, seek and
//! commits do what they say.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_client::batch::{encode_batch, ProducerFields};
use strata_client::{
    Acks, Client, GroupConsumer, GroupConsumerConfig, GroupDescription, GroupEvent, GroupState, OffsetReset, Record,
    TopicPartitions,
};
use strata_cluster_tests::{create_topic, eventually, produce, strata_binary, Cluster};
use tokio::io::AsyncBufReadExt;

/// Sessions long enough that a loaded machine never expires a member that
/// heartbeats; heartbeats often enough that rebalances are quick.
const STEADY: &str = "group_session_timeout = \"10s\"\ngroup_heartbeat_interval = \"500ms\"\n";
/// How long a group may take to settle, or members to read what exists.
const SETTLE: Duration = Duration::from_secs(40);
/// One poll's wait.
const POLL: Duration = Duration::from_millis(200);

/// What the members of one test read: (member, partition, offset), in the
/// order each member got them, and every member's events.
#[derive(Default)]
struct Seen {
    records: Vec<(usize, u32, u64)>,
    events: BTreeMap<usize, Vec<GroupEvent>>,
}

/// Runs a group consumer in its own task until `stop` turns true, then
/// closes it (leaving the group).
fn spawn_member(
    client: &Client,
    index: usize,
    group: &str,
    topic: &str,
    seen: Arc<Mutex<Seen>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let config = GroupConsumerConfig {
        client_id: format!("member-{index}"),
        auto_offset_reset: OffsetReset::Earliest,
        ..GroupConsumerConfig::default()
    };
    let mut consumer = GroupConsumer::new(client.clone(), group, config);
    consumer.subscribe(&[topic]).expect("subscribe");
    tokio::spawn(async move {
        while !*stop.borrow() {
            let records = consumer.poll(POLL).await.expect("poll");
            let mut seen = seen.lock().unwrap();
            seen.events.entry(index).or_default().extend(consumer.take_events());
            seen.records.extend(records.iter().map(|r| (index, r.partition, r.offset)));
        }
        consumer.close().await.expect("close leaves the group");
    })
}

async fn describe(client: &Client, group: &str) -> Option<GroupDescription> {
    client.describe_group(group).await.ok()
}

/// The group once it is stable with `members` members and every one of
/// `partitions` partitions owned.
async fn stable_with(client: &Client, group: &str, members: usize, partitions: usize) -> GroupDescription {
    eventually(SETTLE, &format!("group {group} stable with {members} members"), || async {
        let description = describe(client, group).await?;
        let owned = description.partitions.iter().filter(|p| p.owner.is_some()).count();
        (description.state == GroupState::Stable && description.members.len() == members && owned == partitions)
            .then_some(description)
    })
    .await
}

/// Partition -> owner member id.
fn owners(description: &GroupDescription) -> BTreeMap<u32, String> {
    description.partitions.iter().filter_map(|p| Some((p.partition, p.owner.clone()?))).collect()
}

fn flat(partitions: &TopicPartitions) -> BTreeSet<u32> {
    partitions.values().flatten().copied().collect()
}

#[tokio::test]
async fn members_share_a_topic_and_a_join_moves_only_what_it_must() {
    let cluster = Cluster::start_with_config(3, STEADY).await;
    let topic = "orders";
    create_topic(&cluster, 1, topic, 6, 3, &[]).await;
    cluster.wait_topic_ready(topic, 6).await;
    let client = Client::connect(&cluster.bootstrap()).unwrap();

    // A steady trickle into every partition for the whole test.
    let (stop_producing, producing) = tokio::sync::watch::channel(false);
    let (stop_reading, reading) = tokio::sync::watch::channel(false);
    let produced = Arc::new(Mutex::new(BTreeMap::<u32, u64>::new()));
    let producer = {
        let (client, produced, stop) = (client.clone(), produced.clone(), producing);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            let mut round = 0u64;
            while !*stop.borrow() {
                tick.tick().await;
                for partition in 0..6 {
                    let record = Record { value: Some(format!("{partition}-{round}").into()), ..Default::default() };
                    let batch = encode_batch(&[record], ProducerFields::default()).expect("encode");
                    let sent = client.produce_batch(topic, partition, batch, Acks::All, Duration::from_secs(5)).await;
                    if let Ok(answer) = sent {
                        let end = answer.base_offset + 1;
                        let mut produced = produced.lock().unwrap();
                        let high = produced.entry(partition).or_default();
                        *high = (*high).max(end);
                    }
                }
                round += 1;
            }
        })
    };

    let group = "sharing";
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut members: Vec<_> =
        (0..3).map(|i| spawn_member(&client, i, group, topic, seen.clone(), reading.clone())).collect();
    let before = stable_with(&client, group, 3, 6).await;
    let counts: Vec<usize> = before.members.iter().map(|m| flat(&m.assignment).len()).collect();
    assert_eq!(counts, vec![2, 2, 2], "3 members share 6 partitions evenly: {before:?}");

    // A fourth member joins while records keep coming.
    let (joined_at, events_at_join) = {
        let seen = seen.lock().unwrap();
        let events: BTreeMap<usize, usize> = seen.events.iter().map(|(&m, e)| (m, e.len())).collect();
        (seen.records.len(), events)
    };
    members.push(spawn_member(&client, 3, group, topic, seen.clone(), reading.clone()));
    let after = stable_with(&client, group, 4, 6).await;
    let (owners_before, owners_after) = (owners(&before), owners(&after));
    let moved: BTreeSet<u32> = (0..6).filter(|p| owners_before[p] != owners_after[p]).collect();
    let newcomer = after.members.iter().find(|m| m.client_id == "member-3").expect("the new member");
    assert_eq!(moved, flat(&newcomer.assignment), "only what the newcomer took moved");
    assert_eq!(moved.len(), 1, "6 partitions over 4 members: the newcomer takes one or two, uniform moves one");

    // Every partition keeps being read after the join.
    eventually(SETTLE, "records of every partition read after the join", || async {
        let seen = seen.lock().unwrap();
        let read: BTreeSet<u32> = seen.records[joined_at..].iter().map(|&(_, p, _)| p).collect();
        (read.len() == 6).then_some(())
    })
    .await;

    // Stop producing, then wait until everything produced was read.
    stop_producing.send(true).ok();
    let _ = producer.await;
    let produced = produced.lock().unwrap().clone();
    eventually(SETTLE, "every produced record read", || async {
        let seen = seen.lock().unwrap();
        let read: BTreeSet<(u32, u64)> = seen.records.iter().map(|&(_, p, o)| (p, o)).collect();
        produced.iter().all(|(&p, &end)| (0..end).all(|o| read.contains(&(p, o)))).then_some(())
    })
    .await;
    stop_reading.send(true).ok();
    for member in members {
        member.await.expect("member task");
    }

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    // Exactly once: handovers commit what was read before giving a
    // partition up, and the next owner starts there.
    let mut times: BTreeMap<(u32, u64), usize> = BTreeMap::new();
    for &(_, p, o) in &seen.records {
        *times.entry((p, o)).or_default() += 1;
    }
    let doubles: Vec<_> = times.iter().filter(|(_, &n)| n > 1).collect();
    assert!(doubles.is_empty(), "records read twice: {doubles:?}");
    // Offsets of each partition were read in order, without gaps, by
    // whoever owned it (past the last acknowledged one when a send whose
    // answer was lost was stored anyway).
    for partition in 0..6 {
        let offsets: Vec<u64> = seen.records.iter().filter(|r| r.1 == partition).map(|r| r.2).collect();
        assert_eq!(offsets, (0..offsets.len() as u64).collect::<Vec<_>>(), "partition {partition}");
        assert!(offsets.len() as u64 >= produced[&partition], "partition {partition}");
    }
    // After the join only the moved partition was revoked, from its old
    // owner (before it, the first member gave up what the next two took);
    // nothing was lost.
    let mut revoked = BTreeSet::new();
    for (member, events) in &seen.events {
        let skip = events_at_join.get(member).copied().unwrap_or(0);
        for event in &events[skip..] {
            match event {
                GroupEvent::Revoked(p) => revoked.extend(flat(p)),
                GroupEvent::Lost(p) => panic!("a healthy member lost partitions {p:?}"),
                GroupEvent::Assigned(_) => {}
            }
        }
    }
    assert_eq!(revoked, moved, "the members that kept their partitions never gave them up");
    // Every member closed: the group is empty at once.
    let end = describe(&client, group).await.expect("group");
    assert_eq!(end.state, GroupState::Empty, "{end:?}");
}

/// A `strata consume --group` process whose printed lines are collected.
struct ConsumerProcess {
    child: tokio::process::Child,
    printed: Arc<Mutex<Vec<(u32, u64)>>>,
}

impl ConsumerProcess {
    fn start(cluster: &Cluster, topic: &str, group: &str) -> ConsumerProcess {
        let mut child = tokio::process::Command::new(strata_binary())
            .args(["--bootstrap", &cluster.bootstrap().join(","), "--json", "consume", topic])
            .args(["--group", group, "--from-beginning"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start strata consume");
        let printed = Arc::new(Mutex::new(Vec::new()));
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let sink = printed.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let record: serde_json::Value = serde_json::from_str(&line).expect("one JSON record per line");
                let at = (record["partition"].as_u64().unwrap() as u32, record["offset"].as_u64().unwrap());
                sink.lock().unwrap().push(at);
            }
        });
        ConsumerProcess { child, printed }
    }

    fn printed(&self) -> BTreeSet<(u32, u64)> {
        self.printed.lock().unwrap().iter().copied().collect()
    }
}

async fn produce_round(cluster: &Cluster, topic: &str, partitions: u32, count: usize) {
    let values: Vec<String> = (0..count).map(|i| format!("v{i}")).collect();
    let records: Vec<(Option<&str>, &str)> = values.iter().map(|v| (None, v.as_str())).collect();
    for partition in 0..partitions {
        produce(cluster, topic, partition, &records, Duration::from_secs(20)).await.expect("produce");
    }
}

#[tokio::test]
async fn a_killed_consumer_process_hands_over_and_a_stopped_one_leaves_at_once() {
    let session = Duration::from_secs(6);
    let config = "group_session_timeout = \"6s\"\ngroup_heartbeat_interval = \"500ms\"\n";
    let cluster = Cluster::start_with_config(3, config).await;
    let (topic, group) = ("events", "printers");
    create_topic(&cluster, 1, topic, 4, 3, &[]).await;
    cluster.wait_topic_ready(topic, 4).await;
    let client = Client::connect(&cluster.bootstrap()).unwrap();

    let mut doomed = ConsumerProcess::start(&cluster, topic, group);
    let mut survivor = ConsumerProcess::start(&cluster, topic, group);
    stable_with(&client, group, 2, 4).await;
    produce_round(&cluster, topic, 4, 10).await;
    let all = |end: u64| -> BTreeSet<(u32, u64)> { (0..4).flat_map(|p| (0..end).map(move |o| (p, o))).collect() };
    eventually(SETTLE, "the two processes print every record", || async {
        let printed: BTreeSet<_> = doomed.printed().union(&survivor.printed()).copied().collect();
        (printed == all(10)).then_some(())
    })
    .await;

    doomed.child.start_kill().expect("SIGKILL");
    let killed_at = Instant::now();
    doomed.child.wait().await.expect("reaped");
    let bound = session + Duration::from_secs(2);
    let alone = eventually(bound + SETTLE, "the survivor owns every partition", || async {
        let description = describe(&client, group).await?;
        let owned = description.partitions.iter().filter(|p| p.owner.is_some()).count();
        (description.members.len() == 1 && owned == 4).then_some(description)
    })
    .await;
    let took = killed_at.elapsed();
    assert!(took <= bound, "the partitions moved {took:?} after the kill, later than session timeout + 2 s");
    assert_eq!(flat(&alone.members[0].assignment).len(), 4);

    // The survivor prints what comes next on every partition, including
    // the ones it took over (from their committed offsets: what the killed
    // process printed and committed is not printed again... unless it died
    // between printing and committing, which at-least-once allows).
    produce_round(&cluster, topic, 4, 10).await;
    eventually(SETTLE, "the survivor prints the new records of every partition", || async {
        let printed = survivor.printed();
        (0..4).all(|p| (10..20).all(|o| printed.contains(&(p, o)))).then_some(())
    })
    .await;

    // SIGTERM: the process commits, leaves and exits; the group is empty
    // the moment it is gone, long before any session timeout.
    let pid = survivor.child.id().expect("running") as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let status = tokio::time::timeout(SETTLE, survivor.child.wait()).await.expect("exits").expect("status");
    assert!(status.success(), "strata consume exits cleanly on SIGTERM: {status:?}");
    let end = describe(&client, group).await.expect("group");
    assert_eq!(end.state, GroupState::Empty, "left at once: {end:?}");
    for partition in &end.partitions {
        assert_eq!(partition.committed_offset, Some(20), "everything printed is committed: {partition:?}");
        assert_eq!(partition.lag, Some(0));
    }
}

#[tokio::test]
async fn pause_resume_seek_and_commits_do_what_they_say() {
    let cluster = Cluster::start_with_config(3, STEADY).await;
    let (topic, group) = ("ledger", "auditor");
    create_topic(&cluster, 1, topic, 2, 3, &[]).await;
    cluster.wait_topic_ready(topic, 2).await;
    let client = Client::connect(&cluster.bootstrap()).unwrap();
    produce_round(&cluster, topic, 2, 10).await;

    let config = GroupConsumerConfig {
        auto_commit: false,
        auto_offset_reset: OffsetReset::Earliest,
        ..GroupConsumerConfig::default()
    };
    let mut consumer = GroupConsumer::new(client.clone(), group, config.clone());
    consumer.subscribe(&[topic]).unwrap();
    let mut read: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    let deadline = Instant::now() + SETTLE;
    while read.values().map(Vec::len).sum::<usize>() < 20 {
        assert!(Instant::now() < deadline, "read only {read:?}");
        for record in consumer.poll(POLL).await.unwrap() {
            read.entry(record.partition).or_default().push(record.offset);
        }
    }
    assert_eq!(read[&0], (0..10).collect::<Vec<_>>());
    assert_eq!(consumer.take_events(), vec![GroupEvent::Assigned([(topic.to_string(), [0, 1].into())].into())]);

    // Paused: partition 0 yields nothing until resumed; 1 goes on.
    assert!(consumer.pause(topic, 0));
    produce_round(&cluster, topic, 2, 5).await;
    let mut while_paused: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    let deadline = Instant::now() + SETTLE;
    while while_paused.get(&1).map_or(0, Vec::len) < 5 {
        assert!(Instant::now() < deadline, "partition 1 stalled: {while_paused:?}");
        for record in consumer.poll(POLL).await.unwrap() {
            while_paused.entry(record.partition).or_default().push(record.offset);
        }
    }
    assert!(!while_paused.contains_key(&0), "a paused partition returned records: {while_paused:?}");
    assert!(consumer.resume(topic, 0));
    let mut resumed = Vec::new();
    let deadline = Instant::now() + SETTLE;
    while resumed.len() < 5 {
        assert!(Instant::now() < deadline, "partition 0 did not resume: {resumed:?}");
        resumed.extend(consumer.poll(POLL).await.unwrap().iter().filter(|r| r.partition == 0).map(|r| r.offset));
    }
    assert_eq!(resumed, (10..15).collect::<Vec<_>>());

    // Seek back on partition 1, commit, and the group stores the positions.
    assert!(consumer.seek(topic, 1, 3));
    assert!(!consumer.seek(topic, 7, 0), "not a partition of this member");
    consumer.commit_sync().await.expect("commit");
    let committed = client.fetch_offsets(group, &TopicPartitions::new()).await.unwrap();
    let committed: BTreeMap<u32, u64> =
        committed.iter().map(|f| (f.partition, f.committed.as_ref().unwrap().offset)).collect();
    assert_eq!(committed, BTreeMap::from([(0, 15), (1, 3)]));
    let again = consumer.poll(SETTLE).await.unwrap();
    assert_eq!(again.first().map(|r| (r.partition, r.offset)), Some((1, 3)), "reads on from the seek");
    consumer.close().await.unwrap();

    // A new member starts at the committed offsets, not at the reset point.
    produce_round(&cluster, topic, 2, 1).await;
    let mut next = GroupConsumer::new(client.clone(), group, config);
    next.subscribe(&[topic]).unwrap();
    let mut firsts: BTreeMap<u32, u64> = BTreeMap::new();
    let deadline = Instant::now() + SETTLE;
    while firsts.len() < 2 {
        assert!(Instant::now() < deadline, "the new member read only {firsts:?}");
        for record in next.poll(POLL).await.unwrap() {
            firsts.entry(record.partition).or_insert(record.offset);
        }
    }
    assert_eq!(firsts, BTreeMap::from([(0, 15), (1, 3)]));
    next.close().await.unwrap();
}

#[tokio::test]
async fn a_committed_offset_trimmed_by_retention_restarts_at_the_reset_point() {
    let cluster = Cluster::start_with_config(3, STEADY).await;
    let (topic, group) = ("trimmed", "late-readers");
    create_topic(&cluster, 1, topic, 1, 3, &[("retention.bytes", "4000")]).await;
    cluster.wait_topic_ready(topic, 1).await;
    let client = Client::connect(&cluster.bootstrap()).unwrap();
    // The group read one record long ago.
    produce_round(&cluster, topic, 1, 1).await;
    let commit =
        [strata_client::OffsetToCommit { topic: topic.into(), partition: 0, offset: 1, metadata: String::new() }];
    let results = client.commit_offsets(group, "", strata_client::LEAVE_EPOCH, &commit).await.expect("commit");
    assert!(results.iter().all(|r| r.error.is_none()), "{results:?}");
    // Since then retention trimmed the log past that offset.
    let value = "x".repeat(400);
    for _ in 0..40 {
        produce(&cluster, topic, 0, &[(None, &value)], Duration::from_secs(30)).await.unwrap();
    }
    let log_start = eventually(SETTLE, "retention to trim past the committed offset", || async {
        strata_cluster_tests::partition_offsets(&cluster, topic, 0).await.map(|(_, start, _)| start).filter(|s| *s > 1)
    })
    .await;

    let config = GroupConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..GroupConsumerConfig::default() };
    let mut consumer = GroupConsumer::new(client.clone(), group, config);
    consumer.subscribe(&[topic]).unwrap();
    let deadline = Instant::now() + SETTLE;
    let first = loop {
        assert!(Instant::now() < deadline, "no record read after the reset");
        let records = consumer.poll(POLL).await.expect("poll resets instead of failing");
        if let Some(record) = records.first() {
            break record.offset;
        }
    };
    assert!(first >= log_start, "read from {first}, below the log start {log_start}");
    consumer.close().await.unwrap();
}
