//! One segment: a `.log` file of record batches, mapped into memory, with its
//! sparse indexes.
//!
//! - The active segment's file grows in preallocated chunks (`posix_fallocate`),
//!   and its map covers the whole `segment.bytes` from the start, so appends are
//!   a copy into the map and the map never moves. Only allocated bytes are ever
//!   touched: writing through a map into a hole kills the process with SIGBUS on
//!   a full disk, while `posix_fallocate` reports ENOSPC as an error.
//! - A sealed segment's file is trimmed to its size and its map made read-only.
//! - Readers hold a [`LogSlice`], which keeps the map alive. A segment deleted
//!   by retention is renamed `*.deleted` and unlinked when the last holder drops.
//!
//! Architecture invariant: bytes below a segment's published size never change
//! while a [`LogSlice`] exists. Appends write at or above the size; truncation
//! rewrites a file in place only when no reader holds it, and otherwise writes
//! a new file and renames it over the old one.

use std::fs::{self, File};
use std::io::IoSlice;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::warn;

use crate::batch::{self, BatchHeader, BatchIter, LOG_OVERHEAD};
use crate::checkpoint::{self, Durability, Loaded, PayloadReader};
use crate::error::{io_error, Result, StorageError};
use crate::index::{OffsetIndex, TimeIndex};
use crate::page_cache::page_size;
pub use crate::segment_file::LogSlice;
pub(crate) use crate::segment_file::{SegmentFile, SegmentFileHandle, SyncTarget};

const INDEX_MAGIC: [u8; 4] = *b"SOIX";
const TIME_INDEX_MAGIC: [u8; 4] = *b"STIX";

/// Digits of the zero-padded base offset in segment file names.
const FILE_NAME_DIGITS: usize = 20;

pub(crate) fn log_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:0FILE_NAME_DIGITS$}.log"))
}

fn index_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:0FILE_NAME_DIGITS$}.index"))
}

fn time_index_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:0FILE_NAME_DIGITS$}.timeindex"))
}

/// Removes `path`; a file that is already gone is not an error.
pub(crate) fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(io_error("remove", path)(error))
        }
        _ => Ok(()),
    }
}

/// Removes a segment's `.index`, `.timeindex` and `.txnindex`.
pub(crate) fn remove_index_files(dir: &Path, base_offset: i64) -> Result<()> {
    remove_if_present(&index_path(dir, base_offset))?;
    remove_if_present(&time_index_path(dir, base_offset))?;
    remove_if_present(&crate::transaction::txn_index_path(dir, base_offset))
}

/// Parses `00000000000000000042.log` into 42.
pub(crate) fn parse_log_file_name(name: &str) -> Option<i64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != FILE_NAME_DIGITS || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[derive(Debug, Clone)]
pub(crate) struct SegmentState {
    pub size_bytes: u32,
    pub last_offset: Option<i64>,
    pub max_timestamp: i64,
    pub first_batch_timestamp: Option<i64>,
    pub offset_index: OffsetIndex,
    pub time_index: TimeIndex,
    bytes_since_index_entry: u32,
}

impl SegmentState {
    pub(crate) fn empty() -> Self {
        SegmentState {
            size_bytes: 0,
            last_offset: None,
            max_timestamp: i64::MIN,
            first_batch_timestamp: None,
            offset_index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            bytes_since_index_entry: 0,
        }
    }

    /// Accounts for `header`'s batch, written at `position` (the current size).
    fn record_batch(
        &mut self,
        base_offset: i64,
        header: &BatchHeader,
        position: u32,
        index_interval_bytes: u32,
    ) {
        debug_assert_eq!(position, self.size_bytes);
        let relative_offset =
            u32::try_from(header.base_offset - base_offset).expect("relative offset fits u32");
        if position > 0 && self.bytes_since_index_entry >= index_interval_bytes {
            self.offset_index.push(relative_offset, position);
            self.time_index
                .maybe_push(self.max_timestamp, relative_offset);
            self.bytes_since_index_entry = 0;
        }
        let total_bytes = header.total_bytes() as u32;
        self.bytes_since_index_entry += total_bytes;
        self.size_bytes = position + total_bytes;
        self.last_offset = Some(header.last_offset());
        self.max_timestamp = self.max_timestamp.max(header.max_timestamp);
        self.first_batch_timestamp
            .get_or_insert(header.max_timestamp);
    }
}

