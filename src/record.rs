//! One record per intercepted call: what the traced process tells the collector.
//!
//! A record is a fixed [`HEADER_LEN`]-byte header followed by `data_len` payload bytes. Producer
//! and consumer are processes of one machine sharing memory, so fields are native-endian. Encoding
//! never allocates (it runs inside hooks); decoding checks every length, so a torn or hostile
//! record gives `None`, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::ops::Range;

/// What happened. The numbers are the wire format between recorder and collector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Kind {
    /// The library loaded in process `pid` (`arg1` 0: a new process or an exec, whose
    /// descriptor scan follows) or a fork child took its own ring (`arg1` 1; `arg0` the parent).
    /// With `--events`, a new image's `data` is its program name (`argv[0]`'s base name).
    /// `errno` is [`BY_TRACER`] when the system-call tracer writes this ring: its records end
    /// with its Exit (or Detached), whatever the kernel says of the pid; [`TLS_ONLY`] when the
    /// library writes only TLS records beside the tracer's (that Start is not a new image: it
    /// only names the ring's writer).
    Start = 1,
    /// A socket found open at load: `fd`, `arg0` its type, `arg1` its inode, `ret` 1 when
    /// listening, `addr` the peer and `local` the local address.
    Discovered = 2,
    /// The load-time scan is complete: descriptors of this pid not discovered are gone (exec
    /// closed them).
    Scanned = 3,
    /// `fork()` in this process returned child `ret`; the timestamp is taken before the fork.
    Fork = 4,
    /// The process is leaving through `exit` or `_exit`: end what it holds.
    Exit = 5,
    /// The tracer let the process go (`-p`, at ^C): it runs on, its connections open. Like
    /// Exit, its records end here; unlike Exit, nothing of its is closed.
    Detached = 6,
    /// `socket()` returned `ret`, an IPv4/IPv6 socket whose inode is `arg0`; `arg1` holds its
    /// type with flags (bits 0-31), its domain (32-47) and protocol (48-63).
    Socket = 10,
    /// `connect(fd, addr)` returned `ret` with `errno`; `local` when the kernel had one; `arg0`
    /// the caller's address family (AF_UNSPEC: the association is dissolved; -1: unreadable).
    Connect = 11,
    /// `bind(fd, addr)` succeeded (`local` the address bound), or with `--events` failed
    /// (`ret` -1, `errno`).
    Bind = 12,
    /// `listen(fd, arg0)` succeeded (`arg0` the backlog).
    Listen = 13,
    /// `accept(fd)` returned `ret`, a connection from `addr` to `local` (inode `arg1`; `arg0`
    /// accept4's flags).
    Accept = 14,
    /// `shutdown(fd, arg0)` succeeded.
    Shutdown = 15,
    /// `close(fd)` is about to run. `ret` is [`CLOSE_OWN`] when the system-call tracer saw this
    /// very process make it, [`CLOSE_BY_VFORK_CHILD`] when the library's `vfork` hook knows a
    /// vfork child made it (under its parent's pid: the child shares its parent's memory), 0
    /// when the library cannot tell (the collector then asks `/proc`).
    Close = 16,
    /// Descriptors `arg0..=arg1` are about to be closed (close_range, closefrom); `ret` as for
    /// Close.
    CloseRange = 17,
    /// `fd` was duplicated onto `ret` (dup family, fcntl F_DUPFD); for the event trace, `arg0`
    /// holds dup3's flags or fcntl's command, `arg1` fcntl's argument.
    Dup = 18,
    /// A call that creates descriptors returned `ret` (and `arg0` when it made two, as pipe
    /// does, else -1): whatever the numbers named before was closed where no hook saw it.
    NewFd = 19,
    /// `getsockopt(fd, SOL_SOCKET, SO_ERROR)` gave `arg0`.
    SoError = 20,
    /// A send call on `fd` that asked to send `arg0` bytes (0: not said) returned `ret` (with
    /// `errno`); `data` is what the kernel took, `addr`
    /// the destination the caller named, `arg1` the call's MSG_* flags (MSG_OOB: the last byte
    /// is urgent; MSG_FASTOPEN), `local` the local address when the send connected the socket.
    Send = 21,
    /// A receive call on `fd` asked for `arg0` bytes and returned `ret` (with `errno`); `data`
    /// is what it filled, `addr` the sender it reported, `arg1` the call's MSG_* flags. On a
    /// stream socket with MSG_TRUNC, `ret` bytes were discarded unread and `data` is empty;
    /// with MSG_OOB, `data` is the urgent byte. MSG_PEEK and MSG_ERRQUEUE calls are not recorded.
    Recv = 22,
    /// Sockets arrived in an SCM_RIGHTS message on `fd`: `data` is (number as i64, socket inode
    /// as u64) pairs, native-endian.
    Received = 23,
    /// Descriptors sent in an SCM_RIGHTS message on `fd`: `data` is their numbers (i32 each).
    /// In flight, they keep their sockets open even if the sender closes its copies.
    Passed = 24,
    /// Recorded only for event traces (`--events`): `setsockopt`/`getsockopt(fd, arg0, …)`
    /// returned `ret` (with `errno`); `arg1` holds the option name (bits 0-31) and the option's
    /// length (32-63: what the caller gave setsockopt, what getsockopt reported; 0 when the
    /// call failed, as it is not read then); `data` the option's first bytes, when it succeeded.
    SockOpt = 25,
    /// Recorded only for event traces: `getsockname`/`getpeername(fd)` returned `ret` (with
    /// `errno`). The address is not read from the caller (its buffer's size is unknown after
    /// the call): the collector knows it.
    SockName = 26,
    /// Recorded only for event traces, just before the Send or Recv record of the same call on
    /// this thread: the call's vector of `arg0` buffers, `data` their sizes (u64 each, native
    /// endian, at most 64: empty when the call failed and the vector was not read); for
    /// sendmsg/recvmsg `arg1` is the control data's length (-1 for writev/readv), `ret` the
    /// message flags recvmsg returned, and `ssl`, when its bit 63 is set, the first control
    /// message's level (bits 0-31) and type (32-62).
    IoVec = 27,
    /// Recorded only for event traces: `fcntl` or `ioctl(fd, arg0, arg1)` returned `ret` (with
    /// `errno`); `arg1` is the argument's value, never followed.
    FdControl = 28,
    /// Recorded only for event traces: the `close(fd)` announced by a Close record returned
    /// `ret` (with `errno`).
    Closed = 29,
    /// SSL object `ssl` talks through `fd`.
    TlsFd = 30,
    /// Plaintext through SSL object `ssl`: written by the program (`arg0` 0) or read (`arg0` 1).
    TlsData = 31,
    /// The TLS peer of `ssl` closed its session (close_notify).
    TlsEof = 32,
    /// SSL object `ssl` has no descriptor: it reads its ciphertext from memory BIO `arg0` and
    /// writes it to memory BIO `arg1` (0: that side is not a memory BIO), and the program moves
    /// it between them and a socket itself.
    TlsBios = 33,
    /// The program read a TLS handshake record's ciphertext out of memory BIO `arg0` (`arg1` 0:
    /// on its way to the peer) or wrote it in (`arg1` 1: it came from the peer); `ret` is the
    /// chunk's length and `data` its first bytes, enough to know it again on a socket.
    TlsCipher = 34,
    /// A TLS library logged one of a session's secrets: `data` is the line in NSS's key log
    /// format (`LABEL <client random> <secret>`, hex, no newline); `ssl` the object it belongs
    /// to (an SSL object, a GnuTLS session).
    TlsKey = 35,
    /// A TLS library of this process logs its sessions' keys through us from now on (ours was
    /// installed on an OpenSSL context or a GnuTLS session; `ssl` is that object): its clients'
    /// handshakes may wait for their keys (`collector::key_hold`).
    TlsKeylog = 36,
    /// The process's environment names a key log file (`SSLKEYLOGFILE`) its TLS libraries may
    /// write (NSS writes its keys nowhere else): `data` is its absolute path, `arg0` its size
    /// and `arg1` its inode at load (-1 and 0 when it did not exist), so that the collector
    /// reads only the lines written since.
    KeyLogFile = 37,
    /// Recorded only for event traces: poll, ppoll, select or pselect returned `ret` (never
    /// negative: a failed call's sets are not read) and socket `fd` was in its set. `arg0`
    /// holds the events asked for (bits 0-15) and those returned (16-31): POLL* bits for the
    /// poll family; for the select family READ 1, WRITE 2, EXCEPT 4, of the returned sets
    /// only (the sets asked for are gone when the call returns). `arg1` and `ssl` are the
    /// timeout's seconds and nanoseconds (both 0 without one; for select, the time it left).
    Ready = 38,
    /// Recorded only for event traces: `epoll_ctl(arg0 >> 32, arg0 as op, fd, …)` on socket
    /// `fd` returned `ret` (with `errno`); `arg1` the events asked for and `ssl` the data the
    /// program gave (both 0 when the event was not read: a failure, or EPOLL_CTL_DEL).
    EpollCtl = 39,
    /// Recorded only for event traces: epoll_wait or epoll_pwait on epoll descriptor `fd`
    /// returned `ret` > 0 events with timeout `arg0` (milliseconds); `data` is the array the
    /// kernel filled (`struct epoll_event`, this machine's layout). The collector maps each
    /// event's data back to a socket through the EpollCtl records; the hooks keep no table.
    EpollWait = 40,
    /// Recorded only for event traces: sockatmark, isfdtype (`arg0` the type asked about) or
    /// fdopen (`data` its mode; `ret` 1 when it returned a stream, else 0) on socket `fd`
    /// returned `ret` (with `errno`).
    SockCall = 41,
    /// Recorded only for event traces, after the Send or Recv records of the same sendmmsg or
    /// recvmmsg on this thread: the call (`arg0` messages asked, `arg1` its flags) returned
    /// `ret` (with `errno`). `data` is i64 words: recvmmsg's timeout (seconds, nanoseconds; 0
    /// and 0 without one or for sendmmsg), then for each message the kernel handled: its
    /// `msg_len`, its returned `msg_flags`, its control data's length, its first control
    /// message (level in bits 0-31, type in 32-62, bit 63 set; 0 when none), its buffer count
    /// and the sizes of its first ones (at most [`MMSG_SIZES`]).
    Mmsg = 42,
    /// `--backend both`: this thread enters (`arg0` 1) or leaves (0) the outermost call of a TLS
    /// library on object `ssl`; the tracer's socket records on this thread in between carry
    /// its ciphertext.
    TlsCall = 43,
}

