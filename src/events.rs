//! What each intercepted call means for the capture.
//!
//! Hooks call these after the real call returned successfully, inside [`record`], which keeps
//! `errno`, holds the reentrancy guard and stops a panic from reaching the traced program. Byte
//! counts are always what the real call returned.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use parking_lot::MutexGuard;
use synth::{Side, TcpStream};

use crate::connection::{next_isn, ConnState, Connection, Proto, Tcp, Udp};
use crate::{fd_table, guard, sink, sys};

/// Whether `fd` is a tracked socket (the hot-path test).
#[inline]
pub fn is_tracked(fd: i32) -> bool {
    fd_table::is_tracked(fd)
}

/// Run bookkeeping `f` with `errno` preserved, the guard held, and any panic contained.
///
/// Signals are blocked meanwhile, so a handler that uses a socket never runs on this thread while
/// it holds one of our locks (they are delivered as soon as the bookkeeping ends).
pub fn record(f: impl FnOnce()) {
    let saved = sys::errno();
    let mask = sys::block_signals();
    if let Some(_entered) = guard::enter() {
        if catch_unwind(AssertUnwindSafe(f)).is_err() {
            guard::count_dropped();
        }
    }
    sys::restore_signals(mask);
    sys::set_errno(saved);
}

/// Lock `fd`'s connection, making sure the descriptor still refers to it once locked.
fn lock_fd(fd: i32) -> Option<MutexGuard<'static, ConnState>> {
    guard::set_fd(fd);
    let conn = fd_table::get(fd)?;
    let st = conn.lock()?;
    let still = fd_table::get(fd).is_some_and(|c| std::ptr::eq(c, conn));
    (still && !matches!(st.proto, Proto::Free)).then_some(st)
}

fn emit(packet: &[u8]) {
    sink::emit(packet);
}

/// `socket()` returned `fd`: track it if it is an IPv4/IPv6 stream or datagram socket.
pub fn on_socket(fd: i32, domain: i32, ty: i32) {
    if domain != libc::AF_INET && domain != libc::AF_INET6 {
        return;
    }
    let proto = match ty & 0xf {
        libc::SOCK_STREAM => Proto::Tcp(Tcp::Fresh),
        libc::SOCK_DGRAM => Proto::Udp(Udp::new()),
        _ => return,
    };
    track(fd, proto);
}

/// Start tracking `fd` as a new connection, ending whatever the number referred to before (a close
/// we did not see).
fn track(fd: i32, proto: Proto) {
    if !crate::process::enabled() {
        return;
    }
    let conn = Connection::alloc(proto, sys::getpid(), identity(fd).unwrap_or_default());
    if let Some(old) = fd_table::set(fd, conn) {
        drop_ref(old);
    }
}

/// A descriptor's identity: the socket inode behind the number.
fn identity(fd: i32) -> Option<(u64, u64)> {
    sys::fstat(fd).ok().map(|st| (st.st_dev, st.st_ino))
}

/// One descriptor of `conn` went away: end the connection when it was the last.
fn drop_ref(conn: &'static Connection) {
    let Some(mut st) = conn.lock() else { return };
    st.refs = st.refs.saturating_sub(1);
    if st.refs > 0 {
        return;
    }
    // A fork child closing an inherited socket sends nothing: the parent still holds it.
    if st.owner_pid == sys::getpid() {
        st.fin(Side::Local, &mut emit);
    }
    st.proto = Proto::Free;
    st.mirror = None;
    drop(st);
    conn.release();
}

/// `close(fd)` is about to run: forget the descriptor (before the number can be reused).
pub fn on_close(fd: i32) {
    if let Some(conn) = fd_table::take(fd) {
        drop_ref(conn);
    }
}

/// `close_range(first, last)` or `closefrom(first)` is about to close every descriptor in range.
pub fn on_close_range(first: u32, last: u32) {
    let first = first.min(i32::MAX as u32) as i32;
    let last = last.min(i32::MAX as u32) as i32;
    let mut doomed = Vec::new();
    fd_table::for_each(|fd, _| {
        if (first..=last).contains(&fd) {
            doomed.push(fd);
        }
    });
    for fd in doomed {
        on_close(fd);
    }
}