/// Why a scan of a segment stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScanStop {
    /// Everything after the last batch is zero (preallocated) or absent.
    End,
    /// The bytes at `position` are not a valid next batch.
    Invalid { position: u32, reason: String },
}

/// Walks the batches in `data` from the start. Batches whose base offset is at
/// least `verify_from_offset` are fully validated (CRC included); earlier ones,
/// already known durable, only have their headers parsed.
pub(crate) fn scan(
    data: &[u8],
    base_offset: i64,
    previous_last_offset: i64,
    verify_from_offset: i64,
    index_interval_bytes: u32,
    on_batch: &mut dyn FnMut(&BatchHeader),
) -> (SegmentState, ScanStop) {
    let mut state = SegmentState::empty();
    let mut last_offset = previous_last_offset;
    loop {
        let position = state.size_bytes as usize;
        let rest = &data[position..];
        if rest.len() < LOG_OVERHEAD || rest[..LOG_OVERHEAD].iter().all(|&byte| byte == 0) {
            if rest.iter().all(|&byte| byte == 0) {
                return (state, ScanStop::End);
            }
            let reason = "non-zero bytes after the end of the batches".to_string();
            return (
                state,
                ScanStop::Invalid {
                    position: position as u32,
                    reason,
                },
            );
        }
        let parsed = if batch::read_i64(rest, 0) >= verify_from_offset {
            BatchHeader::validate(rest, rest.len())
        } else {
            BatchHeader::parse(rest)
        };
        let header = match parsed {
            Ok(header) => header,
            Err(error) => {
                return (
                    state,
                    ScanStop::Invalid {
                        position: position as u32,
                        reason: error.to_string(),
                    },
                )
            }
        };
        if header.base_offset <= last_offset || header.base_offset < base_offset {
            let reason = format!(
                "batch base offset {} does not follow offset {last_offset} (segment base {base_offset})",
                header.base_offset
            );
            return (
                state,
                ScanStop::Invalid {
                    position: position as u32,
                    reason,
                },
            );
        }
        if header.last_offset() - base_offset > u32::MAX as i64 {
            let reason = format!(
                "batch last offset {} is too far from the segment base",
                header.last_offset()
            );
            return (
                state,
                ScanStop::Invalid {
                    position: position as u32,
                    reason,
                },
            );
        }
        on_batch(&header);
        last_offset = header.last_offset();
        state.record_batch(base_offset, &header, position as u32, index_interval_bytes);
    }
}

/// Looks for any fully valid batch starting after `from` whose offsets come
/// after `after_offset`. Finding one means the damage at `from` is in the
/// middle of the log, not a torn tail.
pub(crate) fn find_valid_batch_after(data: &[u8], from: usize, after_offset: i64) -> Option<usize> {
    const MAGIC_FROM_START: usize = 16;
    let mut candidate = from;
    while candidate + batch::BATCH_HEADER_BYTES <= data.len() {
        let magic_at = candidate + MAGIC_FROM_START;
        let next_magic = data[magic_at..]
            .iter()
            .position(|&byte| byte == batch::MAGIC_V2 as u8)?;
        candidate += next_magic;
        if candidate + batch::BATCH_HEADER_BYTES > data.len() {
            return None;
        }
        let rest = &data[candidate..];
        if let Ok(header) = BatchHeader::validate(rest, rest.len()) {
            if header.base_offset > after_offset {
                return Some(candidate);
            }
        }
        candidate += 1;
    }
    None
}

/// A segment as the log owns it.
pub(crate) struct Segment {
    pub base_offset: i64,
    pub state: SegmentState,
    file: Arc<SegmentFile>,
    /// File length: bytes that may be written without touching a hole.
    allocated_bytes: u64,
    /// Bytes the map covers; 0 once sealed.
    capacity_bytes: u64,
    /// Bytes known to be on disk.
    pub flushed_bytes: u32,
    /// Count of changes to the file's length; those up to `metadata_synced`
    /// are on disk.
    pub metadata_changes: u64,
    pub metadata_synced: u64,
    /// When the first append to this segment happened, for `segment.ms`.
    pub created_ms: Option<i64>,
    /// Bytes of the map already handed to a prefault thread.
    prefaulted_bytes: u64,
    /// Bytes at the start of the file whose cached pages were handed back.
    released_bytes: u32,
    /// Bytes at the start of the file whose cached pages were handed back
    /// twice (see [`Segment::release_cached`]).
    released_twice_bytes: u32,
}

