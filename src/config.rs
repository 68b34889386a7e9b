//! Configuration from the environment, read and checked once per run: by the CLI before it
//! starts the program (its options in place of the variables they set), or by a detached
//! collector.
//!
//! Values are bytes as the OS gives them. A file name is used as those bytes, UTF-8 or not; a
//! value that must be text (the filter, the format) and is not, is a problem named in one line,
//! never silently ignored.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

use crate::quoted::{quoted, VALUE_CHARS};

/// The capture file pattern used when `NETINTERCEPT_FILE` is unset, as in the original C tool.
pub const DEFAULT_FILE: &str = "netintercept.pcap";

/// What the run writes.
#[derive(Clone, Debug)]
pub struct Config {
    /// The capture file pattern, exactly the bytes given.
    pub file_pattern: OsString,
    /// The filter expression, when one is set and is text (see [`Problem::BadFilter`]).
    pub filter: Option<String>,
    /// Write pcapng with per-packet comments (a `.pcapng` name or NETINTERCEPT_FORMAT=pcapng).
    pub pcapng: bool,
    /// Where to write the TLS keys in SSLKEYLOGFILE format (`--keylog`, NETINTERCEPT_KEYLOG),
    /// exactly the bytes given; no pattern is expanded: one key log per run.
    pub keylog: Option<OsString>,
    /// The folder of the per-socket event traces (`--events`, NETINTERCEPT_EVENTS), as given.
    pub events: Option<OsString>,
    /// Also write each traced socket's packets beside its trace (`-c`,
    /// NETINTERCEPT_EVENTS_PCAP=1; tcpsnitch's `-c`).
    pub events_pcap: bool,
    /// TCP_INFO sampling and TCP events (`-b`, `-u`, `--tcp-events`, `-t`;
    /// NETINTERCEPT_TCP_INFO_BYTES, NETINTERCEPT_TCP_INFO_USEC, NETINTERCEPT_TCP_EVENTS).
    pub tcp: TcpSettings,
    /// What is wrong with the values, in the order found.
    pub problems: Vec<Problem>,
}

/// What the user asked of TCP internals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpSettings {
    /// `-b`: a sample each time this many more bytes were sent and received (0: never).
    pub every_bytes: u64,
    /// `-u`: a sample every this many microseconds (0: never).
    pub every_us: u64,
    /// `--tcp-events`: print events on stderr.
    pub print: bool,
    /// `-t`: with their time of day.
    pub timestamps: bool,
}

impl TcpSettings {
    /// Whether anything is to be done at all.
    pub fn any(&self) -> bool {
        self.every_bytes > 0 || self.every_us > 0 || self.print
    }
}

/// A value that cannot be used as given. Each holds its line, without the `netintercept: `.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The filter cannot be applied: nothing may be written (a user who asked for less never
    /// gets more).
    BadFilter(String),
    /// NETINTERCEPT_FORMAT names no format: the CLI refuses to start, a detached collector
    /// writes the format the file name implies (already chosen in [`Config::pcapng`]) and says
    /// so after this line.
    BadFormat(String),
    /// A variable nothing reads any more: said once, then the run goes on.
    Ignored(String),
    /// A value that means nothing: said once, then the run goes on with the default.
    Defaulted(String),
}

impl Problem {
    /// The line to print (after `netintercept: `).
    pub fn line(&self) -> &str {
        match self {
            Problem::BadFilter(l)
            | Problem::BadFormat(l)
            | Problem::Ignored(l)
            | Problem::Defaulted(l) => l,
        }
    }
}

