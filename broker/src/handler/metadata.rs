//! Metadata: brokers, controller, topics and their partitions' leaders,
//! replicas and ISR, straight from the controller's committed metadata.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{MetadataRequest, MetadataResponse, TopicName};

use std::collections::BTreeMap;

use tracing::{debug, info, warn};
use uuid::Uuid;

use super::error_code;
use super::{commit, str_bytes, Context};
use crate::controller::metadata::{validate_topic_name, MetadataCommand, TopicRecord};
use crate::group::OFFSETS_TOPIC;

pub async fn handle(
    context: &Context,
    request: MetadataRequest,
    api_version: i16,
    listener: &str,
) -> MetadataResponse {
    // Versions before 4 have no flag: they always asked for creation.
    if context.topic_defaults.auto_create && (api_version < 4 || request.allow_auto_topic_creation)
    {
        create_missing(context, &request).await;
    }
    let metadata = context.controller.metadata();
    let brokers = metadata
        .alive_broker_records()
        .filter_map(|broker| {
            let (host, port) = broker.endpoint(listener)?;
            Some(
                MetadataResponseBroker::default()
                    .with_node_id(broker.broker_id.into())
                    .with_host(str_bytes(host.to_string()))
                    .with_port(port as i32),
            )
        })
        .collect();
    // Null (v1+) or an empty list (v0 only) asks for every topic.
    let all_topics = match &request.topics {
        None => true,
        Some(requested) => requested.is_empty() && api_version == 0,
    };
    let topics = match request.topics {
        _ if all_topics => metadata.topics.values().map(describe).collect(),
        None => Vec::new(),
        // v10+ may name a topic by id alone (consumer-protocol members
        // learn their assignment as ids).
        Some(requested) => requested
            .into_iter()
            .map(|topic| match topic.name {
                Some(name) => match metadata.topics.get(name.0.as_str()) {
                    Some(record) => describe(record),
                    None => MetadataResponseTopic::default()
                        .with_name(Some(name))
                        .with_error_code(error_code::UNKNOWN_TOPIC_OR_PARTITION),
                },
                None => match metadata
                    .topics
                    .values()
                    .find(|record| record.topic_id == topic.topic_id)
                {
                    Some(record) => describe(record),
                    None => MetadataResponseTopic::default()
                        .with_topic_id(topic.topic_id)
                        .with_error_code(error_code::UNKNOWN_TOPIC_ID),
                },
            })
            .collect(),
    };
    // Fields a version does not have must stay at their defaults.
    let mut response = MetadataResponse::default()
        .with_brokers(brokers)
        .with_topics(topics);
    if api_version >= 1 {
        response = response.with_controller_id(context.controller_id().into());
    }
    if api_version >= 2 {
        response = response.with_cluster_id(Some(str_bytes(context.cluster_id.clone())));
    }
    if api_version < 7 {
        response
            .topics
            .iter_mut()
            .flat_map(|topic| &mut topic.partitions)
            .for_each(|partition| partition.leader_epoch = -1);
    }
    if api_version < 10 {
        response
            .topics
            .iter_mut()
            .for_each(|topic| topic.topic_id = Uuid::nil());
    }
    response
}

/// With `auto.create.topics.enable`: creates the requested topics that do
/// not exist, with the broker's default partitions and replication factor.
/// One that cannot be created (a bad name, too few brokers) is answered as
/// unknown, and the refusal is logged.
async fn create_missing(context: &Context, request: &MetadataRequest) {
    let Some(requested) = &request.topics else {
        return;
    };
    let missing: Vec<String> = {
        let metadata = context.controller.metadata();
        requested
            .iter()
            .filter_map(|topic| topic.name.as_ref())
            .map(|name| name.0.to_string())
            .filter(|name| !metadata.topics.contains_key(name) && name != OFFSETS_TOPIC)
            .collect()
    };
    if missing.is_empty() {
        return;
    }
    let defaults = context.topic_defaults;
    for name in missing {
        if let Err(error) = validate_topic_name(&name) {
            debug!(topic = %name, %error, "not creating a topic a Metadata request named");
            continue;
        }
        let command = MetadataCommand::CreateTopic {
            name: name.clone(),
            topic_id: Uuid::new_v4(),
            partition_count: defaults.partitions,
            replication_factor: defaults.replication_factor,
            configs: BTreeMap::new(),
        };
        let committed = commit(context, command).await;
        if committed.is_ok() {
            info!(topic = %name, partitions = defaults.partitions, replication_factor = defaults.replication_factor,
                "created a topic a client asked for (auto.create.topics.enable)");
        } else if committed.error_code != error_code::TOPIC_ALREADY_EXISTS {
            warn!(topic = %name, error = ?committed.error_message, "cannot create a topic a client asked for");
        }
    }
    context.reconcile_replicas().await;
}

fn describe(topic: &TopicRecord) -> MetadataResponseTopic {
    let partitions = topic
        .partitions
        .iter()
        .enumerate()
        .map(|(index, partition)| {
            MetadataResponsePartition::default()
                .with_partition_index(index as i32)
                .with_leader_id(partition.leader.into())
                .with_leader_epoch(partition.leader_epoch.0)
                .with_replica_nodes(partition.replicas.iter().copied().map(Into::into).collect())
                .with_isr_nodes(partition.isr.iter().copied().map(Into::into).collect())
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(topic.name.clone()))))
        .with_topic_id(topic.topic_id)
        .with_is_internal(topic.name == OFFSETS_TOPIC)
        .with_partitions(partitions)
}
