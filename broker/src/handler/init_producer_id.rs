//! InitProducerId: a new producer id (epoch 0) for an idempotent producer.
//! A producer that names its current id and epoch (KIP-360, after a batch
//! failed for good) gets a new id too, which is as good as a new epoch for
//! a producer without a transactional id. A transactional id gets
//! INVALID_REQUEST until transactions are served, as FindCoordinator for
//! one does.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use tracing::warn;

use super::error_code;
use super::Context;

pub async fn handle(context: &Context, request: InitProducerIdRequest) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if request
        .transactional_id
        .as_ref()
        .is_some_and(|id| !id.is_empty())
    {
        return response.with_error_code(error_code::INVALID_REQUEST);
    }
    match context.producer_ids.next().await {
        Ok(producer_id) => response
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(0),
        Err(error) => {
            warn!(%error, "cannot hand out a producer id");
            response.with_error_code(error_code::COORDINATOR_NOT_AVAILABLE)
        }
    }
}
