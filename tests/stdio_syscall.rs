//! Issue 12: bytes that move through calls no socket hook saw.
//!
//! A. stdio on sockets (`fdopen`, a socket on stdin/stdout): glibc writes and reads with its
//!    internal calls, so before the stdio hooks a capture held the handshake and the FINs and no
//!    payload. Our C client (`tests/programs/stdio_socket.c`, plain and fortified) and a real
//!    stdio program (`busybox wget`, which sends with `__fprintf_chk` and `fputs` and reads with
//!    `fgets_unlocked` and `fread`) must give their exact bytes both ways.
//! B. network system calls made through libc's `syscall()`: our C program
//!    (`tests/programs/syscall_io.c`) and a real libuv program (`dig`, whose Debian libuv 1.44
//!    sends datagrams with `syscall(SYS_sendmmsg, …)` and closes with `syscall(SYS_close, …)`).
//!
//! Each capture is checked by tshark and by our own reader (`check_clean`), and its payload byte
//! for byte against what the peer really received and sent.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::{self, servers, tshark, TempDir};

/// Long enough for a correct run on a loaded 2-core machine.
const LIMIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Helpers

/// Compile `tests/programs/NAME.c` into `dir/OUT` with `flags`.
fn build(dir: &TempDir, name: &str, out: &str, flags: &[&str]) -> PathBuf {
    support::build_c(dir.path(), name, out, flags, &[])
}

/// `netintercept -w CAP -- PROGRAM ARGS...` run in `dir`.
fn cli_run(dir: &Path, cap: &Path, program: impl AsRef<OsStr>, args: &[&str]) -> Command {
    let mut cmd = Command::new(support::cli());
    cmd.arg("-w")
        .arg(cap)
        .arg("--")
        .arg(program)
        .args(args)
        .current_dir(dir)
        .env_remove("LD_PRELOAD")
        .env_remove("NETINTERCEPT_FILE")
        .env_remove("NETINTERCEPT_FILTER");
    cmd
}

/// Payload bytes of every packet tshark shows for `filter`, in capture order.
fn tshark_payload(cap: &Path, filter: &str, field: &str) -> Vec<u8> {
    let hex: String = tshark::fields(cap, filter, &[field])
        .lines()
        .flat_map(|l| l.split(','))
        .collect::<Vec<_>>()
        .concat()
        .replace(':', "");
    decode_hex(&hex)
}

