//! Issue 12: the program sees exactly what it sees untraced, at the socket API's corners (bad
//! pointers and lengths, fortified reads, the error queue, MSG_TRUNC), and the capture shows no
//! byte the peer did not send. The C programs live in `tests/programs/`; each case runs the same
//! program untraced and under the CLI and compares what the calls returned, line by line.

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::{self, tshark, TempDir};

const LIMIT: Duration = Duration::from_secs(20);

/// Compile `tests/programs/NAME.c` into `dir/NAME` with extra `flags`.
fn build(dir: &TempDir, name: &str, flags: &[&str]) -> PathBuf {
    support::build_c(dir.path(), name, name, flags, &[])
}

/// Untraced peers: a TCP server that reads "hello", sends 1000 'A's, reads "again" and sends
/// "world" (per connection), and a UDP echo. Their threads end with the test process.
fn peers() -> (u16, u16) {
    let tcp = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let ports = (
        tcp.local_addr().expect("tcp addr").port(),
        udp.local_addr().expect("udp addr").port(),
    );
    std::thread::spawn(move || {
        for conn in tcp.incoming() {
            let Ok(mut c) = conn else { return };
            std::thread::spawn(move || {
                let mut five = [0u8; 5];
                if c.read_exact(&mut five).is_err() {
                    return;
                }
                let _ = c.write_all(&[b'A'; 1000]);
                if c.read_exact(&mut five).is_ok() {
                    let _ = c.write_all(b"world");
                }
            });
        }
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(&buf[..n], from);
        }
    });
    ports
}

