//! Messages on the controller listener: Raft RPCs between voters, and the
//! calls every broker makes to the controller leader (registration,
//! heartbeats, metadata, proposals).
//!
//! ```text
//! frame: payload_bytes u32 (big-endian) | payload (postcard Request or Response)
//! ```
//!
//! One request, then its response, at a time per connection.

use std::time::Duration;

use bytes::BytesMut;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use strata_protocol::frame::{write_frame, FrameCodec, FrameReader};
use strata_protocol::transport::{self, Stream};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use super::metadata::{BrokerId, ClusterMetadata, CommandOutcome, Endpoint, MetadataCommand};
use super::raft_types::TypeConfig;
use crate::limits;
use crate::security::tls::Tls;

type NodeId = u64;

#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    RegisterBroker {
        broker_id: BrokerId,
        host: String,
        port: u16,
        listeners: Vec<Endpoint>,
        incarnation: Uuid,
    },
    Heartbeat {
        broker_id: BrokerId,
        incarnation: Uuid,
    },
    /// Answered once the metadata is newer than `after_version`, or after
    /// `wait_ms` with the quorum's state alone.
    FetchMetadata {
        after_version: u64,
        wait_ms: u64,
    },
    Propose(MetadataCommand),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Heartbeat(HeartbeatReply),
    Metadata {
        /// Present when newer than the version asked after.
        metadata: Option<ClusterMetadata>,
        quorum: QuorumState,
    },
    /// How the command went, and the metadata version that includes it.
    Committed {
        outcome: CommandOutcome,
        metadata_version: u64,
    },
    /// Broker calls go to the leader; this voter is not it.
    NotLeader {
        leader: Option<NodeId>,
    },
    /// The controller could not carry out the call.
    Failed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeartbeatReply {
    /// The session is extended by `session_timeout_ms` from when the
    /// heartbeat was sent.
    Alive { session_timeout_ms: u64 },
    /// The controller has no registration for this broker: register again.
    Unregistered,
    /// A newer process registered with this broker id: this one must stop.
    StaleIncarnation,
}

/// The metadata quorum as its leader sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumState {
    pub leader: NodeId,
    pub term: u64,
    /// The index after the last applied entry (Kafka's high watermark of the
    /// metadata log).
    pub applied_end: u64,
    pub voters: Vec<VoterState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoterState {
    pub id: NodeId,
    /// The index after the voter's last replicated entry, if known.
    pub log_end: Option<u64>,
}

/// A connection carrying controller frames: an `i32` size, then a
/// postcard-encoded message.
#[derive(Debug)]
pub struct Channel {
    stream: Stream,
    frames: FrameReader,
    out: BytesMut,
}

impl Channel {
    pub fn new(stream: Stream) -> Channel {
        Channel {
            stream,
            frames: FrameReader::new(FrameCodec::new(limits::CONTROLLER_FRAME_BYTES_MAX)),
            out: BytesMut::new(),
        }
    }

    /// Writes one frame holding `message`.
    pub async fn write<T: Serialize>(&mut self, message: &T) -> std::io::Result<()> {
        let payload = postcard::to_stdvec(message).map_err(std::io::Error::other)?;
        if payload.len() > limits::CONTROLLER_FRAME_BYTES_MAX {
            return Err(std::io::Error::other(format!(
                "controller message of {} bytes exceeds the {}-byte frame limit",
                payload.len(),
                limits::CONTROLLER_FRAME_BYTES_MAX
            )));
        }
        self.out.clear();
        write_frame(&mut self.out, |out| {
            out.extend_from_slice(&payload);
            Ok::<(), std::convert::Infallible>(())
        })
        .expect("infallible");
        self.stream.write_all(&self.out).await?;
        // TLS holds the last records until flushed (a no-op on plain TCP).
        self.stream.flush().await
    }

    /// Reads one frame; `None` when the peer closed the connection between
    /// frames.
    pub async fn read<T: DeserializeOwned>(&mut self) -> std::io::Result<Option<T>> {
        let Some(frame) = self.frames.read(&mut self.stream).await? else {
            return Ok(None);
        };
        postcard::from_bytes(&frame)
            .map(Some)
            .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidData, error))
    }

    /// Sends `request` and reads the response, within `timeout`.
    pub async fn exchange(
        &mut self,
        request: &Request,
        timeout: Duration,
    ) -> std::io::Result<Response> {
        let exchange = async {
            self.write(request).await?;
            self.read().await?.ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the controller closed the connection",
                )
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time"))?
    }
}

/// Idle connections kept per voter: as many as a broker's calls at once
/// (a metadata long-poll, a heartbeat, a proposal or two).
const IDLE_PER_VOTER_MAX: usize = 4;

/// Connections to controller voters, reused from call to call: a broker
/// heartbeats several times a second, and a connection per call would cost
/// a handshake and leave a socket in TIME_WAIT each time.
#[derive(Default)]
pub struct Connections {
    /// Set when the controller listeners speak TLS: this broker's
    /// certificate is presented, the voter's checked against the CA.
    tls: Option<Arc<Tls>>,
    idle: std::sync::Mutex<std::collections::HashMap<String, Vec<Channel>>>,
}

impl Connections {
    pub fn new(tls: Option<Arc<Tls>>) -> Connections {
        Connections {
            tls,
            idle: Default::default(),
        }
    }

    /// Makes one call to `address` within `timeout` in all, on an idle
    /// connection if there is one. A reused connection that fails other
    /// than by timing out (the voter closed it while it was idle, or
    /// restarted) is replaced by a new one for the same call.
    pub async fn call(
        &self,
        address: &str,
        request: &Request,
        timeout: Duration,
    ) -> std::io::Result<Response> {
        let deadline = tokio::time::Instant::now() + timeout;
        let idle = self
            .idle
            .lock()
            .expect("connections lock")
            .get_mut(address)
            .and_then(Vec::pop);
        if let Some(mut channel) = idle {
            match channel.exchange(request, remaining(deadline)).await {
                Ok(response) => {
                    self.keep(address, channel);
                    return Ok(response);
                }
                Err(error) if error.kind() == std::io::ErrorKind::TimedOut => return Err(error),
                Err(_) => {}
            }
        }
        let stream = connect(address, self.tls.as_ref(), remaining(deadline)).await?;
        let mut channel = Channel::new(stream);
        let response = channel.exchange(request, remaining(deadline)).await?;
        self.keep(address, channel);
        Ok(response)
    }

    fn keep(&self, address: &str, channel: Channel) {
        let mut idle = self.idle.lock().expect("connections lock");
        let channels = idle.entry(address.to_string()).or_default();
        if channels.len() < IDLE_PER_VOTER_MAX {
            channels.push(channel);
        }
    }
}

/// Connects to a voter's controller listener, through TLS when `tls` is set.
pub async fn connect(
    address: &str,
    tls: Option<&Arc<Tls>>,
    timeout: Duration,
) -> std::io::Result<Stream> {
    let client = tls.map(|tls| tls.client());
    transport::connect(address, client.as_ref(), timeout).await
}

fn remaining(deadline: tokio::time::Instant) -> Duration {
    deadline.saturating_duration_since(tokio::time::Instant::now())
}
