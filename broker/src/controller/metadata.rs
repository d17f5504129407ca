//! Cluster metadata and the commands that change it: the controller's state
//! machine, as a pure decision core. `apply` does no I/O and reads no clock;
//! everything it needs is in the command, so every voter that applies the same
//! log reaches the same state.
//!
//! Invariants, checked by `apply` and asserted in tests:
//! - a partition's replicas are distinct registered brokers, its ISR is a
//!   subset of them, and its leader (when it has one) is in the ISR;
//! - `metadata_version` grows by one with every command that changes anything.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

/// A broker's id (Kafka's `node.id`; an `i32` on the wire).
pub type BrokerId = i32;

/// Leader of a partition that has none (Kafka's -1).
pub const NO_LEADER: BrokerId = -1;

/// Most partitions one topic may have.
pub const PARTITIONS_PER_TOPIC_MAX: u32 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRecord {
    pub broker_id: BrokerId,
    pub host: String,
    pub port: u16,
    /// Changes every time the broker process starts, so a restarted broker
    /// cannot act on leadership granted to its previous life.
    pub incarnation: Uuid,
    pub fenced: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    pub replicas: Vec<BrokerId>,
    pub leader: BrokerId,
    pub leader_epoch: i32,
    pub isr: Vec<BrokerId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub topic_id: Uuid,
    pub name: String,
    /// Topic-level overrides (`retention.ms`, ...), validated before proposal.
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<PartitionRecord>,
}

/// Everything the controller owns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMetadata {
    pub brokers: BTreeMap<BrokerId, BrokerRecord>,
    pub topics: BTreeMap<String, TopicRecord>,
    pub metadata_version: u64,
}

/// A change to the metadata, proposed through Raft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataCommand {
    RegisterBroker {
        broker_id: BrokerId,
        host: String,
        port: u16,
        incarnation: Uuid,
    },
    CreateTopic {
        name: String,
        topic_id: Uuid,
        partition_count: u32,
        replication_factor: u16,
        configs: BTreeMap<String, String>,
    },
    DeleteTopic {
        name: String,
    },
    CreatePartitions {
        name: String,
        partition_count: u32,
    },
    AlterTopicConfigs {
        name: String,
        configs: BTreeMap<String, String>,
    },
}

/// Why a command was refused. Refusals are results, committed like any
/// other, so every voter refuses the same commands.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum MetadataError {
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
    #[error("invalid topic name '{name}': {reason}")]
    InvalidTopicName { name: String, reason: String },
    #[error("partition count {requested} is invalid: {reason}")]
    InvalidPartitions { requested: u32, reason: String },
    #[error("replication factor {requested} exceeds the {available} available brokers")]
    InvalidReplicationFactor { requested: u16, available: usize },
}

/// What applying a command produced.
pub type CommandOutcome = Result<(), MetadataError>;

