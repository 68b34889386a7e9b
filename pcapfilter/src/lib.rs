//! `NETINTERCEPT_FILTER`'s compiler and matcher: libpcap itself, in a library of its own.
//!
//! libpcap pulls a dozen libraries into a process (dbus, systemd, gcrypt…). The preload library
//! loads this one with `dlopen` only when a filter is set, so a traced program without a filter
//! never maps libpcap, and its start-up stays fast. The two `extern "C"` functions are the
//! whole interface; `Filter` is also used directly by the tests.
//!
//! Compiled by libpcap on a dead handle for DLT_RAW, libpcap's side of our LINKTYPE_RAW, so the
//! syntax and the matching are exactly tcpdump's reading our files.

use std::ffi::{c_char, c_int, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use parking_lot::Mutex;

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

/// Compile `expr` (NUL-terminated). Returns a filter to pass to [`netintercept_filter_matches`],
/// never freed (one per process); or null with libpcap's message, NUL-terminated and cut to
/// fit, in `err[..err_len]`.
///
/// # Safety
/// `expr` is a valid C string; `err` is null or valid for `err_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn netintercept_filter_compile(
    expr: *const c_char,
    err: *mut u8,
    err_len: usize,
) -> *const Filter {
    // SAFETY: per the contract.
    let expr = unsafe { CStr::from_ptr(expr) }.to_string_lossy();
    let result = catch_unwind(|| Filter::compile(&expr))
        .unwrap_or_else(|_| Err("internal error in the filter compiler".into()));
    match result {
        Ok(f) => Box::into_raw(Box::new(f)),
        Err(msg) => {
            if !err.is_null() && err_len > 0 {
                let n = msg.len().min(err_len - 1);
                // SAFETY: per the contract `err` holds `err_len` bytes; we write `n + 1 <= err_len`.
                unsafe {
                    std::ptr::copy_nonoverlapping(msg.as_ptr(), err, n);
                    *err.add(n) = 0;
                }
            }
            std::ptr::null()
        }
    }
}

/// 1 when `filter` keeps the raw IP packet `packet[..len]`, else 0.
///
/// # Safety
/// `filter` came from [`netintercept_filter_compile`]; `packet` is valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn netintercept_filter_matches(
    filter: *const Filter,
    packet: *const u8,
    len: usize,
) -> c_int {
    if filter.is_null() || packet.is_null() {
        return 0;
    }
    // SAFETY: per the contract.
    let (f, p) = unsafe { (&*filter, std::slice::from_raw_parts(packet, len)) };
    catch_unwind(AssertUnwindSafe(|| f.matches(p))).unwrap_or(false) as c_int
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
    fn the_c_interface_compiles_matches_and_reports() {
        let mut err = [0xffu8; 16];
        // SAFETY: valid C strings and buffers.
        unsafe {
            let f = netintercept_filter_compile(c"udp port 53".as_ptr(), err.as_mut_ptr(), 16);
            assert!(!f.is_null());
            let p = udp4(53);
            assert_eq!(netintercept_filter_matches(f, p.as_ptr(), p.len()), 1);
            let q = udp4(54);
            assert_eq!(netintercept_filter_matches(f, q.as_ptr(), q.len()), 0);
            let bad =
                netintercept_filter_compile(c"tcp port banana".as_ptr(), err.as_mut_ptr(), 16);
            assert!(bad.is_null());
        }
        let msg = CStr::from_bytes_until_nul(&err).expect("NUL-terminated, cut to fit");
        assert_eq!(msg.to_bytes().len(), 15);
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