/// Offsets for a run of batches appended by a leader.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamp {
    pub first_offset: i64,
    pub leader_epoch: i32,
}

/// Runs at least this large are written with `pwritev` instead of a copy into
/// the map (see [`Segment::append_run`]).
const WRITE_SYSCALL_MIN_BYTES: usize = 16 << 10;
/// The stamped fields (base offset, partition leader epoch) lie in a batch's
/// first 16 bytes.
const STAMPED_PREFIX_BYTES: usize = 16;

impl Segment {
    /// Creates a new, empty active segment file.
    pub(crate) fn create(dir: &Path, base_offset: i64, capacity_bytes: u64) -> Result<Self> {
        let path = log_path(dir, base_offset);
        File::create_new(&path).map_err(io_error("create segment", &path))?;
        Self::open_active(dir, base_offset, SegmentState::empty(), capacity_bytes)
    }

    /// Opens an existing segment file for appending after `state.size_bytes`,
    /// cutting off anything the file holds beyond that.
    pub(crate) fn open_active(
        dir: &Path,
        base_offset: i64,
        state: SegmentState,
        capacity_bytes: u64,
    ) -> Result<Self> {
        let path = log_path(dir, base_offset);
        let capacity_bytes = capacity_bytes.max(state.size_bytes as u64);
        let state_size_bytes = state.size_bytes as u64;
        let file = SegmentFile::open(&path, capacity_bytes as usize, true)?;
        file.set_len(state.size_bytes as u64)?;
        Ok(Segment {
            base_offset,
            flushed_bytes: 0,
            allocated_bytes: state.size_bytes as u64,
            capacity_bytes,
            state,
            file: Arc::new(file),
            metadata_changes: 1,
            metadata_synced: 0,
            created_ms: None,
            prefaulted_bytes: state_size_bytes,
            released_bytes: 0,
            released_twice_bytes: 0,
        })
    }

    /// Maps an existing segment read-only, to be scanned or loaded.
    pub(crate) fn map_for_recovery(
        dir: &Path,
        base_offset: i64,
    ) -> Result<(Arc<SegmentFileHandle>, u64)> {
        let path = log_path(dir, base_offset);
        let len = fs::metadata(&path)
            .map_err(io_error("stat segment", &path))?
            .len();
        let file = SegmentFile::open(&path, len as usize, false)?;
        Ok((Arc::new(SegmentFileHandle(file)), len))
    }

    /// Wraps a recovered segment that is not the last one: sealed, trimmed to
    /// its valid size.
    pub(crate) fn sealed_from_recovery(
        dir: &Path,
        base_offset: i64,
        handle: Arc<SegmentFileHandle>,
        file_len: u64,
        state: SegmentState,
        index_was_loaded: bool,
    ) -> Result<Self> {
        let handle =
            Arc::try_unwrap(handle).unwrap_or_else(|_| panic!("recovery holds the only handle"));
        let file = handle.0;
        let trimmed = file_len != state.size_bytes as u64;
        if trimmed {
            file.trim(state.size_bytes as u64)?;
        }
        let segment = Segment {
            base_offset,
            flushed_bytes: 0,
            allocated_bytes: state.size_bytes as u64,
            capacity_bytes: 0,
            state,
            file: Arc::new(file),
            metadata_changes: u64::from(trimmed),
            metadata_synced: 0,
            created_ms: None,
            prefaulted_bytes: 0,
            released_bytes: 0,
            released_twice_bytes: 0,
        };
        if !index_was_loaded || trimmed {
            segment.write_index_files(dir)?;
        }
        Ok(segment)
    }

    pub(crate) fn path(&self) -> &Path {
        self.file.path()
    }

    pub(crate) fn is_sealed(&self) -> bool {
        self.capacity_bytes == 0
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.state.size_bytes == 0
    }

    /// Bytes that can still be appended to this active segment.
    pub(crate) fn free_bytes(&self) -> u64 {
        self.capacity_bytes
            .saturating_sub(self.state.size_bytes as u64)
    }

    /// The offset after the segment's last batch, if it has any.
    pub(crate) fn next_offset(&self) -> Option<i64> {
        self.state.last_offset.map(|last| last + 1)
    }

