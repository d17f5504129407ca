//! What admin calls take and answer: plain values, no connections.

use crate::assignor::TopicPartition;
use crate::cluster::TopicInfo;
use crate::error::Result;

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: Vec<(String, String)>,
}

impl NewTopic {
    pub fn new(name: &str, partitions: i32, replication_factor: i16) -> NewTopic {
        NewTopic {
            name: name.to_string(),
            partitions,
            replication_factor,
            configs: Vec::new(),
        }
    }

    pub fn config(mut self, key: &str, value: &str) -> NewTopic {
        self.configs.push((key.to_string(), value.to_string()));
        self
    }
}

/// Offsets of one partition as its leader reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub partition: i32,
    pub log_start_offset: i64,
    /// Records below it are committed and visible to consumers.
    pub high_watermark: i64,
    /// Below it no transaction is open: what `read_committed` consumers
    /// may read up to.
    pub last_stable_offset: i64,
}

/// A topic with the offsets of each partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    pub topic: TopicInfo,
    /// `Err` for a partition whose leader could not be asked.
    pub offsets: Vec<Result<PartitionOffsets, String>>,
}

/// One config entry of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    /// True when the value is the broker default, not set on the topic.
    pub is_default: bool,
    pub read_only: bool,
}

/// An idempotent producer as a partition's leader knows it
/// (DescribeProducers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerDescription {
    pub partition: i32,
    pub producer_id: i64,
    pub producer_epoch: i32,
    /// The sequence number of its last record in the partition.
    pub last_sequence: i32,
    /// The newest timestamp of its last batch.
    pub last_timestamp_ms: i64,
    /// Where its open transaction starts in the partition, if one is open.
    pub txn_start_offset: Option<i64>,
}

/// A transactional id as ListTransactions shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionListing {
    pub transactional_id: String,
    pub producer_id: i64,
    /// Kafka's state name (`Ongoing`, `PrepareCommit`, `CompleteAbort`...).
    pub state: String,
}

/// A transactional id as its coordinator describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionDescription {
    pub transactional_id: String,
    pub coordinator: i32,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub state: String,
    pub timeout_ms: i32,
    /// When the open transaction began, if one is open.
    pub start_ms: Option<i64>,
    pub partitions: Vec<TransactionPartition>,
}

/// A partition of an open transaction and the offsets it holds back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionPartition {
    pub topic: String,
    pub partition: i32,
    /// The transaction's first offset here (none before it wrote here).
    pub first_offset: Option<i64>,
    pub last_stable_offset: Option<i64>,
    pub high_watermark: Option<i64>,
}

/// A partition whose replicas are moving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionReassignment {
    pub topic: String,
    pub partition: i32,
    /// The replicas while it moves: the target's, then the ones leaving.
    pub replicas: Vec<i32>,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

/// How a leader election for one partition went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Election {
    pub topic: String,
    pub partition: i32,
    pub outcome: ElectionOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElectionOutcome {
    Elected,
    /// The wanted replica already leads.
    NotNeeded,
    /// Refused, with the broker's reason.
    Failed(String),
}

/// One broker's log directory: its file system's size and free space, and
/// the bytes each replica there holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDir {
    pub broker: i32,
    pub path: String,
    /// -1 when the broker cannot tell.
    pub total_bytes: i64,
    pub usable_bytes: i64,
    /// (topic, partition, bytes).
    pub replicas: Vec<(String, i32, i64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterBroker {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    pub fenced: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDescription {
    pub cluster_id: String,
    /// The broker acting as controller, if any.
    pub controller_id: Option<i32>,
    pub brokers: Vec<ClusterBroker>,
}

/// The metadata controller's Raft quorum (DescribeQuorum on the metadata
/// log, `__cluster_metadata-0`), as seen by the broker that answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumDescription {
    /// The controller voter leading the quorum, if one does.
    pub leader_id: Option<i32>,
    /// The Raft term (Kafka calls it the leader epoch).
    pub term: i32,
    /// The offset after the last applied metadata entry.
    pub high_watermark: i64,
    /// Each voter and the end of its metadata log (-1 when the answering
    /// broker does not know it).
    pub voters: Vec<(i32, i64)>,
}

/// A consumer group as ListGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    /// Empty, PreparingRebalance, CompletingRebalance, Stable.
    pub state: String,
    /// `consumer` for consumer groups; empty for a group with only offsets.
    pub protocol_type: String,
}

/// A consumer group as its coordinator describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    /// Empty, PreparingRebalance, CompletingRebalance, Stable, or Dead (no
    /// such group).
    pub state: String,
    pub protocol_type: String,
    /// The assignor of the current generation (while Stable).
    pub protocol: String,
    pub coordinator: i32,
    pub members: Vec<GroupMember>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Its partitions (while the group is Stable).
    pub assignment: Vec<TopicPartition>,
}
