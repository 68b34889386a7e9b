//! The classic pcap capture format, written with pcap-file.
//!
//! Little-endian, microsecond timestamps, link type RAW (101): each record holds one IP packet.

use std::time::Duration;

use pcap_file::pcap::PcapHeader;
use pcap_file::{DataLink, Endianness, TsResolution};

use crate::address::MAX_PACKET_LEN;

/// Snapshot length announced in the global header. pcap-file's default of 65,535 would reject a
/// full IPv6 packet (40 + 65,535 bytes); 262,144 is what tcpdump announces.
pub const SNAPLEN: u32 = 262_144;
const _: () = assert!(MAX_PACKET_LEN <= SNAPLEN as usize);

const RESOLUTION: TsResolution = TsResolution::MicroSecond;

fn header() -> PcapHeader {
    PcapHeader {
        snaplen: SNAPLEN,
        datalink: DataLink::RAW,
        ts_resolution: RESOLUTION,
        endianness: Endianness::Little,
        ..PcapHeader::default()
    }
}

/// The pcap global header for raw-IP (LINKTYPE_RAW, 101) packets, microsecond timestamps.
pub fn pcap_header() -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    // Writing into a Vec cannot fail; should pcap-file ever fail, the header is left empty.
    if header().write_to(&mut out).is_err() {
        out.clear();
    }
    out
}

/// Append one pcap record (header and packet) stamped `ts` since the Unix epoch to `out`.
///
/// Appends nothing for a record the format cannot hold: a timestamp past 2106 (seconds overflow
/// 32 bits) or a packet longer than [`SNAPLEN`], neither of which this crate produces.
pub fn pcap_record(ts: Duration, packet: &[u8], out: &mut Vec<u8>) {
    if let Some(header) = pcap_record_header(ts, packet.len()) {
        out.reserve(header.len() + packet.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(packet);
    }
}

/// The 16-byte header of a pcap record of a `len`-byte packet stamped `ts`, for a caller that
/// writes the packet's bytes from where they are; None where [`pcap_record`] appends nothing.
///
/// Written directly rather than through pcap-file's `PcapPacket::write_to` (generic over an
/// `io::Write` and a byte order): this runs for every packet. Little-endian, microseconds,
/// the whole packet captured (orig_len = incl_len), as [`pcap_header`] announces.
pub fn pcap_record_header(ts: Duration, len: usize) -> Option<[u8; RECORD_HEADER_LEN]> {
    let secs = u32::try_from(ts.as_secs()).ok()?;
    let len = u32::try_from(len).ok().filter(|&len| len <= SNAPLEN)?;
    let mut header = [0u8; RECORD_HEADER_LEN];
    header[0..4].copy_from_slice(&secs.to_le_bytes());
    header[4..8].copy_from_slice(&ts.subsec_micros().to_le_bytes());
    header[8..12].copy_from_slice(&len.to_le_bytes());
    header[12..16].copy_from_slice(&len.to_le_bytes());
    Some(header)
}

/// Length of a pcap record header.
pub const RECORD_HEADER_LEN: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcap::PcapReader;

    #[test]
    fn header_and_records_read_back() {
        let mut file = pcap_header();
        assert_eq!(file.len(), 24);
        let big = vec![0x60; MAX_PACKET_LEN];
        pcap_record(
            Duration::new(1_700_000_000, 123_456_789),
            b"\x45abc",
            &mut file,
        );
        pcap_record(Duration::from_secs(5), &big, &mut file);
        assert_eq!(file.len(), 24 + 16 + 4 + 16 + MAX_PACKET_LEN);

        let mut reader = PcapReader::new(&file[..]).unwrap();
        let h = reader.header();
        assert_eq!(
            (h.datalink, h.snaplen, h.ts_resolution),
            (DataLink::RAW, SNAPLEN, RESOLUTION)
        );
        assert_eq!((h.version_major, h.version_minor), (2, 4));
        let first = reader.next_packet().unwrap().unwrap();
        // Microseconds: the nanoseconds below one microsecond are dropped.
        assert_eq!(first.timestamp, Duration::new(1_700_000_000, 123_456_000));
        assert_eq!((first.orig_len, &first.data[..]), (4, &b"\x45abc"[..]));
        let second = reader.next_packet().unwrap().unwrap();
        assert_eq!(
            (second.orig_len as usize, second.data.len()),
            (big.len(), big.len())
        );
        assert!(reader.next_packet().is_none());
    }

    #[test]
    fn golden_header_bytes() {
        #[rustfmt::skip]
        let expected = [
            0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, // magic (µs), version 2.4
            0, 0, 0, 0, 0, 0, 0, 0,             // zone, accuracy
            0, 0, 4, 0, 101, 0, 0, 0,           // snaplen 262144, LINKTYPE_RAW
        ];
        assert_eq!(pcap_header(), expected);
    }

    #[test]
    fn golden_record_bytes() {
        let mut out = vec![9];
        pcap_record(
            Duration::new(0x0102_0304, 999_999_999),
            b"\x45xyz",
            &mut out,
        );
        #[rustfmt::skip]
        let expected = [
            9,
            0x04, 0x03, 0x02, 0x01, // seconds
            0x3f, 0x42, 0x0f, 0x00, // 999,999 microseconds (nanoseconds truncated)
            4, 0, 0, 0, 4, 0, 0, 0, // captured and original lengths
            0x45, b'x', b'y', b'z',
        ];
        assert_eq!(out, expected);
        assert_eq!(
            pcap_record_header(Duration::new(0x0102_0304, 999_999_999), 4),
            Some(<[u8; 16]>::try_from(&expected[1..17]).unwrap())
        );
    }

    /// What pcap-file writes for the same records, byte for byte.
    #[test]
    fn records_equal_pcap_file_output() {
        use byteorder_slice::LittleEndian;
        use pcap_file::pcap::PcapPacket;
        for (ts, len) in [
            (Duration::ZERO, 0),
            (Duration::new(1_700_000_000, 123_456_789), 1),
            (Duration::new(u64::from(u32::MAX), 1_000), SNAPLEN as usize),
        ] {
            let packet = vec![0x60; len];
            let mut ours = Vec::new();
            pcap_record(ts, &packet, &mut ours);
            let mut theirs = Vec::new();
            PcapPacket::new(ts, len as u32, &packet)
                .write_to::<_, LittleEndian>(&mut theirs, RESOLUTION, SNAPLEN)
                .unwrap();
            assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn unrepresentable_record_appends_nothing() {
        let mut out = vec![1, 2, 3];
        pcap_record(Duration::from_secs(u64::from(u32::MAX) + 1), b"x", &mut out);
        pcap_record(Duration::ZERO, &vec![0; SNAPLEN as usize + 1], &mut out);
        assert_eq!(out, [1, 2, 3]);
    }
}
