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

/// Marks a descriptor already found not to be an IPv4/IPv6 socket (never dereferenced).
const NOT_IP: *mut Connection = std::ptr::dangling_mut();

fn as_conn(p: *mut Connection) -> Option<&'static Connection> {
    if p == NOT_IP {
        return None;
    }
    // SAFETY: any other non-null pointer is a leaked `'static` connection (never freed).
    unsafe { p.as_ref() }
}

/// What the table knows of a descriptor.
pub enum Known {
    /// Never seen, or closed since: a socket call on it should look at what it is.
    Unknown,
    /// Looked at: not an IPv4/IPv6 socket.
    NotIp,
    Tracked(&'static Connection),
}

/// What the table knows of `fd`.
pub fn known(fd: i32) -> Known {
    let Some(s) = slot(fd) else {
        return Known::Unknown;
    };
    let p = s.load(Ordering::Acquire);
    if p.is_null() {
        Known::Unknown
    } else if p == NOT_IP {
        Known::NotIp
    } else {
        as_conn(p).map_or(Known::Unknown, Known::Tracked)
    }
}

/// Remember that `fd` is not an IP socket, unless something was recorded for it meanwhile.
pub fn mark_not_ip(fd: i32) {
    if let Some(s) = slot_or_grow(fd) {
        let _ = s.compare_exchange(ptr::null_mut(), NOT_IP, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// The connection `fd` refers to, if it is tracked.
#[inline]
pub fn get(fd: i32) -> Option<&'static Connection> {
    as_conn(slot(fd)?.load(Ordering::Acquire))
}

/// Whether anything is recorded for `fd` (a close must then forget it).
#[inline]
pub fn is_known(fd: i32) -> bool {
    slot(fd).is_some_and(|s| !s.load(Ordering::Relaxed).is_null())
}

/// Whether `fd` is a tracked socket: the hot-path test, one or two atomic loads.
#[inline]
pub fn is_tracked(fd: i32) -> bool {
    slot(fd).is_some_and(|s| {
        let p = s.load(Ordering::Relaxed);
        !p.is_null() && p != NOT_IP
    })
}

/// Make `fd` refer to `conn`, returning what it referred to before.
pub fn set(fd: i32, conn: &'static Connection) -> Option<&'static Connection> {
    as_conn(slot_or_grow(fd)?.swap(conn as *const _ as *mut _, Ordering::AcqRel))
}

/// Forget `fd` (closed), returning the connection it referred to.
pub fn take(fd: i32) -> Option<&'static Connection> {
    let s = slot(fd)?;
    if s.load(Ordering::Relaxed).is_null() {
        return None;
    }
    as_conn(s.swap(ptr::null_mut(), Ordering::AcqRel))
}

/// Forget `fd` only if it still refers to `conn`.
pub fn take_if(fd: i32, conn: &'static Connection) -> bool {
    slot(fd).is_some_and(|s| {
        s.compare_exchange(
            conn as *const _ as *mut _,
            ptr::null_mut(),
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_ok()
    })
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
            if let Some(c) = as_conn(s.load(Ordering::Acquire)) {
                f(((hi << CHUNK_BITS) | lo) as i32, c);
            }
        }
    }
}
