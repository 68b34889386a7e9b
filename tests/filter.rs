//! Issue 4: the library's filter keeps exactly what tcpdump keeps, and bad filters are harmless.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use netintercept_pcapfilter::Filter;
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

/// What an expression selects from the workload's capture (tcpdump and the library alike).
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Some packets, not all.
    Some,
    /// Exactly this many packets.
    Count(usize),
    /// Compiles, keeps nothing.
    Nothing,
    /// libpcap refuses it for raw IP (tcpdump exits non-zero with the same message).
    Rejected(&'static str),
}

use Expect::{Count, Nothing, Rejected, Some as Subset};

/// Expressions with the syntax users know; PORT and UPORT are replaced by the workload's ports.
///
/// Findings on our link type (LINKTYPE_RAW, libpcap's DLT_RAW), libpcap 1.10:
/// - Link-layer primitives have no link layer to look at: `ether host`, `vlan`, `mpls` are
///   compile errors, in tcpdump as in the library.
/// - `tcp[…]`/`udp[…]` indexing finds the transport header through the IPv4 header length and is
///   ANDed with "is IPv4" by libpcap, so it never matches an IPv6 packet; `ip6 and tcp[…]` is
///   even a compile error ("expression rejects all packets", the optimizer's verdict). For IPv6
///   index from the fixed 40-byte header instead (`ip6[40 + …]`): our IPv6 packets carry no
///   extension headers.
const EXPRESSIONS: &[(&str, Expect)] = &[
    ("tcp", Subset),
    ("udp", Subset),
    ("ip", Subset),
    ("ip6", Subset),
    ("host 127.0.0.1", Subset),
    ("host ::1", Subset),
    ("port PORT", Subset),
    ("src port PORT", Subset),
    ("dst port PORT", Subset),
    ("portrange 1-1023", Nothing),
    ("portrange PORT-PORT", Subset),
    ("net 127.0.0.0/8", Subset),
    ("not port PORT", Subset),
    ("tcp[tcpflags] & (tcp-syn|tcp-fin) != 0", Subset),
    ("tcp[tcpflags] & tcp-rst != 0", Nothing),
    // A SYN alone: the IPv4 connection's first packet only (tcp[] is IPv4-only).
    ("tcp[13] = 2", Count(1)),
    ("greater 1000", Subset),
    ("less 100", Subset),
    ("ip proto 17", Subset),
    ("udp and len > 100", Subset),
    // The HTTP GET request line, IPv4 only: the request and its echo.
    ("tcp[((tcp[12:1] & 0xf0) >> 2):4] = 0x47455420", Count(2)),
    (
        "ip6 and tcp[((tcp[12:1] & 0xf0) >> 2):4] = 0x47455420",
        Rejected("expression rejects all packets"),
    ),
    // The IPv6 GET, indexed from the IPv6 header; the client's request and not the echo.
    (
        "ip6 and tcp and ip6[40 + ((ip6[52] & 0xf0) >> 2):4] = 0x47455420 and dst port PORT",
        Count(1),
    ),
    // The README's GET in either family: both requests and both echoes.
    (
        "tcp[((tcp[12:1] & 0xf0) >> 2):4] = 0x47455420 or \
         (ip6 and tcp and ip6[40 + ((ip6[52] & 0xf0) >> 2):4] = 0x47455420)",
        Count(4),
    ),
    // udp[] is IPv4-only too: the IPv4 "tiny" datagram (the reply starts "echo:").
    ("udp[8:4] = 0x74696e79", Count(1)),
    ("icmp", Nothing),
    ("vlan", Rejected("no VLAN support for Raw IP")),
    (
        "ether host 00:11:22:33:44:55",
        Rejected("ethernet addresses supported only on"),
    ),
    ("ether broadcast", Rejected("not a broadcast link")),
    ("mpls", Rejected("no MPLS support for Raw IP")),
    ("(tcp and ip6) or (udp and ip)", Subset),
    ("not (tcp or udp)", Nothing),
    ("udp port UPORT and not ip6", Subset),
    (
        "tcp and (src port PORT or dst port PORT) and greater 500",
        Subset,
    ),
    ("ip6 and udp and less 200", Subset),
    ("host ::1 and (udp or tcp[tcpflags] & tcp-syn != 0)", Subset),
    ("port banana", Rejected("unknown port")),
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
    for &(template, expect) in EXPRESSIONS {
        let expr = template
            .replace("UPORT", &udp_port)
            .replace("PORT", &tcp_port);
        match (Filter::compile(&expr), tcpdump(&cap, &expr)) {
            (Ok(f), Ok(expected)) => {
                let ours: Vec<Vec<u8>> = all.iter().filter(|p| f.matches(p)).cloned().collect();
                assert!(ours == expected, "'{expr}' differs from tcpdump");
                let n = expected.len();
                let as_expected = match expect {
                    Subset => n > 0 && n < all.len(),
                    Count(c) => n == c,
                    Nothing => n == 0,
                    Rejected(_) => false,
                };
                assert!(
                    as_expected,
                    "'{expr}': {n} of {} packets, {expect:?}",
                    all.len()
                );
            }
            (Err(ours), Err(theirs)) => match expect {
                Rejected(msg) => {
                    assert!(ours.contains(msg), "'{expr}': library says {ours}");
                    assert!(theirs.contains(msg), "'{expr}': tcpdump says {theirs}");
                }
                _ => panic!("'{expr}' rejected: {ours}"),
            },
            (ours, theirs) => panic!(
                "'{expr}': library {:?}, tcpdump {:?}",
                ours.err(),
                theirs.err()
            ),
        }
    }
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
    // tcpdump keeps every packet the library wrote, and selects as many from the unfiltered run
    // of the same workload (ports and sequence numbers differ between runs, the shape does not).
    let rechecked = tcpdump(&fcap, expr).expect("tcpdump reads the filtered capture");
    let expected = tcpdump(&cap, expr).expect("tcpdump reads the unfiltered capture");
    assert!(!got.is_empty() && got.len() < unfiltered.len());
    assert!(rechecked == got, "tcpdump keeps every written packet");
    assert_eq!(got.len(), expected.len(), "every matching packet");
    let lengths = |ps: &[Vec<u8>]| ps.iter().map(Vec::len).collect::<Vec<_>>();
    assert_eq!(lengths(&got), lengths(&expected));
    let report = support::tshark::inspect(&fcap);
    assert_eq!(report.packets, got.len());
    assert_eq!(report.bad_checksums, 0);
    assert_eq!(report.malformed, 0);
}

