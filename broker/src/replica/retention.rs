//! Removing old data from the partitions hosted here, on a blocking thread
//! (deleting files and compacting segments is disk work): retention by time
//! and size, compaction of compacted topics, and forgetting idempotent
//! producers idle past `producer.id.expiration.ms`.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::error;

use super::replica_manager::ReplicaManager;
use crate::clock::now_ms;

/// Every `interval`: forgets idle idempotent producers, deletes segments
/// past retention and compacts compacted topics, partition by partition.
pub async fn enforce_retention(
    replicas: Arc<ReplicaManager>,
    interval: Duration,
    producer_id_expiration: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let replicas = Arc::clone(&replicas);
        let pass = tokio::task::spawn_blocking(move || {
            for partition in replicas.all() {
                partition.expire_producers(now_ms(), producer_id_expiration);
                if let Err(error) = partition.enforce_retention(now_ms()) {
                    error!(partition = ?partition, %error, "retention failed");
                }
                if let Err(error) = partition.compact(now_ms()) {
                    error!(partition = ?partition, %error, "compaction failed");
                }
            }
        });
        if let Err(error) = pass.await {
            error!(%error, "a retention pass failed");
        }
    }
}
