//! DescribeTransactions: the state of transactional ids this broker
//! coordinates: producer, state, timeout, start time and partitions.

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId, TopicName,
};

use super::{error_code, str_bytes, Context};
use crate::txn::coordinator::TxnFailure;
use crate::txn::state::TxnError;

pub async fn handle(
    context: &Context,
    request: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let ids: Vec<String> = request
        .transactional_ids
        .iter()
        .map(|id| id.0.to_string())
        .collect();
    let states = context
        .txns
        .describe(&ids)
        .await
        .into_iter()
        .map(|(id, described)| {
            let state = TransactionState::default()
                .with_transactional_id(str_bytes(id).into())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
                .with_transaction_start_time_ms(-1);
            match described {
                Ok(metadata) => {
                    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
                    for (topic, index) in &metadata.partitions {
                        topics.entry(topic).or_default().push(*index);
                    }
                    state
                        .with_transaction_state(str_bytes(metadata.state.name()))
                        .with_transaction_timeout_ms(metadata.timeout_ms)
                        .with_transaction_start_time_ms(metadata.start_ms)
                        .with_producer_id(ProducerId(metadata.producer_id))
                        .with_producer_epoch(metadata.producer_epoch)
                        .with_topics(
                            topics
                                .into_iter()
                                .map(|(topic, partitions)| {
                                    TopicData::default()
                                        .with_topic(TopicName(str_bytes(topic)))
                                        .with_partitions(partitions)
                                })
                                .collect(),
                        )
                }
                Err(TxnFailure::Txn(TxnError::InvalidProducerIdMapping)) => {
                    state.with_error_code(error_code::TRANSACTIONAL_ID_NOT_FOUND)
                }
                Err(failure) => state.with_error_code(error_code::for_txn(
                    &failure,
                    error_code::INVALID_PRODUCER_EPOCH,
                )),
            }
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}
