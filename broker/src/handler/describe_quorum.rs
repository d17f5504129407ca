//! DescribeQuorum: the metadata controller's Raft quorum, presented as
//! Kafka presents its own (KRaft): the single partition
//! `__cluster_metadata-0`, whose leader epoch is the Raft term and whose
//! high watermark is the offset after the last applied metadata entry.

use kafka_protocol::messages::describe_quorum_response::{PartitionData, ReplicaState, TopicData};
use kafka_protocol::messages::{BrokerId, DescribeQuorumRequest, DescribeQuorumResponse};

use strata_protocol::METADATA_TOPIC;

use super::{now_ms, Context};
use crate::server::error_code;

pub fn handle(context: &Context, request: DescribeQuorumRequest) -> DescribeQuorumResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let is_metadata = topic.topic_name.as_str() == METADATA_TOPIC;
            let partitions = topic
                .partitions
                .iter()
                .map(|partition| {
                    if is_metadata && partition.partition_index == 0 {
                        quorum(context)
                    } else {
                        PartitionData::default()
                            .with_partition_index(partition.partition_index)
                            .with_error_code(error_code::UNKNOWN_TOPIC_OR_PARTITION)
                            .with_leader_id(BrokerId(-1))
                            .with_leader_epoch(-1)
                            .with_high_watermark(-1)
                    }
                })
                .collect();
            TopicData::default()
                .with_topic_name(topic.topic_name)
                .with_partitions(partitions)
        })
        .collect();
    DescribeQuorumResponse::default().with_topics(topics)
}

/// This voter's view of the quorum. Log ends of other voters are known only
/// to the leader (from replication); elsewhere they are -1.
fn quorum(context: &Context) -> PartitionData {
    let metrics = context.controller.raft_metrics();
    let this_voter = metrics.id;
    let replication = metrics.replication.as_ref();
    let voters = metrics
        .membership_config
        .voter_ids()
        .map(|voter| {
            let log_end_offset = if voter == this_voter {
                metrics.last_log_index.map_or(0, |index| index as i64 + 1)
            } else {
                replication
                    .and_then(|matched| matched.get(&voter))
                    .map_or(-1, |log_id| log_id.map_or(0, |id| id.index as i64 + 1))
            };
            let caught_up_ms = if voter == this_voter { now_ms() } else { -1 };
            ReplicaState::default()
                .with_replica_id(BrokerId(voter as i32))
                .with_log_end_offset(log_end_offset)
                .with_last_fetch_timestamp(caught_up_ms)
                .with_last_caught_up_timestamp(caught_up_ms)
        })
        .collect();
    PartitionData::default()
        .with_partition_index(0)
        .with_leader_id(BrokerId(
            metrics.current_leader.map_or(-1, |leader| leader as i32),
        ))
        .with_leader_epoch(metrics.current_term as i32)
        .with_high_watermark(
            metrics
                .last_applied
                .map_or(0, |applied| applied.index as i64 + 1),
        )
        .with_current_voters(voters)
}