impl Config {
    /// Read the environment.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var_os(name))
    }

    /// Read the variables through `lookup` (the environment, or the CLI's options over it).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> Self {
        // An empty value means unset, as for every variable of ours.
        let var = |name: &str| lookup(name).filter(|v| !v.is_empty());
        let mut problems = Vec::new();
        let file_pattern = var("NETINTERCEPT_FILE").unwrap_or_else(|| DEFAULT_FILE.into());
        let named_pcapng = file_pattern.as_bytes().ends_with(b".pcapng");
        let pcapng = match var("NETINTERCEPT_FORMAT") {
            None => named_pcapng,
            Some(v) if v == "pcapng" => true,
            Some(v) if v == "pcap" => false,
            Some(v) => {
                problems.push(Problem::BadFormat(format!(
                    "NETINTERCEPT_FORMAT={} is not pcap or pcapng",
                    quoted(v.as_bytes(), VALUE_CHARS)
                )));
                named_pcapng
            }
        };
        let filter = match lookup("NETINTERCEPT_FILTER") {
            None => None,
            Some(v) => match v.into_string() {
                Ok(text) => Some(text),
                Err(bytes) => {
                    problems.push(Problem::BadFilter(bad_filter_line(
                        bytes.as_bytes(),
                        &not_utf8(bytes.as_bytes()),
                    )));
                    None
                }
            },
        };
        if let Err(line) = follow(lookup("NETINTERCEPT_FOLLOW").as_deref()) {
            problems.push(Problem::Defaulted(line));
        }
        if let Some(v) = var("NETINTERCEPT_FLUSH_MS") {
            problems.push(Problem::Ignored(format!(
                "NETINTERCEPT_FLUSH_MS={} is ignored: packets reach the capture as the collector \
                 makes them, there is no flush interval to set",
                quoted(v.as_bytes(), VALUE_CHARS)
            )));
        }
        let events = var("NETINTERCEPT_EVENTS");
        let events_pcap = match var("NETINTERCEPT_EVENTS_PCAP") {
            None => false,
            Some(v) if v == "0" => false,
            Some(v) if v == "1" && events.is_some() => true,
            Some(v) if v == "1" => {
                problems.push(Problem::Ignored(
                    "NETINTERCEPT_EVENTS_PCAP=1 (-c) is ignored without NETINTERCEPT_EVENTS \
                     (--events DIR): the per-socket captures go beside the event traces"
                        .to_string(),
                ));
                false
            }
            Some(v) => {
                problems.push(Problem::Ignored(format!(
                    "NETINTERCEPT_EVENTS_PCAP={} is ignored: it is 1 (per-socket captures) or 0",
                    quoted(v.as_bytes(), VALUE_CHARS)
                )));
                false
            }
        };
        let mut count = |name: &str| -> u64 {
            let Some(v) = var(name) else { return 0 };
            match v.to_str().and_then(|t| t.parse::<u64>().ok()) {
                Some(n) => n,
                None => {
                    problems.push(Problem::Ignored(format!(
                        "{name}={} is not a whole number: ignored",
                        quoted(v.as_bytes(), VALUE_CHARS)
                    )));
                    0
                }
            }
        };
        let every_bytes = count("NETINTERCEPT_TCP_INFO_BYTES");
        let every_us = count("NETINTERCEPT_TCP_INFO_USEC");
        let (print, timestamps) = match var("NETINTERCEPT_TCP_EVENTS") {
            None => (false, false),
            Some(v) if v == "0" => (false, false),
            Some(v) if v == "1" => (true, false),
            Some(v) if v == "time" => (true, true),
            Some(v) => {
                problems.push(Problem::Ignored(format!(
                    "NETINTERCEPT_TCP_EVENTS={} is not 0, 1 or time: ignored",
                    quoted(v.as_bytes(), VALUE_CHARS)
                )));
                (false, false)
            }
        };
        Self {
            file_pattern,
            filter,
            pcapng,
            keylog: var("NETINTERCEPT_KEYLOG"),
            events,
            events_pcap,
            tcp: TcpSettings {
                every_bytes,
                every_us,
                print,
                timestamps,
            },
            problems,
        }
    }

    /// Whether a problem keeps the run from writing anything.
    pub fn bad_filter(&self) -> bool {
        self.problems
            .iter()
            .any(|p| matches!(p, Problem::BadFilter(_)))
    }
}