impl ClusterMetadata {
    /// Applies `command`. A refused command changes nothing.
    pub fn apply(&mut self, command: MetadataCommand) -> CommandOutcome {
        match command {
            MetadataCommand::RegisterBroker {
                broker_id,
                host,
                port,
                incarnation,
            } => {
                let record = BrokerRecord {
                    broker_id,
                    host,
                    port,
                    incarnation,
                    fenced: false,
                };
                self.brokers.insert(broker_id, record);
            }
            MetadataCommand::CreateTopic {
                name,
                topic_id,
                partition_count,
                replication_factor,
                configs,
            } => {
                validate_topic_name(&name)?;
                if self.topics.contains_key(&name) {
                    return Err(MetadataError::TopicExists(name));
                }
                validate_partition_count(partition_count, 0)?;
                let alive = self.alive_brokers();
                if replication_factor == 0 || replication_factor as usize > alive.len() {
                    return Err(MetadataError::InvalidReplicationFactor {
                        requested: replication_factor,
                        available: alive.len(),
                    });
                }
                let partitions = assign_partitions(
                    &alive,
                    0,
                    partition_count,
                    replication_factor as usize,
                    self.topics.len(),
                );
                self.topics.insert(
                    name.clone(),
                    TopicRecord {
                        topic_id,
                        name,
                        configs,
                        partitions,
                    },
                );
            }
            MetadataCommand::DeleteTopic { name } => {
                if self.topics.remove(&name).is_none() {
                    return Err(MetadataError::UnknownTopic(name));
                }
            }
            MetadataCommand::CreatePartitions {
                name,
                partition_count,
            } => {
                let alive = self.alive_brokers();
                let topic_count = self.topics.len();
                let topic = self
                    .topics
                    .get_mut(&name)
                    .ok_or_else(|| MetadataError::UnknownTopic(name.clone()))?;
                let existing = topic.partitions.len() as u32;
                validate_partition_count(partition_count, existing)?;
                let replication_factor = topic.partitions[0].replicas.len();
                if replication_factor > alive.len() {
                    return Err(MetadataError::InvalidReplicationFactor {
                        requested: replication_factor as u16,
                        available: alive.len(),
                    });
                }
                let added = assign_partitions(
                    &alive,
                    existing,
                    partition_count,
                    replication_factor,
                    topic_count,
                );
                topic.partitions.extend(added);
            }
            MetadataCommand::AlterTopicConfigs { name, configs } => {
                let topic = self
                    .topics
                    .get_mut(&name)
                    .ok_or(MetadataError::UnknownTopic(name))?;
                topic.configs = configs;
            }
        }
        self.metadata_version += 1;
        Ok(())
    }

    /// Registered, unfenced brokers, in id order.
    pub fn alive_broker_records(&self) -> impl Iterator<Item = &BrokerRecord> {
        self.brokers.values().filter(|broker| !broker.fenced)
    }

    /// Ids of the registered, unfenced brokers, in order.
    pub fn alive_brokers(&self) -> Vec<BrokerId> {
        self.alive_broker_records()
            .map(|broker| broker.broker_id)
            .collect()
    }
}

/// Replica lists for partitions `first..end`: round-robin over the alive
/// brokers, the start rotating per partition and per topic (`salt`), so
/// leaders (the first replica) spread evenly across brokers.
fn assign_partitions(
    alive: &[BrokerId],
    first: u32,
    end: u32,
    replication_factor: usize,
    salt: usize,
) -> Vec<PartitionRecord> {
    assert!(
        replication_factor >= 1 && replication_factor <= alive.len(),
        "checked by the caller"
    );
    (first..end)
        .map(|partition| {
            let start = (partition as usize + salt) % alive.len();
            let replicas: Vec<BrokerId> = (0..replication_factor)
                .map(|index| alive[(start + index) % alive.len()])
                .collect();
            PartitionRecord {
                leader: replicas[0],
                leader_epoch: 0,
                isr: replicas.clone(),
                replicas,
            }
        })
        .collect()
}

fn validate_partition_count(requested: u32, existing: u32) -> CommandOutcome {
    let reason = if requested == 0 {
        "a topic needs at least one partition".to_string()
    } else if requested > PARTITIONS_PER_TOPIC_MAX {
        format!("at most {PARTITIONS_PER_TOPIC_MAX} partitions per topic")
    } else if requested <= existing {
        format!("the topic already has {existing} partitions; partitions can only be added")
    } else {
        return Ok(());
    };
    Err(MetadataError::InvalidPartitions { requested, reason })
}

