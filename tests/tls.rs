//! Issue 5: decrypted TLS through OpenSSL, with certificates made by the test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::{self, servers, TempDir};

pub(crate) const LIMIT: Duration = Duration::from_secs(120);
pub(crate) const BODY: &[u8] = b"<html>secret page body, decrypted by netintercept</html>\n";

/// A self-signed certificate and a page, in `dir`.
pub(crate) fn make_site(dir: &Path) {
    let st = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem",
        ])
        .args(["-out", "cert.pem", "-days", "1", "-subj", "/CN=localhost"])
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    std::fs::write(dir.join("index.html"), BODY).expect("page");
}

pub(crate) fn s_server(dir: &Path, host: &str, port: u16) -> servers::Server {
    let accept = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let child = Command::new("openssl")
        .args([
            "s_server", "-accept", &accept, "-cert", "cert.pem", "-key", "key.pem", "-WWW",
        ])
        .current_dir(dir)
        .env_remove("LD_PRELOAD")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let s = servers::Server(child);
    servers::wait_tcp(host, port);
    s
}

/// The capture is clean, holds one connection to `port` whose client stream is exactly a GET of
/// /index.html and whose server stream ends with the page: plaintext only, no TLS record.
pub(crate) fn assert_plaintext(cap: &Path, port: u16) {
    let ours = support::check_clean(cap);
    let up = ours.to_port(port);
    let down = ours.sent_from_port(port);
    assert_eq!((up.len(), down.len()), (1, 1), "{:?}", ours.tcp.keys());
    assert!(
        up[0].bytes.starts_with(b"GET /index.html HTTP/1."),
        "{:?}",
        String::from_utf8_lossy(&up[0].bytes)
    );
    assert!(
        up[0].bytes.ends_with(b"\r\n\r\n"),
        "the request and nothing else"
    );
    assert!(
        down[0].bytes.starts_with(b"HTTP/1.0 200 ok\r\n"),
        "{:?}",
        String::from_utf8_lossy(&down[0].bytes)
    );
    assert!(down[0].bytes.ends_with(BODY));
    // A TLS record starts 0x16 0x03 (handshake) or 0x17 0x03 (data): none anywhere.
    for d in up.iter().chain(down.iter()) {
        assert!(!d
            .bytes
            .windows(2)
            .any(|w| (w[0] == 0x16 || w[0] == 0x17) && w[1] == 0x03));
    }
    let decode = format!("tcp.port=={port},http");
    let out = Command::new("tshark")
        .arg("-r")
        .arg(cap)
        .args([
            "-d",
            &decode,
            "-Y",
            "http.request.method == \"GET\" || http.response.code == 200",
        ])
        .output()
        .expect("tshark");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        2,
        "tshark dissects GET and 200"
    );
}

/// A traced `curl -sSk` of /index.html from an `openssl s_server -WWW` on `host`, with
/// `NETINTERCEPT_TLS=tls_mode`: the test directory (the capture lives in it), the capture, the
/// server's port and curl's output (curl succeeded).
fn curl_from_s_server(tag: &str, host: &str, tls_mode: &str) -> (TempDir, PathBuf, u16, Output) {
    let dir = TempDir::new(tag);
    make_site(dir.path());
    let port = support::free_port();
    let _srv = s_server(dir.path(), host, port);
    let cap = dir.join("curl.pcap");
    let url_host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let url = format!("https://{url_host}:{port}/index.html");
    let mut cmd = support::traced(dir.path(), &cap, "curl", &["-sSk", &url]);
    cmd.env("NETINTERCEPT_TLS", tls_mode);
    let out = support::run_ok(&mut cmd, LIMIT);
    (dir, cap, port, out)
}

fn curl_https(host: &str) {
    let (_dir, cap, port, out) = curl_from_s_server("curl-tls", host, "plain");
    assert_eq!(out.stdout, BODY);
    assert_plaintext(&cap, port);
}

#[test]
fn curl_https_over_ipv4_is_decrypted() {
    curl_https("127.0.0.1");
}

