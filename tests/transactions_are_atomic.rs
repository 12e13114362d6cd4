//! Transactions on a real cluster of `strata server` processes: a committed
//! transaction over three partitions of two topics is seen whole by
//! read_committed readers and an aborted one never; a read_committed
//! reader stops at an open transaction's first record and moves on when
//! it ends; a new instance of a transactional id aborts the old one's
//! transaction and fences its late sends; a transaction past its timeout
//! is aborted and blocks no reader; a coordinator killed with SIGKILL
//! between its decision and its markers leaves a transaction that still
//! completes; offsets staged in a transaction are stored only when it
//! commits, fenced like the member's own commits; bad input is refused.

use std::time::Duration;

use strata_client::{
    Client, ClientError, ConsumerConfig, ErrorCode, GroupConsumer, GroupConsumerConfig, IsolationLevel, OffsetReset,
    Record, TransactionError, TransactionalConfig, TransactionalProducer,
};
use strata_cluster_tests::{create_topic, eventually, produce, Cluster};

/// How long markers, elections and timeouts may take to show.
const SETTLE: Duration = Duration::from_secs(30);
const GROUPS: &str = "group_session_timeout = \"10s\"\ngroup_heartbeat_interval = \"500ms\"\n";

fn record(value: &str) -> Record {
    Record { value: Some(value.to_string().into()), ..Default::default() }
}

/// Every value of a partition a reader at `isolation` sees now, in order.
async fn values(client: &Client, topic: &str, partition: u32, isolation: IsolationLevel) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let answer = client.fetch_isolated(topic, partition, offset, 1 << 20, Duration::ZERO, isolation).await.ok()?;
        let records = strata_record::decode_records_from(&answer.records, offset).ok()?;
        let before = offset;
        for r in records {
            out.push(String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned());
            offset = r.offset + 1;
        }
        offset = offset.max(answer.next_offset);
        if offset == before {
            return Some(out);
        }
    }
}

async fn committed(client: &Client, topic: &str, partition: u32) -> Vec<String> {
    values(client, topic, partition, IsolationLevel::ReadCommitted).await.expect("read_committed fetch")
}

/// Waits until read_committed readers of `topic`/`partition` see `expected`.
async fn eventually_committed(client: &Client, topic: &str, partition: u32, expected: &[&str]) {
    eventually(SETTLE, &format!("{topic}/{partition} to read {expected:?}"), || async {
        let seen = values(client, topic, partition, IsolationLevel::ReadCommitted).await?;
        (seen == expected).then_some(())
    })
    .await
}

async fn producer(client: &Client, id: &str) -> TransactionalProducer {
    TransactionalProducer::init(client.clone(), TransactionalConfig::new(id)).await.expect("init")
}

