//! What each socket call records once the real call returned: shared by the named hooks and by
//! `syscall()` (see `syscall.rs`), so that a call means the same whichever way it was made.
//!
//! The rule every function here keeps: the caller's memory is read only where the kernel just
//! reported it valid. A failed call may have failed *because* a pointer was bad (EFAULT), an
//! array too long (EMSGSIZE, EINVAL) or a length absurd; the kernel's error must stay the
//! program's error, never become our SIGSEGV. Each function takes the number of the call to name
//! in its records (`call`), set only when something is recorded.

use libc::{c_int, c_uint, c_void, iovec, mmsghdr, msghdr, sockaddr, socklen_t, ssize_t};
use netintercept_core::events;
use netintercept_core::recorder::IoVecs;

use super::{addr_in, bytes, family_of, filled, iov_total, iovecs, message, passed_fds, ret_len};

/// Record as call number `call`, with errno and panics contained.
pub(crate) fn note(call: u16, f: impl FnOnce()) {
    netintercept_core::guard::set_call_id(call);
    events::record(f)
}

/// connect(fd, addr, len) returned `ret` with `errno`.
///
/// # Safety
/// The arguments are the caller's, just passed to connect(2).
pub(crate) unsafe fn connect(
    call: u16,
    fd: c_int,
    addr: *const sockaddr,
    len: socklen_t,
    ret: c_int,
    errno: c_int,
) {
    if !events::is_tracked(fd) {
        return;
    }
    let (family, remote) = if ret == 0 || netintercept_core::sockaddr::connect_read_address(errno) {
        // SAFETY: the kernel read `len` bytes at `addr` for this call without a fault.
        unsafe { (family_of(addr, len), addr_in(addr, len)) }
    } else {
        (-1, None)
    };
    note(call, || events::on_connect(fd, family, remote, ret, errno));
}

/// bind(fd, addr, len) on a tracked socket returned `ret` with `errno`: a success always (the
/// packets need the local address), a failure with `--events` only.
///
/// # Safety
/// The arguments are the caller's, just passed to bind(2).
pub(crate) unsafe fn bind(
    call: u16,
    fd: c_int,
    addr: *const sockaddr,
    len: socklen_t,
    ret: c_int,
    errno: c_int,
) {
    if ret != 0 && !events::events_on() {
        return;
    }
    // These come from the protocol, after the kernel copied the address; EINVAL may mean a bad
    // length, with nothing read.
    let read = ret == 0 || matches!(errno, libc::EADDRINUSE | libc::EADDRNOTAVAIL | libc::EACCES);
    let requested = if read {
        // SAFETY: the kernel read `len` bytes at `addr` for this call without a fault.
        unsafe { addr_in(addr, len) }
    } else {
        None
    };
    note(call, || events::on_bind(fd, requested, ret, errno));
}

/// getsockopt(fd, level, name, val, len) returned `ret` with `errno`: SO_ERROR settles a pending
/// connect; with `--events`, every option is recorded for the event trace.
///
/// # Safety
/// The arguments are the caller's, just passed to getsockopt(2).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn getsockopt(
    call: u16,
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *const c_void,
    len: *const socklen_t,
    ret: c_int,
    errno: c_int,
) {
    let so_error = level == libc::SOL_SOCKET && name == libc::SO_ERROR;
    if ret == 0 && so_error && !val.is_null() && events::is_tracked(fd) {
        // SAFETY: SO_ERROR succeeded, so the kernel wrote an int at `val`.
        let value = unsafe { std::ptr::read_unaligned(val as *const c_int) };
        note(call, || events::on_so_error(fd, value));
        return;
    }
    if !events::events_on() || !events::is_tracked(fd) {
        return;
    }
    // The option is read only when the call succeeded: the kernel then read and wrote `*len`
    // and wrote that many bytes at `val`.
    let (n, value) = if ret == 0 && !len.is_null() {
        // SAFETY: the call succeeded, so `len` was valid for the kernel to read and write.
        let n = unsafe { std::ptr::read_unaligned(len) };
        // SAFETY: the kernel just wrote `n` bytes at `val`.
        (n, unsafe { bytes(val, n as usize) })
    } else {
        (0, &[][..])
    };
    note(call, || {
        events::on_sockopt(fd, level, name, n, value, ret, errno)
    });
}

