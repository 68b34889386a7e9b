//! The per-thread reentrancy guard around our bookkeeping.
//!
//! Our own I/O goes through raw syscalls, so a hook entered while this thread is already inside our
//! bookkeeping means a signal handler interrupted us (or libc called back into a hooked symbol). In
//! that nested state every lock is only tried, never waited for, so a handler can't deadlock on a
//! lock its own thread holds; what can't be recorded is counted in [`dropped`].

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    static CALL: Cell<&'static str> = const { Cell::new("") };
    static FD: Cell<i32> = const { Cell::new(-1) };
}

/// Note the intercepted call this thread is in (for pcapng packet comments).
#[inline]
pub fn set_call(name: &'static str) {
    let _ = CALL.try_with(|c| c.set(name));
}

/// The intercepted call this thread is in, or "".
pub fn call() -> &'static str {
    CALL.try_with(Cell::get).unwrap_or("")
}

/// Note the descriptor whose connection this thread is recording.
pub fn set_fd(fd: i32) {
    let _ = FD.try_with(|c| c.set(fd));
}

/// The descriptor noted by [`set_fd`].
pub fn fd() -> i32 {
    FD.try_with(Cell::get).unwrap_or(-1)
}

static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Held while this thread runs bookkeeping; dropping it leaves.
pub struct Entered {
    _not_send: std::marker::PhantomData<*const ()>,
}

/// Enter bookkeeping; `None` when thread-local storage is already torn down (thread exit), in which
/// case the caller records nothing.
pub fn enter() -> Option<Entered> {
    DEPTH
        .try_with(|d| d.set(d.get() + 1))
        .ok()
        .map(|()| Entered {
            _not_send: std::marker::PhantomData,
        })
}

impl Drop for Entered {
    fn drop(&mut self) {
        let _ = DEPTH.try_with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// Whether this thread entered bookkeeping more than once (a signal handler interrupted it).
pub fn nested() -> bool {
    DEPTH.try_with(|d| d.get() > 1).unwrap_or(true)
}

/// Whether this thread is inside bookkeeping at all (used by the panic hook).
pub fn inside() -> bool {
    DEPTH.try_with(|d| d.get() > 0).unwrap_or(false)
}

/// Count one packet or event lost because a lock was busy in a nested call.
pub fn count_dropped() {
    DROPPED.fetch_add(1, Ordering::Relaxed);
}

/// How many packets or events were lost to nested calls.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}
