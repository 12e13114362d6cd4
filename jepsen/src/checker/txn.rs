//! The transaction rules (the `txn` workload), beside the ones every
//! history gets (`aborted-read`, `read-of-uncommitted`, `exactly-once`, and
//! `lost-committed-write`, which `check_lost_and_unseen` names so for a
//! send of a committed transaction):
//!
//! - `torn-transaction`: a reading process read one record of a committed
//!   transaction, and on another key of that transaction read past the
//!   transaction's record there without reading it. Readers at
//!   read_committed see a transaction whole or not at all.
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
    // Per reading process: what it read, and how far on each key.
    struct Reader {
        read: BTreeSet<(Key, Val)>,
        furthest: BTreeMap<Key, (Offset, u64)>,
        touched: BTreeMap<u64, u64>,
    }
    let mut readers: BTreeMap<String, Reader> = BTreeMap::new();
    for read in reads {
        let process = history.get(read.op as usize).map(|op| op.process.to_string()).unwrap_or_default();
        let reader = readers.entry(process).or_insert_with(|| Reader {
            read: BTreeSet::new(),
            furthest: BTreeMap::new(),
            touched: BTreeMap::new(),
        });
        reader.read.insert((read.key, read.value));
        let furthest = reader.furthest.entry(read.key).or_insert((read.offset, read.op));
        if read.offset > furthest.0 {
            *furthest = (read.offset, read.op);
        }
        if let Some(&txn) = writer.get(&(read.key, read.value)) {
            reader.touched.entry(txn).or_insert(read.op);
        }
    }
    for (process, reader) in &readers {
        for (&txn, &seen_op) in &reader.touched {
            for &(key, value, offset) in &writes[&txn] {
                if reader.read.contains(&(key, value)) {
                    continue;
                }
                if let Some(&(past, past_op)) = reader.furthest.get(&key).filter(|(o, _)| *o > offset) {
                    verdict.flag(
                        TORN_TRANSACTION,
                        Anomaly {
                            key: Some(key),
                            offset: Some(offset),
                            value: Some(value),
                            message: format!(
                                "process {process} read part of the transaction invoked at {txn} but not its key \
                                 {key} value {value} at offset {offset}, though it read key {key} up to offset {past}"
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
