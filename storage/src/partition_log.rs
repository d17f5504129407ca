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
//! OFFSET.snapshot                      producer state as of OFFSET (see `producer_state`)
//! *.deleted                            segments waiting for their last reader
//! ```
//!
//! Concurrency: methods that change the log take `&mut self`; the owner puts
//! the log behind a lock. Reads return [`LogSlice`]s that stay valid after the
//! lock is released. A flush runs in three steps so the fsync happens outside
//! the lock and covers every append made before it started (group flushing):
//! [`PartitionLog::begin_flush`] under the lock, [`PendingFlush::sync`]
//! without it, [`PartitionLog::complete_flush`] under it again.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use tracing::{error, info, warn};

use crate::batch::{BatchHeader, BatchIter, Compression, ValidatedBatches};
use crate::checkpoint::{self, Durability, Loaded, PayloadReader};
use crate::compaction::{self, CompactionOutcome};
use crate::error::{io_error, Result, StorageError};
use crate::leader_epoch::{EpochEntry, LeaderEpochCache};
use crate::producer_state::{self, ProducerStates, SequenceCheck, SequenceError};
use crate::record::RecordIter;
use crate::segment::{self, LogSlice, ScanStop, Segment, SegmentState, Stamp, SyncTarget};

const CHECKPOINT_FILE: &str = "log-checkpoint";
/// Bytes read per step when replaying batches into the producers' state.
const REPLAY_READ_BYTES: usize = 8 << 20;
const CHECKPOINT_MAGIC: [u8; 4] = *b"SLCP";

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

