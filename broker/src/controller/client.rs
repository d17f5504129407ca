//! How a broker talks to the controller, the same way whether or not it
//! runs a voter itself: it registers, heartbeats to keep its session, follows
//! the metadata by long-polling the leader, and sends proposals there.
//!
//! Calls go to the voter believed to lead; a voter that does not lead
//! answers with the leader it knows of, and an unreachable one is skipped,
//! so a call finds a new leader within an election.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use uuid::Uuid;

use super::metadata::{BrokerId, ClusterMetadata, CommandOutcome, Endpoint, MetadataCommand};
use super::rpc::{self, HeartbeatReply, QuorumState, Request, Response};
use super::ControllerError;
use crate::limits;
use crate::security::tls::Tls;

/// How long a broker that proposed waits to see its own change.
const OWN_CHANGE_WAIT: Duration = Duration::from_secs(5);
/// Pause after a failed call before the next voter is tried.
const RETRY_BACKOFF: Duration = Duration::from_millis(50);
/// A fetch long-polls for one heartbeat interval; it may take this much
/// longer before it counts as failed (a leader that stopped answering is
/// left this soon).
const FETCH_SLACK: Duration = Duration::from_secs(1);
/// How often a broker waiting for the quorum says so.
const WAITING_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// The broker's end of the controller.
/// Where a broker is reached, as it registers: its inter-broker listener's
/// host and port, and every listener's advertised address.
#[derive(Debug, Clone)]
pub struct Addresses {
    pub host: String,
    pub port: u16,
    pub listeners: Vec<Endpoint>,
}

#[derive(Clone)]
pub struct ControllerClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// Voter id → controller address.
    voters: BTreeMap<u64, String>,
    connections: rpc::Connections,
    /// The voter that answered last as leader.
    leader: Mutex<Option<u64>>,
    /// Where the next voter is picked when no leader is known.
    next_voter: AtomicUsize,
    heartbeat_interval: Duration,
    metadata: watch::Sender<Arc<ClusterMetadata>>,
    quorum: watch::Sender<Option<QuorumState>>,
    session_alive: watch::Sender<bool>,
}

impl ControllerClient {
    /// The controller voters' addresses, by id.
    pub fn voters(&self) -> &BTreeMap<u64, String> {
        &self.inner.voters
    }

    /// A client of the quorum `voters` (id → controller address) that
    /// heartbeats every `heartbeat_interval`; through TLS, presenting this
    /// broker's certificate, when `tls` is set.
    pub fn new(
        voters: BTreeMap<u64, String>,
        heartbeat_interval: Duration,
        tls: Option<Arc<Tls>>,
    ) -> Self {
        ControllerClient {
            inner: Arc::new(Inner {
                voters,
                connections: rpc::Connections::new(tls),
                leader: Mutex::new(None),
                next_voter: AtomicUsize::new(0),
                heartbeat_interval,
                metadata: watch::Sender::new(Arc::new(ClusterMetadata::default())),
                quorum: watch::Sender::new(None),
                session_alive: watch::Sender::new(false),
            }),
        }
    }

    /// The latest metadata this broker has seen.
    pub fn metadata(&self) -> Arc<ClusterMetadata> {
        Arc::clone(&self.inner.metadata.borrow())
    }

