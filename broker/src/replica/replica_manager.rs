//! The partitions this broker hosts, kept in step with the controller's
//! metadata: partitions assigned here are opened, partitions of deleted
//! topics are closed and their directories removed, and each partition
//! leads exactly when the metadata names this broker its leader and this
//! broker's controller session is alive, and follows (the fetchers copy
//! it from its leader) when another broker leads it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::Notify;
use tracing::{error, info};

use super::fetcher::{Assignment, Fetchers};
use super::partition::{Partition, Role};
use super::TopicPartition;
use crate::controller::metadata::{BrokerId, ClusterMetadata, NO_LEADER};
use crate::peers::PeerSecurity;
use crate::topic_config::TopicConfig;

pub struct ReplicaManager {
    broker_id: BrokerId,
    data_dir: PathBuf,
    partitions: RwLock<HashMap<TopicPartition, Arc<Partition>>>,
    /// Notified whenever any partition's high watermark moves (wakes fetches).
    visible: Arc<Notify>,
    /// Notified whenever a partition led here appends (wakes followers).
    appended: Arc<Notify>,
    fetchers: Fetchers,
    /// False once this broker's controller session lapsed: it may have been
    /// fenced and its partitions given to others, so it leads nothing.
    session_alive: AtomicBool,
    /// Held for a whole reconciliation (never by requests).
    reconciling: Mutex<()>,
}

impl ReplicaManager {
    /// `security` is how fetchers reach the leaders they copy from.
    pub fn new(broker_id: BrokerId, data_dir: PathBuf, security: PeerSecurity) -> Self {
        ReplicaManager {
            broker_id,
            data_dir,
            partitions: RwLock::new(HashMap::new()),
            visible: Arc::new(Notify::new()),
            appended: Arc::new(Notify::new()),
            fetchers: Fetchers::new(broker_id, security),
            session_alive: AtomicBool::new(true),
            reconciling: Mutex::new(()),
        }
    }

