//! `strata dev` killed with SIGKILL (as a test harness or an impatient user
//! does) takes its `strata server` children with it: no node is left
//! holding its port with its data directory gone.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use strata_cluster_tests::{eventually, strata_binary};
use strata_proto::v1 as pb;
use strata_proto::v1::strata_client::StrataClient;

/// A port whose next two are free as well (node N listens on PORT+N-1).
fn three_free_ports() -> u16 {
    for _ in 0..100 {
        let first = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        if port > u16::MAX - 2 {
            continue;
        }
        let rest: Vec<_> = (1..3).filter_map(|i| TcpListener::bind(("127.0.0.1", port + i)).ok()).collect();
        if rest.len() == 2 {
            return port;
        }
    }
    panic!("no three consecutive free ports");
}

/// Whether process `pid` still runs (a zombie waiting for its reaper does not).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path().join("children");
        for child in std::fs::read_to_string(path).unwrap_or_default().split_whitespace() {
            out.push(child.parse().unwrap());
        }
    }
    out
}

/// Kills whatever of `0` still runs when dropped, so a failing run leaves
/// no server behind either.
struct KillOnDrop(Vec<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_strata_dev_leaves_no_server_behind() {
    let dir = tempfile::tempdir().unwrap();
    let port = three_free_ports();
    let mut dev = Command::new(strata_binary())
        .args(["dev", "--nodes", "3", "--port", &port.to_string()])
        .arg("--data-dir")
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let address = format!("http://127.0.0.1:{port}");
    eventually(Duration::from_secs(60), "the dev cluster to serve", || async {
        let channel = tonic::transport::Endpoint::from_shared(address.clone()).ok()?.connect().await.ok()?;
        let status = StrataClient::new(channel).cluster_status(pb::ClusterStatusRequest {}).await.ok()?;
        status.get_ref().metadata_available.then_some(())
    })
    .await;
    let servers = children_of(dev.id());
    let _cleanup = KillOnDrop(servers.clone());
    assert_eq!(servers.len(), 3, "three server processes");

    dev.kill().unwrap();
    dev.wait().unwrap();
    eventually(Duration::from_secs(30), "every server to stop with its supervisor", || async {
        servers.iter().all(|pid| !running(*pid)).then_some(())
    })
    .await;
}