/// setsockopt(fd, level, name, val, len) returned `ret` with `errno` (recorded with `--events`
/// only).
///
/// # Safety
/// The arguments are the caller's, just passed to setsockopt(2).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn setsockopt(
    call: u16,
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *const c_void,
    len: socklen_t,
    ret: c_int,
    errno: c_int,
) {
    if !events::events_on() || !events::is_tracked(fd) {
        return;
    }
    // SAFETY: on success the kernel read `len` bytes at `val`; after a failure nothing is read.
    let value = unsafe { bytes(val, if ret == 0 { len as usize } else { 0 }) };
    note(call, || {
        events::on_sockopt(fd, level, name, len, value, ret, errno)
    });
}

/// write, send or sendto (`addr` null for the first two) of `len` bytes returned `ret` with
/// `errno`.
///
/// # Safety
/// The arguments are the caller's, just passed to sendto(2).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn send(
    call: u16,
    fd: c_int,
    buf: *const c_void,
    len: usize,
    flags: c_int,
    addr: *const sockaddr,
    alen: socklen_t,
    ret: ssize_t,
    errno: c_int,
) {
    if !events::is_tracked(fd) {
        return;
    }
    // A destination is read only when the kernel took it: on success, or a Fast Open send that
    // started connecting (EINPROGRESS).
    let dest = if ret >= 0 || errno == libc::EINPROGRESS {
        // SAFETY: the kernel copied `alen` bytes from `addr` for this call.
        unsafe { addr_in(addr, alen) }
    } else {
        None
    };
    // SAFETY: the kernel read `ret` bytes from `buf`.
    let data = unsafe { bytes(buf, ret_len(ret)) };
    note(call, || {
        events::on_send_asked(fd, ret, len, errno, flags, &data, dest)
    });
}

/// writev(fd, iov, n) returned `ret` with `errno`.
///
/// # Safety
/// The arguments are the caller's, just passed to writev(2).
pub(crate) unsafe fn writev(
    call: u16,
    fd: c_int,
    iov: *const iovec,
    n: c_int,
    ret: ssize_t,
    errno: c_int,
) {
    if !events::is_tracked(fd) {
        return;
    }
    // After a failure the array may be unreadable (EFAULT) or too long (EINVAL): not read.
    let count = if ret >= 0 { n.max(0) as usize } else { 0 };
    // SAFETY: the kernel read `count` iovecs and `ret` bytes through them.
    let iov = unsafe { iovecs(iov, count) };
    if events::events_on() {
        note(call, || {
            events::on_iovec(fd, n.max(0) as usize, iov, None, None, 0)
        });
    }
    let data = IoVecs {
        iov,
        total: ret_len(ret),
    };
    note(call, || {
        events::on_send_result(fd, ret, errno, 0, &data, None)
    });
}

/// sendmsg(fd, msg, flags) returned `ret` with `errno`: descriptors it passed (SCM_RIGHTS) and
/// the bytes it sent.
///
/// # Safety
/// The arguments are the caller's, just passed to sendmsg(2).
pub(crate) unsafe fn sendmsg(
    call: u16,
    fd: c_int,
    msg: *const msghdr,
    flags: c_int,
    ret: ssize_t,
    errno: c_int,
) {
    // The message is read only when the kernel accepted it: a success, or a Fast Open send
    // that started connecting (EINPROGRESS), for which the kernel read the destination.
    let accepted = ret >= 0 || errno == libc::EINPROGRESS;
    if msg.is_null() || !accepted {
        if events::is_tracked(fd) {
            note(call, || {
                events::on_send_result(fd, ret, errno, flags, &events::NOTHING, None)
            });
        }
        return;
    }
    // SAFETY: sendmsg just read `*msg`, its name, its control data and `ret` bytes of its
    // iovecs.
    let m = unsafe { &*msg };
    if ret >= 0 && !m.msg_control.is_null() && m.msg_controllen > 0 {
        // SAFETY: as above.
        let fds = unsafe { passed_fds(m) };
        if !fds.is_empty() {
            note(call, || events::on_passed_fds(fd, &fds));
        }
    }
    if events::is_tracked(fd) {
        if events::events_on() {
            // SAFETY: as above.
            unsafe { message_buffers(call, fd, m, 0) };
        }
        // SAFETY: as above.
        let (data, dest) = unsafe { message(m, ret_len(ret)) };
        note(call, || {
            events::on_send_result(fd, ret, errno, flags, &data, dest)
        });
    }
}

