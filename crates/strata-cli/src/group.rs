//! `strata group`: list, describe, reset the offsets of, and delete
//! consumer groups.
//!
//! `reset-offsets` is a dry run unless `--execute`: it prints, per
//! partition, the committed offset and the one it would set. New offsets
//! come from the partition's leader (`ListOffsets`): the log start offset
//! (`--to-earliest`), the high watermark (`--to-latest`), the first offset
//! at or after a time (`--to-time`), or a given offset (`--to-offset`) or a
//! shift of the committed one (`--shift-by`, from the log start offset when
//! the group has none), both kept within [log start offset, high
//! watermark] and said so when moved. The cluster refuses resets and
//! deletes while the group has members (GROUP_NOT_EMPTY); a dry run says so
//! ahead.

use std::collections::BTreeSet;
use std::process::ExitCode;

use clap::{ArgGroup, Args, Subcommand};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;
use strata_client::{
    Client, ClientError, ErrorCode, GroupDescription, GroupListing, GroupState, ListedOffset, MemberState, OffsetSpec,
    TopicPartitions,
};
use strata_core::limits::GROUP_HIGH_WATERMARK_LOOKUPS_IN_FLIGHT;

use crate::consume::parse_time_ms;
use crate::topic::{explain, print_table};

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// List consumer groups: state, members and group epoch.
    List,
    /// Show a group: state, members with their partitions, and per
    /// partition the owner, committed offset, high watermark and lag.
    Describe {
        /// Group id.
        group: String,
    },
    /// Set a group's committed offsets of a topic. A dry run unless
    /// --execute; refused while the group has members.
    ResetOffsets(ResetArgs),
    /// Delete a group and its committed offsets; refused while it has members.
    Delete {
        /// Group id.
        group: String,
    },
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("mode").required(true).args(["to_earliest", "to_latest", "to_offset", "to_time", "shift_by"])))]
pub struct ResetArgs {
    /// Group id.
    pub group: String,
    /// Topic whose offsets to set.
    #[arg(long)]
    pub topic: String,
    /// Only this partition [default: every partition of the topic].
    #[arg(long)]
    pub partition: Option<u32>,
    /// To the log start offset (the earliest record still stored).
    #[arg(long)]
    pub to_earliest: bool,
    /// To the high watermark (after the last record: read only new ones).
    #[arg(long)]
    pub to_latest: bool,
    /// To this offset, kept within [log start offset, high watermark].
    #[arg(long, value_name = "N")]
    pub to_offset: Option<u64>,
    /// To the first record at or after this time, e.g. 2024-05-01T12:00:00Z
    /// (the high watermark when there is none).
    #[arg(long, value_name = "RFC3339", value_parser = parse_time_ms)]
    pub to_time: Option<i64>,
    /// By N (negative: back) from the committed offset, or from the log
    /// start offset when there is none; kept within [log start offset, high
    /// watermark].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub shift_by: Option<i64>,
    /// Store the new offsets (without it nothing changes).
    #[arg(long)]
    pub execute: bool,
}

/// How `reset-offsets` picks each partition's new offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ResetMode {
    Earliest,
    Latest,
    ToOffset(u64),
    /// ms since the Unix epoch.
    ToTime(i64),
    ShiftBy(i64),
}

impl ResetMode {
    /// The one mode the arguments name (clap requires exactly one).
    fn of(args: &ResetArgs) -> ResetMode {
        if args.to_earliest {
            ResetMode::Earliest
        } else if args.to_latest {
            ResetMode::Latest
        } else if let Some(offset) = args.to_offset {
            ResetMode::ToOffset(offset)
        } else if let Some(ms) = args.to_time {
            ResetMode::ToTime(ms)
        } else {
            ResetMode::ShiftBy(args.shift_by.expect("clap requires one reset mode"))
        }
    }

    /// What to ask the partition's leader: the offset at a time, or its
    /// log start offset and high watermark (every answer has both).
    fn spec(self) -> OffsetSpec {
        match self {
            ResetMode::Earliest => OffsetSpec::Earliest,
            ResetMode::ToTime(ms) => OffsetSpec::Timestamp(ms),
            ResetMode::Latest | ResetMode::ToOffset(_) | ResetMode::ShiftBy(_) => OffsetSpec::Latest,
        }
    }
}

