//! One TCP connection's synthetic wire state, and the segments each event turns into.
//!
//! The stream owns both sequence spaces and a scratch buffer; each event (`open`, `data`,
//! `urgent`, `discarded`, `fin`, `reset`, `refused`, `unanswered`) appends its packets through the
//! caller's callback, built in that buffer, so steady state allocates nothing. The segments are what an ideal loopback exchange would carry: no loss,
//! a window no sender comes close to filling, and nothing Wireshark's TCP analysis would flag.
//!
//! # Panics
//!
//! Nothing here panics, whatever the addresses, payload sizes or order of events. A packet that
//! etherparse refuses to build (which the segmentation rules out) is dropped, never unwrapped.

use std::net::SocketAddr;

use etherparse::{TcpHeader, TcpOptionElement};

use crate::address::{Endpoints, MAX_TCP_PAYLOAD_V4, MAX_TCP_PAYLOAD_V6};
use crate::seq_number::SeqNumber;

/// Which end of a connection an event comes from, seen from the traced process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Local,
    Remote,
}

impl Side {
    /// The other end of the connection.
    pub fn other(self) -> Side {
        match self {
            Side::Local => Side::Remote,
            Side::Remote => Side::Local,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The raw window field of every segment. Both SYNs announce `WINDOW_SHIFT`, so after the
/// handshake it means 65,535 << 7, about 8 MiB, far above anything left unacknowledged.
const WINDOW: u16 = u16::MAX;
const WINDOW_SHIFT: u8 = 7;
/// Unacknowledged bytes past which the receiver acknowledges before more data is sent, keeping
/// bytes in flight (at most this plus one segment) well inside the window.
const MAX_UNACKED: u32 = 1 << 20;

/// One side's half of the connection.
#[derive(Clone, Copy, Debug)]
struct Half {
    isn: SeqNumber,
    /// Sequence number of the next byte (or FIN) this side sends.
    next_seq: SeqNumber,
    /// The acknowledgment number this side sent last.
    last_ack: SeqNumber,
    fin_sent: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Nothing emitted yet.
    Fresh,
    /// Handshake done, or data or a FIN came first and the handshake is taken as done.
    Established,
    /// Refused, reset or never answered: no further segments.
    Ended,
}

/// One TCP connection's synthetic wire state: addresses, both sequence spaces, FINs seen.
pub struct TcpStream {
    endpoints: Endpoints,
    halves: [Half; 2],
    phase: Phase,
    /// The side that sent the SYN, once `open` ran.
    client: Option<Side>,
    scratch: Vec<u8>,
}

/// What [`TcpStream::parallel`] flips in the client's port: Linux's ephemeral ports (32768 and
/// up) land below 32768, where no ephemeral port of another connection can be.
pub const PARALLEL_PORT_FLIP: u16 = 0x8000;

impl TcpStream {
    /// A stream between `local` and `remote`; v4-mapped IPv6 addresses are written as IPv4.
    pub fn new(local: SocketAddr, remote: SocketAddr, local_isn: u32, remote_isn: u32) -> Self {
        Self::between(local_isn, remote_isn, Endpoints::new(local, remote))
    }

    fn between(local_isn: u32, remote_isn: u32, endpoints: Endpoints) -> Self {
        // Each side starts as if the handshake had happened, so events arriving without one
        // still give consistent sequence numbers.
        let half = |isn: u32, peer_isn: u32| Half {
            isn: SeqNumber(isn),
            next_seq: SeqNumber(isn).add(1),
            last_ack: SeqNumber(peer_isn).add(1),
            fin_sent: false,
        };
        TcpStream {
            endpoints,
            halves: [half(local_isn, remote_isn), half(remote_isn, local_isn)],
            phase: Phase::Fresh,
            client: None,
            scratch: Vec::new(),
        }
    }

    /// A second stream beside this one for another view of the same connection (the decrypted
    /// bytes beside the ciphertext): the same addresses and server port, the client's port XOR
    /// [`PARALLEL_PORT_FLIP`], its own sequence numbers, and its handshake emitted at once.
    pub fn parallel(&self, local_isn: u32, remote_isn: u32, out: &mut dyn FnMut(&[u8])) -> Self {
        let client = self.client.unwrap_or(Side::Local);
        let (port, _) = self.endpoints.ports(client == Side::Local);
        let endpoints = self
            .endpoints
            .with_port(client == Side::Local, port ^ PARALLEL_PORT_FLIP);
        let mut twin = TcpStream::between(local_isn, remote_isn, endpoints);
        twin.open(client, out);
        twin
    }

    /// SYN from `client`, SYN/ACK from the other side, ACK from `client`.
    ///
    /// Emits nothing once any other event has been seen.
    pub fn open(&mut self, client: Side, out: &mut dyn FnMut(&[u8])) {
        if self.phase != Phase::Fresh {
            return;
        }
        self.phase = Phase::Established;
        self.client = Some(client);
        let server = client.other();
        let client_isn = self.half(client).isn;
        let server_isn = self.half(server).isn;

        let syn = self.syn_header(client, client_isn);
        self.send(client, syn, &[], out);
        let mut syn_ack = self.syn_header(server, server_isn);
        syn_ack.ack = true;
        syn_ack.acknowledgment_number = client_isn.add(1).0;
        self.send(server, syn_ack, &[], out);
        let ack = self.ack_header(client);
        self.send(client, ack, &[], out);
    }

    /// A connect the peer refused: SYN from local, RST/ACK from remote.
    ///
    /// The RST has sequence number 0 and acknowledges the SYN, as Linux answers a closed port.
    /// Emits nothing once any other event has been seen; later events emit nothing either.
    pub fn refused(&mut self, out: &mut dyn FnMut(&[u8])) {
        if self.phase != Phase::Fresh {
            return;
        }
        self.phase = Phase::Ended;
        let isn = self.half(Side::Local).isn;
        let syn = self.syn_header(Side::Local, isn);
        self.send(Side::Local, syn, &[], out);
        let mut rst = self.header(Side::Remote, SeqNumber(0));
        rst.rst = true;
        rst.ack = true;
        rst.acknowledgment_number = isn.add(1).0;
        self.send(Side::Remote, rst, &[], out);
    }

    /// `payload` sent by `from`, split into segments that fit the IP length limits.
    ///
    /// The last segment carries PSH. Before a segment, if more than 1 MiB sent by `from` is
    /// unacknowledged, the other side first sends a pure ACK. An empty payload, data after
    /// `from`'s FIN and data on an ended connection emit nothing.
    pub fn data(&mut self, from: Side, payload: &[u8], out: &mut dyn FnMut(&[u8])) {
        self.segments(from, payload, false, out);
    }

    /// `payload` sent by `from` whose last byte is urgent (`send` with MSG_OOB), segmented as
    /// [`data`](Self::data) does.
    ///
    /// Every segment carries URG and an urgent pointer, as Linux sends them: the offset from the
    /// segment's sequence number to the byte just past the urgent one (RFC 9293's reading, which
    /// Linux follows), or 0xFFFF while that is further than 16 bits reach.
    pub fn urgent(&mut self, from: Side, payload: &[u8], out: &mut dyn FnMut(&[u8])) {
        self.segments(from, payload, true, out);
    }

    /// `len` bytes from `from` that the program discarded unread (a stream `recv` with
    /// MSG_TRUNC): nothing of them is known, so no segment carries them. `from`'s sequence
    /// number moves past them and the other side acknowledges them in a pure ACK, so a reader
    /// sees a gap exactly that long, where it is, instead of invented bytes.
    ///
    /// Emits nothing for zero bytes, after `from`'s FIN or on an ended connection.
    pub fn discarded(&mut self, from: Side, len: usize, out: &mut dyn FnMut(&[u8])) {
        if !self.may_send(from) || len == 0 {
            return;
        }
        self.phase = Phase::Established;
        let half = self.half_mut(from);
        half.next_seq = half.next_seq.add(len);
        let ack = self.ack_header(from.other());
        self.send(from.other(), ack, &[], out);
    }

    /// A reset from `from` (RST/ACK at its next sequence number, acknowledging everything, as
    /// Linux resets an established connection); the connection ends: later events emit nothing.
    ///
    /// Emits nothing on a connection that has already ended.
    pub fn reset(&mut self, from: Side, out: &mut dyn FnMut(&[u8])) {
        if self.phase == Phase::Ended {
            return;
        }
        self.phase = Phase::Ended;
        let mut rst = self.ack_header(from);
        rst.rst = true;
        self.send(from, rst, &[], out);
    }

    /// A connect nobody answered (it timed out, or an ICMP error ended it): the SYN alone.
    ///
    /// Emits nothing once any other event has been seen; later events emit nothing either.
    pub fn unanswered(&mut self, out: &mut dyn FnMut(&[u8])) {
        if self.phase != Phase::Fresh {
            return;
        }
        self.phase = Phase::Ended;
        let isn = self.half(Side::Local).isn;
        let syn = self.syn_header(Side::Local, isn);
        self.send(Side::Local, syn, &[], out);
    }

    fn segments(&mut self, from: Side, payload: &[u8], urgent: bool, out: &mut dyn FnMut(&[u8])) {
        if !self.may_send(from) || payload.is_empty() {
            return;
        }
        self.phase = Phase::Established;
        let limit = if self.endpoints.is_ipv4() {
            MAX_TCP_PAYLOAD_V4
        } else {
            MAX_TCP_PAYLOAD_V6
        };
        // The sequence number just past the urgent (last) byte.
        let urgent_end = self.half(from).next_seq.add(payload.len());
        let mut segments = payload.chunks(limit).peekable();
        while let Some(segment) = segments.next() {
            self.acknowledge_if_far_behind(from, out);
            let mut tcp = self.ack_header(from);
            tcp.psh = segments.peek().is_none();
            if urgent {
                tcp.urg = true;
                let ahead = urgent_end.since(self.half(from).next_seq);
                tcp.urgent_pointer = u16::try_from(ahead).unwrap_or(u16::MAX);
            }
            self.send(from, tcp, segment, out);
            let half = self.half_mut(from);
            half.next_seq = half.next_seq.add(segment.len());
        }
    }

    /// FIN from `from`; a second FIN from the same side emits nothing.
    pub fn fin(&mut self, from: Side, out: &mut dyn FnMut(&[u8])) {
        if !self.may_send(from) {
            return;
        }
        self.phase = Phase::Established;
        let mut tcp = self.ack_header(from);
        tcp.fin = true;
        self.send(from, tcp, &[], out);
        let half = self.half_mut(from);
        half.next_seq = half.next_seq.add(1);
        half.fin_sent = true;
    }

    /// Whether `side` has sent its FIN.
    pub fn fin_sent(&self, side: Side) -> bool {
        self.half(side).fin_sent
    }

    fn half(&self, side: Side) -> &Half {
        &self.halves[side.index()]
    }

    fn half_mut(&mut self, side: Side) -> &mut Half {
        &mut self.halves[side.index()]
    }

    fn may_send(&self, from: Side) -> bool {
        self.phase != Phase::Ended && !self.half(from).fin_sent
    }

    /// A pure ACK from the receiver when too much of `sender`'s data is unacknowledged.
    ///
    /// Its acknowledgment number is then ahead of the receiver's last one, so it is never a
    /// duplicate ACK.
    fn acknowledge_if_far_behind(&mut self, sender: Side, out: &mut dyn FnMut(&[u8])) {
        let receiver = sender.other();
        let unacked = self
            .half(sender)
            .next_seq
            .since(self.half(receiver).last_ack);
        if unacked > MAX_UNACKED {
            let ack = self.ack_header(receiver);
            self.send(receiver, ack, &[], out);
        }
    }

    /// A segment header from `from` with `seq`, no flags, no options.
    fn header(&self, from: Side, seq: SeqNumber) -> TcpHeader {
        let (src, dst) = self.endpoints.ports(from == Side::Local);
        TcpHeader::new(src, dst, seq.0, WINDOW)
    }

    /// A SYN header with the options that matter to a reader: MSS and window scale (no timestamps,
    /// and no SACK permitted since no segment ever needs a SACK; 8 bytes keep a SYN within the
    /// 60-byte per-packet overhead budget).
    fn syn_header(&self, from: Side, isn: SeqNumber) -> TcpHeader {
        let mut tcp = self.header(from, isn);
        tcp.syn = true;
        // The MSS is the largest segment `data` sends, so no segment exceeds what was announced.
        let mss = if self.endpoints.is_ipv4() {
            MAX_TCP_PAYLOAD_V4
        } else {
            MAX_TCP_PAYLOAD_V6
        };
        let options = [
            TcpOptionElement::MaximumSegmentSize(u16::try_from(mss).unwrap_or(u16::MAX)),
            TcpOptionElement::Noop,
            TcpOptionElement::WindowScale(WINDOW_SHIFT),
        ];
        // 8 bytes always fit the 40 available; on the impossible error the SYN goes without.
        let _ = tcp.set_options(&options);
        tcp
    }

    /// The next in-sequence header from `from`, acknowledging everything the other side sent.
    fn ack_header(&self, from: Side) -> TcpHeader {
        let mut tcp = self.header(from, self.half(from).next_seq);
        tcp.ack = true;
        tcp.acknowledgment_number = self.half(from.other()).next_seq.0;
        tcp
    }

    /// Build one packet from `from` in the scratch buffer and hand it to `out`.
    fn send(&mut self, from: Side, tcp: TcpHeader, payload: &[u8], out: &mut dyn FnMut(&[u8])) {
        if tcp.ack {
            self.half_mut(from).last_ack = SeqNumber(tcp.acknowledgment_number);
        }
        self.scratch.clear();
        if self
            .endpoints
            .write_tcp(from == Side::Local, &tcp, payload, &mut self.scratch)
        {
            out(&self.scratch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{internet_checksum, parse_tcp, Seg};

    const L_ISN: u32 = 1000;
    const R_ISN: u32 = 5000;

    fn stream(local: &str, remote: &str) -> TcpStream {
        TcpStream::new(
            local.parse().unwrap(),
            remote.parse().unwrap(),
            L_ISN,
            R_ISN,
        )
    }

    fn v4() -> TcpStream {
        stream("10.0.0.1:40000", "10.0.0.2:80")
    }

    fn v6() -> TcpStream {
        stream("[2001:db8::1]:40000", "[2001:db8::2]:80")
    }

    /// Runs `event` and returns its packets, parsed and checksum-verified.
    fn run(
        s: &mut TcpStream,
        event: impl FnOnce(&mut TcpStream, &mut dyn FnMut(&[u8])),
    ) -> Vec<Seg> {
        let mut segs = Vec::new();
        event(s, &mut |p| segs.push(parse_tcp(p)));
        segs
    }

    fn from_local(seg: &Seg) -> bool {
        seg.src_port == 40000
    }

    #[test]
    fn handshake_from_local_client() {
        let mut s = v4();
        let segs = run(&mut s, |s, out| s.open(Side::Local, out));
        let summary: Vec<_> = segs
            .iter()
            .map(|g| (from_local(g), g.flags, g.seq, g.ack))
            .collect();
        assert_eq!(
            summary,
            [
                (true, "S", 1000, 0),
                (false, "SA", 5000, 1001),
                (true, "A", 1001, 5001)
            ]
        );
        for syn in &segs[..2] {
            assert_eq!(syn.options, [2, 4, 0xff, 0xd7, 1, 3, 3, 7]);
        }
        assert!(segs.iter().all(|g| g.window == 65535 && g.payload_len == 0));
        assert!(segs[2].options.is_empty());
        // A second open is ignored.
        assert!(run(&mut s, |s, out| s.open(Side::Local, out)).is_empty());
    }

    #[test]
    fn handshake_from_remote_client_ipv6_announces_its_mss() {
        let mut s = v6();
        let segs = run(&mut s, |s, out| s.open(Side::Remote, out));
        let summary: Vec<_> = segs
            .iter()
            .map(|g| (from_local(g), g.flags, g.seq, g.ack))
            .collect();
        assert_eq!(
            summary,
            [
                (false, "S", 5000, 0),
                (true, "SA", 1000, 5001),
                (false, "A", 5001, 1001)
            ]
        );
        assert_eq!(&segs[0].options[..4], &[2, 4, 0xff, 0xeb]);
        assert!(segs.iter().all(|g| g.ipv6));
    }

    #[test]
    fn parallel_stream_flips_the_client_port_and_opens_from_the_same_side() {
        let mut s = v6();
        run(&mut s, |s, out| s.open(Side::Remote, out));
        let mut segs = Vec::new();
        let mut twin = s.parallel(7, 9, &mut |p| segs.push(parse_tcp(p)));
        // The remote side is the client: its port 80 becomes 80 ^ 0x8000; ours stays 40000.
        let summary: Vec<_> = segs.iter().map(|g| (g.src_port, g.flags, g.seq)).collect();
        assert_eq!(
            summary,
            [(32848, "S", 9), (40000, "SA", 7), (32848, "A", 10)]
        );
        let data = run(&mut twin, |t, out| t.data(Side::Local, b"hi", out));
        assert_eq!((data[0].src_port, data[0].seq, data[0].ack), (40000, 8, 10));
        // The original stream is untouched by its twin.
        let orig = run(&mut s, |s, out| s.data(Side::Local, b"x", out));
        assert_eq!((orig[0].src_port, orig[0].seq), (40000, 1001));
    }

    #[test]
    fn data_both_directions() {
        let mut s = v4();
        run(&mut s, |s, out| s.open(Side::Local, out));
        let segs = run(&mut s, |s, out| s.data(Side::Local, b"GET /", out));
        assert_eq!(segs.len(), 1);
        assert_eq!(
            (segs[0].flags, segs[0].seq, segs[0].ack, segs[0].payload_len),
            ("PA", 1001, 5001, 5)
        );
        assert!(segs[0].options.is_empty());
        let segs = run(&mut s, |s, out| s.data(Side::Remote, b"200 OK\r\n", out));
        assert_eq!(
            (segs[0].flags, segs[0].seq, segs[0].ack, segs[0].payload_len),
            ("PA", 5001, 1006, 8)
        );
        assert!(!from_local(&segs[0]));
        let segs = run(&mut s, |s, out| s.data(Side::Local, b"x", out));
        assert_eq!((segs[0].seq, segs[0].ack), (1006, 5009));
        assert!(run(&mut s, |s, out| s.data(Side::Local, b"", out)).is_empty());
    }

    #[test]
    fn fin_both_sides() {
        let mut s = v4();
        run(&mut s, |s, out| s.open(Side::Local, out));
        run(&mut s, |s, out| s.data(Side::Local, b"abc", out));
        assert!(!s.fin_sent(Side::Local));
        let segs = run(&mut s, |s, out| s.fin(Side::Local, out));
        assert_eq!(
            (segs[0].flags, segs[0].seq, segs[0].ack),
            ("FA", 1004, 5001)
        );
        assert!(s.fin_sent(Side::Local) && !s.fin_sent(Side::Remote));
        assert!(run(&mut s, |s, out| s.fin(Side::Local, out)).is_empty());
        assert!(run(&mut s, |s, out| s.data(Side::Local, b"late", out)).is_empty());
        // Half-closed: the remote may still send, acknowledging the FIN.
        let segs = run(&mut s, |s, out| s.data(Side::Remote, b"zz", out));
        assert_eq!((segs[0].seq, segs[0].ack), (5001, 1005));
        let segs = run(&mut s, |s, out| s.fin(Side::Remote, out));
        assert_eq!(
            (segs[0].flags, segs[0].seq, segs[0].ack),
            ("FA", 5003, 1005)
        );
        assert!(s.fin_sent(Side::Remote));
        assert!(run(&mut s, |s, out| s.fin(Side::Remote, out)).is_empty());
    }

    #[test]
    fn refused_is_syn_then_rst_ack() {
        let mut s = v4();
        let segs = run(&mut s, |s, out| s.refused(out));
        let summary: Vec<_> = segs
            .iter()
            .map(|g| (from_local(g), g.flags, g.seq, g.ack))
            .collect();
        assert_eq!(summary, [(true, "S", 1000, 0), (false, "RA", 0, 1001)]);
        assert!(run(&mut s, |s, out| s.open(Side::Local, out)).is_empty());
        assert!(run(&mut s, |s, out| s.data(Side::Local, b"x", out)).is_empty());
        assert!(run(&mut s, |s, out| s.fin(Side::Local, out)).is_empty());
    }

    #[test]
    fn events_without_open_use_the_implied_handshake() {
        let mut s = v4();
        let segs = run(&mut s, |s, out| s.data(Side::Remote, b"hello", out));
        assert_eq!(
            (segs[0].flags, segs[0].seq, segs[0].ack),
            ("PA", 5001, 1001)
        );
        let segs = run(&mut s, |s, out| s.fin(Side::Local, out));
        assert_eq!(
            (segs[0].flags, segs[0].seq, segs[0].ack),
            ("FA", 1001, 5006)
        );
        assert!(run(&mut s, |s, out| s.open(Side::Local, out)).is_empty());
    }

    #[test]
    fn urgent_byte_sets_urg_and_points_past_it() {
        let mut s = v4();
        run(&mut s, |s, out| s.open(Side::Local, out));
        let segs = run(&mut s, |s, out| s.urgent(Side::Local, b"abc", out));
        let summary: Vec<_> = segs
            .iter()
            .map(|g| (g.flags, g.seq, g.payload_len, g.urgent_pointer))
            .collect();
        // As Linux sends `send(fd, "abc", 3, MSG_OOB)`: one segment, pointer just past 'c'.
        assert_eq!(summary, [("PAU", 1001, 3, 3)]);
        let segs = run(&mut s, |s, out| s.data(Side::Local, b"d", out));
        assert_eq!(
            (segs[0].flags, segs[0].seq, segs[0].urgent_pointer),
            ("PA", 1004, 0)
        );
        // The receiving side's view of a lone urgent byte.
        let segs = run(&mut s, |s, out| s.urgent(Side::Remote, b"!", out));
        assert_eq!(
            (
                segs[0].flags,
                segs[0].seq,
                segs[0].ack,
                segs[0].urgent_pointer
            ),
            ("PAU", 5001, 1005, 1)
        );
    }

    #[test]
    fn urgent_pointer_across_segments_saturates_until_in_reach() {
        let mut s = v4();
        run(&mut s, |s, out| s.open(Side::Local, out));
        let payload = vec![7u8; 2 * 65_495 + 10];
        let segs = run(&mut s, |s, out| s.urgent(Side::Local, &payload, out));
        let summary: Vec<_> = segs
            .iter()
            .map(|g| (g.flags, g.payload_len, g.urgent_pointer))
            .collect();
        assert_eq!(
            summary,
            [
                ("AU", 65_495, 0xffff),
                ("AU", 65_495, 65_505),
                ("PAU", 10, 10)
            ]
        );
    }

    #[test]
    fn discarded_bytes_leave_a_gap_that_one_ack_covers() {
        let mut s = v4();
        run(&mut s, |s, out| s.open(Side::Local, out));
        run(&mut s, |s, out| s.data(Side::Remote, b"HEAD", out));
        let segs = run(&mut s, |s, out| s.discarded(Side::Remote, 10, out));
        let summary: Vec<_> = segs
            .iter()
            .map(|g| (from_local(g), g.flags, g.seq, g.ack, g.payload_len))
            .collect();
        assert_eq!(summary, [(true, "A", 1001, 5015, 0)]);
        let segs = run(&mut s, |s, out| s.data(Side::Remote, b"TAIL", out));
        assert_eq!((segs[0].seq, segs[0].ack), (5015, 1001));
        assert!(run(&mut s, |s, out| s.discarded(Side::Remote, 0, out)).is_empty());
        run(&mut s, |s, out| s.fin(Side::Remote, out));
        assert!(run(&mut s, |s, out| s.discarded(Side::Remote, 3, out)).is_empty());
    }

    #[test]
    fn reset_ends_the_stream() {
        let mut s = v4();
        run(&mut s, |s, out| s.open(Side::Local, out));
        run(&mut s, |s, out| s.data(Side::Local, b"abc", out));
        let segs = run(&mut s, |s, out| s.reset(Side::Local, out));
        let summary: Vec<_> = segs
            .iter()
            .map(|g| (from_local(g), g.flags, g.seq, g.ack))
            .collect();
        assert_eq!(summary, [(true, "RA", 1004, 5001)]);
        assert!(run(&mut s, |s, out| s.reset(Side::Remote, out)).is_empty());
        assert!(run(&mut s, |s, out| s.data(Side::Remote, b"x", out)).is_empty());
        assert!(run(&mut s, |s, out| s.fin(Side::Local, out)).is_empty());
        // The peer's reset after our FIN: at its own next sequence number.
        let mut s = v4();
        run(&mut s, |s, out| s.open(Side::Local, out));
        run(&mut s, |s, out| s.fin(Side::Local, out));
        let segs = run(&mut s, |s, out| s.reset(Side::Remote, out));
        assert_eq!(
            (segs[0].flags, segs[0].seq, segs[0].ack),
            ("RA", 5001, 1002)
        );
    }

    #[test]
    fn unanswered_is_a_lone_syn() {
        let mut s = v6();
        let segs = run(&mut s, |s, out| s.unanswered(out));
        let summary: Vec<_> = segs
            .iter()
            .map(|g| (from_local(g), g.flags, g.seq))
            .collect();
        assert_eq!(summary, [(true, "S", 1000)]);
        assert!(run(&mut s, |s, out| s.open(Side::Local, out)).is_empty());
        assert!(run(&mut s, |s, out| s.data(Side::Remote, b"x", out)).is_empty());
        assert!(run(&mut s, |s, out| s.unanswered(out)).is_empty());
    }

    fn check_segmentation(mut s: TcpStream, limit: usize) {
        run(&mut s, |s, out| s.open(Side::Local, out));
        let mut seq = 1001u32;
        for (len, expected) in [
            (limit, vec![limit]),
            (limit + 1, vec![limit, 1]),
            (3 * limit + 5, vec![limit, limit, limit, 5]),
        ] {
            let payload = vec![0x5a; len];
            let segs = run(&mut s, |s, out| s.data(Side::Local, &payload, out));
            let data: Vec<_> = segs.iter().filter(|g| from_local(g)).collect();
            let sizes: Vec<_> = data.iter().map(|g| g.payload_len).collect();
            assert_eq!(sizes, expected);
            for (i, g) in data.iter().enumerate() {
                assert_eq!(g.seq, seq);
                seq = seq.wrapping_add(g.payload_len as u32);
                assert_eq!(g.flags, if i + 1 == data.len() { "PA" } else { "A" });
                assert!(g.ip_length_field <= 65_535);
            }
        }
    }

    #[test]
    fn segmentation_ipv4() {
        check_segmentation(v4(), 65_495);
    }

    #[test]
    fn segmentation_ipv6() {
        check_segmentation(v6(), 65_515);
    }

    #[test]
    fn families_are_normalised() {
        let mut s = stream("[::ffff:127.0.0.1]:40000", "[::ffff:127.0.0.2]:80");
        assert!(run(&mut s, |s, out| s.open(Side::Local, out))
            .iter()
            .all(|g| !g.ipv6));
        let mut s = stream("127.0.0.1:40000", "[::1]:80");
        let segs = run(&mut s, |s, out| s.open(Side::Local, out));
        assert!(segs.iter().all(|g| g.ipv6));
        assert_eq!(
            &segs[0].src_ip[..],
            &std::net::Ipv4Addr::LOCALHOST.to_ipv6_mapped().octets()
        );
    }

    #[test]
    fn pure_ack_past_one_mib_unacked_never_duplicated() {
        let mut s = v4();
        run(&mut s, |s, out| s.open(Side::Local, out));
        let chunk = vec![1u8; 100_000];
        let mut segs = Vec::new();
        for _ in 0..40 {
            segs.extend(run(&mut s, |s, out| s.data(Side::Local, &chunk, out)));
        }
        segs.extend(run(&mut s, |s, out| s.data(Side::Remote, b"ok", out)));
        for _ in 0..40 {
            segs.extend(run(&mut s, |s, out| s.data(Side::Local, &chunk, out)));
        }

        let (mut next, mut acked) = (1001u32, 1001u32);
        let mut last_ack_from_remote = 1001u32;
        let mut pure_acks = 0;
        for g in &segs {
            if from_local(g) {
                // Each segment starts with at most 1 MiB outstanding.
                assert!(next.wrapping_sub(acked) <= MAX_UNACKED);
                assert_eq!(g.seq, next);
                next = next.wrapping_add(g.payload_len as u32);
            } else {
                if g.payload_len == 0 {
                    pure_acks += 1;
                    assert_eq!(g.flags, "A");
                    assert_eq!(g.ack, next);
                    assert_ne!(g.ack, last_ack_from_remote, "duplicate ACK");
                }
                acked = g.ack;
                last_ack_from_remote = g.ack;
            }
        }
        // 8,000,000 bytes with an ACK after each 1 MiB + a bit: 7, less one the data reply saved.
        assert!((6..=8).contains(&pure_acks), "{pure_acks} pure ACKs");
    }

    #[test]
    fn golden_syn_ipv4() {
        let mut packets = Vec::new();
        let mut s = TcpStream::new(
            "192.168.0.1:4660".parse().unwrap(),
            "192.168.0.2:80".parse().unwrap(),
            0x0102_0304,
            9,
        );
        s.open(Side::Local, &mut |p| packets.push(p.to_vec()));
        #[rustfmt::skip]
        let mut expected = vec![
            0x45, 0x00, 0x00, 0x30, // version/IHL, DSCP, total length 48
            0x00, 0x00, 0x40, 0x00, // identification 0, DF
            0x40, 0x06, 0x00, 0x00, // TTL 64, TCP, checksum (below)
            192, 168, 0, 1, 192, 168, 0, 2,
            0x12, 0x34, 0x00, 0x50, // ports 4660 -> 80
            0x01, 0x02, 0x03, 0x04, // seq
            0x00, 0x00, 0x00, 0x00, // ack
            0x70, 0x02, 0xff, 0xff, // data offset 7 words, SYN, window 65535
            0x00, 0x00, 0x00, 0x00, // checksum (below), urgent pointer
            0x02, 0x04, 0xff, 0xd7, // MSS 65495
            0x01, 0x03, 0x03, 0x07, // NOP, window scale 7
        ];
        let ip_sum = internet_checksum(&expected[..20]);
        expected[10..12].copy_from_slice(&ip_sum.to_be_bytes());
        let mut pseudo = vec![192, 168, 0, 1, 192, 168, 0, 2, 0, 6, 0, 28];
        pseudo.extend_from_slice(&expected[20..]);
        let tcp_sum = internet_checksum(&pseudo);
        expected[36..38].copy_from_slice(&tcp_sum.to_be_bytes());
        assert_eq!(packets[0], expected);
    }

    /// The stream of the golden tests: 192.168.0.1:4660 → 192.168.0.2:80, handshake done.
    fn golden_stream() -> TcpStream {
        let mut s = TcpStream::new(
            "192.168.0.1:4660".parse().unwrap(),
            "192.168.0.2:80".parse().unwrap(),
            0x0102_0304,
            9,
        );
        s.open(Side::Local, &mut |_| {});
        s
    }

    /// `head` (an IPv4 header and a TCP header, both checksums zero) followed by `payload`, with
    /// both checksums filled in by the independent implementation.
    fn with_v4_checksums(mut head: Vec<u8>, payload: &[u8]) -> Vec<u8> {
        head.extend_from_slice(payload);
        let ip_sum = internet_checksum(&head[..20]);
        head[10..12].copy_from_slice(&ip_sum.to_be_bytes());
        // The pseudo-header: both addresses as the IP header has them, zero, TCP, TCP length.
        let mut pseudo = head[12..20].to_vec();
        pseudo.extend_from_slice(&[0, 6, 0, (head.len() - 20) as u8]);
        pseudo.extend_from_slice(&head[20..]);
        let tcp_sum = internet_checksum(&pseudo);
        head[36..38].copy_from_slice(&tcp_sum.to_be_bytes());
        head
    }

    #[test]
    fn golden_urgent_ipv4() {
        let mut s = golden_stream();
        let mut packets = Vec::new();
        s.urgent(Side::Local, b"abc", &mut |p| packets.push(p.to_vec()));
        #[rustfmt::skip]
        let head = vec![
            0x45, 0x00, 0x00, 0x2b, // version/IHL, DSCP, total length 43
            0x00, 0x00, 0x40, 0x00, // identification 0, DF
            0x40, 0x06, 0x00, 0x00, // TTL 64, TCP, checksum (below)
            192, 168, 0, 1, 192, 168, 0, 2,
            0x12, 0x34, 0x00, 0x50, // ports 4660 -> 80
            0x01, 0x02, 0x03, 0x05, // seq: ISN + 1
            0x00, 0x00, 0x00, 0x0a, // ack: remote ISN 9 + 1
            0x50, 0x38, 0xff, 0xff, // data offset 5 words, URG ACK PSH, window 65535
            0x00, 0x00, 0x00, 0x03, // checksum (below), urgent pointer 3: just past 'c'
        ];
        assert_eq!(packets, [with_v4_checksums(head, b"abc")]);
    }

    #[test]
    fn golden_discarded_ack_ipv4() {
        let mut s = golden_stream();
        let mut packets = Vec::new();
        s.discarded(Side::Remote, 10, &mut |p| packets.push(p.to_vec()));
        #[rustfmt::skip]
        let head = vec![
            0x45, 0x00, 0x00, 0x28, // version/IHL, DSCP, total length 40
            0x00, 0x00, 0x40, 0x00, // identification 0, DF
            0x40, 0x06, 0x00, 0x00, // TTL 64, TCP, checksum (below)
            192, 168, 0, 1, 192, 168, 0, 2,
            0x12, 0x34, 0x00, 0x50, // ports 4660 -> 80
            0x01, 0x02, 0x03, 0x05, // seq: ISN + 1
            0x00, 0x00, 0x00, 0x14, // ack: remote ISN 9 + 1 + 10 discarded bytes
            0x50, 0x10, 0xff, 0xff, // data offset 5 words, ACK, window 65535
            0x00, 0x00, 0x00, 0x00, // checksum (below), urgent pointer
        ];
        assert_eq!(packets, [with_v4_checksums(head, b"")]);
    }

    #[test]
    fn golden_reset_ipv4() {
        let mut s = golden_stream();
        let mut packets = Vec::new();
        s.reset(Side::Remote, &mut |p| packets.push(p.to_vec()));
        #[rustfmt::skip]
        let head = vec![
            0x45, 0x00, 0x00, 0x28, // version/IHL, DSCP, total length 40
            0x00, 0x00, 0x40, 0x00, // identification 0, DF
            0x40, 0x06, 0x00, 0x00, // TTL 64, TCP, checksum (below)
            192, 168, 0, 2, 192, 168, 0, 1,
            0x00, 0x50, 0x12, 0x34, // ports 80 -> 4660
            0x00, 0x00, 0x00, 0x0a, // seq: remote ISN 9 + 1
            0x01, 0x02, 0x03, 0x05, // ack: ISN + 1
            0x50, 0x14, 0xff, 0xff, // data offset 5 words, ACK RST, window 65535
            0x00, 0x00, 0x00, 0x00, // checksum (below), urgent pointer
        ];
        assert_eq!(packets, [with_v4_checksums(head, b"")]);
    }
}
