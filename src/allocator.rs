//! The binary's global allocator: mimalloc, asked for plain blocks whenever a plain block is
//! aligned enough. Part of the `idenfy-gateway` binary only (declared in `main.rs`); the library
//! forbids `unsafe` and does not choose an allocator.
//!
//! Why not `mimalloc::MiMalloc`: it sends every allocation through `mi_malloc_aligned`, and in
//! mimalloc 3 that path handles a block over 1 KiB, or one whose size class is not a power of
//! two, by over-allocating and aligning inside the block (`mi_theap_malloc_zero_aligned_at_overalloc`).
//! A proxied request made about six such allocations (header maps, boxed futures), ~1,200
//! instructions in all. The rule here is the standard library's own for `System` on top of C's
//! `malloc`: a block of at least `align` bytes from a malloc is aligned to `align` up to 16
//! bytes (`max_align_t`; mimalloc's `MI_MAX_ALIGN_SIZE`), so only larger alignments need the
//! aligned entry points.

// The one place the binary uses `unsafe`: a `GlobalAlloc` is an unsafe trait, and its methods
// forward to mimalloc's C functions. The library stays `#![forbid(unsafe_code)]`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys::{
    mi_free, mi_malloc, mi_malloc_aligned, mi_realloc, mi_realloc_aligned, mi_zalloc,
    mi_zalloc_aligned,
};

/// The largest alignment every mimalloc block of at least that size has (C's `max_align_t`).
const MALLOC_ALIGN: usize = 16;

/// mimalloc, through its plain entry points when they give enough alignment.
pub struct Allocator;

/// Whether a plain block of `size` bytes is aligned enough for `align`.
fn plain(size: usize, align: usize) -> bool {
    align <= MALLOC_ALIGN && align <= size
}

// SAFETY: every method forwards to mimalloc, which returns null on failure (as `GlobalAlloc`
// requires) and blocks aligned as asked: by the aligned functions, or, when `plain` holds, by
// malloc's guarantee above. `dealloc` and `realloc` receive only pointers this allocator
// returned, which `mi_free` and both reallocs accept whichever function allocated them.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarding; see the impl's comment.
        unsafe {
            if plain(layout.size(), layout.align()) {
                mi_malloc(layout.size()).cast()
            } else {
                mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarding; see the impl's comment.
        unsafe {
            if plain(layout.size(), layout.align()) {
                mi_zalloc(layout.size()).cast()
            } else {
                mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: forwarding; see the impl's comment.
        unsafe { mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarding; see the impl's comment.
        unsafe {
            if plain(new_size, layout.align()) {
                mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZES: [usize; 14] = [
        1, 7, 8, 15, 16, 24, 48, 100, 1000, 1024, 1025, 1248, 1576, 70_000,
    ];
    const ALIGNS: [usize; 7] = [1, 2, 8, 16, 32, 128, 4096];

    fn layouts() -> impl Iterator<Item = Layout> {
        SIZES.into_iter().flat_map(|size| {
            ALIGNS
                .into_iter()
                .map(move |align| Layout::from_size_align(size, align).expect("valid layout"))
        })
    }

    fn aligned(ptr: *mut u8, align: usize) -> bool {
        !ptr.is_null() && (ptr as usize) % align == 0
    }

    #[test]
    fn every_block_is_aligned_as_asked_and_usable() {
        for layout in layouts() {
            // SAFETY: a non-zero size; the block is written within its size and freed once.
            unsafe {
                let ptr = Allocator.alloc(layout);
                assert!(aligned(ptr, layout.align()), "{layout:?} gave {ptr:p}");
                ptr.write_bytes(0xa5, layout.size());
                assert_eq!(*ptr.add(layout.size() - 1), 0xa5);
                Allocator.dealloc(ptr, layout);
            }
        }
    }

    #[test]
    fn zeroed_blocks_are_zero() {
        for layout in layouts() {
            // SAFETY: as above; read within the block's size.
            unsafe {
                let ptr = Allocator.alloc_zeroed(layout);
                assert!(aligned(ptr, layout.align()), "{layout:?} gave {ptr:p}");
                let bytes = std::slice::from_raw_parts(ptr, layout.size());
                assert!(bytes.iter().all(|&b| b == 0), "{layout:?} not zeroed");
                Allocator.dealloc(ptr, layout);
            }
        }
    }

    #[test]
    fn realloc_keeps_the_contents_and_the_alignment() {
        for layout in layouts() {
            for new_size in [1, layout.size() / 2 + 1, layout.size() * 3] {
                // SAFETY: as above; the old contents are read only up to the smaller size.
                unsafe {
                    let ptr = Allocator.alloc(layout);
                    for i in 0..layout.size() {
                        *ptr.add(i) = i as u8;
                    }
                    let moved = Allocator.realloc(ptr, layout, new_size);
                    assert!(aligned(moved, layout.align()), "{layout:?} -> {new_size}");
                    for i in 0..layout.size().min(new_size) {
                        assert_eq!(*moved.add(i), i as u8, "{layout:?} -> {new_size} at {i}");
                    }
                    let grown = Layout::from_size_align(new_size, layout.align()).unwrap();
                    Allocator.dealloc(moved, grown);
                }
            }
        }
    }
}
