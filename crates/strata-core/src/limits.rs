//! Every bound of the system in one place, each with the reason for its value.

use std::time::Duration;

/// Largest record batch a producer may send, in bytes. One batch is one Raft
/// entry and one RocksDB value; 1 MiB keeps a single entry from monopolising a
/// replication round or the group-commit fsync, and matches Kafka's default
/// `max.message.bytes`.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// Largest single record (key + value + headers), in bytes. A record must fit
/// in a batch with its framing, so it is a little under the batch bound.
pub const MAX_RECORD_BYTES: usize = MAX_BATCH_BYTES - 1024;

/// Most records one batch may hold. Bounds the work of validating a batch and
/// the size of the decoded record vector a consumer allocates.
pub const MAX_RECORDS_PER_BATCH: usize = 100_000;

/// Largest fetch answer, in bytes. Bounds the memory a fetch pins on the
/// server; clients ask for less by default.
pub const MAX_FETCH_BYTES: usize = 16 * 1024 * 1024;

/// Longest long-poll wait of a fetch. Keeps idle consumers from holding a
/// request open past typical proxy and client timeouts.
pub const MAX_FETCH_WAIT_MS: u32 = 30_000;

/// Longest topic name. Names appear in RocksDB keys of the metadata state and
/// in log lines; Kafka uses 249 for its file names.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// Most partitions in one topic. Each partition is a Raft group with its own
/// tasks; this keeps a single typo from creating a million groups.
pub const MAX_PARTITIONS_PER_TOPIC: u32 = 1024;

/// Most partition replicas one node hosts. The benchmark's W5 workload runs
/// 1,000 partitions with RF 3 on 3 nodes; this leaves room above it.
pub const MAX_PARTITION_REPLICAS_PER_NODE: usize = 4096;

/// Largest replication factor. Raft groups larger than 7 gain no fault
/// tolerance worth their write fan-out.
pub const MAX_REPLICATION_FACTOR: u32 = 7;

/// Most nodes in one cluster (node ids are 1..=MAX_NODES). Bounds the
/// membership a metadata entry carries.
pub const MAX_NODES: u64 = 1024;

/// Largest gRPC message accepted, in bytes: a full batch plus request framing,
/// or a full fetch answer.
pub const MAX_GRPC_MESSAGE_BYTES: usize = MAX_FETCH_BYTES + 64 * 1024;

/// Most bytes of entries in one AppendEntries message. openraft puts up to
/// 300 entries in one (`max_payload_entries`), which for full batches is
/// 300 MiB, over MAX_GRPC_MESSAGE_BYTES: a replica that fell that far
/// behind, or a new one catching up, could never be sent its entries. The
/// transport sends a prefix within this many bytes and reports a partial
/// success, from which openraft goes on; 4 MiB (four full batches) keeps
/// one message short next to the heartbeats sharing the connection.
pub const MAX_APPEND_ENTRIES_BYTES: usize = 4 * 1024 * 1024;

/// HTTP/2 receive window of each stream on a node's port, bytes: one full
/// AppendEntries (MAX_APPEND_ENTRIES_BYTES of entries and its framing), or
/// several snapshot chunks, arrive without the sender stopping for a
/// window update. hyper's default, 1 MiB, made a 4 MiB message wait for a
/// round trip of window updates four times over. It bounds what one
/// stream can have buffered before its handler reads it.
pub const RECEIVE_STREAM_WINDOW_BYTES: u32 = 2 * MAX_APPEND_ENTRIES_BYTES as u32;

/// HTTP/2 receive window of each connection, bytes: two streams' full
/// windows (a peer's data lane has two batches in flight, a client several
/// produce calls); it bounds what one connection can have buffered.
pub const RECEIVE_CONNECTION_WINDOW_BYTES: u32 = 2 * RECEIVE_STREAM_WINDOW_BYTES;

/// Size of one snapshot chunk on the peer transport. Small enough to keep a
/// chunk from delaying heartbeats on the shared connection.
pub const SNAPSHOT_CHUNK_BYTES: usize = 512 * 1024;

/// How often a node looks for rows of groups it no longer hosts (besides
/// at start-up): a snapshot chunk that arrives after its group was deleted
/// leaves staged rows behind. The sweep seeks once per stored group and
/// column family, so a minute keeps it cheap with thousands of groups.
pub const LEFTOVER_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Most entries the group-commit task makes durable in one fsync before it
/// answers. Keeps the tail latency of one round bounded under heavy load.
pub const GROUP_COMMIT_MAX_WAITERS: usize = 4096;

/// Most produce requests a client keeps in flight per node by default.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 5;

/// How long a client waits before sending a partly filled batch by default.
pub const DEFAULT_LINGER_MS: u64 = 5;

/// Default bound on a client batch, in bytes.
pub const DEFAULT_CLIENT_BATCH_BYTES: usize = 256 * 1024;

/// Batches remembered per idempotent producer and partition. A producer
/// keeps at most this many requests in flight per partition, so a retry of
/// any of them still finds its original answer (Kafka uses the same 5).
pub const PRODUCER_BATCHES_KEPT: usize = 5;

/// Most idempotent producers one partition remembers. An entry costs about
/// 300 bytes, so a partition's producer state stays under about 3 MiB; when
/// it is full the idlest producer is forgotten first.
pub const MAX_PRODUCERS_PER_PARTITION: usize = 10_000;

/// Default time a partition remembers an idle producer's sequences
/// (Kafka's `producer.id.expiration.ms` is one day as well).
pub const DEFAULT_PRODUCER_EXPIRY_MS: u64 = 24 * 3600 * 1000;

/// Longest idempotency key, in bytes. Keys are stored in the key index, so
/// this bounds an index row; 256 bytes fits any UUID, hash or business id.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;

/// Longest `dedup.window` a topic may set: seven days. The key index holds
/// every key of the window on disk, so the window bounds its size.
pub const MAX_DEDUP_WINDOW_MS: u64 = 7 * 24 * 3600 * 1000;