/// Where a reset would move one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Planned {
    offset: u64,
    /// The offset the mode asked for, when it was outside [log start
    /// offset, high watermark] and moved to the nearest end.
    clamped_from: Option<i128>,
}

/// The new offset of one partition: `listed` is its leader's answer to
/// `mode.spec()`, `current` the group's committed offset.
fn plan_offset(mode: ResetMode, current: Option<u64>, listed: ListedOffset) -> Planned {
    let (start, end) = (listed.log_start_offset, listed.high_watermark.max(listed.log_start_offset));
    let wanted: i128 = match mode {
        ResetMode::Earliest | ResetMode::Latest | ResetMode::ToTime(_) => listed.offset.into(),
        ResetMode::ToOffset(offset) => offset.into(),
        ResetMode::ShiftBy(delta) => i128::from(current.unwrap_or(start)) + i128::from(delta),
    };
    let offset = wanted.clamp(start.into(), end.into());
    Planned {
        offset: u64::try_from(offset).expect("clamped into a u64 range"),
        clamped_from: (offset != wanted).then_some(wanted),
    }
}

/// One partition of a reset plan.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PlanRow {
    topic: String,
    partition: u32,
    current: Option<u64>,
    listed: ListedOffset,
    planned: Planned,
}

impl PlanRow {
    /// Why the new offset is not the one asked for, or empty.
    fn note(&self) -> String {
        match self.planned.clamped_from {
            None => String::new(),
            Some(wanted) if wanted < i128::from(self.listed.log_start_offset) => {
                format!("{wanted} is before the log start offset {}", self.listed.log_start_offset)
            }
            Some(wanted) => format!("{wanted} is past the high watermark {}", self.listed.high_watermark),
        }
    }
}

#[derive(Serialize)]
struct JsonPlanRow<'a> {
    topic: &'a str,
    partition: u32,
    current_offset: Option<u64>,
    new_offset: u64,
    /// The asked-for offset was outside [log start offset, high watermark].
    clamped: bool,
    log_start_offset: u64,
    high_watermark: u64,
}

fn plan_json(rows: &[PlanRow]) -> Vec<JsonPlanRow<'_>> {
    rows.iter()
        .map(|r| JsonPlanRow {
            topic: &r.topic,
            partition: r.partition,
            current_offset: r.current,
            new_offset: r.planned.offset,
            clamped: r.planned.clamped_from.is_some(),
            log_start_offset: r.listed.log_start_offset,
            high_watermark: r.listed.high_watermark,
        })
        .collect()
}

/// Lower-case names of group states, as `--json` and the tables show them.
fn state_name(state: GroupState) -> &'static str {
    match state {
        GroupState::Empty => "empty",
        GroupState::Assigning => "assigning",
        GroupState::Reconciling => "reconciling",
        GroupState::Stable => "stable",
        GroupState::Unknown => "unknown",
    }
}

fn member_state_name(state: MemberState) -> &'static str {
    match state {
        MemberState::Stable => "stable",
        MemberState::UnrevokedPartitions => "unrevoked_partitions",
        MemberState::UnreleasedPartitions => "unreleased_partitions",
        MemberState::Unknown => "unknown",
    }
}

fn show<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

#[derive(Serialize)]
struct JsonListing<'a> {
    group_id: &'a str,
    state: &'static str,
    members: u32,
    group_epoch: i32,
}

fn list_json(groups: &[GroupListing]) -> Vec<JsonListing<'_>> {
    groups
        .iter()
        .map(|g| JsonListing {
            group_id: &g.group_id,
            state: state_name(g.state),
            members: g.members,
            group_epoch: g.group_epoch,
        })
        .collect()
}

#[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
struct JsonTopicPartition<'a> {
    topic: &'a str,
    partition: u32,
}

fn topic_partitions(partitions: &TopicPartitions) -> Vec<JsonTopicPartition<'_>> {
    partitions.iter().flat_map(|(topic, ps)| ps.iter().map(|p| JsonTopicPartition { topic, partition: *p })).collect()
}

#[derive(Serialize)]
struct JsonDescription<'a> {
    group_id: &'a str,
    state: &'static str,
    group_epoch: i32,
    assignor: &'a str,
    members: Vec<JsonMember<'a>>,
    partitions: Vec<JsonGroupPartition<'a>>,
}