/// The buffer sizes a [`Kind::Mmsg`] record keeps per message.
pub const MMSG_SIZES: usize = 16;

impl Kind {
    /// A TLS library's report: what the system-call tracer cannot see (`--backend both`).
    pub fn is_tls(self) -> bool {
        use Kind::*;
        matches!(
            self,
            TlsFd
                | TlsData
                | TlsEof
                | TlsBios
                | TlsCipher
                | TlsKey
                | TlsKeylog
                | TlsCall
                | KeyLogFile
        )
    }

    fn from_u16(v: u16) -> Option<Kind> {
        use Kind::*;
        Some(match v {
            1 => Start,
            2 => Discovered,
            3 => Scanned,
            4 => Fork,
            5 => Exit,
            6 => Detached,
            10 => Socket,
            11 => Connect,
            12 => Bind,
            13 => Listen,
            14 => Accept,
            15 => Shutdown,
            16 => Close,
            17 => CloseRange,
            18 => Dup,
            19 => NewFd,
            20 => SoError,
            21 => Send,
            22 => Recv,
            23 => Received,
            24 => Passed,
            25 => SockOpt,
            26 => SockName,
            27 => IoVec,
            28 => FdControl,
            29 => Closed,
            30 => TlsFd,
            31 => TlsData,
            32 => TlsEof,
            33 => TlsBios,
            34 => TlsCipher,
            35 => TlsKey,
            36 => TlsKeylog,
            37 => KeyLogFile,
            38 => Ready,
            39 => EpollCtl,
            40 => EpollWait,
            41 => SockCall,
            42 => Mmsg,
            43 => TlsCall,
            _ => return None,
        })
    }
}

