//! The Strata broker: a Kafka-protocol listener over partitions whose
//! metadata the Raft controller owns.
//!
//! - [`broker::Broker`]: the whole broker, as `logd` runs it and as tests embed it.
//! - [`server`]: listener, connections, dispatch; [`handler`]: one module per API.
//! - [`replica`]: the partitions hosted here; [`controller`]: cluster metadata;
//!   [`group`]: committed offsets of consumer groups.

pub mod broker;
pub mod clock;
pub mod config;
pub mod controller;
pub mod coordinator_log;
pub mod group;
pub mod handler;
pub mod limits;
pub mod metrics;
pub mod peers;
pub mod replica;
pub mod security;
pub mod server;
pub mod topic_config;
pub mod txn;

pub use broker::{Broker, BrokerError};
pub use config::BrokerConfig;
