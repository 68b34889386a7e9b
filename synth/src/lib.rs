//! Pure packet synthesis and capture-file writing.
//!
//! Connection events go in (a handshake, bytes sent or received, a FIN), ideal IP packets come out
//! through a caller's callback, and capture-file records are built into a caller's buffer. Nothing
//! here reads a clock, opens a file or calls libc: timestamps and sequence-number seeds are inputs.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::time::Duration;

/// Which end of a connection an event comes from, seen from the traced process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Local,
    Remote,
}

/// One TCP connection's synthetic wire state: addresses, both sequence spaces, FINs seen.
pub struct TcpStream {
    _private: (),
}

impl TcpStream {
    /// A stream between `local` and `remote`; v4-mapped IPv6 addresses are written as IPv4.
    pub fn new(_local: SocketAddr, _remote: SocketAddr, _local_isn: u32, _remote_isn: u32) -> Self {
        todo!()
    }
    /// SYN from `client`, SYN/ACK from the other side, ACK from `client`.
    pub fn open(&mut self, _client: Side, _out: &mut dyn FnMut(&[u8])) {
        todo!()
    }
    /// A connect the peer refused: SYN from local, RST/ACK from remote.
    pub fn refused(&mut self, _out: &mut dyn FnMut(&[u8])) {
        todo!()
    }
    /// `payload` sent by `from`, split into segments that fit the IP length limits.
    pub fn data(&mut self, _from: Side, _payload: &[u8], _out: &mut dyn FnMut(&[u8])) {
        todo!()
    }
    /// FIN from `from`; a second FIN from the same side emits nothing.
    pub fn fin(&mut self, _from: Side, _out: &mut dyn FnMut(&[u8])) {
        todo!()
    }
    /// Whether `side` has sent its FIN.
    pub fn fin_sent(&self, _side: Side) -> bool {
        todo!()
    }
}

/// One UDP datagram from `src` to `dst` (v4-mapped written as IPv4), built in `scratch`.
pub fn udp_datagram(
    _src: SocketAddr,
    _dst: SocketAddr,
    _payload: &[u8],
    _scratch: &mut Vec<u8>,
    _out: &mut dyn FnMut(&[u8]),
) {
    todo!()
}

/// The pcap global header for raw-IP (LINKTYPE_RAW, 101) packets, microsecond timestamps.
pub fn pcap_header() -> Vec<u8> {
    todo!()
}

/// Append one pcap record (header and packet) stamped `ts` since the Unix epoch to `out`.
pub fn pcap_record(_ts: Duration, _packet: &[u8], _out: &mut Vec<u8>) {
    todo!()
}
