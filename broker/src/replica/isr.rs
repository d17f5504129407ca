//! The leader's side of ISR maintenance: every so often, each partition led
//! here proposes the ISR change its followers' progress calls for (see
//! `in_sync` for the decision); the change takes effect when the controller
//! commits it.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::replica_manager::ReplicaManager;
use crate::controller::client::ControllerClient;
use crate::controller::metadata::{BrokerId, MetadataCommand};
use crate::metrics::Metrics;

/// As leader, proposes the ISR changes followers' progress calls for: a
/// follower not caught up for `lag_max` leaves, a caught-up one returns.
/// The change takes effect when the controller commits it.
pub async fn maintain_isr(
    controller: ControllerClient,
    me: BrokerId,
    replicas: Arc<ReplicaManager>,
    metrics: Arc<Metrics>,
    lag_max: Duration,
    shutdown: CancellationToken,
) {
    let interval = (lag_max / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        for partition in replicas.all() {
            let (Some(change), Some(leader_epoch)) =
                (partition.isr_change_due(lag_max), partition.leader_epoch())
            else {
                continue;
            };
            let controller = controller.clone();
            let metrics = Arc::clone(&metrics);
            let before = partition.isr_len();
            tokio::spawn(async move {
                let command = MetadataCommand::AlterIsr {
                    topic: partition.topic.clone(),
                    partition: partition.index as u32,
                    leader_id: me,
                    leader_epoch,
                    partition_epoch: change.partition_epoch,
                    isr: change.isr.clone(),
                };
                match controller.propose(command).await {
                    Ok(Ok(())) => {
                        info!(partition = ?partition, isr = ?change.isr, "ISR changed");
                        metrics.record_isr_change(before, change.isr.len());
                    }
                    Ok(Err(refused)) => {
                        info!(partition = ?partition, %refused, "ISR change refused")
                    }
                    Err(error) => warn!(partition = ?partition, %error, "ISR change not committed"),
                }
                partition.isr_change_settled();
            });
        }
    }
}
