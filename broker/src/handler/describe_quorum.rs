//! DescribeQuorum: the metadata controller's Raft quorum, presented as
//! Kafka presents its own (KRaft): the single partition
//! `__cluster_metadata-0`, whose leader epoch is the Raft term and whose
//! high watermark is the offset after the last applied metadata entry.

use kafka_protocol::messages::describe_quorum_response::{PartitionData, ReplicaState, TopicData};
use kafka_protocol::messages::{BrokerId, DescribeQuorumRequest, DescribeQuorumResponse};

use strata_protocol::METADATA_TOPIC;

use super::{str_bytes, Context};
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

/// The quorum as its leader last described it to this broker (within one
/// heartbeat interval). Voters' log ends are the leader's replication
/// progress; -1 where it has none.
fn quorum(context: &Context) -> PartitionData {
    let Some(quorum) = context.controller.quorum() else {
        return PartitionData::default()
            .with_partition_index(0)
            .with_error_code(error_code::NOT_LEADER_OR_FOLLOWER)
            .with_error_message(Some(str_bytes("no controller leader is known yet")))
            .with_leader_id(BrokerId(-1))
            .with_leader_epoch(-1)
            .with_high_watermark(-1);
    };
    let voters = quorum
        .voters
        .iter()
        .map(|voter| {
            ReplicaState::default()
                .with_replica_id(BrokerId(voter.id as i32))
                .with_log_end_offset(voter.log_end.map_or(-1, |end| end as i64))
                .with_last_fetch_timestamp(-1)
                .with_last_caught_up_timestamp(-1)
        })
        .collect();
    PartitionData::default()
        .with_partition_index(0)
        .with_leader_id(BrokerId(quorum.leader as i32))
        .with_leader_epoch(quorum.term as i32)
        .with_high_watermark(quorum.applied_end as i64)
        .with_current_voters(voters)
}
