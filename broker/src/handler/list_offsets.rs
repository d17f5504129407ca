//! ListOffsets: earliest (-2), latest (-1: the high watermark, or the last
//! stable offset for a `read_committed` reader) or the first visible record
//! at or after a timestamp.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::error_code;
use super::Context;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
/// Kafka's `isolation_level` of a reader of committed records.
const READ_COMMITTED: i8 = 1;

pub fn handle(
    context: &Context,
    request: ListOffsetsRequest,
    api_version: i16,
) -> ListOffsetsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|requested| {
                    let response = ListOffsetsPartitionResponse::default()
                        .with_partition_index(requested.partition_index)
                        .with_timestamp(-1)
                        .with_offset(-1);
                    let (partition, leader_epoch) = match context.leader_in(
                        topic.name.0.as_str(),
                        requested.partition_index,
                        requested.current_leader_epoch,
                    ) {
                        Ok(led) => led,
                        Err(code) => return response.with_error_code(code),
                    };
                    let response = if api_version >= 4 {
                        response.with_leader_epoch(leader_epoch.0)
                    } else {
                        response
                    };
                    match requested.timestamp {
                        LATEST if request.isolation_level == READ_COMMITTED => {
                            response.with_offset(partition.last_stable_offset())
                        }
                        LATEST => response.with_offset(partition.high_watermark()),
                        EARLIEST => response.with_offset(partition.log_start_offset()),
                        timestamp => match partition.offset_for_timestamp(timestamp) {
                            Ok(Some(found)) => response
                                .with_offset(found.offset)
                                .with_timestamp(found.timestamp),
                            Ok(None) => response,
                            Err(error) => response.with_error_code(error_code::for_storage(&error)),
                        },
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}