/// Default `dedup.window`: two minutes, as NATS JetStream's duplicate window.
pub const DEFAULT_DEDUP_WINDOW_MS: u64 = 2 * 60 * 1000;

/// How often, at most, the log purger forces a flush of the state-machine
/// memtables so it can purge Raft logs (see strata-storage's `purger`).
/// Each forced flush writes one small table per column family, so flushing
/// rarely keeps compaction work down; the cost is log entries kept on disk
/// a few seconds longer than needed.
pub const LOG_PURGE_FLUSH_INTERVAL: Duration = Duration::from_secs(10);

/// Most expired idempotency keys one apply deletes, so cleanup after a burst
/// never stalls a partition's apply loop.
pub const IDEMPOTENCY_KEYS_EXPIRED_PER_APPLY: usize = 1024;

/// Produce payload bytes one node holds in flight by default (received, not
/// yet answered). Past it the node answers BUSY instead of queueing.
pub const DEFAULT_MAX_PRODUCE_BYTES_IN_FLIGHT: usize = 256 * 1024 * 1024;

/// Produce payload bytes one client connection may hold in flight on a
/// node by default, so one client cannot take the whole node bound.
pub const DEFAULT_MAX_PRODUCE_BYTES_IN_FLIGHT_PER_CONNECTION: usize = 64 * 1024 * 1024;

/// Most named producers (producers that fence older instances of
/// themselves) the metadata group remembers; each is a few dozen bytes of
/// metadata state, which every node holds in memory.
pub const MAX_NAMED_PRODUCERS: usize = 100_000;

/// Longest producer name, in bytes.
pub const MAX_PRODUCER_NAME_LEN: usize = 249;

/// Producer ids the metadata group hands a node in one Raft write; the node
/// gives them out one by one, so starting a producer is rarely a Raft write.
pub const PRODUCER_ID_BLOCK: u64 = 1000;

/// Fetch answer bytes one node holds at once by default, across every
/// concurrent fetch: sixteen full-size fetches (MAX_FETCH_BYTES). Past it a
/// fetch is shortened to the room left, or answered BUSY when not even one
/// batch fits, so readers cannot pin unbounded memory.
pub const DEFAULT_MAX_FETCH_BYTES_IN_FLIGHT: usize = 256 * 1024 * 1024;

/// Most topics in a cluster. Every node holds the whole metadata state in
/// memory and a topic entry with its config is a few hundred bytes, so this
/// keeps topics to a few MiB of every node's memory.
pub const MAX_TOPICS: usize = 10_000;

/// Most partitions in a cluster, over all topics. Every partition is an
/// assignment in the metadata state that every node holds in memory (and
/// writes out on each metadata apply) and a Raft group on its replicas;
/// 65,536 keeps that state to a few MiB and is 65 times the benchmark's
/// largest workload (W5, 1,000 partitions).
pub const MAX_PARTITIONS: usize = 65_536;

/// Most batches one ListOffsets by timestamp reads before it gives up with
/// LIMIT_REACHED. Without a time index the lookup walks the partition from
/// its start and keeps each header it passes (32 bytes), so this bounds
/// one lookup to about 3 MiB of headers and a bounded read.
pub const MAX_TIMESTAMP_LOOKUP_BATCHES: usize = 100_000;

/// How far a node's wall clock may be from cluster time (the median of the
/// nodes' clocks, see strata-server's `clock`) before it says so, how close
/// peers must be to agree on cluster time, and how far a stamp may run
/// ahead of the monotonic time a leader measured (when cluster time is not
/// trusted). 1 s: synced clocks are milliseconds apart and loopback or LAN
/// beats measure offsets to a few ms, so this flags only a real fault, and
/// a key can expire at most this much early (dedup windows are minutes).
pub const CLOCK_SKEW_TOLERANCE_MS: u64 = 1_000;

/// Clock samples kept per peer; the estimate is the one with the smallest
/// round trip. Eight beats (0.8 s at the default heartbeat interval) ride
/// out a few slow exchanges yet follow a clock step within a second.
pub const CLOCK_SAMPLES_KEPT: usize = 8;

/// A peer whose newest clock sample is older than this no longer counts
/// towards cluster time: five peer timeouts at the default settings, so a
/// short stall does not drop it, a dead peer does.
pub const CLOCK_PEER_FRESH: Duration = Duration::from_secs(5);

/// A clock sample whose round trip took longer than this is dropped: its
/// error (up to half the round trip) could exceed half the skew tolerance.
pub const CLOCK_SAMPLE_MAX_RTT: Duration = Duration::from_millis(CLOCK_SKEW_TOLERANCE_MS);

/// Longest a produce waits for cluster time to be trusted on a node that
/// has not heard its peers since it started, before its stamp is held to
/// the partition's clock: beats arrive every heartbeat interval (100 ms),
/// so a node with live peers trusts cluster time well within a second.
pub const CLOCK_TRUST_WAIT: Duration = Duration::from_secs(1);

/// A node whose clock is off warns at most this often: the condition lasts
/// until an operator fixes time sync, and one line a minute says it.
pub const CLOCK_WARN_INTERVAL: Duration = Duration::from_secs(60);

// ---- Raft timing defaults (config keys heartbeat_interval,
// election_timeout_min, election_timeout_max override them per node).

/// Default Raft heartbeat interval: a leader's heartbeat and a node's
/// liveness beat go out this often. 100 ms lets a follower notice a lost
/// leader within an election timeout of a few heartbeats.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);

