//! The consumer group rules: who owned which partition when, judged from
//! the members' own heartbeats, and what the group committed.
//!
//! Ownership is rebuilt from each member process's operations, in order
//! (see `jepsen/README.md`, "The group workload", for the shapes):
//!
//! - A member *holds* a partition from the completion of a heartbeat (`ok`
//!   `subscribe`) whose `assignment` lists it, while it did not hold it
//!   already: that completion is a *grant*, at the answered epoch.
//! - It holds it until the *invocation* of a later heartbeat of its own
//!   whose `owned` list leaves it out (a release), a leave (epoch -1), or a
//!   join (epoch 0: a rejoin owns nothing). A revocation (an answer without
//!   the partition) does not end the hold: the member owns it until it
//!   releases it.
//! - An *incarnation* of a member runs from a join to the next join of the
//!   same process (a fenced member rejoins under its id) or to the end of
//!   its process (a crash abandons it: it never heartbeats again).
//!
//! The rules:
//!
//! - `double-ownership`: a grant of a partition completes while another
//!   incarnation holds it, unless that incarnation's session may have
//!   expired by then: every one of its heartbeats answered `ok` was invoked
//!   at least one session timeout before the grant completed. (The leader
//!   hears a heartbeat no earlier than its invocation and expires a member
//!   a full session timeout after it last heard it, so no earlier grant can
//!   come from an expiry. An incarnation with such an excuse has stopped
//!   heartbeating successfully: it crashed, or its next heartbeats were
//!   answered FENCED_MEMBER_EPOCH / UNKNOWN_MEMBER_ID or got no answer.)
//!   A grant that is excused still ends the old hold, for the next rule.
//! - `commit-by-non-owner`: a commit accepted for a partition that the
//!   committing incarnation did not hold when it sent the commit (never
//!   granted, released, or taken over by an excused grant), or held only
//!   from a grant at a later epoch than the commit's.
//! - `poll-by-non-owner`: a member's poll returned records of a partition it
//!   did not hold when it sent the poll (the harness's own discipline:
//!   revoked partitions are given up before they are released).
//! - `offset-regression` (besides the accepted commits' order, checked with
//!   every other commit in `check_offset_regression`): the group's final
//!   committed offset of a partition (the last `committed` read) is below
//!   an offset a commit had been accepted with.
//! - `unconsumed`: an acknowledged record below the group's final committed
//!   offset of its partition that no member's poll returned.
//! - `group-not-converged`: after the last fault event, no `describe-group`
//!   completed within the convergence bound showing every partition owned
//!   by exactly one live member.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{
    as_u64, malformed, parse_offsets, parse_reads, Anomaly, CheckError, CheckOptions, Key, Offset, Pair, Send, Verdict,
    OFFSET_REGRESSION,
};
use crate::history::{Op, OpType, Process};

pub const DOUBLE_OWNERSHIP: &str = "double-ownership";
pub const COMMIT_BY_NON_OWNER: &str = "commit-by-non-owner";
pub const POLL_BY_NON_OWNER: &str = "poll-by-non-owner";
pub const UNCONSUMED: &str = "unconsumed";
pub const NOT_CONVERGED: &str = "group-not-converged";

/// What the group rules must know beyond the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupCheckOptions {
    /// Partitions of the topic the group reads: 0..keys.
    pub keys: u64,
    /// The group's session timeout.
    pub session_timeout_ns: u64,
    /// After the last fault event, every partition must be owned by one
    /// live member within this bound.
    pub convergence_bound_ns: u64,
}

/// One incarnation of a member (join to join, or to the process's end).
#[derive(Debug)]
struct Incarnation {
    member: String,
    /// Invocation times of its heartbeats answered ok.
    ok_invokes: Vec<u64>,
}

/// One hold of a partition by an incarnation.
#[derive(Debug)]
struct Hold {
    key: Key,
    incarnation: usize,
    /// The grant: its completion time and entry, and the answered epoch.
    from: u64,
    grant_op: u64,
    epoch: i64,
    /// The invocation (time, entry) of the heartbeat that released it.
    released: Option<(u64, u64)>,
    /// Completion time of an excused grant to another incarnation.
    superseded: Option<u64>,
}

impl Hold {
    fn held_at(&self, time: u64) -> bool {
        self.from < time && self.released.is_none_or(|(at, _)| at > time)
    }
}

