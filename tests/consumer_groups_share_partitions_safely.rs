//! Consumer groups on a real cluster, through the client's group calls:
//! members share a topic's partitions disjointly, completely and evenly; a
//! join moves only what must move; a silent member loses its partitions
//! after its session timeout; committed offsets survive a kill -9 of the
//! metadata leader and a full restart; fenced and non-owning members cannot
//! commit; a static member that restarts gets its partitions back without
//! a rebalance.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use strata_client::{
    Client, ClientConfig, ClientError, ErrorCode, GroupHeartbeat, GroupState, OffsetToCommit, TopicPartitions,
    JOIN_EPOCH, LEAVE_EPOCH, STATIC_LEAVE_EPOCH,
};
use strata_cluster_tests::{create_topic, produce, Cluster};

/// Sessions long enough that a loaded test machine never expires a member
/// that heartbeats, and heartbeats often enough that rebalances are quick.
const STEADY: &str = "group_session_timeout = \"10s\"\ngroup_heartbeat_interval = \"500ms\"\n";
/// How long a group may take to settle after a change.
const SETTLE: Duration = Duration::from_secs(30);
/// Pause between rounds of heartbeats while waiting for a condition.
const ROUND: Duration = Duration::from_millis(100);

/// A well-behaved member driven by the test: it owns what its last answer
/// listed, gives up anything else at once, and reports what it owns with
/// every heartbeat.
struct Member {
    client: Client,
    group: String,
    topics: Vec<String>,
    instance_id: Option<String>,
    member_id: String,
    epoch: i32,
    owned: TopicPartitions,
    /// Every assignment it was answered, in order.
    answers: Vec<TopicPartitions>,
    last_answer_at: Instant,
}