    pub(crate) fn data(&self) -> &[u8] {
        self.file.bytes(0, self.state.size_bytes as usize)
    }

    pub(crate) fn slice(&self, position: u32, len: u32) -> LogSlice {
        assert!(
            position as u64 + len as u64 <= self.state.size_bytes as u64,
            "slice within the segment"
        );
        LogSlice::new(&self.file, position as usize, len as usize)
    }

    /// Makes sure `size_bytes + additional` bytes are allocated on disk,
    /// growing the file by at least `chunk_bytes`. A full disk is an error
    /// here, before anything is written.
    pub(crate) fn reserve(&mut self, additional: u64, chunk_bytes: u64) -> Result<()> {
        let needed = self.state.size_bytes as u64 + additional;
        assert!(
            needed <= self.capacity_bytes,
            "append beyond the segment map"
        );
        if needed <= self.allocated_bytes {
            return Ok(());
        }
        let chunk_end = (self.allocated_bytes + chunk_bytes).clamp(needed, self.capacity_bytes);
        // Near a full disk, settle for what this append needs.
        self.allocate_to(chunk_end)
            .or_else(|_| self.allocate_to(needed))
            .map_err(|source| StorageError::Io {
                operation: "preallocate",
                path: self.file.path().to_path_buf(),
                source,
            })
    }

    fn allocate_to(&mut self, target: u64) -> std::io::Result<()> {
        if target <= self.allocated_bytes {
            return Ok(());
        }
        self.file.allocate(self.allocated_bytes, target)?;
        self.allocated_bytes = target;
        self.metadata_changes += 1;
        Ok(())
    }

    /// Writes a run of whole batches at the end of the segment and publishes
    /// them. With `stamp`, each batch gets consecutive offsets from its first
    /// offset and the leader epoch; without, the batches keep theirs. Returns
    /// the offset after the last batch. The caller reserved the space.
    ///
    /// Small runs are copied into the map (no system call; a background thread
    /// has already faulted the pages in). Large runs go through `pwritev`:
    /// copying through the map makes the kernel zero every new page before the
    /// copy overwrites it, while `write` hands fresh pages straight to the copy,
    /// which measures faster from about 16 KiB on.
    pub(crate) fn append_run(
        &mut self,
        run: &[u8],
        stamp: Option<Stamp>,
        index_interval_bytes: u32,
    ) -> Result<i64> {
        let position = self.state.size_bytes as u64;
        assert!(
            position + run.len() as u64 <= self.allocated_bytes,
            "write beyond the allocated file"
        );
        let mut headers: Vec<BatchHeader> = BatchIter::new(run).map(|(header, _)| header).collect();
        if let Some(stamp) = stamp {
            let mut next_offset = stamp.first_offset;
            for header in &mut headers {
                header.base_offset = next_offset;
                header.partition_leader_epoch = stamp.leader_epoch;
                next_offset = header.last_offset() + 1;
            }
        }
        if run.len() >= WRITE_SYSCALL_MIN_BYTES {
            self.write_vectored(run, &headers, stamp.is_some())?;
        } else {
            self.prefault_allocated();
            // SAFETY: the range is allocated (asserted above) and lies at or
            // above the published size, which no reader can hold.
            unsafe { self.file.write(position as usize, run) };
            if stamp.is_some() {
                let mut batch_position = position as usize;
                for header in &headers {
                    let mut prefix = [0u8; STAMPED_PREFIX_BYTES];
                    prefix.copy_from_slice(self.file.bytes(batch_position, STAMPED_PREFIX_BYTES));
                    batch::stamp(
                        &mut prefix,
                        header.base_offset,
                        header.partition_leader_epoch,
                    );
                    // SAFETY: as above; the batch is not published yet.
                    unsafe { self.file.write(batch_position, &prefix) };
                    batch_position += header.total_bytes();
                }
            }
        }
        for header in &headers {
            let batch_position = self.state.size_bytes;
            self.state.record_batch(
                self.base_offset,
                header,
                batch_position,
                index_interval_bytes,
            );
        }
        Ok(self.next_offset().expect("a run holds at least one batch"))
    }

