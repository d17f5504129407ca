//! Strata's side of the Kafka wire protocol.
//!
//! Message bodies come from the `kafka-protocol` crate; this crate owns what
//! surrounds them: framing ([`frame`]), request decoding and response encoding
//! with the right header versions ([`request`], [`response`]), the table of API
//! versions Strata supports ([`versions`]), and an allocator for binaries that
//! decode untrusted frames ([`alloc`]). The record-batch format itself
//! ([`batch`], [`record`], [`compression`]) is the storage engine's,
//! re-exported here so clients build and read batches with the code the
//! broker validates them with.
//!
//! Architecture invariant: wire types stop at the broker's dispatch; nothing
//! below it (replicas, storage) sees a `kafka-protocol` type.

pub mod alloc;
pub mod exchange;
pub mod frame;
pub mod request;
pub mod response;
pub mod sasl;
pub mod transport;
pub mod versions;

/// The name Kafka gives the metadata log, the one partition through which
/// clients see the controller quorum (DescribeQuorum).
pub const METADATA_TOPIC: &str = "__cluster_metadata";

pub use kafka_protocol;
pub use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
pub use strata_storage::{batch, compression, record, transaction};
