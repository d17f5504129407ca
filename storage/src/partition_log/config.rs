//! A partition log's settings, named after the Kafka topic configs they implement.

use crate::error::{Result, StorageError};

/// Largest `segment.bytes`: positions in the offset index are 32-bit, and
/// Kafka's own limit is `i32::MAX`.
pub const SEGMENT_BYTES_MAX: u64 = i32::MAX as u64;
/// Smallest `segment.bytes`, so a segment holds at least one ordinary batch.
pub const SEGMENT_BYTES_MIN: u64 = 1024;

/// Per-partition settings, named after the Kafka topic configs they implement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`: the active segment rolls before it would exceed this.
    pub segment_bytes: u64,
    /// `segment.ms`: the active segment rolls once it is this old.
    pub segment_ms: i64,
    /// `index.interval.bytes`: bytes of batches between offset index entries.
    pub index_interval_bytes: u32,
    /// `retention.bytes`: sealed segments are deleted while the log is larger.
    pub retention_bytes: Option<u64>,
    /// `retention.ms`: sealed segments whose newest record is older are deleted.
    pub retention_ms: Option<i64>,
    /// Bytes the active segment's file grows by at a time (disk space is
    /// claimed ahead of the writes, so a full disk is an error, not SIGBUS).
    pub preallocate_bytes: u64,
    /// `cleanup.policy=compact`: sealed segments keep only the latest
    /// record of each key (see `compaction.rs`).
    pub compact: bool,
    /// `delete.retention.ms`: how long a compacted log keeps a tombstone
    /// after its batch's newest timestamp.
    pub delete_retention_ms: i64,
    /// Durable bytes at the end of the log kept in the page cache; older
    /// durable pages are unmapped and handed back to the kernel after each
    /// flush, so new appends reuse warm pages (writing into never-used memory
    /// is several times slower) while a consumer up to this far behind the
    /// tail still reads from memory. `None` leaves the cache to the kernel.
    pub page_cache_window_bytes: Option<u64>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            index_interval_bytes: 4096,
            retention_bytes: None,
            retention_ms: Some(7 * 24 * 60 * 60 * 1000),
            compact: false,
            delete_retention_ms: 24 * 60 * 60 * 1000,
            preallocate_bytes: 32 << 20,
            page_cache_window_bytes: Some(128 << 20),
        }
    }
}

impl LogConfig {
    pub fn validate(&self) -> Result<()> {
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return Err(StorageError::Config(format!(
                "segment.bytes must be between {SEGMENT_BYTES_MIN} and {SEGMENT_BYTES_MAX}, not {}",
                self.segment_bytes
            )));
        }
        if self.segment_ms <= 0 {
            return Err(StorageError::Config(format!(
                "segment.ms must be positive, not {}",
                self.segment_ms
            )));
        }
        if self.index_interval_bytes == 0 {
            return Err(StorageError::Config(
                "index.interval.bytes must be positive".into(),
            ));
        }
        if self.preallocate_bytes == 0 {
            return Err(StorageError::Config(
                "the preallocation chunk must be positive".into(),
            ));
        }
        Ok(())
    }
}
