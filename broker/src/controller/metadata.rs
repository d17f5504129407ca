//! Cluster metadata and the commands that change it: the controller's state
//! machine, as a pure decision core. `apply` does no I/O and reads no clock;
//! everything it needs is in the command, so every voter that applies the same
//! log reaches the same state.
//!
//! Invariants, checked by `apply` and asserted in tests:
//! - a partition's replicas are distinct registered brokers, its ISR is a
//!   non-empty subset of them, and its leader (when it has one) is an
//!   unfenced broker in the ISR;
//! - every change of a partition's leader, and every new life of its leader
//!   (a restart), bumps its leader epoch, so no two brokers ever lead the same
//!   partition in the same epoch;
//! - `metadata_version` grows by one with every command that changes anything,
//!   and only then;
//! - `next_producer_id` only grows, and every block of producer ids handed
//!   to a broker lies below it and above every earlier block, so no producer
//!   id is ever given out twice.

use std::collections::{BTreeMap, BTreeSet};

use crate::limits;
use serde::{Deserialize, Serialize};
use strata_protocol::sasl::{
    ScramCredential, ScramMechanism, SCRAM_ITERATIONS_MAX, SCRAM_ITERATIONS_MIN,
};

pub use super::ids::{BrokerId, LeaderEpoch, PartitionEpoch, NO_LEADER};
use thiserror::Error;
use uuid::Uuid;

/// Producer ids per block a broker takes from the controller (Kafka's).
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1_000;

/// The producer ids a broker was last given: `[first_producer_id,
/// first_producer_id + count)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerIdBlock {
    pub first_producer_id: i64,
    pub count: i64,
    /// The allocation that asked for it, so the broker knows the block is
    /// the one it asked for and not an earlier one.
    pub request_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRecord {
    pub broker_id: BrokerId,
    /// Where other brokers reach it: its inter-broker listener.
    pub host: String,
    pub port: u16,
    /// Where clients of each listener are told to connect.
    pub listeners: Vec<Endpoint>,
    /// Changes every time the broker process starts, so a restarted broker
    /// cannot act on leadership granted to its previous life.
    pub incarnation: Uuid,
    pub fenced: bool,
}

/// One listener of a broker, as its clients are told to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The listener's name (`PLAINTEXT`, `EXTERNAL`, ...).
    pub listener: String,
    pub host: String,
    pub port: u16,
}

impl BrokerRecord {
    /// The host and port a client connected to listener `listener` is
    /// told for this broker; `None` when the broker has no such listener
    /// (Kafka leaves such a broker out of the answer). A broker that named
    /// no listeners has one, at its inter-broker address.
    pub fn endpoint(&self, listener: &str) -> Option<(&str, u16)> {
        if self.listeners.is_empty() {
            return Some((&self.host, self.port));
        }
        self.listeners
            .iter()
            .find(|endpoint| endpoint.listener == listener)
            .map(|endpoint| (endpoint.host.as_str(), endpoint.port))
    }
}

/// What the brokers keep of a user's password for one SCRAM mechanism:
/// enough to check a login, never enough to make one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramRecord {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl From<ScramCredential> for ScramRecord {
    fn from(credential: ScramCredential) -> Self {
        ScramRecord {
            salt: credential.salt,
            iterations: credential.iterations,
            stored_key: credential.stored_key,
            server_key: credential.server_key,
        }
    }
}

impl From<ScramRecord> for ScramCredential {
    fn from(record: ScramRecord) -> Self {
        ScramCredential {
            salt: record.salt,
            iterations: record.iterations,
            stored_key: record.stored_key,
            server_key: record.server_key,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    pub replicas: Vec<BrokerId>,
    pub leader: BrokerId,
    pub leader_epoch: LeaderEpoch,
    pub isr: Vec<BrokerId>,
    /// Bumped by every change of leader or ISR. A leader that asks for an
    /// ISR change names the version it saw, so a stale request is refused.
    pub partition_epoch: PartitionEpoch,
    /// A move of the partition's replicas under way (see
    /// [`MetadataCommand::ReassignPartition`]).
    pub reassignment: Option<Reassignment>,
}

/// A partition moving from one replica set to another. While it runs the
/// partition's replicas are the target's followed by the original ones
/// not in it; once every target replica is in the ISR, the replicas become
/// the target and the others leave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reassignment {
    pub target: Vec<BrokerId>,
    pub original: Vec<BrokerId>,
}

impl Reassignment {
    /// Replicas being added: in the target, not in the original set.
    pub fn adding(&self) -> Vec<BrokerId> {
        self.target
            .iter()
            .copied()
            .filter(|broker| !self.original.contains(broker))
            .collect()
    }

