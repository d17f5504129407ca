//! DescribeQuorum: the metadata controller's Raft quorum, presented as
//! Kafka presents its own (KRaft): the single partition
//! `__cluster_metadata-0`, whose leader epoch is the Raft term and whose
//! high watermark is the offset after the last applied metadata entry.

use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{BrokerId, DescribeQuorumRequest, DescribeQuorumResponse};

use strata_protocol::METADATA_TOPIC;

use super::error_code;
use super::{str_bytes, Context};

/// The listener name voters are shown with (v2 and later).
const CONTROLLER_LISTENER: &str = "CONTROLLER";

pub fn handle(
    context: &Context,
    request: DescribeQuorumRequest,
    api_version: i16,
) -> DescribeQuorumResponse {
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
    let response = DescribeQuorumResponse::default().with_topics(topics);
    if api_version < 2 {
        return response;
    }
    let nodes = context
        .controller
        .voters()
        .iter()
        .filter_map(|(id, address)| {
            let (host, port) = address.rsplit_once(':')?;
            Some(
                Node::default()
                    .with_node_id(BrokerId(*id as i32))
                    .with_listeners(vec![Listener::default()
                        .with_name(str_bytes(CONTROLLER_LISTENER))
                        .with_host(str_bytes(host.to_string()))
                        .with_port(port.parse().ok()?)]),
            )
        })
        .collect();
    response.with_nodes(nodes)
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
