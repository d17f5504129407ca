//! The log of one partition: an ordered set of segments, one of them active.
//!
//! Invariants, asserted where they can break:
//! - `log_start_offset <= log_end_offset`, and `recovery_point <= log_end_offset`.
//! - Segments are keyed by base offset; every batch in a segment has offsets at
//!   or above its base and below the next segment's base.
//! - Only the last segment is ever written; every other one is sealed.
//! - Everything below `recovery_point` has been fsync'd; recovery trusts it and
//!   fully validates everything above it.
//!
//! Files in the partition directory:
//!
//! ```text
//! BASE.log BASE.index BASE.timeindex   one segment (see `segment`)
//! log-checkpoint                       recovery point and log start offset
//! leader-epoch-checkpoint              leader epoch -> start offset
//! BASE.txnindex                        aborted transactions whose markers are in BASE (see `transaction`)
//! OFFSET.snapshot                      producer state as of OFFSET (see `producer_state`)
//! *.deleted                            segments waiting for their last reader
//! ```
//!
//! Concurrency: methods that change the log take `&mut self`; the owner puts
//! the log behind a lock. Reads return [`LogSlice`]s that stay valid after the
//! lock is released; flushes sync outside it (see `flush`).
//!
//! This file holds the log's state, appends, reads and truncation; the other
//! parts of its life are beside it: `recovery` (open), `flush` (durability),
//! `retention` (deleting and compacting old data), `config` (settings).

mod config;
pub(crate) mod flush;
mod recovery;
pub(crate) mod retention;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tracing::info;

pub use config::{LogConfig, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN};

use crate::batch::{BatchHeader, BatchIter, Compression, ProducerId};
use crate::checkpoint;
use crate::error::SequenceError;
use crate::error::{Result, StorageError};
use crate::leader_epoch::{EpochEntry, LeaderEpochCache};
use crate::producer_state::{self, ProducerStates, SequenceCheck};
use crate::record::RecordIter;
use crate::segment::{self, LogSlice, ScanStop, Segment, Stamp};
use crate::transaction::{self, AbortedTxn, Marker};
use crate::validate::{Source, ValidatedBatches};

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// True when the batch was a retry of one already in the log: nothing
    /// was written, and the offsets are the original's.
    pub duplicate: bool,
    pub first_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub log_end_offset: i64,
}

/// Whole batches read from one segment.
#[derive(Debug)]
pub struct ReadResult {
    pub records: LogSlice,
    /// The offset to read from next.
    pub next_offset: i64,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

/// The first record at or after a timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampOffset {
    pub offset: i64,
    pub timestamp: i64,
}

enum Assign {
    /// Offsets come from the log end; batches are stamped with the epoch.
    Leader { leader_epoch: i32 },
    /// Offsets and epochs come from the leader's batches.
    Follower,
}

pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    segments: BTreeMap<i64, Segment>,
    log_start_offset: i64,
    log_end_offset: i64,
    recovery_point: i64,
    /// Base offset of the segment holding the recovery point last written to
    /// the checkpoint; the checkpoint is rewritten when this changes.
    checkpointed_segment: i64,
    epochs: LeaderEpochCache,
    dir_needs_sync: bool,
    /// Bumped by every truncation, so a flush that started before one does not
    /// advance the recovery point past the new end.
    truncations: u64,
    /// Set when a flush failed: the page cache can no longer be trusted, so the
    /// log refuses everything until the process restarts and recovers.
    failure: Option<String>,
    /// Base of the newest sealed segment the last compaction covered: the
    /// next one runs once another segment is sealed below the bound.
    compacted_through: Option<i64>,
    /// Idempotent and transactional producers' state as of the log end.
    producers: ProducerStates,
    /// Aborted transactions by the offset of their abort marker.
    aborted: BTreeMap<i64, AbortedTxn>,
}

