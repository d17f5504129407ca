//! `Broker`: a whole broker, embeddable in-process (tests, other programs)
//! and run by `logd`; both take the same path. A broker whose id is among
//! the controller voters (or that has no other voters configured) also runs
//! a voter in-process.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};
use uuid::Uuid;

use strata_protocol::sasl::{Mechanism, ScramMechanism};

use crate::config::{BrokerConfig, ListenerConfig, SecurityProtocol};
use crate::controller::client::{Addresses, ControllerClient};
use crate::controller::metadata::{BrokerId, Endpoint};
use crate::controller::{server, Controller, ControllerError, ControllerSettings};
use crate::group::GroupCoordinator;
use crate::handler::Context;
use crate::metrics::Metrics;
use crate::peers::{PeerSecurity, Peers};
use crate::replica::replica_manager::ReplicaManager;
use crate::replica::{isr, retention};
use crate::security::tls::Tls;
use crate::server::connection::Listener;
use crate::server::{listener, scrape};
use crate::txn::markers::MarkerWriter;
use crate::txn::{ProducerIds, TxnCoordinator};

const LOCK_FILE: &str = ".lock";
const CLUSTER_ID_FILE: &str = "cluster-id";
const RAFT_DIR: &str = "__raft";

#[derive(Debug, Error)]
pub enum BrokerError {
    #[error("cannot use data directory {dir}: {source}")]
    DataDir { dir: String, source: std::io::Error },
    #[error("data directory {0} is in use by another broker")]
    DataDirLocked(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot load TLS settings: {0}")]
    Tls(std::io::Error),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Controller(#[from] ControllerError),
    #[error("the controller refused to register this broker: {0}")]
    Registration(String),
    #[error(
        "data directory {dir} belongs to cluster {stored}, but the controller quorum is cluster {current}"
    )]
    WrongCluster {
        dir: String,
        stored: String,
        current: String,
    },
}

/// A running broker.
pub struct Broker {
    /// Each listener's name and bound address, in configuration order.
    listener_addrs: Vec<(String, SocketAddr)>,
    tls: Option<Arc<Tls>>,
    metrics_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// The voter this broker runs, if it is one.
    voter: Option<Controller>,
    replicas: Arc<ReplicaManager>,
    _lock: File,
}

impl Broker {
    /// Starts a broker: starts its controller voter (if it is one),
    /// registers with the controller leader, opens its partitions and
    /// listens for clients. Registration waits for a controller quorum.
    pub async fn start(config: BrokerConfig) -> Result<Broker, BrokerError> {
        let dir = &config.data_dir;
        let dir_error = |source| BrokerError::DataDir {
            dir: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(dir_error)?;
        let lock = File::create(dir.join(LOCK_FILE)).map_err(dir_error)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(BrokerError::DataDirLocked(dir.display().to_string()));
            }
            Err(std::fs::TryLockError::Error(source)) => return Err(dir_error(source)),
        }

        let plan = ListenerPlan::check(&config)?;
        let tls = match &config.security.tls {
            Some(settings) => Some(Arc::new(Tls::load(settings).map_err(BrokerError::Tls)?)),
            None => None,
        };
        let mut bound_listeners = Vec::with_capacity(config.listeners.len());
        for listener in &config.listeners {
            let bound = bind(listener.address).await?;
            let address = bound_addr(&bound, listener.address)?;
            bound_listeners.push((listener, bound, address));
        }
        let endpoints: Vec<Endpoint> = bound_listeners
            .iter()
            .map(|(listener, _, address)| advertised(listener, *address))
            .collect();
        let inter_broker = endpoints
            .iter()
            .find(|endpoint| endpoint.listener == plan.inter_broker)
            .expect("checked: the inter-broker listener is configured");
        let addresses = Addresses {
            host: inter_broker.host.clone(),
            port: inter_broker.port,
            listeners: endpoints.clone(),
        };
        let peer_security = PeerSecurity::new(tls.clone().filter(|_| plan.inter_broker_tls));
        let controller_tls = tls.clone().filter(|_| config.security.controller_tls);
        let shutdown = CancellationToken::new();
        // A start that fails half way stops the tasks it already started.
        let stop_on_failure = shutdown.clone().drop_guard();
        let mut tasks = Vec::new();
        let metrics = Arc::new(Metrics::default());

