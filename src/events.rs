//! What each intercepted call records: the hooks call these after the real call, inside
//! [`record`], and each builds one record for the collector (see `recorder`). Nothing here
//! interprets a call; that is the collector's job.

use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::record::{Kind, Record};
use crate::recorder::{self, kind};
use crate::{guard, sys, tls};

pub use crate::recorder::{Payload, NOTHING};

/// Whether `fd` is a socket whose calls are recorded (the hot-path test: one atomic load).
#[inline]
pub fn is_tracked(fd: i32) -> bool {
    recorder::is_tracked(fd)
}

/// Whether the calls only event traces need are recorded (one relaxed load: the whole cost of
/// their hooks in a run without `--events`).
#[inline]
pub fn events_on() -> bool {
    recorder::EVENTS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Run `f` with `errno` preserved and any panic contained.
pub fn record(f: impl FnOnce()) {
    let saved = sys::errno();
    let _ = catch_unwind(AssertUnwindSafe(f));
    sys::set_errno(saved);
}

fn rec(kind: Kind, fd: i32) -> Record<'static> {
    let mut r = Record::new(kind);
    r.fd = fd;
    r.call = guard::call_id();
    r
}

fn emit(r: &Record) {
    recorder::emit(r, 0, &NOTHING);
}

/// `socket(domain, ty, protocol)` returned `fd`: record it if it is an IPv4/IPv6 stream or
/// datagram socket.
pub fn on_socket(fd: i32, domain: i32, ty: i32, protocol: i32) {
    let k = match ty & 0xf {
        _ if domain != libc::AF_INET && domain != libc::AF_INET6 => kind::OTHER,
        libc::SOCK_STREAM => kind::TCP,
        libc::SOCK_DGRAM => kind::UDP,
        _ => kind::OTHER,
    };
    if k == kind::OTHER {
        return on_new_fds(&[fd]);
    }
    recorder::set_kind(fd, k);
    let mut r = rec(Kind::Socket, -1);
    r.ret = fd as i64;
    // The socket's identity, so that the collector can follow it across processes.
    r.arg0 = sys::fstat(fd).map_or(0, |st| st.st_ino as i64);
    // The type with its flags in the low 32 bits (what the packets need), then the domain and
    // the protocol, 16 bits each, for the event trace's `sock_info`: one field, no larger record.
    r.arg1 =
        i64::from(ty as u32) | i64::from(domain as u16) << 32 | i64::from(protocol as u16) << 48;
    emit(&r);
}

/// `connect(fd, remote)` returned `ret` with `errno`.
///
/// `family` is the caller's address family (-1 when it could not be read): AF_UNSPEC dissolves
/// the socket's association, and a later connect or Fast Open send makes a new one.
pub fn on_connect(fd: i32, family: i32, remote: Option<SocketAddr>, ret: i32, errno: i32) {
    let mut r = rec(Kind::Connect, fd);
    r.addr = remote;
    r.ret = ret as i64;
    r.errno = errno;
    r.arg0 = family as i64;
    if ret == 0 && family == libc::AF_UNSPEC {
        // The local address is asked again with the next association.
        recorder::set_kind(fd, recorder::kind_of(fd));
    } else if ret == 0 || errno == libc::EINPROGRESS || errno == libc::EINTR {
        // The port the kernel just chose: asked once per connection.
        r.local = sys::local_addr(fd);
        recorder::first_local(fd);
    } else if errno == libc::ECONNREFUSED || errno == libc::ETIMEDOUT {
        // A blocking connect whose SYN was refused or never answered: the kernel has reset
        // the socket's address to the wildcard but still reports the port the SYN left from.
        r.local = sys::local_addr(fd);
    }
    emit(&r);
}

/// `bind(fd, requested)` returned `ret` (with `errno`): failures are recorded for the event
/// traces only (see `after::bind`).
pub fn on_bind(fd: i32, requested: Option<SocketAddr>, ret: i32, errno: i32) {
    let mut r = rec(Kind::Bind, fd);
    r.addr = requested;
    r.ret = ret as i64;
    r.errno = errno;
    if ret == 0 {
        r.local = sys::local_addr(fd);
        recorder::first_local(fd);
    }
    emit(&r);
}