fn decode_hex(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex from tshark"))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The one TCP conversation with server port `port`: (client to server, server to client). Both
/// directions have their SYN and no RST; the client's has its FIN (its close, or its fclose), the
/// server's has one when `server_fin` (the client read to the end of the stream: its recv of 0,
/// or its stdio call meeting end of file).
fn tcp_both_ways(
    cap: &support::pcap_reader::Capture,
    port: u16,
    server_fin: bool,
) -> (Vec<u8>, Vec<u8>) {
    let up = cap.to_port(port);
    let down = cap.sent_from_port(port);
    assert_eq!(
        (up.len(), down.len()),
        (1, 1),
        "one connection to port {port}"
    );
    let (up, down) = (up[0], down[0]);
    assert!(
        up.syn && up.fin && !up.rst,
        "client: SYN {}, FIN {}, RST {}",
        up.syn,
        up.fin,
        up.rst
    );
    assert!(
        down.syn && down.fin == server_fin && !down.rst,
        "server: SYN {}, FIN {} (expected {server_fin}), RST {}",
        down.syn,
        down.fin,
        down.rst
    );
    (up.bytes.clone(), down.bytes.clone())
}

/// Check a TCP capture both ways, with our reader and with tshark, against the bytes the
/// client sent (`up`) and received (`down`).
fn check_tcp(cap: &Path, port: u16, up: &[u8], down: &[u8], server_fin: bool) {
    let ours = support::check_clean(cap);
    let (got_up, got_down) = tcp_both_ways(&ours, port, server_fin);
    assert!(
        got_up == up,
        "client to server: capture has {} bytes {:?}…, the server received {} bytes {:?}…",
        got_up.len(),
        String::from_utf8_lossy(&got_up[..got_up.len().min(80)]),
        up.len(),
        String::from_utf8_lossy(&up[..up.len().min(80)])
    );
    assert!(
        got_down == down,
        "server to client: capture has {} bytes, the client received {}",
        got_down.len(),
        down.len()
    );
    let t_up = tshark_payload(cap, &format!("tcp.dstport == {port}"), "tcp.payload");
    let t_down = tshark_payload(cap, &format!("tcp.srcport == {port}"), "tcp.payload");
    assert!(t_up == up, "tshark: client to server differs");
    assert!(t_down == down, "tshark: server to client differs");
}

// ---------------------------------------------------------------------------------------------
// A. stdio

/// One TCP connection on `port`: read until the client's last bytes end with `until`, keep them
/// in `got`, answer `reply` (hex) and close. Connections that end before (a readiness probe) are
/// skipped.
const RECORDING_SERVER: &str = r#"
import socket, sys
port, got_path, until, reply = int(sys.argv[1]), sys.argv[2], bytes.fromhex(sys.argv[3]), bytes.fromhex(sys.argv[4])
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", port))
l.listen(4)
while True:
    c, _ = l.accept()
    got = b""
    while not got.endswith(until):
        d = c.recv(65536)
        if not d:
            break
        got += d
    if not got.endswith(until):
        c.close()
        continue
    open(got_path, "wb").write(got)
    c.sendall(reply)
    c.close()
    break
"#;

/// What `stdio_socket` sends, in either mode.
fn stdio_request() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(b"HELLO 42 stdio\r\n");
    v.extend_from_slice(b"fputs line\n");
    v.extend_from_slice(b"fwrite\0\x01\x02");
    v.extend_from_slice(b"AB");
    v.extend_from_slice(b"1 2 3 4 5 6 7 8 0.500 1.25\n");
    v.extend_from_slice(b"v:x:002.5\n");
    v.extend_from_slice(b"7:");
    v.extend_from_slice(&[b'z'; 3000]);
    v.extend_from_slice(b"\n");
    v.extend_from_slice(b"dprintf 9\n");
    v.extend_from_slice(b"END\n");
    v
}

/// What the server answers `stdio_socket`: lines for fgets and getline, a field for getdelim, two
/// bytes for fgetc and getc, then 5000 bytes (NULs among them) for fread.
fn stdio_reply() -> Vec<u8> {
    let mut v = b"line one\nline two\na|XY".to_vec();
    v.extend((0..5000u32).map(|i| (i * 7 % 256) as u8));
    v
}

fn stdio_case(mode: &str, flags: &[&str]) {
    let dir = TempDir::new(&format!("stdio-{mode}"));
    let exe = build(&dir, "stdio_socket", "stdio_socket", flags);
    let port = support::free_port();
    let got = dir.join("server-got");
    let (request, reply) = (stdio_request(), stdio_reply());
    let _server = servers::python(
        RECORDING_SERVER,
        &[
            &port.to_string(),
            got.to_str().expect("utf-8 path"),
            &hex(b"END\n"),
            &hex(&reply),
        ],
    );
    servers::wait_tcp("127.0.0.1", port);
    let cap = dir.join("c.pcap");
    let received = dir.join("client-got");
    support::run_ok(
        &mut cli_run(
            dir.path(),
            &cap,
            &exe,
            &[
                &port.to_string(),
                received.to_str().expect("utf-8 path"),
                mode,
            ],
        ),
        LIMIT,
    );
    assert_eq!(
        std::fs::read(&got).expect("the server kept what it got"),
        request,
        "the server got what the client means to send"
    );
    assert_eq!(std::fs::read(&received).expect("client output"), reply);
    check_tcp(&cap, port, &request, &reply, true);
}