/// Default shortest election timeout. openraft adds its leader lease, which
/// is election_timeout_max, to the random timeout: a follower campaigns
/// lease + timeout after the last heartbeat it heard, so 1.2 to 1.6 s (12
/// to 16 heartbeats) with these defaults, and a killed leader's partitions
/// were writable again 1.63 s later (W7, docs/benchmarks.md). With 500 and
/// 1,000 ms that was 1.5 to 2 s and 2.15 s; with 300 and 600 ms, 1.39 s,
/// but W5's load step then saw elections (1 and 4 in two runs, 0 here).
pub const DEFAULT_ELECTION_TIMEOUT_MIN: Duration = Duration::from_millis(400);

/// Default longest election timeout (and openraft's leader lease): twice
/// the shortest, a spread wide enough that two followers rarely time out
/// together and split the vote.
pub const DEFAULT_ELECTION_TIMEOUT_MAX: Duration = Duration::from_millis(800);

/// How many election timeouts (election_timeout_max) a new partition's
/// replicas other than its preferred leader wait, empty, for a leader
/// before they form the group themselves; and how long the preferred
/// leader keeps campaigning. Its first campaigns can find its peers'
/// replicas not started yet (a 1,000-partition topic's creation starts
/// groups for about 10 s on each node, at about the same pace); its peers
/// wait from when they start theirs. Five timeouts (4 s with the
/// defaults) leave room for a few retries; a new partition whose preferred
/// leader's node is down gets its first leader that much later.
pub const NEW_PARTITION_LEADER_GRACE_TIMEOUTS: u32 = 5;

/// Default time a node leads a partition whose preferred leader is another
/// node before it hands leadership back to it (once that node is caught
/// up): long enough that a node restarting or a network blip settles
/// first, so leadership moves once instead of flapping; short enough that
/// leaders are spread again soon after a failover (Kafka checks every 5
/// minutes).
pub const DEFAULT_LEADER_BALANCE_DELAY: Duration = Duration::from_secs(30);

/// How often each node looks for partitions it leads whose preferred
/// leader could take over (see strata-server's `leaders`): a balance is
/// restored at most this long after its delay ran out; each look reads the
/// Raft metrics of the groups this node hosts.
pub const LEADER_BALANCE_INTERVAL: Duration = Duration::from_secs(2);

/// Default time a led partition group must be idle before it goes quiet
/// (stops its Raft timers, see strata-server's `quiesce`): long enough that
/// a group between two bursts of a steady producer stays awake, and over
/// two election timeouts.
pub const DEFAULT_QUIESCE_AFTER: Duration = Duration::from_secs(2);

/// Default interval of the retention task: retention is measured in hours
/// or days, so trimming within seconds of the bound is precise enough, and
/// each pass reads only batch headers.
pub const DEFAULT_RETENTION_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Default `snapshot_every_entries`: a group snapshots after this many
/// entries, so the Raft log it keeps (and a restarted replica replays)
/// stays about a thousand entries long, while snapshots stay rare next to
/// the entries they cover.
pub const DEFAULT_SNAPSHOT_EVERY_ENTRIES: u64 = 1024;

// ---- Connections.

/// How long a node waits for a TCP connection to a peer. Peers are on a LAN
/// (or loopback): a connection that takes longer is to a dead node, and the
/// next Raft round retries.
pub const PEER_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// HTTP/2 keep-alive ping interval, and how long a ping may go unanswered,
/// on the peer transport. Raft's own timeouts notice a dead peer; the
/// keep-alive only reclaims a half-open connection. Their sum is held above
/// the longest election timeout (checked below) so that a peer paused for
/// less than an election keeps its connection instead of reconnecting.
pub const PEER_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
pub const PEER_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Most Raft heartbeats one batch call to a peer carries. Each is about
/// 100 bytes; 1,024 keeps a call far below the message bound and its
/// handling short.
pub const MAX_HEARTBEAT_BATCH: usize = 1024;

/// Heartbeats queued per peer before their senders wait: a few batches'
/// worth, so a burst of elections never blocks on the queue.
pub const HEARTBEAT_BATCH_QUEUE: usize = 4 * MAX_HEARTBEAT_BATCH;

/// Heartbeat batch calls in flight per peer. While they are out, heartbeats
/// queue up and go together in the next one: coalescing without a timer.
pub const HEARTBEAT_BATCHES_IN_FLIGHT: usize = 2;

/// Shortest deadline of an AppendEntries that carries entries. openraft
/// gives every AppendEntries the heartbeat interval (100 ms by default),
/// and a late answer makes it send the same entries again: under load,
/// when a follower's queue is longer than that, each timeout adds the
/// whole request again, and a 1,000-partition load collapsed into a storm
/// of resends (and of HTTP/2 stream resets) instead of slowing down. A
/// follower that answers within two seconds is slow, not gone; a dead one
/// is noticed by its connection and by the heartbeats, which keep their
/// short deadline.
pub const APPEND_ENTRIES_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest a heartbeat batch call may take; each heartbeat's own deadline
/// (from openraft) is shorter, so its caller gives up first.
pub const HEARTBEAT_BATCH_TIMEOUT: Duration = Duration::from_secs(2);

/// HTTP/2 keep-alive ping interval and timeout on client connections: they
/// notice a dead node during a long poll (up to MAX_FETCH_WAIT_MS) without
/// waiting for the request deadline.
pub const CLIENT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub const CLIENT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Default deadline of one client request (`ClientConfig::request_timeout`).
/// Matches the produce timeout, so a produce that the server still answers
/// (TIMEOUT, or success late) is not cut short by the client.
pub const DEFAULT_CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(DEFAULT_PRODUCE_TIMEOUT_MS as u64 / 1000);

/// Default time a client waits for a connection before trying another node.
pub const DEFAULT_CLIENT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Default age past which a producer's send refreshes the client's metadata
/// cache in the background (`ClientConfig::metadata_max_age`, Kafka's
/// `metadata.max.age.ms`): partitions added to a topic get records within
/// about this long. One metadata request per client per period is cheap;
/// shorter would only shorten the wait after a rare topic alter.
pub const DEFAULT_METADATA_MAX_AGE: Duration = Duration::from_secs(30);

