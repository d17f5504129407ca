//! ListTransactions: the transactional ids this broker coordinates, by
//! state, producer id, age (v1) and id pattern (v2). Admin clients ask
//! every broker and merge the answers.

use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{ListTransactionsRequest, ListTransactionsResponse, ProducerId};
use regex::Regex;

use super::{error_code, str_bytes, Context};
use crate::clock::now_ms;
use crate::txn::state::{TxnMetadata, TxnState};

pub async fn handle(
    context: &Context,
    request: ListTransactionsRequest,
) -> ListTransactionsResponse {
    let response = ListTransactionsResponse::default();
    let known = |name: &str| TxnState::ALL.iter().any(|state| state.name() == name);
    let unknown_state_filters: Vec<_> = request
        .state_filters
        .iter()
        .filter(|name| !known(name))
        .cloned()
        .collect();
    let pattern = match request
        .transactional_id_pattern
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        None => None,
        Some(pattern) => match Regex::new(pattern) {
            Ok(regex) => Some(regex),
            Err(_) => return response.with_error_code(error_code::INVALID_REQUEST),
        },
    };
    let now = now_ms();
    let wanted = |id: &str, metadata: &TxnMetadata| {
        let state_ok = request.state_filters.is_empty()
            || request
                .state_filters
                .iter()
                .any(|name| name.as_str() == metadata.state.name());
        let producer_ok = request.producer_id_filters.is_empty()
            || request
                .producer_id_filters
                .contains(&ProducerId(metadata.producer_id));
        // v1: only transactions running longer than the filter.
        let duration_ok = request.duration_filter < 0
            || (metadata.state == TxnState::Ongoing
                && now - metadata.start_ms > request.duration_filter);
        let pattern_ok = pattern.as_ref().is_none_or(|regex| regex.is_match(id));
        state_ok && producer_ok && duration_ok && pattern_ok
    };
    let states = context
        .txns
        .list()
        .await
        .into_iter()
        .filter(|(id, metadata)| wanted(id, metadata))
        .map(|(id, metadata)| {
            TransactionState::default()
                .with_transactional_id(str_bytes(id).into())
                .with_producer_id(ProducerId(metadata.producer_id))
                .with_transaction_state(str_bytes(metadata.state.name()))
        })
        .collect();
    response
        .with_unknown_state_filters(unknown_state_filters)
        .with_transaction_states(states)
}
