//! Every bound the broker enforces, in one place: sizes in bytes
//! (`_BYTES`), counts named by what they count, waits as `Duration`s.

use std::time::Duration;

// Connections and requests.

/// `socket.request.max.bytes`: a frame announcing more is refused from its
/// size prefix alone, before anything is allocated for it.
pub const REQUEST_BYTES_MAX: usize = 100 << 20;
/// Open client connections; a connection beyond this is closed on accept.
pub const CONNECTIONS_MAX: usize = 4096;
/// Requests read from one connection before its earlier ones are answered.
pub const IN_FLIGHT_REQUESTS_PER_CONNECTION: usize = 64;
/// `connections.max.idle.ms`: a connection with nothing to say is closed.
pub const CONNECTION_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// A frame that started arriving must finish within this, or the connection
/// is closed (a client that sends half a request holds nothing for long).
pub const PARTIAL_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Before a client on a SASL listener has authenticated, a frame larger
/// than this closes its connection (Kafka's `sasl.server.max.receive.size`
/// is 512 KiB; the handshake's messages are a few hundred bytes), so a
/// stranger cannot make the broker hold a large buffer (CVE-2022-34917).
pub const UNAUTHENTICATED_REQUEST_BYTES_MAX: usize = 64 << 10;
/// A TLS handshake and a SASL exchange must both be done within this of
/// the connection's accept, or it is closed.
pub const AUTHENTICATION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a failed login waits before its answer (Kafka's
/// `connection.failed.authentication.delay.ms`), which slows guessing.
pub const AUTHENTICATION_FAILURE_DELAY: Duration = Duration::from_secs(1);
/// Requests decoded ahead of the one being handled. Reading and decoding
/// run on their own task, so the next request is read while this one is
/// appended.
pub const DECODED_REQUESTS_AHEAD_MAX: usize = 2;
/// Largest metrics HTTP request read before answering.
pub const METRICS_REQUEST_BYTES_MAX: usize = 8 << 10;
/// Longest a Fetch may wait for data, whatever the client asks.
pub const FETCH_WAIT_MAX: Duration = Duration::from_secs(30);
/// Longest a Produce with acks=all may wait for durability.
pub const PRODUCE_TIMEOUT_MAX: Duration = Duration::from_secs(300);

// Consumer groups.

/// Longest a commit waits to be durable on the ISR
/// (`offsets.commit.timeout.ms`).
pub const OFFSET_COMMIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest metadata string a commit may carry (`offset.metadata.max.bytes`).
pub const OFFSET_METADATA_BYTES_MAX: usize = 4096;
/// `group.max.size`: members of one consumer group (with the member ids
/// handed out and not yet used). Kafka has no default bound; a thousand
/// consumers in one group is past any partition count worth sharing.
pub const GROUP_MEMBERS_MAX: usize = 1000;

// Replication.

/// Unflushed bytes that start a flush before `flush.ms` is up. Writing back
/// a little at a time keeps fsync short: one fsync of a second's worth of
/// appends (up to a gigabyte) stalls the appends behind it for as long.
pub const UNFLUSHED_BYTES_MAX: u64 = 64 << 20;
/// How long a follower's fetch from its leader may take before the
/// connection is dropped.
pub const FOLLOWER_FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes a follower fetch asks for per partition: large enough that a busy
/// partition is not held to one small copy per round trip.
pub const FOLLOWER_PARTITION_FETCH_BYTES: i32 = 8 << 20;
/// Bytes one follower fetch asks for over all its partitions.
pub const FOLLOWER_FETCH_BYTES: i32 = 16 << 20;
/// Largest fetch response a follower reads.
pub const FOLLOWER_RESPONSE_BYTES_MAX: usize = 64 << 20;
/// How long a follower waits for the flush of what it copied.
pub const FOLLOWER_FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

// Controller and metadata.

/// Most partitions one topic may have.
pub const PARTITIONS_PER_TOPIC_MAX: u32 = 10_000;
/// How long one metadata proposal may look for a leader that commits it.
pub const CONTROLLER_PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a controller call may take; a leader that lost its quorum cannot confirm
/// its leadership, and the caller has given up long before this.
pub const CONTROLLER_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Controller RPC frames larger than this are refused before anything is
/// allocated for them (snapshot chunks are a few MiB; metadata of 100 000 partitions fits).
pub const CONTROLLER_FRAME_BYTES_MAX: usize = 64 << 20;
/// A Raft log frame larger than this is damage, not a record (metadata
/// commands are small).
pub const RAFT_LOG_FRAME_BYTES_MAX: usize = 64 << 20;
/// Longest a metadata fetch waits for a change.
pub const METADATA_FETCH_WAIT_MAX: Duration = Duration::from_secs(30);
/// How long a producer-id allocation waits for this broker's metadata to show the
/// block the controller committed for it.
pub const PRODUCER_ID_BLOCK_VISIBLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest response a broker accepts from another for a call that is not
/// a replica fetch (markers, transaction checks): small answers.
pub const PEER_RESPONSE_BYTES_MAX: usize = 16 << 20;

// Transactions.

/// How long a coordinator waits for one round of markers on a leader (the
/// append and its durability on the ISR) before trying again.
pub const TXN_MARKER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a leader waits for the coordinator to confirm that a
/// transaction holds a partition (KIP-890's verification).
pub const TXN_VERIFY_TIMEOUT: Duration = Duration::from_secs(10);
