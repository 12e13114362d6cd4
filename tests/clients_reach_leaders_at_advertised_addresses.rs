//! Nodes advertise a client address apart from the address they listen on
//! (`advertise`). Here each node listens on a loopback port and advertises
//! the address of a TCP forwarder the test runs in front of it, on another
//! port: Metadata (from every node), cluster status and NOT_LEADER hints
//! name the forwarders, and a client bootstrapped through node 1's
//! forwarder alone produces to and consumes from partitions led by every
//! node (a topic of one replica per partition, placed on each node in turn,
//! and one of three replicas) through that node's forwarder. The forwarders count the bytes they
//! carry, so a client that went to the listen addresses instead would
//! leave them idle and fail here. A node restarted without `advertise` is
//! handed out at its listen address again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_client::{Client, Consumer, Producer, ProducerConfig, Record, StartOffset};
use strata_cluster_tests::{create_topic, eventually, Cluster};
use strata_proto::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

const TIMEOUT: Duration = Duration::from_secs(30);
/// One replica per partition, placed round-robin: node N leads the
/// partition it hosts, whatever the elections do.
const SPREAD: &str = "spread";
/// Three replicas per partition: leaders as elected, followers to ask.
const REPLICATED: &str = "replicated";
const PARTITIONS: u32 = 3;
const RECORDS_PER_PARTITION: usize = 20;

/// What one forwarder carried so far; counted before each piece is passed
/// on, so an answer never arrives before the count of what caused it.
#[derive(Clone, Default)]
struct Counts {
    connections: Arc<AtomicU64>,
    to_node: Arc<AtomicU64>,
    from_node: Arc<AtomicU64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    connections: u64,
    to_node: u64,
    from_node: u64,
}

impl Counts {
    fn seen(&self) -> Seen {
        Seen {
            connections: self.connections.load(Ordering::SeqCst),
            to_node: self.to_node.load(Ordering::SeqCst),
            from_node: self.from_node.load(Ordering::SeqCst),
        }
    }
}

/// A TCP forwarder on a loopback port of its own, in front of one node.
struct Forwarder {
    address: String,
    counts: Counts,
    accept: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    async fn start(target: String) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a forwarder port");
        let address = listener.local_addr().expect("forwarder address").to_string();
        let counts = Counts::default();
        let accept = tokio::spawn({
            let counts = counts.clone();
            async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    counts.connections.fetch_add(1, Ordering::SeqCst);
                    let (counts, target) = (counts.clone(), target.clone());
                    tokio::spawn(async move {
                        let Ok(outbound) = TcpStream::connect(&target).await else { return };
                        let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
                        let (in_read, in_write) = inbound.into_split();
                        let (out_read, out_write) = outbound.into_split();
                        tokio::join!(
                            pump(in_read, out_write, counts.to_node.clone()),
                            pump(out_read, in_write, counts.from_node.clone())
                        );
                    });
                }
            }
        });
        Forwarder { address, counts, accept }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Copies `from` to `to` until either side closes, counting the bytes.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, counter: Arc<AtomicU64>) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        counter.fetch_add(n as u64, Ordering::SeqCst);
        if to.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// The node addresses node `via` hands clients in its Metadata answer.
async fn metadata_nodes(cluster: &Cluster, via: u64) -> Option<BTreeMap<u64, String>> {
    let answer = cluster.api(via).await.metadata(pb::MetadataRequest::default()).await.ok()?.into_inner();
    Some(answer.nodes.into_iter().map(|n| (n.id, n.address)).collect())
}

