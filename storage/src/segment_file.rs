//! A segment's mapped file and the slices readers hold of it: every `unsafe`
//! block of the storage engine that touches a map or a descriptor is here.
//!
//! The map covers the whole capacity of the segment from the start, so it
//! never moves; only allocated bytes are touched (a write through a map into a
//! hole of a sparse file kills the process with SIGBUS on a full disk, while
//! `posix_fallocate` reports ENOSPC as an error).
//!
//! Invariant the callers keep (see `segment`): bytes below a segment's
//! published size never change while a [`LogSlice`] of them exists. Writers
//! write at or above the published size; a file that readers hold is never
//! rewritten in place.

use std::fs::{self, File, OpenOptions};
use std::io::IoSlice;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use memmap2::{MmapOptions, MmapRaw};
use tracing::warn;

use crate::error::{io_error, Result};
use crate::page_cache::page_size;

/// Most iovecs one `pwritev` call takes (Linux's IOV_MAX).
const IOV_MAX: usize = 1024;

/// A segment's mapped file, shared by the log and every reader of it.
pub(crate) struct SegmentFile {
    path: PathBuf,
    file: File,
    map: MmapRaw,
    map_len: usize,
    readers: AtomicUsize,
    delete_on_drop: Mutex<Option<PathBuf>>,
}

impl SegmentFile {
    /// Maps `map_len` bytes of `path`; the file may be shorter (bytes past its
    /// end are never touched).
    pub(crate) fn open(path: &Path, map_len: usize, writable: bool) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .create(writable)
            .truncate(false)
            .open(path)
            .map_err(io_error("open segment", path))?;
        let map_len = map_len.max(1);
        let options = {
            let mut options = MmapOptions::new();
            options.len(map_len);
            options
        };
        let map = if writable {
            options.map_raw(&file)
        } else {
            options.map_raw_read_only(&file)
        }
        .map_err(io_error("map segment", path))?;
        Ok(SegmentFile {
            path: path.to_path_buf(),
            file,
            map,
            map_len,
            readers: AtomicUsize::new(0),
            delete_on_drop: Mutex::new(None),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The bytes at `position..position + len`.
    ///
    /// The caller keeps to bytes below the segment's published size and within
    /// the file, which the architecture invariant keeps stable.
    #[inline]
    pub(crate) fn bytes(&self, position: usize, len: usize) -> &[u8] {
        assert!(position + len <= self.map_len, "read past the segment map");
        // SAFETY: the range lies inside the map, which lives as long as `self`,
        // and the log writes only above the published size (module invariant).
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(position), len) }
    }

