//! Produce: validate and append each partition's batches; with acks=all wait
//! until they are durable (group commit); with acks=0 answer nothing.
//!
//! A transactional batch that would open its producer's transaction on a
//! partition is appended only once the transaction coordinator confirms
//! the transaction holds the partition (KIP-890 part 1; AddPartitionsToTxn
//! with `verify_only`, or a direct check when this broker coordinates it),
//! and only if no marker for the producer arrived meanwhile: a write that
//! lost its transaction never opens a hanging one.

use std::time::Duration;

use futures::future::join_all;
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, ProduceRequest, ProduceResponse, ProducerId as WireProducerId,
    TopicName, TransactionalId,
};

use super::error_code;
use super::{str_bytes, Context};
use crate::clock::now_ms;
use crate::group::OFFSETS_TOPIC;
use crate::limits::{PRODUCE_TIMEOUT_MAX, TXN_VERIFY_TIMEOUT};
use crate::replica::partition::{Acks, AppendError, Commit};
use crate::txn::state::{Producer, TxnPartition};
use crate::txn::{TRANSACTION_STATE, TRANSACTION_STATE_TOPIC};

/// AddPartitionsToTxn's first version with brokers' verification.
const VERIFY_VERSION: i16 = 4;
const ACKS_NONE: i16 = 0;
const ACKS_ALL: i16 = -1;

/// `None` for acks=0: the client expects no response.
pub async fn handle(
    context: &Context,
    request: ProduceRequest,
    api_version: i16,
) -> Option<ProduceResponse> {
    let acks = match request.acks {
        ACKS_NONE => Some(Acks::None),
        1 => Some(Acks::Leader),
        ACKS_ALL => Some(Acks::All),
        _ => None,
    };
    let timeout = Duration::from_millis(request.timeout_ms.max(0) as u64).min(PRODUCE_TIMEOUT_MAX);
    let transactional_id = request
        .transactional_id
        .as_ref()
        .map(|id| id.0.to_string())
        .filter(|id| !id.is_empty());
    let transactional_id = transactional_id.as_deref();
    // Every partition of every topic appends, then all wait together, so an
    // acks=all request with many topics costs one round of flushes.
    let topics = request.topic_data.into_iter().map(|topic| async move {
        let partitions = topic.partition_data.into_iter().map(|data| {
            let name = topic.name.0.to_string();
            async move {
                let response = PartitionProduceResponse::default().with_index(data.index).with_log_append_time_ms(-1);
                let Some(acks) = acks else {
                    return response.with_error_code(error_code::INVALID_REQUIRED_ACKS);
                };
                if name == OFFSETS_TOPIC || name == TRANSACTION_STATE_TOPIC {
                    return response.with_error_code(error_code::INVALID_TOPIC).with_error_message(Some(str_bytes(
                        format!("{name} is written by its coordinators only"),
                    )));
                }
                let (partition, _) = match context.leader_of(&name, data.index) {
                    Ok(led) => led,
                    Err(code) => return response.with_error_code(code),
                };
                let Some(records) = data.records else {
                    return response.with_error_code(error_code::INVALID_RECORD);
                };
                let record_bytes = records.len() as u64;
                // A producer's pipelined batches must append in the order they
                // came, so asking the coordinator to verify a transaction must
                // not let a later batch overtake an earlier one: while a batch
                // here waits on a verification, later ones queue behind it
                // (the queue is FIFO, and a batch joins it in the same poll
                // that found it busy or found itself unverified).
                let mut appended = partition.append_unless_verifying(&records, acks, now_ms());
                if matches!(appended, None | Some(Err(AppendError::NotVerified { .. }))) {
                    let _turn = partition.verification_turn().await;
                    // An earlier batch may have opened the transaction meanwhile.
                    appended = Some(partition.append_as_leader(&records, acks, None, None, now_ms()));
                    if let Some(Err(AppendError::NotVerified { producer_id, producer_epoch })) = appended {
                        let verification = partition.begin_verification(producer_id);
                        let producer = Producer { id: producer_id.0, epoch: producer_epoch };
                        let checked = verify(context, transactional_id, producer, (name.clone(), data.index)).await;
                        if let Err((code, message)) = checked {
                            return response.with_error_code(code).with_error_message(Some(str_bytes(message)));
                        }
                        appended = Some(partition.append_as_leader(&records, acks, None, Some(verification), now_ms()));
                    }
                }
                let appended = appended.expect("appended on one of the paths");
                let appended = match appended {
                    Ok(appended) => appended,
                    Err(error) => {
                        return response
                            .with_error_code(error_code::for_append(&error))
                            .with_error_message(Some(str_bytes(error.to_string())));
                    }
                };
                let info = appended.info;
                // A retry of a batch already written writes nothing.
                if !info.duplicate {
                    let record_count = (info.last_offset - info.first_offset + 1) as u64;
                    context.metrics.record_produce(&name, record_bytes, record_count);
                }
                let response = response.with_base_offset(info.first_offset).with_log_start_offset(partition.log_start_offset());
                if acks != Acks::All {
                    return response;
                }
                let (code, message) = match partition.wait_committed(&appended, timeout).await {
                    Commit::Committed => return response,
                    Commit::CommittedBelowMinIsr { isr, min_insync_replicas } => (
                        error_code::NOT_ENOUGH_REPLICAS_AFTER_APPEND,
                        format!("appended, but the ISR shrank to {isr:?}, fewer than min.insync.replicas={min_insync_replicas}"),
                    ),
                    Commit::LeadershipLost => (
                        error_code::NOT_LEADER_OR_FOLLOWER,
                        format!("appended in leader epoch {}, but this broker stopped leading before every in-sync replica had the records", appended.leader_epoch),
                    ),
                    Commit::TimedOut => (
                        error_code::REQUEST_TIMED_OUT,
                        "the records were appended but not durable on every in-sync replica within the request timeout".to_string(),
                    ),
                };
                response.with_error_code(code).with_error_message(Some(str_bytes(message)))
            }
        });
        let partition_responses = join_all(partitions).await;
        let partition_responses = partition_responses
            .into_iter()
            .map(|response| for_version(response, api_version))
            .collect();
        TopicProduceResponse::default()
            .with_name(topic.name)
            .with_partition_responses(partition_responses)
    });
    let topics = join_all(topics).await;
    (acks != Some(Acks::None)).then(|| ProduceResponse::default().with_responses(topics))
}

