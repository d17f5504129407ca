//! DescribeProducers: the idempotent producers each partition led here
//! knows, with their epoch, last sequence and last timestamp.

use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};

use super::Context;

pub fn handle(context: &Context, request: DescribeProducersRequest) -> DescribeProducersResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partition_indexes
                .iter()
                .map(|&index| {
                    let response = PartitionResponse::default().with_partition_index(index);
                    let partition = match context.leader_of(&topic.name.0, index) {
                        Ok((partition, _)) => partition,
                        Err(code) => return response.with_error_code(code),
                    };
                    let producers = partition
                        .producers()
                        .into_iter()
                        .map(|(producer_id, entry)| {
                            ProducerState::default()
                                .with_producer_id(ProducerId(producer_id.0))
                                .with_producer_epoch(entry.producer_epoch.into())
                                .with_last_sequence(entry.last_sequence().unwrap_or(-1))
                                .with_last_timestamp(entry.last_timestamp_ms)
                                .with_coordinator_epoch(-1)
                                .with_current_txn_start_offset(entry.txn_first_offset.unwrap_or(-1))
                        })
                        .collect();
                    response.with_active_producers(producers)
                })
                .collect();
            TopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}