/// fdopen'd socket: fprintf (many arguments and doubles, a 3003-byte result), vfprintf, fputs,
/// fwrite, fputc, putc, dprintf out; fgets, getline, getdelim, fgetc, getc, fread in.
#[test]
fn stdio_fdopen_plain() {
    stdio_case("fdopen", &["-O0"]);
}

/// The same, fortified: __fprintf_chk, __vfprintf_chk, __dprintf_chk, __fgets_chk, __fread_chk,
/// and getline inlined as __getdelim.
#[test]
fn stdio_fdopen_fortified() {
    stdio_case("fdopen", &["-O2", "-D_FORTIFY_SOURCE=2"]);
}

/// The socket on stdin and stdout, as inetd gives it: printf, vprintf, puts, putchar, putc,
/// fwrite, dprintf(1) out; fgets, getline, getdelim, getchar, getc, fread on stdin.
#[test]
fn stdio_on_stdin_stdout_plain() {
    stdio_case("stdout", &["-O0"]);
}

/// The same, fortified: __printf_chk, putchar as putc(stdout), getchar as getc(stdin).
#[test]
fn stdio_on_stdin_stdout_fortified() {
    stdio_case("stdout", &["-O2", "-D_FORTIFY_SOURCE=2"]);
}

/// busybox wget: the request goes out with __fprintf_chk, fputs and fflush on an fdopen'd
/// socket, the status line and headers come back through fgets_unlocked, the body through fread.
#[test]
fn busybox_wget() {
    let dir = TempDir::new("busybox-wget");
    let port = support::free_port();
    let got = dir.join("server-got");
    let body: Vec<u8> = (0..6000u32)
        .map(|i| b"abcdefghij\n"[(i % 11) as usize])
        .collect();
    let mut reply =
        format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    reply.extend_from_slice(&body);
    let _server = servers::python(
        RECORDING_SERVER,
        &[
            &port.to_string(),
            got.to_str().expect("utf-8 path"),
            &hex(b"\r\n\r\n"),
            &hex(&reply),
        ],
    );
    servers::wait_tcp("127.0.0.1", port);
    let cap = dir.join("w.pcap");
    let url = format!("http://127.0.0.1:{port}/file.txt");
    support::run_ok(
        &mut cli_run(
            dir.path(),
            &cap,
            "busybox",
            &["wget", "-q", "-O", "out.txt", &url],
        ),
        LIMIT,
    );
    let request = std::fs::read(&got).expect("the server kept the request");
    assert!(
        request.starts_with(b"GET /file.txt HTTP/1.1\r\n"),
        "request: {:?}",
        String::from_utf8_lossy(&request)
    );
    assert_eq!(
        std::fs::read(dir.join("out.txt")).expect("wget's output"),
        body
    );
    // wget reads exactly Content-Length bytes and closes: it never meets the server's FIN.
    check_tcp(&cap, port, &request, &reply, false);
}

/// bash's printf builtin on a `/dev/tcp` descriptor: it prints through stdio on a stdout that is
/// the socket for the builtin's duration (the example the README gave of what was not seen).
#[test]
fn bash_printf_to_dev_tcp() {
    let dir = TempDir::new("bash-printf");
    let port = support::free_port();
    let got = dir.join("server-got");
    let _server = servers::python(
        RECORDING_SERVER,
        &[
            &port.to_string(),
            got.to_str().expect("utf-8 path"),
            &hex(b"\n"),
            &hex(b"ok\n"),
        ],
    );
    servers::wait_tcp("127.0.0.1", port);
    let script = r#"
exec 3<>"/dev/tcp/127.0.0.1/$1"
printf 'first|' >&3
printf 'second %d %s\n' 2 "$1" >&3
IFS= read -r reply <&3 && [ "$reply" = ok ] || exit 5
exec 3>&-
"#;
    let cap = dir.join("b.pcap");
    support::run_ok(
        &mut cli_run(
            dir.path(),
            &cap,
            "bash",
            &["-c", script, "bash", &port.to_string()],
        ),
        LIMIT,
    );
    let request = format!("first|second 2 {port}\n").into_bytes();
    assert_eq!(std::fs::read(&got).expect("the server's bytes"), request);
    check_tcp(&cap, port, &request, b"ok\n", false);
}

