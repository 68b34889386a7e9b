//! Memory-BIO TLS: SSL objects with no socket, whose ciphertext the program moves itself between
//! two memory BIOs and a socket (Python's asyncio). Which socket is found from the bytes: a
//! handshake record read out of an SSL object's write BIO and then sent on a socket, or received
//! on a socket and then written into its read BIO, ties the object to that socket.
//!
//! The matching is done here rather than in the hooks because:
//! - a server receives the ClientHello before it writes it into the read BIO, so at the recv
//!   nobody can tell yet that the bytes are ciphertext: only the collector, which sees both
//!   records, can hold that recv back until the receiving thread's next record tells;
//! - the hooks would need a table of every SSL object's BIOs, shared by all threads, with no lock
//!   and no allocation; here a map does, and the hooks only report what they see (an object's
//!   memory BIOs at each of its SSL calls, the first bytes of each handshake record the program
//!   moves through a memory BIO);
//! - here it is pure, so tested with scripted records.
//!
//! A recv is held only when its process has SSL objects on memory BIOs, its connection is not
//! known as TLS and was never held before, and its bytes start with a TLS handshake record: the
//! connections of every other program are never delayed. A held recv is decided by the next
//! record of its thread (or one that closes or replaces descriptors in its process), so a
//! program that receives on one thread and feeds the BIO on another is not recognized.

use crate::fast_hash::{HashMap, HashSet};
use std::collections::VecDeque;

use synth::Side;

use crate::record::{Kind, Record};
use crate::tls::starts_handshake;

/// Outgoing chunks remembered per run: an SSL object's handshake is sent right after it is read
/// out, so only a stalled or abandoned one waits, and the oldest of those are forgotten.
const MAX_OUTGOING: usize = 64;

/// What the collector knows of SSL objects on memory BIOs.
#[derive(Default)]
pub struct MemBios {
    /// (pid, BIO) → the SSL object that reads its ciphertext from it (Remote) or writes its
    /// ciphertext to it (Local).
    bios: HashMap<(i32, u64), (u64, Side)>,
    /// Processes with SSL objects on memory BIOs.
    pids: HashSet<i32>,
    /// Handshake ciphertext read out of a write BIO, not yet seen on a socket; oldest first.
    outgoing: VecDeque<Chunk>,
    /// Recvs held back, one per thread at most.
    held: Vec<Held>,
}

/// Ciphertext known by its first bytes.
struct Chunk {
    pid: i32,
    ssl: u64,
    head: Vec<u8>,
}

/// A recv held back: its record and its bytes.
pub struct Held {
    record: Record<'static>,
    data: Vec<u8>,
}

impl Held {
    /// Record `r` kept with a copy of its bytes.
    pub fn of(r: &Record) -> Held {
        Held {
            record: Record { data: &[], ..*r },
            data: r.data.to_vec(),
        }
    }

    /// The recv as it was recorded.
    pub fn record(&self) -> Record<'_> {
        Record {
            data: &self.data,
            ..self.record
        }
    }
}

impl MemBios {
    /// A `TlsBios` record: which memory BIOs an SSL object uses.
    pub fn learn(&mut self, r: &Record) {
        for (bio, side) in [(r.arg0, Side::Remote), (r.arg1, Side::Local)] {
            if bio != 0 {
                self.bios.insert((r.pid, bio as u64), (r.ssl, side));
            }
        }
        self.pids.insert(r.pid);
    }

    /// A `TlsCipher` record of ciphertext read out of a BIO: if it is an SSL object's write BIO,
    /// the chunk is on its way to a socket.
    pub fn read_out(&mut self, r: &Record) {
        if r.arg1 != 0 {
            // Written into a read BIO: what decides a held recv (see `settle`).
            return;
        }
        let Some(&(ssl, Side::Local)) = self.bios.get(&(r.pid, r.arg0 as u64)) else {
            return;
        };
        if self.outgoing.len() == MAX_OUTGOING {
            self.outgoing.pop_front();
        }
        self.outgoing.push_back(Chunk {
            pid: r.pid,
            ssl,
            head: r.data.to_vec(),
        });
    }

