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
use crate::segment::{self, LogSlice, ScanStop, Segment, SegmentState};
use crate::transaction::{self, AbortedTxn};

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
    ///
    /// All three steps in one call; an owner that locks the log runs
    /// [`PartitionLog::plan_compaction`] and
    /// [`PartitionLog::finish_compaction`] under its lock and
    /// [`CompactionPlan::clean`] without it.
    pub fn compact(&mut self, upper_bound_offset: i64, now_ms: i64) -> Result<CompactionOutcome> {
        match self.plan_compaction(upper_bound_offset, now_ms)? {
            Some(plan) => {
                let cleaned = plan.clean()?;
                self.finish_compaction(cleaned)
            }
            None => Ok(CompactionOutcome::default()),
        }
    }

    /// Captures what a compaction reads (see [`PartitionLog::compact`]), or
    /// `None` when nothing was sealed below the bound since the last one.
    pub fn plan_compaction(
        &self,
        upper_bound_offset: i64,
        now_ms: i64,
    ) -> Result<Option<CompactionPlan>> {
        self.check_alive()?;
        // Open transactions are not compacted: whether their records stay
        // depends on how they end.
        let bound = self
            .last_stable_offset(upper_bound_offset)
            .min(self.recovery_point);
        let bases: Vec<i64> = self.segments.keys().copied().collect();
        let candidate_count = bases.windows(2).take_while(|pair| pair[1] <= bound).count();
        let through = candidate_count.checked_sub(1).map(|last| bases[last]);
        if !self.config.compact || through == self.compacted_through {
            return Ok(None);
        }
        let below_bound = self
            .segments
            .values()
            .take_while(|segment| segment.base_offset < bound)
            .map(|segment| PlannedSegment {
                base: segment.base_offset,
                bytes: segment.slice(0, segment.state.size_bytes),
                last_offset: segment.state.last_offset,
            })
            .collect();
        Ok(Some(CompactionPlan {
            dir: self.dir.clone(),
            bound,
            aborted: self.aborted.values().copied().collect(),
            tombstones_before_ms: now_ms.saturating_sub(self.config.delete_retention_ms),
            index_interval_bytes: self.config.index_interval_bytes,
            truncations_seen: self.truncations,
            below_bound,
            candidate_count,
            through,
        }))
    }

    /// Swaps the cleaned segments in, each only if the log still holds the
    /// very file it was cleaned from and nothing was truncated meanwhile
    /// (otherwise that work is dropped; the next pass redoes it). A failure
    /// half way stops the log: a restart recovers it from whichever file
    /// the rename left.
    pub fn finish_compaction(&mut self, mut cleaned: CleanedSegments) -> Result<CompactionOutcome> {
        self.check_alive()?;
        let mut outcome = CompactionOutcome::default();
        if cleaned.truncations_seen != self.truncations {
            return Ok(outcome);
        }
        for segment in std::mem::take(&mut cleaned.segments) {
            let unchanged = self
                .segments
                .get(&segment.base)
                .is_some_and(|current| current.is_read_by(&segment.original));
            if !unchanged {
                continue; // dropping it removes its file
            }
            let path = segment::log_path(&self.dir, segment.base);
            if let Err(error) = self.swap_in(&segment, &path) {
                error!(segment = %path.display(), %error, "cannot swap in a compacted segment; the log stops until a restart recovers it");
                self.failure = Some(format!("compaction of {} failed: {error}", path.display()));
                return Err(error);
            }
            outcome.segments_cleaned += 1;
            outcome.records_removed += segment.records_removed;
            outcome.bytes_before += segment.original.len() as u64;
            outcome.bytes_after += u64::from(segment.state.size_bytes);
        }
        self.compacted_through = cleaned.through;
        Ok(outcome)
    }

    fn swap_in(&mut self, cleaned: &CleanedSegment, path: &Path) -> Result<()> {
        let base = cleaned.base;
        // Readers of the old file keep its map (and so its bytes) alive.
        drop(self.segments.remove(&base).expect("a sealed segment"));
        segment::remove_index_files(&self.dir, base)?;
        fs::rename(&cleaned.tmp, path).map_err(io_error("rename compacted segment", path))?;
        checkpoint::sync_dir(&self.dir)?;
        let (handle, file_len) = Segment::map_for_recovery(&self.dir, base)?;
        let segment = Segment::sealed_from_recovery(
            &self.dir,
            base,
            handle,
            file_len,
            cleaned.state.clone(),
            false,
        )?;
        self.segments.insert(base, segment);
        let next = self
            .segments
            .range(base + 1..)
            .next()
            .map(|(next, _)| *next);
        let aborted = self.aborted_between(base, next.expect("a sealed segment has a successor"));
        transaction::write_txn_index(&self.dir, base, &aborted)
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
        self.aborted = self.aborted.split_off(&first_base);
        Ok(bytes_deleted)
    }
}

