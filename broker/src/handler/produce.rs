//! Produce: validate and append each partition's batches; with acks=all wait
//! until they are durable (group commit); with acks=0 answer nothing.

use std::time::Duration;

use futures::future::join_all;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::{now_ms, str_bytes, Context};
use crate::group::OFFSETS_TOPIC;
use crate::limits::PRODUCE_TIMEOUT_MAX;
use crate::server::error_code;

const ACKS_NONE: i16 = 0;
const ACKS_ALL: i16 = -1;

/// `None` for acks=0: the client expects no response.
pub async fn handle(
    context: &Context,
    request: ProduceRequest,
    api_version: i16,
) -> Option<ProduceResponse> {
    let acks = request.acks;
    let timeout = Duration::from_millis(request.timeout_ms.max(0) as u64).min(PRODUCE_TIMEOUT_MAX);
    let valid_acks = matches!(acks, ACKS_NONE | 1 | ACKS_ALL);
    // Every partition of every topic appends, then all wait together, so an
    // acks=all request with many topics costs one round of flushes.
    let topics = request.topic_data.into_iter().map(|topic| async move {
        let partitions = topic.partition_data.into_iter().map(|data| {
            let name = topic.name.0.to_string();
            async move {
                let response = PartitionProduceResponse::default().with_index(data.index).with_log_append_time_ms(-1);
                if !valid_acks {
                    return response.with_error_code(error_code::INVALID_REQUIRED_ACKS);
                }
                if name == OFFSETS_TOPIC {
                    return response.with_error_code(error_code::INVALID_TOPIC).with_error_message(Some(str_bytes(
                        "__consumer_offsets is written by group coordinators only",
                    )));
                }
                let (partition, leader_epoch) = match context.leader_of(&name, data.index) {
                    Ok(led) => led,
                    Err(code) => return response.with_error_code(code),
                };
                let Some(records) = data.records else {
                    return response.with_error_code(error_code::INVALID_RECORD);
                };
                let min_insync = partition.config().min_insync_replicas as usize;
                if acks == ACKS_ALL && partition.isr_len() < min_insync {
                    return response.with_error_code(error_code::NOT_ENOUGH_REPLICAS).with_error_message(Some(
                        str_bytes(format!("the ISR {:?} has fewer than min.insync.replicas={min_insync} members", partition.isr())),
                    ));
                }
                let record_bytes = records.len() as u64;
                let appended = match partition.append(&records, leader_epoch, now_ms()) {
                    Ok(appended) => appended,
                    Err(error) => {
                        return response
                            .with_error_code(error_code::for_storage(&error))
                            .with_error_message(Some(str_bytes(error.to_string())));
                    }
                };
                let record_count = (appended.last_offset - appended.first_offset + 1) as u64;
                context.metrics.record_produce(&name, record_bytes, record_count);
                let response = response.with_base_offset(appended.first_offset).with_log_start_offset(partition.log_start_offset());
                if acks == ACKS_ALL {
                    if !partition.wait_committed(appended.log_end_offset, timeout).await {
                        return response.with_error_code(error_code::REQUEST_TIMED_OUT).with_error_message(Some(str_bytes(
                            "the records were appended but not durable on every in-sync replica within the request timeout",
                        )));
                    }
                    // The ISR may have shrunk while this waited.
                    if partition.isr_len() < min_insync {
                        let isr = partition.isr();
                        return response.with_error_code(error_code::NOT_ENOUGH_REPLICAS_AFTER_APPEND).with_error_message(Some(
                            str_bytes(format!("appended, but the ISR shrank to {isr:?}, fewer than min.insync.replicas={min_insync}")),
                        ));
                    }
                }
                response
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
    (acks != ACKS_NONE).then(|| ProduceResponse::default().with_responses(topics))
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
