//! One socket's capture state, behind its own lock.
//!
//! Connection objects are allocated once and never freed: a descriptor-table reader may hold a
//! pointer to one while another thread closes it, so instead of freeing, a closed connection goes
//! to a free list and is reused. Whoever locks a connection re-checks that the descriptor still
//! refers to it (see `events::lock_fd`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Mutex, MutexGuard};
use synth::TcpStream;

use crate::guard;

/// A tracked socket.
pub struct Connection {
    state: Mutex<ConnState>,
    /// Whether this is a datagram socket, readable without the lock (receive hooks ask the kernel
    /// for the sender's address on datagram sockets only).
    datagram: AtomicBool,
}

/// What a connection knows, guarded by its lock.
pub struct ConnState {
    /// The process that created or accepted it: only that process ends it at exit.
    pub owner_pid: i32,
    /// How many descriptors refer to it; the connection ends when the last one closes.
    pub refs: u32,
    /// The socket's identity (st_dev, st_ino): a descriptor number reused for another socket
    /// behind our back has another.
    pub ident: (u64, u64),
    /// Carries TLS: in plain mode its socket-level bytes are ciphertext and are not recorded.
    pub tls: bool,
    pub proto: Proto,
    /// In `NETINTERCEPT_TLS=both`, the plaintext's parallel stream, from the first plaintext on.
    pub mirror: Option<Box<TcpStream>>,
}

impl ConnState {
    /// `side` sent its FIN: on the connection's stream and on its plaintext twin.
    pub fn fin(&mut self, side: synth::Side, out: &mut dyn FnMut(&[u8])) {
        if let Proto::Tcp(Tcp::Open(stream)) = &mut self.proto {
            stream.fin(side, out);
        }
        if let Some(twin) = &mut self.mirror {
            twin.fin(side, out);
        }
    }
}

/// The transport and its phase.
pub enum Proto {
    /// Closed and waiting on the free list.
    Free,
    Tcp(Tcp),
    Udp(Udp),
}

/// A TCP socket's phase.
pub enum Tcp {
    /// Created, not yet connected or listening.
    Fresh,
    /// A non-blocking connect to this peer is under way.
    Connecting(SocketAddr),
    /// Listening: its accepted sockets are connections of their own.
    Listening,
    /// Handshake written; data flows.
    Open(Box<TcpStream>),
    /// Refused, reset or finished: nothing more is written.
    Done,
}

/// A UDP socket's addresses as far as known.
pub struct Udp {
    /// The bound local address (port known once bound or autobound).
    pub local: Option<SocketAddr>,
    /// The connected peer, if connected.
    pub peer: Option<SocketAddr>,
    /// Reused packet buffer.
    pub scratch: Vec<u8>,
}

impl Udp {
    pub fn new() -> Self {
        Self {
            local: None,
            peer: None,
            scratch: Vec::new(),
        }
    }
}

impl Default for Udp {
    fn default() -> Self {
        Self::new()
    }
}

static FREE: Mutex<Vec<&'static Connection>> = Mutex::new(Vec::new());

impl Connection {
    /// A connection in state `proto`, owned by `pid`, referred to by one descriptor.
    pub fn alloc(proto: Proto, pid: i32, ident: (u64, u64)) -> &'static Connection {
        let datagram = matches!(proto, Proto::Udp(_));
        let fresh = ConnState {
            owner_pid: pid,
            refs: 1,
            ident,
            tls: false,
            proto,
            mirror: None,
        };
        let reused = if guard::nested() {
            FREE.try_lock().and_then(|mut f| f.pop())
        } else {
            FREE.lock().pop()
        };
        match reused {
            Some(conn) => {
                if let Some(mut st) = conn.lock() {
                    *st = fresh;
                    conn.datagram.store(datagram, Ordering::Release);
                    return conn;
                }
                // A free connection is never locked for long; leak it rather than wait.
                Self::leak(fresh, datagram)
            }
            None => Self::leak(fresh, datagram),
        }
    }

    fn leak(state: ConnState, datagram: bool) -> &'static Connection {
        Box::leak(Box::new(Connection {
            state: Mutex::new(state),
            datagram: AtomicBool::new(datagram),
        }))
    }

    /// Whether this is a UDP socket.
    pub fn is_datagram(&self) -> bool {
        self.datagram.load(Ordering::Acquire)
    }

    /// This connection's state; in a nested (signal-handler) call only if the lock is free.
    pub fn lock(&self) -> Option<MutexGuard<'_, ConnState>> {
        if guard::nested() {
            let g = self.state.try_lock();
            if g.is_none() {
                guard::count_dropped();
            }
            g
        } else {
            Some(self.state.lock())
        }
    }

    /// Return a connection whose state is `Free` for reuse.
    pub fn release(&'static self) {
        if let Some(mut f) = FREE.try_lock() {
            f.push(self);
        }
    }

    /// After fork, in the child: a lock held by a thread that no longer exists is released.
    ///
    /// # Safety
    /// Only in a fork child before any other thread exists, when no lock is legitimately held.
    pub unsafe fn reset_lock_after_fork(&self) {
        if self.state.is_locked() {
            // SAFETY: per the contract, the holder no longer exists.
            unsafe { self.state.force_unlock() };
        }
    }
}

/// Reset the free list's lock in a fork child.
///
/// # Safety
/// As `Connection::reset_lock_after_fork`.
pub unsafe fn reset_free_list_after_fork() {
    if FREE.is_locked() {
        // SAFETY: per the contract, the holder no longer exists.
        unsafe { FREE.force_unlock() };
    }
}

static ISN_STATE: AtomicU64 = AtomicU64::new(0);

/// A fresh initial sequence number (splitmix64 over a per-process seed).
pub fn next_isn() -> u32 {
    let mut z = ISN_STATE
        .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) as u32
}

/// Seed the sequence-number generator (at load and in each fork child).
pub fn seed_isn(seed: u64) {
    ISN_STATE.store(seed, Ordering::Relaxed);
}