        let me = BrokerId(config.node_id);
        let node_id = config.node_id as u64;
        let mut voters: BTreeMap<u64, String> = config
            .controllers
            .iter()
            .map(|(id, address)| (*id as u64, address.clone()))
            .collect();
        let voter = if voters.is_empty() || voters.contains_key(&node_id) {
            let listener = bind(config.controller_listen).await?;
            let bound = bound_addr(&listener, config.controller_listen)?;
            // Alone, this voter is found where it listens (port 0 included).
            voters.entry(node_id).or_insert_with(|| bound.to_string());
            let settings = ControllerSettings {
                broker_session_timeout: config.broker_session_timeout,
                auto_leader_rebalance: config.auto_leader_rebalance,
            };
            let voter = Controller::start(
                node_id,
                voters.clone(),
                &dir.join(RAFT_DIR),
                settings,
                controller_tls.clone(),
            )
            .await?;
            tasks.push(tokio::spawn(server::serve(
                listener,
                voter.clone(),
                controller_tls.clone(),
                shutdown.clone(),
            )));
            tasks.push(tokio::spawn(
                voter
                    .clone()
                    .supervise(Arc::clone(&metrics), shutdown.clone()),
            ));
            Some(voter)
        } else {
            None
        };

        let controller =
            ControllerClient::new(voters, config.broker_heartbeat_interval, controller_tls);
        tasks.push(tokio::spawn(
            controller.clone().follow_metadata(shutdown.clone()),
        ));
        let incarnation = Uuid::new_v4();
        controller
            .register(me, &addresses, incarnation)
            .await
            .map_err(BrokerError::Registration)?;
        let metadata = controller.registered(me, incarnation).await;
        let cluster_id = metadata
            .cluster_id
            .clone()
            .expect("the controller names the cluster before it registers brokers");
        check_cluster_id(dir, &cluster_id)?;
        tasks.push(tokio::spawn(controller.clone().heartbeat(
            me,
            incarnation,
            addresses,
            config.broker_session_timeout,
            shutdown.clone(),
        )));

        let replicas = Arc::new(ReplicaManager::new(me, dir.clone(), peer_security.clone()));
        // Deleting directories is disk work: off the runtime's threads,
        // which the controller voter in this process shares.
        let removed = {
            let (replicas, metadata) = (Arc::clone(&replicas), Arc::clone(&metadata));
            tokio::task::spawn_blocking(move || replicas.remove_unknown_directories(&metadata))
                .await
                .unwrap_or_else(|error| Err(std::io::Error::other(error)))
        };
        removed.map_err(dir_error)?;
        replicas.reconcile(Arc::clone(&metadata)).await;

