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
use super::offset_commit::{decide, led_for, Decided, PartitionCommit};
use super::Context;

pub async fn handle(context: &Context, request: TxnOffsetCommitRequest) -> TxnOffsetCommitResponse {
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
