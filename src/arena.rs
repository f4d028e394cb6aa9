//! The static (musl) build's allocator: a bump arena in `.bss` in front of
//! musl's malloc.
//!
//! musl's allocator hands memory back to the kernel as soon as a size
//! class empties, so the few hundred short-lived allocations of a lockwrap
//! run (clap's parser, the lock spec, the command line) cost about 30
//! mmap/munmap system calls and their page faults: measured in
//! BENCHMARKS.md, it was the largest item of the static build's start-up
//! after exec itself. The arena serves allocations from a zero-filled static
//! buffer instead (a page fault per page first touched, no system call),
//! takes back the most recent allocation when it is freed or grown (the
//! common pattern of a parser and of a wait loop's temporary buffers), and
//! passes everything else, and everything once it is full, to the system
//! allocator: memory use stays bounded by [`ARENA_BYTES`] plus what malloc
//! would have used anyway.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Size of the arena. A lockwrap run that takes a local lock allocates
/// well under this; a long wait's temporaries mostly reuse the top.
pub const ARENA_BYTES: usize = 256 * 1024;

/// The arena's bytes, page-aligned so any alignment up to a page is served.
#[repr(C, align(4096))]
struct Space(UnsafeCell<[u8; ARENA_BYTES]>);

/// A bump allocator over a static buffer, falling back to [`System`].
pub struct Arena {
    space: Space,
    /// Bytes of `space` handed out (the offset of the next allocation).
    used: AtomicUsize,
}

// SAFETY: the buffer is only reached through pointers handed out by
// `alloc`, each range to one owner at a time; `used` is atomic.
unsafe impl Sync for Arena {}

impl Arena {
    /// An empty arena, for a `static` `#[global_allocator]`.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Arena {
        Arena {
            space: Space(UnsafeCell::new([0; ARENA_BYTES])),
            used: AtomicUsize::new(0),
        }
    }

    fn base(&self) -> usize {
        self.space.0.get() as usize
    }

    /// The offset of `ptr` in the arena, if it is one of the arena's.
    fn offset_of(&self, ptr: *mut u8) -> Option<usize> {
        (ptr as usize)
            .checked_sub(self.base())
            .filter(|offset| *offset < ARENA_BYTES)
    }

    /// Reserves `size` bytes at `align`; None when they do not fit.
    fn bump(&self, size: usize, align: usize) -> Option<*mut u8> {
        if align > 4096 {
            return None;
        }
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            // The base is page-aligned, so aligning the offset aligns the address.
            let start = used.checked_next_multiple_of(align)?;
            let end = start.checked_add(size).filter(|end| *end <= ARENA_BYTES)?;
            // Acquire: the range may have just been freed by another
            // thread (see `move_top`), whose last use of it must come
            // before this thread's first.
            match self
                .used
                .compare_exchange_weak(used, end, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return Some((self.base() + start) as *mut u8),
                Err(now) => used = now,
            }
        }
    }

    /// Moves the top of the arena from `from` to `to` if the allocation
    /// ending at `from` is still the most recent one.
    ///
    /// AcqRel: moving the top down frees a range that another thread may
    /// take next (Release: this thread's last use of it happens before that
    /// thread's first, which its Acquire in `bump` pairs with); moving it up
    /// takes a range another thread may have just freed (Acquire). With
    /// Relaxed, a weakly ordered CPU (the aarch64 musl build) or the
    /// compiler could let a read of freed memory see the next owner's
    /// writes.
    fn move_top(&self, from: usize, to: usize) -> bool {
        to <= ARENA_BYTES
            && self
                .used
                .compare_exchange(from, to, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }
}

