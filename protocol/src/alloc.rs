//! An allocator for binaries that decode untrusted frames.
//!
//! `kafka-protocol` (0.18) sizes a `Vec` from an array count read off the wire
//! before decoding a single element. A few hostile bytes can claim two billion
//! elements, and when the allocator cannot reserve that much address space the
//! process aborts: no error, no unwinding. Every element takes at least one
//! byte, so decoding fails a few elements later; the only problem is the
//! reservation itself.
//!
//! [`ReserveLargeAllocator`] serves allocations of [`LARGE_ALLOCATION_BYTES`]
//! or more with an anonymous `mmap(MAP_NORESERVE)`: address space only, no
//! commit charge, so the reservation succeeds, pages are never touched, and
//! the decode error arrives as it should. Nothing Strata allocates on purpose
//! is that large (frames are bounded far below it). Smaller allocations go to
//! the system allocator unchanged.
//!
//! Binaries opt in:
//!
//! ```
//! use strata_protocol::alloc::ReserveLargeAllocator;
//!
//! #[global_allocator]
//! static ALLOCATOR: ReserveLargeAllocator = ReserveLargeAllocator;
//! # fn main() {}
//! ```

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at least this large are served by `mmap(MAP_NORESERVE)`.
pub const LARGE_ALLOCATION_BYTES: usize = 1 << 30;

/// See the module documentation.
pub struct ReserveLargeAllocator;

fn is_large(layout: &Layout) -> bool {
    // mmap returns page-aligned memory; larger alignments go to the system.
    layout.size() >= LARGE_ALLOCATION_BYTES && layout.align() <= 4096
}

unsafe fn map(size: usize) -> *mut u8 {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
    // SAFETY: an anonymous mapping with no address hint has no preconditions.
    let address = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            -1,
            0,
        )
    };
    if address == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        address.cast()
    }
}

// SAFETY: large blocks come from mmap (page-aligned, zeroed, at least `size`
// bytes) and go back with munmap of the same size; everything else is System's.
unsafe impl GlobalAlloc for ReserveLargeAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_large(&layout) {
            unsafe { map(layout.size()) }
        } else {
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_large(&layout) {
            unsafe { map(layout.size()) } // anonymous mappings are zeroed
        } else {
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        if is_large(&layout) {
            unsafe { libc::munmap(pointer.cast(), layout.size()) };
        } else {
            unsafe { System.dealloc(pointer, layout) }
        }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !is_large(&layout) && !is_large(&new_layout) {
            return unsafe { System.realloc(pointer, layout, new_size) };
        }
        let new_pointer = unsafe { self.alloc(new_layout) };
        if !new_pointer.is_null() {
            unsafe {
                std::ptr::copy_nonoverlapping(pointer, new_pointer, layout.size().min(new_size));
                self.dealloc(pointer, layout);
            }
        }
        new_pointer
    }
}
