//! The coordinator of the `__consumer_offsets` partitions this broker
//! leads: it finds the partition a group belongs to and hands out a [`Led`]
//! for it while this broker leads it (`led.rs` runs the requests), ticks the
//! groups' timers and expires old offsets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::classic::GroupConfig;
use super::error::CoordinatorError;
use super::led::{Led, Loaded};
use super::records::{partition_for, OFFSETS_TOPIC, OFFSETS_TOPIC_PARTITIONS};
use crate::clock::now_ms;
use crate::replica::replica_manager::ReplicaManager;

/// How often sessions and rebalance deadlines are checked: the slack on
/// every group timeout.
const TICK_INTERVAL: Duration = Duration::from_millis(100);

/// Finds the coordinator's partitions for groups, and keeps their time.
pub struct GroupCoordinator {
    replicas: Arc<ReplicaManager>,
    config: GroupConfig,
    /// Per `__consumer_offsets` partition: its groups, loaded lazily.
    loaded: Mutex<HashMap<i32, Arc<tokio::sync::Mutex<Option<Loaded>>>>>,
}

impl GroupCoordinator {
    pub fn new(replicas: Arc<ReplicaManager>, config: GroupConfig) -> Self {
        GroupCoordinator {
            replicas,
            config,
            loaded: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// The partition holding `group`, if this broker coordinates it;
    /// otherwise `NOT_COORDINATOR`.
    pub fn led_for(&self, group: &str) -> Result<Led, CoordinatorError> {
        self.led(partition_for(group))
    }

    /// Partition `index` of the offsets topic, if this broker leads it.
    pub fn led(&self, index: i32) -> Result<Led, CoordinatorError> {
        let partition = self
            .replicas
            .partition(OFFSETS_TOPIC, index)
            .ok_or(CoordinatorError::NotCoordinator)?;
        let leader_epoch = partition
            .leader_epoch()
            .ok_or(CoordinatorError::NotCoordinator)?;
        let loaded = Arc::clone(
            self.loaded
                .lock()
                .expect("coordinator lock")
                .entry(index)
                .or_default(),
        );
        Ok(Led {
            partition,
            leader_epoch,
            config: self.config,
            loaded,
        })
    }

    /// Every offsets partition this broker leads.
    pub fn all_led(&self) -> Vec<Led> {
        (0..OFFSETS_TOPIC_PARTITIONS as i32)
            .filter_map(|index| self.led(index).ok())
            .collect()
    }

    /// The committed offsets of every group this broker coordinates.
    pub async fn committed_offsets(&self) -> Vec<CommittedOffset> {
        let mut committed = Vec::new();
        for led in self.all_led() {
            let read = led
                .read(|groups| {
                    groups
                        .shard
                        .groups()
                        .flat_map(|(group, records)| {
                            records.offsets.iter().map(|((topic, partition), offset)| {
                                CommittedOffset {
                                    group: group.clone(),
                                    topic: topic.clone(),
                                    partition: *partition,
                                    offset: offset.value.offset,
                                }
                            })
                        })
                        .collect::<Vec<_>>()
                })
                .await;
            // A partition whose leadership moved meanwhile is reported by
            // its new coordinator.
            committed.extend(read.unwrap_or_default());
        }
        committed
    }

    /// Every `TICK_INTERVAL` until `shutdown`: expires sessions, ends
    /// rebalances whose time is up, and drops the groups of partitions this
    /// broker no longer leads (their parked requests learn it).
    pub async fn run_timers(self: Arc<Self>, shutdown: CancellationToken) {
        let mut interval = tokio::time::interval(TICK_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let expiry_interval =
            Duration::from_millis(self.config.offsets_retention_check_interval_ms.max(1) as u64);
        let mut last_expiry = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            if last_expiry.elapsed() >= expiry_interval {
                last_expiry = tokio::time::Instant::now();
                for led in self.all_led() {
                    tokio::spawn(async move {
                        match led.expire_offsets().await {
                            Ok(0) => {}
                            Ok(records) => {
                                info!(partition = ?led.partition, records, "expired the committed offsets of empty groups (offsets.retention.minutes)")
                            }
                            Err(error) => {
                                warn!(partition = ?led.partition, ?error, "cannot expire committed offsets")
                            }
                        }
                    });
                }
            }
            let partitions: Vec<(i32, Arc<tokio::sync::Mutex<Option<Loaded>>>)> = self
                .loaded
                .lock()
                .expect("coordinator lock")
                .iter()
                .map(|(index, loaded)| (*index, Arc::clone(loaded)))
                .collect();
            for (index, loaded) in partitions {
                let mut loaded = loaded.lock().await;
                let Some(current) = loaded.as_mut() else {
                    continue;
                };
                let led = match self.led(index) {
                    Ok(led) if led.leader_epoch == current.leader_epoch => led,
                    _ => {
                        info!(
                            partition = index,
                            groups = current.groups.classic.len(),
                            "no longer the coordinator of this __consumer_offsets partition's groups"
                        );
                        *loaded = None;
                        continue;
                    }
                };
                let deliveries = led.tick(&mut current.groups, now_ms());
                drop(loaded);
                for delivery in deliveries {
                    let led = led.clone();
                    tokio::spawn(async move {
                        led.deliver(delivery).await;
                    });
                }
            }
        }
    }
}

/// A group's committed offset of one partition, as `/metrics` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}
