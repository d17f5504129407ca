//! OffsetForLeaderEpoch: where a leader epoch ended in the leader's log
//! (KIP-101/320). A consumer that saw a leader change asks it for the epoch
//! of its position, and learns whether the log it read from was truncated
//! under it: the end offset is the start of the next larger epoch, or the
//! log end offset for the current one; `(-1, -1)` for an epoch older than
//! the log.

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::Context;

pub fn handle(
    context: &Context,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|asked| {
                    let answer = EpochEndOffset::default()
                        .with_partition(asked.partition)
                        .with_leader_epoch(-1)
                        .with_end_offset(-1);
                    match context.leader_in(
                        &topic.topic,
                        asked.partition,
                        asked.current_leader_epoch,
                    ) {
                        Ok((partition, _)) => {
                            let (leader_epoch, end_offset) =
                                partition.end_offset_for_epoch(asked.leader_epoch);
                            answer
                                .with_leader_epoch(leader_epoch)
                                .with_end_offset(end_offset)
                        }
                        Err(code) => answer.with_error_code(code),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
