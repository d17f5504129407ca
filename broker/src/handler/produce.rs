//! Produce: validate and append each partition's batches; with acks=all wait
//! until they are durable (group commit); with acks=0 answer nothing.

use std::time::Duration;

use futures::future::join_all;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::error_code;
use super::{str_bytes, Context};
use crate::clock::now_ms;
use crate::group::OFFSETS_TOPIC;
use crate::limits::PRODUCE_TIMEOUT_MAX;
use crate::replica::partition::{Acks, Commit};

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
                if name == OFFSETS_TOPIC {
                    return response.with_error_code(error_code::INVALID_TOPIC).with_error_message(Some(str_bytes(
                        "__consumer_offsets is written by group coordinators only",
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
                let appended = match partition.append_as_leader(&records, acks, None, now_ms()) {
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
