//! Pure packet synthesis and capture-file writing.
//!
//! Connection events go in (a handshake, bytes sent or received, a FIN), ideal IP packets come out
//! through a caller's callback, and capture-file records are built into a caller's buffer. Nothing
//! here reads a clock, opens a file or calls libc: timestamps and sequence-number seeds are inputs.
//!
//! # Panics
//!
//! No public function panics on any input. Packets etherparse or pcap-file refuse to build are
//! dropped (nothing emitted or appended); the splitting and truncation rules keep that from
//! happening for any real traffic.
#![forbid(unsafe_code)]

mod address;
mod checksum;
mod pcap_format;
mod pcapng_format;
mod seq_number;
mod tcp_stream;
mod udp_datagram;

#[cfg(test)]
mod test_support;

pub use address::{
    normalise, MAX_PACKET_LEN, MAX_TCP_PAYLOAD_V4, MAX_TCP_PAYLOAD_V6, MAX_UDP_PAYLOAD_V4,
    MAX_UDP_PAYLOAD_V6,
};
pub use pcap_format::{pcap_header, pcap_record, pcap_record_header, RECORD_HEADER_LEN, SNAPLEN};
pub use pcapng_format::{pcapng_header, pcapng_record, pcapng_secrets, SectionInfo};
pub use tcp_stream::{Side, TcpStream};
pub use udp_datagram::udp_datagram;
