//! The independent reader: tshark, with checksum validation on.

use std::path::Path;
use std::process::Command;

/// What tshark found in a capture.
pub struct Report {
    pub packets: usize,
    pub bad_checksums: usize,
    pub analysis_flags: usize,
    pub malformed: usize,
    pub flagged: String,
}

const PREFS: [&str; 6] = [
    "-o",
    "tcp.check_checksum:TRUE",
    "-o",
    "udp.check_checksum:TRUE",
    "-o",
    "ip.check_checksum:TRUE",
];

/// Run tshark on `file` with a display filter and checksum validation; its stdout.
pub fn fields(file: &Path, filter: &str, fields: &[&str]) -> String {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r")
        .arg(file)
        .args(PREFS)
        .args(["-Y", filter, "-T", "fields"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd
        .output()
        .expect("tshark is installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "tshark failed on {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn count(file: &Path, filter: &str) -> usize {
    fields(file, filter, &["frame.number"]).lines().count()
}

/// Malformed packets. Test servers listen on random ports, and some of those are registered to
/// protocols whose dissectors call any payload malformed: ports above 1023 are decoded as plain
/// data (a well-known port at the other end still wins, tshark trying the lower port first).
fn malformed(file: &Path) -> usize {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(PREFS)
        .args([
            "-d",
            "tcp.port==1024-65535,data",
            "-d",
            "udp.port==1024-65535,data",
        ])
        .args(["-Y", "_ws.malformed", "-T", "fields", "-e", "frame.number"])
        .output()
        .expect("tshark is installed (.ci/run installs it)");
    assert!(out.status.success(), "tshark failed on {}", file.display());
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// Count packets, bad checksums, TCP analysis flags and malformed packets.
pub fn inspect(file: &Path) -> Report {
    Report {
        packets: count(file, "frame"),
        bad_checksums: count(
            file,
            "ip.checksum.status == 0 || tcp.checksum.status == 0 || udp.checksum.status == 0",
        ),
        analysis_flags: count(file, "tcp.analysis.flags && !tcp.analysis.window_update"),
        malformed: malformed(file),
        flagged: fields(
            file,
            "tcp.analysis.flags",
            &["frame.number", "_ws.expert.message"],
        ),
    }
}

#[test]
fn tshark_check_can_fail() {
    // A capture with a corrupted TCP checksum must be reported as bad.
    let dir = super::TempDir::new("tshark-fails");
    let mut stream = synth::TcpStream::new(
        "127.0.0.1:40000".parse().expect("addr"),
        "127.0.0.1:80".parse().expect("addr"),
        1,
        2,
    );
    let mut file = synth::pcap_header();
    let mut packets = Vec::new();
    stream.open(synth::Side::Local, &mut |p| packets.push(p.to_vec()));
    stream.data(synth::Side::Local, b"hello", &mut |p| {
        packets.push(p.to_vec())
    });
    let last = packets.last_mut().expect("a data packet");
    let n = last.len();
    last[n - 1] ^= 0xff; // payload changed, checksum not
    for p in &packets {
        synth::pcap_record(std::time::Duration::from_secs(1), p, &mut file);
    }
    let path = dir.join("bad.pcap");
    std::fs::write(&path, file).expect("write fixture");
    assert_eq!(inspect(&path).bad_checksums, 1);
}
