//! Producers' identities: the producer ids this broker hands out to
//! idempotent producers (InitProducerId). Transactions will live here too.

pub mod producer_ids;

pub use producer_ids::ProducerIds;
