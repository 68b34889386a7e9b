//! The run-wide connection table: records in, packets out.
//!
//! Connections are keyed by socket identity, not by descriptor: every process of the run has a
//! descriptor table here mapping its numbers to connections, and a socket shared by fork, exec,
//! dup or SCM_RIGHTS is one connection with one sequence space, ended (FIN) when its last holder
//! closes it or is gone. What the records do not say (a descriptor's socket identity at this
//! moment, a route's source address) comes from a [`Kernel`], so unit tests script it.

use crate::fast_hash::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use synth::{Side, TcpStream};

use super::key_hold::{self, Awaited, KeyHolds, Sessions};
use super::mem_bio::{Held, MemBios};
use crate::record::{self, Kind, Record};
use crate::tls::Mode;

/// What the collector asks the kernel, from outside the traced processes.
pub trait Kernel {
    /// The socket inode descriptor `fd` of `pid` names now, if it names a socket.
    fn inode(&mut self, pid: i32, fd: i32) -> Option<u64>;
    /// A descriptor this machine never saw created (received with SCM_RIGHTS): what it is.
    fn discover(&mut self, pid: i32, fd: i32) -> Option<Found>;
    /// The source address the kernel would use towards `dst`.
    fn route_source(&mut self, dst: SocketAddr) -> Option<IpAddr>;
}

/// A socket found from outside.
#[derive(Clone, Copy, Debug)]
pub struct Found {
    pub inode: u64,
    pub stream: bool,
    pub listening: bool,
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
}

/// Where a packet came from, for pcapng comments and per-process files.
#[derive(Clone, Copy, Debug)]
pub struct Origin {
    pub pid: i32,
    pub tid: i32,
    pub fd: i32,
    pub call: u16,
    pub ts_ns: u64,
    /// What a reader should know about this packet that its headers cannot say.
    pub note: Option<Note>,
}

/// A fact about one packet, for its pcapng comment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Note {
    /// This ACK covers bytes the program discarded unread (a stream `recv` with MSG_TRUNC):
    /// the gap before it is real, and what the bytes were is not known.
    Discarded(u64),
    /// This packet starts a TLS connection (its ClientHello) that no library we hook made or
    /// took: TLS linked into the program (node's OpenSSL, BoringSSL, Go, rustls), whose
    /// plaintext and keys are out of reach.
    UnhookedTls,
    /// A handshake made up for a connection found already open (inherited over exec, or held
    /// by a process netintercept attached to): its real handshake was never seen.
    FoundOpen,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::Discarded(n) => write!(f, "{n} bytes discarded unread (MSG_TRUNC): not captured"),
            Note::UnhookedTls => write!(f, "TLS by a library we do not hook: ciphertext"),
            Note::FoundOpen => write!(f, "synthesized: the connection was found already open"),
        }
    }
}

/// Receives each synthesized packet.
pub trait PacketSink {
    fn packet(&mut self, origin: &Origin, bytes: &[u8]);
    /// A TLS library of `origin`'s process logged key log line `line` (NSS format, no newline).
    fn tls_key(&mut self, _origin: &Origin, _line: &[u8]) {}
    /// `origin`'s process names key log file `path` in its environment (`Kind::KeyLogFile`:
    /// `size` and `inode` as it was at load), for the collector to read.
    fn key_log_file(&mut self, _origin: &Origin, _path: &[u8], _size: i64, _inode: u64) {}
    /// `origin`'s process runs TLS through NSS, whose keys reach us only through a key log file,
    /// and its environment names none: the capture of ciphertext will not decrypt.
    fn nss_without_keys(&mut self, _origin: &Origin) {}
}

type ConnId = usize;

/// A socket's capture state.
struct Conn {
    /// Descriptors (in any process) referring to it.
    holders: u32,
    inode: u64,
    /// A TLS library we hook runs it: in plain mode its socket-level bytes are ciphertext and
    /// are not written.
    tls: bool,
    /// Its first payload has been looked at (see `first_payload`).
    first_seen: bool,
    /// What it sends and receives is held until its client has logged its keys (see
    /// `key_hold`).
    await_keys: Option<Awaited>,
    /// A recv of it was held back once (see `mem_bio`): never again.
    held: bool,
    proto: Proto,
    /// In `both` mode, the plaintext's parallel stream.
    mirror: Option<Box<TcpStream>>,
    /// The address `bind` gave it, kept past a dissolved association (AF_UNSPEC) as the kernel
    /// keeps it; a connection with no reported local address starts from it.
    bound: Option<SocketAddr>,
}

enum Proto {
    Tcp(Tcp),
    Udp(Udp),
}

enum Tcp {
    /// Not connected: new, or after a failed or dissolved connection (the kernel lets such a
    /// socket connect again).
    Fresh,
    /// A SYN has left (EINPROGRESS, EINTR, or a Fast Open send without data); the outcome is
    /// learnt from a later call.
    Connecting {
        remote: SocketAddr,
        local: Option<SocketAddr>,
        /// The call that connected: its handshake is written in its name whichever call
        /// settles it.
        by: Origin,
    },
    Listening,
    Open(Box<TcpStream>),
}

#[derive(Default)]
struct Udp {
    local: Option<SocketAddr>,
    peer: Option<SocketAddr>,
    /// Where the last `sendto` went: the likely sender of a reply received without a name.
    last_dest: Option<SocketAddr>,
    scratch: Vec<u8>,
}

#[derive(Default)]
struct Proc {
    fds: HashMap<i32, ConnId>,
    /// Descriptors found by the load-time scan now under way (an exec keeps only these).
    scanned: Option<Vec<i32>>,
}

/// The state of one run.
pub struct Machine<K: Kernel> {
    kernel: K,
    mode: Mode,
    procs: HashMap<i32, Proc>,
    conns: Vec<Option<Conn>>,
    free: Vec<ConnId>,
    by_inode: HashMap<u64, ConnId>,
    ssl: HashMap<(i32, u64), i32>,
    /// `--backend both`: the TLS object each (pid, tid) is inside a call of (TlsCall records),
    /// which the tracer's socket records cannot say themselves.
    in_tls: HashMap<(i32, i32), u64>,
    /// SSL objects with no descriptor, on memory BIOs.
    mem_bios: MemBios,
    /// Sockets inside SCM_RIGHTS messages, by inode. Positive: messages sent and not yet
    /// received, each holding its connection. Negative: arrivals recorded before the message's
    /// Passed record (the sender records after its sendmsg returns, when the caller's message is
    /// known to be readable, so a quick receiver can stamp first); each is an arrival that
    /// already took its own hold, and the late Passed record adds none.
    in_flight: HashMap<u64, i64>,
    /// A client's first flight held until its keys are logged (see `key_hold`), when the keys
    /// go into the capture (`hold_for_keys`).
    key_holds: KeyHolds,
    hold_for_keys: bool,
    /// Processes whose TLS library logs keys through us.
    key_loggers: HashSet<i32>,
    /// Processes whose environment names a key log file the collector reads (NSS's keys).
    key_files: HashSet<i32>,
    /// Recent sessions by client random, to match a key log file's lines to their connection.
    sessions: Sessions,
    isn: u64,
}

impl<K: Kernel> Machine<K> {
    pub fn new(kernel: K, mode: Mode, seed: u64) -> Self {
        Machine {
            kernel,
            mode,
            procs: HashMap::default(),
            conns: Vec::new(),
            free: Vec::new(),
            by_inode: HashMap::default(),
            ssl: HashMap::default(),
            in_tls: HashMap::default(),
            mem_bios: MemBios::default(),
            in_flight: HashMap::default(),
            key_holds: KeyHolds::default(),
            hold_for_keys: false,
            key_loggers: HashSet::default(),
            key_files: HashSet::default(),
            sessions: Sessions::default(),
            isn: seed,
        }
    }

    /// The capture carries the TLS keys (a pcapng of ciphertext): a hooked client's first
    /// flight is held until it has logged them, so they are written before it (see `key_hold`).
    pub fn hold_for_keys(&mut self) {
        self.hold_for_keys = self.mode != Mode::Plain;
    }

    /// Whether packets are held for keys not logged yet (see `key_hold`).
    pub fn holds_for_keys(&self) -> bool {
        !self.key_holds.is_empty()
    }

    /// Apply one record, writing the packets it implies to `out`.
    pub fn apply(&mut self, r: &Record, out: &mut dyn PacketSink) {
        // Calls recorded for the event traces alone make no packet and decide nothing.
        if matches!(
            r.kind,
            Kind::SockOpt
                | Kind::SockName
                | Kind::IoVec
                | Kind::FdControl
                | Kind::Closed
                | Kind::Ready
                | Kind::EpollCtl
                | Kind::EpollWait
                | Kind::SockCall
                | Kind::Mmsg
        ) {
            return;
        }
        // A recv held back (see `mem_bio`) is applied before the record that decides it.
        for (held, ssl) in self.mem_bios.settle(r) {
            self.release(held, ssl, r.ts_ns, out);
        }
        if !self.key_holds.is_empty() {
            for conn in self.key_holds.conns_of(r.pid) {
                let on_conn = self.conn_id(r.pid, r.fd) == Some(conn);
                if KeyHolds::releases(r, on_conn) {
                    self.release_for_keys(conn, r.ts_ns, out);
                }
            }
        }
        if matches!(r.kind, Kind::Send | Kind::Recv) && self.held_for_keys(r, out) {
            return;
        }
        self.apply_record(r, out);
        if r.kind == Kind::TlsKey && !self.key_holds.is_empty() {
            self.logged_key(r, out);
        }
    }

    /// A send or receive on a connection waiting for its client's keys is held (see `key_hold`).
    fn held_for_keys(&mut self, r: &Record, out: &mut dyn PacketSink) -> bool {
        let Some(id) = self.conn_id(r.pid, r.fd) else {
            return false;
        };
        if self.conns[id]
            .as_ref()
            .is_none_or(|c| c.await_keys.is_none())
        {
            return false;
        }
        if self.key_holds.hold(id, r) {
            return true;
        }
        // Too much waiting: what is held goes now, and this after it.
        self.release_for_keys(id, r.ts_ns, out);
        false
    }

    /// Key record `r` was just written: when it completes its connection's keys, what the
    /// connection holds follows it.
    fn logged_key(&mut self, r: &Record, out: &mut dyn PacketSink) {
        let Some(&fd) = self.ssl.get(&(r.pid, r.ssl)) else {
            return;
        };
        let Some(id) = self.conn_id(r.pid, fd) else {
            return;
        };
        let Some(Some(Conn {
            await_keys: Some(awaited),
            ..
        })) = self.conns.get_mut(id)
        else {
            return;
        };
        if awaited.logged(r.data) {
            self.release_for_keys(id, r.ts_ns, out);
        }
    }

    /// Connection `conn` waits no more: what it holds is applied, stamped `now` at the earliest.
    fn release_for_keys(&mut self, conn: ConnId, now: u64, out: &mut dyn PacketSink) {
        if let Some(Some(c)) = self.conns.get_mut(conn) {
            c.await_keys = None;
        }
        for held in self.key_holds.take(conn) {
            self.release(held, None, now, out);
        }
    }