/// Start's `errno` in a ring the system-call tracer writes.
pub const BY_TRACER: i32 = 1;
/// Start's `errno` in a ring the preload library writes beside the tracer (`--backend both`).
pub const TLS_ONLY: i32 = 2;

/// One call, as the recorder saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub kind: Kind,
    /// Which intercepted function ([`crate::call_name`] names it).
    pub call: u16,
    pub pid: i32,
    pub tid: i32,
    pub fd: i32,
    /// CLOCK_MONOTONIC, nanoseconds.
    pub ts_ns: u64,
    pub ret: i64,
    pub errno: i32,
    pub arg0: i64,
    pub arg1: i64,
    /// The SSL object of the TLS call this call was made inside, or the subject of a Tls* record.
    pub ssl: u64,
    pub addr: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
    pub data: &'a [u8],
}

impl<'a> Record<'a> {
    /// A record of `kind` with every other field empty.
    pub const fn new(kind: Kind) -> Record<'static> {
        Record {
            kind,
            call: 0,
            pid: 0,
            tid: 0,
            fd: -1,
            ts_ns: 0,
            ret: 0,
            errno: 0,
            arg0: 0,
            arg1: 0,
            ssl: 0,
            addr: None,
            local: None,
            data: &[],
        }
    }

    /// The bytes the whole record takes (header and payload).
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.data.len()
    }

    /// Write the header; the caller copies `data` (or `data_len` bytes gathered from elsewhere)
    /// right after it. `data_len` is given separately so a scattered payload need not be joined.
    pub fn encode_header(&self, data_len: usize, out: &mut [u8; HEADER_LEN]) {
        put(out, field::KIND, &(self.kind as u16).to_ne_bytes());
        put(out, field::CALL, &self.call.to_ne_bytes());
        put(out, field::FD, &self.fd.to_ne_bytes());
        put(out, field::TS, &self.ts_ns.to_ne_bytes());
        put(out, field::RET, &self.ret.to_ne_bytes());
        put(out, field::ERRNO, &self.errno.to_ne_bytes());
        put(out, field::TID, &self.tid.to_ne_bytes());
        put(out, field::ARG0, &self.arg0.to_ne_bytes());
        put(out, field::ARG1, &self.arg1.to_ne_bytes());
        put(out, field::SSL, &self.ssl.to_ne_bytes());
        encode_addr(self.addr, &mut out[field::ADDR]);
        encode_addr(self.local, &mut out[field::LOCAL]);
        put(out, field::DATA_LEN, &(data_len as u32).to_ne_bytes());
        put(out, field::PID, &self.pid.to_ne_bytes());
    }

    /// Read a record from `bytes` (header then payload); `None` when it is not one.
    pub fn decode(bytes: &'a [u8]) -> Option<Record<'a>> {
        let head = bytes.get(..HEADER_LEN)?;
        let data_len = u32::from_ne_bytes(arr(head, field::DATA_LEN)) as usize;
        let data = bytes.get(HEADER_LEN..HEADER_LEN.checked_add(data_len)?)?;
        Some(Record {
            kind: Kind::from_u16(u16::from_ne_bytes(arr(head, field::KIND)))?,
            call: u16::from_ne_bytes(arr(head, field::CALL)),
            pid: i32::from_ne_bytes(arr(head, field::PID)),
            tid: i32::from_ne_bytes(arr(head, field::TID)),
            fd: i32::from_ne_bytes(arr(head, field::FD)),
            ts_ns: u64::from_ne_bytes(arr(head, field::TS)),
            ret: i64::from_ne_bytes(arr(head, field::RET)),
            errno: i32::from_ne_bytes(arr(head, field::ERRNO)),
            arg0: i64::from_ne_bytes(arr(head, field::ARG0)),
            arg1: i64::from_ne_bytes(arr(head, field::ARG1)),
            ssl: u64::from_ne_bytes(arr(head, field::SSL)),
            addr: decode_addr(&head[field::ADDR]),
            local: decode_addr(&head[field::LOCAL]),
            data,
        })
    }
}

