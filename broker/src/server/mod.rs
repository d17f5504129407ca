//! The Kafka listener: accept loop, connections, dispatch, error codes.

pub mod connection;
pub mod dispatch;
pub mod error_code;
pub mod listener;
