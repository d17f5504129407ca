//! The Kafka listener: accept loop, connections, dispatch.

pub mod connection;
pub mod dispatch;
pub mod listener;
pub mod scrape;
