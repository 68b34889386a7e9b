//! `NETINTERCEPT_FILTER`: a tcpdump/libpcap filter run on every synthesized packet.
//!
//! Compiled once per process by libpcap itself (a dead handle for DLT_RAW, libpcap's side of our
//! LINKTYPE_RAW), so the syntax and the matching are exactly tcpdump's reading our files. A bad
//! expression is reported once per process and then nothing is written: a user who asked for
//! less never gets more.

use once_cell::sync::OnceCell;
use parking_lot::Mutex;

use crate::{config, sys};

/// libpcap's *DLT* for raw IPv4/IPv6 packets. Our files say LINKTYPE_RAW (101), but
/// `pcap_open_dead` takes a DLT, and libpcap rejects 101 there ("unknown data link type 101"):
/// LINKTYPE_RAW maps to DLT_RAW, a platform-dependent number (12 on Linux), so ask libpcap for it
/// by name.
fn dlt_raw() -> pcap::Linktype {
    pcap::Linktype::from_name("RAW").unwrap_or(pcap::Linktype(12))
}

/// Serializes `pcap_compile`: libpcap before 1.8 compiled with a non-reentrant parser. The
/// library compiles once (under `ACTIVE`), but the CLI and tests may compile from several threads.
static COMPILING: Mutex<()> = Mutex::new(());

/// A compiled filter.
pub struct Filter(pcap::BpfProgram);

// SAFETY: `BpfProgram` is `Send` (the pcap crate says so) but not `Sync` because it holds a raw
// pointer to the instructions. Matching calls pcap_offline_filter, which only reads them (its
// scratch memory is on its own stack); they are never changed after compilation and freed only
// on drop, so shared use from many threads is sound.
unsafe impl Sync for Filter {}

impl Filter {
    /// Compile `expr` as tcpdump would for raw-IP packets; libpcap's message on error.
    ///
    /// The dead handle only carries the link type and the snapshot length into the compiler
    /// (the pcap crate's 65535, where tcpdump reading our files says 262144: that number is only
    /// the accept value the program returns, not part of the verdict). The compiled program owns
    /// its instructions, so the handle is closed when this returns.
    pub fn compile(expr: &str) -> Result<Filter, String> {
        let dead = pcap::Capture::dead(dlt_raw()).map_err(|e| e.to_string())?;
        let _one_at_a_time = COMPILING.lock();
        dead.compile(expr, true).map(Filter).map_err(|e| match e {
            pcap::Error::PcapError(msg) => msg,
            other => other.to_string(),
        })
    }

    /// Whether `packet` (raw IP bytes) passes.
    pub fn matches(&self, packet: &[u8]) -> bool {
        self.0.filter(packet)
    }
}

/// The CLI's check of an expression before it starts the program.
pub fn check(expr: &str) -> Result<(), String> {
    Filter::compile(expr).map(|_| ())
}

/// What this process does with packets.
enum Active {
    All,
    Only(Filter),
    /// The expression did not compile: nothing is written.
    Nothing,
}

static ACTIVE: OnceCell<Active> = OnceCell::new();

fn active() -> &'static Active {
    ACTIVE.get_or_init(|| match config::get().filter.as_deref() {
        None => Active::All,
        // tcpdump's empty expression keeps everything; skip running a match-all program.
        Some(expr) if expr.trim().is_empty() => Active::All,
        Some(expr) => match Filter::compile(expr) {
            Ok(f) => Active::Only(f),
            Err(msg) => {
                sys::report(&format!("bad filter '{expr}': {msg}"));
                Active::Nothing
            }
        },
    })
}

/// Whether this process writes `packet`.
#[inline]
pub fn matches(packet: &[u8]) -> bool {
    match active() {
        Active::All => true,
        Active::Only(f) => f.matches(packet),
        Active::Nothing => false,
    }
}

/// Compile the configured filter now (at load, so a bad one is reported before the program runs).
pub fn init() {
    active();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp4(dst_port: u16) -> Vec<u8> {
        let mut out = Vec::new();
        etherparse::PacketBuilder::ipv4([127, 0, 0, 1], [127, 0, 0, 1], 64)
            .udp(40000, dst_port)
            .write(&mut out, b"hi")
            .expect("a packet");
        out
    }

    fn tcp6_syn() -> Vec<u8> {
        let mut out = Vec::new();
        let lo = std::net::Ipv6Addr::LOCALHOST.octets();
        etherparse::PacketBuilder::ipv6(lo, lo, 64)
            .tcp(40000, 443, 1, 65535)
            .syn()
            .write(&mut out, &[])
            .expect("a packet");
        out
    }

    #[test]
    fn compiles_tcpdump_syntax_and_rejects_nonsense() {
        assert!(Filter::compile("tcp port 443 or udp port 53").is_ok());
        let err = Filter::compile("tcp port banana").err().expect("an error");
        assert!(!err.is_empty());
        assert!(Filter::compile("port").is_err());
    }

    #[test]
    fn matches_raw_ipv4_and_ipv6_packets() {
        let f = Filter::compile("udp port 53 or (ip6 and tcp[tcpflags] & tcp-syn != 0)")
            .expect("compiles");
        assert!(f.matches(&udp4(53)));
        assert!(!f.matches(&udp4(54)));
        // tcp[] is IPv4-only in libpcap: the IPv6 SYN does not match that half.
        assert!(!f.matches(&tcp6_syn()));
        let f = Filter::compile("ip6 and tcp port 443").expect("compiles");
        assert!(f.matches(&tcp6_syn()) && !f.matches(&udp4(443)));
        assert!(Filter::compile("")
            .expect("empty is match-all")
            .matches(&udp4(1)));
    }

    #[test]
    fn link_layer_primitives_have_nothing_to_look_at() {
        let err = Filter::compile("ether host 00:11:22:33:44:55").err();
        assert!(err.is_some_and(|e| e.contains("ethernet addresses")));
        let err = Filter::compile("vlan").err();
        assert!(err.is_some_and(|e| e.contains("VLAN")));
    }

    #[test]
    fn shared_between_threads() {
        let f = Filter::compile("udp").expect("compiles");
        let p = udp4(9);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| assert!((0..1000).all(|_| f.matches(&p))));
            }
        });
    }
}
