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

use crate::config::BrokerConfig;
use crate::controller::client::ControllerClient;
use crate::controller::metadata::BrokerId;
use crate::controller::{server, Controller, ControllerError, ControllerSettings};
use crate::group::GroupCoordinator;
use crate::handler::Context;
use crate::metrics::Metrics;
use crate::peers::Peers;
use crate::replica::replica_manager::ReplicaManager;
use crate::replica::{isr, retention};
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
    local_addr: SocketAddr,
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

        let listener = bind(config.listen).await?;
        let local_addr = bound_addr(&listener, config.listen)?;
        let (advertised_host, advertised_port) = advertised(&config, local_addr);
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
            let voter =
                Controller::start(node_id, voters.clone(), &dir.join(RAFT_DIR), settings).await?;
            tasks.push(tokio::spawn(server::serve(
                listener,
                voter.clone(),
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

        let controller = ControllerClient::new(voters, config.broker_heartbeat_interval);
        tasks.push(tokio::spawn(
            controller.clone().follow_metadata(shutdown.clone()),
        ));
        let incarnation = Uuid::new_v4();
        controller
            .register(me, &advertised_host, advertised_port, incarnation)
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
            advertised_host.clone(),
            advertised_port,
            config.broker_session_timeout,
            shutdown.clone(),
        )));

        let replicas = Arc::new(ReplicaManager::new(me, dir.clone()));
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
        let peers = Arc::new(Peers::default());
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
            advertised_host,
            advertised_port,
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
        tasks.push(tokio::spawn(listener::run(
            listener,
            context,
            shutdown.clone(),
        )));
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
        info!(node_id = config.node_id, address = %local_addr, data_dir = %dir.display(), voter = voter.is_some(), "broker started");
        stop_on_failure.disarm();
        Ok(Broker {
            local_addr,
            metrics_addr,
            shutdown,
            tasks,
            voter,
            replicas,
            _lock: lock,
        })
    }

    /// The address the Kafka listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
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

fn advertised(config: &BrokerConfig, local_addr: SocketAddr) -> (String, u16) {
    match config
        .advertise
        .as_deref()
        .and_then(|address| address.rsplit_once(':'))
    {
        Some((host, port)) => (host.to_string(), port.parse().unwrap_or(local_addr.port())),
        None => (local_addr.ip().to_string(), local_addr.port()),
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
