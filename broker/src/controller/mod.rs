//! The Raft metadata controller (openraft): one replicated log of metadata
//! commands, applied by every voter to the same [`ClusterMetadata`].
//!
//! - `metadata.rs`: the state and the commands (a pure decision core).
//! - `log_store.rs`: the Raft log and vote in files under `DATA/__raft/`.
//! - `state_machine.rs`: applies commands, snapshots, publishes metadata.
//! - `rpc.rs`: the messages of the controller listener.
//! - `network.rs`: Raft RPCs to the other voters.
//! - `server.rs`: the controller listener: Raft RPCs and brokers' calls.
//! - `client.rs`: how every broker talks to the controller leader.
//!
//! This file is the voter: openraft plus the leader's duties, which are to
//! answer brokers' calls, fence brokers whose heartbeats lapse and move
//! leadership back to preferred replicas.

pub mod client;
pub mod ids;
pub mod log_store;
pub mod metadata;
pub mod network;
pub mod raft_types;
pub mod rpc;
pub mod server;
pub mod state_machine;

pub use raft_types::TypeConfig;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Config, Raft, ServerState, SnapshotPolicy};
use thiserror::Error;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use uuid::Uuid;

use self::log_store::LogStore;
use self::metadata::{
    BrokerId, ClusterMetadata, CommandOutcome, Endpoint, MetadataCommand, NO_LEADER,
};
use self::network::Network;
use self::rpc::{HeartbeatReply, QuorumState, Request, Response, VoterState};
use self::state_machine::StateMachine;
use crate::limits;
use crate::metrics::Metrics;
use crate::security::tls::Tls;

/// Raft heartbeats between voters.
const HEARTBEAT_INTERVAL_MS: u64 = 100;
/// Election timeout range: a voter that hears no leader for this long runs.
const ELECTION_TIMEOUT_MIN_MS: u64 = 300;
const ELECTION_TIMEOUT_MAX_MS: u64 = 600;
/// A snapshot is taken after this many applied entries.
const SNAPSHOT_EVERY_ENTRIES: u64 = 1_000;
/// How often the leader looks for lapsed sessions.
const SESSION_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// How often the leader looks for partitions whose preferred leader could
/// lead again.
const PREFERRED_LEADER_CHECK_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Error)]
pub enum ControllerError {
    #[error("cannot open the controller's files in {dir}: {source}")]
    Storage { dir: String, source: std::io::Error },
    #[error("invalid Raft configuration: {0}")]
    Config(String),
    #[error(
        "the controller quorum was formed with voters {stored:?}, but --controllers names {configured:?}; \
         changing the voters of an existing cluster is not supported"
    )]
    VotersChanged {
        stored: BTreeSet<u64>,
        configured: BTreeSet<u64>,
    },
    #[error("this controller is not the leader (leader: {0:?})")]
    NotLeader(Option<u64>),
    #[error("the controller quorum did not answer: {0}")]
    Unavailable(String),
    #[error("the controller could not commit the command: {0}")]
    Raft(String),
}

/// What the controller leader enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerSettings {
    /// A broker whose last heartbeat is older than this is fenced.
    pub broker_session_timeout: Duration,
    /// Move leadership back to each partition's first replica when it can lead.
    pub auto_leader_rebalance: bool,
}

/// The leader's record of broker heartbeats, valid for one term: a new
/// leader knows nothing of earlier heartbeats, so it gives every broker a
/// whole session from the moment it took over.
#[derive(Debug)]
struct Sessions {
    term: u64,
    since: Instant,
    last_heartbeat: HashMap<BrokerId, Instant>,
}

impl Sessions {
    fn in_term(&mut self, term: u64) -> &mut Self {
        if self.term != term {
            self.term = term;
            self.since = Instant::now();
            self.last_heartbeat.clear();
        }
        self
    }
}

/// A running controller voter.
#[derive(Clone)]
pub struct Controller {
    id: u64,
    raft: Raft<TypeConfig>,
    metadata: watch::Receiver<Arc<ClusterMetadata>>,
    settings: ControllerSettings,
    sessions: Arc<Mutex<Sessions>>,
}