/// The buffers and control data of message `m` on `fd`, for the event trace.
///
/// # Safety
/// The kernel just read `*m`, its iovec array and its control data (sendmsg), or filled them
/// (recvmsg: `msg_controllen` is then what it wrote).
unsafe fn message_buffers(call: u16, fd: c_int, m: &msghdr, msg_flags: c_int) {
    // SAFETY: per the contract.
    let iov = unsafe { iovecs(m.msg_iov, m.msg_iovlen) };
    let first = if m.msg_control.is_null() || m.msg_controllen == 0 {
        None
    } else {
        // SAFETY: CMSG_FIRSTHDR stays within msg_controllen bytes of msg_control, which the
        // kernel read or wrote.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(m);
            (!c.is_null()).then(|| ((*c).cmsg_level, (*c).cmsg_type))
        }
    };
    note(call, || {
        events::on_iovec(fd, iov.len(), iov, Some(m.msg_controllen), first, msg_flags)
    });
}

/// sendmmsg(fd, msgs, …, flags) returned `ret` with `errno`.
///
/// # Safety
/// The arguments are the caller's, just passed to sendmmsg(2).
pub(crate) unsafe fn sendmmsg(
    call: u16,
    fd: c_int,
    msgs: *const mmsghdr,
    vlen: c_uint,
    flags: c_int,
    ret: c_int,
    errno: c_int,
) {
    if !events::is_tracked(fd) {
        return;
    }
    for i in 0..ret.max(0) as usize {
        // SAFETY: the kernel sent the first `ret` messages of `msgs` and set their msg_len.
        let m = unsafe { &*msgs.add(i) };
        // SAFETY: as above.
        let (data, dest) = unsafe { message(&m.msg_hdr, m.msg_len as usize) };
        note(call, || {
            events::on_send_result(fd, m.msg_len as isize, errno, flags, &data, dest)
        });
    }
    if ret < 0 {
        note(call, || events::on_io_error(fd, errno));
    }
    if events::events_on() {
        // SAFETY: the kernel read (and set msg_len in) the first `ret` messages.
        unsafe { mmsg(call, fd, msgs, vlen, flags, ret, errno, (0, 0)) };
    }
}

/// The event trace's record of a sendmmsg or recvmmsg that returned `ret`: the messages the
/// kernel handled (the first `ret`), after their own Send or Recv records.
///
/// # Safety
/// The kernel just read or filled the first `ret` messages at `msgs`, their iovec arrays and
/// their control data.
#[allow(clippy::too_many_arguments)]
unsafe fn mmsg(
    call: u16,
    fd: c_int,
    msgs: *const mmsghdr,
    vlen: c_uint,
    flags: c_int,
    ret: c_int,
    errno: c_int,
    timeout: (i64, i64),
) {
    let handled = (0..ret.max(0) as usize).map(|i| {
        // SAFETY: per the contract.
        let m = unsafe { &*msgs.add(i) };
        let h = &m.msg_hdr;
        // SAFETY: per the contract.
        let iov = unsafe { iovecs(h.msg_iov, h.msg_iovlen) };
        events::MmsgEntry {
            len: m.msg_len,
            flags: h.msg_flags,
            control_len: h.msg_controllen,
            // SAFETY: per the contract.
            first_cmsg: unsafe { first_cmsg(h) },
            iov,
        }
    });
    note(call, || {
        events::on_mmsg(fd, vlen, flags, ret, errno, timeout, handled)
    });
}

/// The level and type of the first control message of `m`, if any.
///
/// # Safety
/// The kernel just read or wrote `m`'s control data.
unsafe fn first_cmsg(m: &msghdr) -> Option<(c_int, c_int)> {
    if m.msg_control.is_null() || m.msg_controllen == 0 {
        return None;
    }
    // SAFETY: CMSG_FIRSTHDR stays within msg_controllen bytes of msg_control, which the kernel
    // read or wrote.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(m);
        (!c.is_null()).then(|| ((*c).cmsg_level, (*c).cmsg_type))
    }
}