#[test]
fn bad_filters_give_one_line_no_capture_and_an_untouched_program() {
    let long = format!("port 1{}", " or port 1".repeat(1000));
    let dir = TempDir::new("filter-bad");
    let port = support::free_port();
    std::fs::write(dir.join("page"), b"hello").expect("page");
    let _server = servers::http_server(dir.path(), "127.0.0.1", port);
    let url = format!("http://127.0.0.1:{port}/page");
    let missing = format!("http://127.0.0.1:{port}/missing");
    let untraced = |url: &str| {
        support::run_with_timeout(
            &mut support::untraced(dir.path(), "curl", &["-sSf", url]),
            LIMIT,
        )
    };
    let (ok, not_found) = (untraced(&url), untraced(&missing));
    assert_eq!((ok.status.code(), &ok.stdout[..]), (Some(0), &b"hello"[..]));
    assert_eq!(not_found.status.code(), Some(22), "curl -f on a 404");
    let bad = [
        "tcp port banana",
        "((",
        "host",
        "ether host 00:11:22:33:44:55",
        "ip6 and tcp[13] = 2",
        &format!("{long} and and"),
    ];
    for expr in bad {
        // A long expression is shown by its first 200 characters.
        let shown: String = expr.chars().take(200).collect();
        let more = if shown.len() < expr.len() { "…" } else { "" };
        let head = format!("netintercept: bad filter '{shown}{more}': ");
        for (url, baseline) in [(&url, &ok), (&missing, &not_found)] {
            let cap = dir.join("bad.pcap");
            let mut cmd = support::traced(dir.path(), &cap, "curl", &["-sSf", url]);
            cmd.env("NETINTERCEPT_FILTER", expr);
            let out = support::run_with_timeout(&mut cmd, LIMIT);
            assert_eq!(out.status.code(), baseline.status.code(), "exit status");
            assert_eq!(out.stdout, baseline.stdout, "stdout");
            let err = String::from_utf8_lossy(&out.stderr);
            // curl writes to the same stderr at the same time, in pieces: our line (one write)
            // may start in the middle of one of curl's.
            let ours: Vec<&str> = err
                .match_indices("netintercept:")
                .map(|(i, _)| &err[i..])
                .collect();
            assert_eq!(ours.len(), 1, "one line, once: {err}");
            assert!(ours[0].starts_with(&head), "{err}");
            assert_eq!(err.matches("bad filter").count(), 1, "{err}");
            assert!(!cap.exists(), "no capture for a bad filter");
        }

        let cli = Command::new(support::cli())
            .args(["-f", expr, "-w", "x.pcap", "curl", "-sS", &url])
            .current_dir(dir.path())
            .output()
            .expect("cli");
        assert_eq!(cli.status.code(), Some(2));
        let cli_err = String::from_utf8_lossy(&cli.stderr);
        assert!(cli_err.starts_with(&head), "{cli_err}");
        assert_eq!(cli_err.lines().count(), 1, "{cli_err}");
        assert!(cli.stdout.is_empty(), "the program never ran");
        assert!(!dir.join("x.pcap").exists());
    }
    // An empty filter matches everything, as tcpdump's does; a 10 KB valid one works.
    for expr in ["", long.as_str()] {
        let cap = dir.join("ok.pcap");
        let mut cmd = support::traced(dir.path(), &cap, "curl", &["-sS", &url]);
        cmd.env("NETINTERCEPT_FILTER", expr);
        let out = support::run_with_timeout(&mut cmd, LIMIT);
        assert!(out.status.success() && out.stderr.is_empty());
        assert_eq!(out.stdout, b"hello");
        if expr.is_empty() {
            assert!(support::check_clean(&cap).packets > 0);
        } else {
            assert!(!cap.exists(), "nothing on port 1");
        }
        let _ = std::fs::remove_file(&cap);
    }
}

