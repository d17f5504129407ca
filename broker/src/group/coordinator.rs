//! The coordinator of the `__consumer_offsets` partitions this broker
//! leads: it finds the partition a group belongs to and hands out a [`Led`]
//! for it while this broker leads it (`led.rs` runs the requests), ticks the
//! groups' timers and expires old offsets.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::classic::GroupConfig;
use super::error::CoordinatorError;
use super::groups::Groups;
use super::led::Led;
use super::records::OFFSETS;
use crate::clock::now_ms;
use crate::coordinator_log::CoordinatorLog;
use crate::replica::replica_manager::ReplicaManager;

/// How often sessions and rebalance deadlines are checked: the slack on
/// every group timeout.
const TICK_INTERVAL: Duration = Duration::from_millis(100);

/// Finds the coordinator's partitions for groups, and keeps their time.
pub struct GroupCoordinator {
    /// The `__consumer_offsets` partitions this broker leads, with their
    /// groups, loaded lazily.
    log: CoordinatorLog<Groups>,
}

impl GroupCoordinator {
    pub fn new(replicas: Arc<ReplicaManager>, config: GroupConfig) -> Self {
        GroupCoordinator {
            log: CoordinatorLog::new(replicas, OFFSETS, config),
        }
    }

    pub fn config(&self) -> &GroupConfig {
        self.log.config()
    }

    /// The partition holding `group`, if this broker coordinates it;
    /// otherwise `NOT_COORDINATOR`.
    pub fn led_for(&self, group: &str) -> Result<Led, CoordinatorError> {
        Ok(self.log.led_for(group)?)
    }

    /// Partition `index` of the offsets topic, if this broker leads it.
    pub fn led(&self, index: i32) -> Result<Led, CoordinatorError> {
        Ok(self.log.led(index)?)
    }

    /// Every offsets partition this broker leads.
    pub fn all_led(&self) -> Vec<Led> {
        self.log.all_led()
    }

    /// The committed offsets of every group this broker coordinates.
    pub async fn committed_offsets(&self) -> Vec<CommittedOffset> {
        let mut committed = Vec::new();
        for led in self.all_led() {
            let read: Result<_, CoordinatorError> = led
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
            Duration::from_millis(self.config().offsets_retention_check_interval_ms.max(1) as u64);
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
            let mut deliveries = Vec::new();
            self.log
                .for_each_loaded(|led, groups| {
                    let now = now_ms();
                    deliveries.extend(
                        led.tick(groups, now)
                            .into_iter()
                            .map(|delivery| (led.clone(), delivery)),
                    );
                })
                .await;
            for (led, delivery) in deliveries {
                tokio::spawn(async move {
                    led.deliver(delivery).await;
                });
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