/// A member's commit or poll, with the incarnation that ran it.
struct MemberOp<'a> {
    pair: Pair<'a>,
    incarnation: usize,
}

/// Collected from the history.
#[derive(Default)]
struct Group<'a> {
    incarnations: Vec<Incarnation>,
    holds: Vec<Hold>,
    commits: Vec<MemberOp<'a>>,
    polls: Vec<MemberOp<'a>>,
    /// Accepted commits: key -> (offset, completion entry), highest first seen.
    accepted: BTreeMap<Key, (Offset, u64)>,
    /// The last `committed` read: key -> offset, and its entry.
    final_committed: Option<(BTreeMap<Key, Offset>, u64)>,
    describes: Vec<Pair<'a>>,
    member_ops: u64,
}

fn member_of<'v>(op: &Op, value: &'v Value) -> Result<&'v str, CheckError> {
    value.get("member").and_then(Value::as_str).ok_or_else(|| malformed(op, "no member id"))
}

fn key_list(op: &Op, value: &Value, name: &str) -> Result<BTreeSet<Key>, CheckError> {
    let list = value.get(name).and_then(Value::as_array).ok_or_else(|| malformed(op, format!("no '{name}' list")))?;
    list.iter().map(|k| as_u64(op, k, name)).collect()
}

/// True when the history has group member operations.
pub(super) fn has_group_ops(pairs: &[Pair<'_>]) -> bool {
    pairs.iter().any(|p| p.invoke.f == "subscribe" && p.invoke.value.get("member").is_some())
}

fn collect<'a>(pairs: &[Pair<'a>]) -> Result<Group<'a>, CheckError> {
    let mut group = Group::default();
    // Per process: its current incarnation and the holds it has open, by key.
    let mut current: BTreeMap<&Process, (usize, BTreeMap<Key, usize>)> = BTreeMap::new();
    for p in pairs {
        let process = &p.invoke.process;
        match p.invoke.f.as_str() {
            "subscribe" if p.invoke.value.get("member").is_some() => {
                group.member_ops += 1;
                let member = member_of(p.invoke, &p.invoke.value)?;
                let epoch = p
                    .invoke
                    .value
                    .get("epoch")
                    .and_then(Value::as_i64)
                    .ok_or_else(|| malformed(p.invoke, "no epoch"))?;
                let at = (p.invoke.time, p.invoke.index);
                if epoch == 0 {
                    if let Some((_, open)) = current.get_mut(process) {
                        for (_, hold) in std::mem::take(open) {
                            group.holds[hold].released = Some(at);
                        }
                    }
                    group.incarnations.push(Incarnation { member: member.to_string(), ok_invokes: Vec::new() });
                    current.insert(process, (group.incarnations.len() - 1, BTreeMap::new()));
                }
                let Some((incarnation, open)) = current.get_mut(process) else {
                    return Err(malformed(p.invoke, "a heartbeat before the member joined"));
                };
                if group.incarnations[*incarnation].member != member {
                    return Err(malformed(p.invoke, format!("member {member} heartbeats in another member's process")));
                }
                let owned = if epoch < 0 { BTreeSet::new() } else { key_list(p.invoke, &p.invoke.value, "owned")? };
                for key in open.keys().copied().filter(|k| !owned.contains(k)).collect::<Vec<_>>() {
                    let hold = open.remove(&key).expect("an open hold");
                    group.holds[hold].released = Some(at);
                }
                let Some(done) = p.done.filter(|d| d.kind == OpType::Ok) else { continue };
                if epoch < 0 {
                    continue;
                }
                group.incarnations[*incarnation].ok_invokes.push(p.invoke.time);
                let answered =
                    done.value.get("epoch").and_then(Value::as_i64).ok_or_else(|| malformed(done, "no epoch"))?;
                for key in key_list(done, &done.value, "assignment")? {
                    if open.contains_key(&key) {
                        continue;
                    }
                    group.holds.push(Hold {
                        key,
                        incarnation: *incarnation,
                        from: done.time,
                        grant_op: done.index,
                        epoch: answered,
                        released: None,
                        superseded: None,
                    });
                    open.insert(key, group.holds.len() - 1);
                }
            }
            "commit" if p.invoke.value.get("member").is_some() => {
                let Some((incarnation, _)) = current.get(process) else {
                    return Err(malformed(p.invoke, "a commit before the member joined"));
                };
                if let Some(done) = p.done.filter(|d| d.kind == OpType::Ok) {
                    let offsets = parse_offsets(done, done.value.get("offsets").unwrap_or(&Value::Null))?;
                    for (key, offset) in offsets {
                        let best = group.accepted.entry(key).or_insert((offset, done.index));
                        if offset > best.0 {
                            *best = (offset, done.index);
                        }
                    }
                }
                group.commits.push(MemberOp { pair: *p, incarnation: *incarnation });
            }
            "poll" if p.invoke.value.get("member").is_some() => {
                let Some((incarnation, _)) = current.get(process) else {
                    return Err(malformed(p.invoke, "a poll before the member joined"));
                };
                group.polls.push(MemberOp { pair: *p, incarnation: *incarnation });
            }
            "committed" => {
                if let Some(done) = p.done.filter(|d| d.kind == OpType::Ok) {
                    let offsets = parse_offsets(done, done.value.get("offsets").unwrap_or(&Value::Null))?;
                    group.final_committed = Some((offsets, done.index));
                }
            }
            "describe-group" => group.describes.push(*p),
            _ => {}
        }
    }
    Ok(group)
}