/// The intercepted functions, numbered by position (0: none), for pcapng comments.
pub const CALLS: &[&str] = &[
    "",
    "socket",
    "connect",
    "bind",
    "listen",
    "accept",
    "accept4",
    "shutdown",
    "close",
    "getsockopt",
    "write",
    "send",
    "sendto",
    "writev",
    "sendmsg",
    "sendmmsg",
    "read",
    "recv",
    "recvfrom",
    "__read_chk",
    "__recv_chk",
    "__recvfrom_chk",
    "readv",
    "recvmsg",
    "recvmmsg",
    "dup",
    "dup2",
    "dup3",
    "fcntl",
    "fcntl64",
    "close_range",
    "closefrom",
    "sendfile",
    "sendfile64",
    "fork",
    "exit",
    "_exit",
    "_Exit",
    "SSL_read",
    "SSL_write",
    "SSL_read_ex",
    "SSL_write_ex",
    "SSL_peek",
    "SSL_peek_ex",
    "SSL_do_handshake",
    "SSL_connect",
    "SSL_accept",
    "SSL_shutdown",
    "SSL_free",
    "SSL_set_fd",
    "PR_Read",
    "PR_Write",
    "PR_Recv",
    "PR_Send",
    "PR_Writev",
    "PR_Connect",
    "PR_ConnectContinue",
    "SSL_ForceHandshake",
    "PR_Close",
    "gnutls_record_send",
    "gnutls_record_send2",
    "gnutls_record_send_range",
    "gnutls_record_uncork",
    "gnutls_record_recv",
    "gnutls_record_recv_seq",
    "gnutls_record_recv_packet",
    "gnutls_handshake",
    "gnutls_bye",
    "open",
    "open64",
    "openat",
    "openat64",
    "creat",
    "creat64",
    "pipe",
    "pipe2",
    "socketpair",
    "eventfd",
    "epoll_create",
    "epoll_create1",
    "timerfd_create",
    "signalfd",
    "memfd_create",
    "inotify_init",
    "inotify_init1",
    "getsockname",
    "getpeername",
    "fwrite",
    "fwrite_unlocked",
    "_IO_fwrite",
    "fputs",
    "fputs_unlocked",
    "_IO_fputs",
    "puts",
    "_IO_puts",
    "fputc",
    "fputc_unlocked",
    "putc",
    "putc_unlocked",
    "_IO_putc",
    "putchar",
    "putchar_unlocked",
    "printf",
    "fprintf",
    "dprintf",
    "vprintf",
    "vfprintf",
    "vdprintf",
    "__printf_chk",
    "__fprintf_chk",
    "__dprintf_chk",
    "__vprintf_chk",
    "__vfprintf_chk",
    "__vdprintf_chk",
    "_IO_printf",
    "_IO_fprintf",
    "_IO_vfprintf",
    "fread",
    "fread_unlocked",
    "_IO_fread",
    "__fread_chk",
    "__fread_unlocked_chk",
    "fgets",
    "fgets_unlocked",
    "_IO_fgets",
    "__fgets_chk",
    "__fgets_unlocked_chk",
    "fgetc",
    "fgetc_unlocked",
    "getc",
    "getc_unlocked",
    "_IO_getc",
    "getchar",
    "getchar_unlocked",
    "getline",
    "getdelim",
    "__getdelim",
    "fclose",
    "syscall",
    "BIO_read",
    "BIO_write",
    "BIO_read_ex",
    "BIO_write_ex",
    "BIO_gets",
    "BIO_puts",
    "setsockopt",
    "ioctl",
    "poll",
    "__poll_chk",
    "ppoll",
    "__ppoll_chk",
    "select",
    "pselect",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "sockatmark",
    "isfdtype",
    "fdopen",
];

