//! DeleteRecords: each partition's leader makes the records below an
//! offset unreadable for good and deletes the segments wholly below it
//! (`-1`: everything below the high watermark). The answer comes once the
//! leader's new log start offset is on disk; followers move theirs on
//! their next fetch.

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::error_code;
use super::Context;
use crate::group::OFFSETS_TOPIC;

pub fn handle(context: &Context, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let name = topic.name.0.to_string();
            let partitions = topic
                .partitions
                .into_iter()
                .map(|wanted| {
                    let result = DeleteRecordsPartitionResult::default()
                        .with_partition_index(wanted.partition_index)
                        .with_low_watermark(-1);
                    if name == OFFSETS_TOPIC {
                        return result.with_error_code(error_code::INVALID_TOPIC);
                    }
                    match context.leader_of(&name, wanted.partition_index) {
                        Err(code) => result.with_error_code(code),
                        Ok((partition, _)) => {
                            match partition.delete_records_before(wanted.offset) {
                                Ok(low_watermark) => result.with_low_watermark(low_watermark),
                                Err(error) => {
                                    result.with_error_code(error_code::for_append(&error))
                                }
                            }
                        }
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}
