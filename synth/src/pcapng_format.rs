//! The pcapng capture format, written with pcap-file: one section, one raw-IP interface with
//! nanosecond timestamps, and each packet with a comment saying which process and call made it.
//! TLS session secrets go into Decryption Secrets Blocks between the packets (written here by
//! hand: pcap-file 2.0 has no such block), so Wireshark decrypts the capture with no key file.
//!
//! An option's length is a 16-bit field, and pcap-file writes a longer value's length modulo
//! 65,536, which makes the rest of the file unreadable. Every text option goes through
//! [`fit_option`] first: a value over [`MAX_OPTION_LEN`] bytes (a traced command line of 70,000
//! characters in the interface description) is cut on a character boundary and marked.

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

/// The longest option value pcapng can hold: its length field has 16 bits.
pub const MAX_OPTION_LEN: usize = u16::MAX as usize;

/// `value` as it fits in one option: unchanged when it does, else its start (cut on a UTF-8
/// character boundary) followed by a mark saying how long it was, `MAX_OPTION_LEN` bytes at most.
fn fit_option(value: &str) -> Cow<'_, str> {
    fit(value, MAX_OPTION_LEN)
}

/// [`fit_option`] for a value built on the spot (kept without a copy when it fits).
fn fit_owned(value: String) -> Cow<'static, str> {
    if value.len() <= MAX_OPTION_LEN {
        return Cow::Owned(value);
    }
    Cow::Owned(fit(&value, MAX_OPTION_LEN).into_owned())
}

