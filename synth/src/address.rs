//! The two endpoints of a flow, normalised to one IP family, and the IP header each packet gets.
//!
//! A v4-mapped IPv6 address (`::ffff:a.b.c.d`) is written as IPv4. If one endpoint is then IPv4 and
//! the other IPv6, both are written as IPv6 with the IPv4 one mapped, since a packet has one family.

use std::net::{IpAddr, SocketAddr};

use etherparse::{IpNumber, Ipv4Header, Ipv6Header, TcpHeader, UdpHeader};

/// TTL and hop limit of every packet: Linux's default.
const HOP_LIMIT: u8 = 64;
/// Largest value of the IPv4 total-length and the IPv6 payload-length fields.
const MAX_LENGTH_FIELD: usize = u16::MAX as usize;
const IPV4_HEADER_LEN: usize = Ipv4Header::MIN_LEN;
const TCP_HEADER_LEN: usize = etherparse::TcpHeader::MIN_LEN;
const UDP_HEADER_LEN: usize = etherparse::UdpHeader::LEN;

/// Largest TCP payload of one IPv4 packet with an option-less TCP header.
pub const MAX_TCP_PAYLOAD_V4: usize = MAX_LENGTH_FIELD - IPV4_HEADER_LEN - TCP_HEADER_LEN;
/// Largest TCP payload of one IPv6 packet (no extension headers, option-less TCP header).
pub const MAX_TCP_PAYLOAD_V6: usize = MAX_LENGTH_FIELD - TCP_HEADER_LEN;
/// Largest UDP payload of one IPv4 packet.
pub const MAX_UDP_PAYLOAD_V4: usize = MAX_LENGTH_FIELD - IPV4_HEADER_LEN - UDP_HEADER_LEN;
/// Largest UDP payload of one IPv6 packet (no jumbograms).
pub const MAX_UDP_PAYLOAD_V6: usize = MAX_LENGTH_FIELD - UDP_HEADER_LEN;
/// Largest packet this crate emits (an IPv6 header plus a full payload): a size for buffers.
pub const MAX_PACKET_LEN: usize = Ipv6Header::LEN + MAX_LENGTH_FIELD;

/// `ip` with a v4-mapped IPv6 address turned back into IPv4.
pub fn normalise(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The addresses of both ends, in the one family the packets are written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IpPair {
    V4([u8; 4], [u8; 4]),
    V6([u8; 16], [u8; 16]),
}

/// Two endpoints `a` and `b`, ready to address packets either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Endpoints {
    ips: IpPair,
    a_port: u16,
    b_port: u16,
}

impl Endpoints {
    pub(crate) fn new(a: SocketAddr, b: SocketAddr) -> Endpoints {
        let ips = match (normalise(a.ip()), normalise(b.ip())) {
            (IpAddr::V4(a), IpAddr::V4(b)) => IpPair::V4(a.octets(), b.octets()),
            (a, b) => IpPair::V6(v6_octets(a), v6_octets(b)),
        };
        Endpoints {
            ips,
            a_port: a.port(),
            b_port: b.port(),
        }
    }

    /// The same endpoints with `a`'s port (`of_a`) or `b`'s replaced by `port`.
    pub(crate) fn with_port(mut self, of_a: bool, port: u16) -> Endpoints {
        if of_a {
            self.a_port = port;
        } else {
            self.b_port = port;
        }
        self
    }

    pub(crate) fn is_ipv4(&self) -> bool {
        matches!(self.ips, IpPair::V4(..))
    }

    /// Source and destination ports of a packet from `a` (`from_a`) or from `b`.
    pub(crate) fn ports(&self, from_a: bool) -> (u16, u16) {
        if from_a {
            (self.a_port, self.b_port)
        } else {
            (self.b_port, self.a_port)
        }
    }

