//! Start-up and shut-down of a node: open the store, bind the port, start
//! the metadata group, serve, start the reconciler, retention, the group
//! coordinator's timers and beats, the registration of the advertised
//! address, and on shutdown stop them in order. `node.rs` holds what runs meanwhile.

use std::future::Future;
use std::io;
use std::sync::Arc;

use openraft::SnapshotPolicy;
use strata_proto::v1::raft_transport_server::RaftTransportServer;
use strata_proto::v1::strata_server::StrataServer;
use strata_state::metadata::METADATA_GROUP_ID;
use strata_storage::{GroupKind, Store};
use tokio::sync::watch;

use crate::clock::ClusterClock;
use crate::config::NodeConfig;
use crate::groups::Groups;
use crate::membership::{LocalMembership, StartMode};
use crate::network::{ClusterCheck, ClusterId, PeerChannels, Router, TransportService, VoteGate};
use crate::node::Node;
use crate::quiesce::{Quiescence, QuietTiming};
use crate::service::StrataService;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    // The io::Error is the source: error chains print it once, after these.
    #[error("cannot create data dir {path}")]
    DataDir { path: String, source: io::Error },
    #[error("cannot open the store in {path}")]
    Store { path: String, source: io::Error },
    #[error("cannot listen on {address}")]
    Listen { address: String, source: io::Error },
    #[error("invalid raft settings: {0}")]
    RaftConfig(String),
    #[error("cannot start the metadata group: {0}")]
    Metadata(crate::node::GroupError),
    #[error("cannot join the cluster: {0}")]
    Join(crate::membership::JoinRefused),
}

#[cfg(feature = "fault-hooks")]
fn open_store(config: &NodeConfig, path: &std::path::Path) -> io::Result<Store> {
    if config.faults.record_synced_wal {
        Store::open_recording_syncs(path)
    } else {
        Store::open(path)
    }
}

#[cfg(not(feature = "fault-hooks"))]
fn open_store(_config: &NodeConfig, path: &std::path::Path) -> io::Result<Store> {
    Store::open(path)
}

