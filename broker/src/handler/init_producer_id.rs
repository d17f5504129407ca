//! InitProducerId. Without a transactional id: a new producer id (epoch 0)
//! for an idempotent producer; one that names its current id and epoch
//! (KIP-360, after a batch failed for good) gets a new id too, which is as
//! good as a new epoch for a producer without a transactional id. With a
//! transactional id: the transaction coordinator's answer (the id's
//! producer in its next epoch, fencing the previous instance).

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use tracing::warn;

use super::error_code;
use super::Context;
use crate::txn::state::Producer;

/// The first version whose clients know PRODUCER_FENCED (KIP-588).
const PRODUCER_FENCED_VERSION: i16 = 4;

pub async fn handle(
    context: &Context,
    request: InitProducerIdRequest,
    api_version: i16,
) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if let Some(id) = request
        .transactional_id
        .as_ref()
        .filter(|id| !id.is_empty())
    {
        let expected = (request.producer_id.0 >= 0).then_some(Producer {
            id: request.producer_id.0,
            epoch: request.producer_epoch,
        });
        let fenced = if api_version >= PRODUCER_FENCED_VERSION {
            error_code::PRODUCER_FENCED
        } else {
            error_code::INVALID_PRODUCER_EPOCH
        };
        return match context
            .txns
            .init_producer_id(id, request.transaction_timeout_ms, expected)
            .await
        {
            Ok(producer) => response
                .with_producer_id(ProducerId(producer.id))
                .with_producer_epoch(producer.epoch),
            Err(failure) => response.with_error_code(error_code::for_txn(&failure, fenced)),
        };
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