    /// `pwritev` of `run` at the end of the file, with each batch's first
    /// bytes replaced by a stamped copy when `stamped`.
    fn write_vectored(&self, run: &[u8], headers: &[BatchHeader], stamped: bool) -> Result<()> {
        let position = self.state.size_bytes as u64;
        if !stamped {
            return self.file.write_at(run, position);
        }
        let mut prefixes = Vec::with_capacity(headers.len());
        let mut batch_start = 0;
        for header in headers {
            let mut prefix = [0u8; STAMPED_PREFIX_BYTES];
            prefix.copy_from_slice(&run[batch_start..batch_start + STAMPED_PREFIX_BYTES]);
            batch::stamp(
                &mut prefix,
                header.base_offset,
                header.partition_leader_epoch,
            );
            prefixes.push(prefix);
            batch_start += header.total_bytes();
        }
        let mut slices = Vec::with_capacity(headers.len() * 2);
        let mut batch_start = 0;
        for (header, prefix) in headers.iter().zip(&prefixes) {
            let batch_end = batch_start + header.total_bytes();
            slices.push(IoSlice::new(prefix));
            slices.push(IoSlice::new(
                &run[batch_start + STAMPED_PREFIX_BYTES..batch_end],
            ));
            batch_start = batch_end;
        }
        self.file.write_vectored_at(&mut slices, position)
    }

    /// Starts faulting in the allocated pages not yet faulted in, on a
    /// background thread, so copies into the map land in resident pages.
    fn prefault_allocated(&mut self) {
        // Only pages ahead of the writer: those behind it are in the page
        // cache already, and faulting them all in would hold the process's
        // mmap lock for as long (stalling every other fault and mprotect).
        let start = self.prefaulted_bytes.max(self.state.size_bytes as u64);
        let end = self.allocated_bytes;
        if start >= end {
            return;
        }
        self.prefaulted_bytes = end;
        let file = Arc::clone(&self.file);
        let spawned = std::thread::Builder::new()
            .name("segment-prefault".into())
            .spawn(move || file.prefault(start as usize, end as usize));
        if let Err(error) = spawned {
            // Only an optimisation: the copy faults the pages in itself.
            warn!(%error, "cannot start a prefault thread");
        }
    }

    /// Hands the cached pages of the durable bytes below `end` back to the
    /// kernel. Readers still see the same bytes, read back from disk.
    ///
    /// The kernel keeps some pages of a range just flushed (a quarter of
    /// them in measurements on ext4); asked again at the next release it
    /// lets go of nearly all, so each range is released twice.
    pub(crate) fn release_cached(&mut self, end: u32) {
        let page = page_size() as u32;
        let end = end.min(self.flushed_bytes) / page * page;
        if end <= self.released_bytes {
            return;
        }
        self.file
            .release(self.released_twice_bytes as usize, end as usize);
        self.released_twice_bytes = self.released_bytes;
        self.released_bytes = end;
    }

    /// Seals the active segment: trims the file, makes the map read-only and
    /// writes the index files.
    pub(crate) fn seal(&mut self, dir: &Path) -> Result<()> {
        assert!(!self.is_sealed(), "sealing a sealed segment");
        let size = self.state.size_bytes as u64;
        self.file.set_len(size)?;
        self.file.make_read_only();
        self.allocated_bytes = size;
        self.capacity_bytes = 0;
        self.metadata_changes += 1;
        self.write_index_files(dir)
    }

    fn write_index_files(&self, dir: &Path) -> Result<()> {
        let mut payload = Vec::with_capacity(28 + self.state.offset_index.len() * 8);
        payload.extend_from_slice(&(self.state.size_bytes as u64).to_be_bytes());
        payload.extend_from_slice(&self.state.last_offset.unwrap_or(-1).to_be_bytes());
        payload.extend_from_slice(&self.state.max_timestamp.to_be_bytes());
        self.state.offset_index.encode_into(&mut payload);
        checkpoint::write(
            &index_path(dir, self.base_offset),
            INDEX_MAGIC,
            &payload,
            Durability::Cached,
        )?;
        let mut payload = Vec::new();
        self.state.time_index.encode_into(&mut payload);
        checkpoint::write(
            &time_index_path(dir, self.base_offset),
            TIME_INDEX_MAGIC,
            &payload,
            Durability::Cached,
        )
    }

    /// Whether `slice` was read from this segment's current file.
    pub(crate) fn is_read_by(&self, slice: &LogSlice) -> bool {
        slice.is_of(&self.file)
    }

