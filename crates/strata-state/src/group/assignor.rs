//! The server-side assignors: pure functions from the members, their
//! subscriptions and the topics' partition counts to a target assignment.
//!
//! Only the metadata leader runs them; it proposes their result as data in
//! a `SetTargetAssignment` command. `apply` never runs an assignor, so a
//! change to one between versions cannot make replicas diverge.
//!
//! Both are deterministic: members are taken in member id order, topics in
//! name order, and every tie is broken by those orders.

use std::collections::{BTreeMap, BTreeSet};

use strata_core::ErrorCode;

use super::{Assignment, GroupError};

/// Balanced and sticky; the default.
pub const UNIFORM: &str = "uniform";
/// Contiguous ranges per topic, the same for co-partitioned topics.
pub const RANGE: &str = "range";
/// The assignor of a group whose members name none.
pub const DEFAULT_ASSIGNOR: &str = UNIFORM;
/// Every assignor a member may name.
pub const ASSIGNORS: &[&str] = &[UNIFORM, RANGE];

/// What an assignor knows of one member.
#[derive(Clone, Copy, Debug)]
pub struct AssignorMember<'a> {
    pub member_id: &'a str,
    pub instance_id: Option<&'a str>,
    pub subscribed_topics: &'a BTreeSet<String>,
    /// The member's partitions in the previous target; a sticky assignor
    /// keeps them where balance allows.
    pub previous: &'a Assignment,
}

/// Checks that `name` is a known assignor.
pub fn validate_assignor(name: &str) -> Result<(), GroupError> {
    if ASSIGNORS.contains(&name) {
        Ok(())
    } else {
        Err(GroupError::new(
            ErrorCode::UnsupportedAssignor,
            format!("assignor '{name}' is unknown; use one of {}", ASSIGNORS.join(", ")),
        ))
    }
}

