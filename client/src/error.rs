//! The client's error type. Errors are `Clone` because one failed batch fails
//! every record in it, and each record's delivery reports the same error.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// No bootstrap broker answered.
    #[error("no broker reachable at {bootstrap}: {source}")]
    Unreachable {
        bootstrap: String,
        source: Arc<std::io::Error>,
    },
    /// The connection to a broker failed or closed mid-request.
    #[error("connection to {address} failed: {source}")]
    Io {
        address: String,
        source: Arc<std::io::Error>,
    },
    /// A broker sent bytes this client cannot make sense of.
    #[error("malformed response from {address}: {reason}")]
    Protocol { address: String, reason: String },
    /// The broker does not speak a version of an API this client needs.
    #[error(
        "broker {address} does not support {api} versions {min}..={max} (it offers {offered})"
    )]
    UnsupportedVersion {
        address: String,
        api: &'static str,
        min: i16,
        max: i16,
        offered: String,
    },
    /// The broker refused an operation with a Kafka error code; its own
    /// explanation, when it gave one, is the message.
    #[error("{operation}: {}", message.as_deref().filter(|message| !message.is_empty()).map_or_else(|| error.to_string(), str::to_string))]
    Broker {
        operation: String,
        error: ResponseError,
        message: Option<String>,
    },
    #[error("topic {0:?} does not exist")]
    UnknownTopic(String),
    #[error("topic {topic:?} has no partition {partition}")]
    UnknownPartition { topic: String, partition: i32 },
    #[error("record of {size_bytes} bytes is larger than the limit of {limit_bytes} bytes")]
    RecordTooLarge {
        size_bytes: usize,
        limit_bytes: usize,
    },
    #[error("{operation} timed out after {after:?}")]
    Timeout { operation: String, after: Duration },
    /// A record was not acknowledged within the producer's delivery timeout.
    #[error("delivering a batch timed out after {after:?}{}", last_error.as_ref().map(|error| format!("; its last attempt failed: {error}")).unwrap_or_default())]
    DeliveryTimeout {
        after: Duration,
        last_error: Option<Box<Error>>,
    },
    /// An idempotent producer had to take a new producer id while a batch
    /// it had sent was unconfirmed: the batch may or may not be stored, and
    /// is not sent again, since a broker could not recognise it as a retry.
    #[error("a batch may or may not have been stored: the producer had to start over under a new producer id before it was confirmed{}", cause.as_ref().map(|error| format!("; its last attempt failed: {error}")).unwrap_or_default())]
    MaybeStored { cause: Option<Box<Error>> },
    /// A fetched batch failed its checks; its records are not returned.
    #[error("corrupt batch in {topic}-{partition} at offset {offset}: {reason}")]
    CorruptBatch {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
    /// The consumer's position is outside the log and no reset policy applies.
    #[error("offset {offset} is out of range for {topic}-{partition}")]
    OffsetOutOfRange {
        topic: String,
        partition: i32,
        offset: i64,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A transactional call out of turn (see the producer's transactions).
    #[error("{0}")]
    Transaction(String),
    /// The producer or consumer was closed before the operation finished.
    #[error("the client was closed")]
    Closed,
}

impl Error {
    /// Whether trying again (after refreshing metadata) may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Io { .. } | Error::Timeout { .. } | Error::DeliveryTimeout { .. } => true,
            Error::Broker { error, .. } => error.is_retriable(),
            _ => false,
        }
    }

    /// Whether a produce attempt that failed with this error may have been
    /// stored anyway: only a broker's refusal before appending rules it
    /// out. A timeout, a lost connection or an unconfirmed append
    /// (NOT_LEADER_OR_FOLLOWER is also sent for records appended by a
    /// leader that lost its leadership) leave it open.
    pub(crate) fn may_have_been_stored(&self) -> bool {
        match self {
            Error::Broker { error, .. } => !matches!(
                error,
                ResponseError::NotEnoughReplicas
                    | ResponseError::UnknownTopicOrPartition
                    | ResponseError::OutOfOrderSequenceNumber
                    | ResponseError::UnknownProducerId
                    | ResponseError::InvalidProducerEpoch
                    | ResponseError::KafkaStorageError
                    | ResponseError::CorruptMessage
                    | ResponseError::InvalidRecord
                    | ResponseError::RecordListTooLarge
                    | ResponseError::MessageTooLarge
            ),
            Error::UnknownTopic(_)
            | Error::UnknownPartition { .. }
            | Error::RecordTooLarge { .. } => false,
            _ => true,
        }
    }

    pub(crate) fn broker(
        operation: impl Into<String>,
        code: i16,
        message: Option<String>,
    ) -> Error {
        Error::Broker {
            operation: operation.into(),
            error: ResponseError::try_from_code(code).unwrap_or(ResponseError::UnknownServerError),
            message,
        }
    }
}

/// `Ok(())` for error code 0, otherwise the broker's refusal of `operation`.
pub(crate) fn check(
    operation: impl FnOnce() -> String,
    code: i16,
    message: Option<&kafka_protocol::protocol::StrBytes>,
) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(Error::broker(
            operation(),
            code,
            message.map(|m| m.to_string()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refusal_before_the_append_rules_a_stored_attempt_out() {
        let refused = |code: i16| Error::broker("produce", code, None).may_have_been_stored();
        // NOT_ENOUGH_REPLICAS, OUT_OF_ORDER_SEQUENCE_NUMBER, KAFKA_STORAGE_ERROR:
        // refused before anything was appended.
        assert!(!refused(19));
        assert!(!refused(45));
        assert!(!refused(56));
        // NOT_LEADER_OR_FOLLOWER (a leader that appended, then lost its
        // leadership), REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS_AFTER_APPEND.
        assert!(refused(6));
        assert!(refused(7));
        assert!(refused(20));
        let lost = Error::Io {
            address: "127.0.0.1:9092".into(),
            source: Arc::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
        };
        assert!(lost.may_have_been_stored());
        let timeout = Error::Timeout {
            operation: "produce".into(),
            after: Duration::from_secs(30),
        };
        assert!(timeout.may_have_been_stored());
        assert!(!Error::UnknownTopic("orders".into()).may_have_been_stored());
    }
}