        let groups = Arc::new(GroupCoordinator::new(Arc::clone(&replicas), config.group));
        tasks.push(tokio::spawn(
            Arc::clone(&groups).run_timers(shutdown.clone()),
        ));
        let metrics_addr = match config.metrics_listen {
            Some(address) => {
                let listener = bind(address).await?;
                let bound = bound_addr(&listener, address)?;
                let serve = scrape::serve(
                    listener,
                    tls.clone().filter(|_| config.security.metrics_tls),
                    Arc::clone(&metrics),
                    controller.clone(),
                    Arc::clone(&replicas),
                    Arc::clone(&groups),
                    shutdown.clone(),
                );
                tasks.push(tokio::spawn(serve));
                Some(bound)
            }
            None => None,
        };
        let peers = Arc::new(Peers::new(peer_security));
        let producer_ids = Arc::new(ProducerIds::new(me, controller.clone()));
        let markers = Arc::new(MarkerWriter::new(
            me,
            controller.clone(),
            Arc::clone(&replicas),
            Arc::clone(&groups),
            Arc::clone(&peers),
        ));
        let txns = Arc::new(TxnCoordinator::new(
            Arc::clone(&replicas),
            config.txn,
            Arc::clone(&producer_ids),
            Arc::clone(&markers),
        ));
        tasks.push(tokio::spawn(Arc::clone(&txns).run_timers(shutdown.clone())));
        let metrics_for_isr = Arc::clone(&metrics);
        let context = Arc::new(Context {
            broker_id: me,
            advertised_listeners: endpoints
                .iter()
                .map(|endpoint| {
                    format!(
                        "{}://{}:{}",
                        endpoint.listener, endpoint.host, endpoint.port
                    )
                })
                .collect::<Vec<_>>()
                .join(","),
            cluster_id,
            controller: controller.clone(),
            replicas: Arc::clone(&replicas),
            metrics,
            groups,
            txns,
            markers,
            peers,
            producer_ids,
            topic_defaults: config.topics,
            catch_up_throttle: Default::default(),
        });
        let mut listener_addrs = Vec::with_capacity(bound_listeners.len());
        for (settings, bound, address) in bound_listeners {
            let listener = Arc::new(Listener {
                name: settings.name.as_str().into(),
                security_protocol: settings.security_protocol,
                tls: settings.security_protocol.tls().then(|| {
                    Arc::clone(
                        tls.as_ref()
                            .expect("checked: TLS listeners have TLS settings"),
                    )
                }),
                sasl_mechanisms: if settings.security_protocol.sasl() {
                    plan.sasl_mechanisms.clone()
                } else {
                    Vec::new()
                },
            });
            info!(listener = %settings.name, security_protocol = settings.security_protocol.name(), %address, "listening");
            tasks.push(tokio::spawn(listener::run(
                bound,
                listener,
                Arc::clone(&context),
                shutdown.clone(),
            )));
            listener_addrs.push((settings.name.clone(), address));
        }
        let controller_for_isr = controller.clone();
        tasks.push(tokio::spawn(follow_metadata(
            controller,
            Arc::clone(&replicas),
            shutdown.clone(),
        )));
        tasks.push(tokio::spawn(retention::enforce_retention(
            Arc::clone(&replicas),
            config.retention_check_interval,
            config.producer_id_expiration,
            shutdown.clone(),
        )));
        tasks.push(tokio::spawn(isr::maintain_isr(
            controller_for_isr,
            me,
            Arc::clone(&replicas),
            Arc::clone(&metrics_for_isr),
            config.replica_lag_time_max,
            shutdown.clone(),
        )));
        info!(node_id = config.node_id, data_dir = %dir.display(), voter = voter.is_some(), "broker started");
        stop_on_failure.disarm();
        Ok(Broker {
            listener_addrs,
            tls,
            metrics_addr,
            shutdown,
            tasks,
            voter,
            replicas,
            _lock: lock,
        })
    }

    /// The address the first Kafka listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener_addrs[0].1
    }

    /// The address the listener called `name` is bound to.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listener_addrs
            .iter()
            .find(|(listener, _)| listener == name)
            .map(|(_, address)| *address)
    }

    /// Reads the TLS certificate, key and CA files again: new connections
    /// use them, open ones keep theirs. On failure the settings in use
    /// stay. `Ok(false)` when the broker has no TLS settings.
    pub fn reload_tls(&self) -> std::io::Result<bool> {
        match &self.tls {
            Some(tls) => tls.reload().map(|()| true),
            None => Ok(false),
        }
    }

    /// The address `/metrics` is served on, if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Stops listening, flushes every partition and stops the controller.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        self.replicas.close_all();
        if let Some(voter) = self.voter {
            if let Err(error) = voter.shutdown().await {
                error!(%error, "controller shutdown failed");
            }
        }
        info!("broker stopped");
    }
}

/// What the listeners of a configuration come to, once checked.
struct ListenerPlan {
    inter_broker: String,
    inter_broker_tls: bool,
    /// Offered on every SASL listener.
    sasl_mechanisms: Vec<Mechanism>,
}

