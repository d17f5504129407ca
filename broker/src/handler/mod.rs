//! One thin module per Kafka API: turn a request into calls on the
//! controller and the replicas, and their results into a response.
//! Wire types stop here.

pub mod create_partitions;
pub mod create_topics;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod fetch;
pub mod list_offsets;
pub mod metadata;
pub mod produce;

use std::sync::Arc;

use kafka_protocol::protocol::StrBytes;

use crate::controller::Controller;
use crate::metrics::Metrics;
use crate::replica::replica_manager::ReplicaManager;

/// What every handler may use.
pub struct Context {
    pub broker_id: i32,
    /// The host and port clients are told to connect to.
    pub advertised_host: String,
    pub advertised_port: u16,
    pub cluster_id: String,
    pub controller: Controller,
    pub replicas: Arc<ReplicaManager>,
    pub metrics: Arc<Metrics>,
}

pub(crate) fn str_bytes(value: impl Into<String>) -> StrBytes {
    StrBytes::from_string(value.into())
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}