/// A client waits this much longer than the timeout it asked the server to
/// answer within, so the server's own TIMEOUT answer (which is informative)
/// arrives before the client's deadline fires.
pub const SERVER_ANSWER_SLACK: Duration = Duration::from_secs(2);

/// Most `NOT_LEADER` hints one client request follows before giving up;
/// more hops than this means leadership moves faster than a client chases it.
pub const MAX_LEADER_HOPS: usize = 3;

/// Range of the randomised wait before a client retries a back-off answer;
/// the randomness keeps many clients from retrying in lock step after an
/// election.
pub const RETRY_WAIT_MIN_MS: u64 = 50;
pub const RETRY_WAIT_MAX_MS: u64 = 200;

// ---- Producer client defaults (`ProducerConfig`).

/// Default bound on the bytes of records a producer accepted but has not
/// delivered yet: several full batches per partition in flight; when it is
/// reached `send` waits (at most DEFAULT_MAX_BLOCK).
pub const DEFAULT_PRODUCER_BUFFER_BYTES: usize = 32 * 1024 * 1024;

/// Bytes a producer charges per record on top of its encoded size, for the
/// bookkeeping a queued record costs (its completion channel and permit),
/// so that the memory bound holds for many tiny records.
pub const PRODUCER_RECORD_OVERHEAD_BYTES: usize = 128;

/// Queued commands a producer's task takes in one turn before it looks at
/// its timers and sends batches: amortises that scan under heavy load.
pub const PRODUCER_COMMANDS_PER_TURN: usize = 1024;

/// Default time a record may take from `send` to its answer, retries
/// included (Kafka's `delivery.timeout.ms` is 120 s as well): long enough
/// to ride out several elections.
pub const DEFAULT_DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);

/// Default first and longest wait between a producer's retries of a batch
/// (the wait doubles from the first to the longest). The longest bounds how
/// late a producer finds a new leader after an election: with 1 s, retries
/// landed 1.5, 2.5 and 3.5 s after a leader kill, and an election done at
/// 1.6-2.0 s was used only at 2.5 s (the Docker fault test, 2026-11-30);
/// with 250 ms the producer finds it within a quarter second, for one
/// retry per batch every 250 ms while a partition has no leader.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(100);
pub const DEFAULT_RETRY_BACKOFF_MAX: Duration = Duration::from_millis(250);

/// Default longest time `send` waits for buffer room before it fails.
pub const DEFAULT_MAX_BLOCK: Duration = Duration::from_secs(60);

// ---- Topic defaults.

/// Default `retention.ms`: seven days, as Kafka.
pub const DEFAULT_RETENTION_MS: u64 = 7 * 24 * 3600 * 1000;

// ---- Requests on a node.

/// Default time a produce waits for replication before answering TIMEOUT
/// (Kafka's `request.timeout.ms` is 30 s as well).
pub const DEFAULT_PRODUCE_TIMEOUT_MS: u32 = 30_000;

/// Default fetch size when a client asks for 0 bytes: a few full batches.
pub const DEFAULT_FETCH_BYTES: usize = 1024 * 1024;

/// How long one call a node forwards to another node (to the metadata
/// leader, say) may take: longer than an election, so a forward that meets
/// one still completes, and below a client's request timeout.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `cluster status` waits for a peer's ping or a quorum read: a
/// live peer answers in milliseconds; a status command must not hang on a
/// dead one.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a client should wait after BUSY. About one group-commit round
/// under load: by then the answers in flight have released their bytes.
pub const BUSY_RETRY_AFTER_MS: u64 = 50;

/// How long a client should wait after any other back-off answer (no
/// leader, cluster unavailable, partition not ready): a fraction of an
/// election, so a retry usually finds the new leader.
pub const BACKOFF_RETRY_AFTER_MS: u64 = 100;

/// Longest a produced batch waits for its producer's previous batch to be
/// proposed (the sequencer re-orders batches that left the client together
/// and arrive out of order). A few times the spread of such requests; far
/// below a produce timeout (checked below).
pub const REORDER_WAIT: Duration = Duration::from_millis(50);

/// Most (partition, producer, epoch) entries the sequencer keeps. Each is a
/// few dozen bytes; past this the table starts over (its entries are hints
/// only, so forgetting them costs a wait, never correctness).
pub const SEQUENCER_MAX_ENTRIES: usize = 100_000;

// ---- The metrics endpoint.

/// Largest request head (request line and headers) the metrics endpoint
/// reads; a scrape's is a few hundred bytes. Larger heads are answered 431.
pub const METRICS_MAX_REQUEST_HEAD_BYTES: usize = 8 * 1024;

/// How long a metrics client may take to send its request head.
pub const METRICS_REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest a metrics connection may live, head to last byte of the answer:
/// twice Prometheus's default scrape timeout (10 s), so a slow scrape of a
/// node with many partitions completes, while a client that stops reading
/// cannot hold one of the METRICS_MAX_CONCURRENT_SCRAPES slots for long.
pub const METRICS_EXCHANGE_TIMEOUT: Duration = Duration::from_secs(20);

/// Scrapes served at once; more wait in the listen backlog. A scrape reads
/// every group's figures, so a few at once is all a node should spend.
pub const METRICS_MAX_CONCURRENT_SCRAPES: usize = 8;

/// A replica whose last acknowledgement to the leader is older than this
/// counts as out of sync (`strata_partitions_under_replicated`): several
/// election timeouts, so a slow round trip does not flap the gauge.
pub const OUT_OF_SYNC_AFTER: Duration = Duration::from_secs(5);

/// A replica further behind the leader's log than this many entries counts
/// as out of sync even when it answers heartbeats: about one snapshot
/// interval (DEFAULT_SNAPSHOT_EVERY_ENTRIES).
pub const OUT_OF_SYNC_ENTRIES: u64 = 1000;

// ---- Background tasks on a node.

