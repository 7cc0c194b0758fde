//! The process's allocator: mimalloc, asked through its plain entry points where they serve.
//!
//! The `mimalloc` crate's `GlobalAlloc` hands every request to `mi_malloc_aligned`, even a
//! string's (alignment 1). That function's fast path serves a small request (up to 1 KiB, no
//! larger alignment than size) only while its size class's free list has a block. When the
//! list is empty (one allocation in six in the replay measured: mimalloc refills it from the
//! blocks freed since, on the slow path) it takes the generic aligned path, which for a size
//! class that is not a power of two over-allocates by `alignment - 1` bytes
//! (`mi_theap_malloc_zero_aligned_at_generic`, then `_overalloc`): about 170 instructions
//! more than `mi_malloc`'s own slow path, and for alignment 8 often a block one class larger.
//! mimalloc's author on Rust's use of it: "it would indeed be much better to use `malloc`
//! directly for performance" (microsoft/mimalloc#314); the wrapper crate's change to do so
//! (purpleprotocol/mimalloc_rust#170) is not released.
//!
//! `mi_malloc` returns blocks aligned to the machine word at least: every size class is a
//! whole number of words (one word, then multiples of 16 bytes on x86-64 and aarch64, where
//! `MI_MAX_ALIGN_SIZE` is 16), and every block starts a whole number of words into a page
//! that starts on a 64 KiB boundary. mimalloc relies on it itself: its aligned `realloc`
//! hands alignments up to a word to the plain one. So a request whose alignment is at most a
//! word goes to `mi_malloc` / `mi_zalloc` / `mi_realloc`, and any other to the aligned
//! functions, as before. `mi_free` frees either. docs/performance.md, "The allocator's
//! aligned path".

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// Alignments every `mi_malloc` block has: the machine word.
const PLAIN_ALIGN: usize = std::mem::size_of::<usize>();

/// mimalloc as the global allocator; declare it in a binary with
/// `#[global_allocator] static ALLOC: leadflow::allocator::MiMalloc = MiMalloc;` (the type
/// imported).
pub struct MiMalloc;