/// readv(fd, iov, n) returned `ret` with `errno`.
///
/// # Safety
/// The arguments are the caller's, just passed to readv(2).
pub(crate) unsafe fn readv(
    call: u16,
    fd: c_int,
    iov: *const iovec,
    n: c_int,
    ret: ssize_t,
    errno: c_int,
) {
    if !events::is_tracked(fd) {
        return;
    }
    // After a failure the array may be unreadable (EFAULT) or too long (EINVAL): not read.
    let count = if ret >= 0 { n.max(0) as usize } else { 0 };
    // SAFETY: the kernel read `count` iovecs and filled `ret` bytes through them.
    let iov = unsafe { iovecs(iov, count) };
    if events::events_on() {
        note(call, || {
            events::on_iovec(fd, n.max(0) as usize, iov, None, None, 0)
        });
    }
    let data = IoVecs {
        iov,
        total: ret_len(ret),
    };
    note(call, || {
        events::on_receive_result(fd, ret, iov_total(iov), errno, 0, &data, None)
    });
}

/// recvmsg(fd, msg, flags) returned `ret` with `errno`: the bytes, and sockets received with
/// SCM_RIGHTS (also on unix sockets, which may carry internet sockets from another process).
///
/// # Safety
/// The arguments are the caller's, just passed to recvmsg(2).
pub(crate) unsafe fn recvmsg(
    call: u16,
    fd: c_int,
    msg: *const msghdr,
    flags: c_int,
    ret: ssize_t,
    errno: c_int,
) {
    if ret < 0 || msg.is_null() {
        if events::is_tracked(fd) {
            note(call, || {
                events::on_receive_result(fd, ret, 0, errno, flags, &events::NOTHING, None)
            });
        }
        return;
    }
    // SAFETY: recvmsg succeeded, so it read `*msg` and wrote its name, length, control data
    // and `ret` bytes through its iovecs.
    let m = unsafe { &*msg };
    if events::is_tracked(fd) {
        if events::events_on() && flags & (libc::MSG_PEEK | libc::MSG_ERRQUEUE) == 0 {
            // SAFETY: as above.
            unsafe { message_buffers(call, fd, m, m.msg_flags) };
        }
        // SAFETY: as above.
        unsafe { message_received(call, fd, m, ret, errno, flags) };
    }
    if !m.msg_control.is_null() && m.msg_controllen > 0 {
        // SAFETY: the kernel filled msg_controllen bytes of control data.
        let fds = unsafe { passed_fds(m) };
        if !fds.is_empty() {
            note(call, || events::on_received_fds(fd, &fds));
        }
    }
}

/// recvmmsg(fd, msgs, …, flags, …) returned `ret` with `errno`.
///
/// # Safety
/// The arguments are the caller's, just passed to recvmmsg(2).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn recvmmsg(
    call: u16,
    fd: c_int,
    msgs: *const mmsghdr,
    vlen: c_uint,
    flags: c_int,
    timeout: *const libc::timespec,
    ret: c_int,
    errno: c_int,
) {
    if !events::is_tracked(fd) {
        return;
    }
    for i in 0..ret.max(0) as usize {
        // SAFETY: the kernel filled the first `ret` messages and their msg_len.
        let m = unsafe { &*msgs.add(i) };
        // SAFETY: as above.
        unsafe { message_received(call, fd, &m.msg_hdr, m.msg_len as ssize_t, errno, flags) };
    }
    if ret < 0 {
        note(call, || {
            events::on_receive_result(fd, -1, 0, errno, flags, &events::NOTHING, None)
        });
    }
    if events::events_on() && flags & (libc::MSG_PEEK | libc::MSG_ERRQUEUE) == 0 {
        // The timeout is read only after a success: the kernel read it (and wrote back the
        // time left).
        let tmo = if ret >= 0 {
            // SAFETY: as above.
            unsafe { timespec_at(timeout) }
        } else {
            (0, 0)
        };
        // SAFETY: the kernel filled the first `ret` messages.
        unsafe { mmsg(call, fd, msgs, vlen, flags, ret, errno, tmo) };
    }
}