/// A segment as a compaction plan saw it.
struct PlannedSegment {
    base: i64,
    bytes: LogSlice,
    last_offset: Option<i64>,
}

/// What a compaction reads, captured under the log's lock: the bytes of
/// every segment below the bound, which stay valid without the lock.
#[must_use = "a plan does nothing until cleaned and finished"]
pub struct CompactionPlan {
    dir: PathBuf,
    bound: i64,
    aborted: Vec<AbortedTxn>,
    tombstones_before_ms: i64,
    index_interval_bytes: u32,
    truncations_seen: u64,
    below_bound: Vec<PlannedSegment>,
    /// The first this many of `below_bound` (sealed, wholly below the
    /// bound) are cleaned.
    candidate_count: usize,
    through: Option<i64>,
}

impl CompactionPlan {
    /// Cleans the candidate segments into new files beside them, synced and
    /// checked to read back, without the log's lock.
    pub fn clean(self) -> Result<CleanedSegments> {
        let corrupt = |base: i64, reason: String| StorageError::Corrupt {
            segment: segment::log_path(&self.dir, base),
            position: 0,
            reason,
        };
        let aborted = compaction::AbortedRanges::new(&self.aborted);
        let mut latest = compaction::LatestOffsets::new();
        for planned in &self.below_bound {
            compaction::note_latest_offsets(&planned.bytes, self.bound, &aborted, &mut latest)
                .map_err(|error| corrupt(planned.base, error.to_string()))?;
        }
        let mut cleaned = CleanedSegments {
            truncations_seen: self.truncations_seen,
            through: self.through,
            segments: Vec::new(),
        };
        let mut previous_last_offset = i64::MIN;
        for planned in self.below_bound.into_iter().take(self.candidate_count) {
            let base = planned.base;
            let before = previous_last_offset;
            previous_last_offset = planned.last_offset.unwrap_or(before);
            let Some((bytes, records_removed)) = compaction::clean_segment(
                &planned.bytes,
                &latest,
                &aborted,
                self.tombstones_before_ms,
            )
            .map_err(|error| corrupt(base, error.to_string()))?
            else {
                continue;
            };
            let (state, stop) = segment::scan(
                &bytes,
                base,
                before,
                i64::MIN,
                self.index_interval_bytes,
                &mut |_| {},
            );
            if let ScanStop::Invalid { position, reason } = stop {
                return Err(StorageError::Corrupt {
                    segment: segment::log_path(&self.dir, base),
                    position: u64::from(position),
                    reason: format!("compacted segment does not read back: {reason}"),
                });
            }
            let mut tmp = segment::log_path(&self.dir, base).into_os_string();
            tmp.push(".tmp");
            let tmp = PathBuf::from(tmp);
            fs::write(&tmp, &bytes).map_err(io_error("write compacted segment", &tmp))?;
            let segment = CleanedSegment {
                base,
                original: planned.bytes,
                tmp,
                state,
                records_removed,
            };
            fs::File::open(&segment.tmp)
                .and_then(|file| file.sync_all())
                .map_err(io_error("fsync", &segment.tmp))?;
            cleaned.segments.push(segment);
        }
        Ok(cleaned)
    }
}

/// Cleaned segments in files beside the originals, waiting for
/// [`PartitionLog::finish_compaction`]. Dropped unfinished, they remove
/// their files.
#[must_use = "cleaned segments are swapped in by finish_compaction"]
pub struct CleanedSegments {
    truncations_seen: u64,
    through: Option<i64>,
    segments: Vec<CleanedSegment>,
}

struct CleanedSegment {
    base: i64,
    /// The bytes it was cleaned from (and so the file they are in).
    original: LogSlice,
    tmp: PathBuf,
    state: SegmentState,
    records_removed: u64,
}

impl Drop for CleanedSegment {
    fn drop(&mut self) {
        // Gone already once swapped in.
        let _ = fs::remove_file(&self.tmp);
    }
}
