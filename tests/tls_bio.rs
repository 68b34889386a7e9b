//! Issue 14: OpenSSL through BIOs, with certificates made by the test. Python's asyncio gives
//! its SSL objects two memory BIOs and moves the ciphertext between them and the socket itself
//! (clients and servers alike); `openssl s_server -WWW` reads and writes through an SSL BIO.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{self, pcap_reader::Direction, servers, TempDir};
use crate::tls::{make_site, s_server, BODY, LIMIT};

const REQUEST: &[u8] = b"GET /index.html HTTP/1.0\r\n\r\n";

/// An asyncio TLS client (asyncio.open_connection with ssl=…): sends REQUEST to 127.0.0.1 on
/// the port in argv[1], prints the whole answer.
const ASYNCIO_CLIENT: &str = r#"
import asyncio, ssl, sys
async def main(port):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    writer.write(b"GET /index.html HTTP/1.0\r\n\r\n")
    await writer.drain()
    answer = await reader.read()
    sys.stdout.buffer.write(answer)
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
asyncio.run(main(int(sys.argv[1])))
"#;

/// An asyncio TLS server (asyncio.start_server with ssl=…) on 127.0.0.1, port argv[1]: each
/// request's head goes to request.bin (a file, not captured) and is answered with index.html.
const ASYNCIO_SERVER: &str = r#"
import asyncio, ssl, sys
body = open("index.html", "rb").read()
answer = b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n" % len(body) + body
async def handle(reader, writer):
    head = await reader.readuntil(b"\r\n\r\n")
    with open("request.bin", "wb") as f:
        f.write(head)
    writer.write(answer)
    await writer.drain()
    writer.close()
    await writer.wait_closed()
async def main(port):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain("cert.pem", "key.pem")
    server = await asyncio.start_server(handle, "127.0.0.1", port, ssl=ctx)
    async with server:
        await server.serve_forever()
asyncio.run(main(int(sys.argv[1])))
"#;

/// The answer ASYNCIO_SERVER gives.
fn asyncio_answer() -> Vec<u8> {
    let head = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n",
        BODY.len()
    );
    [head.as_bytes(), BODY].concat()
}

/// Directions that carried something: the probe connection of `wait_tcp` carried nothing.
fn with_data(dirs: Vec<&Direction>) -> Vec<&Direction> {
    dirs.into_iter().filter(|d| !d.bytes.is_empty()).collect()
}

/// Whether `bytes` hold the start of a TLS record: a handshake (0x16) or application data
/// (0x17) content type followed by major version 3.
fn has_tls_record(bytes: &[u8]) -> bool {
    bytes
        .windows(2)
        .any(|w| (w[0] == 0x16 || w[0] == 0x17) && w[1] == 0x03)
}

/// The start of `bytes`, readable in a failure message.
fn show(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(80)];
    format!("{} bytes: {:?}", bytes.len(), String::from_utf8_lossy(head))
}

