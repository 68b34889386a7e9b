//! A TLS handshake, held back until the traced side has logged the keys that decrypt it, so that
//! in a pcapng of ciphertext the Decryption Secrets Blocks come before the packets that need
//! them.
//!
//! Why hold: Wireshark reads secrets in file order, and takes each when it dissects the message
//! that switches keys: both handshake secrets at the ServerHello, each side's traffic secret at
//! that side's Finished, TLS 1.2's master secret at the first ChangeCipherSpec. The libraries log
//! a secret when they derive or first use it, often after the packet that needs it: a client's
//! handshake secrets come from the ServerHello it has just read, OpenSSL logs the client's
//! traffic secret just after sending its Finished, a server its own traffic secret after sending
//! its Finished and the master secret after reading the client's ChangeCipherSpec. Written as
//! they happened, the keys would follow the packets that need them and nothing would decrypt.
//!
//! So on a connection whose ClientHello a hooked library sent or took, in a process whose TLS
//! library logs keys through us (`Kind::TlsKeylog`: OpenSSL, GnuTLS) or whose environment names
//! a key log file the collector reads (`Kind::KeyLogFile`: NSS, which logs nowhere else), every
//! later send and receive is held, in order, until the session's keys are all logged
//! ([`Awaited`]); the key records that come meanwhile are written at once, before the held
//! packets. A line from a file names its session only by its client random: [`Sessions`] finds
//! the connection whose ClientHello carried it, and keeps what came before that ClientHello was
//! applied (the collector may read the file ahead of the ring). Released early: when the process closes, replaces or passes descriptors,
//! exits or is gone, on another call on the connection (shutdown, SO_ERROR), at the end of the
//! run, and past [`MAX_HELD`] bytes. Released records are stamped when written, so the file
//! stays in time order.

use crate::fast_hash::HashMap;
use std::collections::VecDeque;

use super::mem_bio::Held;
use crate::record::{Kind, Record};

/// Bytes held per run at most: a handshake with a long certificate chain is tens of kilobytes.
pub const MAX_HELD: usize = 1 << 20;

/// Sessions remembered by client random at most (a bound on a long run's memory; a session is
/// looked up within moments of its ClientHello).
const MAX_SESSIONS: usize = 4096;

/// A TLS client random: the 32 bytes that name a session in a key log line.
pub type Random = [u8; 32];

/// What a waiting connection has seen of its session's keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Awaited {
    /// The client random of the connection's ClientHello (zeros: not known).
    pub random: Random,
    master: bool,
    server_traffic: bool,
    client_traffic: bool,
}

impl Awaited {
    /// Key log line `line` of the connection's session was written: whether the capture now
    /// has every secret of the handshake. TLS 1.2 has one (`CLIENT_RANDOM`, the master
    /// secret); TLS 1.3 ends with the two traffic secrets, each logged after its side's
    /// handshake secret.
    pub fn logged(&mut self, line: &[u8]) -> bool {
        self.master |= line.starts_with(b"CLIENT_RANDOM ");
        self.server_traffic |= line.starts_with(b"SERVER_TRAFFIC_SECRET_0 ");
        self.client_traffic |= line.starts_with(b"CLIENT_TRAFFIC_SECRET_0 ");
        self.done()
    }

    /// Whether every secret of the handshake was written.
    pub fn done(&self) -> bool {
        self.master || self.server_traffic && self.client_traffic
    }
}

/// A session seen in a ClientHello or in a key log file's line.
#[derive(Clone, Copy, Debug, Default)]
pub struct Session {
    /// The process whose connection carried its ClientHello, else the one that named the file.
    pub pid: i32,
    /// The connection that carried its ClientHello, once applied.
    pub conn: Option<usize>,
    /// The key log files' lines of it so far.
    pub logged: Awaited,
}

/// Recent sessions by client random, oldest forgotten first.
#[derive(Default)]
pub struct Sessions {
    by_random: HashMap<Random, Session>,
    order: VecDeque<Random>,
}

impl Sessions {
    /// The session of `random`, made for `pid` when new.
    pub fn entry(&mut self, random: Random, pid: i32) -> &mut Session {
        if !self.by_random.contains_key(&random) {
            if self.order.len() >= MAX_SESSIONS {
                if let Some(old) = self.order.pop_front() {
                    self.by_random.remove(&old);
                }
            }
            self.order.push_back(random);
        }
        self.by_random.entry(random).or_insert(Session {
            pid,
            conn: None,
            logged: Awaited {
                random,
                ..Awaited::default()
            },
        })
    }
}

/// The client random of a TLS record holding the start of a ClientHello: record header (5),
/// handshake header (4), legacy version (2), then the random.
pub fn hello_random(hello: &[u8]) -> Option<Random> {
    hello.get(11..43)?.try_into().ok()
}

/// The client random a key log line names (`LABEL <random, 64 hex digits> <secret>`).
pub fn line_random(line: &[u8]) -> Option<Random> {
    let hex = line.split(|&b| b == b' ').nth(1)?;
    if hex.len() != 64 {
        return None;
    }
    let mut random = [0u8; 32];
    for (byte, pair) in random.iter_mut().zip(hex.chunks_exact(2)) {
        let digits = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(digits, 16).ok()?;
    }
    Some(random)
}

