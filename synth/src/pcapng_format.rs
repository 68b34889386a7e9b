//! The pcapng capture format, written with pcap-file: one section, one raw-IP interface with
//! nanosecond timestamps, and each packet with a comment saying which process and call made it.

use std::borrow::Cow;
use std::time::Duration;

use byteorder_slice::LittleEndian;
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
use pcap_file::pcapng::PcapNgBlock;
use pcap_file::{DataLink, Endianness};

use crate::pcap_format::SNAPLEN;

/// Who is capturing: written into the section header and the interface description.
pub struct SectionInfo<'a> {
    pub host: &'a str,
    pub os: &'a str,
    pub application: &'a str,
    pub command_line: &'a str,
}

/// The section header and interface description that open a pcapng file.
pub fn pcapng_header(info: &SectionInfo) -> Vec<u8> {
    let shb = SectionHeaderBlock {
        endianness: Endianness::Little,
        options: vec![
            SectionHeaderOption::Hardware(Cow::Owned(format!("host {}", info.host))),
            SectionHeaderOption::OS(Cow::Borrowed(info.os)),
            SectionHeaderOption::UserApplication(Cow::Borrowed(info.application)),
        ],
        ..SectionHeaderBlock::default()
    };
    let idb = InterfaceDescriptionBlock {
        linktype: DataLink::RAW,
        snaplen: SNAPLEN,
        options: vec![
            InterfaceDescriptionOption::IfName(Cow::Borrowed("netintercept")),
            InterfaceDescriptionOption::IfDescription(Cow::Owned(format!(
                "raw IPv4/IPv6 (LINKTYPE_RAW) synthesized from the calls of: {}",
                info.command_line
            ))),
            // pcap-file writes nanoseconds whatever the interface says: say so.
            InterfaceDescriptionOption::IfTsResol(9),
        ],
    };
    let mut out = Vec::with_capacity(256);
    let written = shb
        .into_block()
        .write_to::<LittleEndian, _>(&mut out)
        .is_ok()
        && idb
            .into_block()
            .write_to::<LittleEndian, _>(&mut out)
            .is_ok();
    if !written {
        out.clear();
    }
    out
}

/// Append one Enhanced Packet Block stamped `ts` with `comment` to `out`.
pub fn pcapng_record(ts: Duration, packet: &[u8], comment: &str, out: &mut Vec<u8>) {
    let epb = EnhancedPacketBlock {
        interface_id: 0,
        timestamp: ts,
        original_len: packet.len() as u32,
        data: Cow::Borrowed(packet),
        options: vec![EnhancedPacketOption::Comment(Cow::Borrowed(comment))],
    };
    let start = out.len();
    if epb.into_block().write_to::<LittleEndian, _>(out).is_err() {
        out.truncate(start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcapng::{Block, PcapNgReader};

    #[test]
    fn header_and_records_read_back() {
        let info = SectionInfo {
            host: "box",
            os: "Linux",
            application: "netintercept 0.1.0",
            command_line: "curl http://x/",
        };
        let mut file = pcapng_header(&info);
        let pkt = [
            0x45u8, 0, 0, 20, 0, 0, 0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1,
        ];
        pcapng_record(
            Duration::new(5, 123_456_789),
            &pkt,
            "pid=1 call=sendto",
            &mut file,
        );
        let mut reader = PcapNgReader::new(&file[..]).expect("section header");
        let mut seen = 0;
        while let Some(block) = reader.next_block() {
            match block.expect("a block") {
                Block::InterfaceDescription(idb) => assert_eq!(idb.linktype, DataLink::RAW),
                Block::EnhancedPacket(epb) => {
                    assert_eq!(epb.data.as_ref(), &pkt);
                    assert_eq!(epb.timestamp, Duration::new(5, 123_456_789));
                    assert!(
                        matches!(&epb.options[0], EnhancedPacketOption::Comment(c) if c == "pid=1 call=sendto")
                    );
                    seen += 1;
                }
                _ => {}
            }
        }
        assert_eq!(seen, 1);
    }
}
