//! What the tracer asks of the kernel about a stopped tracee: its registers, its memory
//! (`process_vm_readv`) and, through a momentary copy of one of its descriptors
//! (`pidfd_getfd`), what a socket is. A copy is closed at once: held, it would keep the
//! program's socket open after the program closed it.

use std::net::SocketAddr;

/// One system call as the registers show it (x86-64).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    pub nr: i64,
    pub args: [u64; 6],
    /// The return value (meaningful at syscall exit).
    pub ret: i64,
}

/// The registers of stopped thread `tid`.
pub fn regs(tid: i32) -> Option<Regs> {
    // SAFETY: user_regs_struct is plain data; all zeroes is a valid value.
    let mut r: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    // SAFETY: `tid` is our tracee in a ptrace-stop; the kernel writes one user_regs_struct.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGS,
            tid,
            std::ptr::null_mut::<libc::c_void>(),
            &mut r as *mut libc::user_regs_struct,
        )
    };
    (rc == 0).then_some(Regs {
        nr: r.orig_rax as i64,
        args: [r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9],
        ret: r.rax as i64,
    })
}

/// What the tracer reads of a tracee: its memory and its sockets. A trait so that the record
/// building in `calls` is tested without a process.
pub trait Tracee {
    /// Fill `buf` from the tracee's memory at `addr`; returns how many bytes could be read.
    fn read(&self, addr: u64, buf: &mut [u8]) -> usize;
    /// What socket descriptor `fd` is, asked of a momentary copy.
    fn socket(&self, fd: i32) -> Option<SockInfo>;
    /// Only its local address (what connect, bind and a first datagram need: three system
    /// calls where `socket` makes eight).
    fn local(&self, fd: i32) -> Option<SocketAddr>;
    /// Fill `dst` from the tracee's buffers `pieces` (base, length; their lengths add up to
    /// `dst.len()`), in order, up to the first that cannot be read whole; returns how many
    /// bytes were read.
    fn read_pieces(&self, pieces: &[(u64, u64)], dst: &mut [u8]) -> usize {
        let mut at = 0;
        for &(base, len) in pieces {
            let len = (len as usize).min(dst.len() - at);
            let got = self.read(base, &mut dst[at..at + len]);
            at += got;
            if got < len {
                break;
            }
        }
        at
    }
    /// Fill `out` from the file behind `fd` from `offset` (sendfile's source); returns how many
    /// bytes could be read.
    fn file_bytes(&self, fd: i32, offset: i64, out: &mut [u8]) -> usize;
    /// The file offset of `fd` now.
    fn file_offset(&self, fd: i32) -> Option<i64>;
}

/// One socket as the kernel describes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockInfo {
    pub inode: u64,
    pub domain: i32,
    pub ty: i32,
    pub protocol: i32,
    pub listening: bool,
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
}

/// A live tracee: process `pid`, reached through `pidfd`.
pub struct Process {
    pub pid: i32,
    pidfd: i32,
}

impl Process {
    /// Open `pid` for the tracer (`None` when the kernel has no pidfd_open: then sockets are
    /// known by their calls alone).
    pub fn open(pid: i32) -> Process {
        // SAFETY: pidfd_open takes a pid and flags (none: a pidfd is always close-on-exec); it returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
        Process { pid, pidfd: fd }
    }

    /// A copy of the tracee's `fd` for the length of `f`.
    fn with_copy<R>(&self, fd: i32, f: impl FnOnce(i32) -> R) -> Option<R> {
        if self.pidfd < 0 {
            return None;
        }
        // SAFETY: pidfd_getfd(pidfd, targetfd, flags) returns a new descriptor or -1.
        let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, self.pidfd, fd, 0) } as i32;
        if copy < 0 {
            return None;
        }
        let out = f(copy);
        crate::sys::close(copy);
        Some(out)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.pidfd >= 0 {
            crate::sys::close(self.pidfd);
        }
    }
}

impl Tracee for Process {
    fn read(&self, addr: u64, buf: &mut [u8]) -> usize {
        if addr == 0 || buf.is_empty() {
            return 0;
        }
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let remote = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // SAFETY: `local` is our own writable buffer of that length; the remote range is only
        // read by the kernel, which checks it in the tracee's address space.
        let n = unsafe { libc::process_vm_readv(self.pid, &local, 1, &remote, 1, 0) };
        n.max(0) as usize
    }

    fn socket(&self, fd: i32) -> Option<SockInfo> {
        self.with_copy(fd, |c| {
            let st = crate::sys::fstat(c).ok()?;
            if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
                return None;
            }
            let int = |name| crate::sys::sockopt_int(c, libc::SOL_SOCKET, name).unwrap_or(-1);
            Some(SockInfo {
                inode: st.st_ino,
                domain: int(libc::SO_DOMAIN),
                ty: int(libc::SO_TYPE),
                protocol: int(libc::SO_PROTOCOL),
                listening: int(libc::SO_ACCEPTCONN) == 1,
                local: crate::sys::local_addr(c),
                peer: crate::sys::peer_addr(c),
            })
        })
        .flatten()
    }

    fn local(&self, fd: i32) -> Option<SocketAddr> {
        self.with_copy(fd, crate::sys::local_addr).flatten()
    }

    fn read_pieces(&self, pieces: &[(u64, u64)], dst: &mut [u8]) -> usize {
        const BATCH: usize = 64;
        let empty = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let mut at = 0;
        for batch in pieces.chunks(BATCH) {
            let mut remote = [empty; BATCH];
            let mut want = 0usize;
            for (r, &(base, len)) in remote.iter_mut().zip(batch) {
                let len = (len as usize).min(dst.len() - at - want);
                *r = libc::iovec {
                    iov_base: base as *mut libc::c_void,
                    iov_len: len,
                };
                want += len;
            }
            if want == 0 {
                continue;
            }
            let local = libc::iovec {
                iov_base: dst[at..].as_mut_ptr().cast(),
                iov_len: want,
            };
            // SAFETY: `local` is `want` bytes of our own `dst` (the lengths are clamped to what
            // is left of it); the remote ranges are only read by the kernel, which checks them
            // in the tracee's address space.
            let n = unsafe {
                libc::process_vm_readv(self.pid, &local, 1, remote.as_ptr(), batch.len() as _, 0)
            };
            let n = n.max(0) as usize;
            at += n;
            if n < want {
                break;
            }
        }
        at
    }

    fn file_bytes(&self, fd: i32, offset: i64, out: &mut [u8]) -> usize {
        self.with_copy(fd, |c| {
            let mut done = 0;
            while done < out.len() {
                match crate::sys::pread(c, &mut out[done..], offset + done as i64) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => done += n,
                }
            }
            done
        })
        .unwrap_or(0)
    }

    fn file_offset(&self, fd: i32) -> Option<i64> {
        self.with_copy(fd, |c| crate::sys::tell(c).ok()).flatten()
    }
}

/// The inode of socket descriptor `fd` of `pid`, from its /proc link (`socket:[123]`).
pub fn socket_inode(pid: i32, fd: i32) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let s = link.to_str()?;
    s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// The descriptors `pid` holds now.
pub fn descriptors(pid: i32) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The threads of process `pid` now.
pub fn threads(pid: i32) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}