#[test]
fn curl_https_over_ipv6_is_decrypted() {
    curl_https("::1");
}

#[test]
fn python_urllib_https_is_decrypted() {
    let dir = TempDir::new("py-tls");
    make_site(dir.path());
    let port = support::free_port();
    let _srv = s_server(dir.path(), "127.0.0.1", port);
    let cap = dir.join("py.pcap");
    let script = r#"
import ssl, sys, urllib.request
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1], context=ctx).read())
"#;
    let url = format!("https://127.0.0.1:{port}/index.html");
    let out = support::run_ok(
        &mut support::traced(dir.path(), &cap, "python3", &["-c", script, &url]),
        LIMIT,
    );
    assert_eq!(out.stdout, BODY);
    assert_plaintext(&cap, port);
}

#[test]
fn openssl_s_client_request_on_stdin_is_decrypted() {
    let dir = TempDir::new("sclient");
    make_site(dir.path());
    let port = support::free_port();
    let _srv = s_server(dir.path(), "127.0.0.1", port);
    let cap = dir.join("s_client.pcap");
    let shell = format!(
        "(printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n'; sleep 2) | openssl s_client -connect 127.0.0.1:{port} -quiet"
    );
    let out = support::run_with_timeout(
        &mut support::traced(dir.path(), &cap, "sh", &["-c", &shell]),
        LIMIT,
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("secret page body"));
    // sh, printf and sleep capture nothing; openssl writes the one file.
    assert_plaintext(&cap, port);
}