    /// Apply a recv held back, as ciphertext of `ssl` when it went into that object's read BIO.
    fn release(&mut self, held: Held, ssl: Option<u64>, now: u64, out: &mut dyn PacketSink) {
        let mut r = held.record();
        if let Some(ssl) = ssl {
            if let Some(c) = self.conn(r.pid, r.fd) {
                c.tls = true;
            }
            self.ssl.insert((r.pid, ssl), r.fd);
        }
        // Stamped when written, so the file stays in time order.
        r.ts_ns = r.ts_ns.max(now);
        self.apply_record(&r, out);
    }

    fn apply_record(&mut self, r: &Record, out: &mut dyn PacketSink) {
        let origin = Origin {
            pid: r.pid,
            tid: r.tid,
            fd: r.fd,
            call: r.call,
            ts_ns: r.ts_ns,
            // A socket found open (at load, after an exec, at attach): what it is given is made up.
            note: (r.kind == Kind::Discovered).then_some(Note::FoundOpen),
        };
        let mut emit = |b: &[u8]| out.packet(&origin, b);
        let pid = r.pid;
        let fd = r.fd;
        match r.kind {
            Kind::Start => {
                // A fork child the parent's Fork record did not announce copies its table now.
                if r.arg1 == 1 {
                    self.fork(r.arg0 as i32, pid);
                } else {
                    self.procs.entry(pid).or_default().scanned = Some(Vec::new());
                    // A new image: its SSL objects and BIOs are new ones, its libraries too.
                    self.mem_bios.forget(pid);
                    self.key_loggers.remove(&pid);
                    // Its own KeyLogFile record follows when its environment names one.
                    self.key_files.remove(&pid);
                }
            }
            Kind::Fork => self.fork(pid, r.ret as i32),
            Kind::Discovered => self.on_discovered(r, &mut emit),
            Kind::Scanned => self.on_scanned(pid, &mut emit),
            Kind::Exit => self.on_exit(pid, &mut emit),
            // Its connections go on without us: no FIN, no reset, nothing more of them.
            Kind::Detached => {
                self.procs.remove(&pid);
            }
            Kind::Socket => {
                let proto = match r.arg1 as i32 & 0xf {
                    libc::SOCK_STREAM => Proto::Tcp(Tcp::Fresh),
                    libc::SOCK_DGRAM => Proto::Udp(Udp::default()),
                    _ => return,
                };
                self.track(pid, r.ret as i32, r.arg0 as u64, proto, &mut emit);
            }
            Kind::Connect => self.on_connect(r, &origin, out),
            Kind::Bind if r.ret < 0 => {}
            Kind::Bind => {
                if let Some(c) = self.conn(pid, fd) {
                    c.bound = r.local.or(c.bound);
                    if let Proto::Udp(udp) = &mut c.proto {
                        udp.local = r.local.or(udp.local);
                    }
                }
            }
            Kind::Listen => {
                if let Some(Proto::Tcp(t)) = self.proto(pid, fd) {
                    *t = Tcp::Listening;
                }
            }
            Kind::Accept => self.on_accept(r, &mut emit),
            Kind::Shutdown => {
                if r.arg0 as i32 != libc::SHUT_RD {
                    if let Some(c) = self.conn(pid, fd) {
                        c.fin(Side::Local, &mut emit);
                    }
                }
            }
            // A vfork child's closes end nothing of its parent's.
            Kind::Close | Kind::CloseRange if r.ret == record::CLOSE_BY_VFORK_CHILD => {}
            Kind::Close => self.on_close(pid, fd, r.ret == record::CLOSE_OWN, &mut emit),
            Kind::CloseRange => {
                let (first, last) = (r.arg0, r.arg1);
                let mut doomed: Vec<i32> = self
                    .procs
                    .get(&pid)
                    .map(|p| {
                        p.fds
                            .keys()
                            .copied()
                            .filter(|&f| (first..=last).contains(&(f as i64)))
                            .collect()
                    })
                    .unwrap_or_default();
                doomed.sort_unstable();
                for f in doomed {
                    self.on_close(pid, f, r.ret == record::CLOSE_OWN, &mut emit);
                }
            }
            Kind::Dup => self.on_dup(pid, fd, r.ret as i32, &mut emit),
            Kind::NewFd => {
                for f in [r.ret, r.arg0] {
                    if f >= 0 {
                        self.untrack(pid, f as i32, &mut emit);
                    }
                }
            }
            Kind::SoError => {
                if let Some(c) = self.conn_id(pid, fd) {
                    match r.arg0 as i32 {
                        0 => self.settle(c, None, &origin, out),
                        errno => self.failed(c, errno, &origin, out),
                    }
                }
            }
            Kind::Send => self.on_send(r, &origin, out),
            Kind::Recv => self.on_recv(r, &origin, out),
            Kind::Received => {
                // (descriptor, socket inode) pairs: a socket this run already follows is taken
                // over by its inode at once; another is looked up from outside (which a
                // receiver that closes it quickly can outrun).
                for chunk in r.data.chunks_exact(16) {
                    let word = |i: usize| {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&chunk[i..i + 8]);
                        u64::from_ne_bytes(b)
                    };
                    let f = word(0) as i32;
                    let inode = word(8);
                    self.untrack(pid, f, &mut emit);
                    if let Some(&id) = self.by_inode.get(&inode) {
                        if let Some(Some(c)) = self.conns.get(id) {
                            let found = Found {
                                inode,
                                stream: matches!(c.proto, Proto::Tcp(_)),
                                listening: false,
                                local: None,
                                peer: None,
                            };
                            self.adopt(pid, f, found, true, &mut emit);
                            continue;
                        }
                    }
                    if let Some(found) = self.kernel.discover(pid, f) {
                        self.adopt(pid, f, found, true, &mut emit);
                    }
                }
            }
            Kind::Passed => {
                for chunk in r.data.chunks_exact(4) {
                    let f = i32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                    let Some(id) = self.conn_id(pid, f) else {
                        continue;
                    };
                    let Some(Some(c)) = self.conns.get_mut(id) else {
                        continue;
                    };
                    if c.inode != 0 {
                        let n = self.in_flight.entry(c.inode).or_default();
                        if *n >= 0 {
                            c.holders += 1;
                        }
                        *n += 1;
                    }
                }
            }
            // In every mode: which connections a hooked library runs is what tells the others
            // (see `unhooked_hello`).
            Kind::TlsFd => {
                if fd >= 0 {
                    if let Some(c) = self.conn(pid, fd) {
                        if matches!(c.proto, Proto::Tcp(_)) {
                            c.tls = true;
                            self.ssl.insert((pid, r.ssl), fd);
                            if crate::record::is_nss_call(r.call) && !self.key_files.contains(&pid)
                            {
                                out.nss_without_keys(&origin);
                            }
                        }
                    }
                }
            }
            Kind::KeyLogFile => {
                self.key_files.insert(pid);
                out.key_log_file(&origin, r.data, r.arg0, r.arg1 as u64);
            }
            Kind::TlsData => self.on_tls_data(r, &origin, out),
            Kind::TlsCall if r.arg0 == 1 => {
                self.in_tls.insert((pid, r.tid), r.ssl);
            }
            Kind::TlsCall => {
                self.in_tls.remove(&(pid, r.tid));
            }
            Kind::TlsBios => self.mem_bios.learn(r),
            Kind::TlsCipher => self.mem_bios.read_out(r),
            Kind::TlsKey => out.tls_key(&origin, r.data),
            Kind::TlsKeylog => {
                self.key_loggers.insert(pid);
            }
            Kind::SockOpt
            | Kind::SockName
            | Kind::IoVec
            | Kind::FdControl
            | Kind::Closed
            | Kind::Ready
            | Kind::EpollCtl
            | Kind::EpollWait
            | Kind::SockCall
            | Kind::Mmsg => {}
            Kind::TlsEof => {
                let Some(&fd) = self.ssl.get(&(pid, r.ssl)) else {
                    return;
                };
                let mode = self.mode;
                let Some(c) = self.conn(pid, fd) else { return };
                match mode {
                    Mode::Plain => c.fin(Side::Remote, &mut emit),
                    Mode::Both => {
                        if let Some(twin) = &mut c.mirror {
                            twin.fin(Side::Remote, &mut emit);
                        }
                    }
                    Mode::Raw => {}
                }
            }
        }
    }

    /// Every process is gone (the run ends): end what is still open.
    pub fn finish(&mut self, out: &mut dyn PacketSink) {
        for held in self.mem_bios.drain() {
            self.release(held, None, 0, out);
        }
        for (conn, held) in self.key_holds.drain() {
            if let Some(Some(c)) = self.conns.get_mut(conn) {
                c.await_keys = None;
            }
            self.release(held, None, 0, out);
        }
        let mut pids: Vec<i32> = self.procs.keys().copied().collect();
        pids.sort_unstable();
        for pid in pids {
            let origin = Origin {
                pid,
                tid: 0,
                fd: -1,
                call: 0,
                ts_ns: 0,
                note: None,
            };
            self.on_exit(pid, &mut |b: &[u8]| out.packet(&origin, b));
        }
    }

    /// Process `pid` is gone (exited, killed): its descriptors close.
    pub fn process_gone(&mut self, pid: i32, ts_ns: u64, out: &mut dyn PacketSink) {
        for conn in self.key_holds.conns_of(pid) {
            self.release_for_keys(conn, ts_ns, out);
        }
        let origin = Origin {
            pid,
            tid: 0,
            fd: -1,
            call: 0,
            ts_ns,
            note: None,
        };
        self.on_exit(pid, &mut |b: &[u8]| out.packet(&origin, b));
    }

    /// Whether `pid` has been seen.
    pub fn knows(&self, pid: i32) -> bool {
        self.procs.contains_key(&pid)
    }

    /// Whether this machine follows a socket under any of descriptors `fds` of `pid`.
    pub fn holds(&self, pid: i32, fds: std::ops::RangeInclusive<i64>) -> bool {
        self.procs
            .get(&pid)
            .is_some_and(|p| p.fds.keys().any(|&f| fds.contains(&i64::from(f))))
    }

    /// The inode of the TCP socket that descriptor `fd` of `pid` names, when this machine
    /// follows one there and knows its inode.
    pub fn tcp_inode(&self, pid: i32, fd: i32) -> Option<u64> {
        let c = self.conns.get(self.conn_id(pid, fd)?)?.as_ref()?;
        (matches!(c.proto, Proto::Tcp(_)) && c.inode != 0).then_some(c.inode)
    }

    fn next_isn(&mut self) -> u32 {
        self.isn = self.isn.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.isn;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) as u32
    }

    fn conn_id(&self, pid: i32, fd: i32) -> Option<ConnId> {
        self.procs.get(&pid)?.fds.get(&fd).copied()
    }

    fn conn(&mut self, pid: i32, fd: i32) -> Option<&mut Conn> {
        let id = self.conn_id(pid, fd)?;
        self.conns.get_mut(id)?.as_mut()
    }

    fn proto(&mut self, pid: i32, fd: i32) -> Option<&mut Proto> {
        self.conn(pid, fd).map(|c| &mut c.proto)
    }

    fn fork(&mut self, parent: i32, child: i32) {
        if self.procs.contains_key(&child) {
            return;
        }
        let fds = self
            .procs
            .get(&parent)
            .map(|p| p.fds.clone())
            .unwrap_or_default();
        for id in fds.values() {
            if let Some(Some(c)) = self.conns.get_mut(*id) {
                c.holders += 1;
            }
        }
        // A child announced twice (the parent's Fork, then its own Start) keeps the first copy.
        self.procs.insert(child, Proc { fds, scanned: None });
        // Its copy of the parent's TLS contexts logs keys as theirs do.
        if self.key_loggers.contains(&parent) {
            self.key_loggers.insert(child);
        }
        // And its copy of the environment names the same key log file.
        if self.key_files.contains(&parent) {
            self.key_files.insert(child);
        }
    }

    /// Start a connection for a new socket at `fd`, ending what the number named before.
    fn track(
        &mut self,
        pid: i32,
        fd: i32,
        inode: u64,
        proto: Proto,
        emit: &mut dyn FnMut(&[u8]),
    ) -> ConnId {
        self.untrack(pid, fd, emit);
        let conn = Conn {
            holders: 1,
            inode,
            tls: false,
            first_seen: false,
            await_keys: None,
            held: false,
            proto,
            mirror: None,
            bound: None,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.conns[id] = Some(conn);
                id
            }
            None => {
                self.conns.push(Some(conn));
                self.conns.len() - 1
            }
        };
        if inode != 0 {
            self.by_inode.insert(inode, id);
        }
        self.procs.entry(pid).or_default().fds.insert(fd, id);
        id
    }

    /// `fd` of `pid` no longer names its connection.
    fn untrack(&mut self, pid: i32, fd: i32, emit: &mut dyn FnMut(&[u8])) {
        let Some(id) = self.procs.get_mut(&pid).and_then(|p| p.fds.remove(&fd)) else {
            return;
        };
        self.drop_ref(id, emit);
    }

    fn drop_ref(&mut self, id: ConnId, emit: &mut dyn FnMut(&[u8])) {
        let Some(Some(c)) = self.conns.get_mut(id) else {
            return;
        };
        c.holders = c.holders.saturating_sub(1);
        if c.holders > 0 {
            return;
        }
        c.fin(Side::Local, emit);
        let inode = c.inode;
        self.conns[id] = None;
        self.free.push(id);
        if inode != 0 && self.by_inode.get(&inode) == Some(&id) {
            self.by_inode.remove(&inode);
            // Notes of early arrivals die with the socket: an inode reused later starts clean.
            self.in_flight.remove(&inode);
        }
    }

    /// `own`: the system-call tracer saw this very process make the close (no vfork child can
    /// be taken for it).
    fn on_close(&mut self, pid: i32, fd: i32, own: bool, emit: &mut dyn FnMut(&[u8])) {
        let Some(id) = self.conn_id(pid, fd) else {
            return;
        };
        // A vfork child shares its parent's memory and so its recorder: its closes arrive as the
        // parent's. If the parent's descriptor still names the same socket, the parent did not
        // close it. (A close read once the parent is gone cannot be told apart: it is taken as
        // the parent's.)
        let inode = self.conns[id].as_ref().map_or(0, |c| c.inode);
        if !own && inode != 0 && self.kernel.inode(pid, fd) == Some(inode) {
            return;
        }
        self.untrack(pid, fd, emit);
    }

    fn on_dup(&mut self, pid: i32, old: i32, new: i32, emit: &mut dyn FnMut(&[u8])) {
        if old == new {
            return;
        }
        match self.conn_id(pid, old) {
            Some(id) => {
                let inode = self.conns[id].as_ref().map_or(0, |c| c.inode);
                // The same vfork argument as for closes: a dup the parent's table does not show.
                if inode != 0 {
                    if let Some(now) = self.kernel.inode(pid, new) {
                        if now != inode {
                            return;
                        }
                    }
                }
                self.untrack(pid, new, emit);
                if let Some(Some(c)) = self.conns.get_mut(id) {
                    c.holders += 1;
                }
                self.procs.entry(pid).or_default().fds.insert(new, id);
            }
            None => self.untrack(pid, new, emit),
        }
    }

    fn on_exit(&mut self, pid: i32, emit: &mut dyn FnMut(&[u8])) {
        let Some(p) = self.procs.remove(&pid) else {
            return;
        };
        let mut ids: Vec<(i32, ConnId)> = p.fds.into_iter().collect();
        ids.sort_unstable();
        for (_, id) in ids {
            self.drop_ref(id, emit);
        }
        self.ssl.retain(|(p, _), _| *p != pid);
        self.in_tls.retain(|(p, _), _| *p != pid);
        self.mem_bios.forget(pid);
        self.key_loggers.remove(&pid);
    }

    fn on_discovered(&mut self, r: &Record, emit: &mut dyn FnMut(&[u8])) {
        let found = Found {
            inode: r.arg1 as u64,
            stream: r.arg0 as i32 == libc::SOCK_STREAM,
            listening: r.ret == 1,
            local: r.local,
            peer: r.addr,
        };
        if let Some(p) = self.procs.get_mut(&r.pid) {
            if let Some(list) = &mut p.scanned {
                list.push(r.fd);
            }
        }
        self.adopt(r.pid, r.fd, found, false, emit);
    }

    /// Track a socket found from outside: the connection it belongs to if known, else a new one
    /// with a synthesized handshake. `received`: it arrived in an SCM_RIGHTS message.
    fn adopt(
        &mut self,
        pid: i32,
        fd: i32,
        found: Found,
        received: bool,
        emit: &mut dyn FnMut(&[u8]),
    ) {
        if let Some(id) = self.conn_id(pid, fd) {
            if self.conns[id]
                .as_ref()
                .is_some_and(|c| c.inode == found.inode)
            {
                return;
            }
        }
        if let Some(&id) = self.by_inode.get(&found.inode) {
            self.untrack(pid, fd, emit);
            // Arriving from an SCM_RIGHTS message, it takes over the hold the message had; if
            // the message's Passed record is still to come, it takes a hold of its own and
            // leaves that record a note (see `in_flight`).
            let carried = match self.in_flight.get_mut(&found.inode) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    true
                }
                _ => {
                    if received {
                        *self.in_flight.entry(found.inode).or_default() -= 1;
                    }
                    false
                }
            };
            if let Some(Some(c)) = self.conns.get_mut(id) {
                if !carried {
                    c.holders += 1;
                }
            }
            self.procs.entry(pid).or_default().fds.insert(fd, id);
            return;
        }
        if !found.stream {
            let udp = Udp {
                local: found.local,
                peer: found.peer,
                last_dest: None,
                scratch: Vec::new(),
            };
            self.track(pid, fd, found.inode, Proto::Udp(udp), emit);
            return;
        }
        let tcp = match (found.listening, found.local, found.peer) {
            (true, _, _) => Tcp::Listening,
            (false, Some(local), Some(remote)) => {
                // We did not see who connected: the side with the higher (ephemeral) port is the
                // likelier client.
                let client = if local.port() >= remote.port() {
                    Side::Local
                } else {
                    Side::Remote
                };
                let (a, b) = (self.next_isn(), self.next_isn());
                let mut stream = Box::new(TcpStream::new(local, remote, a, b));
                stream.open(client, emit);
                Tcp::Open(stream)
            }
            _ => Tcp::Fresh,
        };
        self.track(pid, fd, found.inode, Proto::Tcp(tcp), emit);
    }

    fn on_scanned(&mut self, pid: i32, emit: &mut dyn FnMut(&[u8])) {
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        let Some(kept) = p.scanned.take() else {
            return;
        };
        let gone: Vec<i32> = p
            .fds
            .keys()
            .copied()
            .filter(|f| !kept.contains(f))
            .collect();
        for f in gone {
            self.untrack(pid, f, emit);
        }
    }

    fn open_tcp(
        &mut self,
        id: ConnId,
        local: Option<SocketAddr>,
        remote: SocketAddr,
        client: Side,
        emit: &mut dyn FnMut(&[u8]),
    ) {
        let local = self.local_towards(id, local, remote);
        let (a, b) = (self.next_isn(), self.next_isn());
        let mut stream = Box::new(TcpStream::new(local, remote, a, b));
        stream.open(client, emit);
        if let Some(Some(c)) = self.conns.get_mut(id) {
            c.proto = Proto::Tcp(Tcp::Open(stream));
        }
    }

    /// The local end of connection `id` towards `remote`, never 0.0.0.0 or `::` and never port
    /// 0: what the kernel reported or `bind` gave, with a wildcard address (a blocking connect's
    /// failure resets it; a socket bound to the wildcard) replaced by the source the kernel
    /// routes from, and a port the kernel released replaced by a stand-in ephemeral one.
    fn local_towards(
        &mut self,
        id: ConnId,
        local: Option<SocketAddr>,
        remote: SocketAddr,
    ) -> SocketAddr {
        let bound = self
            .conns
            .get(id)
            .and_then(Option::as_ref)
            .and_then(|c| c.bound);
        let known = [local, bound].into_iter().flatten();
        let port = known.clone().map(|a| a.port()).find(|&p| p != 0);
        let ip = known.map(|a| a.ip()).find(|ip| !ip.is_unspecified());
        let ip = match ip {
            Some(ip) => ip,
            None => self.source_for(local.or(bound), remote),
        };
        let port = port.unwrap_or_else(|| 32768 + (self.next_isn() as u16) % 28232);
        SocketAddr::new(ip, port)
    }

    /// A connect the peer refused: SYN and RST. The socket may connect again.
    fn refused(
        &mut self,
        id: ConnId,
        local: Option<SocketAddr>,
        remote: SocketAddr,
        emit: &mut dyn FnMut(&[u8]),
    ) {
        let local = self.local_towards(id, local, remote);
        let mut stream = TcpStream::new(local, remote, self.next_isn(), 0);
        stream.refused(emit);
        if let Some(Some(c)) = self.conns.get_mut(id) {
            c.proto = Proto::Tcp(Tcp::Fresh);
        }
    }

    /// A connect nobody answered (timed out, or an ICMP error ended it): its SYN alone. The
    /// socket may connect again.
    fn unanswered(
        &mut self,
        id: ConnId,
        local: Option<SocketAddr>,
        remote: SocketAddr,
        emit: &mut dyn FnMut(&[u8]),
    ) {
        let local = self.local_towards(id, local, remote);
        let mut stream = TcpStream::new(local, remote, self.next_isn(), 0);
        stream.unanswered(emit);
        if let Some(Some(c)) = self.conns.get_mut(id) {
            c.proto = Proto::Tcp(Tcp::Fresh);
        }
    }

    fn on_connect(&mut self, r: &Record, origin: &Origin, out: &mut dyn PacketSink) {
        let Some(id) = self.conn_id(r.pid, r.fd) else {
            return;
        };
        // AF_UNSPEC names no address: a record with one is an ordinary connect whatever its
        // family field says (scripted records leave it zero).
        if r.arg0 == i64::from(libc::AF_UNSPEC) && r.addr.is_none() {
            if r.ret == 0 {
                self.dissolve(id, origin, out);
            }
            return;
        }
        let Some(c) = self.conns[id].as_mut() else {
            return;
        };
        let tcp = match &mut c.proto {
            Proto::Tcp(tcp) => tcp,
            Proto::Udp(udp) => {
                if r.ret == 0 {
                    udp.peer = r.addr;
                    udp.local = r.local.or(udp.local);
                }
                return;
            }
        };
        if let Tcp::Connecting { .. } = tcp {
            // Asked again while its SYN is out: 0 or EISCONN once it connected (the first
            // connect after that gives 0), EALREADY while pending, or how it failed.
            match (r.ret, r.errno) {
                (0, _) | (_, libc::EISCONN) => self.settle(id, None, origin, out),
                (_, e) if connect_failure(e) => self.settle(id, Some(e), origin, out),
                _ => {}
            }
            return;
        }
        let (Tcp::Fresh, Some(remote)) = (&tcp, r.addr) else {
            return;
        };
        let mut emit = |b: &[u8]| out.packet(origin, b);
        match (r.ret, r.errno) {
            (0, _) => self.open_tcp(id, r.local, remote, Side::Local, &mut emit),
            // The SYN has left and the handshake goes on in the background: a non-blocking
            // connect, or a blocking one a signal interrupted.
            (_, libc::EINPROGRESS | libc::EINTR) => {
                *tcp = Tcp::Connecting {
                    remote,
                    local: r.local,
                    by: *origin,
                }
            }
            (_, libc::ECONNREFUSED) => self.refused(id, r.local, remote, &mut emit),
            // A blocking connect whose SYN was never answered. (EHOSTUNREACH and ENETUNREACH
            // may come before any SYN left: nothing is written for them.)
            (_, libc::ETIMEDOUT) => self.unanswered(id, r.local, remote, &mut emit),
            _ => {}
        }
    }

    /// connect(AF_UNSPEC) succeeded: the association is dissolved. An open TCP connection is
    /// reset, as the kernel does unless both sides had closed (`tcp_disconnect`); the socket
    /// may then connect again, with a new port unless one was bound. A UDP socket forgets its
    /// peer and, unless bound, its port.
    fn dissolve(&mut self, id: ConnId, origin: &Origin, out: &mut dyn PacketSink) {
        let Some(Some(c)) = self.conns.get_mut(id) else {
            return;
        };
        let mut emit = |b: &[u8]| out.packet(origin, b);
        let bound = c.bound;
        match &mut c.proto {
            Proto::Tcp(tcp) => {
                if let Tcp::Open(stream) = tcp {
                    if !(stream.fin_sent(Side::Local) && stream.fin_sent(Side::Remote)) {
                        stream.reset(Side::Local, &mut emit);
                    }
                }
                if let Some(mut twin) = c.mirror.take() {
                    twin.reset(Side::Local, &mut emit);
                }
                *tcp = Tcp::Fresh;
                c.tls = false;
            }
            Proto::Udp(udp) => {
                udp.peer = None;
                udp.local = bound;
            }
        }
    }

    fn on_accept(&mut self, r: &Record, emit: &mut dyn FnMut(&[u8])) {
        if self.conn_id(r.pid, r.fd).is_none() || r.ret < 0 {
            return;
        }
        let (Some(local), Some(remote)) = (r.local, r.addr) else {
            return;
        };
        let id = self.track(
            r.pid,
            r.ret as i32,
            r.arg1 as u64,
            Proto::Tcp(Tcp::Fresh),
            emit,
        );
        self.open_tcp(id, Some(local), remote, Side::Remote, emit);
    }

    /// A pending connect's outcome, learnt from a later call (`origin`): it connected (`None`:
    /// I/O succeeded or SO_ERROR was 0), or it failed with an errno. Its packets are written
    /// in the name of the call that connected, stamped now, so the file stays in time order.
    /// EINPROGRESS said the SYN had left, so even a failure writes it: with the peer's RST when
    /// refused, alone when nothing answered; a reset after the handshake writes both.
    fn settle(
        &mut self,
        id: ConnId,
        failed_with: Option<i32>,
        origin: &Origin,
        out: &mut dyn PacketSink,
    ) {
        let Some(Some(c)) = self.conns.get(id) else {
            return;
        };
        let Proto::Tcp(Tcp::Connecting { remote, local, by }) = c.proto else {
            return;
        };
        let handshake = Origin {
            ts_ns: origin.ts_ns,
            note: None,
            ..by
        };
        let emit = &mut |b: &[u8]| out.packet(&handshake, b);
        match failed_with {
            None => self.open_tcp(id, local, remote, Side::Local, emit),
            Some(libc::ECONNREFUSED) => self.refused(id, local, remote, emit),
            Some(libc::ECONNRESET) => {
                // Only an established connection is reset (a RST in SYN-SENT is a refusal).
                self.open_tcp(id, local, remote, Side::Local, emit);
                if let Some(Some(c)) = self.conns.get_mut(id) {
                    c.reset(Side::Remote, &mut |b: &[u8]| out.packet(origin, b));
                }
            }
            Some(_) => self.unanswered(id, local, remote, emit),
        }
    }

    /// A call on connection `id` failed with `errno`: a pending connect may have failed, or
    /// the peer reset an open connection (which then carries nothing more, not even a FIN).
    fn failed(&mut self, id: ConnId, errno: i32, origin: &Origin, out: &mut dyn PacketSink) {
        let Some(Some(c)) = self.conns.get_mut(id) else {
            return;
        };
        match &mut c.proto {
            Proto::Tcp(Tcp::Connecting { .. }) if connect_failure(errno) => {
                self.settle(id, Some(errno), origin, out)
            }
            Proto::Tcp(Tcp::Open(_)) if errno == libc::ECONNRESET => {
                c.reset(Side::Remote, &mut |b: &[u8]| out.packet(origin, b))
            }
            _ => {}
        }
    }

    /// Socket-level bytes on a TLS connection in plain mode are ciphertext: not written. A
    /// socket call made inside an SSL call is what marks a connection TLS when the SSL object's
    /// descriptor is not known otherwise, and so does a send of the handshake an SSL object on
    /// memory BIOs wrote (see `mem_bio`). Marked in every mode: see `unhooked_hello`.
    fn is_ciphertext(&mut self, r: &Record, id: ConnId) -> bool {
        let mode = self.mode;
        let Some(Some(c)) = self.conns.get_mut(id) else {
            return false;
        };
        if !matches!(c.proto, Proto::Tcp(_)) {
            return false;
        }
        // Made inside a TLS call: said by the hooks' own record, or under `--backend both` by
        // the library's TlsCall around the tracer's record.
        let ssl = match r.ssl {
            0 => self.in_tls.get(&(r.pid, r.tid)).copied().unwrap_or(0),
            s => s,
        };
        if ssl != 0 {
            c.tls = true;
            self.ssl.insert((r.pid, ssl), r.fd);
        } else if r.kind == Kind::Send {
            if let Some(ssl) = self.mem_bios.sent(r.pid, r.data) {
                c.tls = true;
                self.ssl.insert((r.pid, ssl), r.fd);
            }
        }
        c.tls && mode == Mode::Plain
    }

    /// The first payload of connection `id`, in `r` (`is_ciphertext` has just looked at it for
    /// signs of a hooked TLS library). A TLS ClientHello (sent by a client, or received by a
    /// server) on a connection no hooked library runs gets the note that says so; on one a
    /// hooked library runs, the connection waits for its keys, when they go into the capture
    /// (see `key_hold`). A connection is looked at once.
    fn first_payload(&mut self, r: &Record, id: ConnId) -> Option<Note> {
        let hold = self.hold_for_keys
            && (self.key_loggers.contains(&r.pid) || self.key_files.contains(&r.pid));
        let Some(Some(c)) = self.conns.get_mut(id) else {
            return None;
        };
        if c.first_seen || r.data.is_empty() || !matches!(c.proto, Proto::Tcp(_)) {
            return None;
        }
        c.first_seen = true;
        if !crate::tls::starts_client_hello(r.data) {
            return None;
        }
        // What a key log file already gave of this session (read ahead of the ring) counts.
        let mut awaited = Awaited::default();
        if let Some(random) = key_hold::hello_random(r.data) {
            let session = self.sessions.entry(random, r.pid);
            session.pid = r.pid;
            session.conn = Some(id);
            awaited = session.logged;
        }
        if c.tls && hold && !awaited.done() {
            c.await_keys = Some(awaited);
        }
        (!c.tls).then_some(Note::UnhookedTls)
    }

    /// Line `line` was read from a key log file named by process `pid` (one of those that name
    /// it), stamped `now`: it goes to the outputs as a key of the process whose connection
    /// carried its session's ClientHello, and when it completes that connection's keys, what
    /// the connection holds follows it.
    pub fn file_key(&mut self, pid: i32, line: &[u8], now: u64, out: &mut dyn PacketSink) {
        let mut origin = Origin {
            pid,
            tid: 0,
            fd: -1,
            call: 0,
            ts_ns: now,
            note: None,
        };
        let Some(random) = key_hold::line_random(line) else {
            out.tls_key(&origin, line);
            return;
        };
        let session = self.sessions.entry(random, pid);
        session.logged.logged(line);
        origin.pid = session.pid;
        let conn = session.conn;
        out.tls_key(&origin, line);
        let Some(id) = conn else { return };
        if let Some(Some(Conn {
            await_keys: Some(awaited),
            ..
        })) = self.conns.get_mut(id)
        {
            if awaited.random == random && awaited.logged(line) {
                self.release_for_keys(id, now, out);
            }
        }
    }

    /// A recv that may be a handshake the program is about to write into an SSL object's read
    /// BIO is held back until its thread's next record tells (see `mem_bio`).
    fn held_back(&mut self, r: &Record, id: ConnId) -> bool {
        if !self.mem_bios.may_hold(r.pid, r.data) {
            return false;
        }
        let Some(Some(c)) = self.conns.get_mut(id) else {
            return false;
        };
        if c.tls || c.held || !matches!(c.proto, Proto::Tcp(_)) {
            return false;
        }
        c.held = true;
        self.mem_bios.hold(r);
        true
    }

    fn on_send(&mut self, r: &Record, origin: &Origin, out: &mut dyn PacketSink) {
        let Some(id) = self.conn_id(r.pid, r.fd) else {
            return;
        };
        if r.ret < 0 {
            match (r.errno, r.addr) {
                // A Fast Open send on a non-blocking socket with no cookie yet: its SYN left
                // without data, as a non-blocking connect's does, and nothing was sent.
                (libc::EINPROGRESS, Some(remote)) => {
                    if let Some(Some(Conn {
                        proto: Proto::Tcp(tcp @ Tcp::Fresh),
                        ..
                    })) = self.conns.get_mut(id)
                    {
                        *tcp = Tcp::Connecting {
                            remote,
                            local: r.local,
                            by: *origin,
                        };
                    }
                }
                (errno, _) => self.failed(id, errno, origin, out),
            }
            return;
        }
        self.settle(id, None, origin, out);
        let ciphertext = self.is_ciphertext(r, id);
        let mut note = self.first_payload(r, id);
        if ciphertext {
            return;
        }
        let fresh = matches!(
            self.conns[id].as_ref().map(|c| &c.proto),
            Some(Proto::Tcp(Tcp::Fresh))
        );
        if let (true, Some(dest)) = (fresh, r.addr) {
            // sendto/sendmsg with MSG_FASTOPEN connects and sends in one call.
            self.open_tcp(id, r.local, dest, Side::Local, &mut |b| {
                out.packet(origin, b)
            });
        }
        // A note about the bytes goes on their first packet.
        let mut emit = |b: &[u8]| {
            out.packet(
                &Origin {
                    note: note.take(),
                    ..*origin
                },
                b,
            )
        };
        self.udp_learn_local(id, r.local);
        let route = self.udp_route(id, r.addr);
        let Some(Some(c)) = self.conns.get_mut(id) else {
            return;
        };
        match &mut c.proto {
            // MSG_OOB: the last byte the kernel took is urgent.
            Proto::Tcp(Tcp::Open(stream)) if r.arg1 & i64::from(libc::MSG_OOB) != 0 => {
                stream.urgent(Side::Local, r.data, &mut emit)
            }
            Proto::Tcp(Tcp::Open(stream)) => stream.data(Side::Local, r.data, &mut emit),
            Proto::Udp(udp) => {
                if let Some((src, dst)) = route {
                    udp.last_dest = r.addr.or(udp.last_dest);
                    synth::udp_datagram(src, dst, r.data, &mut udp.scratch, &mut emit);
                }
            }
            _ => {}
        }
    }

    fn on_recv(&mut self, r: &Record, origin: &Origin, out: &mut dyn PacketSink) {
        let Some(id) = self.conn_id(r.pid, r.fd) else {
            return;
        };
        let datagram = matches!(
            self.conns[id].as_ref().map(|c| &c.proto),
            Some(Proto::Udp(_))
        );
        if r.ret < 0 {
            self.failed(id, r.errno, origin, out);
            return;
        }
        self.settle(id, None, origin, out);
        let discarded = !datagram && r.arg1 & i64::from(libc::MSG_TRUNC) != 0 && r.ret > 0;
        let origin = Origin {
            // The ACK that covers bytes discarded unread says why the capture has a gap there.
            note: discarded.then_some(Note::Discarded(r.ret as u64)),
            ..*origin
        };
        if r.ret == 0 && !datagram {
            if r.arg0 > 0 {
                if let Some(Some(c)) = self.conns.get_mut(id) {
                    c.fin(Side::Remote, &mut |b| out.packet(&origin, b));
                }
            }
            return;
        }
        if self.held_back(r, id) {
            return;
        }
        let ciphertext = self.is_ciphertext(r, id);
        let mut hello = self.first_payload(r, id);
        if ciphertext {
            return;
        }
        let mut emit = |b: &[u8]| {
            let note = hello.take().or(origin.note);
            out.packet(&Origin { note, ..origin }, b)
        };
        self.udp_learn_local(id, r.local);
        let route = self
            .udp_route(id, r.addr)
            .map(|(local, peer)| (peer, local));
        let Some(Some(c)) = self.conns.get_mut(id) else {
            return;
        };
        match &mut c.proto {
            // Bytes gone unread: the peer's sequence moves past them, no payload invented.
            Proto::Tcp(Tcp::Open(stream)) if discarded => {
                stream.discarded(Side::Remote, r.ret as usize, &mut emit)
            }
            // The urgent byte, taken out of band: it came with URG.
            Proto::Tcp(Tcp::Open(stream)) if r.arg1 & i64::from(libc::MSG_OOB) != 0 => {
                stream.urgent(Side::Remote, r.data, &mut emit)
            }
            Proto::Tcp(Tcp::Open(stream)) => stream.data(Side::Remote, r.data, &mut emit),
            Proto::Udp(udp) => {
                if let Some((src, dst)) = route {
                    synth::udp_datagram(src, dst, r.data, &mut udp.scratch, &mut emit);
                }
            }
            _ => {}
        }
    }

    fn udp_learn_local(&mut self, id: ConnId, local: Option<SocketAddr>) {
        if let Some(Some(Conn {
            proto: Proto::Udp(udp),
            ..
        })) = self.conns.get_mut(id)
        {
            if local.is_some_and(|a| a.port() != 0) {
                udp.local = local;
            }
        }
    }

    /// (local, peer) of a datagram on UDP connection `id` to or from `addr`.
    fn udp_route(
        &mut self,
        id: ConnId,
        addr: Option<SocketAddr>,
    ) -> Option<(SocketAddr, SocketAddr)> {
        let Some(Some(Conn {
            proto: Proto::Udp(udp),
            ..
        })) = self.conns.get(id)
        else {
            return None;
        };
        // A datagram received without its sender's name (recvmsg with a null msg_name) came
        // from the connected peer or, on an unconnected socket, most likely from where the
        // program last sent.
        let peer = addr.or(udp.peer).or(udp.last_dest)?;
        let bound = udp.local.unwrap_or_else(|| unspecified_like(peer));
        let local = if bound.ip().is_unspecified() {
            SocketAddr::new(self.source_for(Some(bound), peer), bound.port())
        } else {
            bound
        };
        Some((local, peer))
    }

    /// The source IP towards `peer`: loopback answers without asking the kernel; never the
    /// wildcard address.
    fn source_for(&mut self, bound: Option<SocketAddr>, peer: SocketAddr) -> IpAddr {
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
            _ => self
                .kernel
                .route_source(SocketAddr::new(peer_ip, peer.port()))
                // No route now: the kernel had one when it sent (without one a connect or a
                // send fails before any packet), so the routes changed since, or the program
                // runs in another network namespace. Loopback is a valid stand-in, where the
                // wildcard address would be no source at all.
                .unwrap_or(match peer_ip {
                    IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
                }),
        };
        // A v6 socket talking to a v4-mapped peer keeps its family; synth writes both as IPv4.
        match (bound, ip) {
            (Some(SocketAddr::V6(_)), IpAddr::V4(v4)) => IpAddr::V6(v4.to_ipv6_mapped()),
            _ => ip,
        }
    }

    fn on_tls_data(&mut self, r: &Record, origin: &Origin, out: &mut dyn PacketSink) {
        if !self.mode.decrypts() || r.data.is_empty() {
            return;
        }
        let Some(&fd) = self.ssl.get(&(r.pid, r.ssl)) else {
            return;
        };
        let Some(id) = self.conn_id(r.pid, fd) else {
            return;
        };
        self.settle(id, None, origin, out);
        let emit = &mut |b: &[u8]| out.packet(origin, b);
        let side = if r.arg0 == 0 {
            Side::Local
        } else {
            Side::Remote
        };
        let both = self.mode == Mode::Both;
        let (a, b) = (self.next_isn(), self.next_isn());
        let Some(Some(c)) = self.conns.get_mut(id) else {
            return;
        };
        c.tls = true;
        let Conn { proto, mirror, .. } = c;
        let Proto::Tcp(Tcp::Open(stream)) = proto else {
            return;
        };
        if both {
            mirror
                .get_or_insert_with(|| Box::new(stream.parallel(a, b, emit)))
                .data(side, r.data, emit);
        } else {
            stream.data(side, r.data, emit);
        }
    }
}

