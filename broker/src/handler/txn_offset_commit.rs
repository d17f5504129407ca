//! TxnOffsetCommit: a group's consumed positions written in a producer's
//! transaction to the group's `__consumer_offsets` partition. They count
//! only once the transaction commits (its marker reaches that partition);
//! an abort drops them.

use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};
use strata_storage::batch::ProducerId;

use super::error_code;
use super::Context;
use crate::clock::now_ms;
use crate::group::offset_record;
use crate::group::records::OffsetValue;
use crate::limits::OFFSET_METADATA_BYTES_MAX;

pub async fn handle(context: &Context, request: TxnOffsetCommitRequest) -> TxnOffsetCommitResponse {
    let group = request.group_id.0.to_string();
    let led = if group.is_empty() {
        Err(error_code::INVALID_GROUP_ID)
    } else {
        context
            .groups
            .led_for(&group)
            .map_err(|error| error_code::for_coordinator(&error))
    };
    let now = now_ms();
    let metadata = context.controller.metadata();
    // Per partition: the code decided up front, or `None` if it is written.
    let mut records = Vec::new();
    let mut decided: Vec<(usize, i32, Option<i16>)> = Vec::new();
    for (topic_index, topic) in request.topics.iter().enumerate() {
        let name = topic.name.0.as_str();
        for partition in &topic.partitions {
            let index = partition.partition_index;
            let code = if let Err(code) = &led {
                Some(*code)
            } else if metadata.partition(name, index).is_none() {
                Some(error_code::UNKNOWN_TOPIC_OR_PARTITION)
            } else if partition
                .committed_metadata
                .as_ref()
                .is_some_and(|metadata| metadata.len() > OFFSET_METADATA_BYTES_MAX)
            {
                Some(error_code::OFFSET_METADATA_TOO_LARGE)
            } else {
                let value = OffsetValue {
                    offset: partition.committed_offset,
                    leader_epoch: partition.committed_leader_epoch,
                    metadata: partition
                        .committed_metadata
                        .as_ref()
                        .map_or_else(String::new, ToString::to_string),
                    commit_timestamp_ms: now,
                };
                records.push(offset_record(&group, name, index, &value));
                None
            };
            decided.push((topic_index, index, code));
        }
    }
    drop(metadata);
    let written = match (&led, records.is_empty()) {
        (Ok(_), true) => 0,
        (Ok(led), false) => led
            .commit_in_transaction(
                &group,
                ProducerId(request.producer_id.0),
                request.producer_epoch,
                &request.member_id,
                request.group_instance_id.as_deref(),
                request.generation_id,
                records,
            )
            .await
            .map_or_else(|error| error_code::for_coordinator(&error), |()| 0),
        (Err(code), _) => *code,
    };
    let mut topics: Vec<TxnOffsetCommitResponseTopic> = request
        .topics
        .iter()
        .map(|topic| TxnOffsetCommitResponseTopic::default().with_name(topic.name.clone()))
        .collect();
    for (topic_index, index, code) in decided {
        topics[topic_index].partitions.push(
            TxnOffsetCommitResponsePartition::default()
                .with_partition_index(index)
                .with_error_code(code.unwrap_or(written)),
        );
    }
    TxnOffsetCommitResponse::default().with_topics(topics)
}