/// `dup`, `dup2`, `dup3` or `fcntl(F_DUPFD…)` made `new` a copy of `old`: the same connection.
/// Whatever `new` referred to before was closed by the call.
pub fn on_dup(old: i32, new: i32) {
    if old == new {
        return;
    }
    match fd_table::get(old) {
        Some(conn) => {
            {
                let Some(mut st) = conn.lock() else { return };
                st.refs += 1;
            }
            if let Some(prev) = fd_table::set(new, conn) {
                drop_ref(prev);
            }
        }
        None => on_close(new),
    }
}

/// Look at a descriptor we never saw created (inherited, received with SCM_RIGHTS, or made inside
/// libc) and track it if it is an IPv4/IPv6 socket. A refused look (a sandbox) leaves it unknown.
pub fn discover(fd: i32) {
    if !matches!(fd_table::known(fd), fd_table::Known::Unknown) || !crate::process::enabled() {
        return;
    }
    let Ok(st) = sys::fstat(fd) else { return };
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        fd_table::mark_not_ip(fd);
        return;
    }
    let Some(local) = sys::local_addr(fd) else {
        // Not an IP socket (getsockname of a unix socket gives another family).
        fd_table::mark_not_ip(fd);
        return;
    };
    let Ok(ty) = sys::sockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE) else {
        return;
    };
    let peer = sys::peer_addr(fd);
    match ty {
        libc::SOCK_STREAM => {
            let listening = sys::sockopt_int(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN) == Ok(1);
            track(fd, Proto::Tcp(Tcp::Fresh));
            let Some(mut cs) = lock_fd(fd) else { return };
            match peer {
                _ if listening => cs.proto = Proto::Tcp(Tcp::Listening),
                Some(remote) => {
                    // We did not see who connected: the side with the higher (ephemeral) port is
                    // the likelier client.
                    let client = if local.port() >= remote.port() {
                        Side::Local
                    } else {
                        Side::Remote
                    };
                    let mut stream =
                        Box::new(TcpStream::new(local, remote, next_isn(), next_isn()));
                    stream.open(client, &mut emit);
                    cs.proto = Proto::Tcp(Tcp::Open(stream));
                }
                None => {}
            }
        }
        libc::SOCK_DGRAM => {
            let mut udp = Udp::new();
            udp.local = Some(local);
            udp.peer = peer;
            track(fd, Proto::Udp(udp));
        }
        _ => fd_table::mark_not_ip(fd),
    }
}

/// Descriptors that arrived in an SCM_RIGHTS message: new numbers, whatever we knew of them is
/// stale.
pub fn on_received_fds(fds: &[i32]) {
    for &fd in fds {
        on_close(fd);
        fd_table::take(fd);
        discover(fd);
    }
}

/// Every descriptor found open when the library loaded (inherited over exec).
pub fn discover_inherited() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds {
        discover(fd);
    }
}

/// End connections whose descriptor was closed where no hook saw it (a raw syscall, inside libc)
/// or now names another socket; the new socket is discovered.
pub fn reap_vanished() {
    let mut vanished = Vec::new();
    fd_table::for_each(|fd, conn| {
        let recorded = match conn.lock() {
            Some(st) if !matches!(st.proto, Proto::Free) => st.ident,
            _ => return,
        };
        match sys::fstat(fd) {
            Err(libc::EBADF) => vanished.push((fd, conn, false)),
            Ok(st) if (st.st_dev, st.st_ino) != recorded => vanished.push((fd, conn, true)),
            _ => {}
        }
    });
    for (fd, conn, reused) in vanished {
        if fd_table::take_if(fd, conn) {
            drop_ref(conn);
            if reused {
                discover(fd);
            }
        }
    }
}

