//! The run-wide connection table: records in, packets out.
//!
//! Connections are keyed by socket identity, not by descriptor: every process of the run has a
//! descriptor table here mapping its numbers to connections, and a socket shared by fork, exec,
//! dup or SCM_RIGHTS is one connection with one sequence space, ended (FIN) when its last holder
//! closes it or is gone. What the records do not say (a descriptor's socket identity at this
//! moment, a route's source address) comes from a [`Kernel`], so unit tests script it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use synth::{Side, TcpStream};

use super::mem_bio::{Held, MemBios};
use crate::record::{Kind, Record};
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
}

/// Receives each synthesized packet.
pub trait PacketSink {
    fn packet(&mut self, origin: &Origin, bytes: &[u8]);
}

type ConnId = usize;

/// A socket's capture state.
struct Conn {
    /// Descriptors (in any process) referring to it.
    holders: u32,
    inode: u64,
    /// Carries TLS: in plain mode its socket-level bytes are ciphertext and are not written.
    tls: bool,
    /// A recv of it was held back once (see `mem_bio`): never again.
    held: bool,
    proto: Proto,
    /// In `both` mode, the plaintext's parallel stream.
    mirror: Option<Box<TcpStream>>,
}

enum Proto {
    Tcp(Tcp),
    Udp(Udp),
}

enum Tcp {
    Fresh,
    Connecting {
        remote: SocketAddr,
        local: Option<SocketAddr>,
    },
    Listening,
    Open(Box<TcpStream>),
    Done,
}

#[derive(Default)]
struct Udp {
    local: Option<SocketAddr>,
    peer: Option<SocketAddr>,
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
    /// SSL objects with no descriptor, on memory BIOs.
    mem_bios: MemBios,
    /// Sockets inside SCM_RIGHTS messages not yet received, by inode: each holds its connection.
    in_flight: HashMap<u64, u32>,
    isn: u64,
}

impl<K: Kernel> Machine<K> {
    pub fn new(kernel: K, mode: Mode, seed: u64) -> Self {
        Machine {
            kernel,
            mode,
            procs: HashMap::new(),
            conns: Vec::new(),
            free: Vec::new(),
            by_inode: HashMap::new(),
            ssl: HashMap::new(),
            mem_bios: MemBios::default(),
            in_flight: HashMap::new(),
            isn: seed,
        }
    }