impl std::fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionLog")
            .field("dir", &self.dir)
            .field("log_start_offset", &self.log_start_offset)
            .field("log_end_offset", &self.log_end_offset)
            .field("recovery_point", &self.recovery_point)
            .field("segments", &self.segments.len())
            .finish()
    }
}

impl PartitionLog {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Applies new settings; they take effect from the next roll or retention run.
    pub fn set_config(&mut self, config: LogConfig) -> Result<()> {
        config.validate()?;
        self.config = config;
        Ok(())
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// The offset the next appended record gets.
    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset
    }

    /// Every offset below this is on disk.
    pub fn recovery_point(&self) -> i64 {
        self.recovery_point
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments
            .values()
            .map(|segment| segment.state.size_bytes as u64)
            .sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        self.segments.keys().copied().collect()
    }

    pub fn leader_epochs(&self) -> &[EpochEntry] {
        self.epochs.entries()
    }

    /// The latest leader epoch in the log, if any batch carried one.
    pub fn latest_leader_epoch(&self) -> Option<i32> {
        self.epochs.latest().map(|entry| entry.leader_epoch)
    }

    /// For OffsetForLeaderEpoch: the largest epoch at or below `leader_epoch`
    /// and where it ended, or `(-1, -1)` when the log knows no such epoch.
    pub fn end_offset_for_epoch(&self, leader_epoch: i32) -> (i32, i64) {
        self.epochs
            .end_offset_for(leader_epoch, self.log_end_offset)
    }

    /// Appends producer batches at the log end, stamping their base offsets
    /// and `leader_epoch`. A batch of an idempotent producer is checked
    /// against its state first: a retry of one of its last batches appends
    /// nothing and answers the original offsets (`duplicate`).
    pub fn append_as_leader(
        &mut self,
        batches: &ValidatedBatches<'_>,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo> {
        self.check_alive()?;
        let idempotent = batches
            .iter()
            .any(|(header, _)| header.producer_id != ProducerId::NONE);
        if idempotent {
            if batches.batch_count() != 1 {
                return Err(SequenceError::ManyBatches {
                    batch_count: batches.batch_count(),
                }
                .into());
            }
            let (header, _) = batches.iter().next().expect("one batch");
            if let SequenceCheck::Duplicate(original) = self.producers.check(&header)? {
                return Ok(AppendInfo {
                    duplicate: true,
                    first_offset: original.first_offset,
                    last_offset: original.last_offset,
                    max_timestamp: header.max_timestamp,
                    log_end_offset: original.last_offset + 1,
                });
            }
        }
        self.append(batches, Assign::Leader { leader_epoch }, now_ms)
    }

    /// Idempotent and transactional producers' state as of the log end.
    pub fn producers(&self) -> &ProducerStates {
        &self.producers
    }

