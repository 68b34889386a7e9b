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
//! library logs keys through us (`Kind::TlsKeylog`: OpenSSL, GnuTLS; not NSS, which would wait
//! for nothing), every later send and receive is held, in order, until the session's keys are
//! all logged ([`Awaited`]); the key records that come meanwhile are written at once, before the
//! held packets. Released early: when the process closes, replaces or passes descriptors,
//! exits or is gone, on another call on the connection (shutdown, SO_ERROR), at the end of the
//! run, and past [`MAX_HELD`] bytes. Released records are stamped when written, so the file
//! stays in time order.

use super::mem_bio::Held;
use crate::record::{Kind, Record};

/// Bytes held per run at most: a handshake with a long certificate chain is tens of kilobytes.
pub const MAX_HELD: usize = 1 << 20;

/// What a waiting connection has seen of its session's keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Awaited {
    server_traffic: bool,
    client_traffic: bool,
}

impl Awaited {
    /// Key log line `line` of the connection's session was written: whether the capture now
    /// has every secret of the handshake. TLS 1.2 has one (`CLIENT_RANDOM`, the master
    /// secret); TLS 1.3 ends with the two traffic secrets, each logged after its side's
    /// handshake secret.
    pub fn logged(&mut self, line: &[u8]) -> bool {
        if line.starts_with(b"CLIENT_RANDOM ") {
            return true;
        }
        self.server_traffic |= line.starts_with(b"SERVER_TRAFFIC_SECRET_0 ");
        self.client_traffic |= line.starts_with(b"CLIENT_TRAFFIC_SECRET_0 ");
        self.server_traffic && self.client_traffic
    }
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
            | Kind::TlsKeylog => false,
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
