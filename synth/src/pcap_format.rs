//! The classic pcap capture format, written with pcap-file.
//!
//! Little-endian, microsecond timestamps, link type RAW (101): each record holds one IP packet.

use std::time::Duration;

use byteorder_slice::LittleEndian;
use pcap_file::pcap::{PcapHeader, PcapPacket};
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
/// Appends nothing if pcap-file refuses the record: a timestamp past 2106 (seconds overflow
/// 32 bits) or a packet longer than [`SNAPLEN`], neither of which this crate produces.
pub fn pcap_record(ts: Duration, packet: &[u8], out: &mut Vec<u8>) {
    let Ok(orig_len) = u32::try_from(packet.len()) else {
        return;
    };
    let record = PcapPacket::new(ts, orig_len, packet);
    let start = out.len();
    if record
        .write_to::<_, LittleEndian>(out, RESOLUTION, SNAPLEN)
        .is_err()
    {
        out.truncate(start);
    }
}

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
    fn unrepresentable_record_appends_nothing() {
        let mut out = vec![1, 2, 3];
        pcap_record(Duration::from_secs(u64::from(u32::MAX) + 1), b"x", &mut out);
        pcap_record(Duration::ZERO, &vec![0; SNAPLEN as usize + 1], &mut out);
        assert_eq!(out, [1, 2, 3]);
    }
}
