//! Rules of the repository that no compiler checks, checked on every run of
//! the suite (in the spirit of TigerBeetle's `tidy.zig`): the crate
//! boundaries ARCHITECTURE.md states, read from `cargo metadata`, and the
//! error codes, pinned so that a renumbered or reused code fails here, with
//! ARCHITECTURE.md's table kept equal to the registry, and the state
//! machines' determinism (no clock, no randomness, no hash-order maps).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use strata_core::ErrorCode;

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the repository")
}

/// Every workspace crate and the crates it depends on to build (normal
/// dependencies; dev and build dependencies are not edges of the product).
fn crate_edges() -> BTreeMap<String, BTreeSet<String>> {
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(repository())
        .output()
        .expect("run cargo metadata");
    assert!(output.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&output.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).expect("cargo metadata JSON");
    let mut edges = BTreeMap::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().expect("name").to_string();
        let deps = package["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .filter(|d| d["kind"].is_null())
            .map(|d| d["name"].as_str().expect("dependency name").to_string())
            .collect();
        edges.insert(name, deps);
    }
    edges
}

/// Each rule: a dependency, and the only workspace crates that may have it.
/// The reasons are ARCHITECTURE.md's "Boundary:" lines.
const ONLY_IN: &[(&str, &[&str])] = &[
    // RocksDB appears in strata-storage only.
    ("rocksdb", &["strata-storage"]),
    // Wire types (prost, tonic) appear only where the wire is: the
    // generated crate, the node, the client library and the cluster tests.
    ("strata-proto", &["strata-server", "strata-client", "strata-cluster-tests"]),
    ("prost", &["strata-proto"]),
    ("tonic", &["strata-proto", "strata-server", "strata-client", "strata-cluster-tests"]),
    ("tonic-prost", &["strata-proto"]),
    ("tonic-health", &["strata-server", "strata-cluster-tests"]),
    ("tonic-reflection", &["strata-server", "strata-cluster-tests"]),
    // Raft is the node's and its store's business, not the state machines'.
    ("openraft", &["strata-storage", "strata-server"]),
    ("openraft-multi", &["strata-server"]),
    // Test helpers stay out of the product: only the cluster tests and the
    // harness use the test kit (dev-dependencies are not edges).
    ("strata-testkit", &["strata-cluster-tests", "strata-jepsen"]),
];

/// Each rule: a workspace crate, and dependencies it must not have.
const NEVER_IN: &[(&str, &[&str])] = &[
    // Plain, deterministic state machines: no runtime, no Raft, no disk.
    ("strata-state", &["tokio", "openraft", "rocksdb", "strata-storage", "strata-proto"]),
    // Vocabulary with no I/O and nothing of Strata below it.
    ("strata-core", &["tokio", "strata-record", "strata-state", "strata-storage", "strata-proto"]),
    // The codec: no I/O, no async.
    ("strata-record", &["tokio", "futures", "strata-state", "strata-storage"]),
    // The harness sees Strata as a user does: through strata-client only.
    (
        "strata-jepsen",
        &["strata-core", "strata-record", "strata-state", "strata-storage", "strata-proto", "strata-server"],
    ),
    // The test kit depends on nothing of Strata, so the harness may use it.
    (
        "strata-testkit",
        &[
            "strata-core",
            "strata-record",
            "strata-state",
            "strata-storage",
            "strata-proto",
            "strata-server",
            "strata-client",
        ],
    ),
    // The CLI talks to nodes through strata-client (it runs a node through
    // strata-server).
    ("strata-cli", &["strata-proto", "tonic", "prost"]),
    // The load generator stays light: the benchmark suite builds it beside
    // the peers' clients, and a system is reached only through a sink.
    (
        "strata-load",
        &[
            "strata-client",
            "strata-proto",
            "strata-server",
            "strata-storage",
            "strata-state",
            "rocksdb",
            "tonic",
            "prost",
            "openraft",
        ],
    ),
];

#[test]
fn crate_edges_keep_the_boundaries_of_architecture_md() {
    let edges = crate_edges();
    for crate_name in ["strata-core", "strata-record", "strata-state", "strata-storage", "strata-server"] {
        assert!(edges.contains_key(crate_name), "{crate_name} is not in the workspace: update this test");
    }
    let mut broken = Vec::new();
    for (dependency, allowed) in ONLY_IN {
        for (crate_name, deps) in &edges {
            if deps.contains(*dependency) && !allowed.contains(&crate_name.as_str()) {
                broken.push(format!("{crate_name} depends on {dependency}, which only {allowed:?} may"));
            }
        }
    }
    for (crate_name, forbidden) in NEVER_IN {
        for dependency in *forbidden {
            if edges[*crate_name].contains(*dependency) {
                broken.push(format!("{crate_name} depends on {dependency}"));
            }
        }
    }
    assert!(broken.is_empty(), "crate boundaries broken (see ARCHITECTURE.md):\n{}", broken.join("\n"));
}