impl Controller {
    /// Starts voter `node_id` of the quorum `voters` (id → controller
    /// address), with its Raft log under `dir`. A voter starting for the
    /// first time forms the quorum with the others (each may do so: they
    /// all propose the same voters); one that ran before resumes.
    /// With `tls`, voters reach each other through mutual TLS.
    pub async fn start(
        node_id: u64,
        voters: BTreeMap<u64, String>,
        dir: &Path,
        settings: ControllerSettings,
        tls: Option<Arc<Tls>>,
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
        let network = Network::new(voters.clone(), tls);
        let raft = Raft::new(node_id, Arc::new(config), network, log_store, state_machine)
            .await
            .map_err(raft_error)?;
        let configured: BTreeSet<u64> = voters.keys().copied().collect();
        if raft.is_initialized().await.map_err(raft_error)? {
            let stored: BTreeSet<u64> = raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .voter_ids()
                .collect();
            if stored != configured {
                return Err(ControllerError::VotersChanged { stored, configured });
            }
        } else {
            let members = voters
                .into_iter()
                .map(|(id, addr)| (id, BasicNode { addr }))
                .collect::<BTreeMap<_, _>>();
            raft.initialize(members).await.map_err(raft_error)?;
        }
        tokio::spawn(log_leader_changes(raft.metrics()));
        Ok(Controller {
            id: node_id,
            raft,
            metadata,
            settings,
            sessions: Arc::new(Mutex::new(Sessions {
                term: 0,
                since: Instant::now(),
                last_heartbeat: HashMap::new(),
            })),
        })
    }

    /// Commits `command` on this voter, which must lead.
    pub async fn propose(
        &self,
        command: MetadataCommand,
    ) -> Result<CommandOutcome, ControllerError> {
        match self.raft.client_write(command).await {
            Ok(response) => Ok(response.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(ControllerError::NotLeader(forward.leader_id))
            }
            Err(error) => Err(raft_error(error)),
        }
    }

    /// The latest metadata applied on this voter.
    pub fn metadata(&self) -> Arc<ClusterMetadata> {
        Arc::clone(&self.metadata.borrow())
    }

    /// The Raft term this voter is in.
    pub fn raft_term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    /// This voter's term, leader and applied index.
    pub fn raft_metrics(&self) -> openraft::RaftMetrics<u64, BasicNode> {
        self.raft.metrics().borrow().clone()
    }