    /// Every metadata version as this broker learns it.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterMetadata>> {
        self.inner.metadata.subscribe()
    }

    /// The quorum as its leader last described it.
    pub fn quorum(&self) -> Option<QuorumState> {
        self.inner.quorum.borrow().clone()
    }

    /// Whether this broker's session is alive (it may lead partitions).
    pub fn session(&self) -> watch::Receiver<bool> {
        self.inner.session_alive.subscribe()
    }

    /// Sends `request` to the leader, following redirects and trying other
    /// voters, until an answer or `deadline`. Each attempt may take
    /// `attempt_timeout`.
    async fn call(
        &self,
        request: &Request,
        attempt_timeout: Duration,
        deadline: Instant,
    ) -> Result<Response, ControllerError> {
        let voters = &self.inner.voters;
        let mut last_error = String::from("no voter answered");
        loop {
            let leader = *self.inner.leader.lock().expect("leader lock");
            let target = leader.unwrap_or_else(|| {
                let next = self.inner.next_voter.fetch_add(1, Ordering::Relaxed);
                *voters
                    .keys()
                    .nth(next % voters.len())
                    .expect("at least one voter")
            });
            let address = voters.get(&target).cloned().unwrap_or_default();
            let remaining = deadline.saturating_duration_since(Instant::now());
            let outcome = self
                .inner
                .connections
                .call(&address, request, attempt_timeout.min(remaining))
                .await;
            let redirect = match outcome {
                Ok(Response::NotLeader {
                    leader: Some(leader),
                }) if leader != target && voters.contains_key(&leader) => Some(leader),
                Ok(Response::NotLeader { .. }) => {
                    last_error = format!("controller {target} does not know a leader");
                    None
                }
                Ok(response) => {
                    *self.inner.leader.lock().expect("leader lock") = Some(target);
                    return Ok(response);
                }
                Err(error) => {
                    last_error = format!("controller {target} at {address}: {error}");
                    None
                }
            };
            *self.inner.leader.lock().expect("leader lock") = redirect;
            if Instant::now() >= deadline {
                return Err(ControllerError::Unavailable(last_error));
            }
            if redirect.is_none() {
                tokio::time::sleep(RETRY_BACKOFF).await;
            }
        }
    }

    /// Registers this broker process, waiting as long as it takes for a
    /// leader to commit it. Fails only if the controller refuses it.
    pub async fn register(
        &self,
        broker_id: BrokerId,
        addresses: &Addresses,
        incarnation: Uuid,
    ) -> Result<(), String> {
        let request = Request::RegisterBroker {
            broker_id,
            host: addresses.host.clone(),
            port: addresses.port,
            listeners: addresses.listeners.clone(),
            incarnation,
        };
        loop {
            let deadline = Instant::now() + WAITING_LOG_INTERVAL;
            match self
                .call(&request, limits::CONTROLLER_PROPOSE_TIMEOUT, deadline)
                .await
            {
                Ok(Response::Committed {
                    outcome: Ok(()),
                    metadata_version,
                }) => {
                    self.inner.session_alive.send_replace(true);
                    self.wait_for_version(metadata_version).await;
                    return Ok(());
                }
                Ok(Response::Committed {
                    outcome: Err(refused),
                    ..
                }) => return Err(refused.to_string()),
                Ok(other) => {
                    warn!(response = ?other, "unexpected answer to registration; retrying")
                }
                Err(error) => info!(%error, "waiting for the controller quorum to register"),
            }
        }
    }

    /// Commits `command` through the leader and waits (briefly) until this
    /// broker's metadata includes it, so a client that asks next sees it.
    pub async fn propose(
        &self,
        command: MetadataCommand,
    ) -> Result<CommandOutcome, ControllerError> {
        let request = Request::Propose(command);
        let deadline = Instant::now() + limits::CONTROLLER_PROPOSE_TIMEOUT;
        match self
            .call(&request, limits::CONTROLLER_PROPOSE_TIMEOUT, deadline)
            .await?
        {
            Response::Committed {
                outcome,
                metadata_version,
            } => {
                self.wait_for_version(metadata_version).await;
                Ok(outcome)
            }
            Response::Failed(error) => Err(ControllerError::Raft(error)),
            other => Err(ControllerError::Raft(format!(
                "unexpected answer {other:?}"
            ))),
        }
    }

    /// Waits until this broker's metadata includes its registration as
    /// `incarnation`, and returns that metadata.
    pub async fn registered(&self, broker_id: BrokerId, incarnation: Uuid) -> Arc<ClusterMetadata> {
        let mut metadata = self.subscribe();
        let includes = |metadata: &Arc<ClusterMetadata>| {
            metadata
                .brokers
                .get(&broker_id)
                .is_some_and(|broker| broker.incarnation == incarnation)
        };
        let seen = metadata
            .wait_for(includes)
            .await
            .expect("the sender lives in self");
        Arc::clone(&seen)
    }

    /// Waits until this broker has seen metadata `version`, or a while.
    async fn wait_for_version(&self, version: u64) {
        let mut metadata = self.subscribe();
        let seen = metadata.wait_for(|metadata| metadata.metadata_version >= version);
        let _ = tokio::time::timeout(OWN_CHANGE_WAIT, seen).await;
    }

    /// Follows the leader's metadata until `shutdown`: each fetch returns as
    /// soon as there is a newer version, or after a heartbeat interval with
    /// the quorum's state.
    pub async fn follow_metadata(self, shutdown: CancellationToken) {
        let interval = self.inner.heartbeat_interval;
        let mut failing_since: Option<Instant> = None;
        loop {
            let request = Request::FetchMetadata {
                after_version: self.metadata().metadata_version,
                wait_ms: interval.as_millis() as u64,
            };
            let deadline = Instant::now() + interval + FETCH_SLACK;
            let fetched = tokio::select! {
                _ = shutdown.cancelled() => return,
                fetched = self.call(&request, interval + FETCH_SLACK, deadline) => fetched,
            };
            match fetched {
                Ok(Response::Metadata { metadata, quorum }) => {
                    failing_since = None;
                    if let Some(metadata) = metadata {
                        self.inner.metadata.send_if_modified(|current| {
                            let newer = metadata.metadata_version > current.metadata_version;
                            if newer {
                                *current = Arc::new(metadata);
                            }
                            newer
                        });
                    }
                    self.inner.quorum.send_replace(Some(quorum));
                }
                failed => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= WAITING_LOG_INTERVAL {
                        warn!(answer = ?failed, "cannot fetch metadata from the controller");
                        failing_since = Some(Instant::now());
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(RETRY_BACKOFF) => {}
                    }
                }
            }
        }
    }

    /// Heartbeats every interval until `shutdown`, and marks the session
    /// dead the moment it would have expired on the controller: the session
    /// lasts `session_timeout` from when the last acknowledged heartbeat was
    /// sent, which is never later than the controller's own deadline.
    pub async fn heartbeat(
        self,
        broker_id: BrokerId,
        incarnation: Uuid,
        addresses: Addresses,
        session_timeout: Duration,
        shutdown: CancellationToken,
    ) {
        let interval = self.inner.heartbeat_interval;
        // (when the last acknowledged heartbeat was sent, session timeout)
        let (acknowledged, mut session) = watch::channel((Instant::now(), session_timeout));
        let watchdog = async {
            loop {
                let (sent, timeout) = *session.borrow_and_update();
                tokio::select! {
                    _ = tokio::time::sleep_until(sent + timeout) => {
                        if self.inner.session_alive.send_replace(false) {
                            warn!(%broker_id, "controller session lapsed: leading no partitions until it is renewed");
                        }
                        if session.changed().await.is_err() {
                            return;
                        }
                    }
                    changed = session.changed() => if changed.is_err() { return },
                }
            }
        };
        // A heartbeat may take longer than the interval between two: the
        // leader confirms its leadership with a quorum before it answers,
        // which a loaded disk or network slows down. Giving up on each after
        // one interval would let a slow but healthy controller fence every
        // broker; a quarter of the session leaves several tries per session.
        let patience = interval.max(session_timeout / 4);
        let beat = async {
            let mut failing_since: Option<Instant> = None;
            loop {
                let sent = Instant::now();
                let request = Request::Heartbeat {
                    broker_id,
                    incarnation,
                };
                match self.call(&request, patience, sent + patience).await {
                    Ok(Response::Heartbeat(HeartbeatReply::Alive { session_timeout_ms })) => {
                        failing_since = None;
                        acknowledged
                            .send_replace((sent, Duration::from_millis(session_timeout_ms)));
                        if !self.inner.session_alive.send_replace(true) {
                            info!(%broker_id, "controller session renewed");
                        }
                    }
                    Ok(Response::Heartbeat(HeartbeatReply::Unregistered)) => {
                        warn!(
                            %broker_id,
                            "the controller has no registration for this broker; registering again"
                        );
                        if let Err(refused) =
                            self.register(broker_id, &addresses, incarnation).await
                        {
                            error!(%broker_id, %refused, "registration refused");
                        }
                    }
                    Ok(Response::Heartbeat(HeartbeatReply::StaleIncarnation)) => {
                        error!(
                            %broker_id,
                            "another process registered with this broker id: this one leads nothing from now on"
                        );
                        self.inner.session_alive.send_replace(false);
                        return;
                    }
                    failed => {
                        let since = *failing_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= WAITING_LOG_INTERVAL {
                            warn!(answer = ?failed, "heartbeats to the controller are failing");
                            failing_since = Some(Instant::now());
                        }
                    }
                }
                tokio::time::sleep_until(sent + interval).await;
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = beat => {}
            _ = watchdog => {}
        }
    }
}
