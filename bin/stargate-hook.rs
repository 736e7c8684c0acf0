//! Multi-call entry point: hooks, `git stargate`, `git kv`, and the health responder.
//!
//! Its own C `main` rather than Rust's start-up: git starts this binary for every hook,
//! twice per ref of a non-atomic push, and Rust's start-up reads and parses
//! `/proc/self/maps` to guard the main thread's stack, about a tenth of a millisecond per
//! start (docs/BENCHMARKS.md, Hooks). What of that start-up the binary needs is done here:
//! the arguments, taken from `main`'s own (`std::env::args` is empty in a program without
//! Rust's `main` where the C library does not pass them to initializers, as musl does not),
//! SIGPIPE ignored (a write to a closed pipe fails with `EPIPE`, as Rust code expects),
//! closed standard descriptors opened on `/dev/null`, standard output flushed at the end, and a panic, once its message is printed, ends the
//! process with status 101, as under Rust's own `main`. A stack overflow is a plain SIGSEGV.
#![no_main]

use std::ffi::{CStr, OsString, c_char, c_int};
use std::io::Write;
use std::os::unix::ffi::OsStringExt;

/// What a hook allocates comes from an arena, never given back (`stargate::arena`).
#[global_allocator]
static ALLOCATOR: stargate::arena::Arena = stargate::arena::Arena;

/// # Safety
/// Called by the C runtime only, with `argc` valid, NUL-terminated strings in `argv`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn main(argc: c_int, argv: *const *const c_char) -> c_int {
    // SAFETY: before any thread is started: a signal's disposition set to SIG_IGN, and
    // standard descriptors that are closed opened on /dev/null, as Rust's start-up does, so
    // that no file this process opens becomes its standard output or error.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        for fd in 0..=2 {
            if libc::fcntl(fd, libc::F_GETFD) == -1 {
                libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            }
        }
    }
    // SAFETY: `argc` valid, NUL-terminated strings in `argv` (this function's contract).
    let args: Vec<OsString> = (0..usize::try_from(argc).unwrap_or(0))
        .map(|i| OsString::from_vec(unsafe { CStr::from_ptr(*argv.add(i)) }.to_bytes().to_vec()))
        .collect();
    let status = std::panic::catch_unwind(|| stargate::cli::main(args)).unwrap_or(101);
    let _ = std::io::stdout().flush();
    c_int::from(status)
}
