//! Partitions hosted by this broker.

pub mod partition;
pub mod replica_manager;