    /// Appends the marker that ends `producer_id`'s transaction (from its
    /// transaction coordinator), stamped with `leader_epoch`. A marker of
    /// an epoch older than the producer's newest here is refused: a newer
    /// instance (or the coordinator) fenced that epoch.
    pub fn append_marker(
        &mut self,
        marker: Marker,
        producer_id: ProducerId,
        producer_epoch: i16,
        coordinator_epoch: i32,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo> {
        self.producers.check_epoch(producer_id, producer_epoch)?;
        let bytes = marker.batch(producer_id, producer_epoch, coordinator_epoch, now_ms);
        let batches = ValidatedBatches::validate(&bytes, Source::Replica, usize::MAX)
            .expect("a marker this log built is valid");
        self.append(&batches, Assign::Leader { leader_epoch }, now_ms)
    }

    /// Appends a coordinator's transactional batches (a transactional
    /// offset commit) at the log end: their producer's epoch is checked (an
    /// older one than this partition knows is fenced), their sequences are
    /// not (coordinators number nothing).
    pub fn append_for_coordinator(
        &mut self,
        batches: &ValidatedBatches<'_>,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo> {
        for (header, _) in batches.iter() {
            self.producers
                .check_epoch(header.producer_id, header.producer_epoch)?;
        }
        self.append(batches, Assign::Leader { leader_epoch }, now_ms)
    }

    /// The offset below which no transaction is still open, if below
    /// `high_watermark`: what a `read_committed` consumer may read up to.
    pub fn last_stable_offset(&self, high_watermark: i64) -> i64 {
        self.producers
            .first_unstable_offset()
            .map_or(high_watermark, |first| first.min(high_watermark))
    }

    /// The aborted transactions with records in `[from_offset,
    /// upper_bound_offset)`, by abort marker offset: what a `read_committed`
    /// fetch of that range lists.
    pub fn aborted_transactions(
        &self,
        from_offset: i64,
        upper_bound_offset: i64,
    ) -> Vec<AbortedTxn> {
        let mut overlapping = Vec::new();
        for entry in self.aborted.range(from_offset..).map(|(_, entry)| entry) {
            if entry.first_offset < upper_bound_offset {
                overlapping.push(*entry);
            }
            // Every transaction aborted later started at or after this one's
            // last stable offset.
            if entry.last_stable_offset >= upper_bound_offset {
                break;
            }
        }
        overlapping
    }

    /// The aborted transactions whose markers lie in `[from, to)`.
    pub(crate) fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        self.aborted
            .range(from..to)
            .map(|(_, entry)| *entry)
            .collect()
    }

    /// Forgets idempotent producers whose newest batch is older than
    /// `expiration_ms` at `now_ms` (`producer.id.expiration.ms`); their next
    /// batch must start a new sequence, or is told UNKNOWN_PRODUCER_ID.
    /// Returns how many.
    pub fn expire_producers(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        self.producers.expire(now_ms, expiration_ms)
    }

    /// Appends batches fetched from the leader, keeping their offsets, which
    /// must start at or after the log end offset.
    pub fn append_as_follower(
        &mut self,
        batches: &ValidatedBatches<'_>,
        now_ms: i64,
    ) -> Result<AppendInfo> {
        if batches.first_base_offset() < self.log_end_offset {
            return Err(StorageError::OffsetNotIncreasing {
                base_offset: batches.first_base_offset(),
                log_end_offset: self.log_end_offset,
            });
        }
        self.append(batches, Assign::Follower, now_ms)
    }