/// The registry as released: a code is never renumbered or reused. A new
/// code is added here and to ARCHITECTURE.md's table in the same change.
const PINNED: &[(u32, &str)] = &[
    (1, "UNKNOWN_TOPIC"),
    (2, "UNKNOWN_PARTITION"),
    (3, "NOT_LEADER"),
    (4, "LEADER_NOT_AVAILABLE"),
    (5, "OFFSET_OUT_OF_RANGE"),
    (6, "RECORD_TOO_LARGE"),
    (7, "CORRUPT_BATCH"),
    (8, "INVALID_TOPIC_NAME"),
    (9, "TOPIC_ALREADY_EXISTS"),
    (10, "INVALID_REQUEST"),
    (11, "INVALID_CONFIG"),
    (12, "INVALID_REPLICATION_FACTOR"),
    (13, "INVALID_PARTITIONS"),
    (14, "TIMEOUT"),
    (15, "BUSY"),
    (16, "INTERNAL"),
    (17, "CLUSTER_UNAVAILABLE"),
    (18, "PARTITION_NOT_READY"),
    (19, "OUT_OF_ORDER_SEQUENCE"),
    (20, "PRODUCER_FENCED"),
    (21, "UNSUPPORTED_FEATURE"),
    (22, "LIMIT_REACHED"),
    (23, "UNKNOWN_MEMBER_ID"),
    (24, "FENCED_MEMBER_EPOCH"),
    (25, "STALE_MEMBER_EPOCH"),
    (26, "GROUP_ID_NOT_FOUND"),
    (27, "INVALID_GROUP_ID"),
    (28, "GROUP_NOT_EMPTY"),
    (29, "UNSUPPORTED_ASSIGNOR"),
    (30, "UNRELEASED_INSTANCE_ID"),
    (31, "CONCURRENT_TRANSACTIONS"),
    (32, "INVALID_TXN_STATE"),
    (33, "TRANSACTION_TIMED_OUT"),
    (34, "TRANSACTION_ABORTED"),
    (35, "TRANSACTIONAL_ID_NOT_FOUND"),
    (36, "UNSTABLE_OFFSET_COMMIT"),
    (37, "REASSIGNMENT_IN_PROGRESS"),
    (38, "NODE_ID_IN_USE"),
    (39, "CLUSTER_ID_MISMATCH"),
    (40, "UNKNOWN_NODE"),
    (41, "UNSAFE_MEMBERSHIP_CHANGE"),
    (42, "NODE_REMOVED"),
];

#[test]
fn error_codes_are_pinned_and_architecture_md_lists_them() {
    let registry: Vec<(u32, &str)> = ErrorCode::ALL.iter().map(|c| (c.code(), c.name())).collect();
    assert_eq!(registry, PINNED, "an error code was renumbered, renamed, reused or added without pinning it");
    let architecture = std::fs::read_to_string(repository().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let table: Vec<(u32, String)> = architecture
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let code = cells.get(1)?.parse().ok()?;
            let name = cells.get(2).filter(|n| n.chars().all(|c| c.is_ascii_uppercase() || c == '_'))?;
            Some((code, name.to_string()))
        })
        .collect();
    let pinned: Vec<(u32, String)> = PINNED.iter().map(|(code, name)| (*code, name.to_string())).collect();
    assert_eq!(table, pinned, "ARCHITECTURE.md's error-code table differs from the registry");
}

/// Every `.rs` file under `dir`, with its text.
fn sources(dir: &Path) -> Vec<(std::path::PathBuf, String)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read source dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read source");
                out.push((path, text));
            }
        }
    }
    out
}

/// The state machines decide alike on every replica only if nothing but
/// the commands feeds them: no clock, no randomness, no iteration order
/// that differs between processes. Time comes in commands (`time_ms`,
/// `now_ms` fields), never from the machine.
#[test]
fn state_machines_read_no_clock_and_no_randomness() {
    const FORBIDDEN: &[&str] = &["SystemTime", "Instant::now", "time::now_ms", "rand::", "HashMap", "HashSet"];
    let mut broken = Vec::new();
    for (path, text) in sources(&repository().join("crates/strata-state/src")) {
        // Unit tests may use anything.
        let product = text.split("#[cfg(test)]").next().unwrap_or_default();
        for word in FORBIDDEN {
            if product.contains(word) {
                broken.push(format!("{} uses {word}", path.display()));
            }
        }
    }
    assert!(broken.is_empty(), "strata-state must stay deterministic:\n{}", broken.join("\n"));
}