/// `listen(fd, backlog)` succeeded.
pub fn on_listen(fd: i32, backlog: i32) {
    let mut r = rec(Kind::Listen, fd);
    r.arg0 = backlog as i64;
    emit(&r);
}

/// `accept(listener)` or `accept4(listener, …, flags)` (0 for accept) returned `fd`.
pub fn on_accept(listener: i32, fd: i32, flags: i32) {
    recorder::set_kind(fd, kind::TCP);
    let mut r = rec(Kind::Accept, listener);
    r.arg0 = flags as i64;
    r.ret = fd as i64;
    r.local = sys::local_addr(fd);
    r.addr = sys::peer_addr(fd);
    r.arg1 = sys::fstat(fd).map_or(0, |st| st.st_ino as i64);
    emit(&r);
}

/// `shutdown(fd, how)` succeeded.
pub fn on_shutdown(fd: i32, how: i32) {
    let mut r = rec(Kind::Shutdown, fd);
    r.arg0 = how as i64;
    emit(&r);
}

/// `close(fd)` is about to run. The number keeps its kind: a vfork child's close must not
/// change what its parent's hooks believe (the collector checks whose close it was).
pub fn on_close(fd: i32) {
    let mut r = rec(Kind::Close, fd);
    r.ret = close_maker();
    emit(&r);
}

/// Who makes a close, for the collector: [`record::CLOSE_BY_VFORK_CHILD`] or 0 (the process
/// itself, as far as the library knows).
fn close_maker() -> i64 {
    if recorder::vfork_child() {
        crate::record::CLOSE_BY_VFORK_CHILD
    } else {
        0
    }
}

/// `close(fd)` returned `ret` (with `errno`): for the event trace only, after [`on_close`].
pub fn on_closed(fd: i32, ret: i32, errno: i32) {
    let mut r = rec(Kind::Closed, fd);
    r.ret = ret as i64;
    r.errno = errno;
    emit(&r);
}

/// `close_range(first, last)` or `closefrom(first)` is about to close every descriptor in range.
pub fn on_close_range(first: u32, last: u32) {
    let mut r = rec(Kind::CloseRange, -1);
    r.ret = close_maker();
    r.arg0 = first as i64;
    r.arg1 = last as i64;
    emit(&r);
}

/// `dup`, `dup2`, `dup3` or `fcntl(F_DUPFD…)` made `new` a copy of `old`.
pub fn on_dup(old: i32, new: i32) {
    on_dup_with(old, new, 0, 0)
}

/// As [`on_dup`], with the call's own arguments for the event trace: dup3's flags (`a`), or
/// fcntl's command (`a`) and argument (`b`).
pub fn on_dup_with(old: i32, new: i32, a: i64, b: i64) {
    let k = recorder::kind_of(old);
    let replaced = recorder::kind_of(new);
    recorder::set_kind(new, k);
    if is_socket_kind(k) || is_socket_kind(replaced) {
        let mut r = rec(Kind::Dup, old);
        r.ret = new as i64;
        r.arg0 = a;
        r.arg1 = b;
        emit(&r);
    }
}

fn is_socket_kind(k: u8) -> bool {
    matches!(k, kind::TCP | kind::UDP | kind::RECEIVED)
}

/// A call that creates descriptors returned `fds`: the numbers now name something else.
pub fn on_new_fds(fds: &[i32]) {
    let mut stale = false;
    for &fd in fds {
        stale |= is_socket_kind(recorder::kind_of(fd));
        recorder::set_kind(fd, kind::OTHER);
    }
    if stale {
        let mut r = rec(Kind::NewFd, -1);
        r.ret = fds.first().copied().unwrap_or(-1) as i64;
        r.arg0 = fds.get(1).copied().unwrap_or(-1) as i64;
        emit(&r);
    }
}

