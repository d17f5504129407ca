//! Raft RPCs between controller voters, over the controller listener (see
//! `rpc.rs`). One connection per peer, opened on first use and again after
//! any failure; openraft sends each peer's RPCs one at a time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use tokio::net::TcpStream;

use super::rpc::{self, Request, Response};
use super::TypeConfig;

type NodeId = u64;

/// How long connecting to a peer may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Makes connections to peers. Addresses come from `--controllers` (so a
/// voter that moved is found at its new address), falling back to the
/// address in the Raft membership.
#[derive(Debug, Clone, Default)]
pub struct Network {
    pub voters: Arc<BTreeMap<NodeId, String>>,
}

#[derive(Debug)]
pub struct Connection {
    target: NodeId,
    address: String,
    stream: Option<TcpStream>,
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
            stream: None,
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
        if self.stream.is_none() {
            let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.address));
            let stream = match connect.await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => return Err(self.unreachable(&error)),
                Err(_elapsed) => {
                    let error =
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
                    return Err(self.unreachable(&error));
                }
            };
            let _ = stream.set_nodelay(true);
            self.stream = Some(stream);
        }
        let stream = self.stream.as_mut().expect("connected above");
        match rpc::exchange(stream, &request, option.hard_ttl()).await {
            Ok(response) => Ok(response),
            Err(error) => {
                self.stream = None;
                Err(RPCError::Network(NetworkError::new(&error)))
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