/// Sends and receives held back, with the connection they belong to, in order.
#[derive(Default)]
pub struct KeyHolds {
    held: Vec<(usize, Held)>,
    bytes: usize,
}

impl KeyHolds {
    /// Hold `r`, a send or receive on connection `conn`; false when the bound is reached (the
    /// caller releases what is held and stops waiting).
    pub fn hold(&mut self, conn: usize, r: &Record) -> bool {
        if self.bytes + r.data.len() > MAX_HELD {
            return false;
        }
        self.bytes += r.data.len();
        self.held.push((conn, Held::of(r)));
        true
    }

    /// Whether anything is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Whether `r`, about to be applied and neither held nor a key record, ends the wait of a
    /// connection of `r`'s process (`on_conn`: `r` is a call on it): another call on it, or one
    /// that changes the process's descriptors.
    pub fn releases(r: &Record, on_conn: bool) -> bool {
        match r.kind {
            Kind::Close
            | Kind::CloseRange
            | Kind::Dup
            | Kind::NewFd
            | Kind::Received
            | Kind::Passed
            | Kind::Exit
            | Kind::Detached
            | Kind::Start
            | Kind::Scanned => true,
            // Held themselves when on the connection.
            Kind::Send | Kind::Recv => false,
            // The TLS library's own reports on the object, made in its every call.
            Kind::TlsFd
            | Kind::TlsData
            | Kind::TlsEof
            | Kind::TlsBios
            | Kind::TlsCipher
            | Kind::TlsKey
            | Kind::TlsKeylog
            | Kind::KeyLogFile => false,
            _ => on_conn,
        }
    }

    /// The connections with something held, in process `pid` (each once).
    pub fn conns_of(&self, pid: i32) -> Vec<usize> {
        let mut conns: Vec<usize> = Vec::new();
        for (c, h) in &self.held {
            if h.record().pid == pid && !conns.contains(c) {
                conns.push(*c);
            }
        }
        conns
    }

    /// Take what connection `conn` holds, oldest first.
    pub fn take(&mut self, conn: usize) -> Vec<Held> {
        let (taken, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(c, _)| *c == conn);
        self.held = kept;
        self.bytes = self.held.iter().map(|(_, h)| h.record().data.len()).sum();
        taken.into_iter().map(|(_, h)| h).collect()
    }

    /// Everything held (the run ends), with its connection.
    pub fn drain(&mut self) -> Vec<(usize, Held)> {
        self.bytes = 0;
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls12_needs_the_master_secret_tls13_both_traffic_secrets() {
        assert!(Awaited::default().logged(b"CLIENT_RANDOM 00 11"));
        let mut a = Awaited::default();
        assert!(!a.logged(b"SERVER_HANDSHAKE_TRAFFIC_SECRET 00 11"));
        assert!(!a.logged(b"CLIENT_HANDSHAKE_TRAFFIC_SECRET 00 11"));
        assert!(!a.logged(b"SERVER_TRAFFIC_SECRET_0 00 11"));
        assert!(!a.logged(b"EXPORTER_SECRET 00 11"));
        assert!(a.logged(b"CLIENT_TRAFFIC_SECRET_0 00 11"));
    }

    #[test]
    fn randoms_of_hellos_and_key_lines() {
        let mut hello = vec![0x16, 3, 1, 0, 200, 1, 0, 0, 196, 3, 3];
        hello.extend(1..=32u8);
        hello.push(0);
        let random: Random = std::array::from_fn(|i| i as u8 + 1);
        assert_eq!(hello_random(&hello), Some(random));
        assert_eq!(hello_random(&hello[..42]), None, "cut short");
        let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let line = format!("CLIENT_TRAFFIC_SECRET_0 {hex} 00ff");
        assert_eq!(line_random(line.as_bytes()), Some(random));
        assert_eq!(line_random(b"CLIENT_RANDOM 0011 00ff"), None, "too short");
        assert_eq!(
            line_random(format!("X {}zz 00", &hex[2..]).as_bytes()),
            None
        );
    }

    #[test]
    fn sessions_are_bounded_oldest_first() {
        let mut s = Sessions::default();
        for i in 0..=MAX_SESSIONS {
            let mut r = [0u8; 32];
            r[..8].copy_from_slice(&(i as u64).to_le_bytes());
            s.entry(r, i as i32);
        }
        assert_eq!(s.by_random.len(), MAX_SESSIONS);
        assert!(!s.by_random.contains_key(&[0u8; 32]), "the oldest went");
        let mut last = [0u8; 32];
        last[..8].copy_from_slice(&(MAX_SESSIONS as u64).to_le_bytes());
        assert_eq!(s.entry(last, -1).pid, MAX_SESSIONS as i32, "kept as made");
    }

    #[test]
    fn held_bytes_are_bounded() {
        let mut h = KeyHolds::default();
        let big = vec![0u8; MAX_HELD / 2 + 1];
        let mut r = Record::new(Kind::Recv);
        r.data = &big;
        assert!(h.hold(1, &r));
        assert!(!h.hold(2, &r), "past the bound");
        assert_eq!(h.conns_of(0), [1]);
        assert_eq!(h.take(1).len(), 1);
        assert!(h.is_empty() && h.hold(2, &r));
    }
}