/// How often the reconciler looks again at groups that failed to start,
/// when no metadata change wakes it: quick enough that a replica whose
/// start failed on a transient error (a busy disk) runs again within
/// seconds, rare enough to cost nothing on an idle node.
pub const RECONCILE_RETRY_INTERVAL: Duration = Duration::from_secs(2);

/// Most batch headers one retention pass looks at per partition; the rest
/// is trimmed by the next pass. Each header is a few dozen bytes, so a pass
/// holds a few MiB at most and never stalls the node.
pub const RETENTION_SCAN_LIMIT: usize = 100_000;

const _: () = assert!(MAX_RECORD_BYTES < MAX_BATCH_BYTES);
const _: () = assert!(MAX_BATCH_BYTES <= MAX_FETCH_BYTES);
const _: () = assert!(MAX_FETCH_BYTES < MAX_GRPC_MESSAGE_BYTES);
const _: () = assert!(DEFAULT_CLIENT_BATCH_BYTES <= MAX_BATCH_BYTES);
const _: () = assert!(DEFAULT_MAX_PRODUCE_BYTES_IN_FLIGHT_PER_CONNECTION <= DEFAULT_MAX_PRODUCE_BYTES_IN_FLIGHT);
const _: () = assert!(MAX_BATCH_BYTES <= DEFAULT_MAX_PRODUCE_BYTES_IN_FLIGHT_PER_CONNECTION);
const _: () = assert!(DEFAULT_MAX_IN_FLIGHT <= PRODUCER_BATCHES_KEPT);
const _: () = assert!(DEFAULT_DEDUP_WINDOW_MS <= MAX_DEDUP_WINDOW_MS);
const _: () = assert!(MAX_FETCH_BYTES <= DEFAULT_MAX_FETCH_BYTES_IN_FLIGHT);
const _: () = assert!(MAX_PARTITIONS_PER_TOPIC as usize <= MAX_PARTITIONS);
const _: () = assert!(MAX_TOPICS <= MAX_PARTITIONS);
const _: () = assert!(SNAPSHOT_CHUNK_BYTES < MAX_GRPC_MESSAGE_BYTES);
// A full batch always fits an AppendEntries, with room for its framing.
const _: () = assert!(2 * MAX_BATCH_BYTES <= MAX_APPEND_ENTRIES_BYTES);
const _: () = assert!(MAX_APPEND_ENTRIES_BYTES + 64 * 1024 <= MAX_GRPC_MESSAGE_BYTES);
// A full heartbeat batch (about 100 bytes each) fits one gRPC message.
const _: () = assert!(MAX_HEARTBEAT_BATCH * 256 < MAX_GRPC_MESSAGE_BYTES);
// A batch call outlives each heartbeat's own deadline (openraft's, at most
// an election timeout), so the heartbeat's caller decides when to give up.
const _: () = assert!(HEARTBEAT_BATCH_TIMEOUT.as_millis() >= DEFAULT_ELECTION_TIMEOUT_MAX.as_millis());
// Entries wait longer for their answer than a heartbeat does.
const _: () = assert!(APPEND_ENTRIES_TIMEOUT.as_millis() > DEFAULT_HEARTBEAT_INTERVAL.as_millis());
// A paused peer keeps its connection through an election (see
// PEER_KEEPALIVE_INTERVAL).
const _: () = assert!(
    PEER_KEEPALIVE_INTERVAL.as_millis() + PEER_KEEPALIVE_TIMEOUT.as_millis() > DEFAULT_ELECTION_TIMEOUT_MAX.as_millis()
);
// A keep-alive ping must not fire more often than beats already flow.
const _: () = assert!(PEER_KEEPALIVE_INTERVAL.as_millis() > DEFAULT_HEARTBEAT_INTERVAL.as_millis());
const _: () = assert!(DEFAULT_HEARTBEAT_INTERVAL.as_millis() < DEFAULT_ELECTION_TIMEOUT_MIN.as_millis());
const _: () = assert!(DEFAULT_ELECTION_TIMEOUT_MIN.as_millis() < DEFAULT_ELECTION_TIMEOUT_MAX.as_millis());
// A batch waiting for its predecessor gives up long before its produce
// times out, so the wait never turns into a TIMEOUT answer.
const _: () = assert!(REORDER_WAIT.as_millis() * 10 < DEFAULT_PRODUCE_TIMEOUT_MS as u128);
// A forwarded call finishes (or fails) before the client's deadline, so
// the client sees the forward's own error.
const _: () = assert!(FORWARD_TIMEOUT.as_millis() < DEFAULT_CLIENT_REQUEST_TIMEOUT.as_millis());
const _: () = assert!(FORWARD_TIMEOUT.as_millis() > DEFAULT_ELECTION_TIMEOUT_MAX.as_millis());
// A client long poll is noticed dead by keep-alive within the poll.
const _: () =
    assert!(CLIENT_KEEPALIVE_INTERVAL.as_millis() + CLIENT_KEEPALIVE_TIMEOUT.as_millis() <= MAX_FETCH_WAIT_MS as u128);
const _: () = assert!(RETRY_WAIT_MIN_MS <= RETRY_WAIT_MAX_MS);
const _: () = assert!(METRICS_REQUEST_READ_TIMEOUT.as_millis() < METRICS_EXCHANGE_TIMEOUT.as_millis());
const _: () = assert!(OUT_OF_SYNC_AFTER.as_millis() > DEFAULT_ELECTION_TIMEOUT_MAX.as_millis());
const _: () = assert!(BUSY_RETRY_AFTER_MS <= BACKOFF_RETRY_AFTER_MS);
const _: () = assert!(DEFAULT_FETCH_BYTES <= MAX_FETCH_BYTES);

// Consumer groups

/// Longest consumer group id, in bytes. Group ids are keys of the metadata
/// state that every node holds in memory and appear in log lines; 249 is the
/// topic name bound, so tools can name a group after a topic.
pub const MAX_GROUP_ID_LEN: usize = 249;