    /// Whether the flush `target` is of this segment's file.
    pub(crate) fn is_synced_by(&self, target: &SyncTarget) -> bool {
        target.is_of(&self.file)
    }

    /// Whether a truncation may rewrite this file in place.
    pub(crate) fn has_readers(&self) -> bool {
        self.file.has_readers()
    }

    /// Handle on the file for a flush running outside the log's lock.
    pub(crate) fn sync_target(&self) -> SyncTarget {
        SyncTarget::new(
            &self.file,
            self.flushed_bytes as usize,
            self.state.size_bytes as usize,
            self.needs_metadata_sync(),
        )
    }

    pub(crate) fn needs_metadata_sync(&self) -> bool {
        self.metadata_changes > self.metadata_synced
    }

    /// Removes the segment from disk: index files now, the log file once the
    /// last reader lets go of it.
    pub(crate) fn delete(self, dir: &Path) -> Result<()> {
        remove_index_files(dir, self.base_offset)?;
        self.file.delete_when_unused()
    }

    /// Cuts the segment at `position` (a batch boundary) and makes it the
    /// active segment again, with `state` describing what remains. The file is
    /// rewritten in place when nobody reads it, otherwise copied to a new file
    /// renamed over the old one, so readers keep their bytes.
    pub(crate) fn truncate(
        self,
        dir: &Path,
        state: SegmentState,
        capacity_bytes: u64,
    ) -> Result<Self> {
        let position = state.size_bytes as usize;
        if self.has_readers() {
            let path = self.file.path().to_path_buf();
            let mut tmp = path.clone().into_os_string();
            tmp.push(".tmp");
            let tmp = PathBuf::from(tmp);
            fs::write(&tmp, self.file.bytes(0, position))
                .map_err(io_error("write truncated segment", &tmp))?;
            File::open(&tmp)
                .and_then(|file| file.sync_all())
                .map_err(io_error("fsync", &tmp))?;
            fs::rename(&tmp, &path).map_err(io_error("rename truncated segment", &path))?;
        }
        let base_offset = self.base_offset;
        drop(self);
        remove_index_files(dir, base_offset)?;
        let segment = Segment::open_active(dir, base_offset, state, capacity_bytes)?;
        // The cut must be on disk before anything is appended after it, or a
        // crash could bring the truncated batches back.
        segment.file.sync_all()?;
        Ok(segment)
    }

    /// Reads the `.index`/`.timeindex` of a sealed segment, or `None` when they
    /// are missing or disagree with the log.
    pub(crate) fn load_index_files(
        dir: &Path,
        base_offset: i64,
        data: &[u8],
    ) -> Result<Option<SegmentState>> {
        let Loaded::Intact(offsets) = checkpoint::read(&index_path(dir, base_offset), INDEX_MAGIC)?
        else {
            return Ok(None);
        };
        let Loaded::Intact(times) =
            checkpoint::read(&time_index_path(dir, base_offset), TIME_INDEX_MAGIC)?
        else {
            return Ok(None);
        };
        let mut reader = PayloadReader::new(&offsets);
        let (Some(size_bytes), Some(last_offset), Some(max_timestamp)) =
            (reader.u64(), reader.i64(), reader.i64())
        else {
            return Ok(None);
        };
        let Some(offset_index) = OffsetIndex::decode(&mut reader).filter(|_| reader.is_empty())
        else {
            return Ok(None);
        };
        let mut reader = PayloadReader::new(&times);
        let Some(time_index) = TimeIndex::decode(&mut reader).filter(|_| reader.is_empty()) else {
            return Ok(None);
        };
        if size_bytes != data.len() as u64 || size_bytes == 0 || last_offset < base_offset {
            return Ok(None);
        }
        // The last entry must point at a batch with the offset it claims.
        if let Some(entry) = offset_index.last() {
            let agrees = BatchHeader::parse(&data[entry.position as usize..]).is_ok_and(|header| {
                header.base_offset == base_offset + entry.relative_offset as i64
            });
            if !agrees {
                return Ok(None);
            }
        }
        let first = BatchHeader::parse(data).ok();
        Ok(Some(SegmentState {
            size_bytes: size_bytes as u32,
            last_offset: Some(last_offset),
            max_timestamp,
            first_batch_timestamp: first.map(|header| header.max_timestamp),
            offset_index,
            time_index,
            bytes_since_index_entry: 0,
        }))
    }
}