    /// Copies `bytes` into the map at `position`.
    ///
    /// # Safety
    /// The range must lie inside the allocated part of the file, and no reader
    /// may hold a slice that overlaps it.
    #[inline]
    pub(crate) unsafe fn write(&self, position: usize, bytes: &[u8]) {
        assert!(
            position + bytes.len() <= self.map_len,
            "write past the segment map"
        );
        std::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            self.map.as_mut_ptr().add(position),
            bytes.len(),
        );
    }

    pub(crate) fn has_readers(&self) -> bool {
        self.readers.load(Ordering::Acquire) > 0
    }

    /// Sets the file's length (trimming a sealed segment, cutting a truncated one).
    pub(crate) fn set_len(&self, len: u64) -> Result<()> {
        self.file
            .set_len(len)
            .map_err(io_error("set segment length", &self.path))
    }

    /// Trims a file mapped read-only to `len` bytes.
    pub(crate) fn trim(&self, len: u64) -> Result<()> {
        OpenOptions::new()
            .write(true)
            .open(&self.path)
            .and_then(|writable| writable.set_len(len))
            .map_err(io_error("trim segment", &self.path))
    }

    pub(crate) fn sync_all(&self) -> Result<()> {
        self.file.sync_all().map_err(io_error("fsync", &self.path))
    }

    /// Claims disk space for `start..end`, so writes there never hit a hole.
    pub(crate) fn allocate(&self, start: u64, end: u64) -> std::io::Result<()> {
        if end <= start {
            return Ok(());
        }
        // SAFETY: plain syscall on an open descriptor.
        let errno = unsafe {
            libc::posix_fallocate(
                self.file.as_raw_fd(),
                start as libc::off_t,
                (end - start) as libc::off_t,
            )
        };
        if errno != 0 {
            return Err(std::io::Error::from_raw_os_error(errno));
        }
        Ok(())
    }

    /// Writes `bytes` at `position` through the descriptor (not the map). The
    /// caller keeps to allocated bytes at or above the published size.
    pub(crate) fn write_at(&self, bytes: &[u8], position: u64) -> Result<()> {
        self.file
            .write_all_at(bytes, position)
            .map_err(io_error("write segment", &self.path))
    }

    /// `pwritev` of all of `slices` at `position`, as [`Self::write_at`].
    pub(crate) fn write_vectored_at(
        &self,
        slices: &mut [IoSlice<'_>],
        position: u64,
    ) -> Result<()> {
        let mut position = position;
        let mut remaining = slices;
        while !remaining.is_empty() {
            let count = remaining.len().min(IOV_MAX);
            // SAFETY: IoSlice is ABI-compatible with iovec; the slices borrow
            // live buffers for the duration of the call.
            let written = unsafe {
                libc::pwritev(
                    self.file.as_raw_fd(),
                    remaining.as_ptr().cast(),
                    count as libc::c_int,
                    position as libc::off_t,
                )
            };
            if written < 0 {
                let error = std::io::Error::last_os_error();
                if error.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(io_error("write segment", &self.path)(error));
            }
            if written == 0 {
                return Err(io_error("write segment", &self.path)(
                    std::io::ErrorKind::WriteZero.into(),
                ));
            }
            position += written as u64;
            IoSlice::advance_slices(&mut remaining, written as usize);
        }
        Ok(())
    }

    /// Renames the file `*.deleted`; it is unlinked once the last holder of
    /// the map (the log or a reader's slice) drops it.
    pub(crate) fn delete_when_unused(&self) -> Result<()> {
        let mut deleted = self.path.clone().into_os_string();
        deleted.push(".deleted");
        let deleted = PathBuf::from(deleted);
        fs::rename(&self.path, &deleted).map_err(io_error("rename deleted segment", &self.path))?;
        *self.delete_on_drop.lock().expect("delete flag lock") = Some(deleted);
        Ok(())
    }

    pub(crate) fn sync_range(&self, start: usize, end: usize) -> std::io::Result<()> {
        if end > start {
            self.map.flush_range(start, end - start)?;
        }
        Ok(())
    }

    pub(crate) fn make_read_only(&self) {
        // SAFETY: the pointer and length are exactly the map; nothing writes to
        // a sealed segment, so dropping write permission cannot fault a writer.
        let result =
            unsafe { libc::mprotect(self.map.as_mut_ptr().cast(), self.map_len, libc::PROT_READ) };
        assert_eq!(
            result,
            0,
            "mprotect of a segment map failed: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Drops `start..end` (page aligned, on disk) from this process's page
    /// tables and from the page cache. Readers still holding slices of the
    /// range fault the same bytes back in from the file on their next access.
    /// Best effort, like [`Self::prefault`].
    pub(crate) fn release(&self, start: usize, end: usize) {
        if end <= start {
            return;
        }
        // SAFETY: `start..end` lies inside the map and below the durable
        // size, so nothing writes it; for a shared file mapping MADV_DONTNEED
        // only unmaps pages (their content stays in the file), and fadvise
        // then drops the clean, no longer mapped pages from the cache.
        unsafe {
            libc::madvise(
                self.map.as_ptr().add(start) as *mut libc::c_void,
                end - start,
                libc::MADV_DONTNEED,
            );
            libc::posix_fadvise(
                self.file.as_raw_fd(),
                start as libc::off_t,
                (end - start) as libc::off_t,
                libc::POSIX_FADV_DONTNEED,
            );
        }
    }

    /// Asks the kernel to fault in `start..end` now, so later appends copy into
    /// warm pages. Best effort: failures (old kernels) are ignored.
    pub(crate) fn prefault(&self, start: usize, end: usize) {
        const MADV_POPULATE_WRITE: libc::c_int = 23;
        let page = page_size();
        let start = start / page * page;
        if end <= start {
            return;
        }
        // SAFETY: the range lies inside the map; MADV_POPULATE_WRITE only
        // faults pages in and returns an error (never SIGBUS) on failure.
        unsafe {
            libc::madvise(
                self.map.as_mut_ptr().add(start).cast(),
                end - start,
                MADV_POPULATE_WRITE,
            );
        }
    }
}

impl Drop for SegmentFile {
    fn drop(&mut self) {
        let pending = self
            .delete_on_drop
            .get_mut()
            .map(Option::take)
            .unwrap_or_default();
        if let Some(path) = pending {
            if let Err(error) = fs::remove_file(&path) {
                warn!(path = %path.display(), %error, "cannot remove deleted segment");
            }
        }
    }
}

/// Whole batches from one segment, read without copying. Holding it keeps the
/// segment's map alive and its bytes unchanged.
pub struct LogSlice {
    file: Option<Arc<SegmentFile>>,
    position: usize,
    len: usize,
}

impl LogSlice {
    pub(crate) fn empty() -> Self {
        LogSlice {
            file: None,
            position: 0,
            len: 0,
        }
    }

    pub(crate) fn new(file: &Arc<SegmentFile>, position: usize, len: usize) -> Self {
        file.readers.fetch_add(1, Ordering::AcqRel);
        LogSlice {
            file: Some(Arc::clone(file)),
            position,
            len,
        }
    }

    #[inline]
    pub fn bytes(&self) -> &[u8] {
        match &self.file {
            Some(file) => file.bytes(self.position, self.len),
            None => &[],
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_of(&self, file: &Arc<SegmentFile>) -> bool {
        self.file.as_ref().is_some_and(|own| Arc::ptr_eq(own, file))
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Clone for LogSlice {
    fn clone(&self) -> Self {
        match &self.file {
            Some(file) => LogSlice::new(file, self.position, self.len),
            None => LogSlice::empty(),
        }
    }
}

impl Drop for LogSlice {
    fn drop(&mut self) {
        if let Some(file) = &self.file {
            file.readers.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl std::ops::Deref for LogSlice {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.bytes()
    }
}

impl AsRef<[u8]> for LogSlice {
    fn as_ref(&self) -> &[u8] {
        self.bytes()
    }
}

impl std::fmt::Debug for LogSlice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSlice")
            .field("position", &self.position)
            .field("len", &self.len)
            .finish()
    }
}

/// A segment file mapped read-only during recovery.
pub(crate) struct SegmentFileHandle(pub(crate) SegmentFile);

impl SegmentFileHandle {
    pub(crate) fn data(&self, len: u64) -> &[u8] {
        self.0.bytes(0, len as usize)
    }
}

/// One file's share of a flush: the dirty byte range and whether its length
/// changed.
pub(crate) struct SyncTarget {
    file: Arc<SegmentFile>,
    start: usize,
    end: usize,
    metadata: bool,
}

impl SyncTarget {
    pub(crate) fn new(file: &Arc<SegmentFile>, start: usize, end: usize, metadata: bool) -> Self {
        SyncTarget {
            file: Arc::clone(file),
            start,
            end,
            metadata,
        }
    }

    pub(crate) fn sync(&self) -> std::io::Result<()> {
        self.file.sync_range(self.start, self.end)?;
        if self.metadata {
            self.file.file.sync_all()?;
        }
        Ok(())
    }

    pub(crate) fn path(&self) -> &Path {
        &self.file.path
    }

    pub(crate) fn end(&self) -> u32 {
        self.end as u32
    }

    pub(crate) fn is_of(&self, file: &Arc<SegmentFile>) -> bool {
        Arc::ptr_eq(&self.file, file)
    }
}