/// What retention removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
    pub log_start_offset: i64,
}

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
    /// Idempotent producers' state as of the log end.
    producers: ProducerStates,
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
    /// Opens (creating if needed) the log in `dir`, recovering it: batches
    /// above the recovery point are validated, a torn tail is cut off with a
    /// warning, and damage with valid data after it is an error.
    pub fn open(dir: impl Into<PathBuf>, config: LogConfig) -> Result<Self> {
        config.validate()?;
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_error("create partition directory", &dir))?;
        let bases = list_segments(&dir)?;
        let (recovery_point, log_start_offset) = load_checkpoint(&dir)?;
        let (epochs, epoch_damage) = LeaderEpochCache::load(&dir)?;
        let mut log = PartitionLog {
            dir,
            config,
            segments: BTreeMap::new(),
            log_start_offset,
            log_end_offset: 0,
            recovery_point,
            checkpointed_segment: -1,
            epochs,
            dir_needs_sync: true,
            truncations: 0,
            failure: None,
            compacted_through: None,
            producers: ProducerStates::default(),
        };
        log.recover(&bases)?;
        if let Some(reason) = epoch_damage {
            warn!(dir = %log.dir.display(), reason, "leader-epoch checkpoint is damaged; rebuilding it from the log");
            log.rebuild_epochs();
        }
        let mut epochs_changed = log.epochs.truncate_from_end(log.log_end_offset);
        epochs_changed |= log.epochs.truncate_from_start(log.log_start_offset);
        if epochs_changed || epoch_damage.is_some() {
            log.epochs.persist()?;
        }
        producer_state::remove_snapshots(&log.dir, |offset| offset > log.log_end_offset)?;
        log.rebuild_producers()?;
        // What recovery validated may still be only in the page cache (the
        // process died, the machine did not): make it durable before trusting it.
        log.flush()?;
        log.write_checkpoint()?;
        Ok(log)
    }

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
            .any(|(header, _)| header.producer_id != producer_state::NO_PRODUCER_ID);
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

    /// Idempotent producers' state as of the log end.
    pub fn producers(&self) -> &ProducerStates {
        &self.producers
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
            for (mut header, _) in BatchIter::new(run) {
                if stamp.is_some() {
                    header.base_offset = base_offset;
                }
                base_offset = header.last_offset() + 1;
                self.producers.record(&header);
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
        self.dir_needs_sync = true;
        // The next segment starts at the log end: replay on open starts
        // there at the latest.
        producer_state::write_snapshot(&self.dir, self.log_end_offset, &self.producers)
    }

    /// Rebuilds the producers' state from the newest snapshot at or below
    /// the log end and the batches after it.
    fn rebuild_producers(&mut self) -> Result<()> {
        let (mut offset, producers) =
            producer_state::latest_snapshot_at_or_below(&self.dir, self.log_end_offset)?
                .unwrap_or_default();
        self.producers = producers;
        offset = offset.max(self.log_start_offset);
        while offset < self.log_end_offset {
            let read = self.read(offset, REPLAY_READ_BYTES, self.log_end_offset)?;
            if read.records.is_empty() {
                break;
            }
            for (header, _) in BatchIter::new(&read.records) {
                if header.last_offset() >= offset {
                    self.producers.record(&header);
                }
                offset = header.last_offset() + 1;
            }
        }
        Ok(())
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
        checkpoint::sync_dir(&self.dir)?;
        self.write_checkpoint()
    }

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
                .find(|segment| target.is_file(segment))
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

    fn check_alive(&self) -> Result<()> {
        match &self.failure {
            None => Ok(()),
            Some(reason) => Err(StorageError::Failed {
                dir: self.dir.clone(),
                reason: reason.clone(),
            }),
        }
    }

    fn write_checkpoint(&mut self) -> Result<()> {
        assert!(
            self.log_start_offset <= self.log_end_offset,
            "log start offset beyond the log end offset"
        );
        assert!(
            self.recovery_point <= self.log_end_offset,
            "recovery point beyond the log end offset"
        );
        let mut payload = Vec::with_capacity(16);
        payload.extend_from_slice(&self.recovery_point.to_be_bytes());
        payload.extend_from_slice(&self.log_start_offset.to_be_bytes());
        checkpoint::write(
            &self.dir.join(CHECKPOINT_FILE),
            CHECKPOINT_MAGIC,
            &payload,
            Durability::Synced,
        )?;
        self.checkpointed_segment = *self
            .segments
            .range(..=self.recovery_point)
            .next_back()
            .map_or(&-1, |(base, _)| base);
        Ok(())
    }

    /// Rebuilds the leader-epoch cache from the epochs stamped on the batches.
    fn rebuild_epochs(&mut self) {
        self.epochs.clear();
        for segment in self.segments.values() {
            for (header, _) in BatchIter::new(segment.data()) {
                self.epochs
                    .assign(header.partition_leader_epoch, header.base_offset);
            }
        }
    }

    /// Loads the segments listed in `bases` (sorted), validating everything
    /// above the recovery point.
    fn recover(&mut self, bases: &[i64]) -> Result<()> {
        // Segments wholly below the log start offset were being deleted.
        let first_kept = bases
            .partition_point(|&base| base <= self.log_start_offset)
            .saturating_sub(1);
        for &base in &bases[..first_kept] {
            remove_segment_files(&self.dir, base)?;
        }
        let bases = &bases[first_kept..];
        let recovery_index = bases
            .partition_point(|&base| base <= self.recovery_point)
            .saturating_sub(1);
        let mut previous_last_offset = i64::MIN;
        // The segment that becomes the active one: the last, or the one cut short.
        let mut last: Option<(i64, SegmentState)> = None;
        let mut index = 0;
        while index < bases.len() {
            let base = bases[index];
            let (handle, file_len) = Segment::map_for_recovery(&self.dir, base)?;
            let data = handle.data(file_len);
            let trusted = index < recovery_index;
            let loaded = if trusted {
                Segment::load_index_files(&self.dir, base, data)?
            } else {
                None
            };
            let (state, index_loaded) = match loaded {
                Some(state) => (state, true),
                None => {
                    let verify_from_offset = if trusted {
                        i64::MAX
                    } else {
                        self.recovery_point
                    };
                    let epochs = &mut self.epochs;
                    let (state, stop) = segment::scan(
                        data,
                        base,
                        previous_last_offset,
                        verify_from_offset,
                        self.config.index_interval_bytes,
                        &mut |header| {
                            if header.base_offset >= verify_from_offset {
                                epochs.assign(header.partition_leader_epoch, header.base_offset);
                            }
                        },
                    );
                    if let ScanStop::Invalid { position, reason } = stop {
                        let tail_lost = self.check_damage_is_tail(
                            bases, index, data, &state, position, &reason, trusted,
                        )?;
                        // Everything after the damage is a torn tail: later
                        // segments hold nothing valid and go.
                        for &later in &bases[index + 1..] {
                            remove_segment_files(&self.dir, later)?;
                        }
                        warn!(
                            segment = %segment::log_path(&self.dir, base).display(),
                            position,
                            %reason,
                            first_dropped_offset = state.last_offset.map_or(base, |last| last + 1),
                            bytes_dropped = tail_lost,
                            "cut off a torn or corrupt tail"
                        );
                        last = Some((base, state));
                        drop(handle);
                        break;
                    }
                    (state, false)
                }
            };
            if let Some(last) = state.last_offset {
                previous_last_offset = last;
            }
            let is_last = index + 1 == bases.len();
            if state.size_bytes == 0 && !is_last {
                drop(handle);
                remove_segment_files(&self.dir, base)?;
            } else if is_last {
                drop(handle);
                last = Some((base, state));
            } else {
                let segment = Segment::sealed_from_recovery(
                    &self.dir,
                    base,
                    handle,
                    file_len,
                    state,
                    index_loaded,
                )?;
                self.segments.insert(base, segment);
            }
            index += 1;
        }
        match last {
            Some((base, state)) => {
                let segment =
                    Segment::open_active(&self.dir, base, state, self.config.segment_bytes)?;
                self.segments.insert(base, segment);
            }
            None => {
                // A new log, or one whose segments were all below its start.
                let base = self.log_start_offset;
                let segment = Segment::create(&self.dir, base, self.config.segment_bytes)?;
                self.segments.insert(base, segment);
            }
        }
        let active = self.active();
        self.log_end_offset = active.next_offset().unwrap_or(active.base_offset);
        let first_base = *self.segments.keys().next().expect("a segment");
        if self.log_start_offset > self.log_end_offset {
            warn!(
                dir = %self.dir.display(),
                log_start_offset = self.log_start_offset,
                log_end_offset = self.log_end_offset,
                "log ends before its start offset; restarting it empty at the start offset"
            );
            let start = self.log_start_offset;
            self.truncate_fully_and_start_at(start)?;
        } else if self.log_start_offset < first_base {
            self.log_start_offset = first_base;
        }
        self.recovery_point = self.recovery_point.min(self.log_end_offset);
        Ok(())
    }

    /// Decides whether damage found at `position` of segment `bases[index]` is a
    /// torn tail (returns how many bytes follow it) or corruption with valid
    /// data after it, which is an error: that data is never served.
    #[allow(clippy::too_many_arguments)]
    fn check_damage_is_tail(
        &self,
        bases: &[i64],
        index: usize,
        data: &[u8],
        state: &SegmentState,
        position: u32,
        reason: &str,
        trusted: bool,
    ) -> Result<u64> {
        let path = segment::log_path(&self.dir, bases[index]);
        let corrupt = |position: u64, reason: String| StorageError::Corrupt {
            segment: path.clone(),
            position,
            reason,
        };
        if trusted {
            // Below the recovery point everything was flushed: damage there is
            // never a torn write.
            return Err(corrupt(
                position as u64,
                format!("{reason} (below the recovery point)"),
            ));
        }
        let last_valid = state.last_offset.unwrap_or(i64::MIN);
        if let Some(valid_at) =
            segment::find_valid_batch_after(data, position as usize + 1, last_valid)
        {
            return Err(corrupt(
                position as u64,
                format!("{reason}; a valid batch follows at byte {valid_at}"),
            ));
        }
        for &later in &bases[index + 1..] {
            let (handle, len) = Segment::map_for_recovery(&self.dir, later)?;
            if segment::find_valid_batch_after(handle.data(len), 0, last_valid).is_some() {
                let later_path = segment::log_path(&self.dir, later);
                return Err(corrupt(
                    position as u64,
                    format!("{reason}; {} holds valid batches", later_path.display()),
                ));
            }
        }
        let nonzero_end = data
            .iter()
            .rposition(|&byte| byte != 0)
            .map_or(0, |last| last + 1);
        Ok(nonzero_end.saturating_sub(position as usize) as u64)
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

fn load_checkpoint(dir: &Path) -> Result<(i64, i64)> {
    let path = dir.join(CHECKPOINT_FILE);
    match checkpoint::read(&path, CHECKPOINT_MAGIC)? {
        Loaded::Missing => Ok((0, 0)),
        Loaded::Damaged(reason) => {
            warn!(path = %path.display(), reason, "log checkpoint is damaged; validating the whole log");
            Ok((0, 0))
        }
        Loaded::Intact(payload) => {
            let mut reader = PayloadReader::new(&payload);
            match (reader.i64(), reader.i64()) {
                (Some(recovery_point), Some(log_start_offset))
                    if recovery_point >= 0 && log_start_offset >= 0 =>
                {
                    Ok((recovery_point, log_start_offset))
                }
                _ => {
                    warn!(path = %path.display(), "log checkpoint holds impossible offsets; validating the whole log");
                    Ok((0, 0))
                }
            }
        }
    }
}

/// Lists segment base offsets in order, removing leftovers of interrupted
/// deletes and writes.
fn list_segments(dir: &Path) -> Result<Vec<i64>> {
    let mut bases = Vec::new();
    let mut index_files = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error("list partition directory", dir))? {
        let entry = entry.map_err(io_error("list partition directory", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".deleted") || name.ends_with(".tmp") {
            fs::remove_file(entry.path()).map_err(io_error("remove leftover", &entry.path()))?;
        } else if let Some(base) = segment::parse_log_file_name(name) {
            bases.push(base);
        } else if name.ends_with(".index") || name.ends_with(".timeindex") {
            index_files.push(entry.path());
        }
    }
    bases.sort_unstable();
    for path in index_files {
        let stem = path
            .file_stem()
            .and_then(|stem| stem.to_str())
            .and_then(|stem| stem.parse::<i64>().ok());
        if stem.is_none_or(|base| bases.binary_search(&base).is_err()) {
            fs::remove_file(&path).map_err(io_error("remove orphan index", &path))?;
        }
    }
    Ok(bases)
}

fn remove_segment_files(dir: &Path, base: i64) -> Result<()> {
    segment::remove_index_files(dir, base)?;
    segment::remove_if_present(&segment::log_path(dir, base))
}
