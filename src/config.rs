//! Configuration from the environment, read once when the library loads.

use once_cell::sync::OnceCell;

/// The capture file pattern used when `NETINTERCEPT_FILE` is unset, as in the original C tool.
pub const DEFAULT_FILE: &str = "netintercept.pcap";
/// How often buffered packets reach the file when `NETINTERCEPT_FLUSH_MS` is unset.
pub const DEFAULT_FLUSH_MS: u64 = 1000;
/// Set by the first traced process of a run (or the CLI) to the run's start, in nanoseconds since
/// the epoch; a capture file modified after it belongs to this run and is never truncated.
pub const SESSION_VAR: &str = "NETINTERCEPT_SESSION_NS";

/// The settings of this process.
#[derive(Clone, Debug)]
pub struct Config {
    pub file_pattern: String,
    pub flush_ms: u64,
    pub filter: Option<String>,
    pub session_start_ns: u128,
    /// Write pcapng with per-packet comments (a `.pcapng` name or NETINTERCEPT_FORMAT=pcapng).
    pub pcapng: bool,
}

static CONFIG: OnceCell<Config> = OnceCell::new();

impl Config {
    /// Read the environment; `now_ns` stands in for a missing session start.
    pub fn from_env(now_ns: u128) -> Self {
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
            flush_ms: var("NETINTERCEPT_FLUSH_MS")
                .and_then(|v| v.parse().ok())
                .filter(|&ms| ms > 0)
                .unwrap_or(DEFAULT_FLUSH_MS),
            filter: std::env::var("NETINTERCEPT_FILTER").ok(),
            session_start_ns: var(SESSION_VAR)
                .and_then(|v| v.parse().ok())
                .unwrap_or(now_ns),
        }
    }
}

/// Install this process's configuration (first call wins).
pub fn init(config: Config) {
    let _ = CONFIG.set(config);
}

/// This process's configuration, or the defaults before `init`.
pub fn get() -> &'static Config {
    CONFIG.get_or_init(|| Config::from_env(crate::sys::now().as_nanos()))
}