/// `sendfile` sent `sent` bytes of `in_fd` starting at `offset` to the socket `out`: the bytes
/// are read back with pread, which leaves the file's offset alone.
pub fn on_sendfile(out: i32, in_fd: i32, offset: i64, sent: usize) {
    let mut buf = vec![0u8; sent.min(1 << 16)];
    let mut done = 0usize;
    while done < sent {
        let want = (sent - done).min(buf.len());
        match sys::pread(in_fd, &mut buf[..want], offset + done as i64) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                on_send(out, &&buf[..n], None);
                done += n;
            }
        }
    }
}

/// A completed connect, from the state the socket is in; `local` is read from the kernel.
fn open_tcp(fd: i32, st: &mut ConnState, remote: SocketAddr, client: Side) {
    let local = sys::local_addr(fd).unwrap_or_else(|| unspecified_like(remote));
    let mut stream = Box::new(TcpStream::new(local, remote, next_isn(), next_isn()));
    stream.open(client, &mut emit);
    st.proto = Proto::Tcp(Tcp::Open(stream));
}

fn unspecified_like(addr: SocketAddr) -> SocketAddr {
    let ip = if addr.is_ipv4() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    };
    SocketAddr::new(ip, 0)
}

/// `connect(fd, remote)` returned `ret` with `errno`.
pub fn on_connect(fd: i32, remote: Option<SocketAddr>, ret: i32, errno: i32) {
    replace_if_reused(fd);
    let Some(mut st) = lock_fd(fd) else { return };
    match &mut st.proto {
        Proto::Tcp(tcp) => {
            let Some(remote) = remote else { return };
            match (tcp, ret, errno) {
                (Tcp::Fresh | Tcp::Connecting(_), 0, _)
                | (Tcp::Connecting(_), _, libc::EISCONN) => {
                    open_tcp(fd, &mut st, remote, Side::Local)
                }
                (Tcp::Fresh, _, libc::EINPROGRESS) => {
                    st.proto = Proto::Tcp(Tcp::Connecting(remote))
                }
                (Tcp::Fresh | Tcp::Connecting(_), _, libc::ECONNREFUSED) => {
                    refused(fd, &mut st, remote)
                }
                _ => {}
            }
        }
        Proto::Udp(udp) => {
            if ret == 0 {
                // AF_UNSPEC dissolves the association; `remote` is then None.
                udp.peer = remote;
                udp.local = sys::local_addr(fd);
            }
        }
        Proto::Free => {}
    }
}

/// A connect on a connection we think is already open: if the number now names another socket
/// (closed and reused behind our back), end the old connection and start the new one.
fn replace_if_reused(fd: i32) {
    let Some(conn) = fd_table::get(fd) else {
        return;
    };
    let stale = match conn.lock() {
        Some(st) => {
            matches!(
                st.proto,
                Proto::Tcp(Tcp::Open(_) | Tcp::Done | Tcp::Listening)
            ) && identity(fd).is_some_and(|id| id != st.ident)
        }
        None => false,
    };
    if stale && fd_table::take_if(fd, conn) {
        drop_ref(conn);
        discover(fd);
    }
}

fn refused(fd: i32, st: &mut ConnState, remote: SocketAddr) {
    let local = sys::local_addr(fd)
        .filter(|a| a.port() != 0)
        .unwrap_or_else(|| SocketAddr::new(source_for(None, remote), ephemeral_port(fd)));
    let mut stream = TcpStream::new(local, remote, next_isn(), 0);
    stream.refused(&mut emit);
    st.proto = Proto::Tcp(Tcp::Done);
}

/// A stand-in port for a refused connect whose autobound port the kernel already released.
fn ephemeral_port(fd: i32) -> u16 {
    32768 + (next_isn() as u16 ^ fd as u16) % 28232
}

/// A pending non-blocking connect finished if the socket has a peer now; a refusal learned
/// through `SO_ERROR` or a failed I/O call is reported with `errno`.
fn settle_connect(fd: i32, st: &mut ConnState, failed_with: Option<i32>) {
    let Proto::Tcp(Tcp::Connecting(remote)) = st.proto else {
        return;
    };
    match failed_with {
        Some(libc::ECONNREFUSED) => refused(fd, st, remote),
        Some(_) => st.proto = Proto::Tcp(Tcp::Done),
        None => {
            if sys::peer_addr(fd).is_some() {
                open_tcp(fd, st, remote, Side::Local);
            }
        }
    }
}

