//! Issue 2: TCP and UDP of real programs, both families, the CLI and its errors.

use std::time::Duration;

use crate::support::{self, servers, tshark, TempDir};

const LIMIT: Duration = Duration::from_secs(120);

fn curl_get(host: &str, url_host: &str) {
    let dir = TempDir::new("curl");
    let body: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.join("file.bin"), &body).expect("write served file");
    let port = support::free_port();
    let _server = servers::http_server(dir.path(), host, port);
    let cap = dir.join("curl.pcap");
    let url = format!("http://{url_host}:{port}/file.bin");
    support::run_ok(
        &mut support::traced(dir.path(), &cap, "curl", &["-sS", "-o", "got.bin", &url]),
        LIMIT,
    );
    assert_eq!(std::fs::read(dir.join("got.bin")).expect("download"), body);

    let ours = support::check_clean(&cap);
    let up = ours.to_port(port);
    let down = ours.sent_from_port(port);
    assert_eq!(
        (up.len(), down.len()),
        (1, 1),
        "one connection: {:?}",
        ours.tcp.keys()
    );
    assert!(up[0].syn && down[0].syn, "handshake both ways");
    assert!(up[0].bytes.starts_with(b"GET /file.bin HTTP/1.1\r\n"));
    assert!(down[0].bytes.starts_with(b"HTTP/1.0 200 OK\r\n"));
    assert!(
        down[0].bytes.ends_with(&body),
        "server stream ends with the file"
    );
    assert!(up[0].fin, "curl's close gives our FIN");

    let decode = format!("tcp.port=={port},http");
    let out = std::process::Command::new("tshark")
        .arg("-r")
        .arg(&cap)
        .args([
            "-d",
            &decode,
            "-Y",
            "http",
            "-T",
            "fields",
            "-e",
            "http.request.method",
            "-e",
            "http.response.code",
        ])
        .output()
        .expect("tshark");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l.trim() == "GET"),
        "tshark sees the GET: {text}"
    );
    assert!(
        text.lines().any(|l| l.trim() == "200"),
        "tshark sees the 200: {text}"
    );
}

#[test]
fn curl_http_over_ipv4() {
    curl_get("127.0.0.1", "127.0.0.1");
}

#[test]
fn curl_http_over_ipv6() {
    curl_get("::1", "[::1]");
}

#[test]
fn fifty_megabyte_download_has_exact_byte_count() {
    let dir = TempDir::new("big");
    let size = 50_000_000usize;
    let f = std::fs::File::create(dir.join("big.bin")).expect("create");
    f.set_len(size as u64).expect("size");
    let port = support::free_port();
    let _server = servers::http_server(dir.path(), "127.0.0.1", port);
    let cap = dir.join("big.pcap");
    let url = format!("http://127.0.0.1:{port}/big.bin");
    let out = support::run_with_timeout(
        &mut support::traced(
            dir.path(),
            &cap,
            "curl",
            &["-sS", "-o", "/dev/null", "-D", "headers.txt", &url],
        ),
        LIMIT,
    );
    assert!(out.status.success());
    let headers = std::fs::read(dir.join("headers.txt")).expect("headers");
    let ours = support::check_clean(&cap);
    let down = ours.sent_from_port(port);
    assert_eq!(down.len(), 1);
    assert_eq!(
        down[0].bytes.len(),
        headers.len() + size,
        "headers + body, exactly"
    );
    assert!(down[0].bytes.starts_with(&headers));
}