/// Whether fork children and executed programs are traced, from `NETINTERCEPT_FOLLOW`: unset,
/// empty, `1`, `yes` or `true` (any case) say yes, `0`, `no` or `false` no; anything else is the
/// line that says so, and the default (yes) holds. Read by the library at load (which says
/// nothing in the program) and by the collector (which says the line).
pub fn follow(value: Option<&std::ffi::OsStr>) -> Result<bool, String> {
    let Some(v) = value.filter(|v| !v.is_empty()) else {
        return Ok(true);
    };
    let text = v.to_str().map(str::to_ascii_lowercase);
    match text.as_deref() {
        Some("1" | "yes" | "true") => Ok(true),
        Some("0" | "no" | "false") => Ok(false),
        _ => Err(format!(
            "NETINTERCEPT_FOLLOW={} is not 0, no or false (child processes untraced) nor 1, yes \
             or true: child processes are traced",
            quoted(v.as_bytes(), VALUE_CHARS)
        )),
    }
}

/// The one line for a filter that cannot be used: the expression (its start, when long) and why.
pub fn bad_filter_line(expr: &[u8], why: &str) -> String {
    format!("bad filter {}: {why}", quoted(expr, VALUE_CHARS))
}

/// Why `bytes` are not text: where the first byte that is not UTF-8 is.
fn not_utf8(bytes: &[u8]) -> String {
    let at = std::str::from_utf8(bytes)
        .err()
        .map_or(0, |e| e.valid_up_to());
    format!(
        "not UTF-8 text (byte 0x{:02x} at offset {at})",
        bytes.get(at).copied().unwrap_or(0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    fn config(vars: &[(&str, &[u8])]) -> Config {
        let vars: Vec<(String, OsString)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from_vec(v.to_vec())))
            .collect();
        Config::from_lookup(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn follow_values() {
        let f = |v: &str| follow(Some(std::ffi::OsStr::new(v)));
        assert_eq!(follow(None), Ok(true));
        for yes in ["", "1", "yes", "true", "TRUE", "Yes"] {
            assert_eq!(f(yes), Ok(true), "{yes}");
        }
        for no in ["0", "no", "false", "NO", "False"] {
            assert_eq!(f(no), Ok(false), "{no}");
        }
        let c = config(&[("NETINTERCEPT_FOLLOW", b"maybe")]);
        assert_eq!(
            c.problems,
            [Problem::Defaulted(
                "NETINTERCEPT_FOLLOW='maybe' is not 0, no or false (child processes untraced) nor \
                 1, yes or true: child processes are traced"
                    .into()
            )]
        );
        assert!(config(&[("NETINTERCEPT_FOLLOW", b"no")])
            .problems
            .is_empty());
    }

    #[test]
    fn defaults() {
        let c = config(&[]);
        assert_eq!(c.file_pattern, DEFAULT_FILE);
        assert!(!c.pcapng && c.filter.is_none() && c.problems.is_empty());
    }

    #[test]
    fn file_names_are_bytes() {
        let c = config(&[("NETINTERCEPT_FILE", b"caf\xe9-%p.pcapng")]);
        assert_eq!(c.file_pattern.as_bytes(), b"caf\xe9-%p.pcapng");
        assert!(c.pcapng && c.problems.is_empty());
    }

    /// `-c`'s variable: 1 with an events folder; alone, or any other value, said and ignored.
    #[test]
    fn per_socket_pcaps_need_the_event_traces() {
        let c = config(&[
            ("NETINTERCEPT_EVENTS", b"ev"),
            ("NETINTERCEPT_EVENTS_PCAP", b"1"),
        ]);
        assert!(c.events_pcap && c.problems.is_empty());
        let c = config(&[
            ("NETINTERCEPT_EVENTS", b"ev"),
            ("NETINTERCEPT_EVENTS_PCAP", b"0"),
        ]);
        assert!(!c.events_pcap && c.problems.is_empty());
        let c = config(&[("NETINTERCEPT_EVENTS_PCAP", b"1")]);
        assert!(!c.events_pcap);
        assert!(c.problems[0].line().contains("without NETINTERCEPT_EVENTS"));
        let c = config(&[
            ("NETINTERCEPT_EVENTS", b"ev"),
            ("NETINTERCEPT_EVENTS_PCAP", b"yes"),
        ]);
        assert!(!c.events_pcap);
        assert_eq!(
            c.problems[0].line(),
            "NETINTERCEPT_EVENTS_PCAP='yes' is ignored: it is 1 (per-socket captures) or 0"
        );
    }

    #[test]
    fn a_filter_that_is_not_text_is_a_bad_filter() {
        let c = config(&[("NETINTERCEPT_FILTER", b"udp\xff")]);
        assert!(c.filter.is_none() && c.bad_filter());
        assert_eq!(
            c.problems[0].line(),
            r"bad filter 'udp\xff': not UTF-8 text (byte 0xff at offset 3)"
        );
        let c = config(&[("NETINTERCEPT_FILTER", b"udp")]);
        assert_eq!(c.filter.as_deref(), Some("udp"));
        assert!(!c.bad_filter());
    }

    #[test]
    fn formats_and_what_a_bad_one_falls_back_to() {
        let format = |name: &[u8], value: &[u8]| {
            let c = config(&[("NETINTERCEPT_FILE", name), ("NETINTERCEPT_FORMAT", value)]);
            (c.pcapng, c.problems)
        };
        assert_eq!(format(b"x.pcap", b"pcapng"), (true, vec![]));
        assert_eq!(format(b"x.pcapng", b"pcap"), (false, vec![]));
        assert_eq!(format(b"x.pcapng", b""), (true, vec![]));
        let (pcapng, problems) = format(b"x.pcapng", b"bogus");
        assert!(pcapng);
        assert_eq!(
            problems,
            [Problem::BadFormat(
                "NETINTERCEPT_FORMAT='bogus' is not pcap or pcapng".into()
            )]
        );
        let (pcapng, problems) = format(b"x.pcap", b"pcapng\xff");
        assert!(!pcapng);
        assert!(problems[0]
            .line()
            .starts_with(r"NETINTERCEPT_FORMAT='pcapng\xff' is not"));
    }

    #[test]
    fn key_log_name_is_bytes_and_empty_is_unset() {
        let c = config(&[("NETINTERCEPT_KEYLOG", b"keys-\xe9.log")]);
        assert_eq!(
            c.keylog.as_deref().map(|k| k.as_bytes()),
            Some(&b"keys-\xe9.log"[..])
        );
        assert!(c.problems.is_empty());
        assert!(config(&[("NETINTERCEPT_KEYLOG", b"")]).keylog.is_none());
        assert!(config(&[]).keylog.is_none());
    }

    #[test]
    fn tcp_internals_from_their_variables() {
        let c = config(&[
            ("NETINTERCEPT_TCP_INFO_BYTES", b"65536"),
            ("NETINTERCEPT_TCP_INFO_USEC", b"20000"),
            ("NETINTERCEPT_TCP_EVENTS", b"time"),
        ]);
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        assert_eq!(
            c.tcp,
            TcpSettings {
                every_bytes: 65536,
                every_us: 20000,
                print: true,
                timestamps: true,
            }
        );
        assert!(!config(&[]).tcp.any());
        let c = config(&[("NETINTERCEPT_TCP_EVENTS", b"1")]);
        assert!(c.tcp.print && !c.tcp.timestamps);
        let c = config(&[
            ("NETINTERCEPT_TCP_INFO_USEC", b"-5"),
            ("NETINTERCEPT_TCP_EVENTS", b"yes"),
        ]);
        assert!(!c.tcp.any());
        let lines: Vec<&str> = c.problems.iter().map(Problem::line).collect();
        assert_eq!(
            lines,
            [
                "NETINTERCEPT_TCP_INFO_USEC='-5' is not a whole number: ignored",
                "NETINTERCEPT_TCP_EVENTS='yes' is not 0, 1 or time: ignored"
            ]
        );
    }

    #[test]
    fn flush_interval_is_said_to_be_ignored() {
        for v in [&b"abc"[..], b"-1", b"0", b"99999999999999999999999"] {
            let c = config(&[("NETINTERCEPT_FLUSH_MS", v)]);
            assert_eq!(c.problems.len(), 1);
            assert!(
                matches!(&c.problems[0], Problem::Ignored(l) if l.starts_with("NETINTERCEPT_FLUSH_MS='"))
            );
        }
        assert!(config(&[("NETINTERCEPT_FLUSH_MS", b"")])
            .problems
            .is_empty());
    }
}