/// Asks `transactional_id`'s coordinator whether `producer`'s open
/// transaction holds `partition`; the code and reason to answer if not.
async fn verify(
    context: &Context,
    transactional_id: Option<&str>,
    producer: Producer,
    partition: TxnPartition,
) -> Result<(), (i16, String)> {
    let Some(id) = transactional_id else {
        return Err((
            error_code::INVALID_TXN_STATE,
            "a transactional batch in a produce request without a transactional id".to_string(),
        ));
    };
    let refused = |code: i16| {
        (
            code,
            format!(
                "the coordinator of transactional id {id} does not confirm that producer {} (epoch {}) has a transaction holding {}-{}",
                producer.id, producer.epoch, partition.0, partition.1
            ),
        )
    };
    let coordinator = {
        let metadata = context.controller.metadata();
        let index = TRANSACTION_STATE.partition_for(id);
        metadata
            .partition(TRANSACTION_STATE_TOPIC, index)
            .map(|p| p.leader)
            .and_then(|leader| {
                let broker = metadata.brokers.get(&leader)?;
                Some((leader, format!("{}:{}", broker.host, broker.port)))
            })
    };
    let code = match coordinator {
        None => error_code::NOT_ENOUGH_REPLICAS,
        Some((leader, _)) if leader == context.broker_id => context
            .txns
            .verify(id, producer, &partition)
            .await
            .map_or_else(
                |failure| error_code::for_txn(&failure, error_code::INVALID_PRODUCER_EPOCH),
                |()| 0,
            ),
        Some((leader, address)) => {
            let request = AddPartitionsToTxnRequest::default().with_transactions(vec![
                AddPartitionsToTxnTransaction::default()
                    .with_transactional_id(TransactionalId(str_bytes(id)))
                    .with_producer_id(WireProducerId(producer.id))
                    .with_producer_epoch(producer.epoch)
                    .with_verify_only(true)
                    .with_topics(vec![AddPartitionsToTxnTopic::default()
                        .with_name(TopicName(str_bytes(partition.0.clone())))
                        .with_partitions(vec![partition.1])]),
            ]);
            match context
                .peers
                .call(
                    leader,
                    &address,
                    VERIFY_VERSION,
                    &request,
                    TXN_VERIFY_TIMEOUT,
                )
                .await
            {
                Ok(response) => response
                    .results_by_transaction
                    .iter()
                    .flat_map(|result| &result.topic_results)
                    .flat_map(|topic| &topic.results_by_partition)
                    .map(|result| result.partition_error_code)
                    .next()
                    .unwrap_or(response.error_code),
                // Retriable for the client: the coordinator may be moving.
                Err(_) => error_code::NOT_ENOUGH_REPLICAS,
            }
        }
    };
    match code {
        0 => Ok(()),
        // The coordinator is elsewhere or busy: the client retries.
        code if code == error_code::NOT_COORDINATOR
            || code == error_code::COORDINATOR_NOT_AVAILABLE
            || code == error_code::NOT_ENOUGH_REPLICAS =>
        {
            Err((
                error_code::NOT_ENOUGH_REPLICAS,
                format!("cannot reach the coordinator of transactional id {id} to verify the transaction; retry"),
            ))
        }
        code => Err(refused(code)),
    }
}

/// Clears the fields `api_version` does not have.
fn for_version(
    mut response: PartitionProduceResponse,
    api_version: i16,
) -> PartitionProduceResponse {
    if api_version < 5 {
        response.log_start_offset = -1;
    }
    if api_version < 8 {
        response.error_message = None;
    }
    response
}
