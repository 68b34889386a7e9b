//! The block the CLI prints at the end of a run: the files written, how many packets and
//! connections each holds, and what could not be captured. What the collector already said
//! during the run (why a file could not be written, at the moment it happened) is not said
//! again: the block says what it cost.

use std::os::unix::ffi::OsStrExt;

use crate::collector::contents::Contents;
use crate::collector::output::Report;
use crate::quoted::{quoted, PATH_CHARS};

/// Beyond this many files, the rest are summed up in one line.
const FILES_SHOWN: usize = 4;

/// The block's lines, without `netintercept: `. `plain_tls`: the run decrypts TLS (mode
/// `plain`), so TLS written as ciphertext is TLS that could not be decrypted.
pub fn lines(report: &Report, plain_tls: bool) -> Vec<String> {
    let mut out = Vec::new();
    let shown = if report.written.len() > FILES_SHOWN + 1 {
        FILES_SHOWN
    } else {
        report.written.len()
    };
    for w in &report.written[..shown] {
        let name = if w.path == "-" {
            "standard output".to_string()
        } else {
            quoted(w.path.as_bytes(), PATH_CHARS)
        };
        out.push(format!(
            "capture written to {name}: {}",
            counts(&w.contents)
        ));
    }
    let rest = &report.written[shown..];
    if !rest.is_empty() {
        let mut sum = Contents::default();
        for w in rest {
            sum.packets += w.contents.packets;
            sum.tcp += w.contents.tcp;
            sum.udp += w.contents.udp;
        }
        out.push(format!(
            "and {} more capture files: {}",
            rest.len(),
            counts(&sum)
        ));
    }
    if report.written.is_empty() && report.lost.is_empty() && !report.device {
        out.push("no packets captured, no capture file written".into());
    }
    let ciphertext: u64 = report
        .written
        .iter()
        .map(|w| w.contents.tls_ciphertext)
        .sum();
    if plain_tls && ciphertext > 0 {
        let place = match &report.written[..] {
            [one] if one.path != "-" => format!(" in {}", quoted(one.path.as_bytes(), PATH_CHARS)),
            _ => String::new(),
        };
        out.push(format!(
            "not decrypted: {}{place} {} ciphertext (its TLS library is not OpenSSL, NSS or \
             GnuTLS loaded as a shared library)",
            plural(ciphertext, "TLS connection"),
            if ciphertext == 1 { "is" } else { "are" },
        ));
    }
    // Each refused file was named with its reason when it happened: here only what it cost.
    if !report.lost.is_empty() {
        let packets = report.lost.iter().map(|(_, n)| n).sum();
        let files = match report.lost.len() {
            1 => "the capture file".to_string(),
            n => format!("{n} capture files"),
        };
        out.push(format!(
            "not captured: {}, as {files} could not be written (said above)",
            plural(packets, "packet")
        ));
    }
    out
}

/// "12 packets, 1 TCP connection, 2 UDP flows", leaving out what is none.
fn counts(c: &Contents) -> String {
    let mut parts = vec![plural(c.packets, "packet")];
    if c.tcp > 0 {
        parts.push(plural(c.tcp, "TCP connection"));
    }
    if c.udp > 0 {
        parts.push(plural(c.udp, "UDP flow"));
    }
    parts.join(", ")
}

fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::output::Written;

    fn written(path: &str, packets: u64, tcp: u64, udp: u64, tls: u64) -> Written {
        let mut contents = Contents::default();
        contents.packets = packets;
        contents.tcp = tcp;
        contents.udp = udp;
        contents.tls_ciphertext = tls;
        Written {
            path: path.into(),
            contents,
        }
    }

    #[test]
    fn one_line_per_file_with_what_it_holds() {
        let report = Report {
            written: vec![written("a.pcap", 12, 1, 2, 0), written("-", 1, 0, 1, 0)],
            ..Report::default()
        };
        assert_eq!(
            lines(&report, true),
            [
                "capture written to 'a.pcap': 12 packets, 1 TCP connection, 2 UDP flows",
                "capture written to standard output: 1 packet, 1 UDP flow",
            ]
        );
    }

    #[test]
    fn many_files_are_summed_up() {
        let report = Report {
            written: (0..7)
                .map(|i| written(&format!("c-{i}.pcap"), 3, 1, 0, 0))
                .collect(),
            ..Report::default()
        };
        let l = lines(&report, true);
        assert_eq!(l.len(), FILES_SHOWN + 1);
        assert_eq!(
            l[FILES_SHOWN],
            "and 3 more capture files: 9 packets, 3 TCP connections"
        );
        // Five files: all shown (a summing line would save nothing).
        let report = Report {
            written: (0..5)
                .map(|i| written(&format!("c-{i}.pcap"), 3, 1, 0, 0))
                .collect(),
            ..Report::default()
        };
        assert_eq!(lines(&report, true).len(), 5);
    }

    #[test]
    fn what_could_not_be_captured() {
        let report = Report {
            written: vec![written("a.pcap", 9, 2, 0, 1)],
            device: false,
            lost: vec![("/etc/x.pcap".into(), 4)],
            ..Report::default()
        };
        assert_eq!(
            lines(&report, true),
            [
                "capture written to 'a.pcap': 9 packets, 2 TCP connections",
                "not decrypted: 1 TLS connection in 'a.pcap' is ciphertext (its TLS library is \
                 not OpenSSL, NSS or GnuTLS loaded as a shared library)",
                "not captured: 4 packets, as the capture file could not be written (said above)",
            ]
        );
        // Ciphertext is what `raw` and `both` ask for: nothing to say.
        assert_eq!(lines(&report, false).len(), 2);
        // Files refused: their names and reasons were said when it happened, not again.
        let refused = Report {
            lost: vec![("a-1.pcap".into(), 1), ("a-2.pcap".into(), 2)],
            ..Report::default()
        };
        assert_eq!(
            lines(&refused, true),
            ["not captured: 3 packets, as 2 capture files could not be written (said above)"]
        );
    }

    #[test]
    fn nothing_written() {
        assert_eq!(
            lines(&Report::default(), true),
            ["no packets captured, no capture file written"]
        );
        // A device named as the capture is the user's choice: no word.
        let device = Report {
            device: true,
            ..Report::default()
        };
        assert!(lines(&device, true).is_empty());
    }
}
