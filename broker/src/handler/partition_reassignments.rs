//! AlterPartitionReassignments and ListPartitionReassignments: move a
//! partition's replicas to other brokers (or change how many it has) while
//! it serves. The controller adds the new replicas, which copy the log as
//! followers and join the ISR; once the ISR holds every target replica the
//! old ones leave and delete their copies (see
//! `MetadataCommand::ReassignPartition`).

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};

use super::error_code;
use super::{commit, str_bytes, Context};
use crate::controller::metadata::{self, MetadataCommand};

pub async fn alter(
    context: &Context,
    request: AlterPartitionReassignmentsRequest,
    api_version: i16,
) -> AlterPartitionReassignmentsResponse {
    let mut responses = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in topic.partitions {
            let response = ReassignablePartitionResponse::default()
                .with_partition_index(partition.partition_index);
            let current = context
                .controller
                .metadata()
                .topics
                .get(&name)
                .and_then(|record| {
                    record
                        .partitions
                        .get(usize::try_from(partition.partition_index).ok()?)
                })
                .map(|record| record.replicas.len());
            let Some(current_count) = current else {
                partitions.push(response.with_error_code(error_code::UNKNOWN_TOPIC_OR_PARTITION));
                continue;
            };
            let target: Option<Vec<metadata::BrokerId>> = partition.replicas.map(|replicas| {
                replicas
                    .into_iter()
                    .map(|broker| metadata::BrokerId(broker.0))
                    .collect()
            });
            // Before v1 a client cannot have asked for a new replica count.
            let count_changes = target
                .as_ref()
                .is_some_and(|target| target.len() != current_count);
            if count_changes && api_version >= 1 && !request.allow_replication_factor_change {
                partitions.push(
                    response
                        .with_error_code(error_code::INVALID_REPLICATION_FACTOR)
                        .with_error_message(Some(str_bytes(
                            "the target changes the replication factor, which the request does not allow",
                        ))),
                );
                continue;
            }
            let command = MetadataCommand::ReassignPartition {
                topic: name.clone(),
                partition: partition.partition_index as u32,
                target,
            };
            let committed = commit(context, command).await;
            partitions.push(
                response
                    .with_error_code(committed.error_code)
                    .with_error_message(committed.error_message),
            );
        }
        responses.push(
            ReassignableTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    context.reconcile_replicas().await;
    AlterPartitionReassignmentsResponse::default().with_responses(responses)
}

pub fn list(
    context: &Context,
    request: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let metadata = context.controller.metadata();
    let wanted = |topic: &str, partition: i32| match &request.topics {
        None => true,
        Some(topics) => topics.iter().any(|wanted| {
            wanted.name.as_str() == topic && wanted.partition_indexes.contains(&partition)
        }),
    };
    let topics = metadata
        .topics
        .values()
        .filter_map(|topic| {
            let partitions: Vec<OngoingPartitionReassignment> = topic
                .partitions
                .iter()
                .enumerate()
                .filter(|(index, _)| wanted(&topic.name, *index as i32))
                .filter_map(|(index, record)| {
                    let reassignment = record.reassignment.as_ref()?;
                    let ids = |brokers: Vec<metadata::BrokerId>| -> Vec<BrokerId> {
                        brokers.into_iter().map(Into::into).collect()
                    };
                    Some(
                        OngoingPartitionReassignment::default()
                            .with_partition_index(index as i32)
                            .with_replicas(ids(record.replicas.clone()))
                            .with_adding_replicas(ids(reassignment.adding()))
                            .with_removing_replicas(ids(reassignment.removing())),
                    )
                })
                .collect();
            (!partitions.is_empty()).then(|| {
                OngoingTopicReassignment::default()
                    .with_name(TopicName(str_bytes(topic.name.clone())))
                    .with_partitions(partitions)
            })
        })
        .collect();
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}
