//! The test network: one Linux network namespace per node, each joined by a
//! veth pair to a bridge in the root namespace, and the network faults
//! (partitions with iptables inside the node namespaces, `tc netem`).
//!
//! Addresses: node `i` is 10.77.0.`i`/24 on its `eth0`; the bridge holds
//! 10.77.0.254, so the harness's clients run in the root namespace and reach
//! every node directly. Partitions cut node-to-node traffic only, so clients
//! keep talking to the minority side (which must then refuse to acknowledge
//! writes); client cuts drop the traffic between the harness and chosen
//! nodes (requests, answers or both) and leave node-to-node traffic alone.
//!
//! Invariant: no namespace has a default route, forwarding to anything but
//! the bridge's own ports is never enabled, and every name this module
//! creates starts with `sj` so that `cleanup_leftovers` can find them.
//! Boundary: this module only runs `ip`, `iptables` and `tc`.

use std::process::Command;

/// Prefix of every namespace, link and rule this harness creates.
pub const NAME_PREFIX: &str = "sj";
pub const BRIDGE: &str = "sjbr0";
pub const SUBNET_PREFIX: &str = "10.77.0";
pub const HOST_ADDRESS: &str = "10.77.0.254";
/// Port every node listens on inside its namespace.
pub const NODE_PORT: u16 = 7171;
/// The most nodes: addresses .1 to .250 stay below the bridge's .254.
pub const MAX_NODES: u64 = 9;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("cannot run `{command}`: {source}")]
    Spawn { command: String, source: std::io::Error },
    #[error("the network harness needs root (network namespaces, iptables)")]
    NotRoot,
}

/// Runs a command and fails with its stderr when it does not exit 0.
pub fn run(program: &str, args: &[&str]) -> Result<String, NetError> {
    let command = format!("{program} {}", args.join(" "));
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| NetError::Spawn { command: command.clone(), source })?;
    if !output.status.success() {
        return Err(NetError::Command { command, stderr: String::from_utf8_lossy(&output.stderr).trim().to_string() });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs a command where failure is expected and harmless (cleanup).
fn run_quietly(program: &str, args: &[&str]) -> bool {
    Command::new(program).args(args).output().map(|o| o.status.success()).unwrap_or(false)
}

pub fn namespace(node: u64) -> String {
    format!("{NAME_PREFIX}-n{node}")
}

pub fn node_ip(node: u64) -> String {
    format!("{SUBNET_PREFIX}.{node}")
}

pub fn node_address(node: u64) -> String {
    format!("{}:{NODE_PORT}", node_ip(node))
}

fn in_namespace(node: u64, program: &str, args: &[&str]) -> Result<String, NetError> {
    let ns = namespace(node);
    let mut full = vec!["netns", "exec", ns.as_str(), program];
    full.extend_from_slice(args);
    run("ip", &full)
}

/// The rule that lets bridged traffic between our own ports through a host
/// FORWARD chain whose policy drops (as Docker sets it when br_netfilter is
/// loaded). It names only our bridge, so nothing else is forwarded.
const FORWARD_RULE: &[&str] = &["FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"];

/// Removes everything a previous run may have left: processes inside our
/// namespaces (by the namespace's pid list, never by name), the namespaces,
/// the bridge, stray veths and the forward rule.
pub fn cleanup_leftovers() {
    if let Ok(list) = run("ip", &["netns", "list"]) {
        for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if !ns.starts_with(&format!("{NAME_PREFIX}-n")) {
                continue;
            }
            if let Ok(pids) = run("ip", &["netns", "pids", ns]) {
                for pid in pids.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
                    let pid = nix::unistd::Pid::from_raw(pid);
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                }
            }
            run_quietly("ip", &["netns", "del", ns]);
        }
    }
    if let Ok(links) = run("ip", &["-o", "link", "show"]) {
        for link in links.lines().filter_map(|l| l.split(':').nth(1)).map(|l| l.trim().split('@').next().unwrap_or(""))
        {
            if link.starts_with(NAME_PREFIX) {
                run_quietly("ip", &["link", "del", link]);
            }
        }
    }
    let mut delete = vec!["-D"];
    delete.extend_from_slice(FORWARD_RULE);
    while run_quietly("iptables", &delete) {}
}

/// What a client cut drops between the harness and a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientCut {
    /// The node's answers (and every other packet to the clients).
    Answers,
    /// The clients' requests (and connection attempts).
    Requests,
    Both,
}

