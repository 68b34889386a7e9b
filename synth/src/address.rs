//! The two endpoints of a flow, normalised to one IP family, and the IP header each packet gets.
//!
//! A v4-mapped IPv6 address (`::ffff:a.b.c.d`) is written as IPv4. If one endpoint is then IPv4 and
//! the other IPv6, both are written as IPv6 with the IPv4 one mapped, since a packet has one family.

use std::net::{IpAddr, SocketAddr};

use etherparse::{IpNumber, Ipv4Header, Ipv6Header, TcpHeader};

use crate::checksum::Checksum;

/// TTL and hop limit of every packet: Linux's default.
const HOP_LIMIT: u8 = 64;
/// Largest value of the IPv4 total-length and the IPv6 payload-length fields.
const MAX_LENGTH_FIELD: usize = u16::MAX as usize;
const IPV4_HEADER_LEN: usize = Ipv4Header::MIN_LEN;
const TCP_HEADER_LEN: usize = etherparse::TcpHeader::MIN_LEN;
/// A TCP header with the most options its 4-bit data offset allows.
const MAX_TCP_HEADER_LEN: usize = 60;
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
    /// The checksum of both addresses, the part of every pseudo-header that never changes.
    address_sum: Checksum,
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
            address_sum: match ips {
                IpPair::V4(a, b) => Checksum::default().add_bytes(&a).add_bytes(&b),
                IpPair::V6(a, b) => Checksum::default().add_bytes(&a).add_bytes(&b),
            },
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
    /// Headers are written field by field, and the checksum summed 64 bits at a time over the
    /// bytes just written, rather than through etherparse's writers and 16-bit checksum loop: this
    /// runs for every packet and was most of the collector's cost per byte. The bytes are the
    /// same (tests below compare with etherparse's `PacketBuilder`).
    pub(crate) fn write_tcp(
        &self,
        from_a: bool,
        tcp: &TcpHeader,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> bool {
        let options = tcp.options.as_slice();
        let header_len = TCP_HEADER_LEN + options.len();
        let Some(l4_len) = self.l4_len(header_len + payload.len()) else {
            return false;
        };
        // Built on the stack and appended at once: one capacity check per packet, not per field.
        let mut h = [0u8; MAX_TCP_HEADER_LEN];
        h[0..2].copy_from_slice(&tcp.source_port.to_be_bytes());
        h[2..4].copy_from_slice(&tcp.destination_port.to_be_bytes());
        h[4..8].copy_from_slice(&tcp.sequence_number.to_be_bytes());
        h[8..12].copy_from_slice(&tcp.acknowledgment_number.to_be_bytes());
        h[12] = ((header_len / 4) as u8) << 4 | u8::from(tcp.ns);
        h[13] = tcp_flags(tcp);
        h[14..16].copy_from_slice(&tcp.window_size.to_be_bytes());
        h[18..20].copy_from_slice(&tcp.urgent_pointer.to_be_bytes());
        h[TCP_HEADER_LEN..header_len].copy_from_slice(options);
        let checksum = self
            .pseudo_header(IpNumber::TCP, l4_len)
            .add_bytes(&h[..header_len])
            .add_bytes(payload)
            .finish();
        h[field::TCP_CHECKSUM..field::TCP_CHECKSUM + 2].copy_from_slice(&checksum.to_be_bytes());
        out.reserve(Ipv6Header::LEN + header_len + payload.len());
        self.write_ip(from_a, IpNumber::TCP, l4_len, out);
        out.extend_from_slice(&h[..header_len]);
        out.extend_from_slice(payload);
        true
    }

    /// Append one UDP packet from `a` (`from_a`) or `b` to `out`; false when it cannot fit.
    ///
    /// A computed checksum of 0 is written as 0xffff (RFC 768: 0 means none), as etherparse does.
    pub(crate) fn write_udp(&self, from_a: bool, payload: &[u8], out: &mut Vec<u8>) -> bool {
        let Some(l4_len) = self.l4_len(UDP_HEADER_LEN + payload.len()) else {
            return false;
        };
        out.reserve(Ipv6Header::LEN + UDP_HEADER_LEN + payload.len());
        self.write_ip(from_a, IpNumber::UDP, l4_len, out);
        let (src_port, dst_port) = self.ports(from_a);
        let mut udp = [0u8; UDP_HEADER_LEN];
        udp[0..2].copy_from_slice(&src_port.to_be_bytes());
        udp[2..4].copy_from_slice(&dst_port.to_be_bytes());
        udp[4..6].copy_from_slice(&l4_len.to_be_bytes());
        let checksum = match self
            .pseudo_header(IpNumber::UDP, l4_len)
            .add_bytes(&udp)
            .add_bytes(payload)
            .finish()
        {
            0 => 0xffff,
            sum => sum,
        };
        udp[field::UDP_CHECKSUM..field::UDP_CHECKSUM + 2].copy_from_slice(&checksum.to_be_bytes());
        out.extend_from_slice(&udp);
        out.extend_from_slice(payload);
        true
    }

    /// `l4_len` as the IP length field needs it, or None when one packet cannot carry it.
    fn l4_len(&self, l4_len: usize) -> Option<u16> {
        let ip_overhead = if self.is_ipv4() { IPV4_HEADER_LEN } else { 0 };
        if l4_len + ip_overhead > MAX_LENGTH_FIELD {
            return None;
        }
        u16::try_from(l4_len).ok()
    }

    /// The checksum of the pseudo-header (RFC 793 / RFC 8200 §8.1) of an `l4_len`-byte `proto`
    /// packet: both addresses (whose sum is the same either way), the protocol and the length.
    fn pseudo_header(&self, proto: IpNumber, l4_len: u16) -> Checksum {
        self.address_sum.add_u16(u16::from(proto.0)).add_u16(l4_len)
    }

    /// The addresses as (source, destination) of a packet from `a` (`from_a`) or from `b`.
    fn ips_from(&self, from_a: bool) -> IpPair {
        match (self.ips, from_a) {
            (IpPair::V4(a, b), false) => IpPair::V4(b, a),
            (IpPair::V6(a, b), false) => IpPair::V6(b, a),
            (ips, true) => ips,
        }
    }

    /// Append the IP header of a packet from `a` (`from_a`) or `b` carrying `l4_len` bytes,
    /// which [`l4_len`](Self::l4_len) has checked.
    fn write_ip(&self, from_a: bool, proto: IpNumber, l4_len: u16, out: &mut Vec<u8>) {
        match self.ips_from(from_a) {
            IpPair::V4(src, dst) => {
                // Identification 0 with DF set (etherparse's defaults), as Linux sends
                // unfragmentable packets.
                let total_len = l4_len + IPV4_HEADER_LEN as u16;
                let mut ip = [0u8; IPV4_HEADER_LEN];
                ip[0] = 0x45; // version 4, 5 words
                ip[2..4].copy_from_slice(&total_len.to_be_bytes());
                ip[6] = 0x40; // DF
                ip[8] = HOP_LIMIT;
                ip[9] = proto.0;
                ip[12..16].copy_from_slice(&src);
                ip[16..20].copy_from_slice(&dst);
                let checksum = Checksum::default().add_bytes(&ip).finish();
                ip[field::IPV4_CHECKSUM..field::IPV4_CHECKSUM + 2]
                    .copy_from_slice(&checksum.to_be_bytes());
                out.extend_from_slice(&ip);
            }
            IpPair::V6(src, dst) => {
                let mut ip = [0u8; Ipv6Header::LEN];
                ip[0] = 0x60; // version 6, traffic class 0, flow label 0
                ip[4..6].copy_from_slice(&l4_len.to_be_bytes());
                ip[6] = proto.0;
                ip[7] = HOP_LIMIT;
                ip[8..24].copy_from_slice(&src);
                ip[24..40].copy_from_slice(&dst);
                out.extend_from_slice(&ip);
            }
        }
    }
}

