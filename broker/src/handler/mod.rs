//! One thin module per Kafka API: turn a request into calls on the
//! controller and the replicas, and their results into a response.
//! Wire types stop here.

pub mod add_offsets_to_txn;
pub mod add_partitions_to_txn;
pub mod alter_configs;
pub mod alter_user_scram_credentials;
pub mod consumer_group_describe;
pub mod consumer_group_heartbeat;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod describe_producers;
pub mod describe_quorum;
pub mod describe_transactions;
pub mod describe_user_scram_credentials;
pub mod elect_leaders;
pub mod end_txn;
pub mod error_code;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod list_transactions;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod partition_reassignments;
pub mod produce;
pub mod sync_group;
pub mod txn_offset_commit;
pub mod write_txn_markers;

use std::sync::Arc;

use kafka_protocol::protocol::StrBytes;

use crate::controller::client::ControllerClient;
use crate::controller::metadata::{BrokerId, LeaderEpoch};
use crate::controller::metadata::{CommandOutcome, MetadataCommand};
use crate::group::GroupCoordinator;
use crate::metrics::Metrics;
use crate::peers::Peers;
use crate::replica::partition::Partition;
use crate::replica::replica_manager::ReplicaManager;
use crate::txn::markers::MarkerWriter;
use crate::txn::{ProducerIds, TxnCoordinator};

/// What every handler may use.
pub struct Context {
    pub broker_id: BrokerId,
    /// Kafka's `advertised.listeners`: `NAME://HOST:PORT,...`.
    pub advertised_listeners: String,
    pub cluster_id: String,
    pub controller: ControllerClient,
    pub replicas: Arc<ReplicaManager>,
    pub metrics: Arc<Metrics>,
    pub groups: Arc<GroupCoordinator>,
    pub txns: Arc<TxnCoordinator>,
    /// Writes the markers of WriteTxnMarkers on this broker's partitions.
    pub markers: Arc<MarkerWriter>,
    /// Connections to other brokers (transaction checks).
    pub peers: Arc<Peers>,
    pub producer_ids: Arc<ProducerIds>,
    pub topic_defaults: crate::config::TopicDefaults,
    /// Caps how fast replicas a reassignment adds copy from this leader.
    pub catch_up_throttle: crate::replica::throttle::CatchUpThrottle,
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
            error_code: error_code::REQUEST_TIMED_OUT,
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
                error_code: error_code::for_metadata(&refused),
                error_message: Some(str_bytes(refused.to_string())),
            },
        }
    }
}

impl From<BrokerId> for kafka_protocol::messages::BrokerId {
    fn from(broker: BrokerId) -> Self {
        kafka_protocol::messages::BrokerId(broker.0)
    }
}

impl Context {
    /// Brings this broker's partitions in line with the metadata as it is
    /// now (opened, closed, leading or following), so the answer to a
    /// request that changed topics holds on this broker already.
    pub async fn reconcile_replicas(&self) {
        self.replicas.reconcile(self.controller.metadata()).await;
    }

    /// Partition `index` of `topic` with the leader epoch it is led in, if
    /// this broker leads it; otherwise the error code that tells the client
    /// what to do: the partition does not exist, or (it exists but this
    /// broker does not lead it) ask the metadata for its leader again.
    pub fn leader_of(&self, topic: &str, index: i32) -> Result<(Arc<Partition>, LeaderEpoch), i16> {
        if let Some(partition) = self.replicas.partition(topic, index) {
            return match partition.leader_epoch() {
                Some(epoch) => Ok((partition, epoch)),
                None => Err(error_code::NOT_LEADER_OR_FOLLOWER),
            };
        }
        let exists = self.controller.metadata().partition(topic, index).is_some();
        Err(if exists {
            error_code::NOT_LEADER_OR_FOLLOWER
        } else {
            error_code::UNKNOWN_TOPIC_OR_PARTITION
        })
    }

    /// As [`Self::leader_of`], for a client that names the leader epoch it
    /// believes current (KIP-320; -1: it does not say): an older one is
    /// FENCED_LEADER_EPOCH (its metadata is stale), a newer one
    /// UNKNOWN_LEADER_EPOCH (this broker's is).
    pub fn leader_in(
        &self,
        topic: &str,
        index: i32,
        current_leader_epoch: i32,
    ) -> Result<(Arc<Partition>, LeaderEpoch), i16> {
        let (partition, leader_epoch) = self.leader_of(topic, index)?;
        if current_leader_epoch >= 0 && current_leader_epoch != leader_epoch.0 {
            return Err(if current_leader_epoch < leader_epoch.0 {
                error_code::FENCED_LEADER_EPOCH
            } else {
                error_code::UNKNOWN_LEADER_EPOCH
            });
        }
        Ok((partition, leader_epoch))
    }

    /// The broker clients are told is the controller: the metadata quorum's
    /// leader (every voter is a broker), or this broker while none is known.
    pub fn controller_id(&self) -> BrokerId {
        self.controller
            .quorum()
            .map_or(self.broker_id, |quorum| BrokerId(quorum.leader as i32))
    }
}

pub(crate) fn str_bytes(value: impl Into<String>) -> StrBytes {
    StrBytes::from_string(value.into())
}