/// `getsockopt(fd, SOL_SOCKET, SO_ERROR)` reported `value`.
pub fn on_so_error(fd: i32, value: i32) {
    let Some(mut st) = lock_fd(fd) else { return };
    let failed = (value != 0).then_some(value);
    settle_connect(fd, &mut st, failed);
}

/// `listen(fd)` succeeded.
pub fn on_listen(fd: i32) {
    if let Some(mut st) = lock_fd(fd) {
        if let Proto::Tcp(_) = st.proto {
            st.proto = Proto::Tcp(Tcp::Listening);
        }
    }
}

/// `accept(listener)` returned `fd`: a new connection with the peer as the client.
pub fn on_accept(listener: i32, fd: i32) {
    if !fd_table::is_tracked(listener) {
        return;
    }
    let (Some(local), Some(remote)) = (sys::local_addr(fd), sys::peer_addr(fd)) else {
        return;
    };
    track(fd, Proto::Tcp(Tcp::Fresh));
    if let Some(mut st) = lock_fd(fd) {
        let mut stream = Box::new(TcpStream::new(local, remote, next_isn(), next_isn()));
        stream.open(Side::Remote, &mut emit);
        st.proto = Proto::Tcp(Tcp::Open(stream));
    }
}

/// Bytes moved by one call, possibly scattered over several buffers.
pub trait Payload {
    /// Call `f` with each piece, in order.
    fn for_each_piece(&self, f: &mut dyn FnMut(&[u8]));
    /// The bytes as one slice (copied only when scattered).
    fn contiguous(&self, f: &mut dyn FnMut(&[u8]));
}

impl Payload for &[u8] {
    fn for_each_piece(&self, f: &mut dyn FnMut(&[u8])) {
        f(self)
    }
    fn contiguous(&self, f: &mut dyn FnMut(&[u8])) {
        f(self)
    }
}

/// The first `total` bytes of a scatter/gather list.
pub struct IoVecs<'a> {
    pub iov: &'a [libc::iovec],
    pub total: usize,
}

impl IoVecs<'_> {
    fn pieces(&self) -> impl Iterator<Item = &[u8]> {
        let mut left = self.total;
        self.iov.iter().filter_map(move |v| {
            let n = v.iov_len.min(left);
            left -= n;
            if n == 0 || v.iov_base.is_null() {
                return None;
            }
            // SAFETY: the caller of `IoVecs` guarantees each iovec describes memory that the real
            // call just read from or filled, valid for at least the bytes it reported.
            Some(unsafe { std::slice::from_raw_parts(v.iov_base as *const u8, n) })
        })
    }
}

impl Payload for IoVecs<'_> {
    fn for_each_piece(&self, f: &mut dyn FnMut(&[u8])) {
        self.pieces().for_each(f)
    }
    fn contiguous(&self, f: &mut dyn FnMut(&[u8])) {
        let mut one = Vec::with_capacity(self.total);
        self.pieces().for_each(|p| one.extend_from_slice(p));
        f(&one)
    }
}

/// Bytes went out on `fd` (to `dest` for an unconnected datagram socket).
pub fn on_send(fd: i32, data: &dyn Payload, dest: Option<SocketAddr>) {
    let Some(mut st) = lock_fd(fd) else { return };
    settle_connect(fd, &mut st, None);
    if is_ciphertext(fd, &mut st) {
        return;
    }
    if let (Proto::Tcp(Tcp::Fresh), Some(dest)) = (&st.proto, dest) {
        // sendto/sendmsg with MSG_FASTOPEN connects and sends in one call.
        open_tcp(fd, &mut st, dest, Side::Local);
    }
    match &mut st.proto {
        Proto::Tcp(Tcp::Open(stream)) => {
            data.for_each_piece(&mut |p| stream.data(Side::Local, p, &mut emit))
        }
        Proto::Udp(udp) => {
            let Some(dst) = dest.or(udp.peer) else { return };
            let src = udp_local(fd, udp, dst);
            let scratch = &mut udp.scratch;
            data.contiguous(&mut |p| synth::udp_datagram(src, dst, p, scratch, &mut emit));
        }
        _ => {}
    }
}

