//! `strata dev`: a local cluster of N `strata server` processes on
//! 127.0.0.1, in the foreground. Ctrl-C stops every node cleanly; running it
//! again on the same data dir resumes with the same data. The nodes stop
//! with it even when it is killed (see `die_with_parent`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, Command};

/// How long the cluster may take to elect its metadata leader.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    pub nodes: u64,
    /// Directory holding one sub-directory (and one log file) per node.
    #[arg(long, default_value = "strata-dev-data")]
    pub data_dir: PathBuf,
    /// Port of node 1; node N listens on PORT+N-1.
    #[arg(long, default_value_t = 7171)]
    pub port: u16,
}

async fn wait_ready(address: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    let client = strata_client::Client::connect(&[address.to_string()])?;
    let mut last = String::from("no answer yet");
    while tokio::time::Instant::now() < deadline {
        match client.cluster_status().await {
            Ok(status) if status.metadata_available => return Ok(()),
            Ok(status) => last = status.metadata_detail,
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("the cluster did not become ready within {READY_TIMEOUT:?}: {last}")
}

fn terminate(child: &Child) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
    }
}

async fn stop_all(children: &mut [(u64, Child)]) {
    for (_, child) in children.iter() {
        terminate(child);
    }
    for (id, child) in children.iter_mut() {
        match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                eprintln!("node {id} did not stop within {STOP_TIMEOUT:?}; killing it");
                let _ = child.kill().await;
            }
        }
    }
}

/// Makes the child stop (SIGTERM: a clean shutdown) when this process dies,
/// however it dies: killed with SIGKILL, `strata dev` cannot stop its nodes
/// itself, and they would go on holding their ports. The signal comes when
/// the thread that spawned the child ends; tokio's worker threads live as
/// long as the runtime, which ends only after `stop_all`.
fn die_with_parent(command: &mut Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: between fork and exec the closure only makes two system calls
    // (prctl, getppid) and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)?;
            // The parent may have died before the prctl: then stop now.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::other("strata dev exited while starting a node"));
            }
            Ok(())
        });
    }
}

/// `server_level`: the log filter each node gets.
pub async fn run(args: DevArgs, server_level: &str) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("cannot find the strata binary")?;
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let addresses: Vec<(u64, String)> = (1..=args.nodes)
        .map(|id| {
            let port = args.port as u64 + id - 1;
            anyhow::ensure!(port <= u16::MAX as u64, "port {port} is out of range; use a lower --port");
            Ok((id, format!("127.0.0.1:{port}")))
        })
        .collect::<anyhow::Result<_>>()?;
    let initial_cluster = addresses.iter().map(|(id, a)| format!("{id}={a}")).collect::<Vec<_>>().join(",");
    let mut children = Vec::new();
    for (id, address) in &addresses {
        let dir = args.data_dir.join(format!("node-{id}"));
        let log_path = args.data_dir.join(format!("node-{id}.log"));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
        let mut command = Command::new(&exe);
        command
            .arg("--log-level")
            .arg(server_level)
            .arg("server")
            .arg("--node-id")
            .arg(id.to_string())
            .arg("--listen")
            .arg(address)
            .arg("--data-dir")
            .arg(&dir)
            .arg("--initial-cluster")
            .arg(&initial_cluster)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        die_with_parent(&mut command);
        let child = command.spawn().with_context(|| format!("cannot start node {id}"))?;
        children.push((*id, child));
    }
    let bootstrap = addresses.iter().map(|(_, a)| a.as_str()).collect::<Vec<_>>().join(",");
    tokio::select! {
        ready = wait_ready(&addresses[0].1) => {
            if let Err(err) = ready {
                stop_all(&mut children).await;
                return Err(err.context(format!("logs are in {}", args.data_dir.display())));
            }
        }
        _ = crate::server::stop_signal() => {
            stop_all(&mut children).await;
            return Ok(ExitCode::SUCCESS);
        }
    }
    println!("strata dev: {} nodes ready; bootstrap {bootstrap}", args.nodes);
    println!("data and logs in {}; Ctrl-C stops the cluster", args.data_dir.display());
    let exited = {
        let waits = children.iter_mut().map(|(id, child)| {
            let id = *id;
            Box::pin(async move { (id, child.wait().await) })
        });
        tokio::select! {
            _ = crate::server::stop_signal() => None,
            (result, _, _) = futures::future::select_all(waits) => Some(result),
        }
    };
    stop_all(&mut children).await;
    match exited {
        None => {
            println!("strata dev: stopped");
            Ok(ExitCode::SUCCESS)
        }
        Some((id, status)) => {
            eprintln!(
                "node {id} exited unexpectedly ({status:?}); see {}",
                args.data_dir.join(format!("node-{id}.log")).display()
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
