//! `strata-jepsen check PATH` re-checks a stored history: exit 0 when it is
//! valid, 1 with the anomaly named when it is not, 2 when the file is unusable.

use std::path::PathBuf;
use std::process::Command;

fn write_history(name: &str, lines: &[&str]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strata-jepsen-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn check(path: &PathBuf) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_strata-jepsen")).arg("check").arg(path).output().unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const SEND_0: &str = r#"{"index":0,"time":1,"process":0,"type":"invoke","f":"send","value":{"key":0,"value":5}}"#;
const SEND_0_OK: &str =
    r#"{"index":1,"time":2,"process":0,"type":"ok","f":"send","value":{"key":0,"value":5,"offset":0}}"#;
const SEND_1: &str = r#"{"index":2,"time":3,"process":0,"type":"invoke","f":"send","value":{"key":0,"value":6}}"#;
const SEND_1_OK: &str =
    r#"{"index":3,"time":4,"process":0,"type":"ok","f":"send","value":{"key":0,"value":6,"offset":1}}"#;
const POLL: &str = r#"{"index":4,"time":5,"process":1,"type":"invoke","f":"poll","value":null}"#;

#[test]
fn a_valid_history_exits_zero() {
    let poll_ok = r#"{"index":5,"time":6,"process":1,"type":"ok","f":"poll","value":{"0":[[0,5],[1,6]]}}"#;
    let path = write_history("valid.jsonl", &[SEND_0, SEND_0_OK, SEND_1, SEND_1_OK, POLL, poll_ok]);
    let (code, stdout, _) = check(&path);
    assert_eq!(code, 0, "{stdout}");
    let verdict: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(verdict["valid"], true);
}

#[test]
fn a_lost_write_exits_one_and_names_its_witnesses() {
    let poll_ok = r#"{"index":5,"time":6,"process":1,"type":"ok","f":"poll","value":{"0":[[1,6]]}}"#;
    let path = write_history("lost.jsonl", &[SEND_0, SEND_0_OK, SEND_1, SEND_1_OK, POLL, poll_ok]);
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, 1, "{stdout}");
    let verdict: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(verdict["anomalies"]["lost-write"][0]["ops"], serde_json::json!([0, 1, 5]));
    assert!(stderr.contains("lost-write: 1"), "{stderr}");
}

#[test]
fn an_unreadable_history_exits_two() {
    let path = write_history("broken.jsonl", &[SEND_0, "{not json"]);
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 2);
    assert!(stderr.contains("line 2"), "{stderr}");
}