fn traced_cli(dir: &Path, cap: &Path, program: &Path, args: &[&str]) -> Command {
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

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run `exact_calls` with `set` untraced and traced; both must print the same and succeed.
/// Returns the capture's path.
fn same_as_untraced(dir: &TempDir, set: &str) -> PathBuf {
    let program = build(dir, "exact_calls", &["-O1"]);
    let (tcp, udp) = peers();
    let args = [tcp.to_string(), udp.to_string(), set.to_string()];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut untraced = Command::new(&program);
    untraced.args(&args).env_remove("LD_PRELOAD");
    let expected = support::run_ok(&mut untraced, LIMIT);
    let cap = dir.join(&format!("{set}.pcap"));
    let traced =
        support::run_with_timeout(&mut traced_cli(dir.path(), &cap, &program, &args), LIMIT);
    assert!(
        traced.status.success(),
        "traced exact_calls {set}: {:?}\nstdout:\n{}\nstderr: {}",
        traced.status,
        stdout(&traced),
        String::from_utf8_lossy(&traced.stderr)
    );
    assert_eq!(
        stdout(&traced),
        stdout(&expected),
        "traced and untraced calls differ"
    );
    cap
}

/// TCP payloads of a capture as (source port, relative sequence number, bytes).
fn tcp_payloads(cap: &Path) -> Vec<(u16, u32, Vec<u8>)> {
    tshark::fields(
        cap,
        "tcp.len > 0",
        &["tcp.srcport", "tcp.seq", "tcp.payload"],
    )
    .lines()
    .map(|l| {
        let f: Vec<&str> = l.split('\t').collect();
        let hex = f.get(2).copied().unwrap_or("").replace(':', "");
        let bytes = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
            .collect();
        (
            f[0].parse().expect("port"),
            f[1].parse().expect("seq"),
            bytes,
        )
    })
    .collect()
}

/// Invalid pointers, over-long iovec arrays and lengths that overflow: untraced each call fails
/// with EFAULT, EMSGSIZE or EINVAL; traced it used to crash with SIGSEGV (the hooks read the
/// caller's memory before or after a failed call). `errno` at the start of `main` is 0 too.
#[test]
fn bad_pointers_and_lengths_fail_as_untraced() {
    let dir = TempDir::new("exact-bad");
    let cap = same_as_untraced(&dir, "bad");
    support::check_clean(&cap);
    // What did go through: "ping" out (its echo was taken by the recvfrom that failed with
    // EFAULT, so the program never had it), "hello" on the TCP connection.
    let datagrams = tshark::fields(&cap, "udp", &["data.data"]);
    assert_eq!(datagrams.lines().collect::<Vec<_>>(), ["70696e67"]);
    let sent: Vec<Vec<u8>> = tcp_payloads(&cap).into_iter().map(|p| p.2).collect();
    assert_eq!(sent, [b"hello".to_vec()]);
}

/// SO_TIMESTAMPING users read transmit notes from the error queue with recvmsg(MSG_ERRQUEUE),
/// which returns 0 with OPT_TSONLY: not the peer's FIN (it used to end the stream and lose the
/// 1000 'A's and "world"), and not a datagram.
#[test]
fn error_queue_is_neither_eof_nor_data() {
    let dir = TempDir::new("exact-errqueue");
    let cap = same_as_untraced(&dir, "errqueue");
    support::check_clean(&cap);
    let datagrams = tshark::fields(&cap, "udp", &["data.data"]);
    assert_eq!(
        datagrams.lines().collect::<Vec<_>>(),
        ["70696e67", "70696e67"]
    );
    let mut from_server = Vec::new();
    let mut from_client = Vec::new();
    let server_port = tshark::fields(
        &cap,
        "tcp.flags.syn == 1 && tcp.flags.ack == 0",
        &["tcp.dstport"],
    );
    let server_port: u16 = server_port.trim().parse().expect("one SYN");
    for (port, _, bytes) in tcp_payloads(&cap) {
        if port == server_port {
            from_server.extend(bytes);
        } else {
            from_client.extend(bytes);
        }
    }
    let mut expected = vec![b'A'; 1000];
    expected.extend(b"world");
    assert_eq!(from_server, expected);
    assert_eq!(from_client, b"helloagain");
    // One FIN, the client's at the end; none from the server, which never closed first.
    let fins = tshark::fields(&cap, "tcp.flags.fin == 1", &["tcp.srcport"]);
    assert_eq!(fins.lines().count(), 1, "FINs: {fins}");
    assert_ne!(fins.trim().parse::<u16>().ok(), Some(server_port));
}

/// TCP recv(buf16, 65536, MSG_TRUNC) discards what is there (1000 bytes) without copying: the
/// capture must hold none of the buffer's stale 'J's (nor whatever lies past its 16 bytes), and
/// the peer's "world" must sit where the kernel's sequence numbers put it, after the 1000 bytes.
#[test]
fn stream_truncation_records_no_stale_bytes() {
    let dir = TempDir::new("exact-trunc");
    let cap = same_as_untraced(&dir, "trunc");
    let payloads = tcp_payloads(&cap);
    let server_port = tshark::fields(
        &cap,
        "tcp.flags.syn == 1 && tcp.flags.ack == 0",
        &["tcp.dstport"],
    );
    let server_port: u16 = server_port.trim().parse().expect("one SYN");
    let from_server: Vec<(u32, Vec<u8>)> = payloads
        .iter()
        .filter(|p| p.0 == server_port)
        .map(|p| (p.1, p.2.clone()))
        .collect();
    assert_eq!(from_server, [(1001, b"world".to_vec())]);
    let report = tshark::inspect(&cap);
    assert_eq!(report.bad_checksums, 0);
    assert_eq!(report.malformed, 0);
}

/// A fortified read of 100 bytes into a 16-byte buffer aborts untraced ("buffer overflow
/// detected"); traced, the _chk hooks used to swap in a plain recvfrom on datagram sockets and
/// let the kernel write 100 bytes into the 16. The same program reading within bounds works.
#[test]
fn fortified_reads_keep_fortify_check() {
    let dir = TempDir::new("exact-fortify");
    let program = build(&dir, "fortify_read", &["-O2", "-D_FORTIFY_SOURCE=2"]);
    let (tcp, udp) = peers();
    for (proto, port) in [("udp", udp), ("tcp", tcp)] {
        for call in ["read", "recv", "recvfrom"] {
            let port = port.to_string();
            let cap = dir.join(&format!("{proto}-{call}.pcap"));
            let mut untraced = Command::new(&program);
            untraced.args([proto, &port, call]).env_remove("LD_PRELOAD");
            let expected = support::run_with_timeout(&mut untraced, LIMIT);
            let traced = support::run_with_timeout(
                &mut traced_cli(dir.path(), &cap, &program, &[proto, &port, call]),
                LIMIT,
            );
            let stderr = String::from_utf8_lossy(&traced.stderr);
            assert!(
                stderr.contains("buffer overflow detected"),
                "{proto} {call} traced: {:?} {stderr}",
                traced.status
            );
            assert!(
                String::from_utf8_lossy(&expected.stderr).contains("buffer overflow detected"),
                "{proto} {call} untraced: {:?}",
                expected.status
            );
            // The CLI exits 128 + SIGABRT, as the shell would say.
            assert_eq!(traced.status.code(), Some(128 + libc::SIGABRT));
            assert_eq!(stdout(&traced), "");
            // Within bounds, the same calls read and are captured.
            let ok = support::run_ok(
                &mut traced_cli(dir.path(), &cap, &program, &[proto, &port, call, "fits"]),
                LIMIT,
            );
            assert_eq!(stdout(&ok), "read 16\n");
        }
    }
}