fn code(error: &TransactionError) -> Option<ErrorCode> {
    error.error().code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_committed_transaction_is_seen_whole_and_an_aborted_one_never() {
    let cluster = Cluster::start(3).await;
    create_topic(&cluster, 1, "a", 2, 3, &[]).await;
    create_topic(&cluster, 1, "b", 1, 3, &[]).await;
    let client = Client::connect(&cluster.bootstrap()).unwrap();
    let mut txn = producer(&client, "whole").await;

    txn.begin().unwrap();
    for (topic, partition, value) in [("a", 0, "c1"), ("a", 1, "c2"), ("b", 0, "c3")] {
        txn.send_to(topic, partition, record(value)).unwrap();
    }
    txn.commit().await.unwrap();
    txn.begin().unwrap();
    txn.send_to("a", 0, record("x1")).unwrap();
    txn.send_to("b", 0, record("x2")).unwrap();
    txn.flush().await.unwrap();
    txn.abort().await.unwrap();
    txn.begin().unwrap();
    txn.send_to("a", 0, record("c4")).unwrap();
    txn.commit().await.unwrap();

    eventually_committed(&client, "a", 0, &["c1", "c4"]).await;
    assert_eq!(committed(&client, "a", 1).await, ["c2"]);
    assert_eq!(committed(&client, "b", 0).await, ["c3"], "the aborted x2 is never shown");
    let raw = values(&client, "a", 0, IsolationLevel::ReadUncommitted).await.unwrap();
    assert_eq!(raw, ["c1", "x1", "c4"], "read_uncommitted shows the aborted record, never a marker");
    let description = eventually(SETTLE, "the last transaction to complete", || async {
        let d = client.describe_transaction("whole").await.ok()?;
        (d.state == "COMPLETE_COMMIT").then_some(d)
    })
    .await;
    assert_eq!(description.age_ms, 0);
    assert_eq!(description.producer_epoch, 3, "every end bumped the epoch: init 0, then three ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_committed_reader_stops_at_an_open_transaction_until_it_ends() {
    let cluster = Cluster::start(3).await;
    create_topic(&cluster, 1, "s", 1, 3, &[]).await;
    let client = Client::connect(&cluster.bootstrap()).unwrap();
    produce(&cluster, "s", 0, &[(None, "before")], SETTLE).await.unwrap();
    let mut txn = producer(&client, "open").await;
    txn.begin().unwrap();
    txn.send_to("s", 0, record("in-txn")).unwrap();
    txn.flush().await.unwrap();
    produce(&cluster, "s", 0, &[(None, "after")], SETTLE).await.unwrap();

    let uncommitted = values(&client, "s", 0, IsolationLevel::ReadUncommitted).await.unwrap();
    assert_eq!(uncommitted, ["before", "in-txn", "after"]);
    assert_eq!(committed(&client, "s", 0).await, ["before"], "stops at the open transaction's first record");
    let answer =
        client.fetch_isolated("s", 0, 1, 1 << 20, Duration::ZERO, IsolationLevel::ReadCommitted).await.unwrap();
    assert_eq!((answer.last_stable_offset, answer.high_watermark), (1, 3));
    let listed = client.list_transactions().await.unwrap();
    let open = listed.iter().find(|t| t.transactional_id == "open").expect("listed");
    assert_eq!(open.state, "ONGOING");
    assert_eq!(open.partitions.get("s"), Some(&vec![0]));

    txn.commit().await.unwrap();
    eventually_committed(&client, "s", 0, &["before", "in-txn", "after"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_instance_aborts_the_old_transaction_and_fences_the_zombie() {
    let cluster = Cluster::start(3).await;
    create_topic(&cluster, 1, "z", 1, 3, &[]).await;
    let client = Client::connect(&cluster.bootstrap()).unwrap();
    let mut zombie = producer(&client, "job").await;
    zombie.begin().unwrap();
    zombie.send_to("z", 0, record("zombie-1")).unwrap();
    zombie.flush().await.unwrap();

    let mut fresh = producer(&client, "job").await;
    assert_ne!(fresh.producer(), zombie.producer(), "the new instance runs at a newer epoch");
    zombie.send_to("z", 0, record("zombie-2")).unwrap();
    let late = zombie.flush().await.unwrap_err();
    assert!(late.is_fatal() && code(&late) == Some(ErrorCode::ProducerFenced), "{late}");
    let commit = zombie.commit().await.unwrap_err();
    assert!(commit.is_fatal(), "every call after a fatal error fails: {commit}");

    fresh.begin().unwrap();
    fresh.send_to("z", 0, record("fresh-1")).unwrap();
    fresh.commit().await.unwrap();
    eventually_committed(&client, "z", 0, &["fresh-1"]).await;
    let raw = values(&client, "z", 0, IsolationLevel::ReadUncommitted).await.unwrap();
    assert_eq!(raw, ["zombie-1", "fresh-1"], "the zombie's late send was never stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_timed_out_transaction_is_aborted_and_blocks_no_reader() {
    let cluster = Cluster::start(3).await;
    create_topic(&cluster, 1, "t", 1, 3, &[]).await;
    let client = Client::connect(&cluster.bootstrap()).unwrap();
    let config =
        TransactionalConfig { transaction_timeout: Duration::from_secs(2), ..TransactionalConfig::new("slow") };
    let mut slow = TransactionalProducer::init(client.clone(), config).await.unwrap();
    slow.begin().unwrap();
    slow.send_to("t", 0, record("slow-1")).unwrap();
    slow.flush().await.unwrap();
    produce(&cluster, "t", 0, &[(None, "plain-1")], SETTLE).await.unwrap();

    eventually_committed(&client, "t", 0, &["plain-1"]).await;
    let state = client.describe_transaction("slow").await.unwrap().state;
    assert!(state == "COMPLETE_ABORT" || state == "PREPARE_ABORT", "aborted by the coordinator: {state}");
    let error = slow.commit().await.unwrap_err();
    assert!(!error.is_fatal(), "a timeout is abortable: {error}");
    assert_eq!(code(&error), Some(ErrorCode::TransactionTimedOut), "told it timed out, not fenced: {error}");
    slow.abort().await.unwrap();
    slow.begin().unwrap();
    slow.send_to("t", 0, record("slow-2")).unwrap();
    slow.commit().await.unwrap();
    eventually_committed(&client, "t", 0, &["plain-1", "slow-2"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_coordinator_killed_between_its_decision_and_the_markers_still_completes() {
    let hold = tempfile::tempdir().unwrap();
    let hold_file = hold.path().join("hold");
    let config = format!("[faults]\nhold_txn_markers_while = \"{}\"\n", hold_file.display());
    let mut cluster = Cluster::start_with_config(3, &config).await;
    create_topic(&cluster, 1, "k", 2, 3, &[]).await;
    let client = Client::connect(&cluster.bootstrap()).unwrap();
    let mut txn = producer(&client, "decided").await;
    std::fs::write(&hold_file, b"").unwrap();
    txn.begin().unwrap();
    txn.send_to("k", 0, record("k0")).unwrap();
    txn.send_to("k", 1, record("k1")).unwrap();
    txn.commit().await.unwrap();
    assert_eq!(client.describe_transaction("decided").await.unwrap().state, "PREPARE_COMMIT");
    assert!(committed(&client, "k", 0).await.is_empty() && committed(&client, "k", 1).await.is_empty());

    let leader = cluster.wait_ready().await;
    cluster.kill(leader);
    std::fs::remove_file(&hold_file).unwrap();
    let survivors = Client::connect(&cluster.bootstrap()).unwrap();
    eventually_committed(&survivors, "k", 0, &["k0"]).await;
    eventually_committed(&survivors, "k", 1, &["k1"]).await;
    eventually(SETTLE, "the transaction to complete", || async {
        (survivors.describe_transaction("decided").await.ok()?.state == "COMPLETE_COMMIT").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offsets_in_a_transaction_are_stored_only_when_it_commits() {
    let cluster = Cluster::start_with_config(3, GROUPS).await;
    create_topic(&cluster, 1, "in", 1, 3, &[]).await;
    create_topic(&cluster, 1, "out", 1, 3, &[]).await;
    let client = Client::connect(&cluster.bootstrap()).unwrap();
    for value in ["i0", "i1", "i2", "i3"] {
        produce(&cluster, "in", 0, &[(None, value)], SETTLE).await.unwrap();
    }
    let config = GroupConsumerConfig {
        auto_commit: false,
        auto_offset_reset: OffsetReset::Earliest,
        consumer: ConsumerConfig::default(),
        ..GroupConsumerConfig::default()
    };
    let mut consumer = GroupConsumer::new(client.clone(), "g", config);
    consumer.subscribe(&["in"]).unwrap();
    let mut read = Vec::new();
    while read.len() < 2 {
        read.extend(consumer.poll(Duration::from_millis(200)).await.unwrap());
    }
    let mut txn = producer(&client, "pipe").await;
    let committed_offset = |client: Client| async move {
        let offsets = client.fetch_offsets("g", &[("in".to_string(), [0].into())].into()).await.ok()?;
        Some(offsets.first()?.committed.as_ref().map(|c| c.offset))
    };

    // Aborted: the offset stays where it was (none).
    txn.begin().unwrap();
    txn.send_to("out", 0, record("aborted")).unwrap();
    txn.send_offsets(&consumer).await.unwrap();
    txn.abort().await.unwrap();
    assert_eq!(committed_offset(client.clone()).await, Some(None));

    // Offsets for a member that is not the consumer's are refused.
    txn.begin().unwrap();
    let stranger = txn.send_offsets_for("g", "stranger", 1, &[("in".into(), 0, 1)]).await.unwrap_err();
    assert!(!stranger.is_fatal() && code(&stranger) == Some(ErrorCode::UnknownMemberId), "{stranger}");
    txn.abort().await.unwrap();

    // Committed: outputs and offsets together.
    txn.begin().unwrap();
    txn.send_to("out", 0, record("done")).unwrap();
    txn.send_offsets(&consumer).await.unwrap();
    // Staging the offsets sent the buffered record with them: it is
    // stored, and hidden from read_committed readers until the commit.
    let stored = values(&client, "out", 0, IsolationLevel::ReadUncommitted).await.unwrap();
    assert_eq!(stored.last().map(String::as_str), Some("done"), "send_offsets sent the buffered record: {stored:?}");
    assert!(!committed(&client, "out", 0).await.contains(&"done".to_string()), "visible before the commit");
    let position = consumer.position("in", 0).unwrap();
    txn.commit().await.unwrap();
    eventually_committed(&client, "out", 0, &["done"]).await;
    let stored = eventually(SETTLE, "the staged offset to be stored", || async {
        committed_offset(client.clone()).await.flatten()
    })
    .await;
    assert_eq!(stored, position);
    consumer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_transactional_input_gets_typed_errors_and_changes_nothing() {
    let cluster = Cluster::start(1).await;
    create_topic(&cluster, 1, "bad", 1, 1, &[]).await;
    let client = Client::connect(&cluster.bootstrap()).unwrap();

    let long = "x".repeat(strata_core::limits::MAX_TRANSACTIONAL_ID_LEN + 1);
    let error = TransactionalProducer::init(client.clone(), TransactionalConfig::new(&long)).await.err().unwrap();
    assert!(error.is_fatal() && code(&error) == Some(ErrorCode::InvalidRequest), "{error}");
    let too_long = Duration::from_millis(strata_core::limits::MAX_TRANSACTION_TIMEOUT_MS + 1);
    let config = TransactionalConfig { transaction_timeout: too_long, ..TransactionalConfig::new("ok") };
    let error = TransactionalProducer::init(client.clone(), config).await.err().unwrap();
    assert_eq!(code(&error), Some(ErrorCode::InvalidRequest), "{error}");

    let mut txn = producer(&client, "ok").await;
    let error = txn.commit().await.unwrap_err();
    assert_eq!(code(&error), Some(ErrorCode::InvalidTxnState), "commit without begin: {error}");
    // EndTxn with a stale epoch: the epoch of a transaction already ended.
    let (id, epoch) = txn.producer();
    txn.begin().unwrap();
    txn.send_to("bad", 0, record("first")).unwrap();
    txn.commit().await.unwrap();
    assert_eq!(txn.producer(), (id, epoch + 1));
    txn.begin().unwrap();
    txn.send_to("bad", 0, record("r")).unwrap();
    txn.flush().await.unwrap();
    let stale = client.end_txn("ok", (id, epoch), true).await;
    assert!(matches!(&stale, Err(e) if e.code() == Some(ErrorCode::ProducerFenced)), "{stale:?}");
    assert_eq!(client.describe_transaction("ok").await.unwrap().state, "ONGOING", "the stale end changed nothing");
    // A topic deleted meanwhile.
    client.delete_topic("bad").await.unwrap();
    txn.send_to("bad", 0, record("gone")).unwrap();
    let error = txn.flush().await.unwrap_err();
    assert!(!error.is_fatal(), "{error}");
    txn.abort().await.unwrap();
    let unknown: Result<_, ClientError> = client.describe_transaction("never-initialised").await;
    assert_eq!(unknown.unwrap_err().code(), Some(ErrorCode::TransactionalIdNotFound));
}
