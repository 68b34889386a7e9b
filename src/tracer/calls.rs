//! From a system call's registers to the records the in-process recorder would have written
//! for the same call (see `events.rs`): the same kinds, fields and payloads, so the collector
//! cannot tell the two sources apart.
//!
//! As in the hooks, the tracee's memory is read only where the kernel just reported the call
//! a success (or an error that comes after the arguments were copied): a bad pointer stays
//! the program's EFAULT. Reads go through [`Tracee`], so all of this is tested without a process.

use std::net::SocketAddr;
use std::sync::OnceLock;

use super::payload::Payload;
use super::tracee::{Regs, Tracee};
use crate::fast_hash::HashMap;
use crate::record::{Kind, Record, CALLS};

/// What a descriptor number of a traced process is, as far as the tracer knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sock {
    Tcp,
    Udp,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    sock: Sock,
    /// The local address has not been recorded yet (a UDP socket's first datagram carries it).
    first_local: bool,
}

/// The internet sockets among a process's descriptors.
#[derive(Clone, Default, Debug)]
pub struct Fds {
    map: HashMap<i32, Entry>,
}

impl Fds {
    pub fn get(&self, fd: i32) -> Option<Sock> {
        self.map.get(&fd).map(|e| e.sock)
    }
    pub fn insert(&mut self, fd: i32, sock: Sock) {
        self.map.insert(
            fd,
            Entry {
                sock,
                first_local: true,
            },
        );
    }
    fn remove(&mut self, fd: i32) -> bool {
        self.map.remove(&fd).is_some()
    }
    fn is_tracked(&self, fd: i64) -> bool {
        i32::try_from(fd).is_ok_and(|fd| self.map.contains_key(&fd))
    }
    /// True the first time it is asked for `fd` since the number got its socket.
    fn first_local(&mut self, fd: i32) -> bool {
        self.map
            .get_mut(&fd)
            .is_some_and(|e| std::mem::replace(&mut e.first_local, false))
    }
    pub fn clear(&mut self) {
        self.map.clear();
    }
}

/// What a call needs kept from its entry to its exit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pending {
    pub regs: Regs,
    /// sendfile: where in the source file the bytes start.
    pub offset: i64,
}

/// Pseudo system call numbers naming libc's send() and recv() (sendto and recvfrom without an
/// address), which have no system call of their own on x86-64.
const SEND: i64 = -2;
const RECV: i64 = -3;

/// The call number (`record::CALLS`) naming system call `nr` in records.
fn call_id(nr: i64) -> u16 {
    // A table indexed by system call number (x86-64's socket calls are all below 512), the
    // two pseudo numbers at its end: one load per record, where a map hashed each time.
    const SLOTS: usize = 512;
    let slot = |nr: i64| match nr {
        SEND => Some(SLOTS - 2),
        RECV => Some(SLOTS - 1),
        0..=509 => Some(nr as usize),
        _ => None,
    };
    static IDS: OnceLock<[u16; SLOTS]> = OnceLock::new();
    let ids = IDS.get_or_init(|| {
        let named: &[(i64, &str)] = &[
            (libc::SYS_socket, "socket"),
            (libc::SYS_connect, "connect"),
            (libc::SYS_bind, "bind"),
            (libc::SYS_listen, "listen"),
            (libc::SYS_accept, "accept"),
            (libc::SYS_accept4, "accept4"),
            (libc::SYS_shutdown, "shutdown"),
            (libc::SYS_getsockopt, "getsockopt"),
            (libc::SYS_read, "read"),
            (libc::SYS_write, "write"),
            (libc::SYS_readv, "readv"),
            (libc::SYS_writev, "writev"),
            (libc::SYS_sendto, "sendto"),
            (libc::SYS_recvfrom, "recvfrom"),
            (libc::SYS_sendmsg, "sendmsg"),
            (libc::SYS_recvmsg, "recvmsg"),
            (libc::SYS_sendmmsg, "sendmmsg"),
            (libc::SYS_recvmmsg, "recvmmsg"),
            (libc::SYS_sendfile, "sendfile"),
            (libc::SYS_close, "close"),
            (libc::SYS_close_range, "close_range"),
            (libc::SYS_dup, "dup"),
            (libc::SYS_dup2, "dup2"),
            (libc::SYS_dup3, "dup3"),
            (libc::SYS_fcntl, "fcntl"),
            (libc::SYS_setsockopt, "setsockopt"),
            (libc::SYS_getsockname, "getsockname"),
            (libc::SYS_getpeername, "getpeername"),
            (libc::SYS_ioctl, "ioctl"),
            (SEND, "send"),
            (RECV, "recv"),
        ];
        let mut ids = [0u16; SLOTS];
        for &(nr, name) in named {
            if let (Some(i), Some(id)) = (slot(nr), CALLS.iter().position(|c| *c == name)) {
                ids[i] = id as u16;
            }
        }
        ids
    });
    slot(nr).map_or(0, |i| ids[i])
}

fn rec(kind: Kind, nr: i64, fd: i32) -> Record<'static> {
    let mut r = Record::new(kind);
    r.call = call_id(nr);
    r.fd = fd;
    r
}

/// The kernel restarts these calls (a signal arrived): the program never sees this result.
fn restarting(ret: i64) -> bool {
    matches!(-ret, 512..=514 | 516)
}

/// `(ret, errno)` as libc would return them from the raw result.
fn split(ret: i64) -> (i64, i32) {
    if (-4095..0).contains(&ret) {
        (-1, -ret as i32)
    } else {
        (ret, 0)
    }
}

/// The socket address of `len` bytes at `addr` in the tracee, and its family (-1: none).
fn read_addr(t: &dyn Tracee, addr: u64, len: u64) -> (i32, Option<SocketAddr>) {
    if addr == 0 || len < 2 {
        return (-1, None);
    }
    // SAFETY: sockaddr_storage is plain data; all zeroes is a valid value.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let n = (len as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: a byte view of our own sockaddr_storage, `n` <= its size.
    let buf = unsafe { std::slice::from_raw_parts_mut((&mut st as *mut _) as *mut u8, n) };
    let got = t.read(addr, buf);
    if got < 2 {
        return (-1, None);
    }
    let family = i32::from(st.ss_family);
    // SAFETY: `st` holds `got` bytes read from the tracee, the rest zero.
    let sa = unsafe {
        crate::sockaddr::to_socket_addr((&st as *const _) as *const libc::sockaddr, got as u32)
    };
    (family, sa)
}

fn read_u32(t: &dyn Tracee, addr: u64) -> Option<u32> {
    let mut b = [0u8; 4];
    (t.read(addr, &mut b) == 4).then(|| u32::from_ne_bytes(b))
}