/// Most consumer groups in a cluster. Every node holds the whole metadata
/// state, groups included, in memory; a group without members costs a few
/// hundred bytes plus its committed offsets, so this matches MAX_TOPICS.
pub const MAX_GROUPS: usize = 10_000;

/// Most members in one group. The leader's assignor runs over every member
/// and every subscribed partition on each rebalance, and each member is a
/// few hundred bytes of replicated state; a thousand members is already
/// more than one per partition of a topic at MAX_PARTITIONS_PER_TOPIC.
pub const MAX_GROUP_MEMBERS: usize = 1_000;

/// Longest member id, in bytes. The leader makes ids of 36 characters (a
/// UUID); a client may bring its own, and 64 bytes fits any such token.
pub const MAX_MEMBER_ID_LEN: usize = 64;

/// Longest static instance id (and client id and client host), in bytes.
/// Operators pick them (host names, pod names), so they get the topic name
/// bound; they are stored per member in every node's memory.
pub const MAX_GROUP_CLIENT_STRING_LEN: usize = 249;

/// Most topics one member subscribes to. The subscription is replicated and
/// compared on every heartbeat that changes it; a thousand topics covers
/// wide subscriptions while keeping a join entry to a few hundred KiB.
pub const MAX_SUBSCRIBED_TOPICS: usize = 1_000;

/// Shortest session timeout a group may set. A member is declared dead when
/// no heartbeat arrives for this long; below 2 s one slow round trip or a
/// pause of a loaded consumer would expire live members and rebalance.
pub const MIN_GROUP_SESSION_TIMEOUT_MS: u64 = 2_000;

/// Longest session timeout a group may set. A crashed member's partitions
/// are unread until its session expires, so half an hour (Kafka's bound for
/// the classic protocol) bounds how long a crash can stall a partition.
pub const MAX_GROUP_SESSION_TIMEOUT_MS: u64 = 30 * 60 * 1000;

/// Default session timeout of a group (Kafka's default for KIP-848 groups).
pub const DEFAULT_GROUP_SESSION_TIMEOUT_MS: u64 = 45_000;

/// Shortest heartbeat interval a group may set. Every heartbeat is a call to
/// the metadata leader; 500 ms keeps a full group (MAX_GROUP_MEMBERS) to
/// 2,000 calls a second.
pub const MIN_GROUP_HEARTBEAT_INTERVAL_MS: u64 = 500;

/// Longest heartbeat interval a group may set. Members learn of new
/// assignments only when they heartbeat, and a rebalance takes about two
/// intervals, so a longer interval would make rebalances take minutes.
pub const MAX_GROUP_HEARTBEAT_INTERVAL_MS: u64 = 30_000;

/// Default heartbeat interval of a group: fifteen heartbeats per default
/// session timeout, so a member survives many lost heartbeats, and a
/// rebalance (about two intervals) takes about 6 s.
pub const DEFAULT_GROUP_HEARTBEAT_INTERVAL_MS: u64 = 3_000;

/// Longest rebalance timeout a member may ask for: how long it may take to
/// give up revoked partitions before the leader removes it. Same reason as
/// MAX_GROUP_SESSION_TIMEOUT_MS: it bounds how long one slow member can hold
/// partitions others wait for.
pub const MAX_GROUP_REBALANCE_TIMEOUT_MS: u64 = 30 * 60 * 1000;

/// Rebalance timeout of a member that asks for none: five minutes, Kafka's
/// default `max.poll.interval.ms`, the time a consumer may spend between
/// polls before it is considered stuck.
pub const DEFAULT_GROUP_REBALANCE_TIMEOUT_MS: u64 = 5 * 60 * 1000;

/// Most partition offsets in one commit. One commit is one Raft entry of
/// the metadata group; 1,024 (a whole topic at MAX_PARTITIONS_PER_TOPIC)
/// with full-length names and metadata stays under 2 MiB (checked below),
/// about the size of the largest produce batch.
pub const MAX_OFFSETS_PER_COMMIT: usize = 1024;

/// Longest metadata string committed with an offset, in bytes. It is kept
/// per partition in every node's memory; clients store small tokens there
/// (Kafka allows 4 KiB, which few use).
pub const MAX_COMMIT_METADATA_LEN: usize = 1024;

/// Most partitions with a committed offset in one group: every partition of
/// the cluster, since a group cannot read more; it bounds the offsets a
/// group keeps for topics deleted since it committed.
pub const MAX_COMMITTED_PARTITIONS_PER_GROUP: usize = MAX_PARTITIONS;

/// Default `offsets.retention`: the committed offsets of a group without
/// members are dropped this long after its last commit or after its last
/// member left, whichever is later (Kafka's default is also 7 days).
pub const DEFAULT_OFFSETS_RETENTION_MS: u64 = 7 * 24 * 3600 * 1000;

const _: () = assert!(MIN_GROUP_HEARTBEAT_INTERVAL_MS < MIN_GROUP_SESSION_TIMEOUT_MS);
const _: () = assert!(MIN_GROUP_SESSION_TIMEOUT_MS <= DEFAULT_GROUP_SESSION_TIMEOUT_MS);
const _: () = assert!(DEFAULT_GROUP_SESSION_TIMEOUT_MS <= MAX_GROUP_SESSION_TIMEOUT_MS);
const _: () = assert!(MIN_GROUP_HEARTBEAT_INTERVAL_MS <= DEFAULT_GROUP_HEARTBEAT_INTERVAL_MS);
const _: () = assert!(DEFAULT_GROUP_HEARTBEAT_INTERVAL_MS <= MAX_GROUP_HEARTBEAT_INTERVAL_MS);
const _: () = assert!(DEFAULT_GROUP_HEARTBEAT_INTERVAL_MS < DEFAULT_GROUP_SESSION_TIMEOUT_MS);
const _: () = assert!(DEFAULT_GROUP_REBALANCE_TIMEOUT_MS <= MAX_GROUP_REBALANCE_TIMEOUT_MS);
const _: () =
    assert!(MAX_OFFSETS_PER_COMMIT * (MAX_TOPIC_NAME_LEN + MAX_COMMIT_METADATA_LEN + 32) <= 2 * MAX_BATCH_BYTES);