/// The number of call `name` (0 when it is not in [`CALLS`]); usable in constants.
pub const fn call_id(name: &str) -> u16 {
    let mut i = 0;
    while i < CALLS.len() {
        if eq(CALLS[i].as_bytes(), name.as_bytes()) {
            return i as u16;
        }
        i += 1;
    }
    0
}

const fn eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The name of call number `id`.
pub fn call_name(id: u16) -> &'static str {
    CALLS.get(id as usize).copied().unwrap_or("")
}

/// Whether call number `id` is one of NSPR's or NSS's (the hooks of `nspr.rs`).
pub fn is_nss_call(id: u16) -> bool {
    let name = call_name(id);
    name.starts_with("PR_") || name == "SSL_ForceHandshake"
}

/// Header size in bytes.
pub const HEADER_LEN: usize = 104;

/// A Close or CloseRange record's `ret`: the tracer saw this very process make the call.
pub const CLOSE_OWN: i64 = 1;
/// A Close or CloseRange record's `ret`: a vfork child made the call, under its parent's pid.
pub const CLOSE_BY_VFORK_CHILD: i64 = 2;

mod field {
    use super::Field;
    pub const KIND: Field = 0..2;
    pub const CALL: Field = 2..4;
    pub const FD: Field = 4..8;
    pub const TS: Field = 8..16;
    pub const RET: Field = 16..24;
    pub const ERRNO: Field = 24..28;
    pub const TID: Field = 28..32;
    pub const ARG0: Field = 32..40;
    pub const ARG1: Field = 40..48;
    pub const SSL: Field = 48..56;
    /// Address: family tag (0 none, 4, 6), a pad byte, port (big-endian), 16 address bytes.
    pub const ADDR: Field = 56..76;
    pub const LOCAL: Field = 76..96;
    pub const DATA_LEN: Field = 96..100;
    pub const PID: Field = 100..104;
}

