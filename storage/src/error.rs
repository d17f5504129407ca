//! The one error type of the storage boundary. Every variant keeps its cause.

use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::batch::{InvalidBatch, ProducerId};

#[derive(Debug, Error)]
pub enum StorageError {
    #[error("cannot {operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("corrupt data in {segment} at byte {position}: {reason}; this partition is not served until it is repaired or re-replicated")]
    Corrupt {
        segment: PathBuf,
        position: u64,
        reason: String,
    },
    #[error("offset {requested} is out of range: the log holds offsets [{log_start_offset}, {log_end_offset})")]
    OffsetOutOfRange {
        requested: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    #[error(transparent)]
    InvalidBatch(#[from] InvalidBatch),
    #[error("replicated batch at offset {base_offset} does not follow the log end offset {log_end_offset}")]
    OffsetNotIncreasing {
        base_offset: i64,
        log_end_offset: i64,
    },
    #[error("a record batch of {batch_bytes} bytes does not fit in a segment of {segment_bytes} bytes; raise segment.bytes or lower max.message.bytes")]
    BatchTooLarge {
        batch_bytes: usize,
        segment_bytes: u64,
    },
    #[error("the log in {dir} stopped after a failed flush ({reason}); restart the broker so the log is recovered from what the disk holds")]
    Failed { dir: PathBuf, reason: String },
    /// A produced batch that idempotence refuses (see `producer_state`).
    #[error(transparent)]
    Sequence(#[from] SequenceError),
    #[error("invalid log configuration: {0}")]
    Config(String),
}

/// Why a produced batch is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SequenceError {
    #[error("producer {producer_id} sent epoch {producer_epoch}, older than its current epoch {current_epoch}: a newer instance fenced it")]
    InvalidProducerEpoch {
        producer_id: ProducerId,
        producer_epoch: i16,
        current_epoch: i16,
    },
    #[error("producer {producer_id} (epoch {producer_epoch}) sent sequence {first_sequence}, expected {expected_sequence}: a batch before it is missing")]
    OutOfOrderSequence {
        producer_id: ProducerId,
        producer_epoch: i16,
        first_sequence: i32,
        expected_sequence: i32,
    },
    #[error("producer {producer_id} is unknown to this partition (its state expired) and its batch starts at sequence {first_sequence}, not 0")]
    UnknownProducerId {
        producer_id: ProducerId,
        first_sequence: i32,
    },
    #[error("a produce request from an idempotent producer must hold one batch per partition, not {batch_count}")]
    ManyBatches { batch_count: usize },
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Wraps an `io::Error` with the operation and the path it failed on.
pub(crate) fn io_error<'a>(
    operation: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> StorageError + 'a {
    move |source| StorageError::Io {
        operation,
        path: path.to_path_buf(),
        source,
    }
}