// SAFETY: every pointer returned is either a range of the arena reserved
// by one successful compare-exchange (so never handed out twice while in
// use) and aligned as asked, or the system allocator's; pointers are given
// back to whichever allocator they came from.
unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.bump(layout.size(), layout.align()) {
            Some(ptr) => ptr,
            // SAFETY: as the caller promises for `layout`.
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match self.offset_of(ptr) {
            // The most recent allocation is taken back; others stay used
            // until the process exits (bounded by the arena's size).
            Some(offset) => {
                self.move_top(offset + layout.size(), offset);
            }
            // SAFETY: ptr came from System.alloc with this layout.
            None => unsafe { System.dealloc(ptr, layout) },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Some(offset) = self.offset_of(ptr) else {
            // SAFETY: ptr came from System.alloc with this layout.
            return unsafe { System.realloc(ptr, layout, new_size) };
        };
        // The most recent allocation grows or shrinks in place.
        if offset
            .checked_add(new_size)
            .is_some_and(|end| self.move_top(offset + layout.size(), end))
        {
            return ptr;
        }
        // SAFETY: the caller promises new_size is a valid size at this
        // alignment.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: as for alloc.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both ranges are valid for the smaller size and belong
            // to different allocations, so they do not overlap.
            unsafe { std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
            // SAFETY: ptr is ours with this layout, no longer used.
            unsafe { self.dealloc(ptr, layout) };
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn allocations_are_aligned_distinct_and_the_top_is_taken_back() {
        let arena = Box::new(Arena::new());
        unsafe {
            let a = arena.alloc(layout(3, 1));
            let b = arena.alloc(layout(16, 16));
            assert_eq!(b as usize % 16, 0);
            assert!(b as usize >= a as usize + 3);
            a.write_bytes(0xaa, 3);
            b.write_bytes(0xbb, 16);
            let top = arena.used.load(Ordering::Relaxed);
            arena.dealloc(b, layout(16, 16));
            assert!(arena.used.load(Ordering::Relaxed) < top);
            // Not the top any more: kept until exit, nothing moves.
            let c = arena.alloc(layout(8, 8));
            let used = arena.used.load(Ordering::Relaxed);
            arena.dealloc(a, layout(3, 1));
            assert_eq!(arena.used.load(Ordering::Relaxed), used);
            assert_eq!(*a, 0xaa);
            arena.dealloc(c, layout(8, 8));
        }
    }

    #[test]
    fn the_top_grows_in_place_and_others_move_with_their_bytes() {
        let arena = Box::new(Arena::new());
        unsafe {
            let a = arena.alloc(layout(4, 1));
            a.copy_from_nonoverlapping(b"abcd".as_ptr(), 4);
            let grown = arena.realloc(a, layout(4, 1), 100);
            assert_eq!(grown, a);
            let b = arena.alloc(layout(4, 1));
            let moved = arena.realloc(a, layout(100, 1), 200);
            assert_ne!(moved, a);
            assert_eq!(std::slice::from_raw_parts(moved, 4), b"abcd");
            assert!(arena.offset_of(b).is_some());
        }
    }

    #[test]
    fn what_does_not_fit_goes_to_the_system_allocator() {
        let arena = Box::new(Arena::new());
        unsafe {
            let big = arena.alloc(layout(ARENA_BYTES + 1, 8));
            assert!(!big.is_null());
            assert!(arena.offset_of(big).is_none());
            big.write_bytes(1, ARENA_BYTES + 1);
            // Filling the arena, then growing past it, moves to the system.
            let fill = arena.alloc(layout(ARENA_BYTES - 64, 8));
            assert!(arena.offset_of(fill).is_some());
            let rest = arena.alloc(layout(32, 8));
            assert!(arena.offset_of(rest).is_some());
            let outside = arena.realloc(rest, layout(32, 8), 4096);
            assert!(arena.offset_of(outside).is_none());
            let huge_align = arena.alloc(layout(8, 8192));
            assert!(arena.offset_of(huge_align).is_none());
            assert_eq!(huge_align as usize % 8192, 0);
            arena.dealloc(huge_align, layout(8, 8192));
            arena.dealloc(outside, layout(4096, 8));
            arena.dealloc(big, layout(ARENA_BYTES + 1, 8));
        }
    }

    #[test]
    fn threads_never_share_a_range() {
        let arena: &'static Arena = Box::leak(Box::new(Arena::new()));
        let ranges: Vec<Vec<(usize, usize)>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        (0..500)
                            .map(|i| unsafe {
                                let size = 8 + i % 24;
                                (arena.alloc(layout(size, 8)) as usize, size)
                            })
                            .collect()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let mut all: Vec<(usize, usize)> = ranges.into_iter().flatten().collect();
        all.sort();
        for pair in all.windows(2) {
            assert!(pair[0].0 + pair[0].1 <= pair[1].0, "overlap: {pair:?}");
        }
    }
}
