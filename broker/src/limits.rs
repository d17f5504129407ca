//! Every bound the broker enforces, in one place.

use std::time::Duration;

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
/// Longest a Fetch may wait for data, whatever the client asks.
pub const FETCH_WAIT_MAX: Duration = Duration::from_secs(30);
/// Longest a Produce with acks=all may wait for durability.
pub const PRODUCE_TIMEOUT_MAX: Duration = Duration::from_secs(300);
/// `group.max.size`: members of one consumer group (with the member ids
/// handed out and not yet used). Kafka has no default bound; a thousand
/// consumers in one group is past any partition count worth sharing.
pub const GROUP_MEMBERS_MAX: usize = 1000;
