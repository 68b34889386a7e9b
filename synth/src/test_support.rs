//! Helpers for the unit tests: an independent checksum and a parser that checks what etherparse built.

use etherparse::{NetSlice, SlicedPacket, TransportSlice};

/// RFC 1071 Internet checksum over `bytes`, written without etherparse to cross-check it.
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The fields of one TCP packet that tests look at.
#[derive(Debug)]
pub struct Seg {
    pub ipv6: bool,
    pub src_ip: Vec<u8>,
    /// IPv4 total length or IPv6 payload length.
    pub ip_length_field: usize,
    pub src_port: u16,
    pub seq: u32,
    pub ack: u32,
    /// Set flags among S, F, R, P, A, U, in that order.
    pub flags: &'static str,
    pub urgent_pointer: u16,
    pub window: u16,
    pub options: Vec<u8>,
    pub payload_len: usize,
}

/// Parses a raw IP packet holding TCP, asserting that the IP and TCP checksums are right.
pub fn parse_tcp(packet: &[u8]) -> Seg {
    let sliced = SlicedPacket::from_ip(packet).expect("parses");
    let Some(TransportSlice::Tcp(tcp)) = &sliced.transport else {
        panic!("not TCP")
    };
    let header = tcp.to_header();
    let (ipv6, src_ip, ip_length_field, expected) = match sliced.net.expect("has IP") {
        NetSlice::Ipv4(ip) => {
            let ip = ip.header().to_header();
            assert_eq!(ip.header_checksum, ip.calc_header_checksum());
            assert_eq!((ip.time_to_live, ip.dont_fragment), (64, true));
            let sum = header.calc_checksum_ipv4(&ip, tcp.payload()).unwrap();
            (false, ip.source.to_vec(), usize::from(ip.total_len), sum)
        }
        NetSlice::Ipv6(ip) => {
            let ip = ip.header().to_header();
            assert_eq!(ip.hop_limit, 64);
            let sum = header.calc_checksum_ipv6(&ip, tcp.payload()).unwrap();
            (
                true,
                ip.source.to_vec(),
                usize::from(ip.payload_length),
                sum,
            )
        }
        _ => panic!("not IP"),
    };
    assert_eq!(header.checksum, expected, "TCP checksum");
    let flags: String = [
        (header.syn, 'S'),
        (header.fin, 'F'),
        (header.rst, 'R'),
        (header.psh, 'P'),
        (header.ack, 'A'),
        (header.urg, 'U'),
    ]
    .iter()
    .filter(|(set, _)| *set)
    .map(|(_, c)| c)
    .collect();
    Seg {
        ipv6,
        src_ip,
        ip_length_field,
        src_port: header.source_port,
        seq: header.sequence_number,
        ack: header.acknowledgment_number,
        flags: Box::leak(flags.into_boxed_str()),
        window: header.window_size,
        urgent_pointer: header.urgent_pointer,
        options: header.options.as_slice().to_vec(),
        payload_len: tcp.payload().len(),
    }
}
