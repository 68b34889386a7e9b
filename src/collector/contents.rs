//! What one capture file holds, counted as its packets are written, for the CLI's end-of-run
//! block: packets, TCP connections, UDP flows, and TCP connections whose first bytes are a TLS
//! ClientHello (in the default `plain` mode that is TLS no hook decrypted: a library linked in
//! statically, rustls, BoringSSL…).
//!
//! Packets are the raw IPv4/IPv6 packets the collector made itself (no IP options, no IPv6
//! extension headers), so a short look at fixed offsets is enough; anything else is counted as a
//! packet only.

use crate::fast_hash::HashMap;
use std::collections::hash_map::Entry;

/// Header offsets and values used here.
mod field {
    pub const IPV4_PROTOCOL: usize = 9;
    pub const IPV4_SRC: usize = 12;
    pub const IPV4_ADDRS_LEN: usize = 8;
    pub const IPV6_NEXT_HEADER: usize = 6;
    pub const IPV6_SRC: usize = 8;
    pub const IPV6_ADDRS_LEN: usize = 32;
    pub const IPV6_HEADER_LEN: usize = 40;
    /// In the TCP header: data offset (high nibble) and flags.
    pub const TCP_DATA_OFFSET: usize = 12;
    pub const TCP_FLAGS: usize = 13;
    pub const TCP_SYN: u8 = 0x02;
    pub const TCP_ACK: u8 = 0x10;
    pub const UDP_HEADER_LEN: usize = 8;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
}

/// A conversation: protocol and both endpoints (address then port each), the lower endpoint
/// first, so both directions are one key. Each endpoint has 18 bytes (an IPv4 one uses the first
/// 6); a fixed array keeps the per-packet look free of allocation.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    proto: u8,
    v6: bool,
    endpoints: [u8; 36],
}

/// The counts of one capture file.
#[derive(Default)]
pub struct Contents {
    pub packets: u64,
    pub tcp: u64,
    pub udp: u64,
    /// TCP connections whose first payload is a TLS ClientHello.
    pub tls_ciphertext: u64,
    /// The conversations seen; for TCP, whether the connection's first payload was seen yet.
    seen: HashMap<Key, bool>,
}

impl Contents {
    /// Count one packet (raw IP bytes).
    pub fn add(&mut self, packet: &[u8]) {
        self.packets += 1;
        let Some((key, transport)) = split(packet) else {
            return;
        };
        if key.proto == field::UDP {
            if transport.len() >= field::UDP_HEADER_LEN && self.seen.insert(key, true).is_none() {
                self.udp += 1;
            }
            return;
        }
        let (Some(&offset), Some(&flags)) = (
            transport.get(field::TCP_DATA_OFFSET),
            transport.get(field::TCP_FLAGS),
        ) else {
            return;
        };
        let payload = transport
            .get(usize::from(offset >> 4) * 4..)
            .unwrap_or_default();
        // The collector writes one SYN per connection attempt: a SYN on a known pair is the
        // pair's next connection (a port used again).
        let opening = flags & (field::TCP_SYN | field::TCP_ACK) == field::TCP_SYN;
        let payload_seen = match self.seen.entry(key) {
            Entry::Occupied(e) if !opening => e.into_mut(),
            Entry::Occupied(e) => {
                self.tcp += 1;
                let seen = e.into_mut();
                *seen = false;
                seen
            }
            Entry::Vacant(e) => {
                self.tcp += 1;
                e.insert(false)
            }
        };
        if !payload.is_empty() && !*payload_seen {
            *payload_seen = true;
            if is_client_hello(payload) {
                self.tls_ciphertext += 1;
            }
        }
    }
}

/// The conversation a packet belongs to, and its transport header and payload.
fn split(packet: &[u8]) -> Option<(Key, &[u8])> {
    let (proto, addrs, addr_len, transport) = match packet.first()? >> 4 {
        4 => {
            let header_len = usize::from(packet[0] & 0x0f) * 4;
            let addrs = packet.get(field::IPV4_SRC..field::IPV4_SRC + field::IPV4_ADDRS_LEN)?;
            let proto = *packet.get(field::IPV4_PROTOCOL)?;
            (proto, addrs, 4, packet.get(header_len..)?)
        }
        6 => {
            let addrs = packet.get(field::IPV6_SRC..field::IPV6_SRC + field::IPV6_ADDRS_LEN)?;
            let proto = *packet.get(field::IPV6_NEXT_HEADER)?;
            (proto, addrs, 16, packet.get(field::IPV6_HEADER_LEN..)?)
        }
        _ => return None,
    };
    if proto != field::TCP && proto != field::UDP {
        return None;
    }
    let ports = transport.get(..4)?;
    let endpoint = |addr: &[u8], port: &[u8]| {
        let mut e = [0u8; 18];
        e[..addr_len].copy_from_slice(addr);
        e[addr_len..addr_len + 2].copy_from_slice(port);
        e
    };
    let src = endpoint(&addrs[..addr_len], &ports[..2]);
    let dst = endpoint(&addrs[addr_len..], &ports[2..]);
    let (low, high) = if src <= dst { (src, dst) } else { (dst, src) };
    let mut endpoints = [0u8; 36];
    endpoints[..18].copy_from_slice(&low);
    endpoints[18..].copy_from_slice(&high);
    let key = Key {
        proto,
        v6: addr_len == 16,
        endpoints,
    };
    Some((key, transport))
}

