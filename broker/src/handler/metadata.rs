//! Metadata: brokers, controller, topics and their partitions' leaders,
//! replicas and ISR, straight from the controller's committed metadata.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};

use uuid::Uuid;

use super::{str_bytes, Context};
use crate::controller::metadata::TopicRecord;
use crate::group::OFFSETS_TOPIC;
use crate::server::error_code;

pub fn handle(context: &Context, request: MetadataRequest, api_version: i16) -> MetadataResponse {
    let metadata = context.controller.metadata();
    let brokers = metadata
        .alive_broker_records()
        .map(|broker| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(broker.broker_id))
                .with_host(str_bytes(broker.host.clone()))
                .with_port(broker.port as i32)
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
        Some(requested) => requested
            .into_iter()
            .filter_map(|topic| topic.name)
            .map(|name| match metadata.topics.get(name.0.as_str()) {
                Some(record) => describe(record),
                None => MetadataResponseTopic::default()
                    .with_name(Some(name))
                    .with_error_code(error_code::UNKNOWN_TOPIC_OR_PARTITION),
            })
            .collect(),
    };
    // Fields a version does not have must stay at their defaults.
    let mut response = MetadataResponse::default()
        .with_brokers(brokers)
        .with_topics(topics);
    if api_version >= 1 {
        response = response.with_controller_id(BrokerId(context.controller_id()));
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

fn describe(topic: &TopicRecord) -> MetadataResponseTopic {
    let partitions = topic
        .partitions
        .iter()
        .enumerate()
        .map(|(index, partition)| {
            MetadataResponsePartition::default()
                .with_partition_index(index as i32)
                .with_leader_id(BrokerId(partition.leader))
                .with_leader_epoch(partition.leader_epoch)
                .with_replica_nodes(partition.replicas.iter().copied().map(BrokerId).collect())
                .with_isr_nodes(partition.isr.iter().copied().map(BrokerId).collect())
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(topic.name.clone()))))
        .with_topic_id(topic.topic_id)
        .with_is_internal(topic.name == OFFSETS_TOPIC)
        .with_partitions(partitions)
}