/// Header offsets written here.
mod field {
    pub const IPV4_CHECKSUM: usize = 10;
    pub const TCP_CHECKSUM: usize = 16;
    pub const UDP_CHECKSUM: usize = 6;
}

/// The TCP flags byte (CWR ECE URG ACK PSH RST SYN FIN, high bit first).
fn tcp_flags(tcp: &TcpHeader) -> u8 {
    [
        tcp.fin, tcp.syn, tcp.rst, tcp.psh, tcp.ack, tcp.urg, tcp.ece, tcp.cwr,
    ]
    .iter()
    .enumerate()
    .fold(0, |flags, (bit, &set)| flags | u8::from(set) << bit)
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
                let mut syn = TcpHeader::new(src_port, dst_port, 7, 100);
                syn.syn = true;
                syn.set_options(&[etherparse::TcpOptionElement::MaximumSegmentSize(1460)])
                    .unwrap();
                // Every flag and field set somewhere, so each lands where etherparse puts it.
                let mut odd = TcpHeader::new(src_port, dst_port, 0xfedc_ba98, 0x1234);
                (odd.ns, odd.fin, odd.rst, odd.urg, odd.cwr) = (true, true, true, true, true);
                odd.acknowledgment_number = 0x0bad_cafe;
                odd.urgent_pointer = 0xabcd;
                let mut data = TcpHeader::new(src_port, dst_port, u32::MAX, u16::MAX);
                (data.psh, data.ack, data.ece) = (true, true, true);
                let payloads = [&b""[..], b"odd", &[0xffu8; 1001][..], &[0x5a; 65_000][..]];
                for (tcp, payload) in [syn, odd, data]
                    .into_iter()
                    .flat_map(|t| payloads.map(|p| (t.clone(), p)))
                {
                    let mut ours = Vec::new();
                    assert!(e.write_tcp(from_a, &tcp, payload, &mut ours));
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