    /// The term this voter leads in, if it leads.
    fn leading_term(&self) -> Option<u64> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        (metrics.state == ServerState::Leader && metrics.current_leader == Some(self.id))
            .then_some(metrics.current_term)
    }

    fn not_leader(&self) -> Response {
        Response::NotLeader {
            leader: self.raft.metrics().borrow().current_leader,
        }
    }

    /// Confirms with a quorum that this voter still leads, and waits until
    /// it has applied everything committed before. A leader cut off from
    /// the others (paused, partitioned) cannot confirm, so it never extends
    /// a session or serves metadata from a term that has ended.
    async fn confirm_leadership(&self) -> Result<(), Response> {
        match self.raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(error) => Err(match error.forward_to_leader::<BasicNode>() {
                Some(forward) => Response::NotLeader {
                    leader: forward.leader_id,
                },
                None => Response::Failed(error.to_string()),
            }),
        }
    }

    /// Answers one call on the controller listener.
    pub async fn handle(&self, request: Request) -> Response {
        match request {
            Request::AppendEntries(rpc) => {
                Response::AppendEntries(self.raft.append_entries(rpc).await)
            }
            Request::InstallSnapshot(rpc) => {
                Response::InstallSnapshot(self.raft.install_snapshot(rpc).await)
            }
            Request::Vote(rpc) => Response::Vote(self.raft.vote(rpc).await),
            Request::RegisterBroker {
                broker_id,
                host,
                port,
                listeners,
                incarnation,
            } => {
                self.register(broker_id, host, port, listeners, incarnation)
                    .await
            }
            Request::Heartbeat {
                broker_id,
                incarnation,
            } => self.heartbeat(broker_id, incarnation).await,
            Request::FetchMetadata {
                after_version,
                wait_ms,
            } => {
                self.fetch_metadata(after_version, Duration::from_millis(wait_ms))
                    .await
            }
            Request::Propose(command) => self.commit(command).await,
        }
    }

    /// Commits `command` and answers with its outcome and the metadata
    /// version that includes it.
    async fn commit(&self, command: MetadataCommand) -> Response {
        match self.propose(command).await {
            Ok(outcome) => Response::Committed {
                outcome,
                metadata_version: self.metadata().metadata_version,
            },
            Err(ControllerError::NotLeader(leader)) => Response::NotLeader { leader },
            Err(error) => Response::Failed(error.to_string()),
        }
    }

    async fn register(
        &self,
        broker_id: BrokerId,
        host: String,
        port: u16,
        listeners: Vec<Endpoint>,
        incarnation: Uuid,
    ) -> Response {
        let Some(term) = self.leading_term() else {
            return self.not_leader();
        };
        if self.metadata().cluster_id.is_none() {
            let cluster_id = Uuid::new_v4().simple().to_string();
            // Refused only if another registration named the cluster first.
            if let Response::Failed(error) = self
                .commit(MetadataCommand::InitCluster { cluster_id })
                .await
            {
                return Response::Failed(error);
            }
        }
        let response = self
            .commit(MetadataCommand::RegisterBroker {
                broker_id,
                host: host.clone(),
                port,
                listeners,
                incarnation,
            })
            .await;
        if matches!(
            response,
            Response::Committed {
                outcome: Ok(()),
                ..
            }
        ) {
            info!(%broker_id, %host, port, %incarnation, "broker registered");
            self.record_heartbeat(term, broker_id);
        }
        response
    }

    fn record_heartbeat(&self, term: u64, broker_id: BrokerId) {
        let mut sessions = self.sessions.lock().expect("sessions lock");
        sessions
            .in_term(term)
            .last_heartbeat
            .insert(broker_id, Instant::now());
    }

    async fn heartbeat(&self, broker_id: BrokerId, incarnation: Uuid) -> Response {
        let Some(term) = self.leading_term() else {
            return self.not_leader();
        };
        if let Err(response) = self.confirm_leadership().await {
            return response;
        }
        let broker = self.metadata().brokers.get(&broker_id).cloned();
        let reply = match broker {
            None => HeartbeatReply::Unregistered,
            Some(broker) if broker.incarnation != incarnation => HeartbeatReply::StaleIncarnation,
            Some(broker) => {
                self.record_heartbeat(term, broker_id);
                if broker.fenced {
                    let unfence = MetadataCommand::UnfenceBroker {
                        broker_id,
                        incarnation,
                    };
                    match self.propose(unfence).await {
                        Ok(_) => info!(%broker_id, "broker unfenced: it heartbeats again"),
                        Err(ControllerError::NotLeader(leader)) => {
                            return Response::NotLeader { leader }
                        }
                        Err(error) => return Response::Failed(error.to_string()),
                    }
                }
                HeartbeatReply::Alive {
                    session_timeout_ms: self.settings.broker_session_timeout.as_millis() as u64,
                }
            }
        };
        Response::Heartbeat(reply)
    }

    async fn fetch_metadata(&self, after_version: u64, wait: Duration) -> Response {
        if self.leading_term().is_none() {
            return self.not_leader();
        }
        let mut metadata = self.metadata.clone();
        let newer = |current: &Arc<ClusterMetadata>| current.metadata_version > after_version;
        let _ = tokio::time::timeout(
            wait.min(limits::METADATA_FETCH_WAIT_MAX),
            metadata.wait_for(newer),
        )
        .await;
        if let Err(response) = self.confirm_leadership().await {
            return response;
        }
        let current = self.metadata();
        Response::Metadata {
            metadata: newer(&current).then(|| (*current).clone()),
            quorum: self.quorum_state(),
        }
    }

    fn quorum_state(&self) -> QuorumState {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let end = |log_id: Option<&openraft::LogId<u64>>| log_id.map_or(0, |id| id.index + 1);
        let voters = metrics
            .membership_config
            .membership()
            .voter_ids()
            .map(|id| VoterState {
                id,
                log_end: if id == self.id {
                    Some(metrics.last_log_index.map_or(0, |index| index + 1))
                } else {
                    metrics
                        .replication
                        .as_ref()
                        .and_then(|replication| replication.get(&id))
                        .map(|matched| end(matched.as_ref()))
                },
            })
            .collect();
        QuorumState {
            leader: self.id,
            term: metrics.current_term,
            applied_end: end(metrics.last_applied.as_ref()),
            voters,
        }
    }

    /// The leader's duties, until `shutdown`: fence brokers whose sessions
    /// lapsed, and restore preferred leaders.
    pub async fn supervise(self, metrics: Arc<Metrics>, shutdown: CancellationToken) {
        let mut last_rebalance_check = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(SESSION_CHECK_INTERVAL) => {}
            }
            let Some(term) = self.leading_term() else {
                continue;
            };
            for (broker_id, incarnation, silent) in self.lapsed_sessions(term) {
                warn!(
                    %broker_id,
                    silent_ms = silent.as_millis() as u64,
                    "fencing broker: its heartbeats lapsed"
                );
                let fence = MetadataCommand::FenceBroker {
                    broker_id,
                    incarnation,
                };
                if let Err(error) = self.propose(fence).await {
                    warn!(%broker_id, %error, "could not fence broker");
                }
            }
            self.elect_unclean_leaders(&metrics).await;
            if self.settings.auto_leader_rebalance
                && last_rebalance_check.elapsed() >= PREFERRED_LEADER_CHECK_INTERVAL
            {
                last_rebalance_check = Instant::now();
                if self.metadata().preferred_leaders_wait() {
                    info!("moving leadership back to preferred replicas");
                    if let Err(error) = self.propose(MetadataCommand::ElectPreferredLeaders).await {
                        warn!(%error, "could not elect preferred leaders");
                    }
                }
            }
        }
    }

    /// Gives a leader to every partition that can only get one uncleanly and
    /// whose topic allows it, reporting each as data loss.
    async fn elect_unclean_leaders(&self, metrics: &Metrics) {
        let candidates = self.metadata().unclean_election_candidates();
        for (topic, partition, fenced_isr) in candidates {
            let elect = MetadataCommand::ElectUncleanLeader {
                topic: topic.clone(),
                partition,
            };
            match self.propose(elect).await {
                Ok(Ok(())) => {
                    let elected = self
                        .metadata()
                        .topics
                        .get(&topic)
                        .and_then(|record| record.partitions.get(partition as usize))
                        .map(|record| (record.leader, record.leader_epoch));
                    let Some((leader, leader_epoch)) = elected else {
                        continue;
                    };
                    if leader == NO_LEADER || fenced_isr.contains(&leader) {
                        continue; // an in-sync replica returned meanwhile
                    }
                    metrics.record_unclean_election();
                    error!(
                        topic,
                        partition,
                        %leader,
                        %leader_epoch,
                        ?fenced_isr,
                        "unclean leader election: an out-of-sync replica leads; records only the fenced in-sync replicas had are lost"
                    );
                }
                Ok(Err(refused)) => {
                    warn!(topic, partition, %refused, "unclean leader election refused")
                }
                Err(error) => warn!(topic, partition, %error, "could not elect an unclean leader"),
            }
        }
    }

    /// Unfenced brokers silent for longer than the session timeout in
    /// `term`, with how long each has been silent.
    fn lapsed_sessions(&self, term: u64) -> Vec<(BrokerId, Uuid, Duration)> {
        let metadata = self.metadata();
        let mut sessions = self.sessions.lock().expect("sessions lock");
        let sessions = sessions.in_term(term);
        metadata
            .alive_broker_records()
            .filter_map(|broker| {
                let last = sessions
                    .last_heartbeat
                    .get(&broker.broker_id)
                    .copied()
                    .unwrap_or(sessions.since);
                let silent = last.elapsed();
                (silent > self.settings.broker_session_timeout).then_some((
                    broker.broker_id,
                    broker.incarnation,
                    silent,
                ))
            })
            .collect()
    }

    pub async fn shutdown(&self) -> Result<(), ControllerError> {
        self.raft.shutdown().await.map_err(raft_error)
    }
}

/// One line per change of controller leader, for as long as Raft runs.
async fn log_leader_changes(mut metrics: watch::Receiver<openraft::RaftMetrics<u64, BasicNode>>) {
    let mut known = None;
    loop {
        let (leader, term) = {
            let metrics = metrics.borrow_and_update();
            (metrics.current_leader, metrics.current_term)
        };
        if known != Some((leader, term))
            && (leader.is_some() || known.is_some_and(|(was, _)| was.is_some()))
        {
            match leader {
                Some(leader) => info!(%leader, term, "controller leader elected"),
                None => info!(term, "controller has no leader; electing one"),
            }
        }
        known = Some((leader, term));
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

fn raft_error(error: impl std::fmt::Display) -> ControllerError {
    ControllerError::Raft(error.to_string())
}
