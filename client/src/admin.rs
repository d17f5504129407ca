//! Cluster administration: topics, partitions, configs, consumer groups,
//! the cluster itself.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    ApiKey, CreatePartitionsRequest, CreateTopicsRequest, DeleteGroupsRequest, DeleteTopicsRequest,
    DescribeClusterRequest, DescribeConfigsRequest, DescribeGroupsRequest, DescribeQuorumRequest,
    GroupId, IncrementalAlterConfigsRequest, ListGroupsRequest,
};
use kafka_protocol::protocol::StrBytes;

use crate::assignor::{self, TopicPartition};
use crate::cluster::{topic_name, ClientConfig, Cluster, TopicInfo};
use crate::error::{check, Error, Result};
use crate::group::{find_coordinator, GroupConfig, Membership};

/// Kafka's resource type for topics in config APIs.
const RESOURCE_TOPIC: i8 = 2;
/// DescribeConfigs `config_source` of a value nobody set.
const SOURCE_DEFAULT: i8 = 5;

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
}

/// A broker as DescribeCluster reports it.
/// The leader of `partition` of the topic `info` describes; `operation`
/// names what needed it in the error when there is none.
fn leader_of(info: &TopicInfo, partition: i32, operation: &str) -> Result<i32> {
    info.partitions
        .iter()
        .find(|info| info.partition == partition)
        .ok_or_else(|| Error::UnknownPartition {
            topic: info.name.clone(),
            partition,
        })?
        .leader
        .ok_or_else(|| {
            Error::broker(
                format!("{operation} of {}-{partition}", info.name),
                ResponseError::LeaderNotAvailable.code(),
                None,
            )
        })
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

/// Administers a cluster over the Kafka protocol.
///
/// ```no_run
/// # async fn run() -> Result<(), strata_client::Error> {
/// use strata_client::{Admin, NewTopic};
///
/// let admin = Admin::connect("127.0.0.1:9092").await?;
/// admin.create_topic(&NewTopic::new("orders", 3, 1).config("retention.ms", "86400000")).await?;
/// for topic in admin.list_topics().await? {
///     println!("{} ({} partitions)", topic.name, topic.partitions.len());
/// }
/// # Ok(())
/// # }
/// ```
pub struct Admin {
    cluster: Arc<Cluster>,
}

impl Admin {
    pub async fn connect(bootstrap: &str) -> Result<Admin> {
        Admin::with_config(ClientConfig::new(bootstrap)).await
    }

    pub async fn with_config(config: ClientConfig) -> Result<Admin> {
        Ok(Admin {
            cluster: Cluster::connect(config).await?,
        })
    }

    fn timeout_ms(&self) -> i32 {
        self.cluster
            .config()
            .request_timeout
            .as_millis()
            .min(i32::MAX as u128) as i32
    }

    pub async fn create_topic(&self, topic: &NewTopic) -> Result<()> {
        let connection = self.cluster.any_connection().await?;
        let configs = topic
            .configs
            .iter()
            .map(|(key, value)| {
                CreatableTopicConfig::default()
                    .with_name(StrBytes::from_string(key.clone()))
                    .with_value(Some(StrBytes::from_string(value.clone())))
            })
            .collect();
        let request = CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default()
                .with_name(topic_name(&topic.name))
                .with_num_partitions(topic.partitions)
                .with_replication_factor(topic.replication_factor)
                .with_configs(configs)])
            .with_timeout_ms(self.timeout_ms());
        let response = self
            .cluster
            .timed("CreateTopics", connection.send(&request))
            .await?;
        let result = response
            .topics
            .first()
            .ok_or_else(|| connection.missing("CreateTopics"))?;
        check(
            || format!("create topic {:?}", topic.name),
            result.error_code,
            result.error_message.as_ref(),
        )
    }

    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let connection = self.cluster.any_connection().await?;
        let request = DeleteTopicsRequest::default()
            .with_topic_names(vec![topic_name(name)])
            .with_timeout_ms(self.timeout_ms());
        let response = self
            .cluster
            .timed("DeleteTopics", connection.send(&request))
            .await?;
        let result = response
            .responses
            .first()
            .ok_or_else(|| connection.missing("DeleteTopics"))?;
        if result.error_code == ResponseError::UnknownTopicOrPartition.code() {
            return Err(Error::UnknownTopic(name.to_string()));
        }
        check(
            || format!("delete topic {name:?}"),
            result.error_code,
            result.error_message.as_ref(),
        )
    }

    /// Every topic, sorted by name.
    pub async fn list_topics(&self) -> Result<Vec<TopicInfo>> {
        let mut topics: Vec<TopicInfo> = self
            .cluster
            .refresh(&[])
            .await?
            .into_iter()
            .filter_map(Result::ok)
            .map(|info| (*info).clone())
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    /// A topic's partitions with leaders, replicas, ISR and offsets.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        let info = self
            .cluster
            .refresh(&[name])
            .await?
            .into_iter()
            .next()
            .unwrap_or_else(|| Err(Error::UnknownTopic(name.to_string())))?;
        let mut offsets = Vec::with_capacity(info.partitions.len());
        for partition in &info.partitions {
            let result = match partition.leader {
                Some(leader) => {
                    self.partition_offsets(name, partition.partition, leader)
                        .await
                }
                None => Err(Error::broker(
                    format!("{name}-{}", partition.partition),
                    ResponseError::LeaderNotAvailable.code(),
                    None,
                )),
            };
            offsets.push(result.map_err(|error| error.to_string()));
        }
        Ok(TopicDescription {
            topic: (*info).clone(),
            offsets,
        })
    }

    async fn partition_offsets(
        &self,
        topic: &str,
        partition: i32,
        leader: i32,
    ) -> Result<PartitionOffsets> {
        let log_start_offset = self
            .cluster
            .list_offset(leader, topic, partition, -2)
            .await?;
        let high_watermark = self
            .cluster
            .list_offset(leader, topic, partition, -1)
            .await?;
        Ok(PartitionOffsets {
            partition,
            log_start_offset,
            high_watermark,
        })
    }

    /// The first offset of `topic`-`partition` whose record's timestamp is
    /// at or after `timestamp_ms`; `None` when no record is that recent.
    pub async fn offset_for_time(
        &self,
        topic: &str,
        partition: i32,
        timestamp_ms: i64,
    ) -> Result<Option<i64>> {
        let info = self.cluster.refresh(&[topic]).await?.remove(0)?;
        let leader = leader_of(&info, partition, "list offsets")?;
        let offset = self
            .cluster
            .list_offset(leader, topic, partition, timestamp_ms)
            .await?;
        Ok((offset >= 0).then_some(offset))
    }

    /// Moves partitions of `topic` to new replica sets (`Some(brokers)`,
    /// the first the preferred leader), or cancels a move (`None`). The
    /// move runs in the background: the new replicas copy the log, and the
    /// old ones leave once every new one is in sync
    /// ([`Admin::list_reassignments`] shows what still moves).
    pub async fn reassign_partitions(
        &self,
        topic: &str,
        moves: &[(i32, Option<Vec<i32>>)],
    ) -> Result<()> {
        use kafka_protocol::messages::alter_partition_reassignments_request::{
            ReassignablePartition, ReassignableTopic,
        };
        use kafka_protocol::messages::{AlterPartitionReassignmentsRequest, BrokerId};
        let connection = self.cluster.any_connection().await?;
        let partitions = moves
            .iter()
            .map(|(partition, replicas)| {
                ReassignablePartition::default()
                    .with_partition_index(*partition)
                    .with_replicas(
                        replicas
                            .as_ref()
                            .map(|replicas| replicas.iter().copied().map(BrokerId).collect()),
                    )
            })
            .collect();
        let request = AlterPartitionReassignmentsRequest::default()
            .with_timeout_ms(30_000)
            .with_allow_replication_factor_change(true)
            .with_topics(vec![ReassignableTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(partitions)]);
        let response = self
            .cluster
            .timed("AlterPartitionReassignments", connection.send(&request))
            .await?;
        check(
            || format!("reassign partitions of {topic}"),
            response.error_code,
            response.error_message.as_ref(),
        )?;
        for partition in response
            .responses
            .iter()
            .flat_map(|topic| &topic.partitions)
        {
            check(
                || format!("reassign {topic}-{}", partition.partition_index),
                partition.error_code,
                partition.error_message.as_ref(),
            )?;
        }
        Ok(())
    }

    /// Every partition whose replicas are moving.
    pub async fn list_reassignments(&self) -> Result<Vec<PartitionReassignment>> {
        use kafka_protocol::messages::ListPartitionReassignmentsRequest;
        let connection = self.cluster.any_connection().await?;
        let request = ListPartitionReassignmentsRequest::default().with_timeout_ms(30_000);
        let response = self
            .cluster
            .timed("ListPartitionReassignments", connection.send(&request))
            .await?;
        check(
            || "list reassignments".to_string(),
            response.error_code,
            response.error_message.as_ref(),
        )?;
        let ids = |brokers: &[kafka_protocol::messages::BrokerId]| -> Vec<i32> {
            brokers.iter().map(|broker| broker.0).collect()
        };
        Ok(response
            .topics
            .iter()
            .flat_map(|topic| {
                topic
                    .partitions
                    .iter()
                    .map(|partition| PartitionReassignment {
                        topic: topic.name.to_string(),
                        partition: partition.partition_index,
                        replicas: ids(&partition.replicas),
                        adding: ids(&partition.adding_replicas),
                        removing: ids(&partition.removing_replicas),
                    })
            })
            .collect())
    }

    /// Elects leaders: each partition's preferred replica (the first), or
    /// with `unclean`, any live replica where the topic allows losing what
    /// only the out-of-sync ones had. `partitions` of `None`: every one.
    pub async fn elect_leaders(
        &self,
        partitions: Option<&[(String, i32)]>,
        unclean: bool,
    ) -> Result<Vec<Election>> {
        use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
        use kafka_protocol::messages::ElectLeadersRequest;
        let connection = self.cluster.any_connection().await?;
        let topics = partitions.map(|partitions| {
            let mut by_topic: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
            for (topic, partition) in partitions {
                by_topic.entry(topic).or_default().push(*partition);
            }
            by_topic
                .into_iter()
                .map(|(topic, partitions)| {
                    TopicPartitions::default()
                        .with_topic(topic_name(topic))
                        .with_partitions(partitions)
                })
                .collect()
        });
        let request = ElectLeadersRequest::default()
            .with_election_type(i8::from(unclean))
            .with_topic_partitions(topics)
            .with_timeout_ms(30_000);
        let response = self
            .cluster
            .timed("ElectLeaders", connection.send(&request))
            .await?;
        check(|| "elect leaders".to_string(), response.error_code, None)?;
        let mut elections: Vec<Election> = response
            .replica_election_results
            .iter()
            .flat_map(|topic| {
                topic.partition_result.iter().map(|result| Election {
                    topic: topic.topic.to_string(),
                    partition: result.partition_id,
                    outcome: match result.error_code {
                        0 => ElectionOutcome::Elected,
                        code if code == ResponseError::ElectionNotNeeded.code() => {
                            ElectionOutcome::NotNeeded
                        }
                        code => ElectionOutcome::Failed(
                            Error::broker(
                                "elect a leader",
                                code,
                                result.error_message.as_ref().map(ToString::to_string),
                            )
                            .to_string(),
                        ),
                    },
                })
            })
            .collect();
        elections.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(elections)
    }

    /// Every live broker's log directory.
    pub async fn describe_log_dirs(&self) -> Result<Vec<LogDir>> {
        use kafka_protocol::messages::DescribeLogDirsRequest;
        let brokers = self.describe_cluster().await?.brokers;
        let mut dirs = Vec::new();
        for broker in brokers.iter().filter(|broker| !broker.fenced) {
            let connection = self.cluster.connection(broker.id).await?;
            let response = self
                .cluster
                .timed(
                    "DescribeLogDirs",
                    connection.send(&DescribeLogDirsRequest::default().with_topics(None)),
                )
                .await?;
            check(
                || format!("describe the log directories of broker {}", broker.id),
                response.error_code,
                None,
            )?;
            for result in &response.results {
                let mut replicas: Vec<(String, i32, i64)> = result
                    .topics
                    .iter()
                    .flat_map(|topic| {
                        topic.partitions.iter().map(|partition| {
                            (
                                topic.name.to_string(),
                                partition.partition_index,
                                partition.partition_size,
                            )
                        })
                    })
                    .collect();
                replicas.sort();
                dirs.push(LogDir {
                    broker: broker.id,
                    path: result.log_dir.to_string(),
                    total_bytes: result.total_bytes,
                    usable_bytes: result.usable_bytes,
                    replicas,
                });
            }
        }
        Ok(dirs)
    }

    /// Grows `name` to `partition_count` partitions.
    pub async fn create_partitions(&self, name: &str, partition_count: i32) -> Result<()> {
        let connection = self.cluster.any_connection().await?;
        let request = CreatePartitionsRequest::default()
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(topic_name(name))
                .with_count(partition_count)
                .with_assignments(None)])
            .with_timeout_ms(self.timeout_ms());
        let response = self
            .cluster
            .timed("CreatePartitions", connection.send(&request))
            .await?;
        let result = response
            .results
            .first()
            .ok_or_else(|| connection.missing("CreatePartitions"))?;
        if result.error_code == ResponseError::UnknownTopicOrPartition.code() {
            return Err(Error::UnknownTopic(name.to_string()));
        }
        check(
            || format!("grow topic {name:?} to {partition_count} partitions"),
            result.error_code,
            result.error_message.as_ref(),
        )
    }

    /// Every config of topic `name`, sorted by key.
    pub async fn describe_configs(&self, name: &str) -> Result<Vec<ConfigEntry>> {
        let connection = self.cluster.any_connection().await?;
        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(StrBytes::from_string(name.to_string()))
                .with_configuration_keys(None),
        ]);
        let response = self
            .cluster
            .timed("DescribeConfigs", connection.send(&request))
            .await?;
        let result = response
            .results
            .first()
            .ok_or_else(|| connection.missing("DescribeConfigs"))?;
        if result.error_code == ResponseError::UnknownTopicOrPartition.code() {
            return Err(Error::UnknownTopic(name.to_string()));
        }
        check(
            || format!("describe configs of {name:?}"),
            result.error_code,
            result.error_message.as_ref(),
        )?;
        let mut entries: Vec<ConfigEntry> = result
            .configs
            .iter()
            .map(|config| ConfigEntry {
                name: config.name.to_string(),
                value: config.value.as_ref().map(ToString::to_string),
                is_default: config.config_source == SOURCE_DEFAULT,
                read_only: config.read_only,
            })
            .collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// Sets (`Some`) or removes (`None`, back to the default) topic configs.
    pub async fn alter_configs(
        &self,
        name: &str,
        changes: &[(String, Option<String>)],
    ) -> Result<()> {
        const OPERATION_SET: i8 = 0;
        const OPERATION_DELETE: i8 = 1;
        let connection = self.cluster.any_connection().await?;
        let configs = changes
            .iter()
            .map(|(key, value)| {
                AlterableConfig::default()
                    .with_name(StrBytes::from_string(key.clone()))
                    .with_config_operation(if value.is_some() {
                        OPERATION_SET
                    } else {
                        OPERATION_DELETE
                    })
                    .with_value(value.clone().map(StrBytes::from_string))
            })
            .collect();
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(StrBytes::from_string(name.to_string()))
                .with_configs(configs),
        ]);
        let response = self
            .cluster
            .timed("IncrementalAlterConfigs", connection.send(&request))
            .await?;
        let result = response
            .responses
            .first()
            .ok_or_else(|| connection.missing("IncrementalAlterConfigs"))?;
        if result.error_code == ResponseError::UnknownTopicOrPartition.code() {
            return Err(Error::UnknownTopic(name.to_string()));
        }
        check(
            || format!("alter configs of {name:?}"),
            result.error_code,
            result.error_message.as_ref(),
        )
    }

    pub async fn describe_cluster(&self) -> Result<ClusterDescription> {
        let connection = self.cluster.any_connection().await?;
        // Fenced brokers are listed from v2 on, when asked for.
        let include_fenced = connection.version(ApiKey::DescribeCluster)? >= 2;
        let request = DescribeClusterRequest::default().with_include_fenced_brokers(include_fenced);
        let response = self
            .cluster
            .timed("DescribeCluster", connection.send(&request))
            .await?;
        check(
            || "describe cluster".to_string(),
            response.error_code,
            response.error_message.as_ref(),
        )?;
        let mut brokers: Vec<ClusterBroker> = response
            .brokers
            .iter()
            .map(|broker| ClusterBroker {
                id: broker.broker_id.0,
                host: broker.host.to_string(),
                port: broker.port,
                rack: broker.rack.as_ref().map(ToString::to_string),
                fenced: broker.is_fenced,
            })
            .collect();
        brokers.sort_by_key(|broker| broker.id);
        Ok(ClusterDescription {
            cluster_id: response.cluster_id.to_string(),
            controller_id: (response.controller_id.0 >= 0).then_some(response.controller_id.0),
            brokers,
        })
    }

    /// The metadata controller's Raft quorum: leader, term, applied offset,
    /// voters.
    pub async fn describe_quorum(&self) -> Result<QuorumDescription> {
        use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
        let connection = self.cluster.any_connection().await?;
        let request = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
            .with_topic_name(topic_name(strata_protocol::METADATA_TOPIC))
            .with_partitions(vec![PartitionData::default().with_partition_index(0)])]);
        let response = self
            .cluster
            .timed("DescribeQuorum", connection.send(&request))
            .await?;
        check(
            || "describe the metadata quorum".to_string(),
            response.error_code,
            response.error_message.as_ref(),
        )?;
        let partition = response
            .topics
            .first()
            .and_then(|topic| topic.partitions.first())
            .ok_or_else(|| connection.missing("DescribeQuorum"))?;
        check(
            || "describe the metadata quorum".to_string(),
            partition.error_code,
            partition.error_message.as_ref(),
        )?;
        Ok(QuorumDescription {
            leader_id: (partition.leader_id.0 >= 0).then_some(partition.leader_id.0),
            term: partition.leader_epoch,
            high_watermark: partition.high_watermark,
            voters: partition
                .current_voters
                .iter()
                .map(|voter| (voter.replica_id.0, voter.log_end_offset))
                .collect(),
        })
    }

    /// Waits until every partition of `name` has a leader (after creation),
    /// at most `timeout`.
    /// Every consumer group, from every broker's ListGroups (each lists
    /// the groups it coordinates).
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        self.cluster.refresh(&[]).await?;
        let mut groups = Vec::new();
        for broker in self.cluster.broker_ids() {
            let connection = self.cluster.connection(broker).await?;
            let response = self
                .cluster
                .timed("ListGroups", connection.send(&ListGroupsRequest::default()))
                .await?;
            check(
                || format!("list groups on broker {broker}"),
                response.error_code,
                None,
            )?;
            groups.extend(response.groups.into_iter().map(|group| GroupListing {
                group_id: group.group_id.0.to_string(),
                state: group.group_state.to_string(),
                protocol_type: group.protocol_type.to_string(),
            }));
        }
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        groups.dedup_by(|a, b| a.group_id == b.group_id);
        Ok(groups)
    }

    /// A group's state, members and their assignments.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let coordinator = find_coordinator(&self.cluster, group).await?;
        let connection = self.cluster.connection(coordinator).await?;
        let request = DescribeGroupsRequest::default()
            .with_groups(vec![GroupId(StrBytes::from_string(group.to_string()))]);
        let response = self
            .cluster
            .timed("DescribeGroups", connection.send(&request))
            .await?;
        let described = response
            .groups
            .into_iter()
            .next()
            .ok_or_else(|| connection.missing("DescribeGroups"))?;
        check(
            || format!("describe group {group}"),
            described.error_code,
            described.error_message.as_ref(),
        )?;
        let mut members = Vec::with_capacity(described.members.len());
        for member in described.members {
            members.push(GroupMember {
                member_id: member.member_id.to_string(),
                group_instance_id: member.group_instance_id.map(|id| id.to_string()),
                client_id: member.client_id.to_string(),
                client_host: member.client_host.to_string(),
                assignment: if described.protocol_type.as_str() == "consumer" {
                    assignor::decode_assignment(&member.member_assignment)?
                } else {
                    Vec::new()
                },
            });
        }
        Ok(GroupDescription {
            group_id: group.to_string(),
            state: described.group_state.to_string(),
            protocol_type: described.protocol_type.to_string(),
            protocol: described.protocol_data.to_string(),
            coordinator,
            members,
        })
    }

    /// Every committed offset of a group: (topic, partition) → the next
    /// offset its consumers read.
    pub async fn group_offsets(&self, group: &str) -> Result<Vec<(TopicPartition, i64)>> {
        let membership = Membership::new(Arc::clone(&self.cluster), GroupConfig::new(group))?;
        Ok(membership.committed(None).await?.into_iter().collect())
    }

    /// Sets a group's committed offsets; the coordinator takes them only
    /// while the group has no members.
    pub async fn alter_group_offsets(
        &self,
        group: &str,
        offsets: &[(TopicPartition, i64)],
    ) -> Result<()> {
        let membership = Membership::new(Arc::clone(&self.cluster), GroupConfig::new(group))?;
        membership.commit(offsets).await
    }

    /// Deletes a group without members, with its committed offsets.
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        let coordinator = find_coordinator(&self.cluster, group).await?;
        let connection = self.cluster.connection(coordinator).await?;
        let request = DeleteGroupsRequest::default()
            .with_groups_names(vec![GroupId(StrBytes::from_string(group.to_string()))]);
        let response = self
            .cluster
            .timed("DeleteGroups", connection.send(&request))
            .await?;
        let result = response
            .results
            .first()
            .ok_or_else(|| connection.missing("DeleteGroups"))?;
        check(|| format!("delete group {group}"), result.error_code, None)
    }

    /// The idempotent producers each partition of `topic` knows, asked of
    /// each partition's leader, by partition and producer id.
    pub async fn describe_producers(&self, topic: &str) -> Result<Vec<ProducerDescription>> {
        use kafka_protocol::messages::describe_producers_request::TopicRequest;
        use kafka_protocol::messages::DescribeProducersRequest;
        let info = self.cluster.refresh(&[topic]).await?.remove(0)?;
        let mut by_leader: std::collections::BTreeMap<i32, Vec<i32>> = Default::default();
        for partition in &info.partitions {
            let leader = partition.leader.ok_or_else(|| {
                Error::broker(
                    format!("describe producers of {topic}-{}", partition.partition),
                    ResponseError::LeaderNotAvailable.code(),
                    None,
                )
            })?;
            by_leader
                .entry(leader)
                .or_default()
                .push(partition.partition);
        }
        let mut producers = Vec::new();
        for (leader, partitions) in by_leader {
            let connection = self.cluster.connection(leader).await?;
            let request =
                DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
                    .with_name(topic_name(topic))
                    .with_partition_indexes(partitions)]);
            let response = self
                .cluster
                .timed("DescribeProducers", connection.send(&request))
                .await?;
            for partition in response.topics.iter().flat_map(|topic| &topic.partitions) {
                check(
                    || {
                        format!(
                            "describe producers of {topic}-{}",
                            partition.partition_index
                        )
                    },
                    partition.error_code,
                    partition.error_message.as_ref(),
                )?;
                producers.extend(partition.active_producers.iter().map(|producer| {
                    ProducerDescription {
                        partition: partition.partition_index,
                        producer_id: producer.producer_id.0,
                        producer_epoch: producer.producer_epoch,
                        last_sequence: producer.last_sequence,
                        last_timestamp_ms: producer.last_timestamp,
                    }
                }));
            }
        }
        producers.sort_by_key(|producer| (producer.partition, producer.producer_id));
        Ok(producers)
    }

    /// Deletes the records of `topic` below `before` in each partition given
    /// (`-1`: everything its consumers can read now), for good: each leader
    /// moves its log start offset there. Returns each partition's new log
    /// start offset.
    pub async fn delete_records(
        &self,
        topic: &str,
        before: &[(i32, i64)],
    ) -> Result<Vec<(i32, i64)>> {
        use kafka_protocol::messages::delete_records_request::{
            DeleteRecordsPartition, DeleteRecordsTopic,
        };
        use kafka_protocol::messages::DeleteRecordsRequest;
        let info = self.cluster.refresh(&[topic]).await?.remove(0)?;
        let mut by_leader: std::collections::BTreeMap<i32, Vec<DeleteRecordsPartition>> =
            Default::default();
        for &(partition, offset) in before {
            let leader = leader_of(&info, partition, "delete records")?;
            by_leader.entry(leader).or_default().push(
                DeleteRecordsPartition::default()
                    .with_partition_index(partition)
                    .with_offset(offset),
            );
        }
        let mut low_watermarks = Vec::new();
        for (leader, partitions) in by_leader {
            let connection = self.cluster.connection(leader).await?;
            let request = DeleteRecordsRequest::default()
                .with_timeout_ms(30_000)
                .with_topics(vec![DeleteRecordsTopic::default()
                    .with_name(topic_name(topic))
                    .with_partitions(partitions)]);
            let response = self
                .cluster
                .timed("DeleteRecords", connection.send(&request))
                .await?;
            for partition in response.topics.iter().flat_map(|topic| &topic.partitions) {
                let operation =
                    || format!("delete records of {topic}-{}", partition.partition_index);
                if partition.error_code == ResponseError::OffsetOutOfRange.code() {
                    return Err(Error::broker(
                        operation(),
                        partition.error_code,
                        Some(
                            "the offset is past the high watermark (what consumers can read)"
                                .into(),
                        ),
                    ));
                }
                check(operation, partition.error_code, None)?;
                low_watermarks.push((partition.partition_index, partition.low_watermark));
            }
        }
        low_watermarks.sort_unstable();
        Ok(low_watermarks)
    }

    pub async fn wait_for_leaders(&self, name: &str, timeout: Duration) -> Result<TopicInfo> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let info = self.cluster.refresh(&[name]).await?.into_iter().next();
            if let Some(Ok(info)) = &info {
                if info
                    .partitions
                    .iter()
                    .all(|partition| partition.leader.is_some())
                {
                    return Ok((**info).clone());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout {
                    operation: "waiting for partition leaders",
                    after: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
