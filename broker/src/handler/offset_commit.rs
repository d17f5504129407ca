//! OffsetCommit: a group's consumed positions, written to its
//! `__consumer_offsets` partition and answered once durable on the ISR.
//! A member commits in its generation; a consumer outside any generation
//! (it assigns partitions itself) only while the group has no members.

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::error_code;
use super::Context;
use crate::clock::now_ms;
use crate::coordinator_log::KeyedRecord;
use crate::group::records::OffsetValue;
use crate::group::{offset_record, Led};
use crate::limits::OFFSET_METADATA_BYTES_MAX;

pub async fn handle(context: &Context, request: OffsetCommitRequest) -> OffsetCommitResponse {
    let group = request.group_id.0.to_string();
    let led = led_for(context, &group);
    let Decided { records, decided } = decide(
        context,
        &group,
        led.as_ref().err().copied(),
        request
            .topics
            .iter()
            .enumerate()
            .flat_map(|(topic_index, topic)| {
                topic
                    .partitions
                    .iter()
                    .map(move |partition| PartitionCommit {
                        topic_index,
                        topic: topic.name.0.as_str(),
                        partition: partition.partition_index,
                        offset: partition.committed_offset,
                        leader_epoch: partition.committed_leader_epoch,
                        metadata: partition.committed_metadata.as_deref(),
                    })
            }),
    );
    let written = match &led {
        Ok(led) => led
            .commit(
                &group,
                &request.member_id,
                request.group_instance_id.as_deref(),
                request.generation_id_or_member_epoch,
                records,
            )
            .await
            .map_or_else(|error| error_code::for_coordinator(&error), |()| 0),
        Err(code) => *code,
    };
    let mut topics: Vec<OffsetCommitResponseTopic> = request
        .topics
        .iter()
        .map(|topic| OffsetCommitResponseTopic::default().with_name(topic.name.clone()))
        .collect();
    for (topic_index, index, code) in decided {
        topics[topic_index].partitions.push(
            OffsetCommitResponsePartition::default()
                .with_partition_index(index)
                .with_error_code(code.unwrap_or(written)),
        );
    }
    OffsetCommitResponse::default().with_topics(topics)
}

/// The led `__consumer_offsets` partition that coordinates `group`, or
/// the error code every partition of a commit for it gets.
pub(super) fn led_for(context: &Context, group: &str) -> Result<Led, i16> {
    if group.is_empty() {
        return Err(error_code::INVALID_GROUP_ID);
    }
    context
        .groups
        .led_for(group)
        .map_err(|error| error_code::for_coordinator(&error))
}

/// One partition's commit, as OffsetCommit and TxnOffsetCommit carry it.
pub(super) struct PartitionCommit<'a> {
    /// Its topic's place in the request.
    pub topic_index: usize,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<&'a str>,
}

/// Decides each partition's commit: refused up front (`led_error` when
/// this broker cannot coordinate the group, an unknown partition, metadata
/// too large) or a record to write.
pub(super) fn decide<'a>(
    context: &Context,
    group: &str,
    led_error: Option<i16>,
    commits: impl Iterator<Item = PartitionCommit<'a>>,
) -> Decided {
    let now = now_ms();
    let metadata = context.controller.metadata();
    let mut records = Vec::new();
    let decided = commits
        .map(|commit| {
            let code = if led_error.is_some() {
                led_error
            } else if metadata.partition(commit.topic, commit.partition).is_none() {
                Some(error_code::UNKNOWN_TOPIC_OR_PARTITION)
            } else if commit
                .metadata
                .is_some_and(|metadata| metadata.len() > OFFSET_METADATA_BYTES_MAX)
            {
                Some(error_code::OFFSET_METADATA_TOO_LARGE)
            } else {
                let value = OffsetValue {
                    offset: commit.offset,
                    leader_epoch: commit.leader_epoch,
                    metadata: commit.metadata.unwrap_or_default().to_string(),
                    commit_timestamp_ms: now,
                };
                records.push(offset_record(group, commit.topic, commit.partition, &value));
                None
            };
            (commit.topic_index, commit.partition, code)
        })
        .collect();
    Decided { records, decided }
}

/// What `decide` made of a request's commits.
pub(super) struct Decided {
    /// The records to write.
    pub records: Vec<KeyedRecord>,
    /// Per partition, in request order: its topic's index, the partition,
    /// and the code decided up front (`None`: its record is to be written).
    pub decided: Vec<(usize, i32, Option<i16>)>,
}