    /// Append one whole packet from `a` (`from_a`) or `b` to `out`: the IP header, `tcp` with its
    /// checksum filled in, and `payload`. False (nothing appended) when it cannot fit one packet.
    ///
    /// Headers are written one by one rather than through etherparse's `PacketBuilder`, whose
    /// builder value is over 9 KB (inline IPv6 extension headers) and was moved for every packet.
    pub(crate) fn write_tcp(
        &self,
        from_a: bool,
        mut tcp: TcpHeader,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> bool {
        let checksum = match self.ips_from(from_a) {
            IpPair::V4(src, dst) => tcp.calc_checksum_ipv4_raw(src, dst, payload),
            IpPair::V6(src, dst) => tcp.calc_checksum_ipv6_raw(src, dst, payload),
        };
        let Ok(checksum) = checksum else { return false };
        tcp.checksum = checksum;
        self.write_ip(from_a, IpNumber::TCP, tcp.header_len() + payload.len(), out)
            && tcp.write(out).is_ok()
            && {
                out.extend_from_slice(payload);
                true
            }
    }

    /// Append one UDP packet from `a` (`from_a`) or `b` to `out`; false when it cannot fit.
    ///
    /// etherparse writes a computed checksum of 0 as 0xffff (RFC 768: 0 means none).
    pub(crate) fn write_udp(&self, from_a: bool, payload: &[u8], out: &mut Vec<u8>) -> bool {
        let (src_port, dst_port) = self.ports(from_a);
        let Ok(mut udp) = UdpHeader::without_ipv4_checksum(src_port, dst_port, payload.len())
        else {
            return false;
        };
        let checksum = match self.ips_from(from_a) {
            IpPair::V4(src, dst) => udp.calc_checksum_ipv4_raw(src, dst, payload),
            IpPair::V6(src, dst) => udp.calc_checksum_ipv6_raw(src, dst, payload),
        };
        let Ok(checksum) = checksum else { return false };
        udp.checksum = checksum;
        self.write_ip(from_a, IpNumber::UDP, UdpHeader::LEN + payload.len(), out)
            && udp.write(out).is_ok()
            && {
                out.extend_from_slice(payload);
                true
            }
    }

    /// The addresses as (source, destination) of a packet from `a` (`from_a`) or from `b`.
    fn ips_from(&self, from_a: bool) -> IpPair {
        match (self.ips, from_a) {
            (IpPair::V4(a, b), false) => IpPair::V4(b, a),
            (IpPair::V6(a, b), false) => IpPair::V6(b, a),
            (ips, true) => ips,
        }
    }

    /// Append the IP header of a packet from `a` (`from_a`) or `b` carrying `l4_len` bytes.
    fn write_ip(&self, from_a: bool, proto: IpNumber, l4_len: usize, out: &mut Vec<u8>) -> bool {
        let Ok(len) = u16::try_from(l4_len) else {
            return false;
        };
        match self.ips_from(from_a) {
            IpPair::V4(src, dst) => {
                // Identification 0 with DF set (etherparse's defaults), as Linux sends
                // unfragmentable packets; `write` computes the header checksum.
                Ipv4Header::new(len, HOP_LIMIT, proto, src, dst)
                    .is_ok_and(|ip| ip.write(out).is_ok())
            }
            IpPair::V6(src, dst) => Ipv6Header {
                traffic_class: 0,
                flow_label: Default::default(),
                payload_length: len,
                next_header: proto,
                hop_limit: HOP_LIMIT,
                source: src,
                destination: dst,
            }
            .write(out)
            .is_ok(),
        }
    }
}

fn v6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Byte for byte what etherparse's PacketBuilder makes of the same packet.
    #[test]
    fn packets_equal_etherparse_builder_output() {
        use etherparse::{IpHeaders, PacketBuilder};
        for (a, b) in [
            ("10.0.0.1:40000", "10.0.0.2:443"),
            ("[2001:db8::1]:5", "[::1]:53"),
        ] {
            let e = Endpoints::new(sa(a), sa(b));
            for from_a in [true, false] {
                let (src_port, dst_port) = e.ports(from_a);
                let ip = match e.ips_from(from_a) {
                    IpPair::V4(s, d) => IpHeaders::Ipv4(
                        Ipv4Header::new(0, HOP_LIMIT, IpNumber::TCP, s, d).unwrap(),
                        Default::default(),
                    ),
                    IpPair::V6(s, d) => {
                        let mut h = Ipv6Header {
                            source: s,
                            destination: d,
                            hop_limit: HOP_LIMIT,
                            ..Default::default()
                        };
                        h.payload_length = 0;
                        IpHeaders::Ipv6(h, Default::default())
                    }
                };
                let mut tcp = TcpHeader::new(src_port, dst_port, 7, 100);
                tcp.syn = true;
                tcp.set_options(&[etherparse::TcpOptionElement::MaximumSegmentSize(1460)])
                    .unwrap();
                for payload in [&b""[..], b"odd", &[0xffu8; 1001][..]] {
                    let mut ours = Vec::new();
                    assert!(e.write_tcp(from_a, tcp.clone(), payload, &mut ours));
                    let mut theirs = Vec::new();
                    PacketBuilder::ip(ip.clone())
                        .tcp_header(tcp.clone())
                        .write_to_vec(&mut theirs, payload)
                        .unwrap();
                    assert_eq!(ours, theirs, "tcp {a} {b} {from_a}");
                    let mut ours = Vec::new();
                    assert!(e.write_udp(from_a, payload, &mut ours));
                    let mut theirs = Vec::new();
                    PacketBuilder::ip(ip.clone())
                        .udp(src_port, dst_port)
                        .write_to_vec(&mut theirs, payload)
                        .unwrap();
                    assert_eq!(ours, theirs, "udp {a} {b} {from_a}");
                }
            }
        }
    }

    #[test]
    fn limits_fill_the_length_fields() {
        assert_eq!(MAX_TCP_PAYLOAD_V4, 65_495);
        assert_eq!(MAX_TCP_PAYLOAD_V6, 65_515);
        assert_eq!(MAX_UDP_PAYLOAD_V4, 65_507);
        assert_eq!(MAX_UDP_PAYLOAD_V6, 65_527);
    }

    #[test]
    fn v4_mapped_becomes_ipv4() {
        let e = Endpoints::new(sa("[::ffff:10.0.0.1]:1"), sa("[::ffff:10.0.0.2]:2"));
        assert_eq!(e.ips, IpPair::V4([10, 0, 0, 1], [10, 0, 0, 2]));
        assert_eq!(e.ports(true), (1, 2));
        assert_eq!(e.ports(false), (2, 1));
        let e = Endpoints::new(sa("[::ffff:10.0.0.1]:1"), sa("10.0.0.2:2"));
        assert!(e.is_ipv4());
    }

    #[test]
    fn mixed_families_become_ipv6() {
        let e = Endpoints::new(sa("127.0.0.1:1"), sa("[::1]:2"));
        let mut mapped = [0u8; 16];
        mapped[10..12].copy_from_slice(&[0xff, 0xff]);
        mapped[12..].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(
            e.ips,
            IpPair::V6(mapped, std::net::Ipv6Addr::LOCALHOST.octets())
        );
    }
}
