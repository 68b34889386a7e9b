//! Raw system calls for the library's own I/O.
//!
//! Everything here goes through `libc::syscall`, never through a libc wrapper that our hooks
//! interpose, so the capture's own writes, opens and address look-ups are never intercepted.
//! Each function returns `Err(errno)` rather than touching the caller-visible `errno`… except that
//! the syscall wrapper itself sets `errno`; callers inside hooks restore it afterwards.

use std::ffi::CStr;
use std::net::SocketAddr;
use std::time::Duration;

use crate::sockaddr;

fn cvt(ret: libc::c_long) -> Result<libc::c_long, i32> {
    if ret < 0 {
        Err(errno())
    } else {
        Ok(ret)
    }
}

/// The calling thread's `errno`.
pub fn errno() -> i32 {
    // SAFETY: __errno_location always returns a valid pointer to this thread's errno.
    unsafe { *libc::__errno_location() }
}

/// Set the calling thread's `errno`.
pub fn set_errno(value: i32) {
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = value }
}

/// Write all of `bytes`, retrying partial writes and EINTR.
///
/// # References
/// write(2)
pub fn write_all(fd: i32, mut bytes: &[u8]) -> Result<(), i32> {
    while !bytes.is_empty() {
        // SAFETY: the pointer and length describe a live slice.
        let r = unsafe { libc::syscall(libc::SYS_write, fd, bytes.as_ptr(), bytes.len()) };
        match cvt(r) {
            Ok(0) => return Err(libc::EIO),
            Ok(n) => bytes = &bytes[n as usize..],
            Err(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Write all of `parts`, in order, with as few `writev` calls as the kernel allows, retrying
/// partial writes and EINTR. At most [`MAX_PARTS`] parts.
///
/// # References
/// writev(2)
pub fn writev_all(fd: i32, parts: &[&[u8]]) -> Result<(), i32> {
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MAX_PARTS];
    let mut count = 0;
    for part in parts.iter().filter(|p| !p.is_empty()).take(MAX_PARTS) {
        iov[count] = libc::iovec {
            iov_base: part.as_ptr() as *mut libc::c_void,
            iov_len: part.len(),
        };
        count += 1;
    }
    let mut first = 0;
    while first < count {
        // SAFETY: each of the `count - first` iovecs describes (the rest of) a live slice
        // borrowed for this call; writev only reads them.
        let r =
            unsafe { libc::syscall(libc::SYS_writev, fd, iov[first..].as_ptr(), count - first) };
        let mut n = match cvt(r) {
            Ok(0) => return Err(libc::EIO),
            Ok(n) => n as usize,
            Err(libc::EINTR) => continue,
            Err(e) => return Err(e),
        };
        // Skip what was written: whole parts, then the start of the next.
        while first < count && n >= iov[first].iov_len {
            n -= iov[first].iov_len;
            first += 1;
        }
        if first < count {
            // SAFETY: `n` is less than this part's length, so the pointer stays inside it.
            iov[first].iov_base = unsafe { (iov[first].iov_base as *mut u8).add(n) }.cast();
            iov[first].iov_len -= n;
        }
    }
    Ok(())
}

/// The most parts [`writev_all`] takes.
pub const MAX_PARTS: usize = 4;

/// Open `path` with `flags` and `mode`.
///
/// # References
/// openat(2)
pub fn open(path: &CStr, flags: i32, mode: u32) -> Result<i32, i32> {
    // SAFETY: `path` is NUL-terminated and outlives the call.
    let r = unsafe { libc::syscall(libc::SYS_openat, libc::AT_FDCWD, path.as_ptr(), flags, mode) };
    cvt(r).map(|fd| fd as i32)
}

/// Directory entries of the open directory `fd`, into `buf` (an 8-byte aligned buffer, so that
/// the kernel's `linux_dirent64` records are aligned). Returns the bytes filled; 0 at the end.
///
/// # References
/// getdents64(2)
pub fn getdents64(fd: i32, buf: &mut [u64]) -> Result<usize, i32> {
    let bytes = std::mem::size_of_val(buf);
    // SAFETY: `buf` is writable for `bytes` bytes.
    let r = unsafe { libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), bytes) };
    cvt(r).map(|n| n as usize)
}

/// The value of environment variable `name`, read in place: no copy, so no allocation (the
/// library's constructor must not be the program's first `malloc`). Valid until the
/// environment is changed; callers use it at once.
pub fn env(name: &CStr) -> Option<&'static CStr> {
    // SAFETY: `name` is NUL-terminated; getenv returns null or a NUL-terminated string in the
    // environment block.
    let p = unsafe { libc::getenv(name.as_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null and NUL-terminated (see above).
    Some(unsafe { CStr::from_ptr(p) })
}

/// Close `fd`, ignoring the result (there is nothing to do about a failed close of our file).
///
/// # References
/// close(2)
pub fn close(fd: i32) {
    // SAFETY: closing a descriptor number has no memory-safety requirement.
    unsafe { libc::syscall(libc::SYS_close, fd) };
}

/// Truncate `fd` to `len` bytes.
///
/// # References
/// ftruncate(2)
pub fn ftruncate(fd: i32, len: i64) -> Result<(), i32> {
    // SAFETY: no pointers involved.
    cvt(unsafe { libc::syscall(libc::SYS_ftruncate, fd, len) }).map(|_| ())
}

/// `fstat` of `fd`.
///
/// # References
/// fstat(2)
pub fn fstat(fd: i32) -> Result<libc::stat, i32> {
    // SAFETY: an all-zero `stat` is a valid value of a plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable `stat`.
    cvt(unsafe { libc::syscall(libc::SYS_fstat, fd, &mut st as *mut libc::stat) })?;
    Ok(st)
}

fn sock_name(nr: libc::c_long, fd: i32) -> Option<SocketAddr> {
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `ss` and `len` are valid and writable, `len` holds the buffer size.
    let r = unsafe {
        libc::syscall(
            nr,
            fd,
            &mut ss as *mut libc::sockaddr_storage,
            &mut len as *mut libc::socklen_t,
        )
    };
    if r < 0 {
        return None;
    }
    // SAFETY: the kernel filled `len` bytes of `ss`.
    unsafe { sockaddr::to_socket_addr(&ss as *const _ as *const libc::sockaddr, len) }
}

/// The local address of socket `fd`, if it is an IP socket.
///
/// # References
/// getsockname(2)
pub fn local_addr(fd: i32) -> Option<SocketAddr> {
    sock_name(libc::SYS_getsockname, fd)
}

/// The peer address of socket `fd`, if it is a connected IP socket.
///
/// # References
/// getpeername(2)
pub fn peer_addr(fd: i32) -> Option<SocketAddr> {
    sock_name(libc::SYS_getpeername, fd)
}

/// An integer socket option of `fd`; `Err` when the kernel (or a sandbox) refuses.
///
/// # References
/// getsockopt(2)
pub fn sockopt_int(fd: i32, level: i32, name: i32) -> Result<i32, i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid and writable.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_getsockopt,
            fd,
            level,
            name,
            &mut v as *mut libc::c_int,
            &mut len as *mut libc::socklen_t,
        )
    })?;
    Ok(v)
}

