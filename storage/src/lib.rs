//! Strata's storage engine: the partition log.
//!
//! A partition's log is a directory of segments, each a `.log` file of Kafka
//! record batches (v2) with a sparse offset index and time index. The active
//! segment is preallocated and mapped, so an append is a copy into memory;
//! sealed segments are trimmed and mapped read-only; reads hand out zero-copy
//! slices of the maps. On open, the log is recovered: everything above the
//! last recovery point is validated batch by batch, a torn tail is cut off and
//! damage in the middle of the log is refused.
//!
//! Storage knows nothing of sockets, replicas or requests: callers pass the
//! time (`now_ms`) and the bounds (high watermark) it should respect.
//!
//! ```
//! use strata_storage::{LogConfig, PartitionLog};
//! use strata_storage::validate::{Source, ValidatedBatches};
//! use strata_storage::record::{BatchBuilder, Record};
//!
//! let dir = tempfile::tempdir()?;
//! let mut log = PartitionLog::open(dir.path().join("orders-0"), LogConfig::default())?;
//! let mut builder = BatchBuilder::new(1_700_000_000_000);
//! builder.push(Record::keyed(b"order-7", b"paid"));
//! let bytes = builder.build();
//! let batches = ValidatedBatches::validate(&bytes, Source::Producer, 1 << 20)?;
//! let appended = log.append_as_leader(&batches, 0, 1_700_000_000_000)?;
//! assert_eq!(appended.first_offset, 0);
//! log.flush()?;
//! let read = log.read(0, 1 << 20, log.log_end_offset())?;
//! assert_eq!(read.records.len(), bytes.len());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod batch;
pub mod checkpoint;
pub mod compaction;
pub mod compression;
pub mod error;
mod index;
pub mod leader_epoch;
pub mod page_cache;
mod partition_log;
pub mod producer_state;
pub mod record;
mod segment;
mod segment_file;
pub mod transaction;
pub mod validate;

pub use error::{Result, StorageError};
pub use leader_epoch::EpochEntry;
pub use partition_log::flush::PendingFlush;
pub use partition_log::retention::{CleanedSegments, CompactionPlan, RetentionOutcome};
pub use partition_log::{
    AppendInfo, LogConfig, PartitionLog, ReadResult, TimestampOffset, SEGMENT_BYTES_MAX,
    SEGMENT_BYTES_MIN,
};
pub use segment::LogSlice;