/// Whether `payload` starts with a TLS handshake record holding a ClientHello (RFC 8446 5.1,
/// 4.1.2: content type 22, legacy version 3.x, then handshake type 1).
fn is_client_hello(payload: &[u8]) -> bool {
    matches!(payload, [22, 3, 0..=4, _, _, 1, ..])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 TCP packet 10.0.0.1:sport -> 10.0.0.2:dport with `flags` and `payload`
    /// (checksums are not looked at).
    fn tcp4(sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        p.extend(sport.to_be_bytes());
        p.extend(dport.to_be_bytes());
        p.extend([0, 0, 0, 1, 0, 0, 0, 1, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        p.extend(payload);
        p
    }

    /// The same endpoints' addresses swapped: the reply direction.
    fn reply(mut p: Vec<u8>) -> Vec<u8> {
        p[12..20].rotate_left(4);
        let (s, d) = ([p[20], p[21]], [p[22], p[23]]);
        p[20..22].copy_from_slice(&d);
        p[22..24].copy_from_slice(&s);
        p
    }

    fn udp6(sport: u16, dport: u16) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 12, 17, 64];
        p.extend([0u8; 15]);
        p.push(1);
        p.extend([0u8; 15]);
        p.push(1);
        p.extend(sport.to_be_bytes());
        p.extend(dport.to_be_bytes());
        p.extend([0, 12, 0, 0, 1, 2, 3, 4]);
        p
    }

    #[test]
    fn counts_connections_both_ways_and_ports_used_again() {
        let mut c = Contents::default();
        let syn = tcp4(40000, 80, field::TCP_SYN, b"");
        c.add(&syn);
        c.add(&reply(tcp4(
            40000,
            80,
            field::TCP_SYN | field::TCP_ACK,
            b"",
        )));
        c.add(&tcp4(40000, 80, field::TCP_ACK, b"GET / HTTP/1.1\r\n"));
        c.add(&reply(tcp4(
            40000,
            80,
            field::TCP_ACK,
            b"HTTP/1.0 200 OK\r\n",
        )));
        assert_eq!((c.packets, c.tcp, c.udp, c.tls_ciphertext), (4, 1, 0, 0));
        c.add(&syn);
        assert_eq!(c.tcp, 2, "the same pair's next SYN is another connection");
        // A connection whose SYN was not written (filtered away) still counts once.
        c.add(&tcp4(40001, 80, field::TCP_ACK, b"x"));
        c.add(&reply(tcp4(40001, 80, field::TCP_ACK, b"y")));
        assert_eq!(c.tcp, 3);
    }

    #[test]
    fn a_client_hello_as_data_is_tls_ciphertext() {
        let hello = [22, 3, 1, 0, 200, 1, 0, 0, 196, 3, 3];
        let mut c = Contents::default();
        c.add(&tcp4(40000, 443, field::TCP_SYN, b""));
        c.add(&tcp4(40000, 443, field::TCP_ACK, &hello));
        c.add(&tcp4(40000, 443, field::TCP_ACK, &hello));
        assert_eq!(c.tls_ciphertext, 1, "once per connection");
        // Plaintext first (STARTTLS, or decrypted data): not ciphertext.
        c.add(&tcp4(40001, 25, field::TCP_SYN, b""));
        c.add(&reply(tcp4(40001, 25, field::TCP_ACK, b"220 ready\r\n")));
        c.add(&tcp4(40001, 25, field::TCP_ACK, &hello));
        assert_eq!((c.tcp, c.tls_ciphertext), (2, 1));
    }

    #[test]
    fn counts_udp_flows_in_both_directions_once() {
        let mut c = Contents::default();
        c.add(&udp6(5000, 53));
        c.add(&udp6(53, 5000));
        c.add(&udp6(5001, 53));
        assert_eq!((c.packets, c.tcp, c.udp), (3, 0, 2));
    }

    #[test]
    fn short_or_unknown_packets_are_only_packets() {
        let mut c = Contents::default();
        for p in [
            &[][..],
            &[0x45, 0, 0],
            &[0x15; 40],
            &tcp4(1, 2, 0, b"")[..30],
        ] {
            c.add(p);
        }
        assert_eq!((c.packets, c.tcp, c.udp), (4, 0, 0));
    }
}
