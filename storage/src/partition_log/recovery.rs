//! Opening a log after a crash or a clean stop: the checkpoint (recovery
//! point and log start offset), the segments on disk, and the state rebuilt
//! from them (leader epochs, idempotent producers).
//!
//! Everything below the recovery point was fsync'd and is trusted (its index
//! files are loaded when they agree with the log); everything above it is
//! validated batch by batch. A torn tail is cut off with a warning; damage
//! with valid data after it is an error, so that data is never served.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use tracing::warn;

use super::{LogConfig, PartitionLog};
use crate::batch::BatchIter;
use crate::checkpoint::{self, Durability, Loaded, PayloadReader};
use crate::error::{io_error, Result, StorageError};
use crate::leader_epoch::LeaderEpochCache;
use crate::producer_state;
use crate::producer_state::ProducerStates;
use crate::segment::{self, ScanStop, Segment, SegmentState};
use crate::transaction::{self, AbortedTxn};

const CHECKPOINT_FILE: &str = "log-checkpoint";
const CHECKPOINT_MAGIC: [u8; 4] = *b"SLCP";
/// Bytes read per step when replaying batches into the producers' state.
const REPLAY_READ_BYTES: usize = 8 << 20;

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
            aborted: BTreeMap::new(),
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

    pub(super) fn write_checkpoint(&mut self) -> Result<()> {
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

    /// Rebuilds the producers' state and the aborted transactions from the
    /// newest snapshot at or below the log end, the `.txnindex` files of
    /// the segments below it, and the batches after it. When a segment
    /// below the snapshot has no intact `.txnindex`, both are rebuilt from
    /// the log start instead, and the missing files are written.
    pub(super) fn rebuild_producers(&mut self) -> Result<()> {
        let snapshot = producer_state::latest_snapshot_at_or_below(&self.dir, self.log_end_offset)?;
        let mut from_start = true;
        (self.producers, self.aborted) = (ProducerStates::default(), BTreeMap::new());
        let mut offset = self.log_start_offset;
        if let Some((snapshot_offset, producers)) = snapshot {
            if let Some(aborted) = self.load_txn_indexes_below(snapshot_offset)? {
                (self.producers, self.aborted) = (producers, aborted);
                offset = snapshot_offset.max(self.log_start_offset);
                from_start = false;
            } else {
                warn!(dir = %self.dir.display(), "an aborted-transaction index is missing or damaged; replaying the whole log");
            }
        }
        while offset < self.log_end_offset {
            let read = self.read(offset, REPLAY_READ_BYTES, self.log_end_offset)?;
            if read.records.is_empty() {
                break;
            }
            for (header, batch) in BatchIter::new(&read.records) {
                if header.last_offset() >= offset {
                    if let Some(aborted) = self.producers.record(&header, batch) {
                        self.aborted.insert(aborted.last_offset, aborted);
                    }
                }
                offset = header.last_offset() + 1;
            }
        }
        if from_start {
            let sealed: Vec<(i64, i64)> = self
                .segments
                .keys()
                .zip(self.segments.keys().skip(1))
                .map(|(base, next)| (*base, *next))
                .collect();
            for (base, next) in sealed {
                transaction::write_txn_index(&self.dir, base, &self.aborted_between(base, next))?;
            }
        }
        Ok(())
    }

    /// The aborted transactions of every segment wholly below `offset`,
    /// or `None` if one of their `.txnindex` files is missing or damaged.
    fn load_txn_indexes_below(&self, offset: i64) -> Result<Option<BTreeMap<i64, AbortedTxn>>> {
        let mut aborted = BTreeMap::new();
        for base in self.segments.keys().take_while(|base| **base < offset) {
            let Some(entries) = transaction::read_txn_index(&self.dir, *base)? else {
                return Ok(None);
            };
            aborted.extend(entries.into_iter().map(|entry| (entry.last_offset, entry)));
        }
        Ok(Some(aborted))
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
        } else if name.ends_with(".index")
            || name.ends_with(".timeindex")
            || name.ends_with(".txnindex")
        {
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