    /// Process `pid` sent `data` on a TCP socket: the SSL object whose handshake it is, if any.
    pub fn sent(&mut self, pid: i32, data: &[u8]) -> Option<u64> {
        if !starts_handshake(data) {
            return None;
        }
        let i = self
            .outgoing
            .iter()
            .position(|c| c.pid == pid && same_start(&c.head, data))?;
        self.outgoing.remove(i).map(|c| c.ssl)
    }

    /// Whether a recv of `data` by `pid` may be ciphertext about to go into a read BIO.
    pub fn may_hold(&self, pid: i32, data: &[u8]) -> bool {
        self.pids.contains(&pid) && starts_handshake(data)
    }

    /// Hold recv `r` back until [`settle`](Self::settle) decides it.
    pub fn hold(&mut self, r: &Record) {
        self.held.push(Held::of(r));
    }

    /// The held recvs that record `r`, about to be applied, decides: its thread's recv, with the
    /// SSL object whose read BIO it went into when `r` says so; and when `r` closes or replaces
    /// descriptors, every recv its process holds, which must be written first.
    pub fn settle(&mut self, r: &Record) -> Vec<(Held, Option<u64>)> {
        if self.held.is_empty() {
            return Vec::new();
        }
        let whole_process = matches!(
            r.kind,
            Kind::Close
                | Kind::CloseRange
                | Kind::Dup
                | Kind::NewFd
                | Kind::Received
                | Kind::Exit
                | Kind::Detached
                | Kind::Start
                | Kind::Scanned
        );
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.held.len() {
            let h = &self.held[i].record;
            let same_thread = h.pid == r.pid && h.tid == r.tid;
            if !(same_thread || whole_process && h.pid == r.pid) {
                i += 1;
                continue;
            }
            let held = self.held.swap_remove(i);
            let ssl = same_thread.then(|| self.written_in(r, &held)).flatten();
            out.push((held, ssl));
        }
        out
    }

    /// Every held recv (the run ends).
    pub fn drain(&mut self) -> Vec<Held> {
        std::mem::take(&mut self.held)
    }

    /// Process `pid` is gone.
    pub fn forget(&mut self, pid: i32) {
        self.bios.retain(|(p, _), _| *p != pid);
        self.outgoing.retain(|c| c.pid != pid);
        self.pids.remove(&pid);
    }

    /// If `r` writes the held recv's bytes into an SSL object's read BIO: that object.
    fn written_in(&self, r: &Record, held: &Held) -> Option<u64> {
        if r.kind != Kind::TlsCipher || r.arg1 == 0 {
            return None;
        }
        match self.bios.get(&(r.pid, r.arg0 as u64)) {
            Some(&(ssl, Side::Remote)) if same_start(r.data, &held.data) => Some(ssl),
            _ => None,
        }
    }
}

