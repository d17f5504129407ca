//! `Broker`: a whole single-node broker, embeddable in-process (tests, other
//! programs) and run by `logd`; both take the same path.

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
use crate::controller::metadata::MetadataCommand;
use crate::controller::{Controller, ControllerError};
use crate::handler::{now_ms, Context};
use crate::limits::RETENTION_CHECK_INTERVAL;
use crate::metrics::{self, Metrics};
use crate::replica::replica_manager::ReplicaManager;
use crate::server::listener;

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
}

/// A running broker.
pub struct Broker {
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    controller: Controller,
    replicas: Arc<ReplicaManager>,
    _lock: File,
}

impl Broker {
    /// Starts a broker: recovers its data, starts the controller, registers,
    /// opens its partitions and listens for clients.
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
        let cluster_id = cluster_id(dir).map_err(dir_error)?;

        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| BrokerError::Listen {
                    address: config.listen,
                    source,
                })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| BrokerError::Listen {
                address: config.listen,
                source,
            })?;
        let (advertised_host, advertised_port) = advertised(&config, local_addr);

        let controller = Controller::start_single_voter(
            config.node_id as u64,
            &config.controller_listen.to_string(),
            &dir.join(RAFT_DIR),
        )
        .await?;
        let register = MetadataCommand::RegisterBroker {
            broker_id: config.node_id,
            host: advertised_host.clone(),
            port: advertised_port,
            incarnation: Uuid::new_v4(),
        };
        controller
            .propose(register)
            .await?
            .map_err(|refused| BrokerError::Registration(refused.to_string()))?;

        let replicas = Arc::new(ReplicaManager::new(config.node_id, dir.clone()));
        let metadata = controller.metadata();
        replicas
            .remove_unknown_directories(&metadata)
            .map_err(dir_error)?;
        replicas.reconcile(&metadata);

        let shutdown = CancellationToken::new();
        let metrics = Arc::new(Metrics::default());
        let mut tasks = Vec::new();
        let metrics_addr = match config.metrics_listen {
            Some(address) => {
                let listener = TcpListener::bind(address)
                    .await
                    .map_err(|source| BrokerError::Listen { address, source })?;
                let bound = listener
                    .local_addr()
                    .map_err(|source| BrokerError::Listen { address, source })?;
                let serve = metrics::serve(
                    listener,
                    Arc::clone(&metrics),
                    controller.clone(),
                    Arc::clone(&replicas),
                    shutdown.clone(),
                );
                tasks.push(tokio::spawn(serve));
                Some(bound)
            }
            None => None,
        };
        let context = Arc::new(Context {
            broker_id: config.node_id,
            advertised_host,
            advertised_port,
            cluster_id,
            controller: controller.clone(),
            replicas: Arc::clone(&replicas),
            metrics,
        });
        tasks.push(tokio::spawn(listener::run(
            listener,
            context,
            shutdown.clone(),
        )));
        tasks.push(tokio::spawn(follow_metadata(
            controller.clone(),
            Arc::clone(&replicas),
            shutdown.clone(),
        )));
        tasks.push(tokio::spawn(enforce_retention(
            Arc::clone(&replicas),
            shutdown.clone(),
        )));
        info!(node_id = config.node_id, address = %local_addr, data_dir = %dir.display(), "broker started");
        Ok(Broker {
            local_addr,
            metrics_addr,
            shutdown,
            tasks,
            controller,
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
        if let Err(error) = self.controller.shutdown().await {
            error!(%error, "controller shutdown failed");
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

/// The cluster's id, created on first start and kept in the data directory.
fn cluster_id(dir: &Path) -> std::io::Result<String> {
    let path = dir.join(CLUSTER_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(id) => Ok(id.trim().to_string()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let id = Uuid::new_v4().simple().to_string();
            std::fs::write(&path, &id)?;
            Ok(id)
        }
        Err(error) => Err(error),
    }
}

/// Opens and closes partitions as the committed metadata changes.
async fn follow_metadata(
    controller: Controller,
    replicas: Arc<ReplicaManager>,
    shutdown: CancellationToken,
) {
    let mut metadata = controller.subscribe();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = metadata.changed() => {
                if changed.is_err() {
                    return;
                }
                let current = metadata.borrow_and_update().clone();
                replicas.reconcile(&current);
            }
        }
    }
}

async fn enforce_retention(replicas: Arc<ReplicaManager>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RETENTION_CHECK_INTERVAL) => {}
        }
        for partition in replicas.all() {
            if let Err(error) = partition.enforce_retention(now_ms()) {
                error!(partition = ?partition, %error, "retention failed");
            }
        }
    }
}
