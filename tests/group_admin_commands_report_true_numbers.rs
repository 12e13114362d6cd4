//! `strata group` commands on a real cluster, run as the `strata` binary:
//! `describe` and `list` report the committed offsets, high watermarks and
//! lag the test computes from what it produced and committed; every
//! `reset-offsets` mode sets exactly the offsets the test computes (and a
//! dry run sets none); resets and deletes are refused while a member is
//! joined; `delete` removes the group. The metadata leader's `/metrics`
//! reports the same lag, members, rebalances and commits, and its lag grows
//! with new records even when nothing is committed or described.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use strata_client::{Client, GroupHeartbeat, OffsetToCommit, TopicPartitions, LEAVE_EPOCH};
use strata_cluster_tests::{create_topic, http_get, produce, produce_at, sample, strata_cli, Cluster};

const GROUP: &str = "auditors";
const TOPIC: &str = "ledger";
/// 2001-09-09T01:46:40Z: the stamp of the first records of partition 0.
const OLD_MS: i64 = 1_000_000_000_000;
/// One second after OLD_MS: `--to-time` of it skips those records.
const AFTER_OLD: &str = "2001-09-09T01:46:41Z";
/// How long one CLI command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the metrics may take to show a change.
const METRICS_WAIT: Duration = Duration::from_secs(30);
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `strata --bootstrap ... ARGS` against the cluster.
async fn strata(cluster: &Cluster, args: &[&str]) -> Output {
    strata_cli(cluster, args, COMMAND_TIMEOUT).await
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a command that must succeed and returns (stdout, stderr).
async fn succeeds(cluster: &Cluster, args: &[&str]) -> (String, String) {
    let output = strata(cluster, args).await;
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "strata {args:?} failed: {}\n{stdout}\n{stderr}", output.status);
    (stdout, stderr)
}

/// Runs a `--json` command that must succeed and returns its JSON and stderr.
async fn json_of(cluster: &Cluster, args: &[&str]) -> (Value, String) {
    let mut with_json = vec!["--json"];
    with_json.extend_from_slice(args);
    let (stdout, stderr) = succeeds(cluster, &with_json).await;
    let value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("strata {args:?} printed no JSON ({e}):\n{stdout}"));
    (value, stderr)
}

/// Runs a command that must fail with `code`, and returns its stderr.
async fn refused(cluster: &Cluster, args: &[&str], code: &str) -> String {
    let output = strata(cluster, args).await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "strata {args:?} must fail: {}\n{stderr}", text(&output.stdout));
    assert!(stderr.contains(&format!("error: {code}: ")), "strata {args:?} must say {code}:\n{stderr}");
    stderr
}

/// The group's committed offsets of the topic's three partitions.
async fn committed(client: &Client) -> [Option<u64>; 3] {
    let wanted = TopicPartitions::from([(TOPIC.to_string(), BTreeSet::from([0, 1, 2]))]);
    let fetched = client.fetch_offsets(GROUP, &wanted).await.expect("fetch offsets");
    let mut out = [None; 3];
    for f in fetched {
        out[f.partition as usize] = f.committed.map(|c| c.offset);
    }
    out
}

/// Runs one reset with `--execute` and `--json` and checks it printed and
/// then stored exactly `expected` (per partition it covered).
async fn reset(cluster: &Cluster, client: &Client, mode: &[&str], expected: [u64; 3]) -> Value {
    let mut args = vec!["group", "reset-offsets", GROUP, "--topic", TOPIC, "--execute"];
    args.extend_from_slice(mode);
    let (rows, _) = json_of(cluster, &args).await;
    for row in rows.as_array().expect("an array of partitions") {
        let partition = row["partition"].as_u64().unwrap() as usize;
        assert_eq!(row["new_offset"], expected[partition], "{mode:?}: {rows}");
    }
    assert_eq!(committed(client).await.map(Option::unwrap), expected, "{mode:?} stored other offsets");
    rows
}