    /// Where partitions live.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// Records whether this broker's controller session is alive; the next
    /// [`ReplicaManager::reconcile`] applies it.
    pub fn set_session_alive(&self, alive: bool) {
        self.session_alive.store(alive, Ordering::Release);
    }

    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        self.partitions
            .read()
            .expect("partitions lock")
            .get(&(topic.to_string(), index))
            .cloned()
    }

    pub fn all(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .expect("partitions lock")
            .values()
            .cloned()
            .collect()
    }

    /// Notified whenever newly visible records may satisfy a waiting fetch.
    pub fn visible(&self) -> &Notify {
        &self.visible
    }

    /// Notified whenever a partition led here appends.
    pub fn appended(&self) -> &Notify {
        &self.appended
    }

    fn directory(&self, topic: &str, index: i32) -> PathBuf {
        self.data_dir.join(format!("{topic}-{index}"))
    }

    /// Opens what `metadata` assigns here, closes what it no longer lists,
    /// sets each partition's role and tells the fetchers what to copy. Runs
    /// on a blocking thread: opening a partition recovers its log, closing
    /// one flushes it, and a removed one's directory is deleted.
    pub async fn reconcile(self: &Arc<Self>, metadata: Arc<ClusterMetadata>) {
        let replicas = Arc::clone(self);
        let reconciled =
            tokio::task::spawn_blocking(move || replicas.reconcile_blocking(&metadata)).await;
        if let Err(error) = reconciled {
            error!(%error, "reconciling partitions with the metadata failed");
        }
    }

    /// [`ReplicaManager::reconcile`] on the calling thread. The partitions'
    /// map is locked only to take partitions out and put opened ones in:
    /// requests looking partitions up never wait for a log's recovery.
    pub fn reconcile_blocking(&self, metadata: &ClusterMetadata) {
        // One reconciliation at a time, so a partition is opened once.
        let _reconciling = self.reconciling.lock().expect("reconcile lock");
        let session_alive = self.session_alive.load(Ordering::Acquire);
        let mut removed = Vec::new();
        self.partitions
            .write()
            .expect("partitions lock")
            .retain(|(topic, index), partition| {
                let record = metadata
                    .topics
                    .get(topic)
                    .filter(|record| record.topic_id == partition.topic_id);
                let assigned = record.and_then(|record| record.partitions.get(*index as usize));
                let hosted_here =
                    assigned.is_some_and(|assigned| assigned.replicas.contains(&self.broker_id));
                if !hosted_here {
                    removed.push((
                        topic.clone(),
                        *index,
                        Arc::clone(partition),
                        assigned.is_some(),
                    ));
                }
                hosted_here
            });
        for (topic, index, partition, moved) in removed {
            partition.close();
            let dir = self.directory(&topic, index);
            let why = if moved {
                "removing a replica moved to other brokers"
            } else {
                "removing partition of a deleted topic"
            };
            info!(dir = %dir.display(), "{why}");
            if let Err(error) = std::fs::remove_dir_all(&dir) {
                error!(dir = %dir.display(), %error, "cannot remove partition directory");
            }
        }
        // Each topic's configs, parsed (and an invalid one logged) once.
        let configs: HashMap<&str, TopicConfig> = metadata
            .topics
            .values()
            .map(|topic| {
                (
                    topic.name.as_str(),
                    topic_config(&topic.name, &topic.configs),
                )
            })
            .collect();
        let mut opened = Vec::new();
        for topic in metadata.topics.values() {
            for (index, assignment) in topic.partitions.iter().enumerate() {
                let index = index as i32;
                if !assignment.replicas.contains(&self.broker_id)
                    || self.partition(&topic.name, index).is_some()
                {
                    continue;
                }
                let partition = Partition::open(
                    self.directory(&topic.name, index),
                    topic.name.clone(),
                    index,
                    topic.topic_id,
                    self.broker_id,
                    configs[topic.name.as_str()].clone(),
                    Arc::clone(&self.visible),
                    Arc::clone(&self.appended),
                );
                match partition {
                    Ok(partition) => opened.push(((topic.name.clone(), index), partition)),
                    Err(error) => {
                        error!(topic = topic.name, partition = index, %error, "cannot open partition; it is not served");
                    }
                }
            }
        }
        let mut partitions = self.partitions.write().expect("partitions lock");
        partitions.extend(opened);
        let mut follow: HashMap<BrokerId, Assignment> = HashMap::new();
        for topic in metadata.topics.values() {
            let config = &configs[topic.name.as_str()];
            for (index, assignment) in topic.partitions.iter().enumerate() {
                let key = (topic.name.clone(), index as i32);
                let Some(partition) = partitions.get(&key) else {
                    continue;
                };
                if let Err(error) = partition.update_config(config) {
                    error!(topic = topic.name, partition = index, %error, "cannot apply altered topic configs");
                }
                let role = if !session_alive || assignment.leader == NO_LEADER {
                    Role::Idle
                } else if assignment.leader == self.broker_id {
                    Role::Leader {
                        leader_epoch: assignment.leader_epoch,
                        replicas: &assignment.replicas,
                        isr: &assignment.isr,
                        partition_epoch: assignment.partition_epoch,
                    }
                } else {
                    Role::Follower
                };
                partition.set_role(role);
                if role == Role::Follower {
                    follow
                        .entry(assignment.leader)
                        .or_default()
                        .insert(key, (assignment.leader_epoch, Arc::clone(partition)));
                }
            }
        }
        drop(partitions);
        let plan = follow
            .into_iter()
            .filter_map(|(leader, assignment)| {
                let broker = metadata.brokers.get(&leader)?;
                Some((
                    leader,
                    (format!("{}:{}", broker.host, broker.port), assignment),
                ))
            })
            .collect();
        self.fetchers.update(plan);
    }

    /// Removes directories of partitions the metadata does not place on
    /// this broker (topics deleted, replicas moved while it was down).
    pub fn remove_unknown_directories(&self, metadata: &ClusterMetadata) -> std::io::Result<()> {
        let Ok(entries) = std::fs::read_dir(&self.data_dir) else {
            return Ok(());
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((topic, index)) = name.rsplit_once('-') else {
                continue;
            };
            let Ok(index) = index.parse::<usize>() else {
                continue;
            };
            let hosted_here = metadata
                .topics
                .get(topic)
                .and_then(|record| record.partitions.get(index))
                .is_some_and(|assigned| assigned.replicas.contains(&self.broker_id));
            if !hosted_here && entry.file_type()?.is_dir() && entry.path().join("topic-id").exists()
            {
                info!(dir = %entry.path().display(), "removing the directory of a partition not hosted here (topic deleted or replica moved)");
                std::fs::remove_dir_all(entry.path())?;
            }
        }
        Ok(())
    }

    /// Stops copying, then flushes and closes every partition.
    pub fn close_all(&self) {
        self.fetchers.stop_all();
        for partition in self
            .partitions
            .write()
            .expect("partitions lock")
            .drain()
            .map(|(_, partition)| partition)
        {
            partition.close();
        }
    }
}

/// A topic's committed configs, or the defaults (logged) if they are invalid.
fn topic_config(topic: &str, overrides: &BTreeMap<String, String>) -> TopicConfig {
    TopicConfig::from_overrides(overrides).unwrap_or_else(|error| {
        error!(topic, %error, "committed topic config is invalid; using defaults");
        TopicConfig::default()
    })
}