#[derive(Serialize)]
struct JsonMember<'a> {
    member_id: &'a str,
    instance_id: Option<&'a str>,
    member_epoch: i32,
    /// Every partition it owns: those it keeps and those it must give up.
    partitions: Vec<JsonTopicPartition<'a>>,
    /// The owned partitions it must give up.
    pending_revocation: Vec<JsonTopicPartition<'a>>,
    state: &'static str,
    client_id: &'a str,
    client_host: &'a str,
}

#[derive(Serialize)]
struct JsonGroupPartition<'a> {
    topic: &'a str,
    partition: u32,
    owner: Option<&'a str>,
    committed_offset: Option<u64>,
    high_watermark: Option<u64>,
    lag: Option<u64>,
}

fn describe_json(group: &GroupDescription) -> JsonDescription<'_> {
    JsonDescription {
        group_id: &group.group_id,
        state: state_name(group.state),
        group_epoch: group.group_epoch,
        assignor: &group.assignor,
        members: group
            .members
            .iter()
            .map(|m| {
                let mut partitions = topic_partitions(&m.assignment);
                partitions.extend(topic_partitions(&m.pending_revocation));
                partitions.sort();
                partitions.dedup();
                JsonMember {
                    member_id: &m.member_id,
                    instance_id: m.instance_id.as_deref(),
                    member_epoch: m.member_epoch,
                    partitions,
                    pending_revocation: topic_partitions(&m.pending_revocation),
                    state: member_state_name(m.state),
                    client_id: &m.client_id,
                    client_host: &m.client_host,
                }
            })
            .collect(),
        partitions: group
            .partitions
            .iter()
            .map(|p| JsonGroupPartition {
                topic: &p.topic,
                partition: p.partition,
                owner: p.owner.as_deref(),
                committed_offset: p.committed_offset,
                high_watermark: p.high_watermark,
                lag: p.lag,
            })
            .collect(),
    }
}

/// `events/0,1,2 orders/3`, or `-` when empty.
fn show_partitions(partitions: &TopicPartitions) -> String {
    let shown: Vec<String> = partitions
        .iter()
        .filter(|(_, ps)| !ps.is_empty())
        .map(|(topic, ps)| format!("{topic}/{}", ps.iter().map(u32::to_string).collect::<Vec<_>>().join(",")))
        .collect();
    if shown.is_empty() {
        "-".to_string()
    } else {
        shown.join(" ")
    }
}

fn print_description(group: &GroupDescription) {
    println!(
        "group {}: {}, epoch {}, assignor {}, {} member(s)",
        group.group_id,
        state_name(group.state),
        group.group_epoch,
        group.assignor,
        group.members.len()
    );
    if !group.members.is_empty() {
        let rows: Vec<Vec<String>> = group
            .members
            .iter()
            .map(|m| {
                vec![
                    m.member_id.clone(),
                    show(m.instance_id.as_deref()),
                    m.member_epoch.to_string(),
                    member_state_name(m.state).to_string(),
                    show_partitions(&m.assignment),
                    show_partitions(&m.pending_revocation),
                ]
            })
            .collect();
        print_table(&["MEMBER", "INSTANCE", "EPOCH", "STATE", "PARTITIONS", "REVOKING"], &rows);
    }
    if !group.partitions.is_empty() {
        let rows: Vec<Vec<String>> = group
            .partitions
            .iter()
            .map(|p| {
                vec![
                    p.topic.clone(),
                    p.partition.to_string(),
                    show(p.owner.as_deref()),
                    show(p.committed_offset),
                    show(p.high_watermark),
                    show(p.lag),
                ]
            })
            .collect();
        print_table(&["TOPIC", "PARTITION", "OWNER", "COMMITTED OFFSET", "HIGH WATERMARK", "LAG"], &rows);
    }
}

/// Members of `group`, or 0 when it does not exist (a reset creates it).
async fn member_count(client: &Client, group: &str) -> Result<usize, ClientError> {
    match client.describe_group(group).await {
        Ok(description) => Ok(description.members.len()),
        Err(error) if error.code() == Some(ErrorCode::GroupIdNotFound) => Ok(0),
        Err(error) => Err(error),
    }
}

