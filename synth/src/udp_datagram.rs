//! One UDP datagram as one IP packet.

use std::net::SocketAddr;

use crate::address::{Endpoints, MAX_UDP_PAYLOAD_V4, MAX_UDP_PAYLOAD_V6};

/// One UDP datagram from `src` to `dst` (v4-mapped written as IPv4), built in `scratch`.
///
/// A payload longer than one IP packet can carry (65,507 bytes over IPv4, 65,527 over IPv6) is
/// truncated to that limit; real sockets cannot send more. `scratch` is cleared and reused, so
/// passing the same `Vec` each time avoids allocating once it has grown to the largest packet.
pub fn udp_datagram(
    src: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
    scratch: &mut Vec<u8>,
    out: &mut dyn FnMut(&[u8]),
) {
    let endpoints = Endpoints::new(src, dst);
    let limit = if endpoints.is_ipv4() {
        MAX_UDP_PAYLOAD_V4
    } else {
        MAX_UDP_PAYLOAD_V6
    };
    let payload = &payload[..payload.len().min(limit)];
    scratch.clear();
    if endpoints.write_udp(true, payload, scratch) {
        out(scratch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    fn one_packet(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
        let mut packets = Vec::new();
        let mut scratch = Vec::new();
        udp_datagram(
            src.parse().unwrap(),
            dst.parse().unwrap(),
            payload,
            &mut scratch,
            &mut |p| packets.push(p.to_vec()),
        );
        assert_eq!(packets.len(), 1);
        packets.pop().unwrap()
    }

    /// The UDP checksum etherparse computes from the parsed headers, and the one on the wire.
    fn checksums(packet: &[u8]) -> (u16, u16) {
        let sliced = SlicedPacket::from_ip(packet).unwrap();
        let Some(TransportSlice::Udp(udp)) = sliced.transport else {
            panic!("not UDP")
        };
        let header = udp.to_header();
        let expected = match sliced.net.unwrap() {
            NetSlice::Ipv4(ip) => header
                .calc_checksum_ipv4(&ip.header().to_header(), udp.payload())
                .unwrap(),
            NetSlice::Ipv6(ip) => header
                .calc_checksum_ipv6(&ip.header().to_header(), udp.payload())
                .unwrap(),
            _ => panic!("not IP"),
        };
        (expected, header.checksum)
    }

    #[test]
    fn both_families_with_valid_checksums() {
        for (src, dst) in [
            ("10.1.2.3:5353", "10.9.8.7:53"),
            ("[fe80::1]:5353", "[::1]:53"),
        ] {
            let packet = one_packet(src, dst, b"query");
            let sliced = SlicedPacket::from_ip(&packet).unwrap();
            let Some(TransportSlice::Udp(udp)) = &sliced.transport else {
                panic!()
            };
            assert_eq!((udp.source_port(), udp.destination_port()), (5353, 53));
            assert_eq!(udp.payload(), b"query");
            let (expected, actual) = checksums(&packet);
            assert_eq!(expected, actual);
        }
        assert_eq!(
            one_packet("[::ffff:1.2.3.4]:1", "[::ffff:5.6.7.8]:2", b"x")[0] >> 4,
            4
        );
        assert_eq!(one_packet("1.2.3.4:1", "[::1]:2", b"x")[0] >> 4, 6);
    }

    #[test]
    fn computed_zero_checksum_is_sent_as_ffff() {
        // Appending the checksum of a packet as two payload bytes makes the sum all ones,
        // so the computed checksum becomes 0, which must go out as 0xffff.
        let first = one_packet("10.0.0.1:1000", "10.0.0.2:2000", &[0, 0]);
        let (checksum, _) = checksums(&first);
        let packet = one_packet("10.0.0.1:1000", "10.0.0.2:2000", &checksum.to_be_bytes());
        assert_eq!(checksums(&packet), (0xffff, 0xffff));
        assert_eq!(&packet[26..28], &[0xff, 0xff]);
    }

    #[test]
    fn oversized_payload_is_truncated() {
        let big = vec![7u8; 70_000];
        let v4 = one_packet("10.0.0.1:1", "10.0.0.2:2", &big);
        assert_eq!(v4.len(), 65_535);
        let v6 = one_packet("[::1]:1", "[::2]:2", &big);
        assert_eq!(v6.len(), 40 + 65_535);
        assert_eq!(checksums(&v6).0, checksums(&v6).1);
    }

    #[test]
    fn golden_bytes_ipv4() {
        let packet = one_packet("192.168.0.1:4660", "192.168.0.2:80", b"hi");
        #[rustfmt::skip]
        let mut expected = vec![
            0x45, 0x00, 0x00, 0x1e, // version/IHL, DSCP, total length 30
            0x00, 0x00, 0x40, 0x00, // identification 0, DF
            0x40, 0x11, 0x00, 0x00, // TTL 64, UDP, checksum (below)
            192, 168, 0, 1, 192, 168, 0, 2,
            0x12, 0x34, 0x00, 0x50, // ports 4660 -> 80
            0x00, 0x0a, 0x00, 0x00, // length 10, checksum (below)
            b'h', b'i',
        ];
        let ip_sum = crate::test_support::internet_checksum(&expected[..20]);
        expected[10..12].copy_from_slice(&ip_sum.to_be_bytes());
        let mut pseudo = vec![192, 168, 0, 1, 192, 168, 0, 2, 0, 17, 0, 10];
        pseudo.extend_from_slice(&expected[20..]);
        let udp_sum = crate::test_support::internet_checksum(&pseudo);
        expected[26..28].copy_from_slice(&udp_sum.to_be_bytes());
        assert_eq!(packet, expected);
    }
}
