//! `TCP_INFO` taken from outside the traced programs: the collector copies the program's
//! descriptor with `pidfd_getfd`, asks the copy, and closes it at once.
//!
//! The program sees no system call of ours. The copy is closed before anything else is done
//! with the answer: a copy held open would keep the socket alive after the program closed its
//! own descriptor and move its FIN to whenever we let go. The copy is checked to be the socket
//! the collector follows (its inode), since the program may have closed the number and opened
//! something else under it meanwhile.
//!
//! `getsockopt(SO_ERROR)` is never asked: it clears the socket's pending error, which is the
//! program's to read.

use crate::fast_hash::HashMap;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::io::AsRawFd;

use super::sock_trace::J;

/// Room for the kernel's `struct tcp_info`, larger than any kernel's so far.
const MAX_LEN: usize = 512;

/// One `TCP_INFO` answer and the socket's addresses, as the kernel gave them.
#[derive(Clone)]
pub struct Sample {
    bytes: [u8; MAX_LEN],
    /// How many bytes the kernel filled: fields past it are not this kernel's.
    len: usize,
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
}

/// Why there is no sample.
#[derive(Debug, PartialEq, Eq)]
pub enum Missed {
    /// The descriptor no longer names that socket, or the process is gone.
    Gone,
    /// The kernel does not let the collector take samples (said once on stderr).
    Refused,
}

/// Copies descriptors out of traced processes, one pidfd per process.
#[derive(Default)]
pub struct Sampler {
    pidfds: HashMap<i32, OwnedFd>,
    /// Sampling was refused once: no more attempts (and no more lines) this run.
    refused: bool,
}

impl Sampler {
    /// `TCP_INFO` of socket `inode`, which `fd` of `pid` named when the collector last heard.
    pub fn sample(&mut self, pid: i32, fd: i32, inode: u64) -> Result<Sample, Missed> {
        if self.refused {
            return Err(Missed::Refused);
        }
        // Numbers of our own for processes that could not name themselves (see `name_process`).
        if pid <= 0 {
            return Err(Missed::Gone);
        }
        let pidfd = match self.pidfds.get(&pid) {
            Some(p) => p.as_raw_fd(),
            None => match pidfd_open(pid) {
                Ok(p) => self.pidfds.entry(pid).or_insert(p).as_raw_fd(),
                Err(libc::ESRCH) => return Err(Missed::Gone),
                Err(e) => return Err(self.refuse(pid, "pidfd_open", e)),
            },
        };
        let copy = match pidfd_getfd(pidfd, fd) {
            Ok(c) => c,
            Err(libc::EBADF) => return Err(Missed::Gone),
            Err(libc::ESRCH) => {
                self.pidfds.remove(&pid);
                return Err(Missed::Gone);
            }
            Err(e) => return Err(self.refuse(pid, "pidfd_getfd", e)),
        };
        let answer = ask(copy.as_raw_fd(), inode);
        // Observable side effect: none but this descriptor's end; the program's own stays.
        drop(copy);
        answer.ok_or(Missed::Gone)
    }

    /// Process `pid` is gone: let its pidfd go.
    pub fn forget(&mut self, pid: i32) {
        self.pidfds.remove(&pid);
    }

    fn refuse(&mut self, pid: i32, call: &str, e: i32) -> Missed {
        self.refused = true;
        self.pidfds.clear();
        eprintln!(
            "netintercept: cannot take TCP_INFO samples from outside the traced programs \
             ({call} of pid {pid}: {}): going on without them",
            std::io::Error::from_raw_os_error(e)
        );
        Missed::Refused
    }
}

