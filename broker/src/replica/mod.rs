//! Partitions hosted by this broker, and how they are replicated.

pub mod fetcher;
pub mod in_sync;
pub mod isr;
pub mod partition;
pub mod replica_manager;
pub mod retention;
pub mod throttle;

/// A partition by topic name and index.
pub type TopicPartition = (String, i32);