/// Large and small writes interleaved (the packet that fills the collector's 512 KiB buffer goes
/// to the file with `writev` from where it is, after the buffer; the others through the buffer),
/// patterned so any byte out of place shows: what the capture holds, to a file or through a pipe
/// to standard output, is exactly what was sent, in order, with valid checksums.
#[test]
fn large_and_small_writes_interleaved_are_captured_exactly() {
    const CLIENT: &str = r#"
import socket, sys
sizes = [100, 70000, 5, 200000, 16384, 16383, 3, 196609, 1, 600000, 7]
data = bytes((i * 7 + i // 251) % 256 for i in range(sum(sizes)))
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
pos = 0
for n in sizes:
    s.sendall(data[pos:pos + n])
    pos += n
s.close()
"#;
    let expected: Vec<u8> = (0..1_099_492usize)
        .map(|i| ((i * 7 + i / 251) % 256) as u8)
        .collect();
    let dir = TempDir::new("direct");
    let port = support::free_port();
    let _sink = servers::sink(port);
    for to_stdout in [false, true] {
        let cap = dir.join("direct.pcap");
        let _ = std::fs::remove_file(&cap);
        // Standard output goes through a pipe (a reader that takes it as it comes), where a
        // write may be cut short.
        let script = if to_stdout {
            r#""$0" -q -w - -- python3 -c "$1" "$2" | cat > direct.pcap"#
        } else {
            r#"exec "$0" -q -w direct.pcap -- python3 -c "$1" "$2""#
        };
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c")
            .arg(script)
            .arg(support::cli())
            .args([CLIENT, &port.to_string()])
            .current_dir(dir.path())
            .env_remove("LD_PRELOAD")
            .env_remove("NETINTERCEPT_FILE")
            .env_remove("NETINTERCEPT_FILTER");
        support::run_ok(&mut cmd, LIMIT);
        let ours = support::check_clean(&cap);
        let sent = ours.to_port(port);
        assert_eq!(sent.len(), 1, "one connection (stdout: {to_stdout})");
        assert!(
            sent[0].bytes == expected,
            "the bytes sent, exactly (stdout: {to_stdout}): {} of {}",
            sent[0].bytes.len(),
            expected.len()
        );
    }
}

pub const UDP_ECHO: &str = r#"
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
while True:
    data, peer = s.recvfrom(65535)
    s.sendto(b"echo:" + data, peer)
"#;

const UDP_CLIENT: &str = r#"
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.settimeout(10)
for msg in [b"one", b"two" * 100, b""]:
    s.sendto(msg, (sys.argv[1], int(sys.argv[2])))
    data, peer = s.recvfrom(65535)
    assert data == b"echo:" + msg
print(s.getsockname()[1])
"#;

pub fn wait_udp_bound(host: &str, port: u16) {
    for _ in 0..300 {
        if std::net::UdpSocket::bind((host, port)).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("UDP echo server never bound {host}:{port}");
}

fn udp_exchange(host: &str) {
    let dir = TempDir::new("udp");
    let port = support::free_port();
    let _echo = servers::python(UDP_ECHO, &[host, &port.to_string()]);
    wait_udp_bound(host, port);
    let cap = dir.join("udp.pcap");
    let out = support::run_ok(
        &mut support::traced(
            dir.path(),
            &cap,
            "python3",
            &["-c", UDP_CLIENT, host, &port.to_string()],
        ),
        LIMIT,
    );
    let client_port: u16 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("port");
    let ours = support::check_clean(&cap);
    let expected: Vec<(u16, u16, Vec<u8>)> = [b"one".to_vec(), b"two".repeat(100), Vec::new()]
        .into_iter()
        .flat_map(|m| {
            let mut echo = b"echo:".to_vec();
            echo.extend_from_slice(&m);
            [(client_port, port, m), (port, client_port, echo)]
        })
        .collect();
    let got: Vec<(u16, u16, Vec<u8>)> = ours
        .udp
        .iter()
        .map(|d| (d.src.port(), d.dst.port(), d.payload.clone()))
        .collect();
    assert_eq!(got, expected);
    let loopback: std::net::IpAddr = host.parse().expect("host");
    for d in &ours.udp {
        assert_eq!(
            (d.src.ip(), d.dst.ip()),
            (loopback, loopback),
            "real addresses, never 0.0.0.0"
        );
    }
}

#[test]
fn udp_exchange_over_ipv4() {
    udp_exchange("127.0.0.1");
}

#[test]
fn udp_exchange_over_ipv6() {
    udp_exchange("::1");
}

#[test]
fn refused_connect_fails_the_same_way_and_shows_syn_then_rst() {
    let dir = TempDir::new("refused");
    let port = support::free_port();
    let url = format!("http://127.0.0.1:{port}/");
    let cap = dir.join("refused.pcap");
    let plain = support::run_with_timeout(
        &mut support::untraced(dir.path(), "curl", &["-sS", &url]),
        LIMIT,
    );
    let traced = support::run_with_timeout(
        &mut support::traced(dir.path(), &cap, "curl", &["-sS", &url]),
        LIMIT,
    );
    assert_eq!(plain.status.code(), traced.status.code());
    let strip = |b: &[u8]| String::from_utf8_lossy(b).replace(|c: char| c.is_ascii_digit(), "");
    assert_eq!(
        strip(&plain.stderr),
        strip(&traced.stderr),
        "same error text"
    );
    let ours = support::check_clean(&cap);
    assert_eq!(ours.tcp_flags, ["S", "RA"], "SYN then RST/ACK");
}

#[test]
fn sha256sum_is_untouched_and_captures_nothing() {
    let dir = TempDir::new("sha");
    std::fs::write(dir.join("data"), b"netintercept".repeat(10_000)).expect("write");
    let cap = dir.join("none.pcap");
    let plain = support::run_with_timeout(
        &mut support::untraced(dir.path(), "sha256sum", &["data"]),
        LIMIT,
    );
    let traced = support::run_with_timeout(
        &mut support::traced(dir.path(), &cap, "sha256sum", &["data"]),
        LIMIT,
    );
    assert_eq!(plain.stdout, traced.stdout);
    assert!(traced.stderr.is_empty());
    assert!(
        !cap.exists(),
        "no capture file for a program without sockets"
    );
}

#[test]
fn capture_file_is_private_and_never_follows_a_symlink() {
    let dir = TempDir::new("perm");
    let port = support::free_port();
    let _server = servers::http_server(dir.path(), "127.0.0.1", port);
    let url = format!("http://127.0.0.1:{port}/");
    let cap = dir.join("c.pcap");
    let out = support::run_with_timeout(
        &mut support::traced(dir.path(), &cap, "curl", &["-s", "-o", "/dev/null", &url]),
        LIMIT,
    );
    assert!(out.status.success());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&cap)
            .expect("capture")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    let target = dir.join("victim");
    std::fs::write(&target, b"keep me").expect("victim");
    let link = dir.join("link.pcap");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let out = support::run_with_timeout(
        &mut support::traced(dir.path(), &link, "curl", &["-s", "-o", "/dev/null", &url]),
        LIMIT,
    );
    assert!(out.status.success());
    assert_eq!(std::fs::read(&target).expect("victim"), b"keep me");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.matches("netintercept: cannot write capture to '")
            .count(),
        1,
        "{err}"
    );
}

#[test]
fn unwritable_path_gives_one_clear_line_and_the_program_runs_on() {
    let dir = TempDir::new("unwritable");
    let port = support::free_port();
    std::fs::write(dir.join("page"), b"hello").expect("page");
    let _server = servers::http_server(dir.path(), "127.0.0.1", port);
    let url = format!("http://127.0.0.1:{port}/page");
    let cap = dir.join("no/such/dir/x.pcap");
    let out = support::run_with_timeout(
        &mut support::traced(dir.path(), &cap, "curl", &["-sS", &url]),
        LIMIT,
    );
    assert!(out.status.success());
    assert_eq!(out.stdout, b"hello");
    let err = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "netintercept: cannot write capture to '{}': No such file or directory\n",
        cap.display()
    );
    assert_eq!(err, expected);
}

