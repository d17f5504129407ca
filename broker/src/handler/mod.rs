//! One thin module per Kafka API: turn a request into calls on the
//! controller and the replicas, and their results into a response.
//! Wire types stop here.

pub mod create_partitions;
pub mod create_topics;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_quorum;
pub mod fetch;
pub mod incremental_alter_configs;
pub mod list_offsets;
pub mod metadata;
pub mod produce;

use std::sync::Arc;

use kafka_protocol::protocol::StrBytes;

use crate::controller::metadata::{CommandOutcome, MetadataCommand};
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

/// How a metadata command went, as a Kafka error code (0 for success) and
/// message.
pub(crate) struct Committed {
    pub error_code: i16,
    pub error_message: Option<StrBytes>,
}

impl Committed {
    pub fn is_ok(&self) -> bool {
        self.error_code == 0
    }
}

/// Commits `command` through the controller. A refusal (topic exists, ...)
/// and a controller that cannot commit both become error codes with a
/// message saying why.
pub(crate) async fn commit(context: &Context, command: MetadataCommand) -> Committed {
    match context.controller.propose(command).await {
        Ok(outcome) => Committed::from(outcome),
        Err(error) => Committed {
            error_code: crate::server::error_code::REQUEST_TIMED_OUT,
            error_message: Some(str_bytes(error.to_string())),
        },
    }
}

impl From<CommandOutcome> for Committed {
    fn from(outcome: CommandOutcome) -> Self {
        match outcome {
            Ok(()) => Committed {
                error_code: 0,
                error_message: None,
            },
            Err(refused) => Committed {
                error_code: crate::server::error_code::for_metadata(&refused),
                error_message: Some(str_bytes(refused.to_string())),
            },
        }
    }
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