impl Conn {
    /// `side` sent its FIN: on the connection's stream and on its plaintext twin.
    fn fin(&mut self, side: Side, out: &mut dyn FnMut(&[u8])) {
        if let Proto::Tcp(Tcp::Open(stream)) = &mut self.proto {
            stream.fin(side, out);
        }
        if let Some(twin) = &mut self.mirror {
            twin.fin(side, out);
        }
    }

    /// `side` reset the connection: on the connection's stream and on its plaintext twin.
    fn reset(&mut self, side: Side, out: &mut dyn FnMut(&[u8])) {
        if let Proto::Tcp(Tcp::Open(stream)) = &mut self.proto {
            stream.reset(side, out);
        }
        if let Some(twin) = &mut self.mirror {
            twin.reset(side, out);
        }
    }
}

/// Whether a call on a socket whose SYN is out failing with `errno` means the connect failed
/// (rather than "not yet": EAGAIN, EALREADY, EINTR).
fn connect_failure(errno: i32) -> bool {
    matches!(
        errno,
        libc::ECONNREFUSED
            | libc::ECONNRESET
            | libc::ETIMEDOUT
            | libc::EHOSTUNREACH
            | libc::ENETUNREACH
    )
}

fn unspecified_like(addr: SocketAddr) -> SocketAddr {
    let ip = if addr.is_ipv4() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    };
    SocketAddr::new(ip, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Kind;

    /// A kernel whose answers the test sets.
    #[derive(Default)]
    struct Script {
        inodes: HashMap<(i32, i32), u64>,
        /// Route lookups: destination → source.
        routes: HashMap<IpAddr, IpAddr>,
    }

    impl Kernel for Script {
        fn inode(&mut self, pid: i32, fd: i32) -> Option<u64> {
            self.inodes.get(&(pid, fd)).copied()
        }
        fn discover(&mut self, _: i32, _: i32) -> Option<Found> {
            None
        }
        fn route_source(&mut self, dst: SocketAddr) -> Option<IpAddr> {
            self.routes.get(&dst.ip()).copied()
        }
    }

    /// Every packet as (pid, TCP flags, payload length), parsed back with etherparse.
    #[derive(Default)]
    struct Packets(Vec<(i32, String, usize)>);

    impl PacketSink for Packets {
        fn packet(&mut self, origin: &Origin, bytes: &[u8]) {
            let p = etherparse::SlicedPacket::from_ip(bytes).expect("valid packet");
            let (flags, len) = match p.transport {
                Some(etherparse::TransportSlice::Tcp(t)) => {
                    let mut f = String::new();
                    for (set, c) in [(t.syn(), 'S'), (t.fin(), 'F'), (t.rst(), 'R')] {
                        if set {
                            f.push(c);
                        }
                    }
                    (f, t.payload().len())
                }
                Some(etherparse::TransportSlice::Udp(u)) => ("U".into(), u.payload().len()),
                _ => ("?".into(), 0),
            };
            self.0.push((origin.pid, flags, len));
        }
    }

    fn rec(kind: Kind, pid: i32, fd: i32) -> Record<'static> {
        let mut r = Record::new(kind);
        r.pid = pid;
        r.fd = fd;
        r
    }

    fn socket(pid: i32, fd: i32, inode: u64) -> Record<'static> {
        let mut r = rec(Kind::Socket, pid, -1);
        r.ret = fd as i64;
        r.arg0 = inode as i64;
        r.arg1 = libc::SOCK_STREAM as i64;
        r
    }

    fn connect(pid: i32, fd: i32) -> Record<'static> {
        let mut r = rec(Kind::Connect, pid, fd);
        r.arg0 = libc::AF_INET as i64;
        r.addr = Some("127.0.0.1:80".parse().expect("addr"));
        r.local = Some("127.0.0.1:40000".parse().expect("addr"));
        r
    }

    fn send(pid: i32, fd: i32, data: &'static [u8]) -> Record<'static> {
        let mut r = rec(Kind::Send, pid, fd);
        r.ret = data.len() as i64;
        r.data = data;
        r
    }

    fn run(script: Script, records: &[Record]) -> Vec<(i32, String, usize)> {
        let mut m = Machine::new(script, Mode::Plain, 1);
        let mut out = Packets::default();
        for r in records {
            m.apply(r, &mut out);
        }
        out.0
    }

    fn flags(p: &[(i32, String, usize)]) -> Vec<&str> {
        p.iter().map(|(_, f, _)| f.as_str()).collect()
    }

    #[test]
    fn connect_send_close_gives_handshake_data_fin() {
        let p = run(
            Script::default(),
            &[
                socket(10, 3, 7),
                connect(10, 3),
                send(10, 3, b"hello"),
                rec(Kind::Close, 10, 3),
            ],
        );
        assert_eq!(flags(&p), ["S", "S", "", "", "F"]);
        assert_eq!(p[3].2, 5);
    }

    #[test]
    fn a_forked_socket_ends_when_its_last_holder_closes() {
        let mut fork = rec(Kind::Fork, 10, -1);
        fork.ret = 11;
        let p = run(
            Script::default(),
            &[
                socket(10, 3, 7),
                connect(10, 3),
                fork,
                rec(Kind::Close, 10, 3),
                send(11, 3, b"from child"),
                rec(Kind::Exit, 11, -1),
            ],
        );
        assert_eq!(flags(&p), ["S", "S", "", "", "F"]);
        assert_eq!((p[3].0, p[3].2), (11, 10));
        assert_eq!(p[4].0, 11, "the FIN comes with the child's exit");
    }

    #[test]
    fn a_passed_socket_is_taken_over_by_its_inode_even_when_proc_cannot_see_it() {
        // The receiver (pid 11) closes the socket before the collector could look in /proc:
        // the Received record's inode is enough.
        let mut passed = rec(Kind::Passed, 10, 5);
        passed.data = &[3, 0, 0, 0];
        let mut received = rec(Kind::Received, 11, 6);
        received.data = &[4, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0];
        let p = run(
            Script::default(),
            &[
                socket(10, 3, 7),
                connect(10, 3),
                send(10, 3, b"one"),
                passed,
                rec(Kind::Close, 10, 3),
                received,
                send(11, 4, b"two"),
                rec(Kind::Close, 11, 4),
            ],
        );
        assert_eq!(flags(&p), ["S", "S", "", "", "", "F"]);
        assert_eq!(
            (p[4].0, p[4].2),
            (11, 3),
            "the receiver's bytes, same stream"
        );
        assert_eq!(p[5].0, 11, "the FIN when the receiver closes");
    }

    #[test]
    fn a_socket_received_before_its_passed_record_is_held_once() {
        // The receiver (pid 11) stamps its Received before the sender's Passed (recorded after
        // sendmsg returned). The sender's close must not end the stream; the receiver's must.
        let mut passed = rec(Kind::Passed, 10, 5);
        passed.data = &[3, 0, 0, 0];
        let mut received = rec(Kind::Received, 11, 6);
        received.data = &[4, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0];
        let p = run(
            Script::default(),
            &[
                socket(10, 3, 7),
                connect(10, 3),
                received,
                passed,
                rec(Kind::Close, 10, 3),
                send(11, 4, b"two"),
                rec(Kind::Close, 11, 4),
                rec(Kind::Exit, 10, -1),
                rec(Kind::Exit, 11, -1),
            ],
        );
        assert_eq!(flags(&p), ["S", "S", "", "", "F"]);
        assert_eq!(
            (p[3].0, p[3].2),
            (11, 3),
            "the receiver's bytes, same stream"
        );
        assert_eq!(p[4].0, 11, "the FIN when the receiver closes, once");
    }

    #[test]
    fn a_close_the_parent_did_not_make_is_ignored() {
        // A vfork child's close arrives under the parent's pid; the parent's descriptor still
        // names the socket.
        let mut k = Script::default();
        k.inodes.insert((10, 3), 7);
        let p = run(
            k,
            &[
                socket(10, 3, 7),
                connect(10, 3),
                rec(Kind::Close, 10, 3),
                send(10, 3, b"still"),
            ],
        );
        assert_eq!(flags(&p), ["S", "S", "", ""]);
    }

    #[test]
    fn a_close_a_vfork_child_made_is_ignored_even_where_proc_cannot_tell() {
        // The parent is gone when the close is read (no inode to compare): the library's mark
        // alone says it was the child's.
        let mut close = rec(Kind::Close, 10, 3);
        close.ret = record::CLOSE_BY_VFORK_CHILD;
        let mut range = rec(Kind::CloseRange, 10, -1);
        range.ret = record::CLOSE_BY_VFORK_CHILD;
        (range.arg0, range.arg1) = (3, i64::from(u32::MAX));
        let p = run(
            Script::default(),
            &[
                socket(10, 3, 7),
                connect(10, 3),
                close,
                range,
                send(10, 3, b"still"),
            ],
        );
        assert_eq!(flags(&p), ["S", "S", "", ""]);
        // Unmarked, the same close ends the connection.
        let p = run(
            Script::default(),
            &[socket(10, 3, 7), connect(10, 3), rec(Kind::Close, 10, 3)],
        );
        assert_eq!(flags(&p), ["S", "S", "", "F"]);
    }

    #[test]
    fn a_close_the_tracer_saw_is_the_process_own() {
        // The tracer writes the close as the call starts: the descriptor still names the
        // socket, yet the close is this process's.
        let mut k = Script::default();
        k.inodes.insert((10, 3), 7);
        let mut close = rec(Kind::Close, 10, 3);
        close.ret = 1;
        let p = run(k, &[socket(10, 3, 7), connect(10, 3), close]);
        assert_eq!(flags(&p), ["S", "S", "", "F"]);
    }

    #[test]
    fn an_exec_keeps_only_the_sockets_its_scan_found() {
        let mut start = rec(Kind::Start, 10, -1);
        start.arg1 = 0;
        let p = run(
            Script::default(),
            &[
                socket(10, 3, 7),
                connect(10, 3),
                socket(10, 4, 8),
                connect(10, 4),
                start,
                {
                    let mut d = rec(Kind::Discovered, 10, 4);
                    d.arg0 = libc::SOCK_STREAM as i64;
                    d.arg1 = 8;
                    d
                },
                rec(Kind::Scanned, 10, -1),
                send(10, 4, b"kept"),
            ],
        );
        assert_eq!(flags(&p), ["S", "S", "", "S", "S", "", "F", ""]);
    }

    #[test]
    fn a_refused_connect_gives_syn_and_rst() {
        let mut c = connect(10, 3);
        c.ret = -1;
        c.errno = libc::ECONNREFUSED;
        let p = run(Script::default(), &[socket(10, 3, 7), c]);
        assert_eq!(flags(&p), ["S", "R"]);
    }

    #[test]
    fn a_new_descriptor_at_a_tracked_number_ends_the_old_socket() {
        let mut newfd = rec(Kind::NewFd, 10, -1);
        newfd.ret = 3;
        newfd.arg0 = -1;
        let p = run(
            Script::default(),
            &[
                socket(10, 3, 7),
                connect(10, 3),
                newfd,
                send(10, 3, b"file bytes"),
            ],
        );
        assert_eq!(flags(&p), ["S", "S", "", "F"]);
    }

    // ---- exact wire (issue 12) -------------------------------------------------------------

    /// One packet with what the exact-wire tests look at.
    #[derive(Debug)]
    struct Seg {
        src: SocketAddr,
        dst: SocketAddr,
        /// "S", "SA", "A", "PA", "FA", "RA", with "U" appended when URG is set; "udp".
        flags: String,
        seq: u32,
        ack: u32,
        urgent: u16,
        payload: Vec<u8>,
        call: &'static str,
        tid: i32,
        fd: i32,
        ts_ns: u64,
        note: Option<Note>,
    }

    #[derive(Default)]
    struct Segs(Vec<Seg>);

    impl PacketSink for Segs {
        fn packet(&mut self, origin: &Origin, bytes: &[u8]) {
            let p = etherparse::SlicedPacket::from_ip(bytes).expect("valid packet");
            let (src_ip, dst_ip): (IpAddr, IpAddr) = match &p.net {
                Some(etherparse::NetSlice::Ipv4(v4)) => (
                    v4.header().source_addr().into(),
                    v4.header().destination_addr().into(),
                ),
                Some(etherparse::NetSlice::Ipv6(v6)) => (
                    v6.header().source_addr().into(),
                    v6.header().destination_addr().into(),
                ),
                _ => panic!("not IP"),
            };
            let seg = |sp, dp, flags, seq, ack, urgent, payload: &[u8]| Seg {
                src: SocketAddr::new(src_ip, sp),
                dst: SocketAddr::new(dst_ip, dp),
                flags,
                seq,
                ack,
                urgent,
                payload: payload.to_vec(),
                call: crate::record::call_name(origin.call),
                tid: origin.tid,
                fd: origin.fd,
                ts_ns: origin.ts_ns,
                note: origin.note,
            };
            self.0.push(match p.transport {
                Some(etherparse::TransportSlice::Tcp(t)) => {
                    let mut f = String::new();
                    for (set, c) in [
                        (t.syn(), 'S'),
                        (t.fin(), 'F'),
                        (t.rst(), 'R'),
                        (t.psh(), 'P'),
                        (t.ack(), 'A'),
                        (t.urg(), 'U'),
                    ] {
                        if set {
                            f.push(c);
                        }
                    }
                    let (sp, dp) = (t.source_port(), t.destination_port());
                    let (seq, ack) = (t.sequence_number(), t.acknowledgment_number());
                    seg(sp, dp, f, seq, ack, t.urgent_pointer(), t.payload())
                }
                Some(etherparse::TransportSlice::Udp(u)) => {
                    let (sp, dp) = (u.source_port(), u.destination_port());
                    seg(sp, dp, "udp".into(), 0, 0, 0, u.payload())
                }
                _ => panic!("neither TCP nor UDP"),
            });
        }
    }

    fn wire(script: Script, records: &[Record]) -> Vec<Seg> {
        let mut m = Machine::new(script, Mode::Plain, 1);
        let mut out = Segs::default();
        for r in records {
            m.apply(r, &mut out);
        }
        out.0
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    fn named(mut r: Record<'static>, call: &str, tid: i32, ts_ns: u64) -> Record<'static> {
        r.call = crate::record::call_id(call);
        r.tid = tid;
        r.ts_ns = ts_ns;
        r
    }

    fn failed(mut r: Record<'static>, errno: i32) -> Record<'static> {
        r.ret = -1;
        r.errno = errno;
        r
    }

    fn recv(pid: i32, fd: i32, data: &'static [u8]) -> Record<'static> {
        let mut r = rec(Kind::Recv, pid, fd);
        r.ret = data.len() as i64;
        r.arg0 = 4096;
        r.data = data;
        r
    }

    fn so_error(pid: i32, fd: i32, value: i32) -> Record<'static> {
        let mut r = rec(Kind::SoError, pid, fd);
        r.arg0 = value as i64;
        r
    }

    fn udp_socket(pid: i32, fd: i32, inode: u64) -> Record<'static> {
        let mut r = socket(pid, fd, inode);
        r.arg1 = libc::SOCK_DGRAM as i64;
        r
    }

    fn summary(p: &[Seg]) -> Vec<(&str, SocketAddr, SocketAddr)> {
        p.iter().map(|g| (g.flags.as_str(), g.src, g.dst)).collect()
    }

    #[test]
    fn a_fast_open_send_in_progress_connects_like_a_non_blocking_connect() {
        // sendto(MSG_FASTOPEN) on a non-blocking socket without a cookie: -1/EINPROGRESS, its
        // SYN without data; no connect ever; the bytes go with a plain send after.
        let mut tfo = failed(rec(Kind::Send, 10, 3), libc::EINPROGRESS);
        tfo.addr = Some(addr("127.0.0.1:80"));
        tfo.local = Some(addr("127.0.0.1:40000"));
        tfo.arg1 = libc::MSG_FASTOPEN as i64;
        let p = wire(
            Script::default(),
            &[
                socket(10, 3, 7),
                named(tfo, "sendto", 10, 100),
                named(send(10, 3, b"one"), "send", 10, 200),
            ],
        );
        let (l, r) = (addr("127.0.0.1:40000"), addr("127.0.0.1:80"));
        assert_eq!(
            summary(&p),
            [("S", l, r), ("SA", r, l), ("A", l, r), ("PA", l, r)]
        );
        assert_eq!(p[3].payload, b"one");
        let calls: Vec<_> = p.iter().map(|g| g.call).collect();
        assert_eq!(calls, ["sendto", "sendto", "sendto", "send"]);
    }

    #[test]
    fn a_fast_open_send_from_a_bound_socket_never_writes_the_wildcard() {
        // The send's record has no local address (a bind had used the recorder's once).
        let mut bind = rec(Kind::Bind, 10, 3);
        bind.local = Some(addr("0.0.0.0:5000"));
        let mut tfo = send(10, 3, b"two");
        tfo.addr = Some(addr("127.0.0.1:80"));
        tfo.arg1 = libc::MSG_FASTOPEN as i64;
        let p = wire(Script::default(), &[socket(10, 3, 7), bind, tfo]);
        let (l, r) = (addr("127.0.0.1:5000"), addr("127.0.0.1:80"));
        assert_eq!(
            summary(&p),
            [("S", l, r), ("SA", r, l), ("A", l, r), ("PA", l, r)]
        );
    }

    #[test]
    fn a_reply_received_without_a_name_comes_from_where_the_socket_sent() {
        let mut out = send(10, 3, b"ping");
        out.addr = Some(addr("127.0.0.1:53"));
        out.local = Some(addr("0.0.0.0:40000"));
        // recvmsg with a null msg_name: the sender is not reported.
        let back = recv(10, 3, b"pong");
        let p = wire(Script::default(), &[udp_socket(10, 3, 7), out, back]);
        let (l, r) = (addr("127.0.0.1:40000"), addr("127.0.0.1:53"));
        assert_eq!(summary(&p), [("udp", l, r), ("udp", r, l)]);
        assert_eq!(p[1].payload, b"pong");
    }

    #[test]
    fn bytes_discarded_unread_leave_an_honest_gap() {
        let mut trunc = recv(10, 3, b"");
        trunc.ret = 10;
        trunc.arg1 = libc::MSG_TRUNC as i64;
        let p = wire(
            Script::default(),
            &[
                socket(10, 3, 7),
                connect(10, 3),
                recv(10, 3, b"HEAD"),
                named(trunc, "recv", 10, 300),
                recv(10, 3, b"TAIL"),
            ],
        );
        let flags: Vec<_> = p.iter().map(|g| g.flags.as_str()).collect();
        assert_eq!(flags, ["S", "SA", "A", "PA", "A", "PA"]);
        let (head, ack, tail) = (&p[3], &p[4], &p[5]);
        assert_eq!(
            ack.ack,
            head.seq.wrapping_add(4 + 10),
            "the ACK covers the 10"
        );
        assert_eq!(
            tail.seq,
            head.seq.wrapping_add(4 + 10),
            "the gap is 10 bytes"
        );
        assert_eq!(
            (tail.payload.as_slice(), ack.payload.len()),
            (&b"TAIL"[..], 0)
        );
        assert_eq!((ack.note, ack.call), (Some(Note::Discarded(10)), "recv"));
        assert!(p.iter().filter(|g| g.note.is_some()).count() == 1);
    }

    #[test]
    fn urgent_bytes_carry_urg_and_the_pointer_past_them() {
        let mut oob = send(10, 3, b"abc");
        oob.arg1 = libc::MSG_OOB as i64;
        let mut urgent = recv(10, 3, b"!");
        urgent.arg1 = libc::MSG_OOB as i64;
        let p = wire(
            Script::default(),
            &[
                socket(10, 3, 7),
                connect(10, 3),
                oob,
                recv(10, 3, b"xyz"),
                urgent,
            ],
        );
        let got: Vec<_> = p[3..]
            .iter()
            .map(|g| (g.flags.as_str(), g.urgent, g.payload.as_slice()))
            .collect();
        assert_eq!(
            got,
            [
                ("PAU", 3, &b"abc"[..]),
                ("PA", 0, &b"xyz"[..]),
                ("PAU", 1, &b"!"[..])
            ]
        );
    }

    #[test]
    fn connect_af_unspec_resets_and_the_next_connect_is_a_new_stream() {
        let mut dissolve = rec(Kind::Connect, 10, 3);
        dissolve.arg0 = libc::AF_UNSPEC as i64;
        let mut again = connect(10, 3);
        again.local = Some(addr("127.0.0.1:40001"));
        let p = wire(
            Script::default(),
            &[
                socket(10, 3, 7),
                connect(10, 3),
                send(10, 3, b"one"),
                dissolve,
                again,
                send(10, 3, b"two"),
                rec(Kind::Close, 10, 3),
            ],
        );
        let (a, b, r) = (
            addr("127.0.0.1:40000"),
            addr("127.0.0.1:40001"),
            addr("127.0.0.1:80"),
        );
        assert_eq!(
            summary(&p),
            [
                ("S", a, r),
                ("SA", r, a),
                ("A", a, r),
                ("PA", a, r),
                ("RA", a, r),
                ("S", b, r),
                ("SA", r, b),
                ("A", b, r),
                ("PA", b, r),
                ("FA", b, r),
            ]
        );
        // The reset is at the old stream's next sequence number, acknowledging everything.
        assert_eq!((p[4].seq, p[4].ack), (p[3].seq.wrapping_add(3), p[3].ack));
        assert_ne!(p[5].seq, p[0].seq, "a new initial sequence number");
        assert_eq!(p[8].payload, b"two");
    }

    #[test]
    fn connect_af_unspec_dissolves_a_udp_association() {
        // Bound to the wildcard, connected (the kernel picks 192.0.2.2 towards the peer), then
        // dissolved: the kernel forgets that address, so a datagram from loopback arrives at
        // loopback, not at the address the old association had.
        let mut bind = rec(Kind::Bind, 10, 3);
        bind.local = Some(addr("0.0.0.0:6000"));
        let mut first = connect(10, 3);
        first.addr = Some(addr("192.0.2.9:53"));
        first.local = Some(addr("192.0.2.2:6000"));
        let mut dissolve = rec(Kind::Connect, 10, 3);
        dissolve.arg0 = libc::AF_UNSPEC as i64;
        let mut from_lo = recv(10, 3, b"two");
        from_lo.addr = Some(addr("127.0.0.1:7"));
        let p = wire(
            Script::default(),
            &[
                udp_socket(10, 3, 7),
                bind,
                first,
                send(10, 3, b"one"),
                dissolve,
                from_lo,
            ],
        );
        assert_eq!(
            summary(&p),
            [
                ("udp", addr("192.0.2.2:6000"), addr("192.0.2.9:53")),
                ("udp", addr("127.0.0.1:7"), addr("127.0.0.1:6000")),
            ]
        );
    }

    #[test]
    fn a_refused_connect_never_writes_the_wildcard_address() {
        // A blocking connect's refusal resets the socket's address but not its port.
        let blocking = |local: &str, remote: &str| {
            let mut c = failed(connect(10, 3), libc::ECONNREFUSED);
            c.local = Some(addr(local));
            c.addr = Some(addr(remote));
            c
        };
        let mut k = Script::default();
        k.routes.insert(
            "192.0.2.9".parse().expect("ip"),
            "192.0.2.2".parse().expect("ip"),
        );
        for (local, remote, src) in [
            ("0.0.0.0:48482", "127.0.0.1:9", "127.0.0.1:48482"),
            ("0.0.0.0:48483", "127.0.0.2:9", "127.0.0.1:48483"),
            ("[::]:48484", "[::1]:9", "[::1]:48484"),
            ("0.0.0.0:48485", "192.0.2.9:9", "192.0.2.2:48485"),
        ] {
            let p = wire(
                std::mem::take(&mut k),
                &[socket(10, 3, 7), blocking(local, remote)],
            );
            k.routes.insert(
                "192.0.2.9".parse().expect("ip"),
                "192.0.2.2".parse().expect("ip"),
            );
            assert_eq!(
                summary(&p),
                [
                    ("S", addr(src), addr(remote)),
                    ("RA", addr(remote), addr(src))
                ],
                "{local} → {remote}"
            );
        }
        // No local address at all, nor a route: still a real source address.
        let mut c = failed(connect(10, 3), libc::ECONNREFUSED);
        c.local = None;
        c.addr = Some(addr("198.51.100.7:9"));
        let p = wire(Script::default(), &[socket(10, 3, 7), c]);
        assert!(
            !p[0].src.ip().is_unspecified() && p[0].src.port() != 0,
            "{p:?}"
        );
        // A connect whose local address could not be asked (a sandbox refusing getsockname).
        let mut c = connect(10, 3);
        c.local = None;
        let p = wire(Script::default(), &[socket(10, 3, 7), c]);
        assert_eq!(p[0].src.ip(), addr("127.0.0.1:1").ip());
        assert_ne!(p[0].src.port(), 0);
    }

    #[test]
    fn a_pending_handshake_is_written_in_the_name_of_its_connect() {
        for (settler, call) in [
            (so_error(10, 3, 0), "getsockopt"),
            (send(10, 3, b"hi"), "send"),
            (recv(10, 3, b"hi"), "recv"),
        ] {
            let mut c = failed(connect(10, 3), libc::EINPROGRESS);
            c.tid = 11;
            let p = wire(
                Script::default(),
                &[
                    socket(10, 3, 7),
                    named(c, "connect", 11, 100),
                    named(settler, call, 12, 200),
                ],
            );
            let labels: Vec<_> = p.iter().map(|g| (g.call, g.tid, g.fd, g.ts_ns)).collect();
            let mut want = vec![("connect", 11, 3, 200); 3];
            if call != "getsockopt" {
                want.push((call, 12, 3, 200));
            }
            assert_eq!(labels, want, "settled by {call}");
        }
    }

    #[test]
    fn an_interrupted_connect_goes_on_in_the_background() {
        let p = wire(
            Script::default(),
            &[
                socket(10, 3, 7),
                failed(connect(10, 3), libc::EINTR),
                so_error(10, 3, 0),
                send(10, 3, b"late"),
            ],
        );
        assert_eq!(flags_of(&p), ["S", "SA", "A", "PA"]);
    }

    #[test]
    fn a_pending_connect_that_fails_writes_what_the_wire_carried() {
        let pending = || failed(connect(10, 3), libc::EINPROGRESS);
        for (outcome, want) in [
            (so_error(10, 3, libc::ECONNREFUSED), &["S", "RA"][..]),
            // Reset once established: the handshake, then the peer's RST.
            (
                so_error(10, 3, libc::ECONNRESET),
                &["S", "SA", "A", "RA"][..],
            ),
            // Never answered: its SYN alone.
            (so_error(10, 3, libc::ETIMEDOUT), &["S"][..]),
            (failed(recv(10, 3, b""), libc::ETIMEDOUT), &["S"][..]),
            (failed(send(10, 3, b""), libc::EHOSTUNREACH), &["S"][..]),
            // Not yet: nothing.
            (failed(recv(10, 3, b""), libc::EAGAIN), &[][..]),
            (failed(connect(10, 3), libc::EALREADY), &[][..]),
        ] {
            let p = wire(
                Script::default(),
                &[
                    socket(10, 3, 7),
                    pending(),
                    outcome,
                    rec(Kind::Close, 10, 3),
                ],
            );
            assert_eq!(flags_of(&p), want, "{outcome:?}");
        }
    }

    #[test]
    fn a_blocking_connect_that_timed_out_writes_its_syn() {
        let mut c = failed(connect(10, 3), libc::ETIMEDOUT);
        c.local = Some(addr("0.0.0.0:40000"));
        let p = wire(Script::default(), &[socket(10, 3, 7), c]);
        assert_eq!(
            summary(&p),
            [("S", addr("127.0.0.1:40000"), addr("127.0.0.1:80"))]
        );
    }

    #[test]
    fn a_reset_connection_ends_with_the_peers_rst_and_no_fin() {
        let p = wire(
            Script::default(),
            &[
                socket(10, 3, 7),
                connect(10, 3),
                send(10, 3, b"go"),
                failed(recv(10, 3, b""), libc::ECONNRESET),
                rec(Kind::Close, 10, 3),
            ],
        );
        assert_eq!(flags_of(&p), ["S", "SA", "A", "PA", "RA"]);
        assert_eq!(p[4].src, addr("127.0.0.1:80"));
        assert_eq!((p[4].seq, p[4].ack), (p[3].ack, p[3].seq.wrapping_add(2)));
    }

    #[test]
    fn a_socket_may_connect_again_after_a_refusal() {
        let mut again = connect(10, 3);
        again.local = Some(addr("127.0.0.1:40001"));
        let p = wire(
            Script::default(),
            &[
                socket(10, 3, 7),
                failed(connect(10, 3), libc::ECONNREFUSED),
                again,
                send(10, 3, b"x"),
            ],
        );
        assert_eq!(flags_of(&p), ["S", "RA", "S", "SA", "A", "PA"]);
        assert_eq!(p[2].src, addr("127.0.0.1:40001"));
    }

    fn flags_of(p: &[Seg]) -> Vec<&str> {
        p.iter().map(|g| g.flags.as_str()).collect()
    }

    /// Each packet's payload length and note, and the key lines, in order.
    #[derive(Default)]
    struct Notes {
        packets: Vec<(usize, Option<Note>)>,
        keys: Vec<(i32, Vec<u8>)>,
        /// 'p' for a packet with payload, 'k' for a key line, in the order they came.
        order: String,
    }

    impl PacketSink for Notes {
        fn packet(&mut self, origin: &Origin, bytes: &[u8]) {
            let p = etherparse::SlicedPacket::from_ip(bytes).expect("valid packet");
            let len = match p.transport {
                Some(etherparse::TransportSlice::Tcp(t)) => t.payload().len(),
                _ => 0,
            };
            self.packets.push((len, origin.note));
            if len > 0 {
                self.order.push('p');
            }
        }
        fn tls_key(&mut self, origin: &Origin, line: &[u8]) {
            self.keys.push((origin.pid, line.to_vec()));
            self.order.push('k');
        }
    }

    fn notes(mode: Mode, records: &[Record]) -> Notes {
        let mut m = Machine::new(Script::default(), mode, 1);
        let mut out = Notes::default();
        for r in records {
            m.apply(r, &mut out);
        }
        out
    }

    /// A TLS record holding the start of a ClientHello.
    const HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x03];

    /// The notes of the payload packets.
    fn payload_notes(n: &Notes) -> Vec<(usize, Option<Note>)> {
        n.packets
            .iter()
            .filter(|(len, _)| *len > 0)
            .copied()
            .collect()
    }

    /// A ClientHello sent outside any hooked TLS call, on a connection no hooked library named:
    /// its packet says so, in every mode, and only the connection's first bytes are looked at.
    #[test]
    fn a_client_hello_no_hooked_library_sent_is_noted_once() {
        for mode in [Mode::Plain, Mode::Raw, Mode::Both] {
            let n = notes(
                mode,
                &[
                    socket(10, 3, 7),
                    connect(10, 3),
                    send(10, 3, HELLO),
                    send(10, 3, HELLO),
                ],
            );
            assert_eq!(
                payload_notes(&n),
                [(HELLO.len(), Some(Note::UnhookedTls)), (HELLO.len(), None)],
                "{mode:?}"
            );
        }
    }

    /// A ClientHello a hooked library sent (from inside its call, or on a descriptor it named)
    /// is not noted, in raw mode too, where it is written; other first bytes are not either.
    #[test]
    fn a_hooked_or_plain_connection_is_not_noted() {
        let mut inside = send(10, 3, HELLO);
        inside.ssl = 0x55;
        let mut named = rec(Kind::TlsFd, 10, 3);
        named.ssl = 0x66;
        for (mode, written) in [(Mode::Raw, 1), (Mode::Plain, 0)] {
            let n = notes(mode, &[socket(10, 3, 7), connect(10, 3), inside]);
            assert_eq!(payload_notes(&n), vec![(HELLO.len(), None); written]);
            let n = notes(
                mode,
                &[socket(10, 3, 7), connect(10, 3), named, send(10, 3, HELLO)],
            );
            assert_eq!(payload_notes(&n), vec![(HELLO.len(), None); written]);
        }
        let n = notes(
            Mode::Raw,
            &[
                socket(10, 3, 7),
                connect(10, 3),
                send(10, 3, b"GET / HTTP/1.0\r\n\r\n"),
            ],
        );
        assert_eq!(payload_notes(&n), [(18, None)]);
    }

    /// A server that receives a ClientHello outside any hooked call: noted on that packet, even
    /// when the first read takes the record's header alone.
    #[test]
    fn a_client_hello_a_server_received_unhooked_is_noted() {
        let mut listen = socket(10, 3, 7);
        listen.ret = 3;
        let mut accept = rec(Kind::Accept, 10, 3);
        accept.ret = 4;
        accept.arg1 = 8;
        accept.local = Some(addr("127.0.0.1:443"));
        accept.addr = Some(addr("127.0.0.1:40000"));
        let recv = |data: &'static [u8]| {
            let mut r = rec(Kind::Recv, 10, 4);
            r.ret = data.len() as i64;
            r.arg0 = 4096;
            r.data = data;
            r
        };
        let n = notes(
            Mode::Raw,
            &[
                listen,
                rec(Kind::Listen, 10, 3),
                accept,
                recv(&HELLO[..5]),
                recv(&HELLO[5..]),
            ],
        );
        assert_eq!(
            payload_notes(&n),
            [(5, Some(Note::UnhookedTls)), (HELLO.len() - 5, None)]
        );
    }

    /// In a capture that carries the keys, a hooked client's handshake after its ClientHello
    /// waits until its keys are all logged (TLS 1.3: both traffic secrets), and the keys are
    /// written first; only in a process whose library logs keys through us.
    #[test]
    fn a_handshake_waits_for_its_keys() {
        const SSL: u64 = 0x55;
        let mut keylog = rec(Kind::TlsKeylog, 10, -1);
        keylog.ssl = 0x99;
        let inside = |mut r: Record<'static>| {
            r.ssl = SSL;
            r
        };
        let key = |line: &'static [u8]| {
            let mut r = rec(Kind::TlsKey, 10, -1);
            r.ssl = SSL;
            r.data = line;
            r
        };
        let flight = || {
            vec![
                socket(10, 3, 7),
                connect(10, 3),
                inside(send(10, 3, HELLO)),
                inside(recv(10, 3, b"server hello")),
                key(b"SERVER_HANDSHAKE_TRAFFIC_SECRET 00 11"),
                key(b"SERVER_TRAFFIC_SECRET_0 00 11"),
                inside(send(10, 3, b"finished")),
                key(b"CLIENT_TRAFFIC_SECRET_0 00 11"),
                inside(send(10, 3, b"GET")),
            ]
        };
        let order = |hold: bool, logs: bool| {
            let mut m = Machine::new(Script::default(), Mode::Raw, 1);
            if hold {
                m.hold_for_keys();
            }
            let mut out = Notes::default();
            let mut records = flight();
            if logs {
                records.insert(0, keylog);
            }
            for r in &records {
                m.apply(r, &mut out);
            }
            out.order
        };
        assert_eq!(
            order(true, true),
            "pkkkppp",
            "hello, the keys, then the rest"
        );
        assert_eq!(order(false, true), "ppkkpkp", "as it happened: a pcap");
        assert_eq!(
            order(true, false),
            "ppkkpkp",
            "no library logs keys through us"
        );
    }

    /// A ClientHello of 43 bytes whose client random is 32 bytes of 0xab.
    const LONG_HELLO: &[u8] = &[
        0x16, 0x03, 0x01, 0x00, 0x26, 0x01, 0x00, 0x00, 0x22, 0x03, 0x03, 0xab, 0xab, 0xab, 0xab,
        0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab,
        0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab,
    ];

    /// A process whose environment names a key log file (NSS): its hooked client's handshake
    /// waits for the file's lines of its session (matched by client random; another session's
    /// lines do not count), and lines read before its ClientHello was applied count too.
    #[test]
    fn a_handshake_waits_for_its_key_log_files_lines() {
        let random = "ab".repeat(32);
        let line = |label: &str, random: &str| format!("{label} {random} 11").into_bytes();
        let mut named = rec(Kind::KeyLogFile, 10, -1);
        named.data = b"/tmp/keys.log";
        let mut tls_fd = rec(Kind::TlsFd, 10, 3);
        tls_fd.call = crate::record::call_id("PR_Connect");
        tls_fd.ssl = 0x55;
        let order = |named_file: bool, keys_first: bool| {
            let mut m = Machine::new(Script::default(), Mode::Raw, 1);
            m.hold_for_keys();
            let mut out = Notes::default();
            let mut records = vec![socket(10, 3, 7), connect(10, 3), tls_fd];
            if named_file {
                records.insert(0, named);
            }
            for r in &records {
                m.apply(r, &mut out);
            }
            let mut key = |m: &mut Machine<Script>, label: &str, random: &str| {
                m.file_key(10, &line(label, random), 5, &mut out)
            };
            if keys_first {
                key(&mut m, "SERVER_TRAFFIC_SECRET_0", &random);
                key(&mut m, "CLIENT_TRAFFIC_SECRET_0", &random);
            }
            let mut out = std::mem::take(&mut out);
            m.apply(&send(10, 3, LONG_HELLO), &mut out);
            m.apply(&recv(10, 3, b"server hello"), &mut out);
            m.file_key(10, &line("SERVER_TRAFFIC_SECRET_0", &random), 6, &mut out);
            m.file_key(
                10,
                &line("CLIENT_TRAFFIC_SECRET_0", &"cd".repeat(32)),
                6,
                &mut out,
            );
            m.apply(&send(10, 3, b"finished"), &mut out);
            m.file_key(10, &line("CLIENT_TRAFFIC_SECRET_0", &random), 7, &mut out);
            m.apply(&send(10, 3, b"GET"), &mut out);
            out.order
        };
        assert_eq!(
            order(true, false),
            "pkkkppp",
            "hello, the keys, then the rest"
        );
        assert_eq!(
            order(false, false),
            "ppkkpkp",
            "no key log file: as it happened"
        );
        assert_eq!(
            order(true, true),
            "kkppkkpkp",
            "its keys were in already: no wait"
        );
    }

    /// Key lines go to the sink with their process, in every mode.
    #[test]
    fn key_lines_reach_the_sink() {
        let mut key = rec(Kind::TlsKey, 10, -1);
        key.data = b"CLIENT_RANDOM 00 11";
        for mode in [Mode::Plain, Mode::Raw] {
            let n = notes(mode, &[key]);
            assert_eq!(n.keys, [(10, b"CLIENT_RANDOM 00 11".to_vec())]);
        }
    }
}