/// Descriptors that arrived in an SCM_RIGHTS message on `fd`: whatever the numbers named
/// before is gone. Sockets among them are recorded from now on and reported; the collector
/// finds out from outside which are internet sockets. Only `fstat` is asked here: the receiver
/// may be sandboxed (Chromium's renderers are killed for `getsockname`).
pub fn on_received_fds(fd: i32, fds: &[i32]) {
    on_new_fds(fds);
    // (descriptor, inode) pairs, 16 bytes each.
    let mut bytes = [0u8; 16 * 64];
    let mut n = 0;
    for &f in fds {
        let Ok(st) = sys::fstat(f) else { continue };
        if st.st_mode & libc::S_IFMT == libc::S_IFSOCK && n < 64 {
            recorder::set_kind(f, kind::RECEIVED);
            bytes[n * 16..n * 16 + 8].copy_from_slice(&i64::from(f).to_ne_bytes());
            bytes[n * 16 + 8..n * 16 + 16].copy_from_slice(&st.st_ino.to_ne_bytes());
            n += 1;
        }
    }
    if n > 0 {
        let r = rec(Kind::Received, fd);
        recorder::emit(&r, n * 16, &&bytes[..n * 16]);
    }
}

/// Descriptors sent in an SCM_RIGHTS message on `fd`.
pub fn on_passed_fds(fd: i32, fds: &[i32]) {
    if !fds.iter().any(|&f| is_socket_kind(recorder::kind_of(f))) {
        return;
    }
    let mut bytes = [0u8; 4 * 64];
    let n = fds.len().min(64);
    for (i, f) in fds[..n].iter().enumerate() {
        bytes[i * 4..i * 4 + 4].copy_from_slice(&f.to_ne_bytes());
    }
    let r = rec(Kind::Passed, fd);
    recorder::emit(&r, n * 4, &&bytes[..n * 4]);
}

/// `sendfile` sent `sent` bytes of `in_fd` starting at `offset` to the socket `out`: the bytes
/// are read back with pread (which leaves the file's offset alone) straight into the record,
/// through a small buffer on the stack: no allocation in the program.
pub fn on_sendfile(out: i32, in_fd: i32, offset: i64, sent: usize) {
    let file = FileBytes {
        fd: in_fd,
        offset,
        len: sent,
    };
    on_send_result(out, sent as isize, 0, 0, &file, None);
}

/// `len` bytes of file `fd` from `offset`, read when the record is written.
struct FileBytes {
    fd: i32,
    offset: i64,
    len: usize,
}

