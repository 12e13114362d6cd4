//! The transaction rules (the `txn` workload), beside the ones every
//! history gets (`aborted-read`, `read-of-uncommitted`, `exactly-once`, and
//! `lost-committed-write`, which `check_lost_and_unseen` names so for a
//! send of a committed transaction):
//!
//! - `torn-transaction`: a reading process read one record of a committed
//!   transaction, and on another key (or the same one) read over the
//!   transaction's record there without reading it: from a position at or
//!   before it (an assignment's, or its first read there) to an offset past
//!   it. Readers at read_committed see a transaction whole or not at all,
//!   where their positions cover it.
//! - `G1c`: a cycle of write-read dependencies between committed
//!   transactions (T2 read a record T1 wrote, ... , and T1 read one of the
//!   last one's). A transaction's records are visible only once it commits,
//!   after which it reads nothing, so no such cycle can exist. Write-write
//!   order (offsets) is left out: records of two open transactions on one
//!   key are ordered by offset, not by commit, so offset-ordered edges make
//!   cycles of correct runs.
//! - `hanging-transaction`: the harness's `txn-list` after the run shows a
//!   transaction open (ongoing or preparing) for longer than its timeout plus
//!   the bound the entry names.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{Anomaly, Key, Offset, Read, Send, Val, Verdict};
use crate::history::{Op, OpType};

pub const TORN_TRANSACTION: &str = "torn-transaction";
pub const LOST_COMMITTED_WRITE: &str = "lost-committed-write";
pub const G1C: &str = "G1c";
pub const HANGING_TRANSACTION: &str = "hanging-transaction";

/// The writes of each committed (`ok`) transaction, by its invocation index.
fn committed_writes(sends: &[Send]) -> BTreeMap<u64, Vec<(Key, Val, Offset)>> {
    let mut writes: BTreeMap<u64, Vec<(Key, Val, Offset)>> = BTreeMap::new();
    for send in sends.iter().filter(|s| s.kind == OpType::Ok) {
        if let (Some(txn), Some(offset)) = (send.txn, send.offset) {
            writes.entry(txn).or_default().push((send.key, send.value, offset));
        }
    }
    writes
}

pub(super) fn check_torn(history: &[Op], sends: &[Send], reads: &[Read], verdict: &mut Verdict) {
    let writes = committed_writes(sends);
    let writer: BTreeMap<(Key, Val), u64> =
        writes.iter().flat_map(|(txn, w)| w.iter().map(move |&(k, v, _)| ((k, v), *txn))).collect();
    let mut reads_of: BTreeMap<u64, Vec<&Read>> = BTreeMap::new();
    for read in reads {
        reads_of.entry(read.op).or_default().push(read);
    }
    // Per reading process: what it read, the transactions it read a record
    // of, and per key the ranges its positions covered: from where an
    // assignment started it (or its first read) to the furthest offset it
    // read from there, with the read that got furthest.
    #[derive(Default)]
    struct Reader {
        read: BTreeSet<(Key, Val)>,
        touched: BTreeMap<u64, u64>,
        ranges: BTreeMap<Key, Vec<(Offset, Offset, u64)>>,
        open: BTreeMap<Key, usize>,
    }
    let mut readers: BTreeMap<String, Reader> = BTreeMap::new();
    for op in history.iter().filter(|op| op.kind == OpType::Ok) {
        let positions = op.value.get("positions").and_then(Value::as_object).filter(|_| op.f != "txn");
        if let Some(positions) = positions {
            let reader = readers.entry(op.process.to_string()).or_default();
            reader.open.clear();
            for (key, position) in positions {
                let (Ok(key), Some(position)) = (key.parse::<Key>(), position.as_u64()) else { continue };
                let ranges = reader.ranges.entry(key).or_default();
                // Empty until a read extends it.
                ranges.push((position, position, op.index));
                reader.open.insert(key, ranges.len() - 1);
            }
        }
        let Some(found) = reads_of.get(&op.index) else { continue };
        let reader = readers.entry(op.process.to_string()).or_default();
        for read in found {
            reader.read.insert((read.key, read.value));
            if let Some(&txn) = writer.get(&(read.key, read.value)) {
                reader.touched.entry(txn).or_insert(read.op);
            }
            let ranges = reader.ranges.entry(read.key).or_default();
            let at = match reader.open.get(&read.key) {
                Some(&at) => at,
                None => {
                    ranges.push((read.offset, read.offset, read.op));
                    reader.open.insert(read.key, ranges.len() - 1);
                    ranges.len() - 1
                }
            };
            let range = &mut ranges[at];
            if read.offset >= range.1 {
                range.1 = read.offset;
                range.2 = read.op;
            }
        }
    }
    for (process, reader) in &readers {
        for (&txn, &seen_op) in &reader.touched {
            for &(key, value, offset) in &writes[&txn] {
                if reader.read.contains(&(key, value)) {
                    continue;
                }
                let covering = reader
                    .ranges
                    .get(&key)
                    .and_then(|ranges| ranges.iter().find(|(from, to, _)| *from <= offset && offset < *to));
                if let Some(&(from, past, past_op)) = covering {
                    verdict.flag(
                        TORN_TRANSACTION,
                        Anomaly {
                            key: Some(key),
                            offset: Some(offset),
                            value: Some(value),
                            message: format!(
                                "process {process} read part of the transaction invoked at {txn} but not its key \
                                 {key} value {value} at offset {offset}, though it read key {key} from {from} up to \
                                 offset {past}"
                            ),
                            ops: vec![txn, seen_op, past_op],
                        },
                    );
                }
            }
        }
    }
}

