//! The Raft metadata controller (openraft): one replicated log of metadata
//! commands, applied by every voter to the same [`ClusterMetadata`].
//!
//! - `metadata.rs`: the state and the commands (a pure decision core).
//! - `log_store.rs`: the Raft log and vote in files under `DATA/__raft/`.
//! - `state_machine.rs`: applies commands, snapshots, publishes metadata.
//! - `network.rs`: RPCs between voters.

pub mod log_store;
pub mod metadata;
pub mod network;
pub mod state_machine;

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, Config, Raft, SnapshotPolicy};
use thiserror::Error;
use tokio::sync::watch;

use self::log_store::LogStore;
use self::metadata::{ClusterMetadata, CommandOutcome, MetadataCommand};
use self::network::Network;
use self::state_machine::StateMachine;

openraft::declare_raft_types!(
    /// openraft's types for the metadata controller.
    pub TypeConfig:
        D = MetadataCommand,
        R = CommandOutcome,
        NodeId = u64,
        Node = BasicNode,
);

/// Raft heartbeats between voters.
const HEARTBEAT_INTERVAL_MS: u64 = 100;
/// Election timeout range: a voter that hears no leader for this long runs.
const ELECTION_TIMEOUT_MIN_MS: u64 = 300;
const ELECTION_TIMEOUT_MAX_MS: u64 = 600;
/// A snapshot is taken after this many applied entries.
const SNAPSHOT_EVERY_ENTRIES: u64 = 1_000;
/// How long a starting controller waits to become leader.
const LEADERSHIP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum ControllerError {
    #[error("cannot open the controller's files in {dir}: {source}")]
    Storage { dir: String, source: std::io::Error },
    #[error("invalid Raft configuration: {0}")]
    Config(String),
    #[error("the controller did not elect a leader within {0:?}")]
    NoLeader(Duration),
    #[error("the controller could not commit the command: {0}")]
    Raft(String),
}

/// A running controller voter.
#[derive(Clone)]
pub struct Controller {
    raft: Raft<TypeConfig>,
    metadata: watch::Receiver<Arc<ClusterMetadata>>,
}

impl Controller {
    /// Starts the only voter of a single-controller cluster, with its Raft
    /// log under `dir`, and waits until it leads.
    pub async fn start_single_voter(
        node_id: u64,
        address: &str,
        dir: &Path,
    ) -> Result<Self, ControllerError> {
        let storage_error = |source| ControllerError::Storage {
            dir: dir.display().to_string(),
            source,
        };
        let log_store = LogStore::open(dir).map_err(storage_error)?;
        let state_machine = StateMachine::open(dir).map_err(storage_error)?;
        let metadata = state_machine.subscribe();
        let config = Config {
            cluster_name: "strata".into(),
            heartbeat_interval: HEARTBEAT_INTERVAL_MS,
            election_timeout_min: ELECTION_TIMEOUT_MIN_MS,
            election_timeout_max: ELECTION_TIMEOUT_MAX_MS,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY_ENTRIES),
            ..Config::default()
        }
        .validate()
        .map_err(|error| ControllerError::Config(error.to_string()))?;
        let raft = Raft::new(node_id, Arc::new(config), Network, log_store, state_machine)
            .await
            .map_err(|error| ControllerError::Raft(error.to_string()))?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|error| ControllerError::Raft(error.to_string()))?;
        if !initialized {
            let voters = BTreeMap::from([(
                node_id,
                BasicNode {
                    addr: address.to_string(),
                },
            )]);
            raft.initialize(voters)
                .await
                .map_err(|error| ControllerError::Raft(error.to_string()))?;
        }
        raft.wait(Some(LEADERSHIP_TIMEOUT))
            .current_leader(node_id, "single voter leads")
            .await
            .map_err(|_timeout| ControllerError::NoLeader(LEADERSHIP_TIMEOUT))?;
        Ok(Controller { raft, metadata })
    }

    /// Commits `command` and returns how applying it went.
    pub async fn propose(
        &self,
        command: MetadataCommand,
    ) -> Result<CommandOutcome, ControllerError> {
        let response = self
            .raft
            .client_write(command)
            .await
            .map_err(|error| ControllerError::Raft(error.to_string()))?;
        Ok(response.data)
    }

    /// The latest applied metadata.
    pub fn metadata(&self) -> Arc<ClusterMetadata> {
        Arc::clone(&self.metadata.borrow())
    }

    /// Every metadata version as it is applied.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterMetadata>> {
        self.metadata.clone()
    }

    /// The Raft term this voter is in.
    pub fn raft_term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    /// Term, leader and applied index, for `/metrics`.
    pub fn raft_metrics(&self) -> openraft::RaftMetrics<u64, BasicNode> {
        self.raft.metrics().borrow().clone()
    }

    pub async fn shutdown(&self) -> Result<(), ControllerError> {
        self.raft
            .shutdown()
            .await
            .map_err(|error| ControllerError::Raft(error.to_string()))
    }
}