    /// Writes `batches` in runs, each a single copy into the active segment.
    /// Batches that fit in one segment land in one run, so they are appended
    /// entirely or not at all; a longer follower append may stop between runs,
    /// leaving the log end after the last whole run.
    fn append(
        &mut self,
        batches: &ValidatedBatches<'_>,
        assign: Assign,
        now_ms: i64,
    ) -> Result<AppendInfo> {
        self.check_alive()?;
        let source = batches.bytes();
        let first_offset = match assign {
            Assign::Leader { .. } => self.log_end_offset,
            Assign::Follower => batches.first_base_offset(),
        };
        let preallocate_bytes = self.config.preallocate_bytes;
        let index_interval_bytes = self.config.index_interval_bytes;
        let segment_bytes = self.config.segment_bytes;
        self.roll_if_old(now_ms)?;
        let mut run_start = 0usize;
        while run_start < source.len() {
            let rest = &source[run_start..];
            let run_first_offset = match assign {
                Assign::Leader { .. } => self.log_end_offset,
                Assign::Follower => BatchHeader::parse(rest).expect("validated").base_offset,
            };
            let active = self.writable_segment(run_first_offset, now_ms)?;
            // Take as many whole batches as fit in the active segment.
            let mut run_bytes = 0usize;
            let mut run_next_offset = run_first_offset;
            for (header, _) in BatchIter::new(rest) {
                let base_offset = match assign {
                    Assign::Leader { .. } => run_next_offset,
                    Assign::Follower => header.base_offset,
                };
                let last_offset = base_offset + header.last_offset_delta as i64;
                let fits_bytes = (run_bytes + header.total_bytes()) as u64 <= active.free_bytes();
                let fits_offsets = last_offset - active.base_offset <= u32::MAX as i64;
                if !fits_bytes || !fits_offsets {
                    break;
                }
                run_bytes += header.total_bytes();
                run_next_offset = last_offset + 1;
            }
            let rest_fits_a_new_segment = rest.len() as u64 <= segment_bytes;
            if run_bytes < rest.len()
                && !active.is_empty()
                && (run_bytes == 0 || rest_fits_a_new_segment)
            {
                self.roll()?;
                continue;
            }
            if run_bytes == 0 {
                let batch_bytes = BatchHeader::parse(rest).expect("validated").total_bytes();
                return Err(StorageError::BatchTooLarge {
                    batch_bytes,
                    segment_bytes,
                });
            }
            let run = &rest[..run_bytes];
            // The epoch cache learns of an epoch before its batches are written;
            // recovery drops entries that start past the log end.
            let epochs_changed = match assign {
                Assign::Leader { leader_epoch } => {
                    self.epochs.assign(leader_epoch, run_first_offset)
                }
                Assign::Follower => BatchIter::new(run).fold(false, |changed, (header, _)| {
                    self.epochs
                        .assign(header.partition_leader_epoch, header.base_offset)
                        | changed
                }),
            };
            if epochs_changed {
                self.epochs.persist()?;
            }
            let stamp = match assign {
                Assign::Leader { leader_epoch } => Some(Stamp {
                    first_offset: run_first_offset,
                    leader_epoch,
                }),
                Assign::Follower => None,
            };
            let active = self.active_mut();
            active.reserve(run_bytes as u64, preallocate_bytes)?;
            let next_offset = active.append_run(run, stamp, index_interval_bytes)?;
            self.log_end_offset = next_offset;
            run_start += run_bytes;
            let mut base_offset = run_first_offset;
            for (mut header, batch) in BatchIter::new(run) {
                if stamp.is_some() {
                    header.base_offset = base_offset;
                }
                base_offset = header.last_offset() + 1;
                if let Some(aborted) = self.producers.record(&header, batch) {
                    self.aborted.insert(aborted.last_offset, aborted);
                }
            }
        }
        Ok(AppendInfo {
            duplicate: false,
            first_offset,
            last_offset: self.log_end_offset - 1,
            max_timestamp: batches.max_timestamp(),
            log_end_offset: self.log_end_offset,
        })
    }

    /// The active segment, created at `base_offset` if the last one is sealed.
    fn writable_segment(&mut self, base_offset: i64, now_ms: i64) -> Result<&mut Segment> {
        let last_is_sealed = self.active().is_sealed();
        if last_is_sealed {
            let mut segment = Segment::create(&self.dir, base_offset, self.config.segment_bytes)?;
            segment.created_ms = Some(now_ms);
            self.segments.insert(base_offset, segment);
            self.dir_needs_sync = true;
        }
        let active = self.active_mut();
        active.created_ms.get_or_insert(now_ms);
        Ok(active)
    }

    /// Seals the active segment when `segment.ms` has passed since it was
    /// first written.
    fn roll_if_old(&mut self, now_ms: i64) -> Result<()> {
        let segment_ms = self.config.segment_ms;
        let active = self.active();
        let old = active
            .created_ms
            .is_some_and(|created_ms| now_ms - created_ms >= segment_ms);
        if old && !active.is_empty() && !active.is_sealed() {
            self.roll()?;
        }
        Ok(())
    }