pub(super) fn check_g1c(sends: &[Send], reads: &[Read], verdict: &mut Verdict) {
    let writes = committed_writes(sends);
    let writer: BTreeMap<(Key, Val), u64> =
        writes.iter().flat_map(|(txn, w)| w.iter().map(move |&(k, v, _)| ((k, v), *txn))).collect();
    let mut edges: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for read in reads {
        let (Some(reader), Some(&from)) = (read.txn, writer.get(&(read.key, read.value))) else { continue };
        if writes.contains_key(&reader) && from != reader {
            edges.entry(from).or_default().insert(reader);
        }
    }
    for cycle in strongly_connected(&edges).into_iter().filter(|c| c.len() > 1) {
        verdict.flag(
            G1C,
            Anomaly {
                key: None,
                offset: None,
                value: None,
                message: format!(
                    "committed transactions {cycle:?} (by invocation index) read each other's records in a cycle"
                ),
                ops: cycle,
            },
        );
    }
}

/// The strongly connected components of a graph (Kosaraju, iterative).
fn strongly_connected(edges: &BTreeMap<u64, BTreeSet<u64>>) -> Vec<Vec<u64>> {
    let nodes: BTreeSet<u64> =
        edges.iter().flat_map(|(from, to)| std::iter::once(*from).chain(to.iter().copied())).collect();
    let mut reverse: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for (&from, to) in edges {
        for &t in to {
            reverse.entry(t).or_default().insert(from);
        }
    }
    let empty = BTreeSet::new();
    // First pass: finishing order.
    let mut visited = BTreeSet::new();
    let mut order = Vec::new();
    for &start in &nodes {
        if !visited.insert(start) {
            continue;
        }
        let mut stack: Vec<(u64, Vec<u64>)> =
            vec![(start, edges.get(&start).unwrap_or(&empty).iter().copied().collect())];
        while let Some((node, pending)) = stack.last_mut() {
            match pending.pop() {
                Some(next) if visited.insert(next) => {
                    let more = edges.get(&next).unwrap_or(&empty).iter().copied().collect();
                    stack.push((next, more));
                }
                Some(_) => {}
                None => {
                    order.push(*node);
                    stack.pop();
                }
            }
        }
    }
    // Second pass on the reversed graph, in reverse finishing order.
    let mut assigned = BTreeSet::new();
    let mut components = Vec::new();
    for &start in order.iter().rev() {
        if !assigned.insert(start) {
            continue;
        }
        let mut component = vec![start];
        let mut stack = vec![start];
        while let Some(node) = stack.pop() {
            for &prev in reverse.get(&node).unwrap_or(&empty) {
                if assigned.insert(prev) {
                    component.push(prev);
                    stack.push(prev);
                }
            }
        }
        component.sort_unstable();
        components.push(component);
    }
    components
}

pub(super) fn check_hanging(history: &[Op], verdict: &mut Verdict) {
    for op in history.iter().filter(|op| op.f == "txn-list" && op.kind == OpType::Ok) {
        let bound = op.value.get("bound_ms").and_then(Value::as_u64).unwrap_or(0);
        for row in op.value.get("transactions").and_then(Value::as_array).into_iter().flatten() {
            let state = row.get("state").and_then(Value::as_str).unwrap_or_default();
            let age = row.get("age_ms").and_then(Value::as_u64).unwrap_or(0);
            let timeout = row.get("timeout_ms").and_then(Value::as_u64).unwrap_or(0);
            let open = matches!(state, "ONGOING" | "PREPARE_COMMIT" | "PREPARE_ABORT");
            if open && age > timeout.saturating_add(bound) {
                let id = row.get("id").and_then(Value::as_str).unwrap_or_default();
                verdict.flag(
                    HANGING_TRANSACTION,
                    Anomaly {
                        key: None,
                        offset: None,
                        value: None,
                        message: format!(
                            "transaction of '{id}' was {state} for {age} ms after the run, past its timeout of \
                             {timeout} ms plus {bound} ms"
                        ),
                        ops: vec![op.index],
                    },
                );
            }
        }
    }
}