fn fit(value: &str, max: usize) -> Cow<'_, str> {
    if value.len() <= max {
        return Cow::Borrowed(value);
    }
    let mark = format!("… [cut from {} bytes]", value.len());
    let mut cut = max.saturating_sub(mark.len());
    while !value.is_char_boundary(cut) {
        cut -= 1;
    }
    Cow::Owned(format!("{}{mark}", &value[..cut]))
}

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
            SectionHeaderOption::Hardware(fit_owned(format!("host {}", info.host))),
            SectionHeaderOption::OS(fit_option(info.os)),
            SectionHeaderOption::UserApplication(fit_option(info.application)),
        ],
        ..SectionHeaderBlock::default()
    };
    let idb = InterfaceDescriptionBlock {
        linktype: DataLink::RAW,
        snaplen: SNAPLEN,
        options: vec![
            InterfaceDescriptionOption::IfName(Cow::Borrowed("netintercept")),
            InterfaceDescriptionOption::IfDescription(fit_owned(format!(
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
        options: vec![EnhancedPacketOption::Comment(fit_option(comment))],
    };
    let start = out.len();
    if epb.into_block().write_to::<LittleEndian, _>(out).is_err() {
        out.truncate(start);
    }
}

/// The Decryption Secrets Block's type (pcapng, `0x0000000A`).
const DSB_TYPE: u32 = 0x0000_000a;
/// Its secrets type for TLS: NSS key log lines (`TLSK`).
const TLS_KEY_LOG: u32 = 0x544c_534b;

/// Offsets in a Decryption Secrets Block; the secrets, padded to 32 bits, follow `SECRETS_LEN`,
/// then the total length again.
mod dsb {
    use std::ops::Range;
    pub const TYPE: Range<usize> = 0..4;
    pub const TOTAL_LEN: Range<usize> = 4..8;
    pub const SECRETS_TYPE: Range<usize> = 8..12;
    pub const SECRETS_LEN: Range<usize> = 12..16;
    pub const SECRETS: usize = 16;
    /// Fixed fields and the trailing total length.
    pub const OVERHEAD: usize = 20;
}

/// Append one Decryption Secrets Block holding `key_log`, lines in the NSS key log format
/// (`CLIENT_RANDOM …`, `CLIENT_TRAFFIC_SECRET_0 …`), each ending in a newline. Wireshark (3.0
/// and later) reads such a block wherever it stands and decrypts the TLS packets after it.
/// Appends nothing for secrets too long for the block's 32-bit length.
pub fn pcapng_secrets(key_log: &[u8], out: &mut Vec<u8>) {
    let padded = key_log.len().next_multiple_of(4);
    let Ok(total) = u32::try_from(padded + dsb::OVERHEAD) else {
        return;
    };
    let start = out.len();
    out.resize(start + dsb::SECRETS, 0);
    let head = &mut out[start..];
    head[dsb::TYPE].copy_from_slice(&DSB_TYPE.to_le_bytes());
    head[dsb::TOTAL_LEN].copy_from_slice(&total.to_le_bytes());
    head[dsb::SECRETS_TYPE].copy_from_slice(&TLS_KEY_LOG.to_le_bytes());
    head[dsb::SECRETS_LEN].copy_from_slice(&(key_log.len() as u32).to_le_bytes());
    out.extend_from_slice(key_log);
    out.resize(start + dsb::SECRETS + padded, 0);
    // No options: the block ends with its length again.
    out.extend_from_slice(&total.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcapng::{Block, PcapNgReader};

    /// A secrets block, byte for byte: type 10, total length 40 at both ends, TLSK, 18 bytes of
    /// key log padded to 20, no options; readers see it between the packets.
    #[test]
    fn secrets_block_bytes() {
        let mut out = Vec::new();
        pcapng_secrets(b"CLIENT_RANDOM a b\n", &mut out);
        assert_eq!(
            out,
            [
                0x0a, 0, 0, 0, // block type: Decryption Secrets Block
                40, 0, 0, 0, // total length
                0x4b, 0x53, 0x4c, 0x54, // secrets type 0x544c534b ("TLSK")
                18, 0, 0, 0, // secrets length
                b'C', b'L', b'I', b'E', b'N', b'T', b'_', b'R', b'A', b'N', b'D', b'O', b'M', b' ',
                b'a', b' ', b'b', b'\n', // the key log line
                0, 0, // padding to 32 bits
                40, 0, 0, 0, // total length again
            ]
        );
        let info = SectionInfo {
            host: "box",
            os: "Linux",
            application: "netintercept 0.1.0",
            command_line: "curl",
        };
        let mut file = pcapng_header(&info);
        file.extend_from_slice(&out);
        pcapng_record(Duration::new(1, 0), &[0x45, 0, 0, 20], "c", &mut file);
        let mut reader = PcapNgReader::new(&file[..]).expect("section header");
        let mut kinds = Vec::new();
        while let Some(block) = reader.next_block() {
            kinds.push(match block.expect("a readable block") {
                Block::InterfaceDescription(_) => 1,
                Block::Unknown(b) => {
                    assert_eq!(&b.value[8..26], b"CLIENT_RANDOM a b\n");
                    b.type_
                }
                Block::EnhancedPacket(_) => 6,
                _ => 0,
            });
        }
        assert_eq!(kinds, [1, 10, 6]);
    }

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

    #[test]
    fn fit_cuts_on_a_character_and_marks_the_cut() {
        assert_eq!(fit("short", 5), "short");
        // 33 bytes into 27: the 23-byte mark leaves 4, which would split the second 'é'.
        let value = format!("a{}", "é".repeat(16));
        let fitted = fit(&value, 27);
        assert_eq!(
            fitted.as_bytes(),
            [
                b'a', 0xc3, 0xa9, 0xe2, 0x80, 0xa6, b' ', b'[', b'c', b'u', b't', b' ', b'f', b'r',
                b'o', b'm', b' ', b'3', b'3', b' ', b'b', b'y', b't', b'e', b's', b']'
            ]
        );
    }

    /// A 70,000-byte command line: the interface description is cut to 65,534 bytes (the
    /// largest cut that ends on a character), marked, padded, and the blocks after it read.
    #[test]
    fn a_long_command_line_is_cut_and_the_file_stays_readable() {
        let command_line = "é".repeat(35_000);
        let info = SectionInfo {
            host: "box",
            os: "Linux",
            application: "netintercept 0.1.0",
            command_line: &command_line,
        };
        let mut file = pcapng_header(&info);
        let shb_len = u32::from_le_bytes([file[4], file[5], file[6], file[7]]) as usize;
        let idb = &file[shb_len..];
        // Type 1, total length 0x10034 at both ends; LINKTYPE_RAW, snaplen.
        assert_eq!(idb[..8], [1, 0, 0, 0, 0x34, 0, 1, 0]);
        assert_eq!(idb.len(), 0x10034);
        assert_eq!(idb[idb.len() - 4..], [0x34, 0, 1, 0]);
        // if_name (2): "netintercept"; then if_description (3), 0xfffe bytes long.
        assert_eq!(idb[16..20], [2, 0, 12, 0]);
        assert_eq!(&idb[20..32], b"netintercept");
        assert_eq!(idb[32..36], [3, 0, 0xfe, 0xff]);
        assert_eq!(
            &idb[36..96],
            b"raw IPv4/IPv6 (LINKTYPE_RAW) synthesized from the calls of: "
        );
        let end = 36 + 0xfffe;
        assert_eq!(
            idb[end - 30..end + 18],
            [
                0xc3, 0xa9, 0xc3, 0xa9, 0xe2, 0x80, 0xa6, b' ', b'[', b'c', b'u', b't', b' ', b'f',
                b'r', b'o', b'm', b' ', b'7', b'0', b'0', b'6', b'0', b' ', b'b', b'y', b't', b'e',
                b's', b']', // end of the value
                0, 0, // padding to 32 bits
                9, 0, 1, 0, 9, 0, 0, 0, // if_tsresol: nanoseconds
                0, 0, 0, 0, // end of options
                0x34, 0, 1, 0, // total length again
            ][..]
        );
        pcapng_record(Duration::new(1, 0), &[0x45, 0, 0, 20], "c", &mut file);
        let mut reader = PcapNgReader::new(&file[..]).expect("section header");
        let mut kinds = Vec::new();
        while let Some(block) = reader.next_block() {
            kinds.push(match block.expect("a readable block") {
                Block::InterfaceDescription(idb) => {
                    let text = idb.options.iter().find_map(|o| match o {
                        InterfaceDescriptionOption::IfDescription(d) => Some(d.clone()),
                        _ => None,
                    });
                    assert!(text.is_some_and(|t| t.ends_with("é… [cut from 70060 bytes]")));
                    "idb"
                }
                Block::EnhancedPacket(_) => "epb",
                _ => "other",
            });
        }
        assert_eq!(kinds, ["idb", "epb"]);
    }
}