    /// Replicas being removed: in the original set, not in the target.
    pub fn removing(&self) -> Vec<BrokerId> {
        self.original
            .iter()
            .copied()
            .filter(|broker| !self.target.contains(broker))
            .collect()
    }
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
    /// Set once, by the first controller leader; every broker reports it.
    pub cluster_id: Option<String>,
    pub brokers: BTreeMap<BrokerId, BrokerRecord>,
    pub topics: BTreeMap<String, TopicRecord>,
    pub metadata_version: u64,
    /// The first producer id no broker has been given.
    pub next_producer_id: i64,
    /// Per broker, the block of producer ids it was given last.
    pub producer_id_blocks: BTreeMap<BrokerId, ProducerIdBlock>,
    /// SASL/SCRAM users: name → Kafka's mechanism type (1 SCRAM-SHA-256,
    /// 2 SCRAM-SHA-512) → credential.
    pub scram_users: BTreeMap<String, BTreeMap<i8, ScramRecord>>,
}

/// A change to the metadata, proposed through Raft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataCommand {
    /// Names the cluster; refused once it has a name.
    InitCluster {
        cluster_id: String,
    },
    /// A broker process starting. A new incarnation of a known broker is a
    /// new life: the old one's leadership ends (new leader epochs) and it
    /// leaves the ISRs it shared with others.
    RegisterBroker {
        broker_id: BrokerId,
        host: String,
        port: u16,
        listeners: Vec<Endpoint>,
        incarnation: Uuid,
    },
    /// The broker's heartbeats lapsed: it leads nothing and leaves the ISRs
    /// it shared with others.
    FenceBroker {
        broker_id: BrokerId,
        incarnation: Uuid,
    },
    /// A fenced broker heartbeats again: it leads the partitions that had no
    /// leader and have it in their ISR.
    UnfenceBroker {
        broker_id: BrokerId,
        incarnation: Uuid,
    },
    /// Every partition whose first replica is alive and in sync but not
    /// leading gets it back as leader.
    ElectPreferredLeaders,
    /// A partition's leader changes its ISR (a follower fell behind, or
    /// caught up). Refused unless `leader_id` leads in `leader_epoch` and
    /// `partition_epoch` is current; a broker joins only if it is unfenced.
    AlterIsr {
        topic: String,
        partition: u32,
        leader_id: BrokerId,
        leader_epoch: LeaderEpoch,
        partition_epoch: PartitionEpoch,
        isr: Vec<BrokerId>,
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
    /// A partition of a topic with `unclean.leader.election.enable` that has
    /// no leader and no alive in-sync replica gets its first alive replica as
    /// leader and only ISR member, in a new epoch: whatever only the fenced
    /// ISR members had is lost. Changes nothing if the partition can lead
    /// cleanly again or no replica is alive.
    ElectUncleanLeader {
        topic: String,
        partition: u32,
    },
    /// A registered broker takes the next `PRODUCER_ID_BLOCK_SIZE` producer
    /// ids, for the idempotent producers it starts.
    AllocateProducerIds {
        broker_id: BrokerId,
        request_id: Uuid,
    },
    /// Moves a partition to the replicas `target` (alive brokers, each
    /// once), or with `None` cancels the move under way. The new replicas
    /// copy the log as followers and join the ISR as any follower does; the
    /// move completes when the ISR holds the whole target (the leader moves
    /// to a target replica if it was not one). Cancelling returns to the
    /// original replicas, refused if none of them is in sync.
    ReassignPartition {
        topic: String,
        partition: u32,
        target: Option<Vec<BrokerId>>,
    },
    /// Sets (or replaces) a user's SCRAM credential for one mechanism
    /// (Kafka's type: 1 SCRAM-SHA-256, 2 SCRAM-SHA-512).
    UpsertScramCredential {
        user: String,
        mechanism: i8,
        credential: ScramRecord,
    },
    /// Removes a user's SCRAM credential for one mechanism; refused when
    /// the user has none for it.
    DeleteScramCredential {
        user: String,
        mechanism: i8,
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
    #[error("{}", if *requested == 0 { "replication factor 0 is invalid: a topic needs at least one replica".to_string() } else { format!("replication factor {requested} exceeds the {available} available brokers") })]
    InvalidReplicationFactor { requested: u16, available: usize },
    #[error("the cluster already has the id {0}")]
    ClusterIdSet(String),
    #[error("broker {0} is not registered")]
    UnknownBroker(BrokerId),
    #[error("broker {broker_id} has registered again since (a newer process holds its id)")]
    StaleIncarnation { broker_id: BrokerId },
    #[error("topic '{topic}' has no partition {partition}")]
    UnknownPartition { topic: String, partition: u32 },
    #[error("broker {leader_id} does not lead in leader epoch {leader_epoch}: the leader is {current_leader} in epoch {current_epoch}")]
    FencedLeaderEpoch {
        leader_id: BrokerId,
        leader_epoch: LeaderEpoch,
        current_leader: BrokerId,
        current_epoch: LeaderEpoch,
    },
    #[error("invalid reassignment: {0}")]
    InvalidReassignment(String),
    #[error("the ISR change was based on partition epoch {requested}, but it is {current} now")]
    StalePartitionEpoch {
        requested: PartitionEpoch,
        current: PartitionEpoch,
    },
    #[error("invalid ISR {isr:?}: {reason}")]
    InvalidIsr { isr: Vec<BrokerId>, reason: String },
    #[error("topic '{0}' does not enable unclean.leader.election.enable")]
    UncleanElectionDisabled(String),
    #[error("user '{user}' has no {mechanism} credential")]
    UnknownScramCredential { user: String, mechanism: String },
    #[error("invalid SCRAM credential: {0}")]
    InvalidScramCredential(String),
}

fn unknown_scram_credential(user: String, mechanism: i8) -> MetadataError {
    MetadataError::UnknownScramCredential {
        user,
        mechanism: ScramMechanism::from_kafka_type(mechanism).map_or_else(
            || format!("mechanism {mechanism}"),
            |known| known.name().to_string(),
        ),
    }
}

/// A credential is stored only for a named user, a known mechanism, Kafka's
/// iteration bounds, and keys the mechanism's size.
fn check_scram_credential(
    user: &str,
    mechanism: i8,
    credential: &ScramRecord,
) -> Result<(), MetadataError> {
    let invalid = |reason: String| Err(MetadataError::InvalidScramCredential(reason));
    if user.is_empty() {
        return invalid("the user name is empty".to_string());
    }
    let Some(known) = ScramMechanism::from_kafka_type(mechanism) else {
        return invalid(format!("unknown SCRAM mechanism {mechanism}"));
    };
    if !(SCRAM_ITERATIONS_MIN..=SCRAM_ITERATIONS_MAX).contains(&credential.iterations) {
        return invalid(format!(
            "{} iterations is outside {SCRAM_ITERATIONS_MIN}..={SCRAM_ITERATIONS_MAX}",
            credential.iterations
        ));
    }
    let key_bytes = match known {
        ScramMechanism::Sha256 => 32,
        ScramMechanism::Sha512 => 64,
    };
    if credential.salt.is_empty()
        || credential.stored_key.len() != key_bytes
        || credential.server_key.len() != key_bytes
    {
        return invalid(format!(
            "a {} credential needs a salt and {key_bytes}-byte keys",
            known.name()
        ));
    }
    Ok(())
}

/// What applying a command produced.
pub type CommandOutcome = Result<(), MetadataError>;

impl ClusterMetadata {
    /// Applies `command`. A refused command changes nothing; so does one
    /// that finds nothing to do (the version stays).
    pub fn apply(&mut self, command: MetadataCommand) -> CommandOutcome {
        if self.apply_change(command)? {
            self.metadata_version += 1;
        }
        Ok(())
    }

    /// Applies `command`; true if anything changed.
    fn apply_change(&mut self, command: MetadataCommand) -> Result<bool, MetadataError> {
        match command {
            MetadataCommand::InitCluster { cluster_id } => {
                if let Some(existing) = &self.cluster_id {
                    return Err(MetadataError::ClusterIdSet(existing.clone()));
                }
                self.cluster_id = Some(cluster_id);
                Ok(true)
            }
            MetadataCommand::RegisterBroker {
                broker_id,
                host,
                port,
                listeners,
                incarnation,
            } => {
                let record = BrokerRecord {
                    broker_id,
                    host,
                    port,
                    listeners,
                    incarnation,
                    fenced: false,
                };
                let previous = self.brokers.insert(broker_id, record.clone());
                if previous.as_ref() == Some(&record) {
                    return Ok(false); // the same registration, retried
                }
                let alive = self.alive_set();
                let new_life = previous.is_some_and(|old| old.incarnation != incarnation);
                for partition in self.partitions_mut() {
                    if new_life {
                        partition.end_leadership_of(broker_id, &alive);
                    }
                    partition.elect_if_leaderless(&alive);
                }
                Ok(true)
            }
            MetadataCommand::FenceBroker {
                broker_id,
                incarnation,
            } => {
                let broker = self.broker_mut(broker_id, incarnation)?;
                if broker.fenced {
                    return Ok(false);
                }
                broker.fenced = true;
                let alive = self.alive_set();
                for partition in self.partitions_mut() {
                    partition.end_leadership_of(broker_id, &alive);
                }
                Ok(true)
            }
            MetadataCommand::UnfenceBroker {
                broker_id,
                incarnation,
            } => {
                let broker = self.broker_mut(broker_id, incarnation)?;
                if !broker.fenced {
                    return Ok(false);
                }
                broker.fenced = false;
                let alive = self.alive_set();
                for partition in self.partitions_mut() {
                    partition.elect_if_leaderless(&alive);
                }
                Ok(true)
            }
            MetadataCommand::ElectPreferredLeaders => {
                let alive = self.alive_set();
                let mut changed = false;
                for partition in self.partitions_mut() {
                    changed |= partition.elect_preferred(&alive);
                }
                Ok(changed)
            }
            MetadataCommand::AlterIsr {
                topic,
                partition,
                leader_id,
                leader_epoch,
                partition_epoch,
                isr,
            } => {
                let alive = self.alive_set();
                let record = self.partition_mut(topic, partition)?;
                let changed =
                    record.alter_isr(leader_id, leader_epoch, partition_epoch, isr, &alive)?;
                Ok(record.complete_reassignment(&alive) || changed)
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
                Ok(true)
            }
            MetadataCommand::DeleteTopic { name } => {
                if self.topics.remove(&name).is_none() {
                    return Err(MetadataError::UnknownTopic(name));
                }
                Ok(true)
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
                Ok(true)
            }
            MetadataCommand::AlterTopicConfigs { name, configs } => {
                let topic = self
                    .topics
                    .get_mut(&name)
                    .ok_or(MetadataError::UnknownTopic(name))?;
                topic.configs = configs;
                Ok(true)
            }
            MetadataCommand::ElectUncleanLeader { topic, partition } => {
                let alive = self.alive_set();
                let record = self
                    .topics
                    .get_mut(&topic)
                    .ok_or_else(|| MetadataError::UnknownTopic(topic.clone()))?;
                if !allows_unclean_election(record) {
                    return Err(MetadataError::UncleanElectionDisabled(topic));
                }
                let record = record
                    .partitions
                    .get_mut(partition as usize)
                    .ok_or(MetadataError::UnknownPartition { topic, partition })?;
                Ok(record.elect_unclean(&alive))
            }
            MetadataCommand::ReassignPartition {
                topic,
                partition,
                target,
            } => {
                let alive = self.alive_set();
                let record = self.partition_mut(topic, partition)?;
                match target {
                    Some(target) => record.start_reassignment(target, &alive),
                    None => record.cancel_reassignment(&alive),
                }
            }
            MetadataCommand::AllocateProducerIds {
                broker_id,
                request_id,
            } => {
                if !self.brokers.contains_key(&broker_id) {
                    return Err(MetadataError::UnknownBroker(broker_id));
                }
                let block = ProducerIdBlock {
                    first_producer_id: self.next_producer_id,
                    count: PRODUCER_ID_BLOCK_SIZE,
                    request_id,
                };
                self.next_producer_id += PRODUCER_ID_BLOCK_SIZE;
                self.producer_id_blocks.insert(broker_id, block);
                Ok(true)
            }
            MetadataCommand::UpsertScramCredential {
                user,
                mechanism,
                credential,
            } => {
                check_scram_credential(&user, mechanism, &credential)?;
                let credentials = self.scram_users.entry(user).or_default();
                Ok(credentials.insert(mechanism, credential.clone()) != Some(credential))
            }
            MetadataCommand::DeleteScramCredential { user, mechanism } => {
                let Some(credentials) = self.scram_users.get_mut(&user) else {
                    return Err(unknown_scram_credential(user, mechanism));
                };
                if credentials.remove(&mechanism).is_none() {
                    return Err(unknown_scram_credential(user, mechanism));
                }
                if credentials.is_empty() {
                    self.scram_users.remove(&user);
                }
                Ok(true)
            }
        }
    }

    fn partition_mut(
        &mut self,
        topic: String,
        partition: u32,
    ) -> Result<&mut PartitionRecord, MetadataError> {
        self.topics
            .get_mut(&topic)
            .and_then(|record| record.partitions.get_mut(partition as usize))
            .ok_or(MetadataError::UnknownPartition { topic, partition })
    }

    /// The user's credential for SCRAM mechanism `mechanism`, if any.
    pub fn scram_credential(
        &self,
        user: &str,
        mechanism: ScramMechanism,
    ) -> Option<ScramCredential> {
        let record = self.scram_users.get(user)?.get(&mechanism.kafka_type())?;
        Some(ScramCredential::from(record.clone()))
    }

    /// Partitions that [`MetadataCommand::ElectUncleanLeader`] would give a
    /// leader: `(topic, partition, the fenced ISR)`.
    pub fn unclean_election_candidates(&self) -> Vec<(String, u32, Vec<BrokerId>)> {
        let alive = self.alive_set();
        self.topics
            .values()
            .filter(|topic| allows_unclean_election(topic))
            .flat_map(|topic| {
                topic
                    .partitions
                    .iter()
                    .enumerate()
                    .filter(|(_, partition)| partition.unclean_candidate(&alive).is_some())
                    .map(|(index, partition)| {
                        (topic.name.clone(), index as u32, partition.isr.clone())
                    })
            })
            .collect()
    }

    /// The broker's record, if `incarnation` is its current life.
    fn broker_mut(
        &mut self,
        broker_id: BrokerId,
        incarnation: Uuid,
    ) -> Result<&mut BrokerRecord, MetadataError> {
        let broker = self
            .brokers
            .get_mut(&broker_id)
            .ok_or(MetadataError::UnknownBroker(broker_id))?;
        if broker.incarnation != incarnation {
            return Err(MetadataError::StaleIncarnation { broker_id });
        }
        Ok(broker)
    }

    fn partitions_mut(&mut self) -> impl Iterator<Item = &mut PartitionRecord> {
        self.topics
            .values_mut()
            .flat_map(|topic| topic.partitions.iter_mut())
    }

    fn alive_set(&self) -> BTreeSet<BrokerId> {
        self.alive_brokers().into_iter().collect()
    }

    /// True when some partition's preferred leader could lead again
    /// (what [`MetadataCommand::ElectPreferredLeaders`] would change).
    pub fn preferred_leaders_wait(&self) -> bool {
        let alive = self.alive_set();
        self.topics
            .values()
            .flat_map(|topic| &topic.partitions)
            .any(|partition| partition.preferred_leader_waits(&alive))
    }

    /// Registered, unfenced brokers, in id order.
    pub fn alive_broker_records(&self) -> impl Iterator<Item = &BrokerRecord> {
        self.brokers.values().filter(|broker| !broker.fenced)
    }

    /// Partition `index` of `topic`, if both exist.
    pub fn partition(&self, topic: &str, index: i32) -> Option<&PartitionRecord> {
        self.topics
            .get(topic)?
            .partitions
            .get(usize::try_from(index).ok()?)
    }

    /// Every topic's name by its id (consumer-protocol assignments name
    /// topics by id).
    pub fn topic_names(&self) -> std::collections::HashMap<Uuid, String> {
        self.topics
            .values()
            .map(|topic| (topic.topic_id, topic.name.clone()))
            .collect()
    }

    /// Ids of the registered, unfenced brokers, in order.
    pub fn alive_brokers(&self) -> Vec<BrokerId> {
        self.alive_broker_records()
            .map(|broker| broker.broker_id)
            .collect()
    }
}

impl PartitionRecord {
    /// The first replica, in replica order, that is in the ISR and alive.
    fn candidate(&self, alive: &BTreeSet<BrokerId>) -> BrokerId {
        self.replicas
            .iter()
            .copied()
            .find(|replica| self.isr.contains(replica) && alive.contains(replica))
            .unwrap_or(NO_LEADER)
    }

    fn set_leader(&mut self, leader: BrokerId) {
        self.leader = leader;
        self.leader_epoch.bump();
        self.partition_epoch.bump();
    }

    /// The leader's ISR change; true if the ISR changed.
    fn alter_isr(
        &mut self,
        leader_id: BrokerId,
        leader_epoch: LeaderEpoch,
        partition_epoch: PartitionEpoch,
        isr: Vec<BrokerId>,
        alive: &BTreeSet<BrokerId>,
    ) -> Result<bool, MetadataError> {
        if self.leader != leader_id || self.leader_epoch != leader_epoch {
            return Err(MetadataError::FencedLeaderEpoch {
                leader_id,
                leader_epoch,
                current_leader: self.leader,
                current_epoch: self.leader_epoch,
            });
        }
        if self.partition_epoch != partition_epoch {
            return Err(MetadataError::StalePartitionEpoch {
                requested: partition_epoch,
                current: self.partition_epoch,
            });
        }
        let invalid = |reason: &str| {
            Err(MetadataError::InvalidIsr {
                isr: isr.clone(),
                reason: reason.to_string(),
            })
        };
        let distinct: BTreeSet<BrokerId> = isr.iter().copied().collect();
        if distinct.len() != isr.len() {
            return invalid("a broker is listed twice");
        }
        if !isr.contains(&leader_id) {
            return invalid("the leader must stay in the ISR");
        }
        if !isr.iter().all(|member| self.replicas.contains(member)) {
            return invalid("every member must be a replica");
        }
        if isr
            .iter()
            .any(|member| !self.isr.contains(member) && !alive.contains(member))
        {
            return invalid("a fenced broker cannot join the ISR");
        }
        if distinct == self.isr.iter().copied().collect() {
            return Ok(false);
        }
        self.isr = isr;
        self.partition_epoch.bump();
        Ok(true)
    }

    /// Ends `broker`'s current life in this partition: it leaves the ISR
    /// unless it is the last member (the only copy of the data), and if it
    /// led, the next alive in-sync replica leads in a new epoch (the broker
    /// itself if it is alive again and the only one in sync).
    fn end_leadership_of(&mut self, broker: BrokerId, alive: &BTreeSet<BrokerId>) {
        if self.isr.len() > 1 && self.isr.contains(&broker) {
            self.isr.retain(|&member| member != broker);
            self.partition_epoch.bump();
        }
        if self.leader == broker {
            let leader = self.candidate(alive);
            self.set_leader(leader);
        }
    }

    fn elect_if_leaderless(&mut self, alive: &BTreeSet<BrokerId>) {
        if self.leader == NO_LEADER {
            let leader = self.candidate(alive);
            if leader != NO_LEADER {
                self.set_leader(leader);
            }
        }
    }

    /// The replica an unclean election would pick: none while the partition
    /// has a leader or an alive in-sync replica, else the first alive one.
    fn unclean_candidate(&self, alive: &BTreeSet<BrokerId>) -> Option<BrokerId> {
        if self.leader != NO_LEADER || self.candidate(alive) != NO_LEADER {
            return None;
        }
        self.replicas
            .iter()
            .copied()
            .find(|replica| alive.contains(replica))
    }

    /// Gives the partition to an out-of-sync replica (see
    /// [`MetadataCommand::ElectUncleanLeader`]); true if it did.
    fn elect_unclean(&mut self, alive: &BTreeSet<BrokerId>) -> bool {
        let Some(leader) = self.unclean_candidate(alive) else {
            return false;
        };
        self.isr = vec![leader];
        self.set_leader(leader);
        true
    }

    fn start_reassignment(
        &mut self,
        target: Vec<BrokerId>,
        alive: &BTreeSet<BrokerId>,
    ) -> Result<bool, MetadataError> {
        let invalid = |reason: String| Err(MetadataError::InvalidReassignment(reason));
        let distinct: BTreeSet<BrokerId> = target.iter().copied().collect();
        if target.is_empty() {
            return invalid("the target has no replicas".into());
        }
        if distinct.len() != target.len() {
            return invalid("a broker is listed twice".into());
        }
        if let Some(absent) = target.iter().find(|broker| !alive.contains(broker)) {
            return invalid(format!("broker {absent} is not alive"));
        }
        if self.reassignment.is_some() {
            return invalid(
                "a reassignment of this partition is under way; cancel it first".into(),
            );
        }
        if target == self.replicas {
            return Ok(false);
        }
        let original = std::mem::take(&mut self.replicas);
        self.replicas = target
            .iter()
            .chain(original.iter().filter(|broker| !distinct.contains(broker)))
            .copied()
            .collect();
        self.reassignment = Some(Reassignment { target, original });
        self.partition_epoch.bump();
        self.complete_reassignment(alive);
        Ok(true)
    }

    fn cancel_reassignment(&mut self, alive: &BTreeSet<BrokerId>) -> Result<bool, MetadataError> {
        let Some(reassignment) = &self.reassignment else {
            return Err(MetadataError::InvalidReassignment(
                "no reassignment of this partition is under way".into(),
            ));
        };
        let original = reassignment.original.clone();
        if !self.isr.iter().any(|member| original.contains(member)) {
            return Err(MetadataError::InvalidReassignment(
                "none of the original replicas is in sync any more".into(),
            ));
        }
        self.finish_move(original, alive);
        Ok(true)
    }

    /// Completes the reassignment once every target replica is in sync;
    /// true if it did.
    fn complete_reassignment(&mut self, alive: &BTreeSet<BrokerId>) -> bool {
        let Some(reassignment) = &self.reassignment else {
            return false;
        };
        if !reassignment
            .target
            .iter()
            .all(|broker| self.isr.contains(broker))
        {
            return false;
        }
        let target = reassignment.target.clone();
        self.finish_move(target, alive);
        true
    }

    /// The replicas become `replicas` (whose in-sync members keep the
    /// ISR), the leader one of them.
    fn finish_move(&mut self, replicas: Vec<BrokerId>, alive: &BTreeSet<BrokerId>) {
        self.isr.retain(|member| replicas.contains(member));
        self.replicas = replicas;
        self.reassignment = None;
        self.partition_epoch.bump();
        if !self.replicas.contains(&self.leader) {
            let leader = self.candidate(alive);
            self.set_leader(leader);
        }
    }

    /// Moves leadership back to the first replica when it can lead.
    fn elect_preferred(&mut self, alive: &BTreeSet<BrokerId>) -> bool {
        let waiting = self.preferred_leader_waits(alive);
        if waiting {
            self.set_leader(self.replicas[0]);
        }
        waiting
    }

    /// True when the first replica is alive and in sync but does not lead.
    fn preferred_leader_waits(&self, alive: &BTreeSet<BrokerId>) -> bool {
        let preferred = self.replicas[0];
        self.leader != preferred && alive.contains(&preferred) && self.isr.contains(&preferred)
    }
}

/// True if the topic's configs (validated before they were proposed) enable
/// unclean leader election.
fn allows_unclean_election(topic: &TopicRecord) -> bool {
    use crate::topic_config::UNCLEAN_LEADER_ELECTION_ENABLE;
    topic
        .configs
        .get(UNCLEAN_LEADER_ELECTION_ENABLE)
        .is_some_and(|value| value.trim() == "true")
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
                leader_epoch: LeaderEpoch::default(),
                isr: replicas.clone(),
                replicas,
                partition_epoch: PartitionEpoch::default(),
                reassignment: None,
            }
        })
        .collect()
}