impl Payload for FileBytes {
    fn for_each_piece(&self, f: &mut dyn FnMut(&[u8])) {
        let mut buf = [0u8; 4096];
        let mut done = 0usize;
        while done < self.len {
            let want = (self.len - done).min(buf.len());
            match sys::pread(self.fd, &mut buf[..want], self.offset + done as i64) {
                // The file shrank since the kernel sent it: the record keeps the length the
                // kernel reported, its missing tail zero (recorder::emit).
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    f(&buf[..n]);
                    done += n;
                }
            }
        }
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// `getsockopt(fd, SOL_SOCKET, SO_ERROR)` reported `value`.
pub fn on_so_error(fd: i32, value: i32) {
    let mut r = rec(Kind::SoError, fd);
    r.arg0 = value as i64;
    emit(&r);
}

/// `setsockopt` or `getsockopt(fd, level, name)` returned `ret` (with `errno`); `value` is the
/// option as the kernel read or wrote it (`len` bytes; empty when the call failed).
pub fn on_sockopt(fd: i32, level: i32, name: i32, len: u32, value: &[u8], ret: i32, errno: i32) {
    /// Enough for every option tcpsnitch decodes (a timeval, a linger, an int).
    const MAX_VALUE: usize = 64;
    let mut r = rec(Kind::SockOpt, fd);
    r.ret = ret as i64;
    r.errno = errno;
    r.arg0 = level as i64;
    r.arg1 = i64::from(name as u32) | i64::from(len) << 32;
    let head = &value[..value.len().min(MAX_VALUE)];
    recorder::emit(&r, head.len(), &head);
}

/// The buffers of a vectored call on `fd` (writev, readv, sendmsg, recvmsg), recorded for the
/// event trace just before the call's own record: `count` buffers, of `sizes` (empty when the
/// vector was not read); for a message, its control data's length (`None` for writev/readv),
/// the first control message's level and type, and recvmsg's returned flags.
pub fn on_iovec(
    fd: i32,
    count: usize,
    sizes: &[libc::iovec],
    control: Option<usize>,
    first_cmsg: Option<(i32, i32)>,
    msg_flags: i32,
) {
    const MAX: usize = 64;
    let mut r = rec(Kind::IoVec, fd);
    r.arg0 = count as i64;
    r.arg1 = control.map_or(-1, |c| c as i64);
    r.ret = msg_flags as i64;
    if let Some((level, ty)) = first_cmsg {
        r.ssl = 1 << 63 | u64::from(level as u32) | u64::from(ty as u32 & 0x7fff_ffff) << 32;
    }
    let mut bytes = [0u8; 8 * MAX];
    let n = sizes.len().min(MAX);
    for (i, v) in sizes[..n].iter().enumerate() {
        bytes[i * 8..i * 8 + 8].copy_from_slice(&(v.iov_len as u64).to_ne_bytes());
    }
    recorder::emit(&r, n * 8, &&bytes[..n * 8]);
}

/// `fcntl(fd, cmd, arg)` or `ioctl(fd, cmd, arg)` returned `ret` (with `errno`), recorded for
/// the event traces only. `arg` is the argument as a number, never followed as a pointer.
pub fn on_fd_control(fd: i32, cmd: i64, arg: i64, ret: i32, errno: i32) {
    let mut r = rec(Kind::FdControl, fd);
    r.arg0 = cmd;
    r.arg1 = arg;
    r.ret = ret as i64;
    r.errno = errno;
    emit(&r);
}

/// Socket `fd` was in the set of a poll, ppoll, select or pselect that returned `ret` (>= 0):
/// `asked` and `got` are its requested and returned events, `timeout` the call's (seconds,
/// nanoseconds). Recorded for the event traces only.
pub fn on_ready(fd: i32, ret: i32, asked: u16, got: u16, timeout: (i64, i64)) {
    let mut r = rec(Kind::Ready, fd);
    r.ret = ret as i64;
    r.arg0 = i64::from(asked) | i64::from(got) << 16;
    r.arg1 = timeout.0;
    r.ssl = timeout.1 as u64;
    emit(&r);
}

/// `epoll_ctl(epfd, op, fd, …)` on socket `fd` returned `ret` (with `errno`); `event` the
/// events and data the kernel read (`None` when it read nothing).
pub fn on_epoll_ctl(epfd: i32, op: i32, fd: i32, event: Option<(u32, u64)>, ret: i32, errno: i32) {
    let mut r = rec(Kind::EpollCtl, fd);
    r.ret = ret as i64;
    r.errno = errno;
    r.arg0 = i64::from(op as u32) | i64::from(epfd) << 32;
    if let Some((events, data)) = event {
        r.arg1 = i64::from(events);
        r.ssl = data;
    }
    emit(&r);
}

/// epoll_wait or epoll_pwait on `epfd` (timeout `timeout` ms) returned `events`, the array as
/// the kernel filled it.
pub fn on_epoll_wait(epfd: i32, timeout: i32, events: &[u8]) {
    let mut r = rec(Kind::EpollWait, epfd);
    r.ret = (events.len() / std::mem::size_of::<libc::epoll_event>()) as i64;
    r.arg0 = timeout as i64;
    recorder::emit(&r, events.len(), &events);
}

/// sockatmark, isfdtype (`arg` the type asked about) or fdopen (`mode` its mode) on socket
/// `fd` returned `ret` (with `errno`).
pub fn on_sock_call(fd: i32, arg: i64, mode: &[u8], ret: i32, errno: i32) {
    let mut r = rec(Kind::SockCall, fd);
    r.ret = ret as i64;
    r.errno = errno;
    r.arg0 = arg;
    recorder::emit(&r, mode.len(), &mode);
}

/// One message of a sendmmsg or recvmmsg, for [`on_mmsg`].
pub struct MmsgEntry<'a> {
    pub len: u32,
    pub flags: i32,
    pub control_len: usize,
    /// The first control message's level and type.
    pub first_cmsg: Option<(i32, i32)>,
    pub iov: &'a [libc::iovec],
}

/// Words a [`Kind::Mmsg`] record holds at most (its timeout and its messages), on the stack.
const MMSG_WORDS: usize = 512;

