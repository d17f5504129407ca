//! Removing data from the front of the log: retention by time and size,
//! DeleteRecords, and compaction of sealed segments.
//!
//! The new log start offset is checkpointed before any segment goes, so a
//! crash half way never brings deleted offsets back into reach.

use std::fs;
use std::path::{Path, PathBuf};

use tracing::{error, info};

use super::PartitionLog;
use crate::checkpoint;
use crate::compaction::{self, CompactionOutcome};
use crate::error::{io_error, Result, StorageError};
use crate::producer_state;
use crate::segment::{self, ScanStop, Segment};

/// What retention removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
    pub log_start_offset: i64,
}

impl PartitionLog {
    /// Makes offsets below `offset` unreadable (DeleteRecords) and deletes the
    /// segments wholly below it. Durable before it returns.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<()> {
        self.check_alive()?;
        if offset > self.log_end_offset {
            return Err(StorageError::OffsetOutOfRange {
                requested: offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: self.log_end_offset,
            });
        }
        if offset <= self.log_start_offset {
            return Ok(());
        }
        self.advance_log_start(offset)?;
        let deletable: Vec<i64> = self.sealed_segments_below(offset);
        self.delete_segments(&deletable).map(|_| ())
    }

    /// Deletes sealed segments by `retention.ms` and `retention.bytes`, oldest
    /// first, never one holding offsets at or above `upper_bound_offset` (the
    /// high watermark: data not yet fully replicated is never retired).
    pub fn enforce_retention(
        &mut self,
        now_ms: i64,
        upper_bound_offset: i64,
    ) -> Result<RetentionOutcome> {
        self.check_alive()?;
        let mut remaining_bytes = self.size_bytes();
        let mut deletable = Vec::new();
        let mut new_start = self.log_start_offset;
        let bases: Vec<i64> = self.segments.keys().copied().collect();
        for pair in bases.windows(2) {
            let (base, next_base) = (pair[0], pair[1]);
            let segment = &self.segments[&base];
            if next_base > upper_bound_offset {
                break;
            }
            let size = segment.state.size_bytes as u64;
            let expired = self.config.retention_ms.is_some_and(|retention_ms| {
                segment.state.max_timestamp < now_ms.saturating_sub(retention_ms)
            });
            let oversized = self.config.retention_bytes.is_some_and(|retention_bytes| {
                remaining_bytes.saturating_sub(size) >= retention_bytes
            });
            if !expired && !oversized {
                break;
            }
            remaining_bytes -= size;
            deletable.push(base);
            new_start = new_start.max(next_base);
        }
        if deletable.is_empty() {
            return Ok(RetentionOutcome {
                log_start_offset: self.log_start_offset,
                ..RetentionOutcome::default()
            });
        }
        self.advance_log_start(new_start)?;
        let bytes_deleted = self.delete_segments(&deletable)?;
        Ok(RetentionOutcome {
            segments_deleted: deletable.len(),
            bytes_deleted,
            log_start_offset: new_start,
        })
    }

    /// Compacts the sealed segments wholly below `upper_bound_offset` (the
    /// high watermark) and the recovery point, once a segment was sealed
    /// there since the last compaction: each keeps only the records no later
    /// record with the same key (up to the bound) replaces. A cleaned
    /// segment is written to a new file and renamed over the old one, so
    /// readers keep the bytes they hold and a crash leaves one or the other.
    pub fn compact(&mut self, upper_bound_offset: i64, now_ms: i64) -> Result<CompactionOutcome> {
        self.check_alive()?;
        let bound = upper_bound_offset.min(self.recovery_point);
        let bases: Vec<i64> = self.segments.keys().copied().collect();
        let candidates: Vec<i64> = bases
            .windows(2)
            .take_while(|pair| pair[1] <= bound)
            .map(|pair| pair[0])
            .collect();
        if !self.config.compact || candidates.last().copied() == self.compacted_through {
            return Ok(CompactionOutcome::default());
        }
        let mut latest = compaction::LatestOffsets::new();
        for segment in self.segments.values() {
            if segment.base_offset >= bound {
                break;
            }
            compaction::note_latest_offsets(segment.data(), bound, &mut latest)
                .map_err(|error| self.corrupt(segment, error.to_string()))?;
        }
        let tombstones_before_ms = now_ms.saturating_sub(self.config.delete_retention_ms);
        let mut outcome = CompactionOutcome::default();
        for base in &candidates {
            let segment = &self.segments[base];
            let cleaned = compaction::clean_segment(segment.data(), &latest, tombstones_before_ms)
                .map_err(|error| self.corrupt(segment, error.to_string()))?;
            let Some((bytes, removed)) = cleaned else {
                continue;
            };
            outcome.segments_cleaned += 1;
            outcome.records_removed += removed;
            outcome.bytes_before += segment.state.size_bytes as u64;
            outcome.bytes_after += bytes.len() as u64;
            self.replace_segment(*base, &bytes)?;
        }
        self.compacted_through = candidates.last().copied();
        Ok(outcome)
    }

    fn corrupt(&self, segment: &Segment, reason: String) -> StorageError {
        StorageError::Corrupt {
            segment: segment.path().to_path_buf(),
            position: 0,
            reason,
        }
    }

    /// Swaps sealed segment `base` for `bytes` (the same offsets, fewer
    /// records). A failure half way stops the log: a restart recovers it
    /// from whichever file the rename left.
    fn replace_segment(&mut self, base: i64, bytes: &[u8]) -> Result<()> {
        let path = segment::log_path(&self.dir, base);
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        fs::write(&tmp, bytes).map_err(io_error("write compacted segment", &tmp))?;
        fs::File::open(&tmp)
            .and_then(|file| file.sync_all())
            .map_err(io_error("fsync", &tmp))?;
        let replaced = self.swap_segment_file(base, &tmp, &path);
        if let Err(error) = &replaced {
            error!(segment = %path.display(), %error, "cannot swap in a compacted segment; the log stops until a restart recovers it");
            self.failure = Some(format!("compaction of {} failed: {error}", path.display()));
        }
        replaced
    }

    fn swap_segment_file(&mut self, base: i64, tmp: &Path, path: &Path) -> Result<()> {
        let previous_last_offset = self
            .segments
            .range(..base)
            .next_back()
            .and_then(|(_, segment)| segment.state.last_offset)
            .unwrap_or(i64::MIN);
        // Readers of the old file keep its map (and so its bytes) alive.
        drop(self.segments.remove(&base).expect("a sealed segment"));
        segment::remove_index_files(&self.dir, base)?;
        fs::rename(tmp, path).map_err(io_error("rename compacted segment", path))?;
        checkpoint::sync_dir(&self.dir)?;
        let (handle, file_len) = Segment::map_for_recovery(&self.dir, base)?;
        let (state, stop) = segment::scan(
            handle.data(file_len),
            base,
            previous_last_offset,
            i64::MIN,
            self.config.index_interval_bytes,
            &mut |_| {},
        );
        if let ScanStop::Invalid { position, reason } = stop {
            return Err(StorageError::Corrupt {
                segment: path.to_path_buf(),
                position: u64::from(position),
                reason: format!("compacted segment does not read back: {reason}"),
            });
        }
        let segment =
            Segment::sealed_from_recovery(&self.dir, base, handle, file_len, state, false)?;
        self.segments.insert(base, segment);
        Ok(())
    }

    fn advance_log_start(&mut self, offset: i64) -> Result<()> {
        assert!(
            offset <= self.log_end_offset,
            "log start offset beyond the log end offset"
        );
        self.log_start_offset = offset;
        if self.epochs.truncate_from_start(offset) {
            self.epochs.persist()?;
        }
        // The new start must be on disk before any segment disappears.
        self.write_checkpoint()
    }

    /// Sealed segments whose every offset lies below `offset`.
    fn sealed_segments_below(&self, offset: i64) -> Vec<i64> {
        let bases: Vec<i64> = self.segments.keys().copied().collect();
        bases
            .windows(2)
            .take_while(|pair| pair[1] <= offset)
            .map(|pair| pair[0])
            .collect()
    }

    fn delete_segments(&mut self, bases: &[i64]) -> Result<u64> {
        let mut bytes_deleted = 0;
        for base in bases {
            let segment = self.segments.remove(base).expect("listed");
            assert!(
                segment.is_sealed() && !self.segments.is_empty(),
                "only sealed segments are deleted"
            );
            bytes_deleted += segment.state.size_bytes as u64;
            info!(segment = %segment.path().display(), "deleting segment");
            segment.delete(&self.dir)?;
        }
        self.dir_needs_sync = true;
        // A snapshot at the first segment's base replaces the older ones.
        let first_base = *self
            .segments
            .keys()
            .next()
            .expect("a log always has a segment");
        producer_state::remove_snapshots(&self.dir, |offset| offset < first_base)?;
        Ok(bytes_deleted)
    }
}