impl ListenerPlan {
    /// Refuses a configuration that cannot work or would be unsafe:
    /// no listener, two with one name, TLS without a certificate, an
    /// inter-broker listener that is missing or needs SASL (brokers
    /// authenticate to each other with their certificates), PLAIN where
    /// passwords would travel in the clear.
    fn check(config: &BrokerConfig) -> Result<ListenerPlan, BrokerError> {
        let refuse = |reason: String| Err(BrokerError::Config(reason));
        let Some(first) = config.listeners.first() else {
            return refuse("no listener is configured".to_string());
        };
        let mut names = std::collections::BTreeSet::new();
        for listener in &config.listeners {
            if !names.insert(listener.name.as_str()) {
                return refuse(format!("two listeners are called {}", listener.name));
            }
            if listener.security_protocol.tls() && config.security.tls.is_none() {
                return refuse(format!(
                    "listener {} uses TLS ({}), but no certificate and key are configured (--tls-cert, --tls-key)",
                    listener.name,
                    listener.security_protocol.name()
                ));
            }
        }
        let inter_broker = config
            .inter_broker_listener
            .clone()
            .unwrap_or_else(|| first.name.clone());
        let Some(inter_broker_listener) = config
            .listeners
            .iter()
            .find(|listener| listener.name == inter_broker)
        else {
            return refuse(format!(
                "the inter-broker listener {inter_broker} is not among the listeners"
            ));
        };
        if inter_broker_listener.security_protocol.sasl() {
            return refuse(format!(
                "the inter-broker listener {inter_broker} uses SASL; brokers connect to each other over PLAINTEXT or SSL (with their certificates)"
            ));
        }
        let security = &config.security;
        if security.controller_tls && !security.tls.as_ref().is_some_and(|tls| tls.ca.is_some()) {
            return refuse(
                "the controller listener's TLS needs a certificate, a key and the CA that signs every broker's certificate (--tls-cert, --tls-key, --tls-ca)".to_string(),
            );
        }
        if security.metrics_tls && security.tls.is_none() {
            return refuse(
                "HTTPS for /metrics needs a certificate and a key (--tls-cert, --tls-key)"
                    .to_string(),
            );
        }
        let sasl_mechanisms = if config.security.sasl_mechanisms.is_empty() {
            vec![
                Mechanism::Scram(ScramMechanism::Sha512),
                Mechanism::Scram(ScramMechanism::Sha256),
            ]
        } else {
            config.security.sasl_mechanisms.clone()
        };
        if sasl_mechanisms.contains(&Mechanism::Plain) && !config.security.plain_without_tls {
            if let Some(listener) = config
                .listeners
                .iter()
                .find(|listener| listener.security_protocol == SecurityProtocol::SaslPlaintext)
            {
                return refuse(format!(
                    "SASL PLAIN on listener {} (SASL_PLAINTEXT) would send passwords in the clear; use SASL_SSL, a SCRAM mechanism, or allow it explicitly (--sasl-plain-without-tls)",
                    listener.name
                ));
            }
        }
        Ok(ListenerPlan {
            inter_broker,
            inter_broker_tls: inter_broker_listener.security_protocol.tls(),
            sasl_mechanisms,
        })
    }
}

/// Where clients of `listener` (bound at `bound`) are told to connect.
fn advertised(listener: &ListenerConfig, bound: SocketAddr) -> Endpoint {
    let (host, port) = match listener
        .advertise
        .as_deref()
        .and_then(|address| address.rsplit_once(':'))
    {
        Some((host, port)) => (host.to_string(), port.parse().unwrap_or(bound.port())),
        None => (bound.ip().to_string(), bound.port()),
    };
    Endpoint {
        listener: listener.name.clone(),
        host,
        port,
    }
}

async fn bind(address: SocketAddr) -> Result<TcpListener, BrokerError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| BrokerError::Listen { address, source })
}

fn bound_addr(listener: &TcpListener, address: SocketAddr) -> Result<SocketAddr, BrokerError> {
    listener
        .local_addr()
        .map_err(|source| BrokerError::Listen { address, source })
}

/// Records which cluster the data directory belongs to on first start, and
/// refuses to mix data of two clusters afterwards.
fn check_cluster_id(dir: &Path, cluster_id: &str) -> Result<(), BrokerError> {
    let path = dir.join(CLUSTER_ID_FILE);
    let dir_error = |source| BrokerError::DataDir {
        dir: dir.display().to_string(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(stored) if stored.trim() == cluster_id => Ok(()),
        Ok(stored) => Err(BrokerError::WrongCluster {
            dir: dir.display().to_string(),
            stored: stored.trim().to_string(),
            current: cluster_id.to_string(),
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&path, cluster_id).map_err(dir_error)
        }
        Err(error) => Err(dir_error(error)),
    }
}

/// Opens and closes partitions, and takes and gives up leadership, as the
/// metadata and this broker's controller session change.
async fn follow_metadata(
    controller: ControllerClient,
    replicas: Arc<ReplicaManager>,
    shutdown: CancellationToken,
) {
    let mut metadata = controller.subscribe();
    let mut session = controller.session();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = metadata.changed() => if changed.is_err() { return },
            changed = session.changed() => if changed.is_err() { return },
        }
        replicas.set_session_alive(*session.borrow_and_update());
        let current = metadata.borrow_and_update().clone();
        replicas.reconcile(current).await;
    }
}