// ---------------------------------------------------------------------------------------------
// B. syscall()

/// A UDP responder on 127.0.0.1:PORT for `count` datagrams: each one is answered with
/// `prefix` + the datagram, and kept (hex, one per line) in `got`; `ready` appears once bound.
const UDP_RESPONDER: &str = r#"
import socket, sys
port, got_path, ready, count, prefix = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), bytes.fromhex(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", port))
open(ready, "w").close()
seen = []
for _ in range(count):
    d, a = s.recvfrom(65536)
    seen.append(d.hex())
    open(got_path, "w").write("\n".join(seen) + "\n")
    s.sendto(prefix + d, a)
"#;

/// Start [`UDP_RESPONDER`] and wait until it is bound.
fn udp_responder(dir: &TempDir, port: u16, count: usize, prefix: &[u8]) -> servers::Server {
    let ready = dir.join("udp-ready");
    let server = servers::python(
        UDP_RESPONDER,
        &[
            &port.to_string(),
            dir.join("udp-got").to_str().expect("utf-8 path"),
            ready.to_str().expect("utf-8 path"),
            &count.to_string(),
            &hex(prefix),
        ],
    );
    let start = std::time::Instant::now();
    while !ready.exists() {
        assert!(start.elapsed() < LIMIT, "the UDP responder never bound");
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

/// The datagrams the responder received, in order.
fn udp_got(dir: &TempDir) -> Vec<Vec<u8>> {
    std::fs::read_to_string(dir.join("udp-got"))
        .expect("the responder kept what it got")
        .lines()
        .map(decode_hex)
        .collect()
}

/// Datagram payloads of `cap` from port `from` to port `to`, in capture order (our reader), and
/// the same from tshark.
fn datagrams(cap: &support::pcap_reader::Capture, path: &Path, from: u16, to: u16) -> Vec<Vec<u8>> {
    let ours: Vec<Vec<u8>> = cap
        .udp
        .iter()
        .filter(|d| (d.src.port() == from || from == 0) && (d.dst.port() == to || to == 0))
        .map(|d| d.payload.clone())
        .collect();
    let filter = match (from, to) {
        (0, to) => format!("udp.dstport == {to}"),
        (from, _) => format!("udp.srcport == {from}"),
    };
    let theirs: Vec<Vec<u8>> = tshark::fields(path, &filter, &["udp.payload"])
        .lines()
        .map(|l| decode_hex(&l.replace(':', "")))
        .collect();
    assert_eq!(
        ours, theirs,
        "tshark and our reader disagree on the datagrams"
    );
    ours
}

/// TCP and UDP through `syscall(SYS_…)` only: socket, connect, write, sendto, writev, sendmsg,
/// dup, shutdown, read, recvfrom, readv, recvmsg and close on TCP; socket, sendmmsg of three
/// datagrams, sendto, recvfrom (with and without an address), recvmsg, recvmmsg and close on UDP.
#[test]
fn syscall_tcp_and_udp() {
    let dir = TempDir::new("syscall-io");
    let exe = build(&dir, "syscall_io", "syscall_io", &["-O1"]);
    let tcp_port = support::free_port();
    let udp_port = support::free_port();
    let got = dir.join("server-got");
    let request = b"write;sendto;writev;sendmsg;dup;END\n".to_vec();
    let reply: Vec<u8> = (0..200u32).map(|i| b'A' + (i % 26) as u8).collect();
    let _tcp = servers::python(
        RECORDING_SERVER,
        &[
            &tcp_port.to_string(),
            got.to_str().expect("utf-8 path"),
            &hex(b"END\n"),
            &hex(&reply),
        ],
    );
    servers::wait_tcp("127.0.0.1", tcp_port);
    let _udp = udp_responder(&dir, udp_port, 4, b"echo:");
    let cap = dir.join("s.pcap");
    let received = dir.join("client-got");
    support::run_ok(
        &mut cli_run(
            dir.path(),
            &cap,
            &exe,
            &[
                &tcp_port.to_string(),
                &udp_port.to_string(),
                received.to_str().expect("utf-8 path"),
            ],
        ),
        LIMIT,
    );
    assert_eq!(std::fs::read(&got).expect("server's bytes"), request);
    let sent: Vec<Vec<u8>> = [
        "first datagram",
        "second",
        "third, the longest of the three",
        "fourth",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    assert_eq!(udp_got(&dir), sent, "the responder got the four datagrams");
    let echoes: Vec<Vec<u8>> = sent
        .iter()
        .map(|d| [b"echo:".as_slice(), d].concat())
        .collect();
    let mut client_got = reply.clone();
    client_got.extend(echoes.concat());
    assert_eq!(std::fs::read(&received).expect("client output"), client_got);

    check_tcp(&cap, tcp_port, &request, &reply, true);
    let ours = support::check_clean(&cap);
    assert_eq!(datagrams(&ours, &cap, 0, udp_port), sent, "datagrams sent");
    assert_eq!(
        datagrams(&ours, &cap, udp_port, 0),
        echoes,
        "datagrams received"
    );
}

/// dig (bind9-dnsutils) through Debian 12's libuv 1.44, which sends its query with
/// `syscall(SYS_sendmmsg, …)` and receives with recvmsg: both datagrams, exactly as the responder
/// saw and sent them.
#[test]
fn dig_through_libuv_sendmmsg() {
    let dir = TempDir::new("dig");
    let port = support::free_port();
    // The answer: the query with QR and RA set and no records, so dig has nothing to retry.
    let responder = r#"
import socket, sys
port, got_path, ready = int(sys.argv[1]), sys.argv[2], sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", port))
open(ready, "w").close()
d, a = s.recvfrom(65536)
r = d[:2] + bytes([0x81, 0x80]) + d[4:6] + b"\0\0\0\0\0\0" + d[12:]
open(got_path, "w").write(d.hex() + "\n" + r.hex() + "\n")
s.sendto(r, a)
"#;
    let ready = dir.join("ready");
    let got = dir.join("got");
    let _server = servers::python(
        responder,
        &[
            &port.to_string(),
            got.to_str().expect("utf-8 path"),
            ready.to_str().expect("utf-8 path"),
        ],
    );
    let start = std::time::Instant::now();
    while !ready.exists() {
        assert!(start.elapsed() < LIMIT, "the responder never bound");
        std::thread::sleep(Duration::from_millis(20));
    }
    let cap = dir.join("d.pcap");
    let out = support::run_ok(
        &mut cli_run(
            dir.path(),
            &cap,
            "dig",
            &[
                "+tries=1",
                "+time=5",
                "-p",
                &port.to_string(),
                "@127.0.0.1",
                "example.com",
            ],
        ),
        LIMIT,
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("status: NOERROR"),
        "dig got the answer: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let exchanged: Vec<Vec<u8>> = std::fs::read_to_string(&got)
        .expect("the responder kept the exchange")
        .lines()
        .map(decode_hex)
        .collect();
    let ours = support::check_clean(&cap);
    assert_eq!(
        datagrams(&ours, &cap, 0, port),
        exchanged[..1],
        "the query, sent with syscall(SYS_sendmmsg)"
    );
    assert_eq!(
        datagrams(&ours, &cap, port, 0),
        exchanged[1..],
        "the answer"
    );
    assert_eq!(ours.packets, 2, "the two datagrams and nothing else");
}