/// libpcap is mapped into a traced program only when it asked for a filter; without the filter
/// library beside the preload library, a filter is refused with one line and nothing is written.
#[test]
fn libpcap_is_loaded_only_for_a_filter() {
    let dir = TempDir::new("filter-lazy");
    let cap = dir.join("lazy.pcap");
    let maps = |filter: Option<&str>, lib: Option<&Path>| {
        let mut cmd = support::traced(dir.path(), &cap, "cat", &["/proc/self/maps"]);
        if let Some(f) = filter {
            cmd.env("NETINTERCEPT_FILTER", f);
        }
        if let Some(l) = lib {
            cmd.env("LD_PRELOAD", l);
        }
        let out = support::run_with_timeout(&mut cmd, LIMIT);
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (text, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (plain, err) = maps(None, None);
    assert!(
        plain.contains("libnetintercept.so") && err.is_empty(),
        "{err}"
    );
    assert!(
        !plain.contains("libpcap"),
        "libpcap mapped without a filter"
    );
    // The filter runs in the collector: libpcap never enters the traced program.
    let (filtered, err) = maps(Some("tcp"), None);
    assert!(
        filtered.contains("libnetintercept.so") && !filtered.contains("libpcap") && err.is_empty(),
        "{err}"
    );
    // The preload library alone in another directory: no collector, so nothing is recorded.
    let lone = dir.join("libnetintercept.so");
    std::fs::copy(support::library(), &lone).expect("copy the library");
    let (_, err) = maps(Some("tcp"), Some(&lone));
    let line = "netintercept: no collector: 'netintercept' is neither beside ";
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with(line), "{err}");
    assert!(
        !cap.exists(),
        "nothing written under a filter that could not be applied"
    );
}