/// The capture is clean and holds one exchange with `port`: exactly `request` up and exactly
/// `answer` down, no TLS record anywhere, and tshark dissects the GET and the 200.
fn assert_exchange(cap: &Path, port: u16, request: &[u8], answer: &[u8]) {
    let ours = support::check_clean(cap);
    let up = with_data(ours.to_port(port));
    let down = with_data(ours.sent_from_port(port));
    assert_eq!((up.len(), down.len()), (1, 1), "{:?}", ours.tcp.keys());
    assert!(up[0].bytes == request, "request: {}", show(&up[0].bytes));
    assert!(down[0].bytes == answer, "answer: {}", show(&down[0].bytes));
    for d in ours.tcp.values() {
        assert!(!has_tls_record(&d.bytes), "a TLS record in plain mode");
    }
    let out = Command::new("tshark")
        .arg("-r")
        .arg(cap)
        .args(["-d", &format!("tcp.port=={port},http")])
        .args([
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

/// ASYNCIO_CLIENT traced with `NETINTERCEPT_TLS=tls_mode` against an untraced `openssl s_server
/// -WWW` in `dir`: its capture and the answer it printed (which holds the page).
fn asyncio_client(dir: &Path, name: &str, tls_mode: &str) -> (PathBuf, u16, Vec<u8>) {
    let port = support::free_port();
    let _srv = s_server(dir, "127.0.0.1", port);
    let cap = dir.join(name);
    let python = support::python_exe();
    let mut cmd = support::traced(
        dir,
        &cap,
        &python,
        &["-c", ASYNCIO_CLIENT, &port.to_string()],
    );
    cmd.env("NETINTERCEPT_TLS", tls_mode);
    let out = support::run_ok(&mut cmd, LIMIT);
    assert!(
        out.stdout.ends_with(BODY),
        "the client got the page: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cap, port, out.stdout)
}

/// The traced asyncio client's capture holds its request and the server's answer as plaintext,
/// byte for byte: the SSL object's write BIO gave the ClientHello the program then sent.
#[test]
fn asyncio_client_is_decrypted() {
    let dir = TempDir::new("asyncio-client");
    make_site(dir.path());
    let (cap, port, answer) = asyncio_client(dir.path(), "client.pcap", "plain");
    assert_exchange(&cap, port, REQUEST, &answer);
}

/// `NETINTERCEPT_TLS=raw` keeps the asyncio client's TLS records and no plaintext; `both` keeps
/// them on the connection's stream and puts the plaintext on the parallel stream.
#[test]
fn asyncio_client_raw_and_both_modes_keep_the_ciphertext() {
    let dir = TempDir::new("asyncio-modes");
    make_site(dir.path());
    let has_body = |d: &Direction| d.bytes.windows(BODY.len()).any(|w| w == BODY);

    let (cap, port, _) = asyncio_client(dir.path(), "raw.pcap", "raw");
    let raw = support::check_clean(&cap);
    let up = raw.to_port(port);
    assert_eq!(up.len(), 1, "{:?}", raw.tcp.keys());
    assert_eq!(&up[0].bytes[..2], &[0x16, 0x03], "the ClientHello record");
    assert!(!has_body(raw.sent_from_port(port)[0]));

    let (cap, port, answer) = asyncio_client(dir.path(), "both.pcap", "both");
    let both = support::check_clean(&cap);
    let ups: Vec<_> = both
        .tcp
        .iter()
        .filter(|((_, to), _)| to.port() == port)
        .collect();
    assert_eq!(ups.len(), 2, "{:?}", both.tcp.keys());
    let (wire, plain) = if ups[0].1.bytes == REQUEST {
        (ups[1], ups[0])
    } else {
        (ups[0], ups[1])
    };
    let ((wire_client, _), wire_up) = wire;
    let ((plain_client, _), plain_up) = plain;
    assert_eq!(plain_up.bytes, REQUEST);
    assert_eq!(plain_client.port(), wire_client.port() ^ 0x8000);
    assert_eq!(&wire_up.bytes[..2], &[0x16, 0x03], "the ClientHello record");
    let down = |client: &SocketAddr| &both.tcp[&(SocketAddr::new(client.ip(), port), *client)];
    assert_eq!(down(plain_client).bytes, answer, "the plaintext answer");
    assert!(!has_body(down(wire_client)));
}

/// A traced server run with `args` in `dir`, answering an untraced `curl -sSk -i` of
/// /index.html on 127.0.0.1:`port`: curl's output (the answer's head and body as received).
fn curl_traced_server(dir: &Path, cap: &Path, port: u16, program: &str, args: &[&str]) -> Vec<u8> {
    let mut cmd = support::traced(dir, cap, program, args);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _srv = servers::Server(cmd.spawn().expect("traced TLS server"));
    servers::wait_tcp("127.0.0.1", port);
    let url = format!("https://127.0.0.1:{port}/index.html");
    let out = support::run_ok(
        &mut support::untraced(dir, "curl", &["-sSk", "-i", "-A", "ni", &url]),
        LIMIT,
    );
    assert!(out.stdout.ends_with(BODY), "curl got the page");
    std::thread::sleep(Duration::from_millis(800)); // several flush intervals
    out.stdout
}

/// What `curl -sSk -i -A ni` sends for /index.html on 127.0.0.1:`port`.
fn curl_request(port: u16) -> Vec<u8> {
    format!(
        "GET /index.html HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: ni\r\nAccept: */*\r\n\r\n"
    )
    .into_bytes()
}

/// The traced asyncio server's capture holds curl's request and its answer as plaintext, byte
/// for byte: the ClientHello it received and then wrote into the SSL object's read BIO is
/// recognized, so not even the first record is written as data.
#[test]
fn asyncio_server_is_decrypted() {
    let dir = TempDir::new("asyncio-server");
    make_site(dir.path());
    let port = support::free_port();
    let cap = dir.join("server.pcap");
    let python = support::python_exe();
    let got = curl_traced_server(
        dir.path(),
        &cap,
        port,
        &python,
        &["-c", ASYNCIO_SERVER, &port.to_string()],
    );
    assert_eq!(got, asyncio_answer());
    let request = std::fs::read(dir.join("request.bin")).expect("the server saw the request");
    assert_eq!(request, curl_request(port));
    assert_exchange(&cap, port, &request, &got);
}

/// A traced `openssl s_server -WWW` reads the request and writes the page through an SSL BIO
/// (under a buffering BIO): its capture holds both as plaintext, byte for byte.
#[test]
fn openssl_s_server_www_is_decrypted() {
    let dir = TempDir::new("s-server-www");
    make_site(dir.path());
    let port = support::free_port();
    let cap = dir.join("s_server.pcap");
    let accept = format!("127.0.0.1:{port}");
    let got = curl_traced_server(
        dir.path(),
        &cap,
        port,
        "openssl",
        &[
            "s_server", "-accept", &accept, "-cert", "cert.pem", "-key", "key.pem", "-WWW",
        ],
    );
    assert!(got.starts_with(b"HTTP/1.0 200 ok\r\n"));
    assert_exchange(&cap, port, &curl_request(port), &got);
}

/// Compile `tests/programs/NAME.c` against libssl into `dir/NAME`.
fn build_openssl_program(dir: &Path, name: &str) -> PathBuf {
    support::build_c(dir, name, name, &["-O1"], &["-lssl", "-lcrypto"])
}

/// A client that only uses an SSL BIO chain (`tests/programs/ssl_bio_client.c`: the handshake
/// inside BIO_do_connect, the request by BIO_write_ex and BIO_puts, the answer by BIO_read_ex):
/// its capture holds the request, each byte once, and the answer, and no TLS record.
#[test]
fn ssl_bio_client_is_decrypted() {
    let dir = TempDir::new("ssl-bio-client");
    make_site(dir.path());
    let program = build_openssl_program(dir.path(), "ssl_bio_client");
    let port = support::free_port();
    let _srv = s_server(dir.path(), "127.0.0.1", port);
    let cap = dir.join("client.pcap");
    let out = support::run_ok(
        &mut support::traced(
            dir.path(),
            &cap,
            &program.to_string_lossy(),
            &[&port.to_string()],
        ),
        LIMIT,
    );
    assert!(out.stdout.ends_with(BODY), "the client got the page");
    assert_exchange(&cap, port, REQUEST, &out.stdout);
}