// The group coordinator on the metadata leader (strata-server's `coordinator`)

/// How often the metadata leader checks its members' session and rebalance
/// deadlines (and whether topics were created or deleted). A member is
/// expired at most this long after its deadline: an eighth of
/// MIN_GROUP_SESSION_TIMEOUT_MS. Each check walks the leader's in-memory
/// timers once, one entry per member.
pub const GROUP_TIMER_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// How often the metadata leader looks for committed offsets past their
/// retention. Retention is counted in days (DEFAULT_OFFSETS_RETENTION_MS),
/// so expiring them up to a minute late changes nothing, and each check
/// walks every group without members.
pub const OFFSETS_EXPIRY_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// Shortest `offsets_retention` a node accepts. Expiry runs every
/// OFFSETS_EXPIRY_CHECK_INTERVAL, so a shorter retention could not be kept
/// to; and a group's offsets must outlive a consumer restart.
pub const MIN_OFFSETS_RETENTION_MS: u64 = 60_000;

/// High watermark look-ups the coordinator has in flight for one request
/// (a commit of partitions past what it last saw, a reset, a describe).
/// Each asks one partition leader; 16 at once keeps a describe of a wide
/// group to a few round trips per hundred partitions without flooding the
/// peers' connections.
pub const GROUP_HIGH_WATERMARK_LOOKUPS_IN_FLIGHT: usize = 16;

const _: () = assert!(GROUP_TIMER_CHECK_INTERVAL.as_millis() * 8 <= MIN_GROUP_SESSION_TIMEOUT_MS as u128);
const _: () = assert!(OFFSETS_EXPIRY_CHECK_INTERVAL.as_millis() <= MIN_OFFSETS_RETENTION_MS as u128);
const _: () = assert!(MIN_OFFSETS_RETENTION_MS <= DEFAULT_OFFSETS_RETENTION_MS);

// The group consumer of strata-client

/// How often a group consumer with auto-commit on commits what its polls
/// returned: every 5 s, Kafka's `auto.commit.interval.ms`. A crash
/// re-delivers at most this much of each partition to the next owner; one
/// commit per interval is one small Raft entry of the metadata group.
pub const DEFAULT_AUTO_COMMIT_INTERVAL_MS: u64 = 5_000;

// Transactions (the coordinator's state machine in strata-state's `txn`)

/// Longest transactional id, in bytes: Kafka's bound on such names, and a
/// few hundred bytes per id in every node's memory at most.
pub const MAX_TRANSACTIONAL_ID_LEN: usize = 249;

/// `transaction_timeout` when the producer names none: 60 s, Kafka's
/// default. An open transaction holds back read_committed readers of its
/// partitions until it ends, so it must not be left open for long.
pub const DEFAULT_TRANSACTION_TIMEOUT_MS: u64 = 60_000;

/// Longest `transaction_timeout` a producer may ask for: 15 minutes, Kafka's
/// `transaction.max.timeout.ms`. It bounds how long a hanging transaction
/// can pin the last stable offset of its partitions.
pub const MAX_TRANSACTION_TIMEOUT_MS: u64 = 15 * 60 * 1000;

/// Most partitions one transaction writes to: every one gets a marker when
/// it ends, written before the transaction completes, and the list is part
/// of the metadata state. A whole topic at MAX_PARTITIONS_PER_TOPIC fits.
pub const MAX_PARTITIONS_PER_TRANSACTION: usize = MAX_PARTITIONS_PER_TOPIC as usize;

const _: () = assert!(DEFAULT_TRANSACTION_TIMEOUT_MS <= MAX_TRANSACTION_TIMEOUT_MS);

/// How often the metadata leader looks for transactions to drive: those
/// past their timeout (to abort) and those whose decision is written but
/// whose markers are not (after a failover). A transaction is aborted at
/// most this long after its timeout; each check walks the transactional
/// ids once.
pub const TXN_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// How long InitProducerId, and the first produce or offsets of the next
/// transaction, wait on the coordinator for the previous transaction's
/// markers before answering CONCURRENT_TRANSACTIONS: markers take one
/// partition round trip, or an election after a leader died; below
/// FORWARD_TIMEOUT, so a forwarded request answers with that code rather
/// than a transport error.
pub const TXN_COMPLETION_WAIT: Duration = Duration::from_secs(5);

/// Pause between attempts to write one partition's marker when its leader
/// cannot take it (moving, electing): markers must all be written before
/// the transaction completes, so the coordinator keeps trying.
pub const TXN_MARKER_RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// How often the metadata leader looks for partition moves to drive (it
/// also looks at once when the metadata state changes): a new leader
/// resumes a move at most this long after it took over.
pub const REASSIGN_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// Pause before the metadata leader asks again to move a partition whose
/// last attempt failed (its leader moving, a new replica down): long enough
/// not to load a struggling group, short next to an election.
pub const REASSIGN_RETRY_BACKOFF: Duration = Duration::from_secs(1);

/// How long one attempt to move a partition may take on its leader: the
/// new replicas catch up (by snapshot, for a large partition: a gigabyte
/// at a few tens of MB/s takes tens of seconds) and then two membership
/// entries commit. A slower move fails this attempt and the next one
/// resumes where it stopped (a caught-up learner stays a learner).
pub const REASSIGN_STEP_TIMEOUT: Duration = Duration::from_secs(120);

/// Partition moves the metadata leader runs at once; the others wait their
/// turn. Each copies its partition to its new replicas, so a rebalance of
/// many partitions would otherwise compete for the disks and the network
/// with the clients; two keep a move's catch-up short while two nodes'
/// copies overlap.
pub const MAX_CONCURRENT_MOVES: usize = 2;