/// Runs the group rules when the history has member operations.
pub(super) fn check_group(
    history: &[Op],
    pairs: &[Pair<'_>],
    sends: &[Send],
    options: &CheckOptions,
    verdict: &mut Verdict,
) -> Result<(), CheckError> {
    if !has_group_ops(pairs) {
        return Ok(());
    }
    let Some(settings) = &options.group else {
        let first = pairs.iter().find(|p| p.invoke.f == "subscribe").expect("has group ops");
        return Err(malformed(
            first.invoke,
            "a history with group members needs the group settings (start entry 'group')",
        ));
    };
    let mut group = collect(pairs)?;
    check_ownership(&mut group, settings, verdict);
    check_commits(&group, verdict)?;
    check_member_polls(&group, verdict)?;
    check_final_offsets(&group, sends, verdict)?;
    check_convergence(history, &group, settings, verdict)?;
    let stats = &mut verdict.stats.group;
    stats.insert("member_incarnations".into(), group.incarnations.len() as u64);
    stats.insert("grants".into(), group.holds.len() as u64);
    stats.insert("heartbeats".into(), group.member_ops);
    stats.insert("holds_released".into(), group.holds.iter().filter(|h| h.released.is_some()).count() as u64);
    stats.insert(
        "holds_taken_after_expiry".into(),
        group.holds.iter().filter(|h| h.superseded.is_some()).count() as u64,
    );
    let fenced = pairs
        .iter()
        .filter_map(|p| p.done)
        .filter(|d| d.kind == OpType::Fail && d.value.get("fenced").and_then(Value::as_bool) == Some(true))
        .count();
    stats.insert("fenced".into(), fenced as u64);
    stats.insert("crashes".into(), pairs.iter().filter(|p| p.invoke.f == "crash").count() as u64);
    stats.insert("heartbeats_ok".into(), group.incarnations.iter().map(|i| i.ok_invokes.len() as u64).sum());
    stats.insert("commits_ok".into(), group.commits.iter().filter(|c| c.pair.kind() == OpType::Ok).count() as u64);
    Ok(())
}

fn check_ownership(group: &mut Group<'_>, settings: &GroupCheckOptions, verdict: &mut Verdict) {
    let mut order: Vec<usize> = (0..group.holds.len()).collect();
    order.sort_by_key(|&h| group.holds[h].from);
    for &grant in &order {
        let (key, at, incarnation) = (group.holds[grant].key, group.holds[grant].from, group.holds[grant].incarnation);
        for other in 0..group.holds.len() {
            let hold = &group.holds[other];
            if hold.key != key || hold.incarnation == incarnation || !hold.held_at(at) || hold.superseded.is_some() {
                continue;
            }
            let previous = &group.incarnations[hold.incarnation];
            let excused = previous.ok_invokes.iter().all(|&heard| heard + settings.session_timeout_ns <= at);
            if excused {
                group.holds[other].superseded = Some(at);
                continue;
            }
            let last_heard = previous.ok_invokes.iter().copied().filter(|&t| t < at).max();
            let mut ops = vec![hold.grant_op, group.holds[grant].grant_op];
            ops.extend(hold.released.map(|(_, op)| op));
            verdict.flag(
                DOUBLE_OWNERSHIP,
                Anomaly {
                    key: Some(key),
                    offset: None,
                    value: None,
                    message: format!(
                        "partition {key} was granted to member {} at {:.3} s while member {} still held it \
                         (granted at {:.3} s, {}; its last successful heartbeat was invoked at {}, less than a \
                         session timeout before)",
                        group.incarnations[incarnation].member,
                        at as f64 / 1e9,
                        previous.member,
                        hold.from as f64 / 1e9,
                        match hold.released {
                            Some((t, _)) => format!("released at {:.3} s", t as f64 / 1e9),
                            None => "never released".into(),
                        },
                        last_heard.map_or("-".into(), |t| format!("{:.3} s", t as f64 / 1e9)),
                    ),
                    ops,
                },
            );
        }
    }
}

fn check_commits(group: &Group<'_>, verdict: &mut Verdict) -> Result<(), CheckError> {
    for commit in &group.commits {
        let Some(done) = commit.pair.done.filter(|d| d.kind == OpType::Ok) else { continue };
        let at = commit.pair.invoke.time;
        let epoch = commit
            .pair
            .invoke
            .value
            .get("epoch")
            .and_then(Value::as_i64)
            .ok_or_else(|| malformed(commit.pair.invoke, "no epoch"))?;
        let member = &group.incarnations[commit.incarnation].member;
        for key in parse_offsets(done, done.value.get("offsets").unwrap_or(&Value::Null))?.into_keys() {
            let holds: Vec<&Hold> = group
                .holds
                .iter()
                .filter(|h| h.key == key && h.incarnation == commit.incarnation && h.held_at(at))
                .collect();
            let why = match holds.first() {
                None => Some("it did not hold it".to_string()),
                Some(hold) if hold.superseded.is_some_and(|s| s < at) => Some(format!(
                    "its session had expired: the partition was granted to another member at {:.3} s",
                    hold.superseded.unwrap_or_default() as f64 / 1e9
                )),
                Some(hold) if hold.epoch > epoch => {
                    Some(format!("it was granted the partition at epoch {}, after the commit's", hold.epoch))
                }
                Some(_) => None,
            };
            if let Some(why) = why {
                let mut ops = commit.pair.witnesses();
                ops.extend(holds.first().map(|h| h.grant_op));
                verdict.flag(
                    COMMIT_BY_NON_OWNER,
                    Anomaly {
                        key: Some(key),
                        offset: None,
                        value: None,
                        message: format!(
                            "a commit of partition {key} by member {member} at epoch {epoch} was accepted, but {why}"
                        ),
                        ops,
                    },
                );
            }
        }
    }
    Ok(())
}

fn check_member_polls(group: &Group<'_>, verdict: &mut Verdict) -> Result<(), CheckError> {
    for poll in &group.polls {
        let Some(done) = poll.pair.done.filter(|d| d.kind == OpType::Ok) else { continue };
        let at = poll.pair.invoke.time;
        let keys: BTreeSet<Key> = parse_reads(done, &done.value)?.into_iter().map(|(k, _, _)| k).collect();
        for key in keys {
            let held = group.holds.iter().any(|h| h.key == key && h.incarnation == poll.incarnation && h.held_at(at));
            if !held {
                verdict.flag(
                    POLL_BY_NON_OWNER,
                    Anomaly {
                        key: Some(key),
                        offset: None,
                        value: None,
                        message: format!(
                            "member {} read partition {key}, which it did not hold",
                            group.incarnations[poll.incarnation].member
                        ),
                        ops: poll.pair.witnesses(),
                    },
                );
            }
        }
    }
    Ok(())
}

fn check_final_offsets(group: &Group<'_>, sends: &[Send], verdict: &mut Verdict) -> Result<(), CheckError> {
    let Some((committed, read_op)) = &group.final_committed else { return Ok(()) };
    for (key, &(offset, op)) in &group.accepted {
        let last = committed.get(key).copied();
        if last.is_none_or(|last| last < offset) {
            verdict.flag(
                OFFSET_REGRESSION,
                Anomaly {
                    key: Some(*key),
                    offset: last,
                    value: None,
                    message: format!(
                        "partition {key}: a commit of offset {offset} was accepted, but the group's final committed \
                         offset is {}",
                        last.map_or("none".to_string(), |o| o.to_string())
                    ),
                    ops: vec![op, *read_op],
                },
            );
        }
    }
    let mut consumed: BTreeSet<(Key, Offset)> = BTreeSet::new();
    for poll in &group.polls {
        if let Some(done) = poll.pair.done.filter(|d| d.kind == OpType::Ok) {
            consumed.extend(parse_reads(done, &done.value)?.into_iter().map(|(k, o, _)| (k, o)));
        }
    }
    for send in sends.iter().filter(|s| s.kind == OpType::Ok && s.txn.is_none()) {
        let offset = send.offset.expect("ok sends have offsets");
        let below = committed.get(&send.key).is_some_and(|&c| offset < c);
        if below && !consumed.contains(&(send.key, offset)) {
            let mut ops = send.witnesses.clone();
            ops.push(*read_op);
            verdict.flag(
                UNCONSUMED,
                Anomaly {
                    key: Some(send.key),
                    offset: Some(offset),
                    value: Some(send.value),
                    message: format!(
                        "partition {} offset {offset} (value {}) is below the group's committed offset {}, but no \
                         member polled it",
                        send.key, send.value, committed[&send.key]
                    ),
                    ops,
                },
            );
        }
    }
    Ok(())
}

/// Why a `describe-group` answer is not converged, or None when every
/// partition 0..keys is owned by exactly one member, a live one (listed in
/// `live`). The answer's shape: `{"owners": {"K": M | null}, "members":
/// {M: {"partitions": [K], "pending": [K]}}, "live": [M]}`.
pub fn not_converged(value: &Value, keys: u64) -> Option<String> {
    let live: BTreeSet<&str> =
        value.get("live").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    let mut claims: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    if let Some(members) = value.get("members").and_then(Value::as_object) {
        for (member, about) in members {
            for list in ["partitions", "pending"] {
                for key in about.get(list).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_u64) {
                    claims.entry(key).or_default().push(member);
                }
            }
        }
    }
    let owners = value.get("owners").and_then(Value::as_object);
    let mut problems = Vec::new();
    for key in 0..keys {
        let owner = owners.and_then(|o| o.get(&key.to_string())).and_then(Value::as_str);
        let claimed = claims.get(&key).cloned().unwrap_or_default();
        match owner {
            None => problems.push(format!("partition {key} has no owner")),
            Some(owner) if !live.contains(owner) => {
                problems.push(format!("partition {key} is owned by {owner}, not a live member"))
            }
            Some(owner) if claimed != [owner] => {
                problems.push(format!("partition {key} is owned by {owner} but listed by {claimed:?}"))
            }
            Some(_) => {}
        }
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

fn check_convergence(
    history: &[Op],
    group: &Group<'_>,
    settings: &GroupCheckOptions,
    verdict: &mut Verdict,
) -> Result<(), CheckError> {
    if group.describes.is_empty() {
        return Ok(());
    }
    let healed_at = history.iter().filter(|op| op.process.is_nemesis()).map(|op| op.time).max().unwrap_or(0);
    let deadline = healed_at + settings.convergence_bound_ns;
    let after: Vec<&Pair<'_>> = group.describes.iter().filter(|p| p.invoke.time >= healed_at).collect();
    let converged = after.iter().any(|p| {
        p.done.is_some_and(|d| {
            d.kind == OpType::Ok && d.time <= deadline && not_converged(&d.value, settings.keys).is_none()
        })
    });
    if converged {
        return Ok(());
    }
    let last = after.iter().rev().find_map(|p| p.done.filter(|d| d.kind == OpType::Ok));
    let why = last.and_then(|d| not_converged(&d.value, settings.keys)).unwrap_or_else(|| {
        if last.is_some() {
            "it converged only later".into()
        } else {
            "no describe-group answered".into()
        }
    });
    verdict.flag(
        NOT_CONVERGED,
        Anomaly {
            key: None,
            offset: None,
            value: None,
            message: format!(
                "within {:.1} s of the last fault event (at {:.1} s) no description of the group showed every \
                 partition owned by one live member; last seen: {why}",
                settings.convergence_bound_ns as f64 / 1e9,
                healed_at as f64 / 1e9
            ),
            ops: after.iter().map(|p| p.invoke.index).collect(),
        },
    );
    Ok(())
}