/// A sendmmsg or recvmmsg on `fd` (`asked` messages, `flags`) returned `ret` (with `errno`):
/// `timeout` is recvmmsg's, `messages` yields the messages the kernel handled.
pub fn on_mmsg<'a>(
    fd: i32,
    asked: u32,
    flags: i32,
    ret: i32,
    errno: i32,
    timeout: (i64, i64),
    messages: impl Iterator<Item = MmsgEntry<'a>>,
) {
    use crate::record::MMSG_SIZES;
    let mut r = rec(Kind::Mmsg, fd);
    r.ret = ret as i64;
    r.errno = errno;
    r.arg0 = i64::from(asked);
    r.arg1 = i64::from(flags);
    // One buffer on the stack, written word by word (hooks never allocate).
    let mut bytes = [0u8; 8 * MMSG_WORDS];
    let mut n = 0;
    let mut push = |w: i64| {
        bytes[n * 8..n * 8 + 8].copy_from_slice(&w.to_ne_bytes());
        n += 1;
    };
    push(timeout.0);
    push(timeout.1);
    let mut used = 2;
    for m in messages {
        let sizes = m.iov.len().min(MMSG_SIZES);
        if used + 5 + sizes > MMSG_WORDS {
            break;
        }
        used += 5 + sizes;
        let cmsg = m.first_cmsg.map_or(0, |(level, ty)| {
            (1u64 << 63 | u64::from(level as u32) | u64::from(ty as u32 & 0x7fff_ffff) << 32) as i64
        });
        push(i64::from(m.len));
        push(i64::from(m.flags));
        push(m.control_len as i64);
        push(cmsg);
        push(m.iov.len() as i64);
        for v in &m.iov[..sizes] {
            push(v.iov_len as i64);
        }
    }
    recorder::emit(&r, used * 8, &&bytes[..used * 8]);
}

/// `getsockname` or `getpeername(fd)` returned `ret` (with `errno`).
pub fn on_sockname(fd: i32, ret: i32, errno: i32) {
    let mut r = rec(Kind::SockName, fd);
    r.ret = ret as i64;
    r.errno = errno;
    emit(&r);
}

/// Whether `fd` is a recorded datagram socket (receivers then ask the kernel for the source).
pub fn is_datagram(fd: i32) -> bool {
    recorder::kind_of(fd) == kind::UDP
}

/// A UDP socket's local address, recorded with its first datagram (autobound at the first send).
fn first_udp_local(fd: i32) -> Option<SocketAddr> {
    (is_datagram(fd) && recorder::first_local(fd))
        .then(|| sys::local_addr(fd))
        .flatten()
}

/// A TCP socket's local address after a send with MSG_FASTOPEN, which connects it. Asked at
/// each such send, not once per socket: a `bind` before it has already used the once (and a
/// Fast Open send on a connected socket fails with EISCONN, so each success is a connect).
fn fast_open_local(fd: i32, flags: i32) -> Option<SocketAddr> {
    (recorder::kind_of(fd) == kind::TCP && flags & libc::MSG_FASTOPEN != 0)
        .then(|| sys::local_addr(fd))
        .flatten()
}

/// A send call on `fd` with MSG_* `flags` returned `ret` (with `errno` when negative).
pub fn on_send_result(
    fd: i32,
    ret: isize,
    errno: i32,
    flags: i32,
    data: &dyn Payload,
    dest: Option<SocketAddr>,
) {
    on_send_asked(fd, ret, 0, errno, flags, data, dest)
}

/// As [`on_send_result`], for a call that asked to send `requested` bytes (write, send, sendto:
/// the event trace's `bytes`; 0 where the hook does not say, and the trace shows what moved).
pub fn on_send_asked(
    fd: i32,
    ret: isize,
    requested: usize,
    errno: i32,
    flags: i32,
    data: &dyn Payload,
    dest: Option<SocketAddr>,
) {
    let mut r = rec(Kind::Send, fd);
    r.arg0 = requested as i64;
    r.ret = ret as i64;
    r.errno = errno;
    r.arg1 = flags as i64;
    r.addr = dest;
    r.ssl = tls::current() as u64;
    if ret >= 0 {
        r.local = first_udp_local(fd);
    }
    if dest.is_some() && (ret >= 0 || errno == libc::EINPROGRESS) && r.local.is_none() {
        // A TCP send with MSG_FASTOPEN connects: the port the kernel chose.
        r.local = fast_open_local(fd, flags);
    }
    recorder::emit(&r, ret.max(0) as usize, data);
}