/// Scrapes every node until exactly one exports the group's figures, it is
/// the metadata leader, and it reports `wanted` (family → value); returns
/// that scrape.
async fn group_metrics(cluster: &Cluster, wanted: &[(&str, f64)]) -> String {
    let deadline = Instant::now() + METRICS_WAIT;
    loop {
        let mut exporting = Vec::new();
        for node in cluster.nodes.iter().filter(|n| n.is_running()) {
            let (status, body) = http_get(node.metrics_address.as_deref().expect("metrics"), "/metrics").await;
            assert!(status.contains("200"), "{status}");
            if body.contains(&format!("strata_group_members{{group=\"{GROUP}\"}}")) {
                exporting.push((node.id, body));
            }
        }
        let value = |body: &str, name: &str| sample(body, &format!("{name}{{group=\"{GROUP}\"}}"));
        if let [(id, body)] = exporting.as_slice() {
            assert_eq!(sample(body, "strata_metadata_leader"), Some(1.0), "node {id} exports group figures");
            if wanted.iter().all(|(name, expected)| value(body, name) == Some(*expected)) {
                return body.clone();
            }
        }
        if Instant::now() >= deadline {
            let seen: Vec<(u64, Vec<Option<f64>>)> = exporting
                .iter()
                .map(|(id, body)| (*id, wanted.iter().map(|(name, _)| value(body, name)).collect()))
                .collect();
            panic!("no single metadata leader reported {wanted:?} within {METRICS_WAIT:?}; seen {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commands_and_metrics_report_the_numbers_the_test_computes() {
    let cluster = Cluster::start_with_metrics(3).await;
    // Records stamped in 2001 must outlive retention.
    create_topic(&cluster, 1, TOPIC, 3, 3, &[("retention.ms", "-1")]).await;
    let old: Vec<(Option<&str>, &str)> = vec![(None, "old"); 6];
    produce_at(&cluster, TOPIC, 0, &old, OLD_MS, PRODUCE_TIMEOUT).await.unwrap();
    for (partition, count) in [(0, 4), (1, 7), (2, 4)] {
        let records: Vec<(Option<&str>, &str)> = vec![(None, "new"); count];
        produce(&cluster, TOPIC, partition, &records, PRODUCE_TIMEOUT).await.unwrap();
    }
    let high_watermarks = [10u64, 7, 4];

    // A standalone commit (no member) of known offsets.
    let client = Client::connect(&cluster.bootstrap()).unwrap();
    let commits: Vec<OffsetToCommit> = [(0, 3), (1, 7), (2, 0)]
        .into_iter()
        .map(|(partition, offset)| OffsetToCommit { topic: TOPIC.into(), partition, offset, metadata: String::new() })
        .collect();
    let results = client.commit_offsets(GROUP, "", LEAVE_EPOCH, &commits).await.expect("standalone commit");
    assert!(results.iter().all(|r| r.error.is_none()), "{results:?}");
    let committed_at = [3u64, 7, 0];
    let lag: Vec<u64> = high_watermarks.iter().zip(committed_at).map(|(hw, c)| hw - c).collect();
    assert_eq!(lag, [7, 0, 4]);

    // describe --json: exactly the computed numbers.
    let (description, _) = json_of(&cluster, &["group", "describe", GROUP]).await;
    assert_eq!(description["state"], "empty", "{description}");
    assert_eq!(description["members"], json!([]));
    let expected: Vec<Value> = (0..3)
        .map(|p| {
            json!({"topic": TOPIC, "partition": p, "owner": null, "committed_offset": committed_at[p],
                   "high_watermark": high_watermarks[p], "lag": lag[p]})
        })
        .collect();
    assert_eq!(description["partitions"], Value::Array(expected), "{description}");
    let group_epoch = description["group_epoch"].as_i64().expect("group_epoch");
    // The text form shows the same rows.
    let (table, _) = succeeds(&cluster, &["group", "describe", GROUP]).await;
    assert!(table.contains("COMMITTED OFFSET") && table.contains("empty"), "{table}");

    // list: the group, empty.
    let (listing, _) = json_of(&cluster, &["group", "list"]).await;
    assert_eq!(listing, json!([{"group_id": GROUP, "state": "empty", "members": 0, "group_epoch": group_epoch}]));
    let (table, _) = succeeds(&cluster, &["group", "list"]).await;
    assert!(table.lines().any(|l| l.starts_with(GROUP) && l.contains("empty")), "{table}");

    // The metadata leader exports the same lag, members, rebalances (the
    // group epoch) and the three partition offsets committed.
    group_metrics(
        &cluster,
        &[
            ("strata_group_lag", 11.0),
            ("strata_group_lag_max", 7.0),
            ("strata_group_members", 0.0),
            ("strata_group_rebalances_total", group_epoch as f64),
            ("strata_group_offset_commits_total", 3.0),
        ],
    )
    .await;
    // Ten more records in partition 1, and nothing committed or described:
    // the lag grows all the same.
    let records: Vec<(Option<&str>, &str)> = vec![(None, "more"); 10];
    produce(&cluster, TOPIC, 1, &records, PRODUCE_TIMEOUT).await.unwrap();
    let high_watermarks = [10u64, 17, 4];
    group_metrics(&cluster, &[("strata_group_lag", 21.0), ("strata_group_lag_max", 10.0)]).await;

    // A dry run prints the plan and changes nothing.
    let (plan, stderr) = json_of(&cluster, &["group", "reset-offsets", GROUP, "--topic", TOPIC, "--to-earliest"]).await;
    assert_eq!(
        plan,
        json!([
            {"topic": TOPIC, "partition": 0, "current_offset": 3, "new_offset": 0, "clamped": false,
             "log_start_offset": 0, "high_watermark": 10},
            {"topic": TOPIC, "partition": 1, "current_offset": 7, "new_offset": 0, "clamped": false,
             "log_start_offset": 0, "high_watermark": 17},
            {"topic": TOPIC, "partition": 2, "current_offset": 0, "new_offset": 0, "clamped": false,
             "log_start_offset": 0, "high_watermark": 4},
        ])
    );
    assert!(stderr.contains("dry run"), "{stderr}");
    assert!(!stderr.contains("would be refused"), "the group has no members: {stderr}");
    let (table, _) = succeeds(&cluster, &["group", "reset-offsets", GROUP, "--topic", TOPIC, "--to-latest"]).await;
    assert!(table.contains("NEW OFFSET"), "{table}");
    assert_eq!(committed(&client).await, [Some(3), Some(7), Some(0)], "a dry run changed offsets");

    // Each mode, executed, stores what the test computes.
    reset(&cluster, &client, &["--to-earliest"], [0, 0, 0]).await;
    let rows = reset(&cluster, &client, &["--to-offset", "5"], [5, 5, 4]).await;
    let clamped: Vec<&Value> = rows.as_array().unwrap().iter().map(|r| &r["clamped"]).collect();
    assert_eq!(clamped, [false, false, true], "only partition 2 (high watermark 4) is clamped: {rows}");
    reset(&cluster, &client, &["--partition", "0", "--shift-by", "-2"], [3, 5, 4]).await;
    let rows = reset(&cluster, &client, &["--partition", "1", "--shift-by", "100"], [3, 17, 4]).await;
    assert_eq!(rows[0]["clamped"], true, "{rows}");
    reset(&cluster, &client, &["--to-time", "2999-01-01T00:00:00Z"], high_watermarks).await;
    // Partition 0's first six records are from 2001; the rest are from now.
    reset(&cluster, &client, &["--to-time", AFTER_OLD], [6, 0, 0]).await;
    reset(&cluster, &client, &["--to-latest"], high_watermarks).await;
    group_metrics(&cluster, &[("strata_group_lag", 0.0), ("strata_group_lag_max", 0.0)]).await;
    // The text form of a clamp says so.
    let (_, stderr) =
        succeeds(&cluster, &["group", "reset-offsets", GROUP, "--topic", TOPIC, "--to-offset", "99"]).await;
    assert!(stderr.contains("99 is past the high watermark 4"), "{stderr}");

    // A joined member: reset and delete are refused, a dry run says so.
    let answer = client.group_heartbeat(&GroupHeartbeat::join(GROUP, &[TOPIC])).await.expect("join");
    let member_id = answer.member_id.clone();
    let mut epoch = answer.member_epoch;
    let mut owned = answer.assignment;
    let deadline = Instant::now() + Duration::from_secs(30);
    let description = loop {
        let (description, _) = json_of(&cluster, &["group", "describe", GROUP]).await;
        if description["state"] == "stable" {
            break description;
        }
        assert!(Instant::now() < deadline, "the one-member group did not become stable: {description}");
        let heartbeat = GroupHeartbeat {
            member_id: member_id.clone(),
            member_epoch: epoch,
            subscribed_topics: None,
            owned_partitions: Some(owned.clone()),
            ..GroupHeartbeat::join(GROUP, &[TOPIC])
        };
        let answer = client.group_heartbeat(&heartbeat).await.expect("heartbeat");
        (epoch, owned) = (answer.member_epoch, answer.assignment);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let all: Vec<Value> = (0..3).map(|p| json!({"topic": TOPIC, "partition": p})).collect();
    assert_eq!(description["members"].as_array().unwrap().len(), 1, "{description}");
    let member = &description["members"][0];
    assert_eq!((&member["member_id"], &member["instance_id"]), (&json!(member_id), &Value::Null));
    assert_eq!(member["member_epoch"], epoch);
    assert_eq!(member["partitions"], Value::Array(all));
    assert_eq!(owned, BTreeMap::from([(TOPIC.to_string(), BTreeSet::from([0, 1, 2]))]));
    for (p, partition) in description["partitions"].as_array().unwrap().iter().enumerate() {
        assert_eq!(partition["owner"], json!(member_id), "{description}");
        assert_eq!((&partition["committed_offset"], &partition["lag"]), (&json!(high_watermarks[p]), &json!(0)));
    }
    let group_epoch = description["group_epoch"].as_f64().unwrap();
    group_metrics(&cluster, &[("strata_group_members", 1.0), ("strata_group_rebalances_total", group_epoch)]).await;

    let (_, stderr) = succeeds(&cluster, &["group", "reset-offsets", GROUP, "--topic", TOPIC, "--to-earliest"]).await;
    assert!(stderr.contains("has 1 member(s); --execute would be refused with GROUP_NOT_EMPTY"), "{stderr}");
    let execute = ["group", "reset-offsets", GROUP, "--topic", TOPIC, "--to-earliest", "--execute"];
    refused(&cluster, &execute, "GROUP_NOT_EMPTY").await;
    refused(&cluster, &["group", "delete", GROUP], "GROUP_NOT_EMPTY").await;
    assert_eq!(committed(&client).await.map(Option::unwrap), high_watermarks, "a refused reset changed offsets");

    // Once it leaves, the group can be deleted, and is gone.
    let leave = GroupHeartbeat {
        member_id: member_id.clone(),
        member_epoch: LEAVE_EPOCH,
        subscribed_topics: None,
        ..GroupHeartbeat::join(GROUP, &[TOPIC])
    };
    client.group_heartbeat(&leave).await.expect("leave");
    let (deleted, _) = json_of(&cluster, &["group", "delete", GROUP]).await;
    assert_eq!(deleted, json!({"deleted": GROUP}));
    let (listing, _) = json_of(&cluster, &["group", "list"]).await;
    assert_eq!(listing, json!([]));
    refused(&cluster, &["group", "describe", GROUP], "GROUP_ID_NOT_FOUND").await;
}
