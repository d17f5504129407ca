//! Raft RPCs between controller voters, over the controller listener (see
//! `rpc.rs`). One connection per peer, opened on first use and again after
//! any failure; openraft sends each peer's RPCs one at a time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use tracing::{debug, info, warn};

use super::raft_types::TypeConfig;
use super::rpc::{self, Request, Response};
use crate::security::tls::Tls;

type NodeId = u64;

/// How long connecting to a peer may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A peer that flaps is reported unreachable at most once per this
/// interval at WARN (the rest at DEBUG), and one never reached (still
/// starting) once it has been unreachable this long; each report is paired
/// with one line when the peer is back.
const UNREACHABLE_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// Makes connections to peers. Addresses come from `--controllers` (so a
/// voter that moved is found at its new address), falling back to the
/// address in the Raft membership.
#[derive(Debug, Clone, Default)]
pub struct Network {
    pub voters: Arc<BTreeMap<NodeId, String>>,
    /// Set when the controller listeners speak (mutual) TLS.
    tls: Option<Arc<Tls>>,
    reachability: Arc<Mutex<BTreeMap<NodeId, Reachability>>>,
}

impl Network {
    pub fn new(voters: BTreeMap<NodeId, String>, tls: Option<Arc<Tls>>) -> Network {
        Network {
            voters: Arc::new(voters),
            tls,
            reachability: Arc::default(),
        }
    }
}

/// Whether a peer answered its last RPC, so the log says once that a voter
/// is unreachable and once that it is back, however often Raft retries.
#[derive(Debug, Default)]
struct Reachability {
    ever_reached: bool,
    unreachable_since: Option<Instant>,
    /// Whether this outage was reported at WARN.
    reported: bool,
    last_report: Option<Instant>,
}

#[derive(Debug)]
pub struct Connection {
    target: NodeId,
    address: String,
    tls: Option<Arc<Tls>>,
    stream: Option<rpc::Channel>,
    reachability: Arc<Mutex<BTreeMap<NodeId, Reachability>>>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        let address = self
            .voters
            .get(&target)
            .cloned()
            .unwrap_or_else(|| node.addr.clone());
        Connection {
            target,
            address,
            tls: self.tls.clone(),
            stream: None,
            reachability: Arc::clone(&self.reachability),
        }
    }
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, E>>;

impl Connection {
    /// Sends `request` and returns the response; any failure closes the
    /// connection so the next call starts afresh.
    async fn send<E: std::error::Error>(
        &mut self,
        request: Request,
        option: &RPCOption,
    ) -> RpcResult<Response, E> {
        let result = self.exchange(request, option).await;
        // A Raft error from the peer means it answered.
        let failure = result
            .as_ref()
            .err()
            .filter(|error| !matches!(error, RPCError::RemoteError(_)));
        self.note_reachability(failure);
        result
    }

    async fn exchange<E: std::error::Error>(
        &mut self,
        request: Request,
        option: &RPCOption,
    ) -> RpcResult<Response, E> {
        // The channel is taken out for the exchange and put back only once
        // it is answered: openraft may drop this future at its own timeout,
        // and a channel left holding an unanswered request would hand its
        // late answer to the next request.
        let mut channel = match self.stream.take() {
            Some(channel) => channel,
            None => {
                let connect = rpc::connect(&self.address, self.tls.as_ref(), CONNECT_TIMEOUT);
                match connect.await {
                    Ok(stream) => rpc::Channel::new(stream),
                    Err(error) => return Err(self.unreachable(&error)),
                }
            }
        };
        match channel.exchange(&request, option.hard_ttl()).await {
            Ok(response) => {
                self.stream = Some(channel);
                Ok(response)
            }
            Err(error) => Err(RPCError::Network(NetworkError::new(&error))),
        }
    }

    /// Logs the peer becoming unreachable or reachable again, once per
    /// change and rate-limited.
    fn note_reachability<E: std::error::Error>(
        &self,
        error: Option<&RPCError<NodeId, BasicNode, E>>,
    ) {
        let now = Instant::now();
        let mut peers = self.reachability.lock().expect("reachability lock");
        let peer = peers.entry(self.target).or_default();
        let (voter, address) = (self.target, &self.address);
        match error {
            Some(error) => {
                let outage_began = peer.unreachable_since.is_none();
                let since = *peer.unreachable_since.get_or_insert(now);
                let due = if peer.ever_reached {
                    peer.last_report
                        .is_none_or(|at| now.duration_since(at) >= UNREACHABLE_LOG_INTERVAL)
                } else {
                    now.duration_since(since) >= UNREACHABLE_LOG_INTERVAL
                };
                let down_ms = now.duration_since(since).as_millis() as u64;
                if !peer.reported && due {
                    peer.reported = true;
                    peer.last_report = Some(now);
                    warn!(voter, %address, down_ms, %error, "controller voter unreachable");
                } else if outage_began {
                    debug!(voter, %address, %error, "controller voter unreachable");
                }
            }
            None => {
                peer.ever_reached = true;
                if let Some(since) = peer.unreachable_since.take() {
                    let down_ms = now.duration_since(since).as_millis() as u64;
                    if std::mem::take(&mut peer.reported) {
                        info!(voter, down_ms, "controller voter reachable again");
                    } else {
                        debug!(voter, down_ms, "controller voter reachable again");
                    }
                }
            }
        }
    }

    fn unreachable<E: std::error::Error>(
        &self,
        error: &std::io::Error,
    ) -> RPCError<NodeId, BasicNode, E> {
        let error = std::io::Error::new(
            error.kind(),
            format!("controller {} at {}: {error}", self.target, self.address),
        );
        RPCError::Unreachable(Unreachable::new(&error))
    }

    fn unexpected<E: std::error::Error>(
        &mut self,
        response: Response,
    ) -> RPCError<NodeId, BasicNode, E> {
        self.stream = None;
        let error = std::io::Error::other(format!(
            "controller {} answered a Raft RPC with {response:?}",
            self.target
        ));
        RPCError::Network(NetworkError::new(&error))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, RaftError<NodeId>> {
        match self.send(Request::AppendEntries(rpc), &option).await? {
            Response::AppendEntries(result) => {
                result.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
            }
            other => Err(self.unexpected(other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        match self.send(Request::InstallSnapshot(rpc), &option).await? {
            Response::InstallSnapshot(result) => {
                result.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
            }
            other => Err(self.unexpected(other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, RaftError<NodeId>> {
        match self.send(Request::Vote(rpc), &option).await? {
            Response::Vote(result) => {
                result.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
            }
            other => Err(self.unexpected(other)),
        }
    }
}
