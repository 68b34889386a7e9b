//! Configuration from the environment, read by the collector.

/// The capture file pattern used when `NETINTERCEPT_FILE` is unset, as in the original C tool.
pub const DEFAULT_FILE: &str = "netintercept.pcap";

/// What the run writes.
#[derive(Clone, Debug)]
pub struct Config {
    pub file_pattern: String,
    pub filter: Option<String>,
    /// Write pcapng with per-packet comments (a `.pcapng` name or NETINTERCEPT_FORMAT=pcapng).
    pub pcapng: bool,
}

impl Config {
    /// Read the environment.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let file_pattern = var("NETINTERCEPT_FILE").unwrap_or_else(|| DEFAULT_FILE.to_string());
        let pcapng = match var("NETINTERCEPT_FORMAT").as_deref() {
            Some("pcapng") => true,
            Some(_) => false,
            None => file_pattern.ends_with(".pcapng"),
        };
        Self {
            pcapng,
            file_pattern,
            filter: std::env::var("NETINTERCEPT_FILTER").ok(),
        }
    }
}