// SAFETY: every block comes from mimalloc, aligned as the layout asks (plain blocks are
// word-aligned, see the module docs; larger alignments go through the aligned API), and every
// block is given back to `mi_free` / `mi_realloc*`, which take blocks from any of these.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= PLAIN_ALIGN {
            unsafe { mi::mi_malloc(layout.size()) as *mut u8 }
        } else {
            unsafe { mi::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8 }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= PLAIN_ALIGN {
            unsafe { mi::mi_zalloc(layout.size()) as *mut u8 }
        } else {
            unsafe { mi::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8 }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        unsafe { mi::mi_free(ptr as *mut c_void) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= PLAIN_ALIGN {
            unsafe { mi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8 }
        } else {
            unsafe {
                mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
            }
        }
    }
}

/// Turns transparent huge pages off for this process, for memory touched from now on: Linux's
/// `prctl(PR_SET_THP_DISABLE)`, the call mimalloc itself makes at its start under
/// `MIMALLOC_ALLOW_THP=0` (mimalloc otherwise asks for huge pages with `madvise`). From
/// Linux 4.13 the flag also overrides such `madvise` requests, made before or after it;
/// older kernels honour it for new mappings only. Kept across `fork` and `execve`. A no-op
/// off Linux.
///
/// Why: `leadflow replay` and `leadflow report` build their state from nothing, and on the
/// 2-core development VM the first touch of each fresh 2 MiB page kept replay's fold thread
/// in the kernel (`clear_page_erms`) for two fifths of its time; without them replay ran
/// 1.3–1.4× faster (docs/performance.md, "Replay and report without huge pages"). The
/// service (`run`, `notify`) too: at a million leads' traffic on Apache Kafka it took less
/// CPU per event and less memory without them, a small instance a quarter less memory, and
/// snapshot slices no longer waited on huge-page faults, although the engine's
/// micro-benchmark at 1M leads, its state already built, runs about 1.13× faster with them
/// (fewer TLB misses; docs/performance.md, "The consumers' fetch queue, and huge pages off
/// for the service").
///
/// Errors: the `prctl` call's (a kernel before 3.15, a seccomp filter refusing it).
pub fn disable_transparent_huge_pages() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE reads no memory; prctl's variadic arguments are read as
        // `unsigned long`, so they are passed as such (arg3..5 must be 0: the whole process).
        let rc = unsafe {
            libc::prctl(
                libc::PR_SET_THP_DISABLE,
                1 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After the call the kernel reports huge pages off for the process; the flag as it was
    /// is put back after (no other test here depends on it).
    #[cfg(target_os = "linux")]
    #[test]
    fn huge_pages_can_be_turned_off() {
        let zero = 0 as libc::c_ulong;
        // SAFETY: as in `disable_transparent_huge_pages`; PR_GET_THP_DISABLE returns the flag.
        let flag = || unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, zero, zero, zero, zero) };
        let before = flag();
        disable_transparent_huge_pages().expect("prctl");
        assert_eq!(flag(), 1);
        if before == 0 {
            // SAFETY: as above, clearing the flag.
            let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, zero, zero, zero, zero) };
            assert_eq!(rc, 0);
        }
    }

    /// Sizes across mimalloc's small, medium, large (to 512 KiB) and huge classes, both sides
    /// of each class boundary up to 320 bytes.
    fn sizes() -> impl Iterator<Item = usize> {
        (1..=320).chain([
            511,
            512,
            513,
            1000,
            4096,
            8191,
            65_536,
            65_537,
            100_000,
            300_000,
            1 << 20,
            (5 << 20) + 3,
        ])
    }

    fn check_block(p: *mut u8, size: usize, align: usize, what: &str) {
        assert!(!p.is_null(), "{what}: null for size {size} align {align}");
        assert_eq!(
            p as usize % align,
            0,
            "{what}: size {size} align {align} at {p:p}"
        );
        // SAFETY: p is a live mimalloc block.
        let usable = unsafe { mi::mi_usable_size(p as *const c_void) };
        assert!(usable >= size, "{what}: {usable} usable < {size}");
    }

    #[test]
    fn every_block_has_the_alignment_and_size_asked() {
        let a = MiMalloc;
        for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
            for size in sizes() {
                let layout = Layout::from_size_align(size, align).expect("layout");
                // Many blocks at a time, so that some come from refilled free lists and some
                // from fresh pages, and from every position in a page.
                let blocks: Vec<*mut u8> = (0..8).map(|_| unsafe { a.alloc(layout) }).collect();
                for &p in &blocks {
                    check_block(p, size, align, "alloc");
                    unsafe { p.write_bytes(0xA5, size) };
                }
                for p in blocks {
                    unsafe { a.dealloc(p, layout) };
                }
                let z = unsafe { a.alloc_zeroed(layout) };
                check_block(z, size, align, "alloc_zeroed");
                let zeros = unsafe { std::slice::from_raw_parts(z, size) };
                assert!(zeros.iter().all(|&b| b == 0), "alloc_zeroed size {size}");
                unsafe { a.dealloc(z, layout) };
            }
        }
    }

    #[test]
    fn realloc_keeps_the_bytes_and_the_alignment() {
        let a = MiMalloc;
        // Within a class, across classes, into and out of large and huge blocks.
        let moves = [
            (1, 9),
            (24, 25),
            (40, 48),
            (100, 30),
            (300, 5000),
            (5000, 17),
            (300, 1 << 20),
            ((1 << 20) + 3, 100),
            (5000, 300_000),
            (300_000, 310_000),
        ];
        for align in [1, 8, 16, 64, 4096] {
            for (from, to) in moves {
                let layout = Layout::from_size_align(from, align).expect("layout");
                let p = unsafe { a.alloc(layout) };
                check_block(p, from, align, "alloc");
                for i in 0..from {
                    unsafe { p.add(i).write(i as u8) };
                }
                let q = unsafe { a.realloc(p, layout, to) };
                check_block(q, to, align, "realloc");
                for i in 0..from.min(to) {
                    assert_eq!(
                        unsafe { q.add(i).read() },
                        i as u8,
                        "{from} -> {to}, byte {i}"
                    );
                }
                let moved = Layout::from_size_align(to, align).expect("layout");
                unsafe { a.dealloc(q, moved) };
            }
        }
    }
}