/// A receive call on `fd` with MSG_* `flags` that asked for `requested` bytes returned `ret`
/// (with `errno` when negative); `data` are the bytes it filled and `src` the sender it reported.
pub fn on_receive_result(
    fd: i32,
    ret: isize,
    requested: usize,
    errno: i32,
    flags: i32,
    data: &dyn Payload,
    src: Option<SocketAddr>,
) {
    let mut r = rec(Kind::Recv, fd);
    r.ret = ret as i64;
    r.errno = errno;
    r.arg0 = requested as i64;
    r.arg1 = flags as i64;
    r.addr = src;
    r.ssl = tls::current() as u64;
    if ret >= 0 {
        r.local = first_udp_local(fd);
    }
    let filled = data.len();
    recorder::emit(&r, filled, data);
}

/// An I/O call on `fd` failed with `errno` (a pending connect may have been refused).
pub fn on_io_error(fd: i32, errno: i32) {
    on_send_result(fd, -1, errno, 0, &NOTHING, None);
}

/// An SSL call on object `ssl` found its descriptor with `SSL_get_fd` (or NSPR's native handle).
/// Recorded in every mode, as are the BIO records below: in raw mode too the collector must know
/// which connections a hooked library runs, to tell the TLS of a library it cannot see.
pub fn on_tls_fd(ssl: usize, fd: i32) {
    if fd < 0 {
        return;
    }
    let mut r = rec(Kind::TlsFd, fd);
    r.ssl = ssl as u64;
    emit(&r);
}

/// Plaintext that `ssl` wrote (`side` Local) or read (`side` Remote).
pub fn on_tls_data(ssl: usize, side: synth::Side, data: &[u8]) {
    if !tls::mode().decrypts() || data.is_empty() {
        return;
    }
    let mut r = rec(Kind::TlsData, -1);
    r.ssl = ssl as u64;
    r.arg0 = matches!(side, synth::Side::Remote) as i64;
    recorder::emit(&r, data.len(), &data);
}

/// The TLS peer of `ssl` closed its session.
pub fn on_tls_eof(ssl: usize) {
    let mut r = rec(Kind::TlsEof, -1);
    r.ssl = ssl as u64;
    emit(&r);
}

/// SSL object `ssl` has no descriptor; its read and write BIOs are memory BIOs (0 for one that is
/// not), which the program fills from and drains to a socket itself.
pub fn on_tls_bios(ssl: usize, rbio: usize, wbio: usize) {
    let mut r = rec(Kind::TlsBios, -1);
    r.ssl = ssl as u64;
    r.arg0 = rbio as i64;
    r.arg1 = wbio as i64;
    emit(&r);
}

/// A TLS library logged `line`, one secret of `ssl`'s session in NSS's key log format (see
/// `Kind::TlsKey`). Recorded in every mode: a pcapng of the ciphertext carries the keys that
/// decrypt it, and `--keylog` writes them whatever the capture holds. A line too long to be one
/// is not recorded.
pub fn on_tls_key(ssl: usize, line: &[u8]) {
    /// The longest line: a 31-character label, 64 hex digits of client random and 128 of a
    /// 64-byte secret fit with room to spare.
    const MAX_LINE: usize = 512;
    if line.is_empty() || line.len() > MAX_LINE {
        return;
    }
    let mut r = rec(Kind::TlsKey, -1);
    r.ssl = ssl as u64;
    recorder::emit(&r, line.len(), &line);
}

/// Ours now logs the keys of TLS object `object` (an OpenSSL context, a GnuTLS session).
pub fn on_tls_keylog(object: usize) {
    let mut r = rec(Kind::TlsKeylog, -1);
    r.ssl = object as u64;
    emit(&r);
}

/// The program moved `data`, ciphertext that starts with a TLS handshake record, through memory
/// BIO `bio`: read out of it (`side` Local, on its way to the peer) or written into it (`side`
/// Remote, from the peer). Only its first bytes are recorded: the collector needs them to know
/// the chunk again on a socket, where the whole of it is recorded anyway.
pub fn on_tls_cipher(bio: usize, side: synth::Side, data: &[u8]) {
    if !tls::starts_handshake(data) {
        return;
    }
    let mut r = rec(Kind::TlsCipher, -1);
    r.arg0 = bio as i64;
    r.arg1 = matches!(side, synth::Side::Remote) as i64;
    r.ret = data.len() as i64;
    let head = &data[..data.len().min(tls::CIPHER_HEAD)];
    recorder::emit(&r, head.len(), &head);
}
