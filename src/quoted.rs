//! A user's value (a filter, a file name, a variable's value) as shown in a `netintercept:` line.
//!
//! The line must stay one line of text whatever the value holds, and must not repeat a 100 KB
//! expression: bytes that are not UTF-8 and control characters are escaped, and a long value is
//! cut after a number of characters and marked with `…`.

use std::fmt::Write;

/// How many characters of a filter expression or a variable's value a line shows.
pub const VALUE_CHARS: usize = 200;

/// How many characters of a file name a line shows: a whole path the kernel would take.
pub const PATH_CHARS: usize = libc::PATH_MAX as usize;

/// `value` in single quotes: invalid UTF-8 bytes as `\xff`, control characters as `\n` or
/// `\u{1b}`, and `…` after the first `max_chars` characters (an invalid byte counts as one).
pub fn quoted(value: &[u8], max_chars: usize) -> String {
    let mut out = String::with_capacity(value.len().min(max_chars * 4) + 8);
    out.push('\'');
    let mut shown = 0;
    for chunk in value.utf8_chunks() {
        for c in chunk.valid().chars() {
            if shown == max_chars {
                out.push_str("…'");
                return out;
            }
            shown += 1;
            if c.is_control() {
                out.extend(c.escape_debug());
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            if shown == max_chars {
                out.push_str("…'");
                return out;
            }
            shown += 1;
            // Writing into a String cannot fail.
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_shown_as_it_is() {
        assert_eq!(quoted(b"tcp port 80", 200), "'tcp port 80'");
        assert_eq!(quoted("café.pcap".as_bytes(), 200), "'café.pcap'");
        assert_eq!(quoted(b"", 200), "''");
    }

    #[test]
    fn bytes_and_controls_are_escaped() {
        assert_eq!(quoted(b"udp\xff", 200), r"'udp\xff'");
        assert_eq!(quoted(b"caf\xe9-%p.pcap", 200), r"'caf\xe9-%p.pcap'");
        assert_eq!(quoted(b"a\nb\tc\x1b", 200), r"'a\nb\tc\u{1b}'");
    }

    #[test]
    fn long_values_are_cut_on_a_character() {
        assert_eq!(quoted(b"abcdef", 3), "'abc…'");
        assert_eq!(quoted(b"abc", 3), "'abc'");
        assert_eq!(quoted("ééé".as_bytes(), 2), "'éé…'");
        assert_eq!(quoted(b"a\xff\xfeb", 2), r"'a\xff…'");
        let long = "port 1 or ".repeat(10_000);
        let line = quoted(long.as_bytes(), VALUE_CHARS);
        assert_eq!(line.chars().count(), VALUE_CHARS + 3);
    }
}
