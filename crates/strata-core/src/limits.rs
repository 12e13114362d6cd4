//! Every bound of the system in one place, each with the reason for its value.

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

/// Size of one snapshot chunk on the peer transport. Small enough to keep a
/// chunk from delaying heartbeats on the shared connection.
pub const SNAPSHOT_CHUNK_BYTES: usize = 512 * 1024;

/// How often a node looks for rows of groups it no longer hosts (besides
/// at start-up): a snapshot chunk that arrives after its group was deleted
/// leaves staged rows behind. The sweep seeks once per stored group and
/// column family, so a minute keeps it cheap with thousands of groups.
pub const LEFTOVER_SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

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
pub const LOG_PURGE_FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

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
pub const CLOCK_PEER_FRESH: std::time::Duration = std::time::Duration::from_secs(5);

/// A clock sample whose round trip took longer than this is dropped: its
/// error (up to half the round trip) could exceed half the skew tolerance.
pub const CLOCK_SAMPLE_MAX_RTT: std::time::Duration = std::time::Duration::from_millis(CLOCK_SKEW_TOLERANCE_MS);

/// Longest a produce waits for cluster time to be trusted on a node that
/// has not heard its peers since it started, before its stamp is held to
/// the partition's clock: beats arrive every heartbeat interval (100 ms),
/// so a node with live peers trusts cluster time well within a second.
pub const CLOCK_TRUST_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A node whose clock is off warns at most this often: the condition lasts
/// until an operator fixes time sync, and one line a minute says it.
pub const CLOCK_WARN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

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