impl Member {
    /// A member that has not joined yet; `member_id` empty: the server
    /// gives one.
    fn new(client: &Client, group: &str, topics: &[&str], instance_id: Option<&str>, member_id: &str) -> Member {
        Member {
            client: client.clone(),
            group: group.to_string(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            instance_id: instance_id.map(str::to_string),
            member_id: member_id.to_string(),
            epoch: JOIN_EPOCH,
            owned: TopicPartitions::new(),
            answers: Vec::new(),
            last_answer_at: Instant::now(),
        }
    }

    async fn join(client: &Client, group: &str, topics: &[&str], instance_id: Option<&str>) -> Member {
        let mut member = Member::new(client, group, topics, instance_id, "");
        member.beat().await.expect("join");
        assert!(!member.member_id.is_empty(), "the server gives a member id");
        member
    }

    fn heartbeat(&self) -> GroupHeartbeat {
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        GroupHeartbeat {
            member_id: self.member_id.clone(),
            member_epoch: self.epoch,
            instance_id: self.instance_id.clone(),
            owned_partitions: Some(self.owned.clone()),
            ..GroupHeartbeat::join(&self.group, &topics)
        }
    }

    async fn beat(&mut self) -> Result<(), ClientError> {
        let mut heartbeat = self.heartbeat();
        if self.epoch != JOIN_EPOCH {
            heartbeat.subscribed_topics = None;
        }
        let answer = self.client.group_heartbeat(&heartbeat).await?;
        self.member_id = answer.member_id;
        self.epoch = answer.member_epoch;
        self.owned = answer.assignment.clone();
        self.answers.push(answer.assignment);
        self.last_answer_at = Instant::now();
        Ok(())
    }

    async fn leave(&mut self, epoch: i32) {
        let heartbeat = GroupHeartbeat { member_epoch: epoch, subscribed_topics: None, ..self.heartbeat() };
        let answer = self.client.group_heartbeat(&heartbeat).await.expect("leave");
        assert_eq!(answer.member_epoch, epoch);
        assert!(answer.assignment.is_empty());
        self.owned.clear();
    }

    fn count(&self) -> usize {
        self.owned.values().map(BTreeSet::len).sum()
    }
}

fn partitions(topic: &str, range: std::ops::Range<u32>) -> TopicPartitions {
    BTreeMap::from([(topic.to_string(), range.collect())])
}

fn intersection(a: &TopicPartitions, b: &TopicPartitions) -> TopicPartitions {
    let mut out = TopicPartitions::new();
    for (topic, ps) in a {
        if let Some(other) = b.get(topic) {
            let both: BTreeSet<u32> = ps.intersection(other).copied().collect();
            if !both.is_empty() {
                out.insert(topic.clone(), both);
            }
        }
    }
    out
}

fn difference(a: &TopicPartitions, b: &TopicPartitions) -> TopicPartitions {
    let mut out = TopicPartitions::new();
    for (topic, ps) in a {
        let rest: BTreeSet<u32> = ps.iter().filter(|p| !b.get(topic).is_some_and(|o| o.contains(p))).copied().collect();
        if !rest.is_empty() {
            out.insert(topic.clone(), rest);
        }
    }
    out
}

fn is_subset(a: &TopicPartitions, b: &TopicPartitions) -> bool {
    difference(a, b).is_empty()
}

/// No partition is owned by two members; returns the union.
fn assert_disjoint(members: &[&Member]) -> TopicPartitions {
    let mut union = TopicPartitions::new();
    for member in members {
        for (topic, ps) in &member.owned {
            for p in ps {
                assert!(
                    union.entry(topic.clone()).or_default().insert(*p),
                    "{topic}/{p} is owned by two members at once"
                );
            }
        }
    }
    union
}

/// Heartbeats every member in rounds until the group is stable and the
/// members own exactly what the group says, checking after every round
/// that no partition has two owners.
async fn settle(members: &mut [&mut Member], expected: &TopicPartitions) {
    let deadline = Instant::now() + SETTLE;
    loop {
        for member in members.iter_mut() {
            member.beat().await.expect("heartbeat");
        }
        let union = assert_disjoint(&members.iter().map(|m| &**m).collect::<Vec<_>>());
        if &union == expected {
            let description = members[0].client.describe_group(&members[0].group).await.expect("describe");
            let agrees = description.members.len() == members.len()
                && members
                    .iter()
                    .all(|m| description.members.iter().any(|d| d.member_id == m.member_id && d.assignment == m.owned));
            if description.state == GroupState::Stable && agrees {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the group did not settle within {SETTLE:?}");
        tokio::time::sleep(ROUND).await;
    }
}

async fn three_stable_members(cluster: &Cluster, group: &str) -> (Client, Vec<Member>) {
    create_topic(cluster, 1, "events", 6, 3, &[]).await;
    let client = Client::connect(&cluster.bootstrap()).unwrap();
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(Member::join(&client, group, &["events"], None).await);
    }
    let mut refs: Vec<&mut Member> = members.iter_mut().collect();
    settle(&mut refs, &partitions("events", 0..6)).await;
    (client, members)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_share_six_partitions_disjointly_completely_and_evenly() {
    let cluster = Cluster::start_with_config(3, STEADY).await;
    let (client, members) = three_stable_members(&cluster, "readers").await;
    for member in &members {
        assert_eq!(member.count(), 2, "balanced: {:?}", member.owned);
    }
    // The cluster agrees: three members, each partition owned once.
    let description = client.describe_group("readers").await.unwrap();
    assert_eq!(description.state, GroupState::Stable);
    assert_eq!(description.partitions.len(), 6);
    for partition in &description.partitions {
        let owner = partition.owner.as_deref().expect("every partition is owned");
        let member = members.iter().find(|m| m.member_id == owner).expect("the owner is a member");
        assert!(member.owned["events"].contains(&partition.partition));
    }
    let listed = client.list_groups().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].group_id.as_str(), listed[0].members), ("readers", 3));
    // Every node answers alike: the ones that do not lead the metadata
    // group forward to the one that does.
    for node in &cluster.nodes {
        let via = Client::connect(std::slice::from_ref(&node.address)).unwrap();
        let seen = via.describe_group("readers").await.unwrap();
        assert_eq!((seen.group_epoch, seen.members.len()), (description.group_epoch, 3), "via node {}", node.id);
        assert!(seen.members.iter().all(|m| m.client_host == "127.0.0.1"), "{:?}", seen.members);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_member_takes_only_the_partitions_that_must_move() {
    let cluster = Cluster::start_with_config(3, STEADY).await;
    let (client, mut members) = three_stable_members(&cluster, "readers").await;
    let before: Vec<TopicPartitions> = members.iter().map(|m| m.owned.clone()).collect();
    let epoch_before = client.describe_group("readers").await.unwrap().group_epoch;
    for member in &mut members {
        member.answers.clear();
    }
    members.push(Member::join(&client, "readers", &["events"], None).await);
    let mut refs: Vec<&mut Member> = members.iter_mut().collect();
    settle(&mut refs, &partitions("events", 0..6)).await;
    assert!(client.describe_group("readers").await.unwrap().group_epoch > epoch_before);

    let after: Vec<TopicPartitions> = members.iter().map(|m| m.owned.clone()).collect();
    let counts: Vec<usize> = members.iter().map(Member::count).collect();
    assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1, "balanced: {counts:?}");
    let mut moved = TopicPartitions::new();
    for (index, member) in members.iter().take(3).enumerate() {
        // An old member gains nothing, loses at most the one partition
        // balance asks of it, and never stops owning what it keeps.
        assert!(is_subset(&after[index], &before[index]), "member {index} gained partitions");
        let revoked = difference(&before[index], &after[index]);
        assert!(revoked.values().map(BTreeSet::len).sum::<usize>() <= 1, "member {index} lost {revoked:?}");
        let kept = intersection(&before[index], &after[index]);
        for answer in &member.answers {
            assert!(is_subset(&kept, answer), "member {index} was told {answer:?}, without {kept:?} it keeps");
        }
        for (topic, ps) in revoked {
            moved.entry(topic).or_default().extend(ps);
        }
    }
    assert_eq!(after[3], moved, "the new member gets exactly what the others gave up");
    assert!(!moved.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_stops_heartbeating_loses_its_partitions_after_the_session_timeout() {
    // The shortest session timeout a group may have.
    let session = Duration::from_secs(2);
    let cluster =
        Cluster::start_with_config(3, "group_session_timeout = \"2s\"\ngroup_heartbeat_interval = \"500ms\"\n").await;
    create_topic(&cluster, 1, "events", 6, 3, &[]).await;
    let client = Client::connect(&cluster.bootstrap()).unwrap();
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(Member::join(&client, "readers", &["events"], None).await);
    }
    let mut refs: Vec<&mut Member> = members.iter_mut().collect();
    settle(&mut refs, &partitions("events", 0..6)).await;
    assert_eq!(client.describe_group("readers").await.unwrap().session_timeout, session);

    // The third member goes silent; the others keep heartbeating.
    let silent = members.pop().unwrap();
    let silent_since = silent.last_answer_at;
    let mut survivors: Vec<&mut Member> = members.iter_mut().collect();
    let deadline = silent_since + session + Duration::from_secs(10);
    let taken_over = loop {
        for member in survivors.iter_mut() {
            member.beat().await.expect("a live member keeps its session");
        }
        let union = assert_disjoint(&survivors.iter().map(|m| &**m).collect::<Vec<_>>());
        if union == partitions("events", 0..6) {
            break silent_since.elapsed();
        }
        let description = client.describe_group("readers").await.unwrap();
        if description.members.iter().any(|m| m.member_id == silent.member_id) {
            // Until it expires, the silent member's partitions go to no one.
            for partition in &description.partitions {
                if silent.owned["events"].contains(&partition.partition) {
                    assert_eq!(partition.owner.as_deref(), Some(silent.member_id.as_str()));
                }
            }
        }
        assert!(Instant::now() < deadline, "the survivors did not get every partition in time");
        tokio::time::sleep(ROUND).await;
    };
    eprintln!("partitions moved {taken_over:?} after the silent member's last heartbeat");
    assert!(taken_over >= session - Duration::from_millis(300), "expired early: {taken_over:?}");
    // The bound: within the session timeout and 2 s more (the time
    // for the survivors to heartbeat and be granted is part of it).
    assert!(taken_over <= session + Duration::from_secs(2), "expired late: {taken_over:?}");
    let description = client.describe_group("readers").await.unwrap();
    assert!(description.members.iter().all(|m| m.member_id != silent.member_id));
    // Its heartbeat now is refused: it must rejoin.
    let mut zombie = silent;
    let refused = zombie.beat().await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::UnknownMemberId), "{refused}");
}