    /// Seals the active segment; the next append creates a new one.
    fn roll(&mut self) -> Result<()> {
        let dir = self.dir.clone();
        self.active_mut().seal(&dir)?;
        let base = self.active().base_offset;
        transaction::write_txn_index(
            &self.dir,
            base,
            &self.aborted_between(base, self.log_end_offset),
        )?;
        self.dir_needs_sync = true;
        // The next segment starts at the log end: replay on open starts
        // there at the latest.
        producer_state::write_snapshot(&self.dir, self.log_end_offset, &self.producers)
    }

    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has a segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has a segment")
    }

    /// Reads whole batches from `offset`, up to `max_bytes` (but always at
    /// least one batch if one is available, so a large batch cannot stall a
    /// reader), never including a batch that reaches `upper_bound_offset` (the
    /// high watermark, for consumers). The first batch may start before
    /// `offset`; the reader skips what it did not ask for.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        upper_bound_offset: i64,
    ) -> Result<ReadResult> {
        self.check_alive()?;
        let result = |records, next_offset| ReadResult {
            records,
            next_offset,
            log_start_offset: self.log_start_offset,
            log_end_offset: self.log_end_offset,
        };
        if offset < self.log_start_offset || offset > self.log_end_offset {
            return Err(StorageError::OffsetOutOfRange {
                requested: offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: self.log_end_offset,
            });
        }
        let upper_bound_offset = upper_bound_offset.min(self.log_end_offset);
        let first_segment = self
            .segments
            .range(..=offset)
            .next_back()
            .map_or(i64::MIN, |(base, _)| *base);
        for segment in self
            .segments
            .range(first_segment..)
            .map(|(_, segment)| segment)
        {
            if segment.base_offset >= upper_bound_offset || offset >= upper_bound_offset {
                break;
            }
            let data = segment.data();
            let mut position = batch_position_for(segment, offset);
            let mut len = 0usize;
            let mut next_offset = offset;
            while position + len < data.len() {
                let header = BatchHeader::parse(&data[position + len..])
                    .expect("segment holds whole batches");
                if len == 0 && header.last_offset() < offset {
                    position += header.total_bytes();
                    continue;
                }
                if header.last_offset() >= upper_bound_offset
                    || (len > 0 && len + header.total_bytes() > max_bytes)
                {
                    break;
                }
                len += header.total_bytes();
                next_offset = header.last_offset() + 1;
            }
            if len > 0 {
                return Ok(result(
                    segment.slice(position as u32, len as u32),
                    next_offset,
                ));
            }
            if position < data.len() {
                break; // stopped by the upper bound
            }
        }
        Ok(result(LogSlice::empty(), offset))
    }

    /// The first record whose timestamp is at or after `timestamp_ms`
    /// (ListOffsets by time). For a compressed batch the answer is the batch's
    /// first offset and its max timestamp.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<TimestampOffset>> {
        self.check_alive()?;
        for segment in self.segments.values() {
            if segment.state.max_timestamp < timestamp_ms
                || segment
                    .next_offset()
                    .is_none_or(|next| next <= self.log_start_offset)
            {
                continue;
            }
            let relative_offset = segment.state.time_index.lookup(timestamp_ms);
            let mut position = segment.state.offset_index.lookup(relative_offset) as usize;
            let data = segment.data();
            while position < data.len() {
                let header =
                    BatchHeader::parse(&data[position..]).expect("segment holds whole batches");
                let batch = &data[position..position + header.total_bytes()];
                position += header.total_bytes();
                if header.max_timestamp < timestamp_ms
                    || header.last_offset() < self.log_start_offset
                {
                    continue;
                }
                if header.compression() != Compression::None || header.is_log_append_time() {
                    let offset = header.base_offset.max(self.log_start_offset);
                    return Ok(Some(TimestampOffset {
                        offset,
                        timestamp: header.max_timestamp,
                    }));
                }
                let records = RecordIter::new(batch).expect("uncompressed batch");
                for record in records.flatten() {
                    let offset = header.base_offset + record.offset_delta;
                    let timestamp = header.base_timestamp + record.timestamp_delta;
                    if timestamp >= timestamp_ms && offset >= self.log_start_offset {
                        return Ok(Some(TimestampOffset { offset, timestamp }));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Removes every batch that holds an offset at or after `offset` (a
    /// follower discarding a divergent suffix). A batch that straddles
    /// `offset` goes entirely, so the log may end below `offset`. Below the
    /// log start offset the log is emptied and restarted at `offset`.
    pub fn truncate_to(&mut self, offset: i64) -> Result<()> {
        self.check_alive()?;
        if offset >= self.log_end_offset {
            return Ok(());
        }
        if offset < self.log_start_offset {
            return self.truncate_fully_and_start_at(offset);
        }
        let base = *self
            .segments
            .range(..=offset)
            .next_back()
            .expect("a segment holds the log start")
            .0;
        let later: Vec<i64> = self
            .segments
            .range(base + 1..)
            .map(|(base, _)| *base)
            .collect();
        for later_base in later {
            let segment = self.segments.remove(&later_base).expect("listed");
            segment.delete(&self.dir)?;
        }
        let segment = self.segments.remove(&base).expect("listed");
        let position = batch_position_for(&segment, offset);
        let data = segment.data();
        let new_end = match BatchHeader::parse(&data[position..]) {
            Ok(header) => header.base_offset,
            Err(_) => offset, // nothing at or after `offset` in this segment
        };
        let (state, stop) = segment::scan(
            &data[..position],
            base,
            i64::MIN,
            i64::MAX,
            self.config.index_interval_bytes,
            &mut |_| {},
        );
        assert_eq!(
            stop,
            ScanStop::End,
            "the kept prefix of a segment scans cleanly"
        );
        let segment = segment.truncate(&self.dir, state, self.config.segment_bytes)?;
        self.segments.insert(base, segment);
        info!(dir = %self.dir.display(), from = self.log_end_offset, to = new_end, "truncated log");
        self.log_end_offset = new_end;
        self.log_start_offset = self.log_start_offset.min(new_end);
        self.recovery_point = self.recovery_point.min(new_end);
        self.truncations += 1;
        self.dir_needs_sync = true;
        if self.epochs.truncate_from_end(new_end) {
            self.epochs.persist()?;
        }
        producer_state::remove_snapshots(&self.dir, |offset| offset > new_end)?;
        self.rebuild_producers()?;
        self.write_checkpoint()
    }

    /// Deletes every segment and restarts the log, empty, at `offset` (a
    /// follower whose leader's log starts past everything it has).
    pub fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<()> {
        self.check_alive()?;
        assert!(offset >= 0, "offsets are not negative");
        for (_, segment) in std::mem::take(&mut self.segments) {
            segment.delete(&self.dir)?;
        }
        let segment = Segment::create(&self.dir, offset, self.config.segment_bytes)?;
        self.segments.insert(offset, segment);
        self.log_start_offset = offset;
        self.log_end_offset = offset;
        self.recovery_point = offset;
        self.truncations += 1;
        self.epochs.clear();
        self.epochs.persist()?;
        producer_state::remove_snapshots(&self.dir, |_| true)?;
        self.producers = ProducerStates::default();
        self.aborted.clear();
        checkpoint::sync_dir(&self.dir)?;
        self.write_checkpoint()
    }

    fn check_alive(&self) -> Result<()> {
        match &self.failure {
            None => Ok(()),
            Some(reason) => Err(StorageError::Failed {
                dir: self.dir.clone(),
                reason: reason.clone(),
            }),
        }
    }
}

/// Position of the batch holding `offset` in `segment`, or of the first batch
/// after it, or the segment's size if none.
fn batch_position_for(segment: &Segment, offset: i64) -> usize {
    let relative_offset = (offset - segment.base_offset).clamp(0, u32::MAX as i64) as u32;
    let data = segment.data();
    let mut position = segment.state.offset_index.lookup(relative_offset) as usize;
    while position < data.len() {
        let header = BatchHeader::parse(&data[position..]).expect("segment holds whole batches");
        if header.last_offset() >= offset {
            break;
        }
        position += header.total_bytes();
    }
    position
}
