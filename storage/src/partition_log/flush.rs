//! Flushing: what must reach disk for the appends so far to be durable, and
//! the recovery point that moves once it has.
//!
//! A flush runs in three steps so the fsync happens outside the log's lock and
//! covers every append made before it started (group flushing):
//! [`PartitionLog::begin_flush`] under the lock, [`PendingFlush::sync`]
//! without it, [`PartitionLog::complete_flush`] under it again. A failed fsync
//! stops the log for good.

use std::path::PathBuf;

use tracing::error;

use super::PartitionLog;
use crate::checkpoint;
use crate::error::{io_error, Result, StorageError};
use crate::producer_state;
use crate::segment::SyncTarget;

/// A flush captured under the lock, to be synced without it.
#[must_use = "a pending flush does nothing until synced and completed"]
pub struct PendingFlush {
    target_offset: i64,
    truncations_seen: u64,
    targets: Vec<(SyncTarget, u64)>,
    dir: Option<PathBuf>,
}

impl PendingFlush {
    /// Every offset below this is durable once the flush completes.
    pub fn target_offset(&self) -> i64 {
        self.target_offset
    }

    /// Writes the dirty ranges and file metadata to disk. Safe to run while
    /// the log keeps appending.
    pub fn sync(&self) -> Result<()> {
        for (target, _) in &self.targets {
            target
                .sync()
                .map_err(io_error("fsync segment", target.path()))?;
        }
        if let Some(dir) = &self.dir {
            checkpoint::sync_dir(dir)?;
        }
        Ok(())
    }
}

impl PartitionLog {
    /// Captures what must reach disk for everything appended so far to be
    /// durable. `None` when nothing is dirty.
    pub fn begin_flush(&mut self) -> Result<Option<PendingFlush>> {
        self.check_alive()?;
        let targets: Vec<(SyncTarget, u64)> = self
            .segments
            .values()
            .filter(|segment| {
                segment.flushed_bytes < segment.state.size_bytes || segment.needs_metadata_sync()
            })
            .map(|segment| (segment.sync_target(), segment.metadata_changes))
            .collect();
        let dir = std::mem::take(&mut self.dir_needs_sync).then(|| self.dir.clone());
        if targets.is_empty() && dir.is_none() && self.recovery_point == self.log_end_offset {
            return Ok(None);
        }
        Ok(Some(PendingFlush {
            target_offset: self.log_end_offset,
            truncations_seen: self.truncations,
            targets,
            dir,
        }))
    }

    /// Records the outcome of a flush. A failed fsync stops the log for good:
    /// what the page cache holds may never reach the disk, so nothing above the
    /// recovery point can be promised any more.
    pub fn complete_flush(&mut self, pending: PendingFlush, outcome: Result<()>) -> Result<()> {
        if let Err(cause) = outcome {
            let reason = cause.to_string();
            error!(dir = %self.dir.display(), %reason, "flush failed; the log stops");
            self.failure = Some(reason.clone());
            return Err(StorageError::Failed {
                dir: self.dir.clone(),
                reason,
            });
        }
        for (target, metadata_changes) in &pending.targets {
            if let Some(segment) = self
                .segments
                .values_mut()
                .find(|segment| segment.is_synced_by(target))
            {
                segment.flushed_bytes = segment.flushed_bytes.max(target.end());
                segment.metadata_synced = segment.metadata_synced.max(*metadata_changes);
            }
        }
        self.release_page_cache();
        if pending.truncations_seen == self.truncations {
            self.recovery_point = self
                .recovery_point
                .max(pending.target_offset.min(self.log_end_offset));
        }
        let recovery_segment = *self
            .segments
            .range(..=self.recovery_point)
            .next_back()
            .map_or(&-1, |(base, _)| base);
        if recovery_segment != self.checkpointed_segment {
            self.write_checkpoint()?;
        }
        Ok(())
    }

    /// Hands back the cached pages of durable bytes more than
    /// `page_cache_window_bytes` behind the log end.
    fn release_page_cache(&mut self) {
        let Some(window_bytes) = self.config.page_cache_window_bytes else {
            return;
        };
        let mut newer_bytes = 0u64;
        for segment in self.segments.values_mut().rev() {
            let size_bytes = u64::from(segment.state.size_bytes);
            if newer_bytes + size_bytes > window_bytes {
                let kept_bytes = window_bytes.saturating_sub(newer_bytes);
                segment.release_cached((size_bytes - kept_bytes) as u32);
            }
            newer_bytes += size_bytes;
        }
    }

    /// Flushes everything appended so far and waits for it.
    pub fn flush(&mut self) -> Result<()> {
        if let Some(pending) = self.begin_flush()? {
            let outcome = pending.sync();
            self.complete_flush(pending, outcome)?;
        }
        Ok(())
    }

    /// Flushes and records the recovery point and the producers' state, so
    /// the next open scans and replays nothing (a clean shutdown).
    pub fn checkpoint(&mut self) -> Result<()> {
        self.flush()?;
        producer_state::write_snapshot(&self.dir, self.log_end_offset, &self.producers)?;
        self.write_checkpoint()
    }

    /// Checkpoints and closes the log.
    pub fn close(mut self) -> Result<()> {
        self.checkpoint()
    }
}