/// The copy's answer, when it is socket `inode`.
fn ask(copy: i32, inode: u64) -> Option<Sample> {
    let st = crate::sys::fstat(copy).ok()?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK || st.st_ino != inode {
        return None;
    }
    let mut s = Sample {
        bytes: [0; MAX_LEN],
        len: MAX_LEN,
        local: None,
        peer: None,
    };
    let mut len = MAX_LEN as libc::socklen_t;
    // SAFETY: `bytes` is writable for `len` bytes and `len` is a valid socklen_t.
    let r = unsafe {
        libc::getsockopt(
            copy,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            s.bytes.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r != 0 {
        return None;
    }
    s.len = (len as usize).min(MAX_LEN);
    s.local = crate::sys::local_addr(copy);
    s.peer = crate::sys::peer_addr(copy);
    Some(s)
}

/// A pidfd for `pid`.
///
/// # References
/// pidfd_open(2)
fn pidfd_open(pid: i32) -> Result<OwnedFd, i32> {
    // SAFETY: no pointers; the result is a new descriptor or -1.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if r < 0 {
        return Err(crate::sys::errno());
    }
    // SAFETY: the kernel just gave us this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// A copy of descriptor `fd` of the process of `pidfd` (close-on-exec, as the kernel makes it).
///
/// # References
/// pidfd_getfd(2)
fn pidfd_getfd(pidfd: i32, fd: i32) -> Result<OwnedFd, i32> {
    // SAFETY: no pointers; the result is a new descriptor or -1.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) };
    if r < 0 {
        return Err(crate::sys::errno());
    }
    // SAFETY: the kernel just gave us this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// Where a field is in `struct tcp_info`.
#[derive(Clone, Copy)]
enum At {
    /// A whole byte, u16, u32 or u64 at this offset.
    U8(usize),
    U16(usize),
    U32(usize),
    U64(usize),
    /// Bits `shift..shift+width` of the byte at this offset (C bit-fields, little-endian
    /// allocation as GCC does on Linux).
    Bits(usize, u8, u8),
}

impl At {
    /// The first byte past the field.
    fn end(self) -> usize {
        match self {
            At::U8(o) | At::Bits(o, _, _) => o + 1,
            At::U16(o) => o + 2,
            At::U32(o) => o + 4,
            At::U64(o) => o + 8,
        }
    }
}

/// Every field of `struct tcp_info` (linux/tcp.h, as of Linux 6.18) in its order: tcpsnitch's
/// key where tcpsnitch writes the field (the kernel's name without `tcpi_`), the kernel's name
/// for the others.
const FIELDS: &[(&str, At)] = &[
    ("state", At::U8(0)),
    ("ca_state", At::U8(1)),
    ("retransmits", At::U8(2)),
    ("probes", At::U8(3)),
    ("backoff", At::U8(4)),
    ("options", At::U8(5)),
    ("snd_wscale", At::Bits(6, 0, 4)),
    ("rcv_wscale", At::Bits(6, 4, 4)),
    ("tcpi_delivery_rate_app_limited", At::Bits(7, 0, 1)),
    ("tcpi_fastopen_client_fail", At::Bits(7, 1, 2)),
    ("rto", At::U32(8)),
    ("ato", At::U32(12)),
    ("snd_mss", At::U32(16)),
    ("rcv_mss", At::U32(20)),
    ("unacked", At::U32(24)),
    ("sacked", At::U32(28)),
    ("lost", At::U32(32)),
    ("retrans", At::U32(36)),
    ("fackets", At::U32(40)),
    ("last_data_sent", At::U32(44)),
    ("last_ack_sent", At::U32(48)),
    ("last_data_recv", At::U32(52)),
    ("last_ack_recv", At::U32(56)),
    ("pmtu", At::U32(60)),
    ("rcv_ssthresh", At::U32(64)),
    ("rtt", At::U32(68)),
    ("rttvar", At::U32(72)),
    ("snd_ssthresh", At::U32(76)),
    ("snd_cwnd", At::U32(80)),
    ("advmss", At::U32(84)),
    ("reordering", At::U32(88)),
    ("rcv_rtt", At::U32(92)),
    ("rcv_space", At::U32(96)),
    ("total_retrans", At::U32(100)),
    ("tcpi_pacing_rate", At::U64(104)),
    ("tcpi_max_pacing_rate", At::U64(112)),
    ("tcpi_bytes_acked", At::U64(120)),
    ("tcpi_bytes_received", At::U64(128)),
    ("tcpi_segs_out", At::U32(136)),
    ("tcpi_segs_in", At::U32(140)),
    ("tcpi_notsent_bytes", At::U32(144)),
    ("tcpi_min_rtt", At::U32(148)),
    ("tcpi_data_segs_in", At::U32(152)),
    ("tcpi_data_segs_out", At::U32(156)),
    ("tcpi_delivery_rate", At::U64(160)),
    ("tcpi_busy_time", At::U64(168)),
    ("tcpi_rwnd_limited", At::U64(176)),
    ("tcpi_sndbuf_limited", At::U64(184)),
    ("tcpi_delivered", At::U32(192)),
    ("tcpi_delivered_ce", At::U32(196)),
    ("tcpi_bytes_sent", At::U64(200)),
    ("tcpi_bytes_retrans", At::U64(208)),
    ("tcpi_dsack_dups", At::U32(216)),
    ("tcpi_reord_seen", At::U32(220)),
    ("tcpi_rcv_ooopack", At::U32(224)),
    ("tcpi_snd_wnd", At::U32(228)),
    ("tcpi_rcv_wnd", At::U32(232)),
    ("tcpi_rehash", At::U32(236)),
    ("tcpi_total_rto", At::U16(240)),
    ("tcpi_total_rto_recoveries", At::U16(242)),
    ("tcpi_total_rto_time", At::U32(244)),
    ("tcpi_received_ce", At::U32(248)),
    ("tcpi_delivered_e1_bytes", At::U32(252)),
    ("tcpi_delivered_e0_bytes", At::U32(256)),
    ("tcpi_delivered_ce_bytes", At::U32(260)),
    ("tcpi_received_e1_bytes", At::U32(264)),
    ("tcpi_received_e0_bytes", At::U32(268)),
    ("tcpi_received_ce_bytes", At::U32(272)),
    // Linux 6.18's layout of the last four bytes (later kernels pack them as bit-fields).
    ("tcpi_accecn_fail_mode", At::U16(276)),
    ("tcpi_accecn_opt_seen", At::U16(278)),
];

/// The key names of the fields a kernel filling `len` bytes gives, in order.
#[cfg(test)]
fn field_names(len: usize) -> impl Iterator<Item = &'static str> {
    FIELDS
        .iter()
        .filter(move |(_, at)| at.end() <= len)
        .map(|(name, _)| *name)
}

impl Sample {
    /// A sample made of `bytes` (for tests: the kernel's answer, `bytes.len()` long).
    #[cfg(test)]
    pub fn from_bytes(bytes: &[u8]) -> Sample {
        let mut s = Sample {
            bytes: [0; MAX_LEN],
            len: bytes.len().min(MAX_LEN),
            local: None,
            peer: None,
        };
        s.bytes[..s.len].copy_from_slice(&bytes[..s.len]);
        s
    }

    /// Field `name`, when this kernel gave it.
    pub fn get(&self, name: &str) -> Option<u64> {
        let (_, at) = FIELDS.iter().find(|(n, _)| *n == name)?;
        self.read(*at)
    }

    fn read(&self, at: At) -> Option<u64> {
        if at.end() > self.len {
            return None;
        }
        let b = &self.bytes;
        let le = |o: usize, n: usize| {
            let mut v = [0u8; 8];
            v[..n].copy_from_slice(&b[o..o + n]);
            // The kernel writes in the machine's order; the collector runs on that machine.
            if cfg!(target_endian = "big") {
                v[..n].reverse();
            }
            u64::from_le_bytes(v)
        };
        Some(match at {
            At::U8(o) => b[o].into(),
            At::U16(o) => le(o, 2),
            At::U32(o) => le(o, 4),
            At::U64(o) => le(o, 8),
            At::Bits(o, shift, width) => u64::from((b[o] >> shift) & ((1u8 << width) - 1)),
        })
    }

    /// The socket's state (`TCP_ESTABLISHED` …).
    pub fn state(&self) -> u8 {
        self.bytes[0]
    }

    /// The `details` of a `tcp_info` event: every field this kernel gave, by name.
    pub(super) fn details(&self) -> Vec<(&'static str, J)> {
        FIELDS
            .iter()
            .filter_map(|&(name, at)| Some((name, J::UInt(self.read(at)?))))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table is the kernel's layout: each field starts where the one before it ended (or
    /// shares its byte, for bit-fields), and the whole is Linux 6.18's 280 bytes.
    #[test]
    fn fields_follow_each_other() {
        let mut end = 0;
        for (name, at) in FIELDS {
            match at {
                // A bit-field after the first of its byte shares that byte.
                At::Bits(o, shift, _) if *shift > 0 => assert_eq!(o + 1, end, "{name}"),
                At::U8(o) | At::U16(o) | At::U32(o) | At::U64(o) | At::Bits(o, _, _) => {
                    assert_eq!(*o, end, "{name}")
                }
            }
            end = at.end();
        }
        assert_eq!(end, 280);
        assert_eq!(field_names(280).count(), FIELDS.len());
        // tcpsnitch's 32 keys (and the two bit-fields it leaves out), then the kernel's names.
        let names: Vec<&str> = field_names(104).collect();
        assert_eq!(names.len(), 34);
        assert_eq!(names.last(), Some(&"total_retrans"));
    }

    /// Golden bytes: values land under their names, bit-fields included, and fields past the
    /// kernel's length are absent.
    #[test]
    fn values_by_name() {
        let mut raw = vec![0u8; 124];
        raw[0] = 1; // ESTABLISHED
        raw[6] = 0x7a; // rcv_wscale 7, snd_wscale 10
        raw[7] = 0b101; // app_limited 1, fastopen_client_fail 2
        raw[100..104].copy_from_slice(&5u32.to_ne_bytes());
        raw[120..124].copy_from_slice(&[1, 2, 0, 0]);
        let s = Sample::from_bytes(&raw);
        assert_eq!(s.state(), 1);
        assert_eq!(s.get("snd_wscale"), Some(10));
        assert_eq!(s.get("rcv_wscale"), Some(7));
        assert_eq!(s.get("tcpi_delivery_rate_app_limited"), Some(1));
        assert_eq!(s.get("tcpi_fastopen_client_fail"), Some(2));
        assert_eq!(s.get("total_retrans"), Some(5));
        // tcpi_bytes_acked is 8 bytes from 120: not all given.
        assert_eq!(s.get("tcpi_bytes_acked"), None);
        let d = s.details();
        assert_eq!(d.len(), field_names(124).count());
        assert!(d.iter().all(|(k, _)| *k != "tcpi_bytes_acked"));
    }
}