fn validate_partition_count(requested: u32, existing: u32) -> CommandOutcome {
    let reason = if requested == 0 {
        "a topic needs at least one partition".to_string()
    } else if requested > limits::PARTITIONS_PER_TOPIC_MAX {
        format!(
            "at most {} partitions per topic",
            limits::PARTITIONS_PER_TOPIC_MAX
        )
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
    use crate::controller::metadata::BrokerId as B;

    fn cluster(broker_count: i32) -> ClusterMetadata {
        let mut metadata = ClusterMetadata::default();
        for broker_id in 1..=broker_count {
            let command = MetadataCommand::RegisterBroker {
                broker_id: B(broker_id),
                host: "127.0.0.1".into(),
                port: 9092,
                listeners: Vec::new(),
                incarnation: Uuid::from_u128(broker_id as u128),
            };
            metadata.apply(command).unwrap();
        }
        metadata
    }

    #[test]
    fn producer_id_blocks_never_overlap_and_only_registered_brokers_get_one() {
        let mut metadata = cluster(2);
        let mut blocks = Vec::new();
        for (index, broker_id) in [B(1), B(2), B(1)].into_iter().enumerate() {
            let request_id = Uuid::from_u128(100 + index as u128);
            metadata
                .apply(MetadataCommand::AllocateProducerIds {
                    broker_id,
                    request_id,
                })
                .unwrap();
            let block = metadata.producer_id_blocks[&broker_id];
            assert_eq!(block.request_id, request_id);
            blocks.push(block.first_producer_id..block.first_producer_id + block.count);
        }
        assert_eq!(blocks, [0..1_000, 1_000..2_000, 2_000..3_000]);
        assert_eq!(
            metadata.apply(MetadataCommand::AllocateProducerIds {
                broker_id: B(9),
                request_id: Uuid::from_u128(1),
            }),
            Err(MetadataError::UnknownBroker(B(9)))
        );
        assert_eq!(metadata.next_producer_id, 3_000);
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

    /// A topic that enables unclean leader election.
    fn create_unclean(
        name: &str,
        partition_count: u32,
        replication_factor: u16,
    ) -> MetadataCommand {
        let MetadataCommand::CreateTopic {
            name,
            topic_id,
            partition_count,
            replication_factor,
            ..
        } = create(name, partition_count, replication_factor)
        else {
            unreachable!()
        };
        let configs = [(
            "unclean.leader.election.enable".to_string(),
            "true".to_string(),
        )];
        MetadataCommand::CreateTopic {
            name,
            topic_id,
            partition_count,
            replication_factor,
            configs: configs.into(),
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
                assert!(!partition.isr.is_empty(), "the ISR is never empty");
                if partition.leader != NO_LEADER {
                    assert!(partition.isr.contains(&partition.leader));
                    assert!(
                        !metadata.brokers[&partition.leader].fenced,
                        "leaders are unfenced"
                    );
                }
            }
        }
    }

    fn register(broker_id: BrokerId, incarnation: u128) -> MetadataCommand {
        MetadataCommand::RegisterBroker {
            broker_id,
            host: "127.0.0.1".into(),
            port: 9092,
            listeners: Vec::new(),
            incarnation: Uuid::from_u128(incarnation),
        }
    }

    fn fence(metadata: &ClusterMetadata, broker_id: BrokerId) -> MetadataCommand {
        MetadataCommand::FenceBroker {
            broker_id,
            incarnation: metadata.brokers[&broker_id].incarnation,
        }
    }

    fn unfence(metadata: &ClusterMetadata, broker_id: BrokerId) -> MetadataCommand {
        MetadataCommand::UnfenceBroker {
            broker_id,
            incarnation: metadata.brokers[&broker_id].incarnation,
        }
    }

    fn partition(metadata: &ClusterMetadata, topic: &str, index: usize) -> PartitionRecord {
        metadata.topics[topic].partitions[index].clone()
    }

    /// The ISR change `current`'s leader would ask for.
    fn alter_isr(
        topic: &str,
        index: usize,
        current: &PartitionRecord,
        isr: Vec<BrokerId>,
    ) -> MetadataCommand {
        MetadataCommand::AlterIsr {
            topic: topic.into(),
            partition: index as u32,
            leader_id: current.leader,
            leader_epoch: current.leader_epoch,
            partition_epoch: current.partition_epoch,
            isr,
        }
    }

    fn reassign(topic: &str, index: u32, target: Option<Vec<BrokerId>>) -> MetadataCommand {
        MetadataCommand::ReassignPartition {
            topic: topic.into(),
            partition: index,
            target,
        }
    }

    #[test]
    fn a_reassignment_adds_the_target_then_drops_the_rest_once_the_target_is_in_sync() {
        let mut metadata = cluster(4);
        metadata.apply(create("moving", 1, 2)).unwrap();
        let start = partition(&metadata, "moving", 0);
        let original = start.replicas.clone();
        let outsiders: Vec<BrokerId> = (1..=4).map(B).filter(|id| !original.contains(id)).collect();
        // Move wholly away from the original replicas (the leader too).
        let target = outsiders.clone();
        metadata
            .apply(reassign("moving", 0, Some(target.clone())))
            .unwrap();
        check_invariants(&metadata);
        let moving = partition(&metadata, "moving", 0);
        assert_eq!(moving.replicas, [target.clone(), original.clone()].concat());
        assert_eq!(
            moving.isr, start.isr,
            "nobody joins the ISR before catching up"
        );
        assert_eq!(moving.leader, start.leader);
        let reassignment = moving.reassignment.clone().unwrap();
        assert_eq!(reassignment.adding(), target);
        assert_eq!(reassignment.removing(), original);
        assert!(matches!(
            metadata.apply(reassign("moving", 0, Some(original.clone()))),
            Err(MetadataError::InvalidReassignment(_))
        ));

        // One target replica catches up: still moving.
        let isr = [moving.isr.clone(), vec![target[0]]].concat();
        metadata
            .apply(alter_isr("moving", 0, &moving, isr))
            .unwrap();
        let half = partition(&metadata, "moving", 0);
        assert!(half.reassignment.is_some());
        // The other does: the move completes and the leader moves to it.
        let isr = [half.isr.clone(), vec![target[1]]].concat();
        metadata.apply(alter_isr("moving", 0, &half, isr)).unwrap();
        check_invariants(&metadata);
        let done = partition(&metadata, "moving", 0);
        assert_eq!(done.replicas, target);
        assert_eq!(done.reassignment, None);
        assert!(target.contains(&done.leader), "{done:?}");
        assert!(done.leader_epoch > start.leader_epoch);
        let mut isr = done.isr.clone();
        isr.sort_unstable();
        assert_eq!(isr, target);
    }

    #[test]
    fn a_reassignment_can_shrink_at_once_or_be_cancelled_and_refuses_nonsense() {
        let mut metadata = cluster(4);
        metadata.apply(create("t", 2, 3)).unwrap();
        // Shrinking to replicas already in sync completes in one command.
        let before = partition(&metadata, "t", 0);
        let keep = vec![before.replicas[1], before.replicas[2]];
        metadata
            .apply(reassign("t", 0, Some(keep.clone())))
            .unwrap();
        let after = partition(&metadata, "t", 0);
        assert_eq!(after.replicas, keep);
        assert_eq!(after.reassignment, None);
        assert!(keep.contains(&after.leader));
        check_invariants(&metadata);

        // A grow waits for the new replica; cancelling returns to the
        // original replicas.
        let outsider = (1..=4).map(B).find(|id| !keep.contains(id)).unwrap();
        metadata
            .apply(reassign("t", 0, Some(vec![keep[0], outsider])))
            .unwrap();
        assert!(partition(&metadata, "t", 0).reassignment.is_some());
        metadata.apply(reassign("t", 0, None)).unwrap();
        let cancelled = partition(&metadata, "t", 0);
        assert_eq!(cancelled.replicas, keep);
        assert_eq!(cancelled.reassignment, None);
        check_invariants(&metadata);

        for refused in [
            reassign("t", 1, Some(vec![])),
            reassign("t", 1, Some(vec![B(1), B(1)])),
            reassign("t", 1, Some(vec![B(9)])),
            reassign("t", 1, None),
        ] {
            assert!(
                matches!(
                    metadata.apply(refused),
                    Err(MetadataError::InvalidReassignment(_))
                ),
                "refused"
            );
        }
        check_invariants(&metadata);
    }

    #[test]
    fn the_leader_alters_the_isr_only_from_its_current_epochs() {
        let mut metadata = cluster(3);
        metadata.apply(create("orders", 1, 3)).unwrap();
        let start = partition(&metadata, "orders", 0);
        let leader = start.leader;
        let follower = start.replicas[1];
        let shrunk: Vec<BrokerId> = start
            .isr
            .iter()
            .copied()
            .filter(|&id| id != follower)
            .collect();
        metadata
            .apply(alter_isr("orders", 0, &start, shrunk.clone()))
            .unwrap();
        let after = partition(&metadata, "orders", 0);
        assert_eq!(after.isr, shrunk);
        assert_eq!(after.partition_epoch.0, start.partition_epoch.0 + 1);
        assert_eq!(
            after.leader_epoch, start.leader_epoch,
            "an ISR change keeps the leader epoch"
        );

        let before = metadata.clone();
        let refusals = [
            (
                alter_isr("orders", 0, &start, start.isr.clone()),
                "stale partition epoch",
            ),
            (
                alter_isr(
                    "orders",
                    0,
                    &PartitionRecord {
                        leader: follower,
                        ..after.clone()
                    },
                    start.isr.clone(),
                ),
                "not the leader",
            ),
            (
                alter_isr(
                    "orders",
                    0,
                    &PartitionRecord {
                        leader_epoch: after.leader_epoch - 1,
                        ..after.clone()
                    },
                    start.isr.clone(),
                ),
                "old leader epoch",
            ),
            (
                alter_isr("orders", 0, &after, vec![follower]),
                "without the leader",
            ),
            (
                alter_isr("orders", 0, &after, vec![leader, B(9)]),
                "not a replica",
            ),
            (
                alter_isr("orders", 0, &after, vec![leader, leader]),
                "listed twice",
            ),
            (
                alter_isr("orders", 5, &after, vec![leader]),
                "no such partition",
            ),
        ];
        for (command, why) in refusals {
            assert!(metadata.apply(command).is_err(), "refused: {why}");
        }
        assert_eq!(metadata, before);

        metadata.apply(fence(&metadata, follower)).unwrap();
        let current = partition(&metadata, "orders", 0);
        let with_fenced = [current.isr.clone(), vec![follower]].concat();
        assert!(
            matches!(
                metadata.apply(alter_isr("orders", 0, &current, with_fenced)),
                Err(MetadataError::InvalidIsr { .. })
            ),
            "a fenced broker cannot join"
        );
        metadata.apply(unfence(&metadata, follower)).unwrap();
        let current = partition(&metadata, "orders", 0);
        let version = metadata.metadata_version;
        metadata
            .apply(alter_isr("orders", 0, &current, current.isr.clone()))
            .unwrap();
        assert_eq!(
            metadata.metadata_version, version,
            "the same ISR is no change"
        );
        metadata
            .apply(alter_isr("orders", 0, &current, start.isr.clone()))
            .unwrap();
        assert_eq!(
            partition(&metadata, "orders", 0).isr,
            start.isr,
            "it rejoins"
        );
    }

    #[test]
    fn fencing_a_leader_elects_the_next_in_sync_replica_in_a_new_epoch() {
        let mut metadata = cluster(3);
        metadata.apply(create("replicated", 3, 3)).unwrap();
        metadata.apply(create("single", 3, 1)).unwrap();
        let before = metadata.clone();
        metadata.apply(fence(&metadata, B(1))).unwrap();
        check_invariants(&metadata);
        assert!(metadata.brokers[&B(1)].fenced);
        for (name, topic) in &before.topics {
            for (index, old) in topic.partitions.iter().enumerate() {
                let new = partition(&metadata, name, index);
                match (old.leader == B(1), old.replicas.len()) {
                    (false, _) => {
                        assert_eq!(
                            (new.leader, new.leader_epoch),
                            (old.leader, old.leader_epoch)
                        );
                    }
                    (true, 1) => {
                        assert_eq!(new.leader, NO_LEADER, "the only replica is fenced");
                        assert_eq!(new.leader_epoch, old.leader_epoch + 1);
                        assert_eq!(
                            new.isr,
                            vec![B(1)],
                            "the last in-sync replica stays in the ISR"
                        );
                    }
                    (true, _) => {
                        let expected = old.replicas.iter().copied().find(|&id| id != B(1)).unwrap();
                        assert_eq!(new.leader, expected);
                        assert_eq!(new.leader_epoch, old.leader_epoch + 1);
                    }
                }
                if old.replicas.len() > 1 {
                    assert!(!new.isr.contains(&B(1)), "fenced brokers leave shared ISRs");
                }
            }
        }
        let version = metadata.metadata_version;
        metadata.apply(fence(&metadata, B(1))).unwrap();
        assert_eq!(
            metadata.metadata_version, version,
            "fencing twice changes nothing"
        );

        metadata.apply(unfence(&metadata, B(1))).unwrap();
        check_invariants(&metadata);
        for (index, old) in before.topics["single"].partitions.iter().enumerate() {
            let new = partition(&metadata, "single", index);
            assert_ne!(
                new.leader, NO_LEADER,
                "every single-replica partition leads again"
            );
            if old.leader == B(1) {
                assert_eq!(new.leader_epoch, old.leader_epoch + 2);
            }
        }
    }

    #[test]
    fn a_new_incarnation_ends_the_old_lives_leadership_once() {
        let mut metadata = cluster(2);
        metadata.apply(create("single", 4, 1)).unwrap();
        metadata.apply(create("pair", 4, 2)).unwrap();
        let before = metadata.clone();
        let version = metadata.metadata_version;
        metadata.apply(register(B(1), 1)).unwrap();
        assert_eq!(
            metadata.metadata_version, version,
            "a retried registration is a no-op"
        );

        metadata.apply(register(B(1), 100)).unwrap();
        check_invariants(&metadata);
        for (name, topic) in &before.topics {
            for (index, old) in topic.partitions.iter().enumerate() {
                let new = partition(&metadata, name, index);
                if old.leader != B(1) {
                    assert_eq!(
                        (new.leader, new.leader_epoch),
                        (old.leader, old.leader_epoch)
                    );
                } else if name == "single" {
                    assert_eq!((new.leader, new.leader_epoch), (B(1), old.leader_epoch + 1));
                } else {
                    assert_eq!((new.leader, new.leader_epoch), (B(2), old.leader_epoch + 1));
                    assert_eq!(new.isr, vec![B(2)]);
                }
            }
        }
        let stale = MetadataCommand::FenceBroker {
            broker_id: B(1),
            incarnation: Uuid::from_u128(1),
        };
        let before_stale = metadata.clone();
        assert_eq!(
            metadata.apply(stale),
            Err(MetadataError::StaleIncarnation { broker_id: B(1) })
        );
        assert_eq!(metadata, before_stale);
    }

    #[test]
    fn preferred_leaders_return_once_they_are_in_sync_and_alive() {
        let mut metadata = cluster(3);
        metadata.apply(create("orders", 3, 3)).unwrap();
        metadata.apply(fence(&metadata, B(1))).unwrap();
        metadata.apply(unfence(&metadata, B(1))).unwrap();
        assert!(
            !metadata.preferred_leaders_wait(),
            "broker 1 is not in sync yet"
        );
        let version = metadata.metadata_version;
        metadata
            .apply(MetadataCommand::ElectPreferredLeaders)
            .unwrap();
        assert_eq!(metadata.metadata_version, version, "nothing to elect");

        // What replication does once broker 1 catches up.
        for index in 0..3 {
            let current = partition(&metadata, "orders", index);
            if !current.isr.contains(&B(1)) {
                let isr = [current.isr.clone(), vec![B(1)]].concat();
                metadata
                    .apply(alter_isr("orders", index, &current, isr))
                    .unwrap();
            }
        }
        assert!(metadata.preferred_leaders_wait());
        let before = metadata.clone();
        metadata
            .apply(MetadataCommand::ElectPreferredLeaders)
            .unwrap();
        check_invariants(&metadata);
        for (index, old) in before.topics["orders"].partitions.iter().enumerate() {
            let new = partition(&metadata, "orders", index);
            assert_eq!(new.leader, new.replicas[0]);
            let moved = old.leader != new.leader;
            assert_eq!(new.leader_epoch, old.leader_epoch + moved as i32);
        }
        assert!(!metadata.preferred_leaders_wait());
    }

    #[test]
    fn random_membership_changes_never_give_one_epoch_two_leaders() {
        let mut metadata = cluster(3);
        metadata.apply(create("single", 6, 1)).unwrap();
        metadata.apply(create("pair", 6, 2)).unwrap();
        metadata.apply(create("triple", 6, 3)).unwrap();
        metadata.apply(create_unclean("unclean", 6, 2)).unwrap();
        let mut leaders: BTreeMap<(String, usize, LeaderEpoch), BrokerId> = BTreeMap::new();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |bound: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % bound
        };
        for step in 0..5_000u128 {
            let broker_id = B(1 + next(3) as i32);
            let command = match next(6) {
                0 => fence(&metadata, broker_id),
                5 => MetadataCommand::ElectUncleanLeader {
                    topic: "unclean".into(),
                    partition: next(6) as u32,
                },
                1 => unfence(&metadata, broker_id),
                2 => register(broker_id, 1_000 + step),
                3 => MetadataCommand::ElectPreferredLeaders,
                _ => {
                    // A leader lets an alive replica back into its ISR.
                    let topic = ["single", "pair", "triple", "unclean"][next(4) as usize];
                    let index = next(6) as usize;
                    let current = partition(&metadata, topic, index);
                    let joining = current.replicas[next(current.replicas.len() as u64) as usize];
                    let alive = !metadata.brokers[&joining].fenced;
                    if current.leader == NO_LEADER || current.isr.contains(&joining) || !alive {
                        continue;
                    }
                    let isr = [current.isr.clone(), vec![joining]].concat();
                    alter_isr(topic, index, &current, isr)
                }
            };
            metadata.apply(command).unwrap();
            check_invariants(&metadata);
            for (name, topic) in &metadata.topics {
                for (index, partition) in topic.partitions.iter().enumerate() {
                    if partition.leader == NO_LEADER {
                        continue;
                    }
                    let key = (name.clone(), index, partition.leader_epoch);
                    let first = *leaders.entry(key.clone()).or_insert(partition.leader);
                    assert_eq!(first, partition.leader, "{key:?} had leader {first}");
                }
            }
        }
    }

    #[test]
    fn unclean_election_gives_a_lost_partition_to_an_out_of_sync_replica_only_if_enabled() {
        let mut metadata = cluster(2);
        metadata.apply(create("safe", 1, 2)).unwrap();
        metadata.apply(create_unclean("risky", 1, 2)).unwrap();
        // Broker 1 falls behind on both (fenced), then broker 2 dies too:
        // the ISR of each is whichever was left, and neither has a leader.
        metadata.apply(fence(&metadata, B(1))).unwrap();
        metadata.apply(fence(&metadata, B(2))).unwrap();
        assert!(
            metadata.unclean_election_candidates().is_empty(),
            "nobody alive"
        );
        let lost = partition(&metadata, "risky", 0);
        assert_eq!((lost.leader, lost.isr.clone()), (NO_LEADER, vec![B(2)]));
        // Only broker 1, out of sync, comes back.
        metadata.apply(unfence(&metadata, B(1))).unwrap();
        assert_eq!(partition(&metadata, "safe", 0).leader, NO_LEADER);
        assert_eq!(
            metadata.unclean_election_candidates(),
            vec![("risky".to_string(), 0, vec![B(2)])]
        );
        let elect = |topic: &str| MetadataCommand::ElectUncleanLeader {
            topic: topic.into(),
            partition: 0,
        };
        assert_eq!(
            metadata.apply(elect("safe")),
            Err(MetadataError::UncleanElectionDisabled("safe".into()))
        );
        assert_eq!(partition(&metadata, "safe", 0).leader, NO_LEADER);
        metadata.apply(elect("risky")).unwrap();
        let elected = partition(&metadata, "risky", 0);
        assert_eq!((elected.leader, elected.isr.clone()), (B(1), vec![B(1)]));
        assert_eq!(elected.leader_epoch, lost.leader_epoch + 1);
        check_invariants(&metadata);
        // Done once: a second election changes nothing.
        let version = metadata.metadata_version;
        metadata.apply(elect("risky")).unwrap();
        assert_eq!(metadata.metadata_version, version);
        assert!(metadata.unclean_election_candidates().is_empty());
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