type Field = Range<usize>;

fn put(out: &mut [u8], f: Field, bytes: &[u8]) {
    out[f].copy_from_slice(bytes);
}

fn arr<const N: usize>(head: &[u8], f: Field) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&head[f]);
    a
}

fn encode_addr(addr: Option<SocketAddr>, out: &mut [u8]) {
    out.fill(0);
    let Some(addr) = addr else { return };
    out[2..4].copy_from_slice(&addr.port().to_be_bytes());
    match addr.ip() {
        IpAddr::V4(v4) => {
            out[0] = 4;
            out[4..8].copy_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out[0] = 6;
            out[4..20].copy_from_slice(&v6.octets());
        }
    }
}

fn decode_addr(b: &[u8]) -> Option<SocketAddr> {
    let port = u16::from_be_bytes([b[2], b[3]]);
    match b[0] {
        4 => Some(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::new(b[4], b[5], b[6], b[7]),
            port,
        ))),
        6 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&b[4..20]);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(o),
                port,
                0,
                0,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record<'static> {
        Record {
            kind: Kind::Send,
            call: 7,
            pid: 4242,
            tid: 4243,
            fd: 5,
            ts_ns: 0x0102_0304_0506_0708,
            ret: 3,
            errno: 0,
            arg0: -1,
            arg1: 1 << 40,
            ssl: 0xdead_beef,
            addr: Some("127.0.0.1:8080".parse().expect("addr")),
            local: Some("[::1]:443".parse().expect("addr")),
            data: b"abc",
        }
    }

    fn encode(r: &Record) -> Vec<u8> {
        let mut head = [0u8; HEADER_LEN];
        r.encode_header(r.data.len(), &mut head);
        let mut v = head.to_vec();
        v.extend_from_slice(r.data);
        v
    }

    #[test]
    fn round_trips_every_field() {
        let r = sample();
        let bytes = encode(&r);
        assert_eq!(bytes.len(), r.encoded_len());
        assert_eq!(Record::decode(&bytes), Some(r));
    }

    #[test]
    fn addresses_have_a_fixed_layout() {
        let bytes = encode(&sample());
        assert_eq!(
            &bytes[field::ADDR],
            &[4, 0, 0x1f, 0x90, 127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(bytes[field::LOCAL.start], 6);
        assert_eq!(&bytes[field::LOCAL][2..4], &443u16.to_be_bytes());
    }

    #[test]
    fn torn_or_unknown_records_are_refused() {
        let bytes = encode(&sample());
        assert_eq!(Record::decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(Record::decode(&bytes[..50]), None);
        let mut bad = bytes.clone();
        bad[0..2].copy_from_slice(&999u16.to_ne_bytes());
        assert_eq!(Record::decode(&bad), None);
        let mut huge = bytes;
        huge[field::DATA_LEN].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(Record::decode(&huge), None);
    }
}
