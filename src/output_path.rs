//! The capture file's name: core(5)-style patterns expanded for one process.
//!
//! `%p` pid, `%t` start time (seconds since the epoch), `%h` host name, `%e` executable name,
//! `%E` executable path with `/` written as `!`, `%u` real uid, `%%` a percent sign. An unknown
//! `%x` is kept as it is, and a lone trailing `%` is dropped, as core(5) does.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// What a pattern can refer to, gathered once per process. Names are bytes as the OS gave
/// them: a Latin-1 host or executable name is written as it is.
#[derive(Clone, Debug, Default)]
pub struct ProcessInfo {
    pub pid: i32,
    pub start_secs: u64,
    pub host: OsString,
    pub exe_path: OsString,
    pub uid: u32,
}

impl ProcessInfo {
    fn exe_name(&self) -> &[u8] {
        let path = self.exe_path.as_bytes();
        path.rsplit(|&b| b == b'/').next().unwrap_or(b"")
    }
}

/// Whether `pattern` gives each process its own name (it contains `%p`).
pub fn is_per_process(pattern: &OsStr) -> bool {
    let mut bytes = pattern.as_bytes().iter();
    while let Some(&b) = bytes.next() {
        if b == b'%' {
            match bytes.next() {
                Some(b'p') => return true,
                Some(_) => {}
                None => break,
            }
        }
    }
    false
}

/// `pattern` with every `%` sequence replaced from `info`; every other byte kept as it is.
pub fn expand(pattern: &OsStr, info: &ProcessInfo) -> OsString {
    let mut out = Vec::with_capacity(pattern.len() + 16);
    let mut bytes = pattern.as_bytes().iter();
    while let Some(&b) = bytes.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'p') => out.extend_from_slice(info.pid.to_string().as_bytes()),
            Some(b't') => out.extend_from_slice(info.start_secs.to_string().as_bytes()),
            Some(b'h') => out.extend_from_slice(info.host.as_bytes()),
            Some(b'e') => out.extend_from_slice(info.exe_name()),
            Some(b'E') => {
                out.extend(
                    info.exe_path
                        .as_bytes()
                        .iter()
                        .map(|&c| if c == b'/' { b'!' } else { c }),
                )
            }
            Some(b'u') => out.extend_from_slice(info.uid.to_string().as_bytes()),
            Some(b'%') => out.push(b'%'),
            Some(&other) => {
                out.push(b'%');
                out.push(other);
            }
            None => {}
        }
    }
    OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> OsString {
        OsString::from(s)
    }

    fn info() -> ProcessInfo {
        ProcessInfo {
            pid: 4242,
            start_secs: 1_700_000_000,
            host: os("box"),
            exe_path: os("/usr/bin/curl"),
            uid: 1000,
        }
    }

    #[test]
    fn expands_every_pattern() {
        assert_eq!(
            expand(&os("%e-%p-%t-%h-%u-%E-100%%.pcap"), &info()),
            "curl-4242-1700000000-box-1000-!usr!bin!curl-100%.pcap"
        );
    }

    #[test]
    fn keeps_unknown_and_drops_trailing_percent() {
        assert_eq!(expand(&os("a%zb%"), &info()), "a%zb");
        assert_eq!(expand(&os("plain.pcap"), &info()), "plain.pcap");
    }

    #[test]
    fn per_process_only_with_percent_p() {
        assert!(is_per_process(&os("cap-%p.pcap")));
        assert!(!is_per_process(&os("cap-%%p.pcap")));
        assert!(!is_per_process(&os("cap.pcap")));
    }

    /// Bytes that are not UTF-8 (a Latin-1 name) are kept exactly, in the pattern and in the
    /// names a pattern letter brings in.
    #[test]
    fn keeps_bytes_that_are_not_utf8() {
        let latin1 = |b: &[u8]| OsString::from_vec(b.to_vec());
        let mut i = info();
        i.exe_path = latin1(b"/opt/caf\xe9/t\xe9l\xe9");
        assert_eq!(
            expand(&latin1(b"caf\xe9-%p-%e-%E.pcap"), &i).as_bytes(),
            b"caf\xe9-4242-t\xe9l\xe9-!opt!caf\xe9!t\xe9l\xe9.pcap"
        );
        assert!(is_per_process(&latin1(b"\xe9%p")));
    }
}