/// The iptables rules (chain and match) of a client cut.
fn client_cut_rules(direction: ClientCut) -> Vec<[&'static str; 5]> {
    let answers = ["OUTPUT", "-d", HOST_ADDRESS, "-j", "DROP"];
    let requests = ["INPUT", "-s", HOST_ADDRESS, "-j", "DROP"];
    match direction {
        ClientCut::Answers => vec![answers],
        ClientCut::Requests => vec![requests],
        ClientCut::Both => vec![answers, requests],
    }
}

/// The namespaces and bridge of one run; torn down when dropped.
pub struct Network {
    nodes: Vec<u64>,
    forward_rule: bool,
}

impl Network {
    /// Creates the bridge and one namespace per node. Cleans leftovers first.
    pub fn create(nodes: &[u64]) -> Result<Network, NetError> {
        if run("id", &["-u"]).map(|uid| uid.trim() != "0").unwrap_or(true) {
            return Err(NetError::NotRoot);
        }
        assert!(nodes.iter().all(|n| (1..=MAX_NODES).contains(n)), "node ids 1..={MAX_NODES}");
        cleanup_leftovers();
        let mut network = Network { nodes: nodes.to_vec(), forward_rule: false };
        run("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
        run("ip", &["addr", "add", &format!("{HOST_ADDRESS}/24"), "dev", BRIDGE])?;
        run("ip", &["link", "set", BRIDGE, "up"])?;
        let mut insert = vec!["-I"];
        insert.extend_from_slice(FORWARD_RULE);
        // Hosts without a FORWARD-dropping firewall need no rule; a missing
        // iptables is reported by the partition faults, which need it.
        network.forward_rule = run("iptables", &insert).is_ok();
        for &node in nodes {
            let ns = namespace(node);
            let host_end = format!("{NAME_PREFIX}v{node}");
            let node_end = format!("{NAME_PREFIX}p{node}");
            run("ip", &["netns", "add", &ns])?;
            run("ip", &["link", "add", &host_end, "type", "veth", "peer", "name", &node_end])?;
            run("ip", &["link", "set", &host_end, "master", BRIDGE])?;
            run("ip", &["link", "set", &host_end, "up"])?;
            run("ip", &["link", "set", &node_end, "netns", &ns])?;
            in_namespace(node, "ip", &["link", "set", &node_end, "name", "eth0"])?;
            in_namespace(node, "ip", &["addr", "add", &format!("{}/24", node_ip(node)), "dev", "eth0"])?;
            in_namespace(node, "ip", &["link", "set", "eth0", "up"])?;
            in_namespace(node, "ip", &["link", "set", "lo", "up"])?;
        }
        Ok(network)
    }

    /// Makes `node` drop every packet arriving from `from` (one direction;
    /// TCP needs both, so a one-way drop still breaks the connection, but
    /// which side notices first differs).
    pub fn drop_from(&self, node: u64, from: &[u64]) -> Result<(), NetError> {
        for &peer in from {
            in_namespace(node, "iptables", &["-A", "INPUT", "-s", &node_ip(peer), "-j", "DROP"])?;
        }
        Ok(())
    }

    /// Removes every partition rule.
    pub fn heal_partitions(&self) -> Result<(), NetError> {
        for &node in &self.nodes {
            in_namespace(node, "iptables", &["-F", "INPUT"])?;
        }
        Ok(())
    }

    /// Cuts the harness's clients (the host end of the bridge) off from
    /// `node`: requests, answers or both are dropped inside the node's
    /// namespace. Node-to-node traffic is untouched. Dropping only answers
    /// leaves requests that commit but whose outcome the client never
    /// learns.
    pub fn cut_clients(&self, node: u64, direction: ClientCut) -> Result<(), NetError> {
        for rule in client_cut_rules(direction) {
            let mut args = vec!["-I"];
            args.extend_from_slice(&rule);
            in_namespace(node, "iptables", &args)?;
        }
        Ok(())
    }

    /// Removes every client cut (and nothing else).
    pub fn heal_client_cuts(&self) {
        for &node in &self.nodes {
            for rule in client_cut_rules(ClientCut::Both) {
                let mut args = vec!["-D"];
                args.extend_from_slice(&rule);
                while in_namespace(node, "iptables", &args).is_ok() {}
            }
        }
    }

    /// Applies a netem discipline (e.g. `delay 50ms 20ms loss 5%`) to a
    /// node's outgoing traffic, and says what was applied. Kernels built
    /// without netem get the nearest equivalents: loss through iptables'
    /// random `statistic` match, duplication through the `TEE` target (a
    /// copy of each chosen packet goes to its own destination again), delay
    /// through a slow `tbf` link whose queue delays packets; reordering has
    /// no equivalent there and is left out (the answer says so).
    pub fn netem(&self, node: u64, spec: &[String]) -> Result<String, NetError> {
        let mut args = vec!["qdisc", "replace", "dev", "eth0", "root", "netem"];
        args.extend(spec.iter().map(String::as_str));
        if in_namespace(node, "tc", &args).is_ok() {
            return Ok(format!("netem {}", spec.join(" ")));
        }
        let mut applied = Vec::new();
        let percent = |at: usize| -> Option<String> {
            let text = spec.get(at + 1)?.trim_end_matches('%');
            let value: f64 = text.parse().ok()?;
            Some(format!("{:.3}", value / 100.0))
        };
        for (at, word) in spec.iter().enumerate() {
            match word.as_str() {
                "loss" => {
                    if let Some(p) = percent(at) {
                        in_namespace(
                            node,
                            "iptables",
                            &["-A", "OUTPUT", "-m", "statistic", "--mode", "random", "--probability", &p, "-j", "DROP"],
                        )?;
                        applied.push(format!("loss {p}"));
                    }
                }
                "duplicate" => {
                    if let Some(p) = percent(at) {
                        for peer in self
                            .nodes
                            .iter()
                            .filter(|&&n| n != node)
                            .map(|&n| node_ip(n))
                            .chain([HOST_ADDRESS.to_string()])
                        {
                            in_namespace(
                                node,
                                "iptables",
                                &[
                                    "-t",
                                    "mangle",
                                    "-A",
                                    "OUTPUT",
                                    "-d",
                                    &peer,
                                    "-m",
                                    "statistic",
                                    "--mode",
                                    "random",
                                    "--probability",
                                    &p,
                                    "-j",
                                    "TEE",
                                    "--gateway",
                                    &peer,
                                ],
                            )?;
                        }
                        applied.push(format!("duplicate {p}"));
                    }
                }
                "delay" => {
                    in_namespace(
                        node,
                        "tc",
                        &[
                            "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", "4mbit", "burst", "32kbit",
                            "latency", "400ms",
                        ],
                    )?;
                    applied.push("slow link (tbf 4mbit, queue up to 400ms)".to_string());
                }
                "reorder" => applied.push("no reordering (kernel without netem)".to_string()),
                _ => {}
            }
        }
        Ok(applied.join(", "))
    }

    pub fn heal_netem(&self) {
        for &node in &self.nodes {
            let _ = in_namespace(node, "tc", &["qdisc", "del", "dev", "eth0", "root"]);
            let _ = in_namespace(node, "iptables", &["-F", "OUTPUT"]);
            let _ = in_namespace(node, "iptables", &["-t", "mangle", "-F", "OUTPUT"]);
        }
    }

    fn teardown(&mut self) {
        for &node in &self.nodes {
            run_quietly("ip", &["netns", "del", &namespace(node)]);
            run_quietly("ip", &["link", "del", &format!("{NAME_PREFIX}v{node}")]);
        }
        run_quietly("ip", &["link", "del", BRIDGE]);
        if self.forward_rule {
            let mut delete = vec!["-D"];
            delete.extend_from_slice(FORWARD_RULE);
            run_quietly("iptables", &delete);
            self.forward_rule = false;
        }
        self.nodes.clear();
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Installs what the harness needs from Debian when it is missing.
pub fn ensure_tools(need_faketime: bool) -> Result<(), NetError> {
    let mut missing = Vec::new();
    for (tool, package) in [("ip", "iproute2"), ("tc", "iproute2"), ("iptables", "iptables")] {
        if !run_quietly("sh", &["-c", &format!("command -v {tool}")]) && !missing.contains(&package) {
            missing.push(package);
        }
    }
    if need_faketime && faketime_library().is_none() {
        missing.push("libfaketime");
    }
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing {}", missing.join(" "));
    run("apt-get", &["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(missing.iter().copied());
    run("apt-get", &args).map(|_| ())
}

/// Where libfaketime's preload library is, when installed.
pub fn faketime_library() -> Option<String> {
    // The MT build guards its own state with locks; the nodes are multi-threaded.
    let candidates = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ];
    candidates.iter().find(|p| std::path::Path::new(p).exists()).map(|p| p.to_string())
}