/// Whether `head` (a chunk's first bytes) and `data` agree as far as both go.
fn same_start(head: &[u8], data: &[u8]) -> bool {
    let n = head.len().min(data.len());
    n > 0 && head[..n] == data[..n]
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, SocketAddr};

    use super::*;
    use crate::collector::machine::{Found, Kernel, Machine, Origin, PacketSink};
    use crate::tls::Mode;

    const PID: i32 = 10;
    const SSL: u64 = 0x5550;
    const RBIO: u64 = 0xb10;
    const WBIO: u64 = 0xb20;
    const HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5];

    fn rec(kind: Kind, tid: i32) -> Record<'static> {
        let mut r = Record::new(kind);
        r.pid = PID;
        r.tid = tid;
        r
    }

    fn bios() -> Record<'static> {
        let mut r = rec(Kind::TlsBios, 1);
        r.ssl = SSL;
        r.arg0 = RBIO as i64;
        r.arg1 = WBIO as i64;
        r
    }

    fn cipher(bio: u64, into: bool, data: &'static [u8]) -> Record<'static> {
        let mut r = rec(Kind::TlsCipher, 1);
        r.arg0 = bio as i64;
        r.arg1 = into as i64;
        r.ret = data.len() as i64;
        r.data = data;
        r
    }

    fn recv(tid: i32, data: &'static [u8]) -> Record<'static> {
        let mut r = rec(Kind::Recv, tid);
        r.fd = 3;
        r.ret = data.len() as i64;
        r.data = data;
        r
    }

    #[test]
    fn a_chunk_read_out_of_the_write_bio_is_known_once_on_a_socket() {
        let mut m = MemBios::default();
        m.learn(&bios());
        m.read_out(&cipher(WBIO, false, &HELLO[..8]));
        assert_eq!(m.sent(PID + 1, HELLO), None, "another process");
        assert_eq!(m.sent(PID, &[0x16, 0x03, 0x01, 9, 9]), None, "other bytes");
        assert_eq!(m.sent(PID, &HELLO[..6]), Some(SSL), "a partial send");
        assert_eq!(m.sent(PID, HELLO), None, "matched once");
    }

    #[test]
    fn only_an_ssl_objects_write_bio_gives_outgoing_chunks() {
        let mut m = MemBios::default();
        m.learn(&bios());
        m.read_out(&cipher(0xdead, false, HELLO));
        m.read_out(&cipher(RBIO, false, HELLO));
        assert_eq!(m.sent(PID, HELLO), None);
    }

    #[test]
    fn a_held_recv_is_decided_by_its_threads_next_record() {
        let mut m = MemBios::default();
        assert!(!m.may_hold(PID, HELLO), "no memory BIO in this process yet");
        m.learn(&bios());
        assert!(m.may_hold(PID, HELLO));
        assert!(!m.may_hold(PID, b"GET / HTTP/1.1\r\n"));
        m.hold(&recv(1, HELLO));
        assert!(m.settle(&rec(Kind::Send, 2)).is_empty(), "another thread");
        let decided = m.settle(&cipher(RBIO, true, HELLO));
        assert_eq!(decided.len(), 1);
        assert_eq!(decided[0].1, Some(SSL));
        assert_eq!(decided[0].0.record().data, HELLO);
        assert_eq!(decided[0].0.record().fd, 3);

        m.hold(&recv(1, HELLO));
        let decided = m.settle(&cipher(WBIO, true, HELLO));
        assert_eq!(decided[0].1, None, "not a read BIO");
        m.hold(&recv(1, HELLO));
        let decided = m.settle(&cipher(RBIO, true, &[0x16, 0x03, 0x01, 7]));
        assert_eq!(decided[0].1, None, "other bytes");
    }

    #[test]
    fn a_close_in_the_process_releases_every_held_recv() {
        let mut m = MemBios::default();
        m.learn(&bios());
        m.hold(&recv(1, HELLO));
        m.hold(&recv(2, HELLO));
        let mut other = rec(Kind::Close, 5);
        other.pid = PID + 1;
        assert!(m.settle(&other).is_empty());
        let decided = m.settle(&rec(Kind::Close, 5));
        assert_eq!(decided.len(), 2);
        assert!(decided.iter().all(|(_, ssl)| ssl.is_none()));
        assert!(m.drain().is_empty());
    }

    // The same records through the whole machine: packets out.

    struct NoKernel;

    impl Kernel for NoKernel {
        fn inode(&mut self, _: i32, _: i32) -> Option<u64> {
            None
        }
        fn discover(&mut self, _: i32, _: i32) -> Option<Found> {
            None
        }
        fn route_source(&mut self, _: SocketAddr) -> Option<IpAddr> {
            None
        }
    }

    /// The TCP payloads written, in order.
    #[derive(Default)]
    struct Payloads(Vec<Vec<u8>>);

    impl PacketSink for Payloads {
        fn packet(&mut self, _: &Origin, bytes: &[u8]) {
            let p = etherparse::SlicedPacket::from_ip(bytes).expect("valid packet");
            if let Some(etherparse::TransportSlice::Tcp(t)) = p.transport {
                if !t.payload().is_empty() {
                    self.0.push(t.payload().to_vec());
                }
            }
        }
    }

    const SERVER_HELLO: &[u8] = &[0x16, 0x03, 0x03, 0x00, 0x02, 8, 9];

    fn on(fd: i32, mut r: Record<'static>) -> Record<'static> {
        r.fd = fd;
        r
    }

    fn send(fd: i32, data: &'static [u8]) -> Record<'static> {
        let mut r = recv(1, data);
        r.kind = Kind::Send;
        r.fd = fd;
        r
    }

    fn plaintext(side: Side, data: &'static [u8]) -> Record<'static> {
        let mut r = rec(Kind::TlsData, 1);
        r.ssl = SSL;
        r.arg0 = (side == Side::Remote) as i64;
        r.data = data;
        r
    }

    /// A client's connected socket 3 (pid PID) and the records `then`.
    fn client(then: &[Record]) -> Vec<Vec<u8>> {
        let mut socket = rec(Kind::Socket, 1);
        socket.ret = 3;
        socket.arg0 = 7;
        socket.arg1 = libc::SOCK_STREAM as i64;
        let mut connect = rec(Kind::Connect, 1);
        connect.fd = 3;
        connect.addr = Some("127.0.0.1:443".parse().expect("addr"));
        connect.local = Some("127.0.0.1:40000".parse().expect("addr"));
        run(Mode::Plain, &[&[socket, connect], then].concat())
    }

    /// A server's connection accepted as descriptor 4 (pid PID) and the records `then`.
    fn server(mode: Mode, then: &[Record]) -> Vec<Vec<u8>> {
        let mut socket = rec(Kind::Socket, 1);
        socket.ret = 3;
        socket.arg0 = 7;
        socket.arg1 = libc::SOCK_STREAM as i64;
        let mut accept = rec(Kind::Accept, 1);
        accept.fd = 3;
        accept.ret = 4;
        accept.arg1 = 8;
        accept.local = Some("127.0.0.1:443".parse().expect("addr"));
        accept.addr = Some("127.0.0.1:40000".parse().expect("addr"));
        run(
            mode,
            &[&[socket, on(3, rec(Kind::Listen, 1)), accept], then].concat(),
        )
    }

    fn run(mode: Mode, records: &[Record]) -> Vec<Vec<u8>> {
        let mut m = Machine::new(NoKernel, mode, 1);
        let mut out = Payloads::default();
        for r in records {
            m.apply(r, &mut out);
        }
        m.finish(&mut out);
        out.0
    }

    #[test]
    fn a_client_on_memory_bios_shows_only_its_plaintext() {
        let p = client(&[
            bios(),
            cipher(WBIO, false, HELLO),
            send(3, HELLO),
            on(3, recv(1, SERVER_HELLO)),
            plaintext(Side::Local, b"GET"),
            plaintext(Side::Remote, b"200"),
        ]);
        assert_eq!(p, [b"GET".to_vec(), b"200".to_vec()]);
    }

    #[test]
    fn a_server_on_memory_bios_never_writes_the_client_hello() {
        let p = server(
            Mode::Plain,
            &[
                bios(),
                on(4, recv(1, HELLO)),
                cipher(RBIO, true, HELLO),
                send(4, SERVER_HELLO),
                plaintext(Side::Remote, b"GET"),
                plaintext(Side::Local, b"200"),
            ],
        );
        assert_eq!(p, [b"GET".to_vec(), b"200".to_vec()]);
    }

    #[test]
    fn both_mode_keeps_the_held_client_hello_on_the_wire_stream() {
        let p = server(
            Mode::Both,
            &[
                bios(),
                on(4, recv(1, HELLO)),
                cipher(RBIO, true, HELLO),
                send(4, SERVER_HELLO),
                plaintext(Side::Remote, b"GET"),
            ],
        );
        assert_eq!(p, [HELLO.to_vec(), SERVER_HELLO.to_vec(), b"GET".to_vec()]);
    }

    #[test]
    fn a_held_recv_that_no_read_bio_takes_is_written_in_order() {
        let p = server(
            Mode::Plain,
            &[
                bios(),
                on(4, recv(1, HELLO)),
                send(4, b"plain answer"),
                on(4, recv(1, HELLO)),
            ],
        );
        assert_eq!(
            p,
            [HELLO.to_vec(), b"plain answer".to_vec(), HELLO.to_vec()],
            "held once, then never again"
        );
    }
}