fn offsets(values: &[(u32, u64)]) -> Vec<OffsetToCommit> {
    values
        .iter()
        .map(|(partition, offset)| OffsetToCommit {
            topic: "orders".into(),
            partition: *partition,
            offset: *offset,
            metadata: format!("at-{offset}"),
        })
        .collect()
}

async fn committed(client: &Client, group: &str) -> BTreeMap<u32, (u64, String)> {
    let fetched = client.fetch_offsets(group, &TopicPartitions::new()).await.expect("fetch offsets");
    fetched
        .into_iter()
        .map(|f| {
            let c = f.committed.expect("fetched without a filter: only committed partitions");
            (f.partition, (c.offset, c.metadata))
        })
        .collect()
}

/// Commits, and commits again the partitions whose high watermark could
/// not be checked because their leader was moving (a consumer retries
/// those); any other answer is returned.
async fn commit(
    client: &Client,
    group: &str,
    member_id: &str,
    epoch: i32,
    offsets: &[OffsetToCommit],
) -> Result<Vec<strata_client::CommitResult>, ClientError> {
    let moving = |r: &strata_client::CommitResult| {
        matches!(
            r.error.as_ref().and_then(ClientError::code),
            Some(ErrorCode::LeaderNotAvailable | ErrorCode::NotLeader | ErrorCode::PartitionNotReady)
        )
    };
    let deadline = Instant::now() + SETTLE;
    loop {
        let results = client.commit_offsets(group, member_id, epoch, offsets).await?;
        if !results.iter().any(moving) || Instant::now() >= deadline {
            return Ok(results);
        }
        tokio::time::sleep(ROUND).await;
    }
}

