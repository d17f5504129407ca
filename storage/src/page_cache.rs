//! Whether bytes of a segment map are in memory, and bringing them in.
//!
//! Reading a page of a map that is not in the page cache faults and waits
//! for the disk. On an async runtime that stalls every task of the thread,
//! so a reader checks first ([`is_resident`], one `mincore`) and loads what
//! is not on a blocking thread ([`load`]).

/// Whether every page under `bytes` is in memory. Bytes outside any map
/// (a heap buffer) count as resident.
pub fn is_resident(bytes: &[u8]) -> bool {
    let Some((start, len)) = page_span(bytes) else {
        return true;
    };
    let mut pages = vec![0u8; len.div_ceil(page_size())];
    // SAFETY: `start..start + len` covers the pages under `bytes`, which are
    // mapped while the slice lives; `pages` has one byte per page.
    let result = unsafe { libc::mincore(start.cast(), len, pages.as_mut_ptr()) };
    result != 0 || pages.iter().all(|page| page & 1 == 1)
}

/// Brings every page under `bytes` into memory, waiting for the disk: call
/// it from a blocking thread.
pub fn load(bytes: &[u8]) {
    const MADV_POPULATE_READ: libc::c_int = 22;
    let Some((start, len)) = page_span(bytes) else {
        return;
    };
    // SAFETY: the range covers mapped pages (as above); MADV_POPULATE_READ
    // only faults them in, reporting failure as an error, never a signal.
    let result = unsafe { libc::madvise(start.cast(), len, MADV_POPULATE_READ) };
    if result != 0 {
        // Kernels before 5.14: read one byte of every page instead.
        for index in (0..bytes.len()).step_by(page_size()) {
            // SAFETY: `index` is within `bytes`.
            unsafe { std::ptr::read_volatile(bytes.as_ptr().add(index)) };
        }
    }
}

/// The page-aligned start and length of the pages under `bytes`.
fn page_span(bytes: &[u8]) -> Option<(*mut u8, usize)> {
    if bytes.is_empty() {
        return None;
    }
    let page = page_size();
    let address = bytes.as_ptr() as usize;
    let start = address / page * page;
    Some((start as *mut u8, address + bytes.len() - start))
}

pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}