/// Starts a node and serves until `shutdown` completes.
pub async fn run(config: NodeConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), StartError> {
    crate::faults::set_clock_offset_ms(config.faults.clock_offset_ms);
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|source| StartError::DataDir { path: config.data_dir.display().to_string(), source })?;
    let db_path = config.data_dir.join("db");
    let store = open_store(&config, &db_path)
        .map_err(|source| StartError::Store { path: db_path.display().to_string(), source })?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|source| StartError::Listen { address: config.listen.clone(), source })?;

    let raft_config = raft_config(&config)?;
    let (store_id, created) = store
        .identity(rand::random::<u64>() | 1)
        .await
        .map_err(|source| StartError::Store { path: db_path.display().to_string(), source })?;
    // A store made before store ids existed gets one now but holds data.
    let stored = store
        .stored_groups()
        .await
        .map_err(|source| StartError::Store { path: db_path.display().to_string(), source })?;
    let fresh = created && stored.is_empty();
    let votes = VoteGate::default();
    if fresh {
        // Until it knows it forms a new cluster, or until the cluster it
        // joins counts it whole (see `membership`).
        votes.close();
    }
    tracing::info!(node = config.node_id, store = %format!("{store_id:016x}"), fresh, "store opened");

    let cluster_id = ClusterId::default();
    let peers = PeerChannels::new(config.initial_cluster.clone(), cluster_id.clone());
    // A joining node's own address (initial_cluster has it for the others).
    peers.set_address(config.node_id, &config.peer_address);
    let router = Router::new(config.node_id, peers.clone(), store.clone());
    let groups = Groups::default();
    let clock = ClusterClock::new(config.initial_cluster.len());
    let quiescence = Quiescence::new(
        config.node_id,
        QuietTiming {
            quiesce_after: config.quiesce_after,
            beat_interval: config.heartbeat_interval,
            peer_timeout: config.election_timeout_max,
        },
        clock.clone(),
    );
    let node = Node {
        config: Arc::new(config),
        store: store.clone(),
        groups: groups.clone(),
        peers,
        router,
        raft_config: Arc::new(raft_config),
        quiescence: quiescence.clone(),
        clock,
        coordinator: Default::default(),
        transactions: Default::default(),
        membership: Arc::new(LocalMembership::new(store_id, votes.clone(), cluster_id.clone())),
    };

    // The metadata group is registered before the first request is served:
    // handlers rely on it (its Raft needs no peer to start).
    // A node with an empty store initialises it only once it knows it
    // forms a new cluster (below); a joining node never does.
    let initial: Vec<u64> = node.config.initial_cluster.keys().copied().collect();
    let voters = if fresh { Vec::new() } else { initial.clone() };
    let metadata =
        node.start_group(METADATA_GROUP_ID, GroupKind::Metadata, &voters).await.map_err(StartError::Metadata)?;
    // The metrics port is bound before the API serves, so a node that
    // answers its clients also answers scrapes (a test or a readiness probe
    // may scrape at once).
    let metrics = match &node.config.metrics_listen {
        Some(address) => Some(
            crate::metrics::serve(address, node.clone())
                .await
                .map_err(|source| StartError::Listen { address: address.clone(), source })?,
        ),
        None => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let (health, health_service) = tonic_health::server::health_reporter();
    let server = {
        // Accepted sockets get TCP_NODELAY here: `Server::tcp_nodelay` only
        // reaches listeners tonic binds itself. Without it a small answer
        // written behind an unacknowledged one waits for the peer's delayed
        // ACK (40 ms on Linux): that was the p99 of a produce.
        let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let transport = RaftTransportServer::new(TransportService {
            groups: groups.clone(),
            store: store.clone(),
            traffic: quiescence.clone(),
            votes: votes.clone(),
        })
        .max_decoding_message_size(strata_core::limits::MAX_GRPC_MESSAGE_BYTES)
        .max_encoding_message_size(strata_core::limits::MAX_GRPC_MESSAGE_BYTES);
        // Peers of another cluster are refused (see `check_cluster`).
        let transport = tonic::service::interceptor::InterceptedService::new(transport, ClusterCheck(cluster_id));
        let api = StrataServer::new(StrataService::new(node.clone()))
            .max_decoding_message_size(strata_core::limits::MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(strata_core::limits::MAX_GRPC_MESSAGE_BYTES);
        // Standard tools: the gRPC health service (Kubernetes gRPC probes,
        // grpcurl, load balancers) and reflection (grpcurl without protos).
        health.set_serving::<StrataServer<StrataService>>().await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(strata_proto::FILE_DESCRIPTOR_SET)
            .build_v1()
            .expect("the descriptor set is generated at build time");
        let mut stop = stop_rx.clone();
        tokio::spawn(
            tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .initial_stream_window_size(strata_core::limits::RECEIVE_STREAM_WINDOW_BYTES)
                .initial_connection_window_size(strata_core::limits::RECEIVE_CONNECTION_WINDOW_BYTES)
                .add_service(transport)
                .add_service(api)
                .add_service(health_service)
                .add_service(reflection)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stop.wait_for(|s| *s).await;
                }),
        )
    };

    tracing::info!(node = node.node_id(), listen = %node.config.listen, advertise = %node.config.advertise, "node started");

    // Beats start before the partition groups, so a restarted node is
    // heard (and its peers wake the quiet groups it replicates) before any
    // of its groups could time out.
    let beats = tokio::spawn(crate::quiesce::run(quiescence, groups.clone(), node.peers.clone()));
    let reconciler = tokio::spawn(node.clone().run_reconciler(metadata.state.clone()));
    let retention = tokio::spawn(node.clone().run_retention());
    let coordinator = tokio::spawn(node.coordinator.clone().run(node.clone()));
    let transactions = tokio::spawn(node.transactions.clone().run(node.clone()));
    let advertiser = tokio::spawn(crate::advertise::run(node.clone()));
    let mover = tokio::spawn(crate::reassign::run(node.clone()));
    let balancer = tokio::spawn(crate::leaders::run(node.clone()));
    let follower = tokio::spawn(crate::membership::run_follower(node.clone()));
    let membership_leader = tokio::spawn(crate::membership::run_leader(node.clone()));

    // Decided once this node serves, so that peers starting with it answer
    // its probe (and it theirs) at once.
    let mode = if fresh { crate::membership::start_mode(&node.config).await } else { StartMode::Restart };
    tracing::info!(?mode, "start mode");
    if mode == StartMode::Form {
        node.form_metadata_group(&initial).await;
        votes.open();
    }
    let registration = tokio::spawn(crate::membership::run_registration(node.clone()));
    let joined = async {
        match &mode {
            StartMode::Join(addresses) => crate::membership::join(&node, addresses).await,
            StartMode::Restart => crate::membership::confirm_membership(&node).await,
            StartMode::Form => Ok(()),
        }
    };
    tokio::pin!(shutdown);
    let mut refused = None;
    tokio::select! {
        _ = &mut shutdown => {}
        result = joined => match result {
            Err(error) => refused = Some(error),
            Ok(()) => (&mut shutdown).await,
        },
    }
    if let Some(error) = &refused {
        tracing::error!(%error, "this node cannot join the cluster; stopping");
    }
    tracing::info!(node = node.node_id(), "node stopping");
    health.set_not_serving::<StrataServer<StrataService>>().await;
    health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
    reconciler.abort();
    retention.abort();
    coordinator.abort();
    transactions.abort();
    advertiser.abort();
    mover.abort();
    balancer.abort();
    follower.abort();
    membership_leader.abort();
    registration.abort();
    beats.abort();
    if let Some(task) = &metrics {
        task.abort();
    }
    // Requests keep arriving until the server stops, and every handler
    // looks up the metadata group: it stays registered (stopped, so its
    // calls fail with an error) until the server has stopped.
    for handle in node.groups.all() {
        let _ = handle.raft.shutdown().await;
        if handle.group_id != METADATA_GROUP_ID {
            node.groups.remove(handle.group_id);
        }
    }
    let _ = stop_tx.send(true);
    let _ = server.await;
    node.groups.remove(METADATA_GROUP_ID);
    if let Err(err) = store.sync().await {
        tracing::warn!(error = %err, "final sync failed");
    }
    tracing::info!(node = node.node_id(), "node stopped");
    // The database closes when its last handle drops; the caller must let
    // the runtime's tasks end (drop the runtime) before the process exits.
    match refused {
        Some(error) => Err(StartError::Join(error)),
        None => Ok(()),
    }
}