/// Runs the assignor `name`. `topics` gives the partition count of every
/// subscribed topic that exists; topics missing from it get no partitions.
/// The answer has an entry for every member, empty when it gets nothing.
pub fn assign(
    name: &str,
    members: &[AssignorMember<'_>],
    topics: &BTreeMap<String, u32>,
) -> Result<BTreeMap<String, Assignment>, GroupError> {
    validate_assignor(name)?;
    let mut members = members.to_vec();
    members.sort_by(|a, b| a.member_id.cmp(b.member_id));
    members.dedup_by(|a, b| a.member_id == b.member_id);
    let assignments = if name == RANGE { range(&members, topics) } else { uniform(&members, topics) };
    Ok(members.iter().map(|m| m.member_id.to_string()).zip(assignments).collect())
}

/// `range`: for each topic, its subscribers in order of instance id (member
/// id for dynamic members) get contiguous ranges of partitions, the first
/// `count % subscribers` one partition more. Topics with the same partition
/// count and the same subscribers are split identically, so a member reads
/// the same partitions of co-partitioned topics. Ordering static members by
/// instance id keeps their ranges across restarts.
fn range(members: &[AssignorMember<'_>], topics: &BTreeMap<String, u32>) -> Vec<Assignment> {
    let mut out = vec![Assignment::new(); members.len()];
    for (topic, count) in topics {
        let mut subscribers: Vec<usize> =
            (0..members.len()).filter(|i| members[*i].subscribed_topics.contains(topic)).collect();
        if subscribers.is_empty() {
            continue;
        }
        subscribers.sort_by_key(|i| (members[*i].instance_id.unwrap_or(members[*i].member_id), members[*i].member_id));
        let n = subscribers.len() as u32;
        let (per_member, extra) = (count / n, count % n);
        for (rank, index) in subscribers.into_iter().enumerate() {
            let rank = rank as u32;
            let start = rank * per_member + rank.min(extra);
            let len = per_member + u32::from(rank < extra);
            for partition in start..start + len {
                out[index].insert(topic.clone(), partition);
            }
        }
    }
    out
}

/// `uniform`: every member keeps the partitions of its previous target that
/// it still subscribes to; partitions no one keeps go, topic by topic, to
/// the eligible member with the fewest partitions; then, while a member has
/// two or more partitions more than another that could take one of them,
/// one moves. So the result is balanced (no member has two partitions more
/// than another member that subscribes to one of its topics; with equal
/// subscriptions, counts differ by at most one), and nothing moves that
/// balance does not require: a member joining a balanced group with equal
/// subscriptions takes exactly its share, all from members above it.
fn uniform(members: &[AssignorMember<'_>], topics: &BTreeMap<String, u32>) -> Vec<Assignment> {
    let n = members.len();
    let mut held = vec![Assignment::new(); n];
    let mut counts = vec![0usize; n];
    let mut owner: BTreeMap<(&str, u32), usize> = BTreeMap::new();

    // Keep what is still valid.
    for (index, member) in members.iter().enumerate() {
        for (topic, partition) in member.previous.iter() {
            let Some((name, count)) = topics.get_key_value(topic) else { continue };
            if partition < *count && member.subscribed_topics.contains(topic) && !owner.contains_key(&(name, partition))
            {
                owner.insert((name.as_str(), partition), index);
                held[index].insert(topic.to_string(), partition);
                counts[index] += 1;
            }
        }
    }

    // Hand out the rest, topics with the fewest eligible members first (they
    // have the fewest choices), each partition to the least loaded member.
    let mut order: Vec<(&String, u32, Vec<usize>)> = topics
        .iter()
        .map(|(topic, count)| {
            let eligible = (0..n).filter(|i| members[*i].subscribed_topics.contains(topic)).collect();
            (topic, *count, eligible)
        })
        .filter(|(_, _, eligible): &(_, _, Vec<usize>)| !eligible.is_empty())
        .collect();
    order.sort_by(|a, b| (a.2.len(), a.0).cmp(&(b.2.len(), b.0)));
    for (topic, count, eligible) in &order {
        let mut by_load: BTreeSet<(usize, usize)> = eligible.iter().map(|i| (counts[*i], *i)).collect();
        for partition in 0..*count {
            if owner.contains_key(&(topic.as_str(), partition)) {
                continue;
            }
            let (load, index) = by_load.pop_first().expect("a topic in the order has an eligible member");
            owner.insert((topic.as_str(), partition), index);
            held[index].insert(topic.to_string(), partition);
            counts[index] += 1;
            by_load.insert((load + 1, index));
        }
    }

    // Balance: move one partition at a time from a member with the most to
    // one with the fewest that can take it. Each move lowers the sum of the
    // squared counts, so this ends.
    loop {
        let mut ascending: Vec<usize> = (0..n).collect();
        ascending.sort_by_key(|i| (counts[*i], *i));
        let mut moved = None;
        'search: for &to in &ascending {
            for &from in ascending.iter().rev() {
                if counts[from] < counts[to] + 2 {
                    break;
                }
                let taken = held[from]
                    .topics()
                    .iter()
                    .find(|(topic, _)| members[to].subscribed_topics.contains(*topic))
                    .map(|(topic, partitions)| (topic.clone(), *partitions.last().expect("no empty topics")));
                if let Some(partition) = taken {
                    moved = Some((from, to, partition));
                    break 'search;
                }
            }
        }
        let Some((from, to, (topic, partition))) = moved else { break };
        held[from].remove(&topic, partition);
        counts[from] -= 1;
        held[to].insert(topic, partition);
        counts[to] += 1;
    }
    held
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    struct Spec {
        id: String,
        instance: Option<String>,
        topics: BTreeSet<String>,
        previous: Assignment,
    }

    fn spec(id: &str, topics: &[&str]) -> Spec {
        Spec {
            id: id.into(),
            instance: None,
            topics: topics.iter().map(|t| t.to_string()).collect(),
            previous: Assignment::new(),
        }
    }

    fn run(name: &str, specs: &[Spec], topics: &[(&str, u32)]) -> BTreeMap<String, Assignment> {
        let members: Vec<AssignorMember<'_>> = specs
            .iter()
            .map(|s| AssignorMember {
                member_id: &s.id,
                instance_id: s.instance.as_deref(),
                subscribed_topics: &s.topics,
                previous: &s.previous,
            })
            .collect();
        let topics = topics.iter().map(|(t, c)| (t.to_string(), *c)).collect();
        assign(name, &members, &topics).unwrap()
    }

    /// Every partition of a topic some member subscribes to goes to exactly
    /// one member that subscribes to it.
    fn assert_complete_and_disjoint(specs: &[Spec], topics: &[(&str, u32)], out: &BTreeMap<String, Assignment>) {
        let mut seen = BTreeMap::new();
        for s in specs {
            for (topic, partition) in out[&s.id].iter() {
                assert!(s.topics.contains(topic), "{} got {topic}-{partition} without subscribing", s.id);
                assert!(seen.insert((topic.to_string(), partition), &s.id).is_none(), "{topic}-{partition} twice");
            }
        }
        for (topic, count) in topics {
            if specs.iter().any(|s| s.topics.contains(*topic)) {
                for p in 0..*count {
                    assert!(seen.contains_key(&(topic.to_string(), p)), "{topic}-{p} unassigned");
                }
            }
        }
    }

    /// No member has two partitions more than a member that could take one.
    fn assert_balanced(specs: &[Spec], out: &BTreeMap<String, Assignment>) {
        for a in specs {
            for b in specs {
                let (ca, cb) = (out[&a.id].len(), out[&b.id].len());
                if ca > cb + 1 {
                    let movable = out[&a.id].iter().find(|(t, _)| b.topics.contains(*t));
                    assert!(movable.is_none(), "{} has {ca}, {} has {cb} and could take {movable:?}", a.id, b.id);
                }
            }
        }
    }

    #[test]
    fn unknown_assignors_are_refused() {
        let error = assign("sticky", &[], &BTreeMap::new()).unwrap_err();
        assert_eq!(error.code, ErrorCode::UnsupportedAssignor);
        assert!(error.message.contains("uniform, range"), "{}", error.message);
    }

    #[test]
    fn range_gives_each_member_the_same_ranges_of_co_partitioned_topics() {
        let specs = [spec("m1", &["a", "b"]), spec("m2", &["a", "b"]), spec("m3", &["a", "b"])];
        let out = run(RANGE, &specs, &[("a", 7), ("b", 7)]);
        assert_complete_and_disjoint(&specs, &[("a", 7), ("b", 7)], &out);
        let expected: [&[u32]; 3] = [&[0, 1, 2], &[3, 4], &[5, 6]];
        for (s, partitions) in specs.iter().zip(expected) {
            let of = |t| out[&s.id].partitions_of(t).unwrap().iter().copied().collect::<Vec<_>>();
            assert_eq!(of("a"), partitions);
            assert_eq!(of("b"), partitions);
        }
    }

    #[test]
    fn range_orders_static_members_by_instance_id() {
        let mut specs = [spec("zzz", &["a"]), spec("aaa", &["a"])];
        specs[0].instance = Some("host-1".into());
        specs[1].instance = Some("host-2".into());
        let out = run(RANGE, &specs, &[("a", 4)]);
        assert_eq!(out["zzz"], [("a", 0), ("a", 1)].into_iter().collect());
        assert_eq!(out["aaa"], [("a", 2), ("a", 3)].into_iter().collect());
    }

    #[test]
    fn uniform_spreads_a_fresh_group_evenly() {
        let specs = [spec("m1", &["a", "b"]), spec("m2", &["a", "b"]), spec("m3", &["a", "b"])];
        let out = run(UNIFORM, &specs, &[("a", 5), ("b", 3), ("gone", 4)]);
        assert_complete_and_disjoint(&specs, &[("a", 5), ("b", 3)], &out);
        let mut counts: Vec<usize> = out.values().map(Assignment::len).collect();
        counts.sort();
        assert_eq!(counts, vec![2, 3, 3]);
    }

    #[test]
    fn uniform_moves_only_what_a_joining_member_must_take() {
        let mut specs = vec![spec("m1", &["a"]), spec("m2", &["a"])];
        let first = run(UNIFORM, &specs, &[("a", 6)]);
        for s in &mut specs {
            s.previous = first[&s.id].clone();
        }
        specs.push(spec("m3", &["a"]));
        let second = run(UNIFORM, &specs, &[("a", 6)]);
        assert_eq!(second["m3"].len(), 2);
        for s in &specs[..2] {
            assert!(second[&s.id].is_subset(&first[&s.id]), "{} only gives partitions up", s.id);
            assert_eq!(second[&s.id].len(), 2);
        }
    }

    #[test]
    fn uniform_balances_only_as_far_as_subscriptions_allow() {
        // m1 alone reads b; it cannot hand any of it to m2.
        let specs = [spec("m1", &["a", "b"]), spec("m2", &["a"])];
        let out = run(UNIFORM, &specs, &[("a", 2), ("b", 6)]);
        assert_complete_and_disjoint(&specs, &[("a", 2), ("b", 6)], &out);
        assert_balanced(&specs, &out);
        assert_eq!(out["m2"], [("a", 0), ("a", 1)].into_iter().collect());
        assert_eq!(out["m1"].len(), 6);
    }

    /// Per member its subscription over the topics and its previous
    /// (topic index, partition) pairs; then the topics' partition counts.
    type RawGroup = (Vec<(Vec<bool>, Vec<(u8, u32)>)>, Vec<u32>);

    fn specs_strategy() -> impl Strategy<Value = RawGroup> {
        // Up to 6 members, each with a subscription over 3 topics and some
        // previous partitions (possibly stale or shared: the assignor must
        // cope); topic counts 0 (absent) to 12.
        (
            prop::collection::vec(
                (prop::collection::vec(any::<bool>(), 3), prop::collection::vec((0u8..3, 0u32..14), 0..8)),
                1..7,
            ),
            prop::collection::vec(0u32..13, 3),
        )
    }

    fn build(raw: &RawGroup) -> (Vec<Spec>, Vec<(&'static str, u32)>) {
        const NAMES: [&str; 3] = ["a", "b", "c"];
        let specs = raw
            .0
            .iter()
            .enumerate()
            .map(|(i, (subscribed, previous))| Spec {
                id: format!("m{i}"),
                instance: None,
                topics: NAMES.iter().zip(subscribed).filter(|(_, s)| **s).map(|(t, _)| t.to_string()).collect(),
                previous: previous.iter().map(|(t, p)| (NAMES[*t as usize], *p)).collect(),
            })
            .collect();
        let topics = NAMES.iter().zip(&raw.1).filter(|(_, c)| **c > 0).map(|(t, c)| (*t, *c)).collect();
        (specs, topics)
    }

    proptest! {
        #[test]
        fn both_assignors_cover_every_subscribed_partition_once(raw in specs_strategy()) {
            let (specs, topics) = build(&raw);
            for name in ASSIGNORS {
                let out = run(name, &specs, &topics);
                prop_assert_eq!(out.len(), specs.len());
                assert_complete_and_disjoint(&specs, &topics, &out);
            }
        }

        #[test]
        fn uniform_is_balanced_within_one_partition(raw in specs_strategy()) {
            let (specs, topics) = build(&raw);
            let out = run(UNIFORM, &specs, &topics);
            assert_balanced(&specs, &out);
            let same_subscriptions = specs.iter().all(|s| s.topics == specs[0].topics);
            if same_subscriptions {
                let counts: Vec<usize> = out.values().map(Assignment::len).collect();
                let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
                prop_assert!(max - min <= 1, "counts {:?}", counts);
            }
        }

        #[test]
        fn uniform_keeps_a_balanced_previous_assignment(raw in specs_strategy()) {
            let (mut specs, topics) = build(&raw);
            let first = run(UNIFORM, &specs, &topics);
            for s in &mut specs {
                s.previous = first[&s.id].clone();
            }
            prop_assert_eq!(run(UNIFORM, &specs, &topics), first);
        }

        #[test]
        fn a_join_moves_only_the_partitions_balance_requires(members in 1usize..7, partitions in 0u32..40) {
            let mut specs: Vec<Spec> = (0..members).map(|i| spec(&format!("m{i}"), &["a"])).collect();
            let topics = [("a", partitions)];
            let before = run(UNIFORM, &specs, &topics);
            for s in &mut specs {
                s.previous = before[&s.id].clone();
            }
            specs.push(spec("new", &["a"]));
            let after = run(UNIFORM, &specs, &topics);
            let moved: usize = specs[..members].iter().map(|s| before[&s.id].difference(&after[&s.id]).len()).sum();
            for s in &specs[..members] {
                prop_assert!(after[&s.id].is_subset(&before[&s.id]), "old members only give partitions up");
            }
            prop_assert_eq!(moved, after["new"].len(), "every moved partition went to the new member");
            // The fewest moves any balanced result needs: the new member's
            // smallest fair share, or what old members hold above the
            // largest fair share, whichever is more.
            let total = partitions as usize;
            let (floor, ceil) = (total / (members + 1), total.div_ceil(members + 1));
            let excess: usize = specs[..members].iter().map(|s| before[&s.id].len().saturating_sub(ceil)).sum();
            prop_assert_eq!(moved, floor.max(excess));
        }
    }
}
