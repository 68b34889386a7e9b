//! The capture file's name: core(5)-style patterns expanded for one process.
//!
//! `%p` pid, `%t` start time (seconds since the epoch), `%h` host name, `%e` executable name,
//! `%E` executable path with `/` written as `!`, `%u` real uid, `%%` a percent sign. An unknown
//! `%x` is kept as it is, and a lone trailing `%` is dropped, as core(5) does.

/// What a pattern can refer to, gathered once per process.
#[derive(Clone, Debug, Default)]
pub struct ProcessInfo {
    pub pid: i32,
    pub start_secs: u64,
    pub host: String,
    pub exe_path: String,
    pub uid: u32,
}

impl ProcessInfo {
    /// The calling process's facts, read now.
    pub fn current(start_secs: u64) -> Self {
        let exe_path = std::fs::read_link("/proc/self/exe")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self {
            pid: crate::sys::getpid(),
            start_secs,
            host: hostname::get()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            exe_path,
            // SAFETY: getuid has no preconditions and cannot fail.
            uid: unsafe { libc::getuid() },
        }
    }

    fn exe_name(&self) -> &str {
        self.exe_path.rsplit('/').next().unwrap_or("")
    }
}

/// Whether `pattern` gives each process its own name (it contains `%p`).
pub fn is_per_process(pattern: &str) -> bool {
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next() {
                Some('p') => return true,
                Some(_) => {}
                None => break,
            }
        }
    }
    false
}

/// `pattern` with every `%` sequence replaced from `info`.
pub fn expand(pattern: &str, info: &ProcessInfo) -> String {
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('p') => out.push_str(&info.pid.to_string()),
            Some('t') => out.push_str(&info.start_secs.to_string()),
            Some('h') => out.push_str(&info.host),
            Some('e') => out.push_str(info.exe_name()),
            Some('E') => out.push_str(&info.exe_path.replace('/', "!")),
            Some('u') => out.push_str(&info.uid.to_string()),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> ProcessInfo {
        ProcessInfo {
            pid: 4242,
            start_secs: 1_700_000_000,
            host: "box".into(),
            exe_path: "/usr/bin/curl".into(),
            uid: 1000,
        }
    }

    #[test]
    fn expands_every_pattern() {
        assert_eq!(
            expand("%e-%p-%t-%h-%u-%E-100%%.pcap", &info()),
            "curl-4242-1700000000-box-1000-!usr!bin!curl-100%.pcap"
        );
    }

    #[test]
    fn keeps_unknown_and_drops_trailing_percent() {
        assert_eq!(expand("a%zb%", &info()), "a%zb");
        assert_eq!(expand("plain.pcap", &info()), "plain.pcap");
    }

    #[test]
    fn per_process_only_with_percent_p() {
        assert!(is_per_process("cap-%p.pcap"));
        assert!(!is_per_process("cap-%%p.pcap"));
        assert!(!is_per_process("cap.pcap"));
    }
}