// The traced server is python3's ssl http.server (SSL_accept, SSL_read_ex, SSL_write_ex).
// `openssl s_server -WWW` would not do: it reads and writes through an SSL BIO, whose calls to
// SSL_read stay inside libssl where no preload can see them (see the README's limits).
pub(crate) const HTTPS_SERVER: &str = r#"
import http.server, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("cert.pem", "key.pem")
class H(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def log_message(self, *a):
        pass
srv = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"#;

#[test]
fn traced_server_side_shows_the_same_plaintext() {
    let dir = TempDir::new("server-tls");
    make_site(dir.path());
    let port = support::free_port();
    let cap = dir.join("server.pcap");
    let mut cmd = support::traced(
        dir.path(),
        &cap,
        "python3",
        &["-c", HTTPS_SERVER, &port.to_string()],
    );
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _srv = servers::Server(cmd.spawn().expect("traced https server"));
    servers::wait_tcp("127.0.0.1", port);
    let url = format!("https://127.0.0.1:{port}/index.html");
    let out = Command::new("curl")
        .args(["-sSk", &url])
        .env_remove("LD_PRELOAD")
        .output()
        .expect("curl");
    assert_eq!(out.stdout, BODY);
    std::thread::sleep(Duration::from_millis(800)); // several flush intervals
                                                    // The probe connection of wait_tcp is in the capture too: keep the one that carried data.
    let ours = support::check_clean(&cap);
    let ups: Vec<_> = ours
        .to_port(port)
        .into_iter()
        .filter(|d| !d.bytes.is_empty())
        .collect();
    assert_eq!(ups.len(), 1);
    assert!(
        ups[0].bytes.starts_with(b"GET /index.html HTTP/1.1\r\n"),
        "{:?}",
        String::from_utf8_lossy(&ups[0].bytes)
    );
    let downs: Vec<_> = ours
        .sent_from_port(port)
        .into_iter()
        .filter(|d| !d.bytes.is_empty())
        .collect();
    assert!(
        downs[0].bytes.starts_with(b"HTTP/1.0 200 OK\r\n"),
        "{:?}",
        String::from_utf8_lossy(&downs[0].bytes)
    );
    assert!(downs[0].bytes.ends_with(BODY));
}

#[test]
fn raw_mode_keeps_the_ciphertext() {
    let (_dir, cap, port, _) = curl_from_s_server("raw-tls", "127.0.0.1", "raw");
    let ours = support::check_clean(&cap);
    let up = ours.to_port(port);
    assert_eq!(
        &up[0].bytes[..2],
        &[0x16, 0x03],
        "starts with the ClientHello record"
    );
    assert!(!ours.sent_from_port(port)[0]
        .bytes
        .windows(BODY.len())
        .any(|w| w == BODY));
}

/// `NETINTERCEPT_TLS=both`: the wire's TLS records on the connection's own stream, the plaintext
/// on a parallel stream from the client's port XOR 0x8000 to the same server port.
#[test]
fn both_mode_puts_the_plaintext_beside_the_ciphertext() {
    let (_dir, cap, port, out) = curl_from_s_server("both-tls", "::1", "both");
    assert_eq!(out.stdout, BODY);
    let ours = support::check_clean(&cap);
    let ups: Vec<_> = ours
        .tcp
        .iter()
        .filter(|((_, to), _)| to.port() == port)
        .collect();
    assert_eq!(ups.len(), 2, "{:?}", ours.tcp.keys());
    let (wire, plain) = if ups[0].1.bytes.starts_with(b"GET ") {
        (ups[1], ups[0])
    } else {
        (ups[0], ups[1])
    };
    let ((wire_client, _), wire_up) = wire;
    let ((plain_client, _), plain_up) = plain;
    assert_eq!(plain_client.ip(), wire_client.ip());
    assert_eq!(plain_client.port(), wire_client.port() ^ 0x8000);
    assert_eq!(&wire_up.bytes[..2], &[0x16, 0x03], "the ClientHello record");
    assert!(plain_up.bytes.starts_with(b"GET /index.html HTTP/1.1\r\n"));
    assert!(plain_up.syn && wire_up.syn && plain_up.fin && wire_up.fin);
    let down = |client: &SocketAddr| &ours.tcp[&(SocketAddr::new(client.ip(), port), *client)];
    assert!(down(plain_client).bytes.ends_with(BODY), "plaintext answer");
    assert!(!down(wire_client)
        .bytes
        .windows(BODY.len())
        .any(|w| w == BODY));
    // Wireshark dissects each stream as what it is, with no hint.
    let hello = support::tshark::fields(&cap, "tls.handshake.type == 1", &["tcp.srcport"]);
    let get = support::tshark::fields(&cap, "http.request.method == \"GET\"", &["tcp.srcport"]);
    assert_eq!(hello.trim(), wire_client.port().to_string());
    assert_eq!(get.trim(), plain_client.port().to_string());
}

#[test]
fn nss_tstclnt_is_decrypted() {
    let dir = TempDir::new("nss");
    make_site(dir.path());
    std::fs::create_dir(dir.join("db")).expect("db dir");
    let st = Command::new("certutil")
        .args(["-N", "-d", "sql:db", "--empty-password"])
        .current_dir(dir.path())
        .status()
        .expect("certutil (libnss3-tools) is installed");
    assert!(st.success());
    let port = support::free_port();
    let _srv = s_server(dir.path(), "127.0.0.1", port);
    let cap = dir.join("nss.pcap");
    std::fs::write(dir.join("req"), b"GET /index.html HTTP/1.0\r\n\r\n").expect("request");
    let shell = format!("tstclnt -h 127.0.0.1 -p {port} -d sql:db -o < req");
    let out = support::run_with_timeout(
        &mut support::traced(dir.path(), &cap, "sh", &["-c", &shell]),
        LIMIT,
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("secret page body"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_plaintext(&cap, port);
}

#[test]
fn pcapng_comments_name_the_process_and_the_call() {
    let dir = TempDir::new("pcapng");
    make_site(dir.path());
    let port = support::free_port();
    let _srv = s_server(dir.path(), "127.0.0.1", port);
    let cap = dir.join("curl.pcapng");
    let shell = format!("echo $$; exec curl -sSk -o /dev/null https://127.0.0.1:{port}/index.html");
    let out = support::run_with_timeout(
        &mut support::traced(dir.path(), &cap, "sh", &["-c", &shell]),
        LIMIT,
    );
    assert!(out.status.success());
    let pid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let report = support::tshark::inspect(&cap);
    assert_eq!(
        (
            report.bad_checksums,
            report.analysis_flags,
            report.malformed
        ),
        (0, 0, 0)
    );
    let writes = support::tshark::fields(
        &cap,
        "frame.comment contains \"SSL_write\"",
        &["frame.comment"],
    );
    assert!(
        !writes.is_empty(),
        "the plaintext request is marked SSL_write"
    );
    for line in writes.lines() {
        assert!(line.starts_with(&format!("pid={pid} ")), "{line}");
        assert!(
            line.contains("exe=curl") && line.contains("tls=OpenSSL"),
            "{line}"
        );
    }
    let info = Command::new("capinfos")
        .arg(&cap)
        .output()
        .expect("capinfos (tshark)");
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.contains("netintercept "),
        "the section names the application: {info}"
    );
    assert!(info.contains("nanoseconds"), "{info}");
}

/// A CA, a leaf for 127.0.0.1 signed by it, and a fresh Firefox profile that trusts the CA.
pub(crate) fn firefox_profile(dir: &Path, socket_process: bool) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/firefox");
    let config = std::fs::read_to_string("/etc/ssl/openssl.cnf").unwrap_or_default()
        + &std::fs::read_to_string(fixtures.join("ca.cnf")).expect("ca.cnf");
    std::fs::write(dir.join("openssl.cnf"), config).expect("openssl.cnf");
    for args in [
        "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=netintercept-test-ca -extensions v3_ca -config openssl.cnf",
        "req -newkey rsa:2048 -nodes -keyout key.pem -out leaf.csr -subj /CN=127.0.0.1",
        "x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem -days 2 -extfile openssl.cnf -extensions leaf",
    ] {
        let st = Command::new("openssl").args(args.split(' ')).current_dir(dir).output().expect("openssl");
        assert!(st.status.success(), "openssl {args}: {}", String::from_utf8_lossy(&st.stderr));
    }
    std::fs::create_dir(dir.join("profile")).expect("profile");
    for args in [
        "-N -d sql:profile --empty-password",
        "-A -n testca -t C,, -i ca.pem -d sql:profile",
    ] {
        let st = Command::new("certutil")
            .args(args.split(' '))
            .current_dir(dir)
            .status()
            .expect("certutil");
        assert!(st.success(), "certutil {args}");
    }
    let mut prefs = std::fs::read_to_string(fixtures.join("user.js")).expect("user.js");
    prefs += &format!("user_pref(\"network.process.enabled\", {socket_process});\n");
    std::fs::write(dir.join("profile/user.js"), prefs).expect("user.js");
    std::fs::write(dir.join("index.html"), BODY).expect("page");
}

fn firefox_shows_plaintext(socket_process: bool) {
    let dir = TempDir::new("firefox");
    firefox_profile(dir.path(), socket_process);
    let port = support::free_port();
    let _srv = s_server(dir.path(), "127.0.0.1", port);
    let cap = dir.join("ff-%p.pcap");
    let profile = dir.join("profile");
    let url = format!("https://127.0.0.1:{port}/index.html");
    let shot = dir.join("shot.png");
    let mut cmd = support::traced(
        dir.path(),
        &cap,
        "firefox-esr",
        &[
            "--headless",
            "--no-remote",
            "--profile",
            &profile.to_string_lossy(),
            "--screenshot",
            &shot.to_string_lossy(),
            &url,
        ],
    );
    cmd.env("MOZ_CRASHREPORTER_DISABLE", "1")
        .env("HOME", dir.path());
    let out = support::run_ok(&mut cmd, LIMIT);
    assert!(
        shot.is_file(),
        "firefox rendered the page: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut found = false;
    for e in std::fs::read_dir(dir.path()).expect("dir") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "pcap") {
            let ours = support::check_clean(&p);
            for ((_, to), up) in &ours.tcp {
                if to.port() == port && up.bytes.starts_with(b"GET /index.html HTTP/1.1\r\n") {
                    assert!(String::from_utf8_lossy(&up.bytes).contains("Firefox/"));
                    found = true;
                }
            }
            for ((from, _), d) in &ours.tcp {
                if from.port() == port && !d.bytes.is_empty() {
                    assert!(d.bytes.ends_with(BODY), "the page's bytes, decrypted");
                }
                for w in d.bytes.windows(3) {
                    assert!(
                        !(w[0] == 0x16 && w[1] == 0x03 && w[2] <= 0x04),
                        "no TLS handshake record"
                    );
                }
            }
            for (_, to) in ours.tcp.keys() {
                assert!(to.ip().is_loopback(), "loopback only: {to}");
            }
        }
    }
    assert!(found, "Firefox's plaintext GET is in a capture");
}

