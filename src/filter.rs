//! `NETINTERCEPT_FILTER`: a tcpdump/libpcap filter run on every synthesized packet.
//!
//! Compiled once per process by libpcap itself (a dead handle with our link type, LINKTYPE_RAW), so
//! the syntax and the matching are exactly tcpdump's. A bad expression is reported once and then
//! nothing is written: a user who asked for less never gets more.

use once_cell::sync::OnceCell;

use crate::{config, sys};

/// libpcap's *DLT* for raw IPv4/IPv6 packets. Our files say LINKTYPE_RAW (101), which libpcap
/// maps to DLT_RAW, a platform-dependent number (12 on Linux): ask libpcap for it by name.
fn dlt_raw() -> pcap::Linktype {
    pcap::Linktype::from_name("RAW").unwrap_or(pcap::Linktype(12))
}

/// A compiled filter.
pub struct Filter(pcap::BpfProgram);

// SAFETY: matching calls pcap_offline_filter, which only reads the compiled instructions; the
// program is never changed after compilation, so shared use from many threads is sound.
unsafe impl Sync for Filter {}

impl Filter {
    /// Compile `expr` as tcpdump would for raw-IP packets; libpcap's message on error.
    pub fn compile(expr: &str) -> Result<Filter, String> {
        let dead = pcap::Capture::dead(dlt_raw()).map_err(|e| e.to_string())?;
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

    #[test]
    fn compiles_tcpdump_syntax_and_rejects_nonsense() {
        assert!(Filter::compile("tcp port 443 or udp port 53").is_ok());
        let err = Filter::compile("tcp port banana").err().expect("an error");
        assert!(!err.is_empty());
        assert!(Filter::compile("port").is_err());
    }
}