fn read_u64(t: &dyn Tracee, addr: u64) -> Option<u64> {
    let mut b = [0u8; 8];
    (t.read(addr, &mut b) == 8).then(|| u64::from_ne_bytes(b))
}

/// Entries of an iovec array held without allocating: what programs pass, nearly always.
const INLINE_IOVECS: usize = 16;

/// An iovec array read from the tracee: (base, len) pairs, inline when short.
// The inline variant is large on purpose: it lives on the stack for one call, and boxing it
// would be the allocation it is there to avoid.
#[allow(clippy::large_enum_variant)]
enum IoVecs {
    Inline([(u64, u64); INLINE_IOVECS], usize),
    Heap(Vec<(u64, u64)>),
}

impl IoVecs {
    const NONE: IoVecs = IoVecs::Inline([(0, 0); INLINE_IOVECS], 0);
}

impl std::ops::Deref for IoVecs {
    type Target = [(u64, u64)];
    fn deref(&self) -> &[(u64, u64)] {
        match self {
            IoVecs::Inline(a, n) => &a[..*n],
            IoVecs::Heap(v) => v,
        }
    }
}

/// An iovec array of `n` entries at `addr` (1,024 at most, as the kernel's UIO_MAXIOV).
fn read_iovecs(t: &dyn Tracee, addr: u64, n: u64) -> IoVecs {
    let n = n.min(1024) as usize;
    let pair = |c: &[u8]| {
        let w = |o: usize| u64::from_ne_bytes(c[o..o + 8].try_into().unwrap_or([0; 8]));
        (w(0), w(8))
    };
    if n <= INLINE_IOVECS {
        let mut raw = [0u8; INLINE_IOVECS * 16];
        let got = t.read(addr, &mut raw[..n * 16]) / 16;
        let mut a = [(0, 0); INLINE_IOVECS];
        for (v, c) in a.iter_mut().zip(raw[..got * 16].chunks_exact(16)) {
            *v = pair(c);
        }
        return IoVecs::Inline(a, got);
    }
    let mut raw = vec![0u8; n * 16];
    let got = t.read(addr, &mut raw) / 16;
    IoVecs::Heap(raw[..got * 16].chunks_exact(16).map(pair).collect())
}

/// A `struct msghdr` of the tracee (x86-64 layout).
#[derive(Default, Debug)]
struct MsgHdr {
    name: u64,
    namelen: u32,
    iov: u64,
    iovlen: u64,
    control: u64,
    controllen: u64,
    flags: i32,
}

fn read_msghdr(t: &dyn Tracee, addr: u64) -> Option<MsgHdr> {
    let mut b = [0u8; 56];
    if t.read(addr, &mut b) != 56 {
        return None;
    }
    let w = |o: usize| u64::from_ne_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
    Some(MsgHdr {
        name: w(0),
        namelen: w(8) as u32,
        iov: w(16),
        iovlen: w(24),
        control: w(32),
        controllen: w(40),
        flags: w(48) as u32 as i32,
    })
}

/// The descriptors in the SCM_RIGHTS messages of `m`'s control data.
fn rights(t: &dyn Tracee, m: &MsgHdr) -> Vec<i32> {
    let len = (m.controllen as usize).min(64 * 1024);
    if m.control == 0 || len < 16 {
        return Vec::new();
    }
    let mut c = vec![0u8; len];
    let got = t.read(m.control, &mut c);
    c.truncate(got);
    let mut fds = Vec::new();
    let mut off = 0usize;
    while off + 16 <= c.len() {
        let clen = u64::from_ne_bytes(c[off..off + 8].try_into().unwrap_or([0; 8])) as usize;
        let level = i32::from_ne_bytes(c[off + 8..off + 12].try_into().unwrap_or([0; 4]));
        let ty = i32::from_ne_bytes(c[off + 12..off + 16].try_into().unwrap_or([0; 4]));
        if clen < 16 || off + clen > c.len() {
            break;
        }
        if level == libc::SOL_SOCKET && ty == libc::SCM_RIGHTS {
            fds.extend(
                c[off + 16..off + clen]
                    .chunks_exact(4)
                    .map(|b| i32::from_ne_bytes(b.try_into().unwrap_or([0; 4]))),
            );
        }
        off += (clen + 7) & !7;
    }
    fds
}

/// The tracer's view of one process: its sockets.
pub struct Calls<'a> {
    pub fds: &'a mut Fds,
    pub t: &'a dyn Tracee,
    pub pid: i32,
    pub events: bool,
}

/// Where a call goes after its entry stop.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Nothing to see at its exit: let it run.
    Run,
    /// Stop again at its exit, with this kept.
    Exit(Pending),
}

