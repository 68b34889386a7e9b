//! Issue 4: the library's filter keeps exactly what tcpdump keeps, and bad filters are harmless.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use netintercept_core::filter::Filter;
use pcap_file::pcap::PcapReader;

use crate::capture_basics::{wait_udp_bound, UDP_ECHO};
use crate::descriptors::ECHO;
use crate::support::{self, servers, TempDir};

const LIMIT: Duration = Duration::from_secs(120);

const WORKLOAD: &str = r#"
import socket, sys
tcp_port, udp_port = int(sys.argv[1]), int(sys.argv[2])
for host, fam in (("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.connect((host, tcp_port))
    req = b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n"
    s.sendall(req)
    got = b""
    while len(got) < len(req):
        got += s.recv(65536)
    big = b"B" * 3000
    s.sendall(big)
    got = b""
    while len(got) < len(big):
        got += s.recv(65536)
    s.close()
    u = socket.socket(fam, socket.SOCK_DGRAM)
    u.settimeout(10)
    for msg in (b"tiny", b"U" * 300):
        u.sendto(msg, (host, udp_port))
        u.recvfrom(65535)
    u.close()
"#;

/// Expressions with the syntax users know; PORT and UPORT are replaced by the workload's ports.
const EXPRESSIONS: &[&str] = &[
    "tcp",
    "udp",
    "ip",
    "ip6",
    "host 127.0.0.1",
    "host ::1",
    "port PORT",
    "src port PORT",
    "dst port PORT",
    "portrange 1-1024",
    "portrange PORT-PORT",
    "net 127.0.0.0/8",
    "not port PORT",
    "tcp[tcpflags] & (tcp-syn|tcp-fin) != 0",
    "tcp[tcpflags] & tcp-rst != 0",
    "greater 1000",
    "less 100",
    "ip proto 17",
    "udp and len > 100",
    "tcp[((tcp[12:1] & 0xf0) >> 2):4] = 0x47455420",
    "ip6 and tcp[((tcp[12:1] & 0xf0) >> 2):4] = 0x47455420",
    "icmp",
    "vlan",
    "(tcp and ip6) or (udp and ip)",
    "not (tcp or udp)",
    "udp port UPORT and not ip6",
    "tcp and (src port PORT or dst port PORT) and greater 500",
    "ip6 and udp and less 200",
    "tcp[13] = 2",
    // No link layer on raw IP: libpcap and tcpdump both reject link-layer primitives.
    "ether host 00:11:22:33:44:55",
];

/// Raw packets of a pcap file.
fn packets(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut reader = PcapReader::new(bytes).expect("a pcap");
    let mut out = Vec::new();
    while let Some(p) = reader.next_packet() {
        out.push(p.expect("a record").data.into_owned());
    }
    out
}

fn tcpdump(file: &Path, expr: &str) -> Result<Vec<Vec<u8>>, String> {
    let out = Command::new("tcpdump")
        .arg("-r")
        .arg(file)
        .args(["-w", "-", expr])
        .output()
        .expect("tcpdump is installed (.ci/run installs it)");
    if out.status.success() {
        Ok(packets(&out.stdout))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn run_workload(dir: &Path, cap: &Path, filter: Option<&str>) -> std::process::Output {
    let tcp_port = support::free_port();
    let udp_port = support::free_port();
    let _tcp = servers::python(ECHO, &["::", &tcp_port.to_string()]);
    servers::wait_tcp("127.0.0.1", tcp_port);
    let _udp4 = servers::python(UDP_ECHO, &["127.0.0.1", &udp_port.to_string()]);
    let _udp6 = servers::python(UDP_ECHO, &["::1", &udp_port.to_string()]);
    wait_udp_bound("127.0.0.1", udp_port);
    wait_udp_bound("::1", udp_port);
    let ports = [tcp_port.to_string(), udp_port.to_string()];
    let mut cmd = support::traced(dir, cap, "python3", &["-c", WORKLOAD, &ports[0], &ports[1]]);
    if let Some(f) = filter {
        cmd.env("NETINTERCEPT_FILTER", f);
    }
    let out = support::run_with_timeout(&mut cmd, LIMIT);
    std::fs::write(dir.join("ports"), format!("{tcp_port} {udp_port}")).expect("ports");
    out
}

fn ports(dir: &Path) -> (String, String) {
    let text = std::fs::read_to_string(dir.join("ports")).expect("ports");
    let mut it = text.split(' ').map(str::to_owned);
    (it.next().expect("tcp"), it.next().expect("udp"))
}

#[test]
fn library_filter_keeps_exactly_what_tcpdump_keeps() {
    let dir = TempDir::new("filter-diff");
    let cap = dir.join("all.pcap");
    let out = run_workload(dir.path(), &cap, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    support::check_clean(&cap);
    let (tcp_port, udp_port) = ports(dir.path());
    let all = packets(&std::fs::read(&cap).expect("capture"));
    assert!(all.len() > 20, "a real workload: {} packets", all.len());
    let mut nonempty = 0;
    for template in EXPRESSIONS {
        let expr = template
            .replace("UPORT", &udp_port)
            .replace("PORT", &tcp_port);
        match (Filter::compile(&expr), tcpdump(&cap, &expr)) {
            (Ok(f), Ok(expected)) => {
                let ours: Vec<Vec<u8>> = all.iter().filter(|p| f.matches(p)).cloned().collect();
                assert_eq!(ours, expected, "'{expr}' differs from tcpdump");
                if !expected.is_empty() && expected.len() < all.len() {
                    nonempty += 1;
                }
            }
            (Err(_), Err(_)) => {}
            (ours, theirs) => panic!(
                "'{expr}': library {:?}, tcpdump {:?}",
                ours.err(),
                theirs.err()
            ),
        }
    }
    assert!(
        nonempty >= 15,
        "most expressions select a proper subset ({nonempty})"
    );
}

#[test]
fn filtered_run_writes_only_matching_packets() {
    let dir = TempDir::new("filter-e2e");
    let cap = dir.join("all.pcap");
    assert!(run_workload(dir.path(), &cap, None).status.success());
    let unfiltered = packets(&std::fs::read(&cap).expect("capture"));
    let expr = "udp or (tcp and ip6)";
    let fcap = dir.join("filtered.pcap");
    let out = run_workload(dir.path(), &fcap, Some(expr));
    assert!(out.status.success());
    assert!(out.stderr.is_empty());
    let got = packets(&std::fs::read(&fcap).expect("filtered capture"));
    let f = Filter::compile(expr).expect("compiles");
    assert!(!got.is_empty() && got.len() < unfiltered.len());
    assert!(got.iter().all(|p| f.matches(p)), "only matching packets");
    let expected = unfiltered.iter().filter(|p| f.matches(p)).count();
    assert_eq!(got.len(), expected, "every matching packet");
    let report = support::tshark::inspect(&fcap);
    assert_eq!(report.bad_checksums, 0);
}

#[test]
fn bad_filters_give_one_line_no_capture_and_an_untouched_program() {
    let long = format!("port 1{}", " or port 1".repeat(1000));
    let dir = TempDir::new("filter-bad");
    let port = support::free_port();
    std::fs::write(dir.join("page"), b"hello").expect("page");
    let _server = servers::http_server(dir.path(), "127.0.0.1", port);
    let url = format!("http://127.0.0.1:{port}/page");
    for expr in ["tcp port banana", "((", "host", &format!("{long} and and")] {
        let cap = dir.join("bad.pcap");
        let mut cmd = support::traced(dir.path(), &cap, "curl", &["-sS", &url]);
        cmd.env("NETINTERCEPT_FILTER", expr);
        let out = support::run_with_timeout(&mut cmd, LIMIT);
        assert!(out.status.success());
        assert_eq!(out.stdout, b"hello");
        let err = String::from_utf8_lossy(&out.stderr);
        let head = format!("netintercept: bad filter '{expr}': ");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with(&head), "{err}");
        assert!(!cap.exists(), "no capture for a bad filter");

        let cli = Command::new(support::cli())
            .args(["-f", expr, "-w", "x.pcap", "true"])
            .current_dir(dir.path())
            .output()
            .expect("cli");
        assert_eq!(cli.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&cli.stderr).starts_with(&head));
    }
    // An empty filter matches everything, as tcpdump's does; a 10 KB valid one works.
    for expr in ["", long.as_str()] {
        let cap = dir.join("ok.pcap");
        let mut cmd = support::traced(dir.path(), &cap, "curl", &["-sS", &url]);
        cmd.env("NETINTERCEPT_FILTER", expr);
        let out = support::run_with_timeout(&mut cmd, LIMIT);
        assert!(out.status.success() && out.stderr.is_empty());
        if expr.is_empty() {
            assert!(support::check_clean(&cap).packets > 0);
        } else {
            assert!(!cap.exists(), "nothing on port 1");
        }
        let _ = std::fs::remove_file(&cap);
    }
}