fn value(topic: &str, partition: u32, index: usize) -> String {
    // About 1 KiB each, so a partition's records outweigh the small
    // requests (metadata, heartbeats) a forwarder also carries.
    format!("{topic}-p{partition}-r{index}-{}", "v".repeat(1000))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_reach_every_leader_at_its_advertised_address() {
    let mut cluster = Cluster::planned(3);
    let mut forwarders = BTreeMap::new();
    for node in &cluster.nodes {
        forwarders.insert(node.id, Forwarder::start(node.address.clone()).await);
    }
    for (id, forwarder) in &forwarders {
        cluster.set_node_config(*id, &format!("advertise = \"{}\"\n", forwarder.address));
    }
    cluster.start_all().await;
    let advertised: BTreeMap<u64, String> = forwarders.iter().map(|(id, f)| (*id, f.address.clone())).collect();
    let listen: BTreeMap<u64, String> = cluster.nodes.iter().map(|n| (n.id, n.address.clone())).collect();
    assert!(advertised.values().all(|a| !listen.values().any(|l| l == a)), "the addresses differ");

    // Every node hands out every node's advertised address, once the
    // registrations are applied everywhere.
    for id in 1..=3 {
        eventually(TIMEOUT, &format!("node {id}'s Metadata to list the advertised addresses"), || async {
            (metadata_nodes(&cluster, id).await? == advertised).then_some(())
        })
        .await;
    }
    let status = cluster.api(2).await.cluster_status(pb::ClusterStatusRequest {}).await.unwrap().into_inner();
    let shown: BTreeMap<u64, String> = status.nodes.iter().map(|n| (n.id, n.address.clone())).collect();
    assert_eq!(shown, advertised, "cluster status shows the client addresses");

    let spread = create_topic(&cluster, 1, SPREAD, PARTITIONS, 1, &[]).await;
    let leading: BTreeSet<u64> = spread.iter().copied().collect();
    assert_eq!(leading, BTreeSet::from([1, 2, 3]), "one partition on each node: {spread:?}");
    let replicated = create_topic(&cluster, 2, REPLICATED, PARTITIONS, 3, &[]).await;
    // (topic, partition, leader) of every partition the client writes.
    let partitions: Vec<(&str, u32, u64)> = [(SPREAD, &spread), (REPLICATED, &replicated)]
        .into_iter()
        .flat_map(|(topic, leaders)| leaders.iter().enumerate().map(move |(p, leader)| (topic, p as u32, *leader)))
        .collect();

    // A follower's NOT_LEADER names the leader at its advertised address.
    let (leader, follower) = (replicated[0], if replicated[0] == 1 { 2 } else { 1 });
    let batch = strata_record::encode_batch(
        &[Record { value: Some("hint".into()), ..Default::default() }],
        strata_record::ProducerFields::default(),
    )
    .unwrap();
    let hint = eventually(TIMEOUT, "a NOT_LEADER with the leader's id from a follower", || async {
        let request = pb::ProduceRequest {
            topic: REPLICATED.into(),
            partition: 0,
            batch: batch.clone(),
            acks: pb::Acks::All as i32,
            timeout_ms: 5_000,
            ..Default::default()
        };
        let error = cluster.api(follower).await.produce(request).await.ok()?.into_inner().error?;
        (error.name == "NOT_LEADER" && error.leader_id == leader).then_some(error)
    })
    .await;
    assert_eq!(hint.leader_address, advertised[&leader], "the hint names the advertised address");
    assert!(hint.message.contains(&advertised[&leader]), "{}", hint.message);

    // A client that knows only node 1's forwarder.
    let before_produce: BTreeMap<u64, Seen> = forwarders.iter().map(|(id, f)| (*id, f.counts.seen())).collect();
    let client = Client::connect(&[advertised[&1].clone()]).unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default()).unwrap();
    let mut bytes_led_by: BTreeMap<u64, u64> = BTreeMap::new();
    let mut deliveries = Vec::new();
    for &(topic, partition, leader) in &partitions {
        for index in 0..RECORDS_PER_PARTITION {
            let value = value(topic, partition, index);
            *bytes_led_by.entry(leader).or_default() += value.len() as u64;
            let record = Record { value: Some(value.into_bytes().into()), ..Default::default() };
            deliveries.push(producer.send_to(topic, partition, record).await.expect("queued"));
        }
    }
    producer.flush().await;
    for delivery in deliveries {
        delivery.await.unwrap_or_else(|e| panic!("not acknowledged: {e}\n{}", cluster.logs()));
    }
    let after_produce: BTreeMap<u64, Seen> = forwarders.iter().map(|(id, f)| (*id, f.counts.seen())).collect();
    for (node, bytes) in &bytes_led_by {
        let sent = after_produce[node].to_node - before_produce[node].to_node;
        assert!(
            sent >= *bytes,
            "node {node} leads partitions given {bytes} value bytes, but its forwarder carried {sent} bytes to it"
        );
    }

    let mut consumer = Consumer::new(client);
    for &(topic, partition, _) in &partitions {
        consumer.assign(topic, partition, StartOffset::Earliest).await.unwrap();
    }
    let mut consumed: BTreeMap<(String, u32), Vec<String>> = BTreeMap::new();
    let total = partitions.len() * RECORDS_PER_PARTITION;
    let deadline = Instant::now() + TIMEOUT;
    while consumed.values().map(Vec::len).sum::<usize>() < total {
        assert!(
            Instant::now() < deadline,
            "consumed {} records of {total} in time",
            consumed.values().map(Vec::len).sum::<usize>()
        );
        for record in consumer.poll(Duration::from_millis(500)).await.unwrap() {
            let value = String::from_utf8(record.value.expect("a value").to_vec()).unwrap();
            consumed.entry((record.topic, record.partition)).or_default().push(value);
        }
    }
    for &(topic, partition, _) in &partitions {
        let expected: Vec<String> = (0..RECORDS_PER_PARTITION).map(|i| value(topic, partition, i)).collect();
        let got = consumed.get(&(topic.to_string(), partition));
        assert_eq!(got, Some(&expected), "{topic}/{partition}: every record, once, in order");
    }
    let after_consume: BTreeMap<u64, Seen> = forwarders.iter().map(|(id, f)| (*id, f.counts.seen())).collect();
    for (node, bytes) in &bytes_led_by {
        let read = after_consume[node].from_node - after_produce[node].from_node;
        assert!(
            read >= *bytes,
            "node {node} leads partitions holding {bytes} value bytes, but its forwarder carried {read} bytes from it"
        );
        assert!(
            after_consume[node].connections > before_produce[node].connections,
            "the client connected to node {node}"
        );
    }

    // Node 3 restarted without `advertise` registers its listen address.
    cluster.stop(3);
    cluster.set_node_config(3, "");
    cluster.start_node(3);
    let mut expected = advertised.clone();
    expected.insert(3, listen[&3].clone());
    for id in [1, 3] {
        eventually(TIMEOUT, &format!("node {id}'s Metadata to list node 3 at its listen address"), || async {
            (metadata_nodes(&cluster, id).await? == expected).then_some(())
        })
        .await;
    }
}
