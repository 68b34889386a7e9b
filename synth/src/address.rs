//! The two endpoints of a flow, normalised to one IP family, and the IP header each packet gets.
//!
//! A v4-mapped IPv6 address (`::ffff:a.b.c.d`) is written as IPv4. If one endpoint is then IPv4 and
//! the other IPv6, both are written as IPv6 with the IPv4 one mapped, since a packet has one family.

use std::net::{IpAddr, SocketAddr};

use etherparse::{IpHeaders, Ipv4Header, Ipv6Header, PacketBuilder, PacketBuilderStep};

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

    /// A packet builder with the IP header of a packet from `a` (`from_a`) or from `b`.
    pub(crate) fn ip_builder(&self, from_a: bool) -> PacketBuilderStep<IpHeaders> {
        match self.ips {
            IpPair::V4(a, b) => {
                let (src, dst) = if from_a { (a, b) } else { (b, a) };
                // Identification 0 with DF set, as Linux sends unfragmentable packets.
                PacketBuilder::ip(IpHeaders::Ipv4(
                    Ipv4Header {
                        source: src,
                        destination: dst,
                        time_to_live: HOP_LIMIT,
                        identification: 0,
                        dont_fragment: true,
                        ..Default::default()
                    },
                    Default::default(),
                ))
            }
            IpPair::V6(a, b) => {
                let (src, dst) = if from_a { (a, b) } else { (b, a) };
                PacketBuilder::ipv6(src, dst, HOP_LIMIT)
            }
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
