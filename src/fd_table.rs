//! Descriptor → connection, answered by one atomic load for descriptors we do not track.
//!
//! A flat, lazily grown two-level table of `AtomicPtr<Connection>`: a fixed top level of chunk
//! pointers (no reallocation, so readers never race a resize) and chunks of 4096 slots allocated on
//! first use and never freed. Connections themselves are never freed either (see `connection`), so a
//! pointer loaded here stays valid forever; whether it still means this descriptor is re-checked
//! under the connection's lock.

use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use crate::connection::Connection;

const CHUNK_BITS: usize = 12;
const CHUNK_LEN: usize = 1 << CHUNK_BITS;
const CHUNKS: usize = 1 << 10;
/// Descriptors at or above this are never tracked (over four million open files).
pub const MAX_FD: usize = CHUNK_LEN * CHUNKS;

type Chunk = [AtomicPtr<Connection>; CHUNK_LEN];

static TOP: [AtomicPtr<Chunk>; CHUNKS] = [const { AtomicPtr::new(ptr::null_mut()) }; CHUNKS];

fn split(fd: i32) -> Option<(usize, usize)> {
    let fd = usize::try_from(fd).ok().filter(|&fd| fd < MAX_FD)?;
    Some((fd >> CHUNK_BITS, fd & (CHUNK_LEN - 1)))
}

fn slot(fd: i32) -> Option<&'static AtomicPtr<Connection>> {
    let (hi, lo) = split(fd)?;
    let chunk = TOP[hi].load(Ordering::Acquire);
    // SAFETY: a non-null chunk pointer was published with Release after full initialisation and
    // chunks are never freed.
    (!chunk.is_null()).then(|| unsafe { &(*chunk)[lo] })
}

fn slot_or_grow(fd: i32) -> Option<&'static AtomicPtr<Connection>> {
    let (hi, lo) = split(fd)?;
    let mut chunk = TOP[hi].load(Ordering::Acquire);
    if chunk.is_null() {
        let fresh: Box<Chunk> = Box::new([const { AtomicPtr::new(ptr::null_mut()) }; CHUNK_LEN]);
        let fresh = Box::into_raw(fresh);
        chunk = match TOP[hi].compare_exchange(
            ptr::null_mut(),
            fresh,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => fresh,
            Err(winner) => {
                // SAFETY: `fresh` came from Box::into_raw above and was never shared.
                drop(unsafe { Box::from_raw(fresh) });
                winner
            }
        };
    }
    // SAFETY: `chunk` is non-null, initialised and never freed.
    Some(unsafe { &(*chunk)[lo] })
}

/// The connection `fd` refers to, if it is tracked.
#[inline]
pub fn get(fd: i32) -> Option<&'static Connection> {
    let p = slot(fd)?.load(Ordering::Acquire);
    // SAFETY: connections are leaked `'static` objects (never freed).
    unsafe { p.as_ref() }
}

/// Whether `fd` is a tracked socket: the hot-path test, one or two atomic loads.
#[inline]
pub fn is_tracked(fd: i32) -> bool {
    slot(fd).is_some_and(|s| !s.load(Ordering::Relaxed).is_null())
}

/// Make `fd` refer to `conn`, returning what it referred to before.
pub fn set(fd: i32, conn: &'static Connection) -> Option<&'static Connection> {
    let old = slot_or_grow(fd)?.swap(conn as *const _ as *mut _, Ordering::AcqRel);
    // SAFETY: as in `get`.
    unsafe { old.as_ref() }
}

/// Stop tracking `fd`, returning what it referred to.
pub fn take(fd: i32) -> Option<&'static Connection> {
    let old = slot(fd)?.swap(ptr::null_mut(), Ordering::AcqRel);
    // SAFETY: as in `get`.
    unsafe { old.as_ref() }
}

/// Every tracked descriptor and its connection (for exit and fork handling).
pub fn for_each(mut f: impl FnMut(i32, &'static Connection)) {
    for (hi, top) in TOP.iter().enumerate() {
        let chunk = top.load(Ordering::Acquire);
        if chunk.is_null() {
            continue;
        }
        // SAFETY: as in `slot`.
        for (lo, s) in unsafe { &*chunk }.iter().enumerate() {
            // SAFETY: as in `get`.
            if let Some(c) = unsafe { s.load(Ordering::Acquire).as_ref() } {
                f(((hi << CHUNK_BITS) | lo) as i32, c);
            }
        }
    }
}