#[test]
fn firefox_default_process_model_is_decrypted() {
    firefox_shows_plaintext(true);
}

#[test]
fn firefox_without_socket_process_is_decrypted() {
    firefox_shows_plaintext(false);
}

/// An HTTP/2-only TLS server (node's http2 module, untraced) answering every stream with BODY.
const H2_SERVER: &str = r#"
const fs = require('fs'), http2 = require('http2');
const [host, port, body] = process.argv.slice(-3);
const srv = http2.createSecureServer({
  key: fs.readFileSync('key.pem'), cert: fs.readFileSync('cert.pem'), allowHTTP1: false,
});
srv.on('stream', (s) => { s.respond({':status': 200, 'content-type': 'text/html'}); s.end(body); });
srv.listen(Number(port), host);
"#;

#[test]
fn curl_http2_shows_headers_and_data_frames() {
    let dir = TempDir::new("curl-h2");
    make_site(dir.path());
    let port = support::free_port();
    let child = Command::new("node")
        .args(["-e", H2_SERVER, "127.0.0.1", &port.to_string()])
        .arg(std::str::from_utf8(BODY).expect("ascii"))
        .current_dir(dir.path())
        .env_remove("LD_PRELOAD")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("node is installed");
    let _srv = servers::Server(child);
    servers::wait_tcp("127.0.0.1", port);
    let cap = dir.join("h2.pcap");
    let url = format!("https://127.0.0.1:{port}/index.html");
    let out = support::run_ok(
        &mut support::traced(dir.path(), &cap, "curl", &["-sSk", "--http2", &url]),
        LIMIT,
    );
    assert_eq!(out.stdout, BODY);
    let ours = support::check_clean(&cap);
    let up = ours.to_port(port);
    let down = ours.sent_from_port(port);
    assert_eq!((up.len(), down.len()), (1, 1), "{:?}", ours.tcp.keys());
    assert!(
        up[0].bytes.starts_with(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        "the HTTP/2 connection preface in plaintext"
    );
    let body_hex: String = BODY.iter().map(|b| format!("{b:02x}")).collect();
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&cap)
        .args(["-d", &format!("tcp.port=={port},http2"), "-Y", "http2"])
        .args(["-T", "fields", "-e", "tcp.dstport", "-e", "http2.type"])
        .args(["-e", "http2.header.name", "-e", "http2.data.data"])
        .output()
        .expect("tshark");
    let frames = String::from_utf8_lossy(&out.stdout);
    // Per packet: destination port, frame types (1 HEADERS, 0 DATA), header names, DATA bytes.
    let rows: Vec<Vec<&str>> = frames.lines().map(|l| l.split('\t').collect()).collect();
    let has = |row: &[&str], ty: &str| row[1].split(',').any(|t| t == ty);
    let request = rows
        .iter()
        .any(|r| r[0] == port.to_string() && has(r, "1") && r[2].contains(":method"));
    let response = rows
        .iter()
        .any(|r| r[0] != port.to_string() && has(r, "1") && r[2].contains(":status"));
    let data = rows
        .iter()
        .any(|r| r[0] != port.to_string() && has(r, "0") && r[3] == body_hex);
    assert!(
        request && response && data,
        "HTTP2 HEADERS both ways and DATA:\n{frames}"
    );
    assert!(down[0].bytes.windows(BODY.len()).any(|w| w == BODY));
}
