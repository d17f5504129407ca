//! Cluster administration: topics, partitions, configs, consumer groups,
//! the cluster itself.

mod descriptions;
mod groups;
mod transactions;
mod users;

pub use users::UserDescription;

pub use descriptions::{
    ClusterBroker, ClusterDescription, ConfigEntry, Election, ElectionOutcome, GroupDescription,
    GroupListing, GroupMember, LogDir, NewTopic, PartitionOffsets, PartitionReassignment,
    ProducerDescription, QuorumDescription, TopicDescription, TransactionDescription,
    TransactionListing, TransactionPartition,
};

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
    ApiKey, CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest,
    DescribeClusterRequest, DescribeConfigsRequest, DescribeQuorumRequest,
    IncrementalAlterConfigsRequest,
};
use kafka_protocol::protocol::StrBytes;

use crate::cluster::{topic_name, ClientConfig, Cluster, Target, TopicInfo};
use crate::consumer::Isolation;
use crate::error::{check, Error, Result};

/// Kafka's resource type for topics in config APIs.
const RESOURCE_TOPIC: i8 = 2;
/// DescribeConfigs `config_source` of a value nobody set.
const SOURCE_DEFAULT: i8 = 5;

/// A broker as DescribeCluster reports it.
/// The leader of `partition` of the topic `info` describes; `operation`
/// names what needed it in the error when there is none.
/// [`check`] for a call about topic `name`: an unknown topic is
/// [`Error::UnknownTopic`].
fn check_topic(
    name: &str,
    operation: impl FnOnce() -> String,
    code: i16,
    message: Option<&StrBytes>,
) -> Result<()> {
    if code == ResponseError::UnknownTopicOrPartition.code() {
        return Err(Error::UnknownTopic(name.to_string()));
    }
    check(operation, code, message)
}

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
        let answer = self.cluster.call(Target::Any, &request).await?;
        let response = &answer.response;
        let result = answer.first(&response.topics)?;
        check(
            || format!("create topic {:?}", topic.name),
            result.error_code,
            result.error_message.as_ref(),
        )
    }

    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let request = DeleteTopicsRequest::default()
            .with_topic_names(vec![topic_name(name)])
            .with_timeout_ms(self.timeout_ms());
        let answer = self.cluster.call(Target::Any, &request).await?;
        let response = &answer.response;
        let result = answer.first(&response.responses)?;
        check_topic(
            name,
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
            .list_offset(leader, topic, partition, -2, Isolation::ReadUncommitted)
            .await?;
        let high_watermark = self
            .cluster
            .list_offset(leader, topic, partition, -1, Isolation::ReadUncommitted)
            .await?;
        let last_stable_offset = self
            .cluster
            .list_offset(leader, topic, partition, -1, Isolation::ReadCommitted)
            .await?;
        Ok(PartitionOffsets {
            partition,
            log_start_offset,
            high_watermark,
            last_stable_offset,
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
            .list_offset(
                leader,
                topic,
                partition,
                timestamp_ms,
                Isolation::ReadUncommitted,
            )
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
        let answer = self.cluster.call(Target::Any, &request).await?;
        let response = &answer.response;
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
        let request = ListPartitionReassignmentsRequest::default().with_timeout_ms(30_000);
        let answer = self.cluster.call(Target::Any, &request).await?;
        let response = &answer.response;
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
        let answer = self.cluster.call(Target::Any, &request).await?;
        let response = &answer.response;
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
            let answer = self
                .cluster
                .call(
                    Target::Broker(broker.id),
                    &DescribeLogDirsRequest::default().with_topics(None),
                )
                .await?;
            let response = &answer.response;
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
        let request = CreatePartitionsRequest::default()
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(topic_name(name))
                .with_count(partition_count)
                .with_assignments(None)])
            .with_timeout_ms(self.timeout_ms());
        let answer = self.cluster.call(Target::Any, &request).await?;
        let response = &answer.response;
        let result = answer.first(&response.results)?;
        check_topic(
            name,
            || format!("grow topic {name:?} to {partition_count} partitions"),
            result.error_code,
            result.error_message.as_ref(),
        )
    }

    /// Every config of topic `name`, sorted by key.
    pub async fn describe_configs(&self, name: &str) -> Result<Vec<ConfigEntry>> {
        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(StrBytes::from_string(name.to_string()))
                .with_configuration_keys(None),
        ]);
        let answer = self.cluster.call(Target::Any, &request).await?;
        let response = &answer.response;
        let result = answer.first(&response.results)?;
        check_topic(
            name,
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
        let answer = self.cluster.call(Target::Any, &request).await?;
        let response = &answer.response;
        let result = answer.first(&response.responses)?;
        check_topic(
            name,
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
        let answer = self.cluster.call_on(&connection, &request).await?;
        let response = &answer.response;
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
        let request = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
            .with_topic_name(topic_name(strata_protocol::METADATA_TOPIC))
            .with_partitions(vec![PartitionData::default().with_partition_index(0)])]);
        let answer = self.cluster.call(Target::Any, &request).await?;
        let response = &answer.response;
        check(
            || "describe the metadata quorum".to_string(),
            response.error_code,
            response.error_message.as_ref(),
        )?;
        let topic = answer.first(&response.topics)?;
        let partition = answer.first(&topic.partitions)?;
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
            let request =
                DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
                    .with_name(topic_name(topic))
                    .with_partition_indexes(partitions)]);
            let answer = self.cluster.call(Target::Broker(leader), &request).await?;
            let response = &answer.response;
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
                        txn_start_offset: (producer.current_txn_start_offset >= 0)
                            .then_some(producer.current_txn_start_offset),
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
            let request = DeleteRecordsRequest::default()
                .with_timeout_ms(30_000)
                .with_topics(vec![DeleteRecordsTopic::default()
                    .with_name(topic_name(topic))
                    .with_partitions(partitions)]);
            let answer = self.cluster.call(Target::Broker(leader), &request).await?;
            let response = &answer.response;
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

    /// Waits until every partition of `name` has a leader (after creation),
    /// at most `timeout`.
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
                    operation: "waiting for partition leaders".to_string(),
                    after: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