impl Calls<'_> {
    /// At the entry stop of the call in `r`: records that precede the call (a close), and
    /// whether its exit is needed.
    pub fn entry(&mut self, r: &Regs, out: &mut dyn FnMut(&Record, Payload)) -> Next {
        let a = r.args;
        let fd = a[0] as i64;
        let follow = |p| Next::Exit(p);
        let pending = Pending {
            regs: *r,
            offset: 0,
        };
        match r.nr {
            libc::SYS_socket => follow(pending),
            // Descriptors may travel over any socket (a unix one, mostly): a message with
            // control data is followed whatever its socket. Reading the message here is the
            // tracer's own read; a bad pointer only means nothing is followed.
            libc::SYS_sendmsg | libc::SYS_recvmsg
                if self.fds.is_tracked(fd)
                    || read_msghdr(self.t, a[1]).is_some_and(|m| m.controllen > 0) =>
            {
                follow(pending)
            }
            libc::SYS_close => {
                let fd = a[0] as i32;
                if !self.fds.remove(fd) {
                    return Next::Run;
                }
                let mut c = rec(Kind::Close, r.nr, fd);
                // Seen made by this very process: the collector need not ask whose it was.
                c.ret = crate::record::CLOSE_OWN;
                out(&c, Payload::Inline);
                if self.events {
                    follow(pending)
                } else {
                    Next::Run
                }
            }
            libc::SYS_close_range => {
                const CLOSE_RANGE_CLOEXEC: u64 = 1 << 2;
                let (first, last) = (a[0] as u32, a[1] as u32);
                if a[2] & CLOSE_RANGE_CLOEXEC != 0 {
                    // Closed at the next exec, whose scan will not find them.
                    return Next::Run;
                }
                let gone: Vec<i32> = self
                    .fds
                    .map
                    .keys()
                    .copied()
                    .filter(|&f| f as u32 >= first && f as u32 <= last)
                    .collect();
                if gone.is_empty() {
                    return Next::Run;
                }
                for f in gone {
                    self.fds.remove(f);
                }
                let mut rr = rec(Kind::CloseRange, r.nr, -1);
                rr.ret = crate::record::CLOSE_OWN;
                rr.arg0 = i64::from(first);
                rr.arg1 = i64::from(last);
                out(&rr, Payload::Inline);
                Next::Run
            }
            libc::SYS_dup2 | libc::SYS_dup3 => {
                if self.fds.is_tracked(fd) || self.fds.is_tracked(a[1] as i64) {
                    follow(pending)
                } else {
                    Next::Run
                }
            }
            libc::SYS_fcntl => {
                let dupfd = matches!(a[1] as i32, libc::F_DUPFD | libc::F_DUPFD_CLOEXEC);
                if (dupfd || self.events) && self.fds.is_tracked(fd) {
                    follow(pending)
                } else {
                    Next::Run
                }
            }
            libc::SYS_sendfile => {
                if !self.fds.is_tracked(fd) {
                    return Next::Run;
                }
                let (in_fd, offp) = (a[1] as i32, a[2]);
                let offset = if offp != 0 {
                    read_u64(self.t, offp).map_or(-1, |o| o as i64)
                } else {
                    self.t.file_offset(in_fd).unwrap_or(-1)
                };
                follow(Pending { offset, ..pending })
            }
            _ if self.fds.is_tracked(fd) => follow(pending),
            _ => Next::Run,
        }
    }

    /// At the exit stop of a call kept by [`Calls::entry`], which returned `raw`.
    pub fn exit(&mut self, p: &Pending, raw: i64, out: &mut dyn FnMut(&Record, Payload)) {
        let nr = p.regs.nr;
        // A connect interrupted by a signal goes on in the background: the program sees EINTR
        // (or, restarted, a later result), so the capture must know it started.
        let raw = if restarting(raw) && nr == libc::SYS_connect {
            -(libc::EINTR as i64)
        } else if restarting(raw) {
            return;
        } else {
            raw
        };
        let a = p.regs.args;
        let fd = a[0] as i32;
        let (ret, errno) = split(raw);
        match nr {
            libc::SYS_socket => self.socket(nr, a, ret, out),
            libc::SYS_connect => self.connect(nr, fd, a, ret, errno, out),
            libc::SYS_bind if ret != 0 && self.events => {
                // The address is read only where the kernel copied it (as in the hooks).
                let read = matches!(errno, libc::EADDRINUSE | libc::EADDRNOTAVAIL | libc::EACCES);
                let mut r = rec(Kind::Bind, nr, fd);
                r.addr = if read {
                    read_addr(self.t, a[1], a[2]).1
                } else {
                    None
                };
                r.ret = ret;
                r.errno = errno;
                out(&r, Payload::Inline);
            }
            libc::SYS_bind if ret != 0 => {}
            libc::SYS_bind => {
                let mut r = rec(Kind::Bind, nr, fd);
                r.addr = read_addr(self.t, a[1], a[2]).1;
                r.local = self.t.local(fd);
                self.fds.first_local(fd);
                out(&r, Payload::Inline);
            }
            libc::SYS_listen if ret == 0 => {
                let mut r = rec(Kind::Listen, nr, fd);
                r.arg0 = a[1] as i32 as i64;
                out(&r, Payload::Inline);
            }
            libc::SYS_shutdown if ret == 0 => {
                let mut r = rec(Kind::Shutdown, nr, fd);
                r.arg0 = a[1] as i32 as i64;
                out(&r, Payload::Inline);
            }
            libc::SYS_accept | libc::SYS_accept4 if ret >= 0 => {
                let new = ret as i32;
                self.fds.insert(new, Sock::Tcp);
                let info = self.t.socket(new).unwrap_or_default();
                let mut r = rec(Kind::Accept, nr, fd);
                r.ret = ret;
                r.arg0 = if nr == libc::SYS_accept4 {
                    a[3] as i32 as i64
                } else {
                    0
                };
                r.arg1 = info.inode as i64;
                r.local = info.local;
                r.addr = info.peer;
                out(&r, Payload::Inline);
            }
            libc::SYS_getsockopt
                if ret == 0 && a[1] as i32 == libc::SOL_SOCKET && a[2] as i32 == libc::SO_ERROR =>
            {
                if let Some(v) = read_u32(self.t, a[3]) {
                    let mut r = rec(Kind::SoError, nr, fd);
                    r.arg0 = v as i32 as i64;
                    out(&r, Payload::Inline);
                }
            }
            libc::SYS_getsockopt | libc::SYS_setsockopt if self.events => {
                // As the hooks say it: setsockopt's length as given, getsockopt's as the kernel
                // wrote it (0 after a failure); the value is read only after a success.
                let len = match (ret, nr) {
                    (_, libc::SYS_setsockopt) => a[4] as u32,
                    (0, _) => read_u32(self.t, a[4]).unwrap_or(0),
                    _ => 0,
                };
                let mut value = vec![0u8; if ret == 0 { (len as usize).min(64) } else { 0 }];
                let got = self.t.read(a[3], &mut value);
                value.truncate(got);
                let mut r = rec(Kind::SockOpt, nr, fd);
                r.ret = ret;
                r.errno = errno;
                r.arg0 = a[1] as i32 as i64;
                r.arg1 = i64::from(a[2] as u32) | i64::from(len) << 32;
                r.data = &value;
                out(&r, Payload::Inline);
            }
            libc::SYS_getsockname | libc::SYS_getpeername if self.events => {
                let mut r = rec(Kind::SockName, nr, fd);
                r.ret = ret;
                r.errno = errno;
                out(&r, Payload::Inline);
            }
            libc::SYS_ioctl if self.events => {
                let mut r = rec(Kind::FdControl, nr, fd);
                r.arg0 = a[1] as i64;
                r.arg1 = a[2] as i64;
                r.ret = ret;
                r.errno = errno;
                out(&r, Payload::Inline);
            }
            libc::SYS_fcntl
                if self.events && !matches!(a[1] as i32, libc::F_DUPFD | libc::F_DUPFD_CLOEXEC) =>
            {
                let mut r = rec(Kind::FdControl, nr, fd);
                r.arg0 = a[1] as i32 as i64;
                r.arg1 = a[2] as i64;
                r.ret = ret;
                r.errno = errno;
                out(&r, Payload::Inline);
            }
            libc::SYS_close => {
                let mut r = rec(Kind::Closed, nr, fd);
                r.ret = ret;
                r.errno = errno;
                out(&r, Payload::Inline);
            }
            libc::SYS_dup | libc::SYS_dup2 | libc::SYS_dup3 | libc::SYS_fcntl
                if ret >= 0
                    && (nr != libc::SYS_fcntl
                        || matches!(a[1] as i32, libc::F_DUPFD | libc::F_DUPFD_CLOEXEC)) =>
            {
                let new = ret as i32;
                match self.fds.get(fd) {
                    Some(s) => self.fds.insert(new, s),
                    None => {
                        self.fds.remove(new);
                    }
                }
                let mut r = rec(Kind::Dup, nr, fd);
                r.ret = ret;
                match nr {
                    libc::SYS_dup3 => r.arg0 = a[2] as i32 as i64,
                    libc::SYS_fcntl => {
                        r.arg0 = a[1] as i32 as i64;
                        r.arg1 = a[2] as i64;
                    }
                    _ => {}
                }
                out(&r, Payload::Inline);
            }
            libc::SYS_write => {
                let buf = [(a[1], ret.max(0) as u64)];
                let data = Payload::memory(self.t, &buf, ret.max(0) as usize);
                self.send(nr, fd, ret, errno, a[2], 0, None, data, out);
            }
            libc::SYS_sendto => {
                let buf = [(a[1], ret.max(0) as u64)];
                let data = Payload::memory(self.t, &buf, ret.max(0) as usize);
                let dest = if ret >= 0 || errno == libc::EINPROGRESS {
                    read_addr(self.t, a[4], a[5]).1
                } else {
                    None
                };
                // libc's send() is sendto() without an address: named as the program wrote it.
                let named = if a[4] == 0 { SEND } else { nr };
                self.send(named, fd, ret, errno, a[2], a[3] as i32, dest, data, out);
            }
            libc::SYS_writev => {
                let iov = self.plain_vector(nr, fd, a, ret, out);
                let data = Payload::memory(self.t, &iov, ret.max(0) as usize);
                self.send(nr, fd, ret, errno, 0, 0, None, data, out);
            }
            libc::SYS_sendmsg => self.sendmsg(nr, fd, a, ret, errno, out),
            libc::SYS_sendmmsg => {
                for i in 0..ret.max(0) as u64 {
                    let at = a[1] + i * 64;
                    let (Some(m), Some(len)) = (read_msghdr(self.t, at), read_u32(self.t, at + 56))
                    else {
                        break;
                    };
                    let iov = read_iovecs(self.t, m.iov, m.iovlen);
                    let data = Payload::memory(self.t, &iov, len as usize);
                    let dest = read_addr(self.t, m.name, u64::from(m.namelen)).1;
                    self.send(nr, fd, i64::from(len), 0, 0, a[3] as i32, dest, data, out);
                }
                if ret < 0 {
                    self.send(nr, fd, -1, errno, 0, 0, None, Payload::Inline, out);
                }
                if self.events {
                    self.mmsg(nr, fd, a, ret, errno, out);
                }
            }
            libc::SYS_sendfile => {
                let data = if ret > 0 && p.offset >= 0 {
                    Payload::File {
                        t: self.t,
                        fd: a[1] as i32,
                        offset: p.offset,
                        len: ret as usize,
                    }
                } else {
                    Payload::Inline
                };
                self.send(nr, fd, ret, errno, 0, 0, None, data, out);
            }
            libc::SYS_read => {
                let buf = [(a[1], ret.max(0) as u64)];
                let data = Payload::memory(self.t, &buf, ret.max(0) as usize);
                self.recv(nr, fd, ret, errno, a[2] as usize, 0, None, data, out);
            }
            libc::SYS_recvfrom => {
                let flags = a[3] as i32;
                if flags & (libc::MSG_PEEK | libc::MSG_ERRQUEUE) != 0 {
                    return;
                }
                let n = self.filled(fd, ret, a[2] as usize, flags);
                let buf = [(a[1], n as u64)];
                let data = Payload::memory(self.t, &buf, n);
                let src = if ret >= 0 && a[4] != 0 && a[5] != 0 {
                    read_u32(self.t, a[5]).and_then(|l| read_addr(self.t, a[4], u64::from(l)).1)
                } else {
                    None
                };
                // libc's recv() is recvfrom() without an address buffer.
                let named = if a[4] == 0 { RECV } else { nr };
                self.recv(named, fd, ret, errno, a[2] as usize, flags, src, data, out);
            }
            libc::SYS_readv => {
                let iov = self.plain_vector(nr, fd, a, ret, out);
                let asked = iov
                    .iter()
                    .fold(0usize, |s, v| s.saturating_add(v.1 as usize));
                let data = Payload::memory(self.t, &iov, ret.max(0) as usize);
                self.recv(nr, fd, ret, errno, asked, 0, None, data, out);
            }
            libc::SYS_recvmsg => self.recvmsg(nr, fd, a, ret, errno, out),
            libc::SYS_recvmmsg => {
                let flags = a[3] as i32;
                if !self.fds.is_tracked(fd as i64)
                    || flags & (libc::MSG_PEEK | libc::MSG_ERRQUEUE) != 0
                {
                    return;
                }
                for i in 0..ret.max(0) as u64 {
                    let at = a[1] + i * 64;
                    let (Some(m), Some(len)) = (read_msghdr(self.t, at), read_u32(self.t, at + 56))
                    else {
                        break;
                    };
                    self.message_received(nr, fd, &m, i64::from(len), 0, flags, out);
                }
                if ret < 0 {
                    self.recv(nr, fd, -1, errno, 0, flags, None, Payload::Inline, out);
                }
                if self.events {
                    self.mmsg(nr, fd, a, ret, errno, out);
                }
            }
            _ => {}
        }
    }

    /// The buffers of a writev or readv (`a` its arguments) that returned `ret`, with their
    /// event-trace record: after a failure the array may be unreadable or too long, so it is
    /// not read.
    fn plain_vector(
        &self,
        nr: i64,
        fd: i32,
        a: [u64; 6],
        ret: i64,
        out: &mut dyn FnMut(&Record, Payload),
    ) -> IoVecs {
        let iov = if ret >= 0 {
            read_iovecs(self.t, a[1], a[2])
        } else {
            IoVecs::NONE
        };
        if self.events {
            let count = (a[2] as i32).max(0) as u64;
            self.vector(nr, fd, count, &iov, None, None, 0, out);
        }
        iov
    }

    /// The event trace's record of a sendmmsg or recvmmsg as a whole (see `Kind::Mmsg`), after
    /// its messages' records: the messages the kernel handled, read after it reported them.
    fn mmsg(
        &self,
        nr: i64,
        fd: i32,
        a: [u64; 6],
        ret: i64,
        errno: i32,
        out: &mut dyn FnMut(&Record, Payload),
    ) {
        use crate::record::MMSG_SIZES;
        let mut words: Vec<i64> = vec![0, 0];
        if nr == libc::SYS_recvmmsg && ret >= 0 && a[4] != 0 {
            if let (Some(s), Some(ns)) = (read_u64(self.t, a[4]), read_u64(self.t, a[4] + 8)) {
                words = vec![s as i64, ns as i64];
            }
        }
        for i in 0..ret.max(0) as u64 {
            let at = a[1] + i * 64;
            let (Some(m), Some(len)) = (read_msghdr(self.t, at), read_u32(self.t, at + 56)) else {
                break;
            };
            let iov = read_iovecs(self.t, m.iov, m.iovlen);
            let cmsg = self.first_cmsg(&m).map_or(0, |(level, ty)| {
                (1u64 << 63 | u64::from(level as u32) | u64::from(ty as u32 & 0x7fff_ffff) << 32)
                    as i64
            });
            words.extend([
                i64::from(len),
                i64::from(m.flags),
                m.controllen as i64,
                cmsg,
                iov.len() as i64,
            ]);
            words.extend(iov.iter().take(MMSG_SIZES).map(|v| v.1 as i64));
        }
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let mut r = rec(Kind::Mmsg, nr, fd);
        r.ret = ret;
        r.errno = errno;
        r.arg0 = i64::from(a[2] as u32);
        r.arg1 = i64::from(a[3] as i32);
        r.data = &bytes;
        out(&r, Payload::Inline);
    }

    /// The event trace's record of a vectored call's buffers (see `Kind::IoVec`), just before
    /// the call's own record.
    #[allow(clippy::too_many_arguments)]
    fn vector(
        &self,
        nr: i64,
        fd: i32,
        count: u64,
        iov: &[(u64, u64)],
        control: Option<u64>,
        first_cmsg: Option<(i32, i32)>,
        msg_flags: i32,
        out: &mut dyn FnMut(&Record, Payload),
    ) {
        let mut r = rec(Kind::IoVec, nr, fd);
        r.arg0 = count as i64;
        r.arg1 = control.map_or(-1, |c| c as i64);
        r.ret = i64::from(msg_flags);
        if let Some((level, ty)) = first_cmsg {
            r.ssl = 1 << 63 | u64::from(level as u32) | u64::from(ty as u32 & 0x7fff_ffff) << 32;
        }
        let sizes: Vec<u8> = iov
            .iter()
            .take(64)
            .flat_map(|v| v.1.to_ne_bytes())
            .collect();
        r.data = &sizes;
        out(&r, Payload::Inline);
    }

    /// The first control message's level and type, for the event trace.
    fn first_cmsg(&self, m: &MsgHdr) -> Option<(i32, i32)> {
        if m.control == 0 || m.controllen < 16 {
            return None;
        }
        let mut b = [0u8; 16];
        (self.t.read(m.control, &mut b) == 16).then(|| {
            (
                i32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
                i32::from_ne_bytes([b[12], b[13], b[14], b[15]]),
            )
        })
    }

    fn socket(&mut self, nr: i64, a: [u64; 6], ret: i64, out: &mut dyn FnMut(&Record, Payload)) {
        if ret < 0 {
            return;
        }
        let (domain, ty, protocol) = (a[0] as i32, a[1] as i32, a[2] as i32);
        let fd = ret as i32;
        let sock = match ty & 0xf {
            _ if domain != libc::AF_INET && domain != libc::AF_INET6 => None,
            libc::SOCK_STREAM => Some(Sock::Tcp),
            libc::SOCK_DGRAM => Some(Sock::Udp),
            _ => None,
        };
        let Some(sock) = sock else {
            self.fds.remove(fd);
            return;
        };
        self.fds.insert(fd, sock);
        let mut r = rec(Kind::Socket, nr, -1);
        r.ret = ret;
        r.arg0 = super::tracee::socket_inode(self.pid, fd).unwrap_or(0) as i64;
        r.arg1 = i64::from(ty as u32)
            | i64::from(domain as u16) << 32
            | i64::from(protocol as u16) << 48;
        out(&r, Payload::Inline);
    }

    fn connect(
        &mut self,
        nr: i64,
        fd: i32,
        a: [u64; 6],
        ret: i64,
        errno: i32,
        out: &mut dyn FnMut(&Record, Payload),
    ) {
        let (family, remote) = if ret == 0 || crate::sockaddr::connect_read_address(errno) {
            read_addr(self.t, a[1], a[2])
        } else {
            (-1, None)
        };
        let mut r = rec(Kind::Connect, nr, fd);
        r.addr = remote;
        r.ret = ret;
        r.errno = errno;
        r.arg0 = i64::from(family);
        if ret == 0 && family == libc::AF_UNSPEC {
            if let Some(s) = self.fds.get(fd) {
                self.fds.insert(fd, s);
            }
        } else if ret == 0
            || matches!(
                errno,
                libc::EINPROGRESS | libc::EINTR | libc::ECONNREFUSED | libc::ETIMEDOUT
            )
        {
            r.local = self.t.local(fd);
            self.fds.first_local(fd);
        }
        out(&r, Payload::Inline);
    }

    /// Bytes a receive filled (as the hooks count them): none on a stream with MSG_TRUNC.
    fn filled(&self, fd: i32, ret: i64, asked: usize, flags: i32) -> usize {
        if flags & libc::MSG_TRUNC != 0 && self.fds.get(fd) != Some(Sock::Udp) {
            return 0;
        }
        (ret.max(0) as usize).min(asked)
    }

    fn udp_local(&mut self, fd: i32) -> Option<SocketAddr> {
        (self.fds.get(fd) == Some(Sock::Udp) && self.fds.first_local(fd))
            .then(|| self.t.local(fd))
            .flatten()
    }

    #[allow(clippy::too_many_arguments)]
    fn send(
        &mut self,
        nr: i64,
        fd: i32,
        ret: i64,
        errno: i32,
        asked: u64,
        flags: i32,
        dest: Option<SocketAddr>,
        data: Payload,
        out: &mut dyn FnMut(&Record, Payload),
    ) {
        let mut r = rec(Kind::Send, nr, fd);
        r.arg0 = asked as i64;
        r.ret = ret;
        r.errno = errno;
        r.arg1 = i64::from(flags);
        r.addr = dest;
        if ret >= 0 {
            r.local = self.udp_local(fd);
        }
        if dest.is_some()
            && (ret >= 0 || errno == libc::EINPROGRESS)
            && r.local.is_none()
            && self.fds.get(fd) == Some(Sock::Tcp)
            && flags & libc::MSG_FASTOPEN != 0
        {
            r.local = self.t.local(fd);
        }
        out(&r, data);
    }

    #[allow(clippy::too_many_arguments)]
    fn recv(
        &mut self,
        nr: i64,
        fd: i32,
        ret: i64,
        errno: i32,
        asked: usize,
        flags: i32,
        src: Option<SocketAddr>,
        data: Payload,
        out: &mut dyn FnMut(&Record, Payload),
    ) {
        let mut r = rec(Kind::Recv, nr, fd);
        r.ret = ret;
        r.errno = errno;
        r.arg0 = asked as i64;
        r.arg1 = i64::from(flags);
        r.addr = src;
        if ret >= 0 {
            r.local = self.udp_local(fd);
        }
        out(&r, data);
    }

    fn sendmsg(
        &mut self,
        nr: i64,
        fd: i32,
        a: [u64; 6],
        ret: i64,
        errno: i32,
        out: &mut dyn FnMut(&Record, Payload),
    ) {
        let flags = a[2] as i32;
        // Followed for the descriptors it may carry: its bytes only on a followed socket.
        let tracked = self.fds.get(fd).is_some();
        let accepted = ret >= 0 || errno == libc::EINPROGRESS;
        let m = if accepted {
            read_msghdr(self.t, a[1])
        } else {
            None
        };
        let Some(m) = m else {
            if tracked {
                self.send(nr, fd, ret, errno, 0, flags, None, Payload::Inline, out);
            }
            return;
        };
        if ret >= 0 {
            let fds = rights(self.t, &m);
            if fds.iter().any(|&f| self.fds.get(f).is_some()) {
                let bytes: Vec<u8> = fds.iter().take(64).flat_map(|f| f.to_ne_bytes()).collect();
                let mut r = rec(Kind::Passed, nr, fd);
                r.data = &bytes;
                out(&r, Payload::Inline);
            }
        }
        if !tracked {
            return;
        }
        let iov = read_iovecs(self.t, m.iov, m.iovlen);
        if self.events {
            let first = self.first_cmsg(&m);
            self.vector(nr, fd, m.iovlen, &iov, Some(m.controllen), first, 0, out);
        }
        let data = Payload::memory(self.t, &iov, ret.max(0) as usize);
        let dest = read_addr(self.t, m.name, u64::from(m.namelen)).1;
        self.send(nr, fd, ret, errno, 0, flags, dest, data, out);
    }

    fn recvmsg(
        &mut self,
        nr: i64,
        fd: i32,
        a: [u64; 6],
        ret: i64,
        errno: i32,
        out: &mut dyn FnMut(&Record, Payload),
    ) {
        let flags = a[2] as i32;
        let tracked = self.fds.get(fd).is_some();
        if ret < 0 {
            if tracked {
                self.recv(nr, fd, ret, errno, 0, flags, None, Payload::Inline, out);
            }
            return;
        }
        let Some(m) = read_msghdr(self.t, a[1]) else {
            return;
        };
        if tracked {
            if self.events && flags & (libc::MSG_PEEK | libc::MSG_ERRQUEUE) == 0 {
                let iov = read_iovecs(self.t, m.iov, m.iovlen);
                let first = self.first_cmsg(&m);
                self.vector(
                    nr,
                    fd,
                    m.iovlen,
                    &iov,
                    Some(m.controllen),
                    first,
                    m.flags,
                    out,
                );
            }
            self.message_received(nr, fd, &m, ret, errno, flags, out);
        }
        let fds = rights(self.t, &m);
        if fds.is_empty() {
            return;
        }
        let mut bytes = Vec::new();
        for &f in fds.iter().take(64) {
            let Some(info) = self.t.socket(f) else {
                continue;
            };
            let sock = match info.ty {
                _ if info.domain != libc::AF_INET && info.domain != libc::AF_INET6 => None,
                libc::SOCK_STREAM => Some(Sock::Tcp),
                libc::SOCK_DGRAM => Some(Sock::Udp),
                _ => None,
            };
            if let Some(s) = sock {
                self.fds.insert(f, s);
            }
            bytes.extend_from_slice(&i64::from(f).to_ne_bytes());
            bytes.extend_from_slice(&info.inode.to_ne_bytes());
        }
        if !bytes.is_empty() {
            let mut r = rec(Kind::Received, nr, fd);
            r.data = &bytes;
            out(&r, Payload::Inline);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn message_received(
        &mut self,
        nr: i64,
        fd: i32,
        m: &MsgHdr,
        got: i64,
        errno: i32,
        flags: i32,
        out: &mut dyn FnMut(&Record, Payload),
    ) {
        if flags & (libc::MSG_PEEK | libc::MSG_ERRQUEUE) != 0 {
            return;
        }
        let iov = read_iovecs(self.t, m.iov, m.iovlen);
        let asked = iov
            .iter()
            .fold(0usize, |s, v| s.saturating_add(v.1 as usize));
        let n = self.filled(fd, got, asked, flags);
        let data = Payload::memory(self.t, &iov, n);
        let src = read_addr(self.t, m.name, u64::from(m.namelen)).1;
        self.recv(nr, fd, got, errno, asked, flags, src, data, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracer::tracee::SockInfo;
    use std::collections::HashMap;

    /// A stopped process made of memory regions and sockets.
    #[derive(Default)]
    struct Fake {
        mem: Vec<(u64, Vec<u8>)>,
        socks: HashMap<i32, SockInfo>,
    }

    impl Tracee for Fake {
        fn read(&self, addr: u64, buf: &mut [u8]) -> usize {
            for (base, bytes) in &self.mem {
                if addr >= *base && addr < base + bytes.len() as u64 {
                    let off = (addr - base) as usize;
                    let n = buf.len().min(bytes.len() - off);
                    buf[..n].copy_from_slice(&bytes[off..off + n]);
                    return n;
                }
            }
            0
        }
        fn socket(&self, fd: i32) -> Option<SockInfo> {
            self.socks.get(&fd).copied()
        }
        fn local(&self, fd: i32) -> Option<SocketAddr> {
            self.socks.get(&fd).and_then(|s| s.local)
        }
        fn file_bytes(&self, _: i32, _: i64, out: &mut [u8]) -> usize {
            out.fill(b'f');
            out.len()
        }
        fn file_offset(&self, _: i32) -> Option<i64> {
            Some(0)
        }
    }

    /// A record with its payload, kept.
    #[derive(Debug, PartialEq)]
    struct Seen {
        kind: Kind,
        call: &'static str,
        fd: i32,
        ret: i64,
        errno: i32,
        arg0: i64,
        arg1: i64,
        addr: Option<SocketAddr>,
        local: Option<SocketAddr>,
        data: Vec<u8>,
    }

    fn seen(r: &Record, p: Payload) -> Seen {
        let mut data = vec![0xee; p.len(r)];
        p.fill(r, 0, &mut data);
        Seen {
            kind: r.kind,
            call: CALLS[r.call as usize],
            fd: r.fd,
            ret: r.ret,
            errno: r.errno,
            arg0: r.arg0,
            arg1: r.arg1,
            addr: r.addr,
            local: r.local,
            data,
        }
    }

    fn regs(nr: i64, args: &[u64]) -> Regs {
        let mut a = [0u64; 6];
        a[..args.len()].copy_from_slice(args);
        Regs {
            nr,
            args: a,
            ret: 0,
        }
    }

    /// Run one call through entry and exit; `None` when the entry let it run unwatched.
    fn call(fds: &mut Fds, t: &Fake, r: Regs, raw: i64) -> Option<Vec<Seen>> {
        let mut out = Vec::new();
        let mut c = Calls {
            fds,
            t,
            pid: 1,
            events: false,
        };
        let next = c.entry(&r, &mut |r, p| out.push(seen(r, p)));
        match next {
            Next::Run => {
                assert!(out
                    .iter()
                    .all(|s| s.kind == Kind::Close || s.kind == Kind::CloseRange));
                (!out.is_empty()).then_some(out)
            }
            Next::Exit(p) => {
                c.exit(&p, raw, &mut |r, data| out.push(seen(r, data)));
                Some(out)
            }
        }
    }

    #[test]
    fn iovec_arrays_are_read_inline_or_on_the_heap_and_cut_where_unreadable() {
        let mut t = Fake::default();
        let raw: Vec<u8> = (0..20u64)
            .flat_map(|i| [0x9000 + i, i + 1])
            .flat_map(u64::to_ne_bytes)
            .collect();
        t.mem.push((0x8000, raw));
        let want: Vec<(u64, u64)> = (0..20u64).map(|i| (0x9000 + i, i + 1)).collect();
        let short = read_iovecs(&t, 0x8000, 3);
        assert!(matches!(short, IoVecs::Inline(..)));
        assert_eq!(&short[..], &want[..3]);
        let long = read_iovecs(&t, 0x8000, 20);
        assert!(matches!(long, IoVecs::Heap(..)));
        assert_eq!(&long[..], &want[..]);
        assert_eq!(
            &read_iovecs(&t, 0x8000 + 15 * 16, 16)[..],
            &want[15..],
            "cut"
        );
        assert_eq!(&read_iovecs(&t, 0x8000 + 2 * 16, 30)[..], &want[2..], "cut");
        assert!(read_iovecs(&t, 0x100, 4).is_empty());
    }

    #[test]
    fn call_numbers_name_the_calls_and_others_name_none() {
        let name = |nr| CALLS[call_id(nr) as usize];
        assert_eq!(name(libc::SYS_write), "write");
        assert_eq!(name(libc::SYS_close_range), "close_range");
        assert_eq!(name(SEND), "send");
        assert_eq!(name(RECV), "recv");
        assert_eq!(call_id(libc::SYS_getpid), 0);
        assert_eq!(call_id(100_000), 0);
        assert_eq!(call_id(-1), 0);
    }

    const SIN: &[u8] = &[2, 0, 0x1f, 0x90, 127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];

    fn addr(s: &str) -> Option<SocketAddr> {
        s.parse().ok()
    }

    #[test]
    fn connect_send_recv_close_make_the_recorders_records() {
        let mut fds = Fds::default();
        fds.insert(3, Sock::Tcp);
        let mut t = Fake::default();
        t.mem.push((0x1000, SIN.to_vec()));
        t.mem.push((0x2000, b"GET / HTTP/1.0\r\n\r\n".to_vec()));
        t.mem.push((0x3000, b"HTTP/1.0 200 OK\r\n".to_vec()));
        t.socks.insert(
            3,
            SockInfo {
                local: addr("127.0.0.1:40000"),
                ..SockInfo::default()
            },
        );
        let connect = call(&mut fds, &t, regs(libc::SYS_connect, &[3, 0x1000, 16]), 0);
        assert_eq!(
            connect,
            Some(vec![Seen {
                kind: Kind::Connect,
                call: "connect",
                fd: 3,
                ret: 0,
                errno: 0,
                arg0: libc::AF_INET as i64,
                arg1: 0,
                addr: addr("127.0.0.1:8080"),
                local: addr("127.0.0.1:40000"),
                data: vec![],
            }])
        );
        let sent = call(&mut fds, &t, regs(libc::SYS_write, &[3, 0x2000, 18]), 18).expect("a send");
        assert_eq!(
            (
                sent[0].kind,
                sent[0].call,
                sent[0].ret,
                sent[0].arg0,
                &sent[0].data[..]
            ),
            (Kind::Send, "write", 18, 18, &b"GET / HTTP/1.0\r\n\r\n"[..])
        );
        // recvfrom without an address (libc's recv) filled 17 of the 4096 bytes asked.
        let got = call(
            &mut fds,
            &t,
            regs(libc::SYS_recvfrom, &[3, 0x3000, 4096, 0, 0, 0]),
            17,
        )
        .expect("a receive");
        assert_eq!(
            (
                got[0].kind,
                got[0].call,
                got[0].ret,
                got[0].arg0,
                &got[0].data[..]
            ),
            (Kind::Recv, "recv", 17, 4096, &b"HTTP/1.0 200 OK\r\n"[..])
        );
        let close = call(&mut fds, &t, regs(libc::SYS_close, &[3]), 0).expect("a close");
        assert_eq!((close[0].kind, close[0].fd), (Kind::Close, 3));
        assert_eq!(fds.get(3), None, "the number is free again");
        // The number no longer names a socket: its calls run unwatched.
        assert_eq!(
            call(&mut fds, &t, regs(libc::SYS_write, &[3, 0x2000, 18]), 18),
            None
        );
    }

    #[test]
    fn a_failed_call_reads_nothing_and_keeps_its_errno() {
        let mut fds = Fds::default();
        fds.insert(3, Sock::Tcp);
        let t = Fake::default();
        // EFAULT: the buffer was bad; nothing is read (the fake has no memory anyway).
        let r = call(
            &mut fds,
            &t,
            regs(libc::SYS_write, &[3, 0xdead, 10]),
            -(libc::EFAULT as i64),
        )
        .expect("a send");
        assert_eq!(
            (r[0].ret, r[0].errno, r[0].data.len()),
            (-1, libc::EFAULT, 0)
        );
        // A refused connect: the address was copied, so it is read.
        let mut t = Fake::default();
        t.mem.push((0x1000, SIN.to_vec()));
        let r = call(
            &mut fds,
            &t,
            regs(libc::SYS_connect, &[3, 0x1000, 16]),
            -(libc::ECONNREFUSED as i64),
        )
        .expect("a connect");
        assert_eq!(
            (r[0].ret, r[0].errno, r[0].addr),
            (-1, libc::ECONNREFUSED, addr("127.0.0.1:8080"))
        );
        // Interrupted and restarted by the kernel: the program never sees it, nor does the capture.
        assert_eq!(
            call(&mut fds, &t, regs(libc::SYS_read, &[3, 0, 10]), -512),
            Some(vec![])
        );
    }

    #[test]
    fn sockets_dups_and_unwatched_descriptors() {
        let mut fds = Fds::default();
        let t = Fake::default();
        let s = call(
            &mut fds,
            &t,
            regs(
                libc::SYS_socket,
                &[
                    libc::AF_INET6 as u64,
                    libc::SOCK_DGRAM as u64 | libc::SOCK_CLOEXEC as u64,
                    0,
                ],
            ),
            5,
        )
        .expect("a socket");
        assert_eq!((s[0].kind, s[0].ret), (Kind::Socket, 5));
        assert_eq!(s[0].arg1 as u32 as i32 & 0xf, libc::SOCK_DGRAM);
        assert_eq!((s[0].arg1 >> 32) as u16 as i32, libc::AF_INET6);
        assert_eq!(fds.get(5), Some(Sock::Udp));
        // A unix socket is not followed.
        let u = call(
            &mut fds,
            &t,
            regs(
                libc::SYS_socket,
                &[libc::AF_UNIX as u64, libc::SOCK_STREAM as u64, 0],
            ),
            6,
        );
        assert_eq!(u, Some(vec![]));
        assert_eq!(
            call(&mut fds, &t, regs(libc::SYS_read, &[6, 0, 10]), 3),
            None
        );
        // dup2 onto a socket number, from a file: the socket's number now names the file.
        let d = call(&mut fds, &t, regs(libc::SYS_dup2, &[7, 5]), 5).expect("a dup");
        assert_eq!((d[0].kind, d[0].fd, d[0].ret), (Kind::Dup, 7, 5));
        assert_eq!(fds.get(5), None);
        // fcntl(F_DUPFD) of a socket.
        fds.insert(8, Sock::Tcp);
        let d = call(
            &mut fds,
            &t,
            regs(libc::SYS_fcntl, &[8, libc::F_DUPFD_CLOEXEC as u64, 10]),
            10,
        )
        .expect("a dup");
        assert_eq!((d[0].arg0, d[0].arg1), (libc::F_DUPFD_CLOEXEC as i64, 10));
        assert_eq!(fds.get(10), Some(Sock::Tcp));
        // close_range marking close-on-exec closes nothing.
        assert_eq!(
            call(
                &mut fds,
                &t,
                regs(libc::SYS_close_range, &[0, u32::MAX as u64, 1 << 2]),
                0
            ),
            None
        );
        let c = call(
            &mut fds,
            &t,
            regs(libc::SYS_close_range, &[9, u32::MAX as u64, 0]),
            0,
        )
        .expect("a close_range");
        assert_eq!(
            (c[0].kind, c[0].arg0, c[0].arg1),
            (Kind::CloseRange, 9, u32::MAX as i64)
        );
        assert_eq!((fds.get(8), fds.get(10)), (Some(Sock::Tcp), None));
    }

    #[test]
    fn messages_gather_their_vectors_and_carry_descriptors() {
        let mut fds = Fds::default();
        fds.insert(3, Sock::Udp);
        let mut t = Fake::default();
        // msghdr at 0x1000: name 0x2000 (16 bytes), iov 0x3000 x2, control 0x4000 (24 bytes).
        let mut m = Vec::new();
        for w in [0x2000u64, 16, 0x3000, 2, 0x4000, 24, 0] {
            m.extend_from_slice(&w.to_ne_bytes());
        }
        t.mem.push((0x1000, m));
        t.mem.push((0x2000, SIN.to_vec()));
        let mut iov = Vec::new();
        for w in [0x5000u64, 3, 0x6000, 10] {
            iov.extend_from_slice(&w.to_ne_bytes());
        }
        t.mem.push((0x3000, iov));
        t.mem.push((0x5000, b"abc".to_vec()));
        t.mem.push((0x6000, b"defghijklm".to_vec()));
        let mut cmsg = Vec::new();
        cmsg.extend_from_slice(&20u64.to_ne_bytes());
        cmsg.extend_from_slice(&libc::SOL_SOCKET.to_ne_bytes());
        cmsg.extend_from_slice(&libc::SCM_RIGHTS.to_ne_bytes());
        cmsg.extend_from_slice(&9i32.to_ne_bytes());
        cmsg.extend_from_slice(&[0; 4]);
        t.mem.push((0x4000, cmsg));
        t.socks.insert(
            9,
            SockInfo {
                inode: 77,
                domain: libc::AF_INET,
                ty: libc::SOCK_STREAM,
                ..SockInfo::default()
            },
        );
        let r = call(&mut fds, &t, regs(libc::SYS_recvmsg, &[3, 0x1000, 0]), 5).expect("records");
        assert_eq!(
            (r[0].kind, &r[0].data[..], r[0].addr),
            (Kind::Recv, &b"abcde"[..], addr("127.0.0.1:8080"))
        );
        assert_eq!(r[0].arg0, 13, "the vector's room");
        assert_eq!(r[1].kind, Kind::Received);
        let mut pair = 9i64.to_ne_bytes().to_vec();
        pair.extend_from_slice(&77u64.to_ne_bytes());
        assert_eq!(r[1].data, pair);
        assert_eq!(
            fds.get(9),
            Some(Sock::Tcp),
            "the received socket is followed"
        );
        // The same message on a unix socket (fd 4, not followed): the passed socket only.
        let u = call(&mut fds, &t, regs(libc::SYS_sendmsg, &[4, 0x1000, 0]), 13).expect("records");
        assert_eq!(u.len(), 1, "{u:?}");
        assert_eq!(u[0].kind, Kind::Passed);
        let s = call(&mut fds, &t, regs(libc::SYS_sendmsg, &[3, 0x1000, 0]), 13).expect("records");
        assert_eq!(s[0].kind, Kind::Passed, "a followed socket passed on");
        assert_eq!(s[0].data, 9i32.to_ne_bytes());
        assert_eq!(
            (s[1].kind, &s[1].data[..]),
            (Kind::Send, &b"abcdefghijklm"[..])
        );
        assert_eq!(s[1].addr, addr("127.0.0.1:8080"));
    }
}