/// Bytes came in on `fd` (from `src` for a datagram socket, when known).
pub fn on_recv(fd: i32, data: &dyn Payload, src: Option<SocketAddr>) {
    let Some(mut st) = lock_fd(fd) else { return };
    settle_connect(fd, &mut st, None);
    if is_ciphertext(fd, &mut st) {
        return;
    }
    match &mut st.proto {
        Proto::Tcp(Tcp::Open(stream)) => {
            data.for_each_piece(&mut |p| stream.data(Side::Remote, p, &mut emit))
        }
        Proto::Udp(udp) => {
            let Some(from) = src.or(udp.peer) else { return };
            let dst = udp_local(fd, udp, from);
            let scratch = &mut udp.scratch;
            data.contiguous(&mut |p| synth::udp_datagram(from, dst, p, scratch, &mut emit));
        }
        _ => {}
    }
}

/// Socket-level bytes on a TCP connection that carries TLS, in plain mode: not recorded. A socket
/// call inside an SSL call is what makes a connection TLS when the SSL object's descriptor is
/// not known otherwise.
fn is_ciphertext(fd: i32, st: &mut ConnState) -> bool {
    let mode = crate::tls::mode();
    if !mode.decrypts() || !matches!(st.proto, Proto::Tcp(_)) {
        return false;
    }
    let ssl = crate::tls::current();
    if ssl != 0 {
        crate::tls::bind(ssl, fd);
        st.tls = true;
    }
    // In `both` mode the ciphertext is the connection's own stream.
    st.tls && mode == crate::tls::Mode::Plain
}

/// An SSL call on object `ssl` found its descriptor with `SSL_get_fd` (or NSPR's native handle).
pub fn on_tls_fd(ssl: usize, fd: i32) {
    if !crate::tls::mode().decrypts() || fd < 0 {
        return;
    }
    discover(fd);
    if let Some(mut st) = lock_fd(fd) {
        if matches!(st.proto, Proto::Tcp(_)) {
            st.tls = true;
            crate::tls::bind(ssl, fd);
        }
    }
}

/// Plaintext that `ssl` wrote (`side` Local) or read (`side` Remote).
pub fn on_tls_data(ssl: usize, side: Side, data: &[u8]) {
    let mode = crate::tls::mode();
    if !mode.decrypts() || data.is_empty() {
        return;
    }
    let Some(fd) = crate::tls::fd_of(ssl) else {
        return;
    };
    let Some(mut st) = lock_fd(fd) else { return };
    settle_connect(fd, &mut st, None);
    st.tls = true;
    let ConnState { proto, mirror, .. } = &mut *st;
    let Proto::Tcp(Tcp::Open(stream)) = proto else {
        return;
    };
    if mode == crate::tls::Mode::Both {
        mirror
            .get_or_insert_with(|| Box::new(stream.parallel(next_isn(), next_isn(), &mut emit)))
            .data(side, data, &mut emit);
    } else {
        stream.data(side, data, &mut emit);
    }
}

/// The TLS peer of `ssl` closed its session: its FIN, as a socket read of 0 would give.
pub fn on_tls_eof(ssl: usize) {
    let Some(fd) = crate::tls::fd_of(ssl) else {
        return;
    };
    match crate::tls::mode() {
        crate::tls::Mode::Plain => on_eof(fd),
        // The socket's own end of file comes with the ciphertext's FIN.
        crate::tls::Mode::Both => {
            if let Some(twin) = lock_fd(fd).as_mut().and_then(|st| st.mirror.as_mut()) {
                twin.fin(Side::Remote, &mut emit);
            }
        }
        crate::tls::Mode::Raw => {}
    }
}

