//! Producers' identities and transactions: the producer ids this broker
//! hands out (InitProducerId), and the transaction coordinator of the
//! `__transaction_state` partitions it leads (`coordinator.rs` on the
//! pure state machine in `state.rs`; `records.rs` is the topic's format,
//! `markers.rs` ends transactions on their partitions).

pub mod coordinator;
pub mod markers;
pub mod producer_ids;
pub mod records;
pub mod state;

pub use coordinator::TxnCoordinator;
pub use producer_ids::ProducerIds;
pub use records::{TRANSACTION_STATE, TRANSACTION_STATE_TOPIC};
