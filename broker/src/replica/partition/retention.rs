//! Removing a partition's old data: DeleteRecords, retention, compaction
//! and forgetting idle idempotent producers, each bounded by the high
//! watermark (nothing not fully replicated is retired).

use std::sync::atomic::Ordering;
use std::time::Duration;

use strata_storage::StorageError;
use tracing::info;

use super::{AppendError, Partition, NOT_LEADING};

impl Partition {
    /// As leader: makes the records below `offset` unreadable for good
    /// (DeleteRecords; -1 means the high watermark) and deletes the
    /// segments wholly below it. Only what every in-sync replica has can be
    /// deleted: `offset` may not pass the high watermark. Followers follow
    /// on their next fetch. Returns the new log start offset.
    pub fn delete_records_before(&self, offset: i64) -> Result<i64, AppendError> {
        let mut log = self.log();
        if self.leading_epoch.load(Ordering::Acquire) == NOT_LEADING {
            return Err(AppendError::NotLeader);
        }
        let high_watermark = self.high_watermark();
        let offset = if offset == -1 { high_watermark } else { offset };
        if offset < 0 || offset > high_watermark {
            return Err(AppendError::Storage(StorageError::OffsetOutOfRange {
                requested: offset,
                log_start_offset: log.log_start_offset(),
                log_end_offset: high_watermark,
            }));
        }
        log.delete_records_before(offset)
            .map_err(AppendError::Storage)?;
        let log_start_offset = log.log_start_offset();
        drop(log);
        info!(partition = ?self, log_start_offset, "records deleted below a new log start offset");
        Ok(log_start_offset)
    }

    /// Deletes segments past retention, never above the high watermark.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<(), StorageError> {
        let high_watermark = self.high_watermark();
        let outcome = self.log().enforce_retention(now_ms, high_watermark)?;
        if outcome.segments_deleted > 0 {
            tracing::info!(partition = ?self, segments = outcome.segments_deleted, bytes = outcome.bytes_deleted, log_start_offset = outcome.log_start_offset, "retention deleted segments");
        }
        Ok(())
    }

    /// Forgets idempotent producers whose newest batch here is older than
    /// `expiration` at `now_ms`.
    pub fn expire_producers(&self, now_ms: i64, expiration: Duration) {
        let expired = self
            .log()
            .expire_producers(now_ms, expiration.as_millis() as i64);
        if expired > 0 {
            info!(partition = ?self, producers = expired, "forgot idempotent producers idle past producer.id.expiration.ms");
        }
    }

    /// Compacts the log if its topic is compacted (below the high watermark).
    /// The log's lock is held to plan and to swap the cleaned segments in,
    /// not while they are cleaned: appends and reads go on meanwhile.
    pub fn compact(&self, now_ms: i64) -> Result<(), StorageError> {
        let high_watermark = self.high_watermark();
        let Some(plan) = self.log().plan_compaction(high_watermark, now_ms)? else {
            return Ok(());
        };
        let cleaned = plan.clean()?;
        let outcome = self.log().finish_compaction(cleaned)?;
        if outcome.segments_cleaned > 0 {
            tracing::info!(partition = ?self, segments = outcome.segments_cleaned, records_removed = outcome.records_removed, bytes_before = outcome.bytes_before, bytes_after = outcome.bytes_after, "compacted");
        }
        Ok(())
    }
}