/// How long a partition's leader waits, when asked to move the partition,
/// for its own metadata state to show the move (so that the move throttle
/// knows the new replicas before copying to them): the move is committed
/// when it is asked, and a follower of the metadata group learns of a
/// commit within a heartbeat (100 ms); 5 s leaves room for a slow apply.
/// Past it the attempt fails and is retried.
pub const MOVE_KNOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// A new replica counts as caught up, and the voters change, once it
/// lacks at most this many of the leader's entries: a few replication
/// rounds at most (openraft sends up to 300 entries per AppendEntries), so
/// a joint configuration that needs it to commit waits for it only
/// briefly. (openraft's own blocking `add_learner` allows 5,000, which is
/// gigabytes of full batches.)
pub const MOVE_CAUGHT_UP_ENTRIES: u64 = 64;

/// How long a partition's leader waits, before it adds a new replica, for
/// a snapshot of what it applied and for its log to be purged up to it (so
/// the new replica is sent the partition's data as a snapshot stream, not
/// as the log): a partition snapshot writes the group's state only (its
/// data stays where it is), and a purge waits for the replication rounds
/// in flight to the other replicas, a few fsyncs. Past it the copy goes
/// through the log, which is slower but as correct.
pub const MOVE_SNAPSHOT_WAIT: Duration = Duration::from_secs(10);

/// Lowest move throttle (`--throttle`), bytes per second. The largest
/// message a move sends, one full AppendEntries (MAX_GRPC_MESSAGE_BYTES),
/// then waits about 64 s for its turn, inside one attempt of a move
/// (REASSIGN_STEP_TIMEOUT); below it a move could spend whole attempts
/// waiting for a single message.
pub const MIN_MOVE_THROTTLE_BYTES_PER_SEC: u64 = 256 * 1024;

/// How much a throttled move may send at once after a pause: this long at
/// the throttle's rate. A tenth of a second keeps the copy smooth next to
/// the clients' traffic on the same link and disk, while a message larger
/// than that still goes out whole (the bucket lends it the difference and
/// the next message waits for it).
pub const MOVE_THROTTLE_BURST: Duration = Duration::from_millis(100);

const _: () = assert!(TXN_COMPLETION_WAIT.as_millis() < FORWARD_TIMEOUT.as_millis());
// The largest message a throttled move sends waits less than one attempt.
const _: () =
    assert!((MAX_GRPC_MESSAGE_BYTES as u64 / MIN_MOVE_THROTTLE_BYTES_PER_SEC) < REASSIGN_STEP_TIMEOUT.as_secs());
const _: () = assert!(TXN_CHECK_INTERVAL.as_millis() < DEFAULT_TRANSACTION_TIMEOUT_MS as u128);

/// Longest advertised client address (`advertise`, HOST:PORT): a DNS name
/// is at most 253 characters, then `:` and a port of at most 5 digits.
/// Bounds what one node may store in the metadata state.
pub const MAX_ADVERTISED_ADDRESS_LEN: usize = 253 + 1 + 5;

/// First pause before a node proposes its advertised address again, after
/// an attempt failed (no metadata leader yet, leader moving, peer down);
/// doubled on each failure up to ADVERTISE_RETRY_BACKOFF_MAX. About one
/// election timeout, so a node starting with its peers registers soon
/// after the metadata group forms.
pub const ADVERTISE_RETRY_BACKOFF_MIN: Duration = Duration::from_millis(200);

/// Longest pause between those attempts: a node whose cluster stays
/// without quorum retries a few times a minute, not more, and registers
/// within this long of the quorum coming back.
pub const ADVERTISE_RETRY_BACKOFF_MAX: Duration = Duration::from_secs(5);

const _: () = assert!(ADVERTISE_RETRY_BACKOFF_MIN.as_millis() < ADVERTISE_RETRY_BACKOFF_MAX.as_millis());

/// How long a node with an empty store and an `initial_cluster` of several
/// nodes asks its peers whether the cluster already formed (they answer
/// its id) before it forms one with them. Nodes of a new cluster start
/// within seconds of each other, and one that finds a formed cluster knows
/// its data was lost and rejoins it instead of voting with an empty log.
pub const FORMATION_PROBE_WINDOW: Duration = Duration::from_secs(5);

/// How long one probe or liveness ping of a peer may take: a peer on the
/// same network answers in milliseconds; one that does not within this
/// counts as down.
pub const PEER_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a joining node keeps asking to join (the cluster may be
/// electing a metadata leader, or the node may start before the ones it
/// joins through) before it gives up and exits with the last error.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(120);

/// How often the metadata leader looks for membership work: a cluster id
/// to draw, a joined node to make a learner of the metadata group, a node
/// to rebuild or to remove (it also looks when the metadata state changes).
pub const MEMBERSHIP_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// A node whose last heartbeat answer to the metadata leader is older than
/// this counts as down when a removal checks that the voters left keep a
/// majority: several election timeouts, so a node busy for a moment still
/// counts as up.
pub const NODE_LIVE_WITHIN: Duration = Duration::from_secs(5);

/// How long a node that stops a group it leads (the group moved off it)
/// waits for the voter it hands leadership to to take over: one election
/// round on a caught-up voter takes milliseconds; past this the group is
/// stopped anyway and elects a leader by timeout.
pub const LEADER_HANDOFF_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a node waits, after a group's Raft stopped, for the writes it
/// began (an apply round, a snapshot) to end before it deletes the group's
/// rows: they take milliseconds; past this it deletes anyway (the leftover
/// sweep removes what lands later).
pub const GROUP_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How often that wait looks: a stop is rare, and a few ms is short next
/// to the hand-off that precedes it.
pub const GROUP_STOP_POLL: Duration = Duration::from_millis(5);
