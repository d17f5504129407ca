//! AddPartitionsToTxn: partitions join a producer's open transaction (v0-3,
//! from clients), or (v4+, from partition leaders, `verify_only`) the
//! coordinator confirms a transaction holds them before a leader appends a
//! transactional batch (KIP-890 part 1). A request naming a partition that
//! does not exist adds nothing: that partition is UNKNOWN_TOPIC_OR_PARTITION,
//! the others OPERATION_NOT_ATTEMPTED, as in Kafka.

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse};
use kafka_protocol::ResponseError;

use super::error_code;
use super::Context;
use crate::txn::state::{Producer, TxnPartition};

/// The first version that batches transactions (brokers' verification).
const BATCHED_VERSION: i16 = 4;

pub async fn handle(
    context: &Context,
    request: AddPartitionsToTxnRequest,
    api_version: i16,
) -> AddPartitionsToTxnResponse {
    if api_version < BATCHED_VERSION {
        let producer = Producer {
            id: request.v3_and_below_producer_id.0,
            epoch: request.v3_and_below_producer_epoch,
        };
        let results = add(
            context,
            &request.v3_and_below_transactional_id,
            producer,
            &request.v3_and_below_topics,
            false,
        )
        .await;
        return AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results);
    }
    let mut results = Vec::with_capacity(request.transactions.len());
    for transaction in &request.transactions {
        let producer = Producer {
            id: transaction.producer_id.0,
            epoch: transaction.producer_epoch,
        };
        let topic_results = add(
            context,
            &transaction.transactional_id,
            producer,
            &transaction.topics,
            transaction.verify_only,
        )
        .await;
        results.push(
            AddPartitionsToTxnResult::default()
                .with_transactional_id(transaction.transactional_id.clone())
                .with_topic_results(topic_results),
        );
    }
    AddPartitionsToTxnResponse::default().with_results_by_transaction(results)
}

async fn add(
    context: &Context,
    id: &str,
    producer: Producer,
    topics: &[AddPartitionsToTxnTopic],
    verify_only: bool,
) -> Vec<AddPartitionsToTxnTopicResult> {
    let partitions: Vec<TxnPartition> = topics
        .iter()
        .flat_map(|topic| {
            topic
                .partitions
                .iter()
                .map(|index| (topic.name.0.to_string(), *index))
        })
        .collect();
    let unknown: Vec<bool> = {
        let metadata = context.controller.metadata();
        partitions
            .iter()
            .map(|(topic, index)| metadata.partition(topic, *index).is_none())
            .collect()
    };
    let codes: Vec<i16> = if unknown.iter().any(|unknown| *unknown) {
        unknown
            .iter()
            .map(|unknown| {
                if *unknown {
                    error_code::UNKNOWN_TOPIC_OR_PARTITION
                } else {
                    ResponseError::OperationNotAttempted.code()
                }
            })
            .collect()
    } else if verify_only {
        let mut codes = Vec::with_capacity(partitions.len());
        for partition in &partitions {
            let verified = context.txns.verify(id, producer, partition).await;
            codes.push(verified.map_or_else(
                |failure| error_code::for_txn(&failure, error_code::INVALID_PRODUCER_EPOCH),
                |()| 0,
            ));
        }
        codes
    } else {
        let added = context.txns.add_partitions(id, producer, &partitions).await;
        let code = added.map_or_else(
            |failure| error_code::for_txn(&failure, error_code::INVALID_PRODUCER_EPOCH),
            |()| 0,
        );
        vec![code; partitions.len()]
    };
    let mut codes = codes.into_iter();
    topics
        .iter()
        .map(|topic| {
            let results = topic
                .partitions
                .iter()
                .map(|index| {
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(*index)
                        .with_partition_error_code(codes.next().expect("a code per partition"))
                })
                .collect();
            AddPartitionsToTxnTopicResult::default()
                .with_name(topic.name.clone())
                .with_results_by_partition(results)
        })
        .collect()
}
