//! Our own reader: pcap-file for records, etherparse for headers; TCP streams reassembled by
//! sequence number with continuity checked.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use pcap_file::pcap::PcapReader;

/// One direction of a TCP conversation.
#[derive(Default, Debug)]
pub struct Direction {
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
    pub bytes: Vec<u8>,
    next_seq: Option<u32>,
}

/// A UDP datagram.
#[derive(Debug)]
pub struct Datagram {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
}

/// What a capture holds.
#[derive(Default, Debug)]
pub struct Capture {
    pub packets: usize,
    /// (from, to) → that direction of the stream.
    pub tcp: BTreeMap<(SocketAddr, SocketAddr), Direction>,
    pub udp: Vec<Datagram>,
    /// TCP flags of each TCP packet in order, as "S", "SA", "A", "FA", "RA", "PA"…
    pub tcp_flags: Vec<String>,
}

impl Capture {
    /// The direction `from → to` where `to` has port `port`: client to server.
    pub fn to_port(&self, port: u16) -> Vec<&Direction> {
        self.tcp
            .iter()
            .filter(|((_, to), _)| to.port() == port)
            .map(|(_, d)| d)
            .collect()
    }
    /// Server to client directions for server port `port`.
    pub fn sent_from_port(&self, port: u16) -> Vec<&Direction> {
        self.tcp
            .iter()
            .filter(|((from, _), _)| from.port() == port)
            .map(|(_, d)| d)
            .collect()
    }
}

/// Read and check `path`: every TCP segment must continue its direction exactly.
pub fn read(path: &Path) -> Result<Capture, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut reader = PcapReader::new(file).map_err(|e| format!("pcap header: {e}"))?;
    let mut cap = Capture::default();
    while let Some(pkt) = reader.next_packet() {
        let pkt = pkt.map_err(|e| format!("record {}: {e}", cap.packets + 1))?;
        cap.packets += 1;
        let sliced =
            SlicedPacket::from_ip(&pkt.data).map_err(|e| format!("packet {}: {e}", cap.packets))?;
        let (src_ip, dst_ip): (IpAddr, IpAddr) = match &sliced.net {
            Some(NetSlice::Ipv4(v4)) => (
                v4.header().source_addr().into(),
                v4.header().destination_addr().into(),
            ),
            Some(NetSlice::Ipv6(v6)) => (
                v6.header().source_addr().into(),
                v6.header().destination_addr().into(),
            ),
            _ => return Err(format!("packet {}: not IP", cap.packets)),
        };
        match &sliced.transport {
            Some(TransportSlice::Tcp(tcp)) => {
                let from = SocketAddr::new(src_ip, tcp.source_port());
                let to = SocketAddr::new(dst_ip, tcp.destination_port());
                let mut flags = String::new();
                for (on, c) in [
                    (tcp.syn(), 'S'),
                    (tcp.fin(), 'F'),
                    (tcp.rst(), 'R'),
                    (tcp.psh(), 'P'),
                    (tcp.ack(), 'A'),
                ] {
                    if on {
                        flags.push(c);
                    }
                }
                cap.tcp_flags.push(flags);
                let dir = cap.tcp.entry((from, to)).or_default();
                let seq = tcp.sequence_number();
                if tcp.syn() {
                    dir.syn = true;
                    dir.next_seq = Some(seq.wrapping_add(1));
                    continue;
                }
                if tcp.rst() {
                    dir.rst = true;
                    continue;
                }
                let payload = tcp.payload();
                if let Some(expected) = dir.next_seq {
                    if seq != expected && (!payload.is_empty() || tcp.fin()) {
                        return Err(format!(
                            "packet {}: {from}→{to} seq {seq}, expected {expected}",
                            cap.packets
                        ));
                    }
                }
                dir.bytes.extend_from_slice(payload);
                let mut next = seq.wrapping_add(payload.len() as u32);
                if tcp.fin() {
                    dir.fin = true;
                    next = next.wrapping_add(1);
                }
                if !payload.is_empty() || tcp.fin() || dir.next_seq.is_none() {
                    dir.next_seq = Some(next);
                }
            }
            Some(TransportSlice::Udp(udp)) => cap.udp.push(Datagram {
                src: SocketAddr::new(src_ip, udp.source_port()),
                dst: SocketAddr::new(dst_ip, udp.destination_port()),
                payload: udp.payload().to_vec(),
            }),
            _ => return Err(format!("packet {}: neither TCP nor UDP", cap.packets)),
        }
    }
    Ok(cap)
}