fn expected(values: &[(u32, u64)]) -> BTreeMap<u32, (u64, String)> {
    values.iter().map(|(p, o)| (*p, (*o, format!("at-{o}")))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_a_metadata_leader_kill_and_a_full_restart() {
    // Frequent snapshots, so restarts also restore groups from snapshots.
    let config = format!("{STEADY}snapshot_every_entries = 8\n");
    let mut cluster = Cluster::start_with_config(3, &config).await;
    create_topic(&cluster, 1, "orders", 3, 3, &[]).await;
    for partition in 0..3 {
        let records: Vec<(Option<&str>, &str)> = (0..10).map(|_| (None, "x")).collect();
        produce(&cluster, "orders", partition, &records, Duration::from_secs(30)).await.unwrap();
    }
    let client = Client::connect(&cluster.bootstrap()).unwrap();
    let mut member = Member::join(&client, "billing", &["orders"], None).await;
    let mut refs = [&mut member];
    settle(&mut refs, &partitions("orders", 0..3)).await;
    let first = [(0, 4), (1, 7), (2, 10)];
    let results = commit(&client, "billing", &member.member_id, member.epoch, &offsets(&first)).await.unwrap();
    assert!(results.iter().all(|r| r.error.is_none()), "{results:?}");
    assert_eq!(committed(&client, "billing").await, expected(&first));
    member.leave(LEAVE_EPOCH).await;

    let leader = cluster.wait_ready().await;
    cluster.kill(leader);
    cluster.wait_ready().await;
    let client = Client::connect(&cluster.bootstrap()).unwrap();
    assert_eq!(committed(&client, "billing").await, expected(&first), "after kill -9 of metadata leader {leader}");
    // The new leader takes commits: standalone ones, the group being empty.
    // Until the partition's own leader is known again (it may have been on
    // the killed node), its high watermark cannot be checked: that answer
    // is retryable, and retried here as a consumer would.
    let second = [(0, 6), (1, 7), (2, 10)];
    let results = commit(&client, "billing", "", -1, &offsets(&second[..1])).await.unwrap();
    assert!(results[0].error.is_none(), "{results:?}");

    cluster.start_node(leader);
    for id in 1..=3 {
        cluster.kill(id);
    }
    for id in [2, 3, 1] {
        cluster.start_node(id);
    }
    cluster.wait_ready().await;
    cluster.wait_topic_ready("orders", 3).await;
    let client = Client::connect(&cluster.bootstrap()).unwrap();
    assert_eq!(committed(&client, "billing").await, expected(&second), "after a full restart\n{}", cluster.logs());
    // Once every partition leader answers, the lag is what was committed
    // below each high watermark (10 records each).
    let description =
        eventually_described(&client, "billing", |d| d.partitions.iter().all(|p| p.high_watermark.is_some())).await;
    assert_eq!(description.state, GroupState::Empty);
    let lags: Vec<(u32, Option<u64>, Option<u64>)> =
        description.partitions.iter().map(|p| (p.partition, p.high_watermark, p.lag)).collect();
    assert_eq!(lags, vec![(0, Some(10), Some(4)), (1, Some(10), Some(3)), (2, Some(10), Some(0))]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_and_non_owning_members_cannot_commit() {
    let cluster = Cluster::start_with_config(3, STEADY).await;
    create_topic(&cluster, 1, "orders", 2, 3, &[]).await;
    for partition in 0..2 {
        produce(&cluster, "orders", partition, &[(None, "a"), (None, "b"), (None, "c")], Duration::from_secs(30))
            .await
            .unwrap();
    }
    let client = Client::connect(&cluster.bootstrap()).unwrap();
    let mut a = Member::join(&client, "billing", &["orders"], None).await;
    let mut b = Member::join(&client, "billing", &["orders"], None).await;
    let mut refs = [&mut a, &mut b];
    settle(&mut refs, &partitions("orders", 0..2)).await;
    let a_partition = *a.owned["orders"].first().unwrap();
    let b_partition = *b.owned["orders"].first().unwrap();
    let good = commit(&client, "billing", &a.member_id, a.epoch, &offsets(&[(a_partition, 1)])).await.unwrap();
    assert!(good[0].error.is_none(), "{good:?}");

    // A partition it does not own: refused for that partition only.
    let mixed = commit(&client, "billing", &b.member_id, b.epoch, &offsets(&[(b_partition, 2), (a_partition, 3)]))
        .await
        .unwrap();
    assert!(mixed[0].error.is_none(), "{mixed:?}");
    assert_eq!(mixed[1].error.as_ref().and_then(ClientError::code), Some(ErrorCode::StaleMemberEpoch));

    // Past the high watermark (3): OFFSET_OUT_OF_RANGE, with the range.
    let past = commit(&client, "billing", &a.member_id, a.epoch, &offsets(&[(a_partition, 4)])).await.unwrap();
    let error = past[0].error.as_ref().expect("refused");
    assert_eq!(error.code(), Some(ErrorCode::OffsetOutOfRange), "{error}");
    assert_eq!(error.details().map(|d| d.high_watermark), Some(3));

    // An epoch the group never gave: the whole commit is refused.
    let future = client.commit_offsets("billing", &a.member_id, a.epoch + 5, &offsets(&[(a_partition, 2)])).await;
    assert_eq!(future.unwrap_err().code(), Some(ErrorCode::FencedMemberEpoch));

    // A's process restarts and rejoins under its member id: the new
    // incarnation is at a new epoch, and the old one is fenced.
    let (old_id, old_epoch) = (a.member_id.clone(), a.epoch);
    let mut reborn = Member::new(&client, "billing", &["orders"], None, &old_id);
    reborn.beat().await.expect("rejoin");
    let mut refs = [&mut reborn, &mut b];
    settle(&mut refs, &partitions("orders", 0..2)).await;
    assert!(reborn.epoch > old_epoch, "a rejoin moves the member to a new epoch");
    let stale = client.commit_offsets("billing", &old_id, old_epoch, &offsets(&[(a_partition, 3)])).await.unwrap();
    assert_eq!(stale[0].error.as_ref().and_then(ClientError::code), Some(ErrorCode::StaleMemberEpoch), "{stale:?}");
    let mut zombie_beat = a.heartbeat();
    zombie_beat.subscribed_topics = None;
    let fenced = client.group_heartbeat(&zombie_beat).await.unwrap_err();
    assert_eq!(fenced.code(), Some(ErrorCode::FencedMemberEpoch), "{fenced}");

    // Nothing refused was stored.
    let stored = committed(&client, "billing").await;
    assert_eq!(stored.get(&a_partition).map(|c| c.0), Some(1));
    assert_eq!(stored.get(&b_partition).map(|c| c.0), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_that_restarts_gets_its_partitions_back_without_a_rebalance() {
    let cluster = Cluster::start_with_config(3, STEADY).await;
    create_topic(&cluster, 1, "events", 6, 3, &[]).await;
    let client = Client::connect(&cluster.bootstrap()).unwrap();
    let mut a = Member::join(&client, "readers", &["events"], Some("pod-a")).await;
    let mut b = Member::join(&client, "readers", &["events"], Some("pod-b")).await;
    let mut refs = [&mut a, &mut b];
    settle(&mut refs, &partitions("events", 0..6)).await;
    let before = client.describe_group("readers").await.unwrap();
    let (a_owned, b_owned) = (a.owned.clone(), b.owned.clone());
    assert_eq!((a.count(), b.count()), (3, 3));

    // A stops for a restart: it leaves for now and keeps its place.
    a.leave(STATIC_LEAVE_EPOCH).await;
    b.answers.clear();
    b.beat().await.unwrap();
    let away = client.describe_group("readers").await.unwrap();
    assert_eq!(away.group_epoch, before.group_epoch, "a static leave is no rebalance");
    let held = away.members.iter().find(|m| m.instance_id.as_deref() == Some("pod-a")).expect("its place is kept");
    assert_eq!(held.member_epoch, STATIC_LEAVE_EPOCH);
    assert_eq!(held.assignment, a_owned);

    // The restarted process joins with the same instance id and no member
    // id: it gets the same partitions at once, with no new group epoch.
    let mut restarted = Member::join(&client, "readers", &["events"], Some("pod-a")).await;
    assert_eq!(restarted.owned, a_owned, "the first answer gives its partitions back");
    let mut refs = [&mut restarted, &mut b];
    settle(&mut refs, &partitions("events", 0..6)).await;
    let after = client.describe_group("readers").await.unwrap();
    assert_eq!(after.group_epoch, before.group_epoch, "no rebalance");
    assert_eq!((restarted.owned.clone(), b.owned.clone()), (a_owned, b_owned.clone()));
    assert!(b.answers.iter().all(|answer| answer == &b_owned), "the other member never lost anything");
    // A second live member with the same instance id is refused. The
    // refusal says to back off, which the client retries within its request
    // timeout: a short one keeps the others' sessions alive meanwhile.
    let impatient = ClientConfig { request_timeout: Duration::from_secs(2), ..ClientConfig::default() };
    let impatient = Client::connect_with(&cluster.bootstrap(), impatient).unwrap();
    let twin = GroupHeartbeat { instance_id: Some("pod-a".into()), ..GroupHeartbeat::join("readers", &["events"]) };
    let refused = impatient.group_heartbeat(&twin).await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::UnreleasedInstanceId), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_created_or_deleted_later_reach_the_group_without_a_heartbeat() {
    let cluster = Cluster::start_with_config(3, STEADY).await;
    let client = Client::connect(&cluster.bootstrap()).unwrap();
    // A subscription to a topic that does not exist yet is allowed.
    let mut member = Member::join(&client, "early", &["later"], None).await;
    assert!(member.owned.is_empty());
    let joined = client.describe_group("early").await.unwrap();
    assert!(joined.partitions.is_empty());

    // Created: the leader brings the group up to date on its own (a new
    // group epoch and target), before the member heartbeats again.
    create_topic(&cluster, 1, "later", 2, 3, &[]).await;
    let refreshed = eventually_described(&client, "early", |d| d.partitions.len() == 2).await;
    assert!(refreshed.group_epoch > joined.group_epoch);
    assert_eq!(refreshed.members[0].member_epoch, joined.members[0].member_epoch, "no heartbeat came meanwhile");
    let mut refs = [&mut member];
    settle(&mut refs, &partitions("later", 0..2)).await;

    // Deleted: the group drops the topic the same way, and the member's
    // next heartbeat gives its partitions up.
    let before_delete = client.describe_group("early").await.unwrap();
    client.delete_topic("later").await.unwrap();
    let dropped = eventually_described(&client, "early", |d| d.group_epoch > before_delete.group_epoch).await;
    assert!(dropped.partitions.iter().all(|p| p.owner.as_deref() == Some(member.member_id.as_str())));
    let mut refs = [&mut member];
    settle(&mut refs, &TopicPartitions::new()).await;
    assert!(client.describe_group("early").await.unwrap().partitions.is_empty());
}

/// Describes `group` until `done` holds, without heartbeating anyone.
async fn eventually_described(
    client: &Client,
    group: &str,
    done: impl Fn(&strata_client::GroupDescription) -> bool,
) -> strata_client::GroupDescription {
    let deadline = Instant::now() + SETTLE;
    loop {
        let description = client.describe_group(group).await.unwrap();
        if done(&description) {
            return description;
        }
        assert!(Instant::now() < deadline, "group {group} never reached the state awaited: {description:?}");
        tokio::time::sleep(ROUND).await;
    }
}