#[test]
fn cli_passes_exit_status_and_signals_and_reports_the_file() {
    let dir = TempDir::new("cli");
    let status = |args: &[&str]| {
        let out = support::run_with_timeout(
            std::process::Command::new(support::cli())
                .args(args)
                .current_dir(dir.path()),
            LIMIT,
        );
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(status(&["sh", "-c", "exit 7"]).0, Some(7));
    assert_eq!(
        status(&["--", "sh", "-c", "kill -TERM $$"]).0,
        Some(128 + 15)
    );
    let port = support::free_port();
    let _server = servers::http_server(dir.path(), "127.0.0.1", port);
    let url = format!("http://127.0.0.1:{port}/");
    let (code, err) = status(&["-w", "cli.pcap", "curl", "-s", "-o", "/dev/null", &url]);
    assert_eq!(code, Some(0));
    assert!(
        err.contains("netintercept: capture written to 'cli.pcap'"),
        "{err}"
    );
    support::check_clean(&dir.join("cli.pcap"));
    tshark::fields(&dir.join("cli.pcap"), "tcp.flags.syn==1", &["frame.number"]);
}

#[test]
fn cli_help_names_every_option_variable_and_pattern() {
    let out = std::process::Command::new(support::cli())
        .arg("--help")
        .output()
        .expect("cli");
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "-w <FILE>",
        "-f <FILTER>",
        "--no-follow",
        "--keylog <FILE>",
        "NETINTERCEPT_KEYLOG",
        "NETINTERCEPT_FILE",
        "NETINTERCEPT_FILTER",
        "NETINTERCEPT_FOLLOW",
        "NETINTERCEPT_LIB",
        "%p",
        "%t",
        "%h",
        "%e",
        "%E",
        "%u",
        "%%",
    ] {
        assert!(text.contains(needle), "--help lacks {needle}");
    }
}

#[test]
fn cli_warns_about_statically_linked_programs() {
    let dir = TempDir::new("static");
    std::fs::write(dir.join("s.c"), b"int main(void){return 0;}\n").expect("source");
    let built = std::process::Command::new("gcc")
        .args(["-static", "-o", "s", "s.c"])
        .current_dir(dir.path())
        .status()
        .expect("gcc is installed");
    assert!(
        built.success(),
        "gcc -static needs libc6-dev (.ci/run installs it)"
    );
    let out = std::process::Command::new(support::cli())
        .args(["--backend", "preload", "./s"])
        .current_dir(dir.path())
        .output()
        .expect("cli");
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("statically linked"), "{err}");
}