/// The reset plan of `args`: per partition, committed and new offset.
async fn plan_reset(client: &Client, args: &ResetArgs, mode: ResetMode) -> Result<Vec<PlanRow>, ClientError> {
    let count = client.topic_metadata(&args.topic).await?.partition_count();
    let partitions: Vec<u32> = match args.partition {
        Some(partition) if partition >= count => {
            return Err(ClientError::Local {
                code: ErrorCode::UnknownPartition,
                message: format!("topic '{}' has {count} partitions; {partition} does not exist", args.topic),
            })
        }
        Some(partition) => vec![partition],
        None => (0..count).collect(),
    };
    let wanted = TopicPartitions::from([(args.topic.clone(), partitions.iter().copied().collect::<BTreeSet<u32>>())]);
    let committed = match client.fetch_offsets(&args.group, &wanted).await {
        Ok(fetched) => fetched,
        Err(error) if error.code() == Some(ErrorCode::GroupIdNotFound) => Vec::new(),
        Err(error) => return Err(error),
    };
    let current = |partition: u32| {
        committed
            .iter()
            .find(|f| f.topic == args.topic && f.partition == partition)
            .and_then(|f| f.committed.as_ref().map(|c| c.offset))
    };
    let listed: Vec<ListedOffset> = stream::iter(partitions.iter().copied())
        .map(|partition| client.list_offsets(&args.topic, partition, mode.spec()))
        .buffered(GROUP_HIGH_WATERMARK_LOOKUPS_IN_FLIGHT)
        .try_collect()
        .await?;
    Ok(partitions
        .iter()
        .zip(listed)
        .map(|(&partition, listed)| {
            let current = current(partition);
            PlanRow {
                topic: args.topic.clone(),
                partition,
                current,
                listed,
                planned: plan_offset(mode, current, listed),
            }
        })
        .collect())
}

async fn reset_offsets(client: &Client, args: ResetArgs, json: bool) -> anyhow::Result<()> {
    let mode = ResetMode::of(&args);
    let members = member_count(client, &args.group).await.map_err(explain)?;
    let rows = plan_reset(client, &args, mode).await.map_err(explain)?;
    for row in rows.iter().filter(|r| r.planned.clamped_from.is_some()) {
        eprintln!("warning: {}/{}: {}; using {}", row.topic, row.partition, row.note(), row.planned.offset);
    }
    if args.execute {
        let offsets: Vec<(String, u32, u64)> =
            rows.iter().map(|r| (r.topic.clone(), r.partition, r.planned.offset)).collect();
        client.reset_offsets(&args.group, &offsets).await.map_err(explain)?;
    }
    if json {
        println!("{}", serde_json::to_string(&plan_json(&rows))?);
    } else {
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.topic.clone(),
                    r.partition.to_string(),
                    show(r.current),
                    r.planned.offset.to_string(),
                    r.listed.log_start_offset.to_string(),
                    r.listed.high_watermark.to_string(),
                    r.note(),
                ]
            })
            .collect();
        print_table(
            &["TOPIC", "PARTITION", "CURRENT OFFSET", "NEW OFFSET", "LOG START OFFSET", "HIGH WATERMARK", "NOTE"],
            &table,
        );
    }
    if args.execute {
        if !json {
            println!("set {} offset(s) of group {}", rows.len(), args.group);
        }
    } else {
        if members > 0 {
            eprintln!(
                "warning: group {} has {members} member(s); --execute would be refused with {}: {}",
                args.group,
                ErrorCode::GroupNotEmpty.name(),
                ErrorCode::GroupNotEmpty.help()
            );
        }
        eprintln!("dry run: nothing changed; add --execute to set these offsets");
    }
    Ok(())
}