/// The openraft settings of every group of this node.
fn raft_config(config: &NodeConfig) -> Result<openraft::Config, StartError> {
    openraft::Config {
        cluster_name: "strata".into(),
        heartbeat_interval: config.heartbeat_interval.as_millis() as u64,
        election_timeout_min: config.election_timeout_min.as_millis() as u64,
        election_timeout_max: config.election_timeout_max.as_millis() as u64,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every_entries),
        max_in_snapshot_log_to_keep: config.snapshot_every_entries,
        install_snapshot_timeout: 10_000,
        // openraft keeps six ring buffers of this many entries per group for
        // its `runtime-stats` feature, allocated even with the feature off
        // (as Strata builds it): 1,024 each is ~150 KiB of address space per
        // partition replica for nothing.
        log_stage_capacity: Some(1),
        // A leader that restarts must win a new election; it may not lead
        // again in its old term. A leader replicates entries before its own
        // fsync; after a power loss it may have lost entries that followers
        // hold. Leading in the same term, it would write other entries under
        // the same log ids, which a follower takes for the ones it has (same
        // term and index mean the same entry) and later applies: replicas
        // diverge. Found by the fault harness (`txn` workload, all nodes
        // killed with their unsynced writes dropped). In a new term the
        // follower sees the conflict and drops its uncommitted entries.
        enable_leader_restore: Some(false),
        // A follower asks whether it could win before it bumps its term. A
        // node with a shorter log (or one just back from a partition) whose
        // timer fires first otherwise starts a term it cannot win, and the
        // up-to-date node's election in that term is refused: a split vote
        // that cost a second more unavailability after a leader kill in the
        // Docker fault test (3.6 s against a bound of 3 s).
        enable_pre_vote: Some(true),
        // A node whose data dir was emptied comes back with an empty log:
        // its leaders start its replication over instead of stopping on the
        // "reverted" log. It is safe because such a node refuses to vote
        // until every group it was in has caught it up (`membership`'s vote
        // gate), and a lost fsynced write is refused at start by the
        // store's durable marker, so no node reverts unnoticed.
        allow_log_reversion: Some(true),
        ..Default::default()
    }
    .validate()
    .map_err(|e| StartError::RaftConfig(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarted_leader_never_leads_again_in_its_old_term() {
        let file =
            "node_id = 1\nlisten = \"127.0.0.1:7171\"\ndata_dir = \"/tmp/x\"\ninitial_cluster = \"1=127.0.0.1:7171\"\n";
        let config: crate::config::FileConfig = toml::from_str(file).unwrap();
        let raft = raft_config(&config.validate().unwrap()).unwrap();
        assert_eq!(raft.enable_leader_restore, Some(false));
        assert_eq!(raft.enable_pre_vote, Some(true), "elections are pre-voted");
        assert_eq!(raft.allow_log_reversion, Some(true), "a node back with an empty store is caught up");
    }
}
