//! The hooks' allocator: a git hook lives a few milliseconds, so what it allocates is taken
//! from one arena in order and never given back, except the newest block, which a free or a
//! growth in place moves the end over. Where the arena does not serve (before `start`, in
//! every long-lived program, or once its `SIZE` is used up) the system allocator does. The
//! arena is zeroed static memory: a page costs only when first touched.
//!
//! Why: musl's allocator, in the static build operators install, maps and unmaps a page for
//! small groups of blocks as they fill and empty, some fifty system calls and their page
//! faults in a journaling hook; with the arena `committed` took 0.5 ms less CPU and every hook
//! some (docs/ARCHITECTURE.md, Performance). `stargate-hook` installs it as its global
//! allocator; `cli` starts it for the hooks only.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// What a hook may take from the arena before the system allocator serves it.
pub const SIZE: usize = 8 << 20;

#[repr(C, align(4096))]
struct Memory(UnsafeCell<[u8; SIZE]>);

// SAFETY: bytes are handed out at most once at a time, each range to one owner (`take`).
unsafe impl Sync for Memory {}

static MEMORY: Memory = Memory(UnsafeCell::new([0; SIZE]));
/// The offset of the first free byte.
static END: AtomicUsize = AtomicUsize::new(0);
static STARTED: AtomicBool = AtomicBool::new(false);

/// The allocator; the arena serves only once `start` was called.
pub struct Arena;

/// From now on, allocations come from the arena while it lasts.
pub fn start() {
    STARTED.store(true, Ordering::Relaxed);
}

fn base() -> usize {
    MEMORY.0.get() as usize
}

/// The offset of `ptr` in the arena, if it is one of the arena's.
fn offset(ptr: *mut u8) -> Option<usize> {
    (ptr as usize).checked_sub(base()).filter(|&at| at < SIZE)
}

/// Move the end from `from` to `to`, if it is still at `from`.
fn move_end(from: usize, to: usize) -> bool {
    END.compare_exchange(from, to, Ordering::AcqRel, Ordering::Relaxed).is_ok()
}

/// A block for `layout` from the arena, or `None` when it has no room.
fn take(layout: Layout) -> Option<*mut u8> {
    let mut end = END.load(Ordering::Acquire);
    loop {
        let start = (base() + end).checked_next_multiple_of(layout.align())? - base();
        let new_end = start.checked_add(layout.size()).filter(|&e| e <= SIZE)?;
        match END.compare_exchange_weak(end, new_end, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Some((base() + start) as *mut u8),
            Err(now) => end = now,
        }
    }
}

// SAFETY: every block is `layout.size()` bytes aligned to `layout.align()`, and no byte is in
// two live blocks: `take` hands out ranges past the end, which only moves back over a block
// its owner freed or resized (`move_end` from exactly that block's end).
unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if STARTED.load(Ordering::Relaxed)
            && let Some(ptr) = take(layout)
        {
            return ptr;
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match offset(ptr) {
            // The newest block gives its bytes back; any other stays taken.
            Some(at) => _ = move_end(at + layout.size(), at),
            // SAFETY: the caller's contract, passed on.
            None => unsafe { System.dealloc(ptr, layout) },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Some(at) = offset(ptr) else {
            // SAFETY: the caller's contract, passed on.
            return unsafe { System.realloc(ptr, layout, new_size) };
        };
        // The newest block grows or shrinks where it is.
        if at.checked_add(new_size).is_some_and(|e| e <= SIZE) && move_end(at + layout.size(), at + new_size) {
            return ptr;
        }
        // SAFETY: `new_size` is non-zero and fits `isize` once aligned (the caller's
        // contract); the old block is valid for `layout.size()` bytes and the new one for
        // `new_size`, and they do not overlap.
        unsafe {
            let new = self.alloc(Layout::from_size_align_unchecked(new_size, layout.align()));
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks are aligned, disjoint and keep their bytes; the newest one is given back or
    /// grown in place, an older one stays; past the arena's room the system serves. The test
    /// binary's own allocator is the system's: these calls are the only users of the arena.
    #[test]
    fn blocks_are_aligned_disjoint_and_the_newest_is_reused() {
        let arena = Arena;
        start();
        let a = Layout::from_size_align(24, 8).unwrap();
        let b = Layout::from_size_align(100, 64).unwrap();
        // SAFETY: non-zero layouts; every block freed with its own layout.
        unsafe {
            let x = arena.alloc(a);
            x.write_bytes(0xaa, 24);
            let y = arena.alloc(b);
            assert!(offset(x).is_some() && offset(y).is_some());
            assert_eq!(y as usize % 64, 0);
            assert!(y as usize >= x as usize + 24, "disjoint");
            // The newest grows in place, then is given back and its bytes taken again.
            assert_eq!(arena.realloc(y, b, 4000), y);
            arena.dealloc(y, Layout::from_size_align(4000, 64).unwrap());
            let z = arena.alloc(b);
            assert_eq!(z, y);
            // An older block cannot grow in place: moved, its bytes kept.
            let x2 = arena.realloc(x, a, 48);
            assert_ne!(x2, x);
            assert!((0..24).all(|i| *x2.add(i) == 0xaa));
            // More than the arena holds: the system's.
            let big = Layout::from_size_align(SIZE + 1, 8).unwrap();
            let w = arena.alloc(big);
            assert!(!w.is_null() && offset(w).is_none());
            arena.dealloc(w, big);
            arena.dealloc(x2, Layout::from_size_align(48, 8).unwrap());
            arena.dealloc(z, b);
        }
    }
}