pub async fn run(command: GroupCommand, bootstrap: &[String], json: bool) -> anyhow::Result<ExitCode> {
    let client = Client::connect(bootstrap).map_err(explain)?;
    match command {
        GroupCommand::List => {
            let groups = client.list_groups().await.map_err(explain)?;
            if json {
                println!("{}", serde_json::to_string(&list_json(&groups))?);
            } else if groups.is_empty() {
                eprintln!("no groups");
            } else {
                let rows: Vec<Vec<String>> = groups
                    .iter()
                    .map(|g| {
                        vec![
                            g.group_id.clone(),
                            state_name(g.state).to_string(),
                            g.members.to_string(),
                            g.group_epoch.to_string(),
                        ]
                    })
                    .collect();
                print_table(&["GROUP", "STATE", "MEMBERS", "EPOCH"], &rows);
            }
        }
        GroupCommand::Describe { group } => {
            let description = client.describe_group(&group).await.map_err(explain)?;
            if json {
                println!("{}", serde_json::to_string(&describe_json(&description))?);
            } else {
                print_description(&description);
            }
        }
        GroupCommand::ResetOffsets(args) => reset_offsets(&client, args, json).await?,
        GroupCommand::Delete { group } => {
            client.delete_group(&group).await.map_err(explain)?;
            if json {
                println!("{}", serde_json::json!({ "deleted": group }));
            } else {
                println!("deleted group {group}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use clap::Parser;
    use strata_client::{GroupMemberDescription, GroupPartitionDescription};

    use super::*;

    fn listed(offset: u64, log_start_offset: u64, high_watermark: u64) -> ListedOffset {
        ListedOffset { offset, log_start_offset, high_watermark }
    }

    #[test]
    fn each_mode_plans_its_offset_within_the_log() {
        // Log holds [10, 50); the leader answered 10 for earliest, 50 for latest.
        let plan = |mode, current, answer| plan_offset(mode, current, answer);
        let fixed = |offset| Planned { offset, clamped_from: None };
        assert_eq!(plan(ResetMode::Earliest, Some(30), listed(10, 10, 50)), fixed(10));
        assert_eq!(plan(ResetMode::Latest, Some(30), listed(50, 10, 50)), fixed(50));
        assert_eq!(plan(ResetMode::ToTime(1_000), None, listed(42, 10, 50)), fixed(42));
        assert_eq!(plan(ResetMode::ToOffset(20), Some(30), listed(50, 10, 50)), fixed(20));
        // Past either end: the nearest end, and the asked-for offset is kept.
        assert_eq!(
            plan(ResetMode::ToOffset(500), None, listed(50, 10, 50)),
            Planned { offset: 50, clamped_from: Some(500) }
        );
        assert_eq!(
            plan(ResetMode::ToOffset(3), None, listed(50, 10, 50)),
            Planned { offset: 10, clamped_from: Some(3) }
        );
        // Shifts move from the committed offset, else from the log start.
        assert_eq!(plan(ResetMode::ShiftBy(-5), Some(30), listed(50, 10, 50)), fixed(25));
        assert_eq!(plan(ResetMode::ShiftBy(7), None, listed(50, 10, 50)), fixed(17));
        assert_eq!(
            plan(ResetMode::ShiftBy(-100), Some(30), listed(50, 10, 50)),
            Planned { offset: 10, clamped_from: Some(-70) }
        );
        assert_eq!(
            plan(ResetMode::ShiftBy(i64::MAX), Some(u64::MAX), listed(50, 10, 50)),
            Planned { offset: 50, clamped_from: Some(i128::from(u64::MAX) + i128::from(i64::MAX)) }
        );
        // An empty log: everything lands on its one position.
        assert_eq!(
            plan(ResetMode::ShiftBy(-1), Some(0), listed(0, 0, 0)),
            Planned { offset: 0, clamped_from: Some(-1) }
        );
    }

    #[test]
    fn a_clamp_is_explained() {
        let row =
            |planned| PlanRow { topic: "t".into(), partition: 0, current: None, listed: listed(50, 10, 50), planned };
        assert_eq!(row(Planned { offset: 20, clamped_from: None }).note(), "");
        assert_eq!(row(Planned { offset: 50, clamped_from: Some(90) }).note(), "90 is past the high watermark 50");
        assert_eq!(row(Planned { offset: 10, clamped_from: Some(-3) }).note(), "-3 is before the log start offset 10");
        let rows = [row(Planned { offset: 50, clamped_from: Some(90) })];
        assert_eq!(
            serde_json::to_string(&plan_json(&rows)).unwrap(),
            r#"[{"topic":"t","partition":0,"current_offset":null,"new_offset":50,"clamped":true,"log_start_offset":10,"high_watermark":50}]"#
        );
    }

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        command: GroupCommand,
    }

    fn parse(args: &[&str]) -> Result<GroupCommand, clap::Error> {
        Cli::try_parse_from([&["strata"][..], args].concat()).map(|cli| cli.command)
    }

    #[test]
    fn reset_takes_exactly_one_mode() {
        let reset = |args: &[&str]| match parse(&[&["reset-offsets", "g", "--topic", "t"][..], args].concat()) {
            Ok(GroupCommand::ResetOffsets(args)) => Ok(ResetMode::of(&args)),
            Ok(other) => panic!("{other:?}"),
            Err(error) => Err(error.kind()),
        };
        assert_eq!(reset(&["--to-earliest"]), Ok(ResetMode::Earliest));
        assert_eq!(reset(&["--to-latest"]), Ok(ResetMode::Latest));
        assert_eq!(reset(&["--to-offset", "7"]), Ok(ResetMode::ToOffset(7)));
        assert_eq!(reset(&["--shift-by", "-3"]), Ok(ResetMode::ShiftBy(-3)));
        assert_eq!(reset(&["--to-time", "2024-05-01T12:00:00Z"]), Ok(ResetMode::ToTime(1_714_564_800_000)));
        assert_eq!(reset(&["--to-time", "2024-05-01T14:00:00+02:00"]), Ok(ResetMode::ToTime(1_714_564_800_000)));
        assert_eq!(reset(&[]), Err(clap::error::ErrorKind::MissingRequiredArgument));
        assert_eq!(reset(&["--to-earliest", "--to-latest"]), Err(clap::error::ErrorKind::ArgumentConflict));
        assert_eq!(reset(&["--to-time", "yesterday"]), Err(clap::error::ErrorKind::ValueValidation));
        assert!(reset(&["--to-offset", "-1"]).is_err(), "offsets are not negative");
        let Ok(GroupCommand::ResetOffsets(args)) =
            parse(&["reset-offsets", "g", "--topic", "t", "--partition", "2", "--to-latest", "--execute"])
        else {
            panic!("parses")
        };
        assert_eq!((args.partition, args.execute), (Some(2), true));
        assert!(parse(&["reset-offsets", "g", "--to-latest"]).is_err(), "--topic is required");
    }

    #[test]
    fn list_json_has_the_documented_shape() {
        let groups = [GroupListing { group_id: "g".into(), state: GroupState::Stable, members: 2, group_epoch: 5 }];
        assert_eq!(
            serde_json::to_string(&list_json(&groups)).unwrap(),
            r#"[{"group_id":"g","state":"stable","members":2,"group_epoch":5}]"#
        );
    }

    #[test]
    fn describe_json_has_the_documented_shape() {
        let group = GroupDescription {
            group_id: "g".into(),
            state: GroupState::Reconciling,
            group_epoch: 4,
            target_epoch: 4,
            assignor: "uniform".into(),
            session_timeout: Duration::from_secs(45),
            heartbeat_interval: Duration::from_secs(3),
            members: vec![GroupMemberDescription {
                member_id: "m1".into(),
                instance_id: None,
                member_epoch: 4,
                client_id: "c".into(),
                client_host: "127.0.0.1".into(),
                assignment: BTreeMap::from([("t".to_string(), BTreeSet::from([0]))]),
                pending_revocation: BTreeMap::from([("t".to_string(), BTreeSet::from([1]))]),
                subscribed_topics: BTreeSet::from(["t".to_string()]),
                state: MemberState::UnrevokedPartitions,
            }],
            partitions: vec![
                GroupPartitionDescription {
                    topic: "t".into(),
                    partition: 0,
                    owner: Some("m1".into()),
                    committed_offset: Some(3),
                    high_watermark: Some(10),
                    lag: Some(7),
                },
                GroupPartitionDescription {
                    topic: "t".into(),
                    partition: 1,
                    owner: None,
                    committed_offset: None,
                    high_watermark: Some(4),
                    lag: None,
                },
            ],
        };
        let json: serde_json::Value = serde_json::to_value(describe_json(&group)).unwrap();
        assert_eq!(json["state"], "reconciling");
        let member = &json["members"][0];
        assert_eq!(member["member_id"], "m1");
        assert_eq!(member["instance_id"], serde_json::Value::Null);
        assert_eq!(member["member_epoch"], 4);
        assert_eq!(
            member["partitions"],
            serde_json::json!([{"topic": "t", "partition": 0}, {"topic": "t", "partition": 1}])
        );
        assert_eq!(member["pending_revocation"], serde_json::json!([{"topic": "t", "partition": 1}]));
        assert_eq!(
            json["partitions"],
            serde_json::json!([
                {"topic": "t", "partition": 0, "owner": "m1", "committed_offset": 3, "high_watermark": 10, "lag": 7},
                {"topic": "t", "partition": 1, "owner": null, "committed_offset": null, "high_watermark": 4, "lag": null},
            ])
        );
        assert_eq!(show_partitions(&group.members[0].assignment), "t/0");
        assert_eq!(show_partitions(&TopicPartitions::new()), "-");
    }
}