/// Kafka's rules: 1 to 249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> CommandOutcome {
    let invalid = |reason: &str| {
        Err(MetadataError::InvalidTopicName {
            name: name.to_string(),
            reason: reason.into(),
        })
    };
    if name.is_empty() || name.len() > 249 {
        return invalid("must be 1 to 249 characters");
    }
    if name == "." || name == ".." {
        return invalid("cannot be '.' or '..'");
    }
    if !name
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
    {
        return invalid("may contain only ASCII letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(broker_count: i32) -> ClusterMetadata {
        let mut metadata = ClusterMetadata::default();
        for broker_id in 1..=broker_count {
            let command = MetadataCommand::RegisterBroker {
                broker_id,
                host: "127.0.0.1".into(),
                port: 9092,
                incarnation: Uuid::from_u128(broker_id as u128),
            };
            metadata.apply(command).unwrap();
        }
        metadata
    }

    fn create(name: &str, partition_count: u32, replication_factor: u16) -> MetadataCommand {
        MetadataCommand::CreateTopic {
            name: name.into(),
            topic_id: Uuid::from_u128(7),
            partition_count,
            replication_factor,
            configs: BTreeMap::new(),
        }
    }

    fn check_invariants(metadata: &ClusterMetadata) {
        for topic in metadata.topics.values() {
            for partition in &topic.partitions {
                let mut distinct = partition.replicas.clone();
                distinct.sort_unstable();
                distinct.dedup();
                assert_eq!(
                    distinct.len(),
                    partition.replicas.len(),
                    "replicas are distinct"
                );
                assert!(partition
                    .replicas
                    .iter()
                    .all(|id| metadata.brokers.contains_key(id)));
                assert!(partition
                    .isr
                    .iter()
                    .all(|id| partition.replicas.contains(id)));
                assert!(partition.leader == NO_LEADER || partition.isr.contains(&partition.leader));
            }
        }
    }

    #[test]
    fn leaders_spread_evenly_over_many_topics() {
        let mut metadata = cluster(3);
        for index in 0..100 {
            metadata
                .apply(create(&format!("topic-{index}"), 10, 3))
                .unwrap();
        }
        check_invariants(&metadata);
        let mut leaders = BTreeMap::new();
        for partition in metadata.topics.values().flat_map(|topic| &topic.partitions) {
            *leaders.entry(partition.leader).or_insert(0) += 1;
        }
        let (min, max) = (
            *leaders.values().min().unwrap(),
            *leaders.values().max().unwrap(),
        );
        assert_eq!(leaders.len(), 3);
        assert!(
            max - min <= 100,
            "leaders within 10% of 1000/3: {leaders:?}"
        );
    }

    #[test]
    fn refusals_change_nothing() {
        let mut metadata = cluster(1);
        metadata.apply(create("orders", 3, 1)).unwrap();
        let before = metadata.clone();
        let check =
            |metadata: &mut ClusterMetadata, command, expected: fn(&MetadataError) -> bool| {
                let error = metadata.apply(command).unwrap_err();
                assert!(expected(&error), "{error}");
            };
        check(&mut metadata, create("orders", 3, 1), |e| {
            matches!(e, MetadataError::TopicExists(_))
        });
        check(&mut metadata, create("x", 1, 2), |e| {
            matches!(e, MetadataError::InvalidReplicationFactor { .. })
        });
        check(&mut metadata, create("x", 0, 1), |e| {
            matches!(e, MetadataError::InvalidPartitions { .. })
        });
        check(&mut metadata, create("bad/name", 1, 1), |e| {
            matches!(e, MetadataError::InvalidTopicName { .. })
        });
        check(
            &mut metadata,
            MetadataCommand::DeleteTopic {
                name: "nope".into(),
            },
            |e| matches!(e, MetadataError::UnknownTopic(_)),
        );
        let shrink = MetadataCommand::CreatePartitions {
            name: "orders".into(),
            partition_count: 2,
        };
        check(&mut metadata, shrink, |e| {
            matches!(e, MetadataError::InvalidPartitions { .. })
        });
        assert_eq!(metadata, before);
    }

    #[test]
    fn partitions_are_added_and_topics_deleted() {
        let mut metadata = cluster(3);
        metadata.apply(create("orders", 2, 2)).unwrap();
        metadata
            .apply(MetadataCommand::CreatePartitions {
                name: "orders".into(),
                partition_count: 5,
            })
            .unwrap();
        assert_eq!(metadata.topics["orders"].partitions.len(), 5);
        assert!(metadata.topics["orders"]
            .partitions
            .iter()
            .all(|p| p.replicas.len() == 2));
        check_invariants(&metadata);
        let version = metadata.metadata_version;
        metadata
            .apply(MetadataCommand::DeleteTopic {
                name: "orders".into(),
            })
            .unwrap();
        assert!(metadata.topics.is_empty());
        assert_eq!(metadata.metadata_version, version + 1);
    }
}