/// A read on `fd` returned 0 with room to read: the peer sent its FIN.
pub fn on_eof(fd: i32) {
    let Some(mut st) = lock_fd(fd) else { return };
    settle_connect(fd, &mut st, None);
    st.fin(Side::Remote, &mut emit);
}

/// An I/O call on `fd` failed with `errno`: a pending connect may have been refused.
pub fn on_io_error(fd: i32, errno: i32) {
    if errno == libc::ECONNREFUSED {
        if let Some(mut st) = lock_fd(fd) {
            settle_connect(fd, &mut st, Some(errno));
        }
    }
}

/// `shutdown(fd, how)` succeeded.
pub fn on_shutdown(fd: i32, how: i32) {
    if how != libc::SHUT_WR && how != libc::SHUT_RDWR {
        return;
    }
    let Some(mut st) = lock_fd(fd) else { return };
    st.fin(Side::Local, &mut emit);
}

/// Whether `fd` is a tracked datagram socket (receivers then ask the kernel for the source).
pub fn is_datagram(fd: i32) -> bool {
    fd_table::get(fd).is_some_and(|c| c.is_datagram())
}

/// The local address of a UDP socket talking to `peer`, with a real IP where it is bound to the
/// wildcard: the one the kernel routes from.
fn udp_local(fd: i32, udp: &mut Udp, peer: SocketAddr) -> SocketAddr {
    let bound = match udp.local {
        Some(a) if a.port() != 0 => a,
        _ => {
            let a = sys::local_addr(fd).unwrap_or_else(|| unspecified_like(peer));
            udp.local = Some(a);
            a
        }
    };
    if bound.ip().is_unspecified() {
        SocketAddr::new(source_for(Some(bound), peer), bound.port())
    } else {
        bound
    }
}

/// The source IP towards `peer`: loopback answers without a syscall.
fn source_for(bound: Option<SocketAddr>, peer: SocketAddr) -> IpAddr {
    let peer_ip = match peer.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        ip => ip,
    };
    let ip = match peer_ip {
        IpAddr::V4(v4) if v4.is_loopback() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_loopback() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        _ => sys::route_source(SocketAddr::new(peer_ip, peer.port()))
            .unwrap_or_else(|| unspecified_like(peer).ip()),
    };
    // A v6 socket talking to a v4-mapped peer keeps its family; synth writes both as IPv4.
    match (bound, ip) {
        (Some(SocketAddr::V6(_)), IpAddr::V4(v4)) => IpAddr::V6(v4.to_ipv6_mapped()),
        _ => ip,
    }
}

/// At exit: end this process's open connections with our FIN, as the kernel's close would.
pub fn end_all_at_exit() {
    let pid = sys::getpid();
    fd_table::for_each(|_, conn| {
        if let Some(mut st) = conn.lock() {
            if st.owner_pid == pid {
                st.fin(Side::Local, &mut emit);
            }
        }
    });
}

/// A receive call on `fd` that asked for `requested` bytes returned `ret` (with `errno` when
/// negative); `data` are the bytes it filled and `src` the sender it reported.
pub fn on_receive_result(
    fd: i32,
    ret: isize,
    requested: usize,
    errno: i32,
    data: &dyn Payload,
    src: Option<SocketAddr>,
) {
    let datagram = is_datagram(fd);
    if ret > 0 || (ret == 0 && datagram) {
        on_recv(fd, data, src);
    } else if ret == 0 && requested > 0 {
        on_eof(fd);
    } else if ret < 0 {
        on_io_error(fd, errno);
    }
}

/// A send call on `fd` returned `ret` (with `errno` when negative).
pub fn on_send_result(
    fd: i32,
    ret: isize,
    errno: i32,
    data: &dyn Payload,
    dest: Option<SocketAddr>,
) {
    if ret >= 0 {
        on_send(fd, data, dest);
    } else {
        on_io_error(fd, errno);
    }
}
