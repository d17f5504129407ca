//! OffsetDelete: a group without members forgets its committed offsets
//! of some partitions (tombstones in `__consumer_offsets`); a group with
//! members keeps them (`GROUP_SUBSCRIBED_TO_TOPIC`).

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use super::{error_code, Context};
use crate::group::CoordinatorError;

pub async fn handle(context: &Context, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group = request.group_id.0.to_string();
    let partitions: Vec<(String, i32)> = request
        .topics
        .iter()
        .flat_map(|topic| {
            topic
                .partitions
                .iter()
                .map(|partition| (topic.name.0.to_string(), partition.partition_index))
        })
        .collect();
    let outcome = match context.groups.led_for(&group) {
        Ok(led) => led.delete_offsets(&group, &partitions).await,
        Err(code) => Err(code),
    };
    let (group_code, partition_code) = match outcome {
        Ok(()) => (0, 0),
        // Members may be reading these partitions: each is refused.
        Err(CoordinatorError::GroupSubscribedToTopic) => (0, error_code::GROUP_SUBSCRIBED_TO_TOPIC),
        Err(error) => (error_code::for_coordinator(&error), 0),
    };
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            OffsetDeleteResponseTopic::default()
                .with_partitions(
                    topic
                        .partitions
                        .iter()
                        .map(|partition| {
                            OffsetDeleteResponsePartition::default()
                                .with_partition_index(partition.partition_index)
                                .with_error_code(partition_code)
                        })
                        .collect(),
                )
                .with_name(topic.name)
        })
        .collect();
    OffsetDeleteResponse::default()
        .with_error_code(group_code)
        .with_topics(topics)
}