/// A timespec the kernel just read as (seconds, nanoseconds); (0, 0) for none, as tcpsnitch
/// writes it.
///
/// # Safety
/// `t` is null or was just read by the kernel.
pub(crate) unsafe fn timespec_at(t: *const libc::timespec) -> (i64, i64) {
    if t.is_null() {
        return (0, 0);
    }
    // SAFETY: per the contract.
    let t = unsafe { std::ptr::read_unaligned(t) };
    (t.tv_sec, t.tv_nsec)
}

/// poll or ppoll (call number `call`) returned `ret` >= 0 with `fds`: one record per tracked
/// socket in the set, for the event traces.
///
/// # Safety
/// `fds` is valid for `nfds` entries: the kernel just read and wrote them.
pub(crate) unsafe fn poll(
    call: u16,
    fds: *const libc::pollfd,
    nfds: libc::nfds_t,
    ret: c_int,
    timeout: (i64, i64),
) {
    if ret < 0 || fds.is_null() {
        return;
    }
    for i in 0..nfds as usize {
        // SAFETY: per the contract.
        let p = unsafe { std::ptr::read(fds.add(i)) };
        if events::is_tracked(p.fd) {
            note(call, || {
                events::on_ready(p.fd, ret, p.events as u16, p.revents as u16, timeout)
            });
        }
    }
}

/// select or pselect (call number `call`) returned `ret` with the sets the kernel rewrote: one
/// record per tracked socket they hold. The sets the caller asked with are overwritten by the
/// call, and reading them before it could fault where the kernel says EFAULT: only what came
/// back is known, and a descriptor comes back only in a set it was asked in.
///
/// # Safety
/// Each set is null or holds `nfds` bits the kernel just wrote (the call returned > 0).
pub(crate) unsafe fn select(
    call: u16,
    nfds: c_int,
    sets: [*const libc::fd_set; 3],
    ret: c_int,
    timeout: (i64, i64),
) {
    if ret <= 0 {
        return;
    }
    let bit = |set: *const libc::fd_set, fd: usize| -> bool {
        if set.is_null() {
            return false;
        }
        // SAFETY: per the contract, the set holds word fd / 64 (fd < nfds); the kernel's
        // layout is an array of unsigned longs, bit fd % 64 of word fd / 64.
        let word = unsafe { std::ptr::read_unaligned((set as *const u64).add(fd / 64)) };
        word >> (fd % 64) & 1 == 1
    };
    for fd in 0..nfds.max(0) as usize {
        let got = u16::from(bit(sets[0], fd))
            | u16::from(bit(sets[1], fd)) << 1
            | u16::from(bit(sets[2], fd)) << 2;
        if got != 0 && events::is_tracked(fd as c_int) {
            note(call, || {
                events::on_ready(fd as c_int, ret, got, got, timeout)
            });
        }
    }
}

/// Record one received message (after recvmsg/recvmmsg filled it with `got` bytes).
///
/// # Safety
/// `msg` is a valid msghdr the kernel just filled.
unsafe fn message_received(
    call: u16,
    fd: c_int,
    msg: &msghdr,
    got: ssize_t,
    errno: c_int,
    flags: c_int,
) {
    if flags & (libc::MSG_PEEK | libc::MSG_ERRQUEUE) != 0 {
        // A peek moves nothing; the error queue holds the kernel's notes about sent packets
        // (timestamps, copies of sent bytes), not bytes from the peer.
        return;
    }
    // SAFETY: per the contract.
    let iov = unsafe { iovecs(msg.msg_iov, msg.msg_iovlen) };
    let requested = iov_total(iov);
    let data = IoVecs {
        iov,
        total: filled(got, requested, flags, events::is_datagram(fd)),
    };
    // SAFETY: per the contract; the kernel set msg_namelen.
    let src = unsafe { addr_in(msg.msg_name as *const sockaddr, msg.msg_namelen) };
    note(call, || {
        events::on_receive_result(fd, got, requested, errno, flags, &data, src)
    });
}