/// The source address the kernel would route from towards `dst`, found with a throw-away connected
/// UDP socket (connecting UDP sends nothing).
pub fn route_source(dst: SocketAddr) -> Option<std::net::IpAddr> {
    let family = if dst.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: no pointers involved.
    let fd = cvt(unsafe {
        libc::syscall(
            libc::SYS_socket,
            family,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            0,
        )
    })
    .ok()? as i32;
    let (ss, len) = sockaddr::from_socket_addr(dst);
    // SAFETY: `ss` holds a valid sockaddr of `len` bytes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_connect,
            fd,
            &ss as *const libc::sockaddr_storage,
            len,
        )
    };
    let ip = if r == 0 {
        local_addr(fd).map(|a| a.ip())
    } else {
        None
    };
    close(fd);
    ip
}

/// This process's id, straight from the kernel (not glibc's cache, which a vfork child shares).
pub fn getpid() -> i32 {
    // SAFETY: no arguments.
    unsafe { libc::syscall(libc::SYS_getpid) as i32 }
}

/// This thread's id.
pub fn gettid() -> i32 {
    // SAFETY: no arguments.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// Wall-clock time since the Unix epoch (vDSO, no syscall on x86-64).
pub fn now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// The text of `errno` value `e`.
pub fn strerror(e: i32) -> String {
    std::io::Error::from_raw_os_error(e)
        .to_string()
        .split(" (os error")
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Print one `netintercept: …` line on stderr, without going through our hooks.
pub fn report(line: &str) {
    let mut msg = String::with_capacity(line.len() + 15);
    msg.push_str("netintercept: ");
    msg.push_str(line);
    msg.push('\n');
    let _ = write_all(2, msg.as_bytes());
}

/// Read up to `buf.len()` bytes of `fd` at `offset` without moving its file offset.
///
/// # References
/// pread(2)
pub fn pread(fd: i32, buf: &mut [u8], offset: i64) -> Result<usize, i32> {
    // SAFETY: `buf` is a valid, writable slice of the given length.
    let r = unsafe { libc::syscall(libc::SYS_pread64, fd, buf.as_mut_ptr(), buf.len(), offset) };
    cvt(r).map(|n| n as usize)
}

/// The current file offset of `fd`.
///
/// # References
/// lseek(2)
pub fn tell(fd: i32) -> Result<i64, i32> {
    // SAFETY: no pointers involved.
    cvt(unsafe { libc::syscall(libc::SYS_lseek, fd, 0 as libc::off_t, libc::SEEK_CUR) })
}
