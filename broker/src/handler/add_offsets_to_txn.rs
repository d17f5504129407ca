//! AddOffsetsToTxn: a group's offsets partition joins a producer's open
//! transaction, before TxnOffsetCommit writes offsets in it.

use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};

use super::error_code;
use super::Context;
use crate::txn::state::Producer;

pub async fn handle(context: &Context, request: AddOffsetsToTxnRequest) -> AddOffsetsToTxnResponse {
    let producer = Producer {
        id: request.producer_id.0,
        epoch: request.producer_epoch,
    };
    let added = context
        .txns
        .add_offsets(&request.transactional_id, producer, &request.group_id)
        .await;
    let code = added.map_or_else(
        |failure| error_code::for_txn(&failure, error_code::INVALID_PRODUCER_EPOCH),
        |()| 0,
    );
    AddOffsetsToTxnResponse::default().with_error_code(code)
}