    /// Apply one record, writing the packets it implies to `out`.
    pub fn apply(&mut self, r: &Record, out: &mut dyn PacketSink) {
        // A recv held back (see `mem_bio`) is applied before the record that decides it.
        for (held, ssl) in self.mem_bios.settle(r) {
            self.release(held, ssl, r.ts_ns, out);
        }
        self.apply_record(r, out);
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
                    // A new image: its SSL objects and BIOs are new ones.
                    self.mem_bios.forget(pid);
                }
            }
            Kind::Fork => self.fork(pid, r.ret as i32),
            Kind::Discovered => self.on_discovered(r, &mut emit),
            Kind::Scanned => self.on_scanned(pid, &mut emit),
            Kind::Exit => self.on_exit(pid, &mut emit),
            Kind::Socket => {
                let proto = match r.arg1 as i32 & 0xf {
                    libc::SOCK_STREAM => Proto::Tcp(Tcp::Fresh),
                    libc::SOCK_DGRAM => Proto::Udp(Udp::default()),
                    _ => return,
                };
                self.track(pid, r.ret as i32, r.arg0 as u64, proto, &mut emit);
            }
            Kind::Connect => self.on_connect(r, &mut emit),
            Kind::Bind => {
                if let Some(Proto::Udp(udp)) = self.proto(pid, fd) {
                    udp.local = r.local.or(udp.local);
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
            Kind::Close => self.on_close(pid, fd, &mut emit),
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
                    self.on_close(pid, f, &mut emit);
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
                    let failed = (r.arg0 != 0).then_some(r.arg0 as i32);
                    self.settle(c, failed, &mut emit);
                }
            }
            Kind::Send => self.on_send(r, &mut emit),
            Kind::Recv => self.on_recv(r, &mut emit),
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
                            self.adopt(pid, f, found, &mut emit);
                            continue;
                        }
                    }
                    if let Some(found) = self.kernel.discover(pid, f) {
                        self.adopt(pid, f, found, &mut emit);
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
                        c.holders += 1;
                        *self.in_flight.entry(c.inode).or_default() += 1;
                    }
                }
            }
            Kind::TlsFd => {
                if self.mode.decrypts() && fd >= 0 {
                    if let Some(c) = self.conn(pid, fd) {
                        if matches!(c.proto, Proto::Tcp(_)) {
                            c.tls = true;
                            self.ssl.insert((pid, r.ssl), fd);
                        }
                    }
                }
            }
            Kind::TlsData => self.on_tls_data(r, &mut emit),
            Kind::TlsBios if self.mode.decrypts() => self.mem_bios.learn(r),
            Kind::TlsCipher if self.mode.decrypts() => self.mem_bios.read_out(r),
            Kind::TlsBios | Kind::TlsCipher => {}
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
        let mut pids: Vec<i32> = self.procs.keys().copied().collect();
        pids.sort_unstable();
        for pid in pids {
            let origin = Origin {
                pid,
                tid: 0,
                fd: -1,
                call: 0,
                ts_ns: 0,
            };
            self.on_exit(pid, &mut |b: &[u8]| out.packet(&origin, b));
        }
    }

    /// Process `pid` is gone (exited, killed): its descriptors close.
    pub fn process_gone(&mut self, pid: i32, ts_ns: u64, out: &mut dyn PacketSink) {
        let origin = Origin {
            pid,
            tid: 0,
            fd: -1,
            call: 0,
            ts_ns,
        };
        self.on_exit(pid, &mut |b: &[u8]| out.packet(&origin, b));
    }

    /// Whether `pid` has been seen.
    pub fn knows(&self, pid: i32) -> bool {
        self.procs.contains_key(&pid)
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
            held: false,
            proto,
            mirror: None,
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
        }
    }

    fn on_close(&mut self, pid: i32, fd: i32, emit: &mut dyn FnMut(&[u8])) {
        let Some(id) = self.conn_id(pid, fd) else {
            return;
        };
        // A vfork child shares its parent's memory and so its recorder: its closes arrive as the
        // parent's. If the parent's descriptor still names the same socket, the parent did not
        // close it.
        let inode = self.conns[id].as_ref().map_or(0, |c| c.inode);
        if inode != 0 && self.kernel.inode(pid, fd) == Some(inode) {
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
        self.mem_bios.forget(pid);
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
        self.adopt(r.pid, r.fd, found, emit);
    }

    /// Track a socket found from outside: the connection it belongs to if known, else a new one
    /// with a synthesized handshake.
    fn adopt(&mut self, pid: i32, fd: i32, found: Found, emit: &mut dyn FnMut(&[u8])) {
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
            // Arriving from an SCM_RIGHTS message, it takes over the hold the message had.
            let carried = match self.in_flight.get_mut(&found.inode) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    true
                }
                _ => false,
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
        let local = local.unwrap_or_else(|| unspecified_like(remote));
        let (a, b) = (self.next_isn(), self.next_isn());
        let mut stream = Box::new(TcpStream::new(local, remote, a, b));
        stream.open(client, emit);
        if let Some(Some(c)) = self.conns.get_mut(id) {
            c.proto = Proto::Tcp(Tcp::Open(stream));
        }
    }

    fn refused(
        &mut self,
        id: ConnId,
        local: Option<SocketAddr>,
        remote: SocketAddr,
        emit: &mut dyn FnMut(&[u8]),
    ) {
        let isn = self.next_isn();
        let local = local.filter(|a| a.port() != 0).unwrap_or_else(|| {
            // A stand-in port for a refused connect whose autobound port the kernel released.
            let ip = self.source_for(None, remote);
            SocketAddr::new(ip, 32768 + (isn as u16) % 28232)
        });
        let mut stream = TcpStream::new(local, remote, isn, 0);
        stream.refused(emit);
        if let Some(Some(c)) = self.conns.get_mut(id) {
            c.proto = Proto::Tcp(Tcp::Done);
        }
    }

    fn on_connect(&mut self, r: &Record, emit: &mut dyn FnMut(&[u8])) {
        let Some(id) = self.conn_id(r.pid, r.fd) else {
            return;
        };
        let Some(c) = self.conns[id].as_mut() else {
            return;
        };
        match &mut c.proto {
            Proto::Tcp(tcp) => {
                let Some(remote) = r.addr else { return };
                let fresh = matches!(tcp, Tcp::Fresh | Tcp::Connecting { .. });
                let pending_local = match tcp {
                    Tcp::Connecting { local, .. } => *local,
                    _ => None,
                };
                let local = r.local.or(pending_local);
                match (r.ret, r.errno) {
                    (0, _) if fresh => self.open_tcp(id, local, remote, Side::Local, emit),
                    (_, libc::EISCONN) if matches!(tcp, Tcp::Connecting { .. }) => {
                        self.open_tcp(id, local, remote, Side::Local, emit)
                    }
                    (_, libc::EINPROGRESS) if matches!(tcp, Tcp::Fresh) => {
                        *tcp = Tcp::Connecting { remote, local }
                    }
                    (_, libc::ECONNREFUSED) if fresh => self.refused(id, local, remote, emit),
                    _ => {}
                }
            }
            Proto::Udp(udp) => {
                if r.ret == 0 {
                    // AF_UNSPEC dissolves the association; `addr` is then None.
                    udp.peer = r.addr;
                    udp.local = r.local.or(udp.local);
                }
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

    /// A pending non-blocking connect: I/O succeeded (it connected), or a failure was reported.
    fn settle(&mut self, id: ConnId, failed_with: Option<i32>, emit: &mut dyn FnMut(&[u8])) {
        let Some(Some(c)) = self.conns.get(id) else {
            return;
        };
        let Proto::Tcp(Tcp::Connecting { remote, local }) = c.proto else {
            return;
        };
        match failed_with {
            Some(libc::ECONNREFUSED) => self.refused(id, local, remote, emit),
            Some(_) => {
                if let Some(Some(c)) = self.conns.get_mut(id) {
                    c.proto = Proto::Tcp(Tcp::Done);
                }
            }
            None => self.open_tcp(id, local, remote, Side::Local, emit),
        }
    }

    /// Socket-level bytes on a TLS connection in plain mode are ciphertext: not written. A
    /// socket call made inside an SSL call is what marks a connection TLS when the SSL object's
    /// descriptor is not known otherwise, and so does a send of the handshake an SSL object on
    /// memory BIOs wrote (see `mem_bio`).
    fn is_ciphertext(&mut self, r: &Record, id: ConnId) -> bool {
        let mode = self.mode;
        let Some(Some(c)) = self.conns.get_mut(id) else {
            return false;
        };
        if !mode.decrypts() || !matches!(c.proto, Proto::Tcp(_)) {
            return false;
        }
        if r.ssl != 0 {
            c.tls = true;
            self.ssl.insert((r.pid, r.ssl), r.fd);
        } else if r.kind == Kind::Send {
            if let Some(ssl) = self.mem_bios.sent(r.pid, r.data) {
                c.tls = true;
                self.ssl.insert((r.pid, ssl), r.fd);
            }
        }
        c.tls && mode == Mode::Plain
    }

    /// A recv that may be a handshake the program is about to write into an SSL object's read
    /// BIO is held back until its thread's next record tells (see `mem_bio`).
    fn held_back(&mut self, r: &Record, id: ConnId) -> bool {
        if !self.mode.decrypts() || !self.mem_bios.may_hold(r.pid, r.data) {
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

    fn on_send(&mut self, r: &Record, emit: &mut dyn FnMut(&[u8])) {
        let Some(id) = self.conn_id(r.pid, r.fd) else {
            return;
        };
        if r.ret < 0 {
            if r.errno == libc::ECONNREFUSED {
                self.settle(id, Some(r.errno), emit);
            }
            return;
        }
        self.settle(id, None, emit);
        if self.is_ciphertext(r, id) {
            return;
        }
        let fresh = matches!(
            self.conns[id].as_ref().map(|c| &c.proto),
            Some(Proto::Tcp(Tcp::Fresh))
        );
        if let (true, Some(dest)) = (fresh, r.addr) {
            // sendto/sendmsg with MSG_FASTOPEN connects and sends in one call.
            self.open_tcp(id, r.local, dest, Side::Local, emit);
        }
        self.udp_learn_local(id, r.local);
        let route = self.udp_route(id, r.addr);
        let Some(Some(c)) = self.conns.get_mut(id) else {
            return;
        };
        match &mut c.proto {
            Proto::Tcp(Tcp::Open(stream)) => stream.data(Side::Local, r.data, emit),
            Proto::Udp(udp) => {
                if let Some((src, dst)) = route {
                    synth::udp_datagram(src, dst, r.data, &mut udp.scratch, emit);
                }
            }
            _ => {}
        }
    }

    fn on_recv(&mut self, r: &Record, emit: &mut dyn FnMut(&[u8])) {
        let Some(id) = self.conn_id(r.pid, r.fd) else {
            return;
        };
        let datagram = matches!(
            self.conns[id].as_ref().map(|c| &c.proto),
            Some(Proto::Udp(_))
        );
        if r.ret < 0 {
            if r.errno == libc::ECONNREFUSED {
                self.settle(id, Some(r.errno), emit);
            }
            return;
        }
        self.settle(id, None, emit);
        if r.ret == 0 && !datagram {
            if r.arg0 > 0 {
                if let Some(Some(c)) = self.conns.get_mut(id) {
                    c.fin(Side::Remote, emit);
                }
            }
            return;
        }
        if self.held_back(r, id) || self.is_ciphertext(r, id) {
            return;
        }
        self.udp_learn_local(id, r.local);
        let route = self
            .udp_route(id, r.addr)
            .map(|(local, peer)| (peer, local));
        let Some(Some(c)) = self.conns.get_mut(id) else {
            return;
        };
        match &mut c.proto {
            Proto::Tcp(Tcp::Open(stream)) => stream.data(Side::Remote, r.data, emit),
            Proto::Udp(udp) => {
                if let Some((src, dst)) = route {
                    synth::udp_datagram(src, dst, r.data, &mut udp.scratch, emit);
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
        let peer = addr.or(udp.peer)?;
        let bound = udp.local.unwrap_or_else(|| unspecified_like(peer));
        let local = if bound.ip().is_unspecified() {
            SocketAddr::new(self.source_for(Some(bound), peer), bound.port())
        } else {
            bound
        };
        Some((local, peer))
    }

    /// The source IP towards `peer`: loopback answers without asking the kernel.
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
                .unwrap_or_else(|| unspecified_like(peer).ip()),
        };
        // A v6 socket talking to a v4-mapped peer keeps its family; synth writes both as IPv4.
        match (bound, ip) {
            (Some(SocketAddr::V6(_)), IpAddr::V4(v4)) => IpAddr::V6(v4.to_ipv6_mapped()),
            _ => ip,
        }
    }

    fn on_tls_data(&mut self, r: &Record, emit: &mut dyn FnMut(&[u8])) {
        if !self.mode.decrypts() || r.data.is_empty() {
            return;
        }
        let Some(&fd) = self.ssl.get(&(r.pid, r.ssl)) else {
            return;
        };
        let Some(id) = self.conn_id(r.pid, fd) else {
            return;
        };
        self.settle(id, None, emit);
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
    }

    impl Kernel for Script {
        fn inode(&mut self, pid: i32, fd: i32) -> Option<u64> {
            self.inodes.get(&(pid, fd)).copied()
        }
        fn discover(&mut self, _: i32, _: i32) -> Option<Found> {
            None
        }
        fn route_source(&mut self, _: SocketAddr) -> Option<IpAddr> {
            None
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
}
