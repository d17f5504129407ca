//! EndTxn: commits or aborts a producer's open transaction, answered once
//! the decision is durable (the markers follow). From v5 the producer's
//! epoch goes up by one at every end, and the answer names the new one
//! (KIP-890 part 2): a delayed write of this transaction is then refused
//! everywhere instead of landing in the next.

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse, ProducerId};

use super::error_code;
use super::Context;
use crate::txn::state::Producer;

/// The first version that bumps the epoch.
const BUMPING_VERSION: i16 = 5;

pub async fn handle(context: &Context, request: EndTxnRequest, api_version: i16) -> EndTxnResponse {
    let producer = Producer {
        id: request.producer_id.0,
        epoch: request.producer_epoch,
    };
    let bump = api_version >= BUMPING_VERSION;
    let fenced = if bump {
        error_code::PRODUCER_FENCED
    } else {
        error_code::INVALID_PRODUCER_EPOCH
    };
    let response = EndTxnResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    match context
        .txns
        .end(&request.transactional_id, producer, request.committed, bump)
        .await
    {
        Ok(producer) => response
            .with_producer_id(ProducerId(producer.id))
            .with_producer_epoch(producer.epoch),
        Err(failure) => response.with_error_code(error_code::for_txn(&failure, fenced)),
    }
}
