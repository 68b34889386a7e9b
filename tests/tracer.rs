//! Issue 13: the system-call tracer (`--backend ptrace`, chosen by `auto` for static and Go
//! programs). Every program here runs as an ordinary user (the tracer needs no privilege), and
//! every capture is checked by tshark and our reader, byte for byte against what the peer saw.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use crate::isolation::{chown, run_guarded, setpriv, test_user, text};
use crate::support::{self, pcap_reader::Capture, servers, TempDir};

const LIMIT: Duration = Duration::from_secs(20);

/// A directory the test user owns.
fn user_dir(tag: &str, user: (u32, u32)) -> TempDir {
    let dir = TempDir::new(tag);
    chown(dir.path(), user);
    dir
}

/// `netintercept ARGS... -- PROGRAM PARGS...` as `user` in `dir`.
fn cli_as(user: (u32, u32), dir: &Path, args: &[&str], program: &Path, pargs: &[&str]) -> Command {
    let mut cmd = setpriv(user, dir);
    // `auto` is what these tests check, whatever the suite was run with.
    cmd.env_remove("NETINTERCEPT_BACKEND")
        .arg(support::cli())
        .args(args)
        .arg("--")
        .arg(program)
        .args(pargs);
    cmd
}

/// A server in this process for one connection: reads until the client shuts its side, then
/// answers `reply:` and what it read, and closes. Hands over what it read.
fn reply_server() -> (u16, mpsc::Receiver<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let _ = s.set_read_timeout(Some(LIMIT));
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got);
            let mut answer = b"reply:".to_vec();
            answer.extend_from_slice(&got);
            let _ = s.write_all(&answer);
            let _ = tx.send(got);
        }
    });
    (port, rx)
}

fn one_stream(cap: &Capture, port: u16) -> (Vec<u8>, Vec<u8>) {
    let to = cap.to_port(port);
    let from = cap.sent_from_port(port);
    assert_eq!((to.len(), from.len()), (1, 1), "one connection to {port}");
    assert!(to[0].syn && to[0].fin && from[0].syn && from[0].fin);
    (to[0].bytes.clone(), from[0].bytes.clone())
}

/// A statically linked C client: `auto` chooses the tracer and says why; the capture holds the
/// connection exactly as the server saw it, and the program's output and status are untouched.
#[test]
fn static_c_client_is_captured() {
    let Some(user) = test_user() else { return };
    let dir = user_dir("tracer-static", user);
    let prog = support::build_c(dir.path(), "client", "client", &["-static", "-O1"], &[]);
    let (port, got) = reply_server();
    let cap = dir.join("cap.pcap");
    let out = run_guarded(
        &mut cli_as(
            user,
            dir.path(),
            &["-w", cap.to_str().expect("utf-8")],
            &prog,
            &[&port.to_string(), "hello-static"],
        ),
        LIMIT,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ok fd=3\n");
    let err = text(&out.stderr);
    assert!(
        err.contains("through its system calls") && err.contains("statically linked"),
        "{err}"
    );
    assert_eq!(
        got.recv_timeout(LIMIT).expect("the server's bytes"),
        b"hello-static"
    );
    let ours = support::check_clean(&cap);
    let (sent, received) = one_stream(&ours, port);
    assert_eq!(sent, b"hello-static");
    assert_eq!(received, b"reply:hello-static");
}

/// `go` for the Go clients: Debian's golang-go (scripts/packages installs it).
fn go_build(dir: &Path, out: &str, cgo: bool) -> PathBuf {
    let src = dir.join("main.go");
    std::fs::write(
        &src,
        "package main\n\nimport (\n\t\"fmt\"\n\t\"io\"\n\t\"net/http\"\n\t\"os\"\n)\n\n\
         func main() {\n\tresp, err := http.Get(os.Args[1])\n\tif err != nil {\n\t\t\
         fmt.Fprintln(os.Stderr, err)\n\t\tos.Exit(1)\n\t}\n\tbody, _ := io.ReadAll(resp.Body)\n\t\
         resp.Body.Close()\n\tfmt.Printf(\"%d %s\", resp.StatusCode, body)\n}\n",
    )
    .expect("main.go");
    // The build cache is kept beside the test binary: the standard library is built once.
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-cache");
    let exe = dir.join(out);
    let built = Command::new("go")
        .args(["build", "-o"])
        .arg(&exe)
        .arg(&src)
        .env("CGO_ENABLED", if cgo { "1" } else { "0" })
        .env("GOCACHE", &cache)
        .env("GOPATH", cache.join("path"))
        .env("HOME", &cache)
        .output()
        .expect("go is installed (scripts/packages: golang-go)");
    assert!(built.status.success(), "go build: {}", text(&built.stderr));
    // The test user runs it from a directory it owns.
    std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    exe
}

/// Go's net/http makes its system calls itself: built without cgo (static) and with cgo
/// (dynamic, libc loaded, still past it), both are traced and their request and answer are in
/// the capture byte for byte.
#[test]
fn go_clients_are_captured() {
    let Some(user) = test_user() else { return };
    let dir = user_dir("tracer-go", user);
    let www = TempDir::new("tracer-go-www");
    std::fs::write(www.join("hello.txt"), b"hello from the server\n").expect("page");
    let port = support::free_port();
    let _srv = servers::http_server(www.path(), "127.0.0.1", port);
    for cgo in [false, true] {
        let exe = go_build(
            dir.path(),
            if cgo { "client-cgo" } else { "client-static" },
            cgo,
        );
        let cap = dir.join(&format!("go-{cgo}.pcap"));
        let url = format!("http://127.0.0.1:{port}/hello.txt");
        let out = run_guarded(
            &mut cli_as(
                user,
                dir.path(),
                &["-w", cap.to_str().expect("utf-8")],
                &exe,
                &[&url],
            ),
            LIMIT,
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "200 hello from the server\n");
        assert!(
            text(&out.stderr).contains("it is a Go program"),
            "{}",
            text(&out.stderr)
        );
        let ours = support::check_clean(&cap);
        let to = ours.to_port(port);
        let from = ours.sent_from_port(port);
        assert_eq!((to.len(), from.len()), (1, 1), "cgo {cgo}: one connection");
        let request = text(&to[0].bytes);
        assert!(
            request.starts_with("GET /hello.txt HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(request.ends_with("\r\n\r\n"), "{request}");
        let answer = text(&from[0].bytes);
        assert!(answer.starts_with("HTTP/1.0 200 OK\r\n"), "{answer}");
        assert!(
            answer.ends_with("\r\n\r\nhello from the server\n"),
            "{answer}"
        );
    }
}

/// A DNS server for [`in_dns_namespace`]: answers A queries for anything with the address
/// given (four decimal bytes) and others with no record, and logs each datagram it received and
/// sent, in hex, one a line (`in HEX`, `out HEX`).
const DNS: &str = r#"
import socket, sys, os
log = open(sys.argv[1], "w", buffering=1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 53))
open(sys.argv[2], "w").close()
while True:
    q, peer = s.recvfrom(4096)
    log.write("in " + q.hex() + "\n")
    end = 12
    while q[end] != 0:
        end += q[end] + 1
    qtype = int.from_bytes(q[end + 1:end + 3], "big")
    question = q[12:end + 5]
    an = 1 if qtype == 1 else 0
    r = q[:2] + b"\x81\x80" + b"\x00\x01" + an.to_bytes(2, "big") + b"\x00\x00\x00\x00" + question
    if an:
        r += b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + bytes(int(x) for x in sys.argv[3].split("."))
    s.sendto(r, peer)
    log.write("out " + r.hex() + "\n")
"#;

/// Run `traced` (a shell command line run as `user`) in a network and mount namespace of its
/// own (root, only to set up the namespace and bind port 53), after `setup` (run as root), with
/// glibc's resolver pointed at [`DNS`], which answers `answer`. The capture `cap` must hold the
/// queries and answers byte for byte as the DNS server received and sent them; returns the
/// command's output and our reading of the capture.
fn in_dns_namespace(
    dir: &Path,
    user: (u32, u32),
    answer: &str,
    setup: &str,
    traced: &str,
    cap: &Path,
) -> (std::process::Output, Capture) {
    std::fs::write(
        dir.join("resolv.conf"),
        "nameserver 127.0.0.1\noptions attempts:1 timeout:5\n",
    )
    .expect("resolv.conf");
    std::fs::write(dir.join("nsswitch.conf"), "hosts: files dns\n").expect("nsswitch.conf");
    std::fs::write(dir.join("dns.py"), DNS).expect("dns.py");
    let script = format!(
        "set -e\n\
         ip link set lo up\n\
         mount --bind resolv.conf /etc/resolv.conf\n\
         mount --bind nsswitch.conf /etc/nsswitch.conf\n\
         {py} dns.py dns.log ready {answer} & dns=$!\n\
         i=0; while [ ! -e ready ]; do sleep 0.05; i=$((i+1)); [ $i -lt 200 ]; done\n\
         {setup}\n\
         set +e\n\
         setpriv --reuid {u} --regid {g} --clear-groups -- {traced}\n\
         rc=$?\n\
         kill $dns\n\
         exit $rc\n",
        py = support::python_exe(),
        u = user.0,
        g = user.1,
    );
    let out = run_guarded(
        Command::new("unshare")
            .args([
                "--mount",
                "--net",
                "--propagation",
                "private",
                "sh",
                "-c",
                &script,
            ])
            .current_dir(dir)
            .env_remove("NETINTERCEPT_BACKEND"),
        LIMIT,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = std::fs::read_to_string(dir.join("dns.log")).expect("the server's log");
    let mut queries: Vec<String> = Vec::new();
    let mut answers: Vec<String> = Vec::new();
    for l in log.lines() {
        match l.split_once(' ') {
            Some(("in", h)) => queries.push(h.to_string()),
            Some(("out", h)) => answers.push(h.to_string()),
            _ => {}
        }
    }
    assert!(!queries.is_empty(), "the resolver asked nothing");
    let ours = support::check_clean(cap);
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut to_dns: Vec<String> = ours
        .udp
        .iter()
        .filter(|d| d.dst.port() == 53)
        .map(|d| hex(&d.payload))
        .collect();
    let mut from_dns: Vec<String> = ours
        .udp
        .iter()
        .filter(|d| d.src.port() == 53)
        .map(|d| hex(&d.payload))
        .collect();
    for v in [&mut queries, &mut answers, &mut to_dns, &mut from_dns] {
        v.sort();
    }
    assert_eq!(to_dns, queries, "the queries, as the server received them");
    assert_eq!(from_dns, answers, "the answers, as the server sent them");
    (out, ours)
}

/// glibc's resolver inside `getaddrinfo` sends its queries with its own internal calls, which no
/// preloaded hook sees. Under the tracer the queries and answers are in the capture, byte for
/// byte as the DNS server received and sent them.
#[test]
fn dns_inside_glibc_is_captured() {
    let Some(user) = test_user() else { return };
    let dir = user_dir("tracer-dns", user);
    let cap = dir.join("dns.pcap");
    let traced = format!(
        "{} --backend ptrace -w {} -- getent ahosts name.test",
        support::cli().display(),
        cap.display()
    );
    let (out, _) = in_dns_namespace(dir.path(), user, "10.1.2.3", "", &traced, &cap);
    assert!(
        text(&out.stdout).contains("10.1.2.3"),
        "{}",
        text(&out.stdout)
    );
}

/// `--backend both`: one capture holds what only the tracer sees (glibc's DNS queries) and what
/// only the library sees (curl's TLS, decrypted): the request and answer in plaintext, no TLS
/// record left, the DNS exchange byte for byte.
#[test]
fn both_backends_give_dns_and_decrypted_tls_in_one_capture() {
    let Some(user) = test_user() else { return };
    let dir = user_dir("tracer-both", user);
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem",
        ])
        .args(["-out", "cert.pem", "-days", "1", "-subj", "/CN=name.test"])
        .current_dir(dir.path())
        .output()
        .expect("openssl is installed");
    assert!(made.status.success(), "{}", text(&made.stderr));
    std::fs::write(dir.join("index.html"), "hello through both\n").expect("index.html");
    let cap = dir.join("both.pcap");
    let setup = "openssl s_server -quiet -WWW -accept 127.0.0.1:4433 -cert cert.pem -key key.pem \
                 >/dev/null 2>&1 & \
                 i=0; until grep -q ':1151 00000000:0000 0A' /proc/net/tcp; do sleep 0.05; \
                 i=$((i+1)); [ $i -lt 200 ]; done";
    let traced = format!(
        "{} --backend both -w {} -- curl -sk https://name.test:4433/index.html",
        support::cli().display(),
        cap.display()
    );
    let (out, ours) = in_dns_namespace(dir.path(), user, "127.0.0.1", setup, &traced, &cap);
    assert_eq!(text(&out.stdout), "hello through both\n");
    let (to, from) = (ours.to_port(4433), ours.sent_from_port(4433));
    assert_eq!((to.len(), from.len()), (1, 1), "one connection");
    let request = text(&to[0].bytes);
    assert!(
        request.starts_with("GET /index.html HTTP/1.1\r\n"),
        "{request}"
    );
    let answer = text(&from[0].bytes);
    assert!(answer.ends_with("\r\n\r\nhello through both\n"), "{answer}");
    let tls = crate::support::tshark::fields(&cap, "tls", &["frame.number"]);
    assert!(tls.trim().is_empty(), "TLS records left: {tls}");
}

/// The program's own signals, stops and exit status pass through the tracer: a shell that stops
/// itself is continued by its child and exits 7; one killed by SIGTERM gives 128+15; output is
/// as untraced.
#[test]
fn signals_stops_and_status_are_the_programs() {
    let Some(user) = test_user() else { return };
    let dir = user_dir("tracer-signals", user);
    let sh = Path::new("/bin/sh");
    let cap = dir.join("s.pcap");
    let w = [
        "--backend",
        "ptrace",
        "-q",
        "-w",
        cap.to_str().expect("utf-8"),
    ];
    let stop = "(sleep 0.3; kill -CONT $$) & kill -STOP $$; echo resumed; wait; exit 7";
    let out = run_guarded(&mut cli_as(user, dir.path(), &w, sh, &["-c", stop]), LIMIT);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "resumed\n");
    let term = "trap 'echo caught; exit 3' USR1; kill -USR1 $$; kill -TERM $$; echo never";
    let out = run_guarded(&mut cli_as(user, dir.path(), &w, sh, &["-c", term]), LIMIT);
    assert_eq!(
        out.status.code(),
        Some(3),
        "a handled signal: {}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), "caught\n");
    let out = run_guarded(
        &mut cli_as(
            user,
            dir.path(),
            &w,
            sh,
            &["-c", "kill -TERM $$; echo never"],
        ),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(128 + 15), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
    let out = run_guarded(
        &mut cli_as(
            user,
            dir.path(),
            &["--backend", "ptrace"],
            Path::new("/no/such/program"),
            &[],
        ),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(127));
    assert_eq!(
        text(&out.stderr)
            .lines()
            .filter(|l| l.starts_with("netintercept:"))
            .count(),
        1,
        "{}",
        text(&out.stderr)
    );
}

/// A forking server under the tracer (python's ForkingTCPServer, threads in the parent): each
/// connection is served by a fork child, and each is in the one capture with its bytes.
#[test]
fn forking_server_is_captured() {
    let Some(user) = test_user() else { return };
    let dir = user_dir("tracer-fork", user);
    let port = support::free_port();
    let script = format!(
        "import socketserver, threading\n\
         class H(socketserver.StreamRequestHandler):\n\
         \x20   def handle(self):\n\
         \x20       self.wfile.write(b'echo:' + self.rfile.readline())\n\
         s = socketserver.ForkingTCPServer(('127.0.0.1', {port}), H)\n\
         threading.Thread(target=lambda: None).start()\n\
         for _ in range(3):\n\
         \x20   s.handle_request()\n\
         s.server_close()\n"
    );
    std::fs::write(dir.join("srv.py"), script).expect("srv.py");
    let cap = dir.join("fork.pcap");
    let mut cmd = cli_as(
        user,
        dir.path(),
        &["--backend", "ptrace", "-w", cap.to_str().expect("utf-8")],
        // Debian's python3: the test user cannot reach a python under root's home.
        Path::new("/usr/bin/python3"),
        &["srv.py"],
    );
    let server = std::thread::spawn(move || run_guarded(&mut cmd, LIMIT));
    crate::isolation::wait_listening(port);
    for i in 0..3 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(LIMIT)).expect("timeout");
        s.write_all(format!("line {i}\n").as_bytes()).expect("send");
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("answer");
        assert_eq!(text(&got), format!("echo:line {i}\n"));
    }
    let out = server.join().expect("the server's run");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ours = support::check_clean(&cap);
    let mut seen: Vec<(String, String)> = ours
        .tcp
        .iter()
        .filter(|((from, _), _)| from.port() != port)
        .map(|((from, to), d)| {
            let back = &ours.tcp[&(*to, *from)];
            (text(&d.bytes), text(&back.bytes))
        })
        .collect();
    seen.sort();
    let want: Vec<(String, String)> = (0..3)
        .map(|i| (format!("line {i}\n"), format!("echo:line {i}\n")))
        .collect();
    assert_eq!(seen, want);
}

/// A client that keeps one connection and sends `tick N` on it every 50 ms, reading each echo.
const TICKER: &str = r#"
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
n = 0
while True:
    s.sendall(b"tick %d\n" % n)
    s.recv(100)
    n += 1
    time.sleep(0.05)
"#;

/// An untraced echo server in this process that hands over each line it echoes, as it comes.
fn line_echo() -> (u16, mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = l.accept() else { return };
        let mut buf = [0u8; 256];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
            for line in text(&buf[..n]).lines() {
                let _ = tx.send(line.to_string());
            }
        }
    });
    (port, rx)
}

/// `-p PID`: a running client is attached to, its open connection shown from a synthesized
/// handshake, and at SIGINT it is let go: it runs on, its later ticks reach the server but not
/// the capture, and the capture does not pretend its connection closed.
#[test]
fn attach_to_a_running_client_and_detach() {
    let Some(user) = test_user() else { return };
    let dir = user_dir("tracer-attach", user);
    std::fs::write(dir.join("ticker.py"), TICKER).expect("ticker.py");
    let (port, lines) = line_echo();
    let mut ticker = setpriv(user, dir.path())
        .args(["/usr/bin/python3", "ticker.py", &port.to_string()])
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("the ticker");
    // setpriv execs python: the pid is the ticker's.
    let pid = ticker.id().to_string();
    let next = |what: &str| {
        lines
            .recv_timeout(LIMIT)
            .unwrap_or_else(|_| panic!("{what}"))
    };
    for _ in 0..3 {
        next("the ticker ticks");
    }
    let cap = dir.join("attach.pcapng");
    let mut cli = setpriv(user, dir.path());
    cli.arg(support::cli())
        .args(["-p", &pid, "-w", cap.to_str().expect("utf-8")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let cli = cli.spawn().expect("the CLI");
    // Ticks made while attached.
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        next("ticks while attached");
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(cli.id() as i32, libc::SIGINT) };
    let out = cli.wait_with_output().expect("the CLI's end");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // The ticker runs on: three more ticks after the CLI is gone.
    let mut last = String::new();
    for _ in 0..3 {
        last = next("ticks after the detach");
    }
    assert!(
        ticker.try_wait().expect("ticker").is_none(),
        "the ticker runs on"
    );
    let _ = ticker.kill();
    let _ = ticker.wait();
    // Our reader reads pcap: the same packets, without their comments.
    let plain = dir.join("attach.pcap");
    let converted = Command::new("editcap")
        .args(["-F", "pcap"])
        .arg(&cap)
        .arg(&plain)
        .status()
        .expect("editcap (tshark's package) is installed");
    assert!(converted.success());
    let ours = support::check_clean(&plain);
    let (to, from) = (ours.to_port(port), ours.sent_from_port(port));
    assert_eq!(
        (to.len(), from.len()),
        (1, 1),
        "the ticker's one connection"
    );
    assert!(
        to[0].syn && !to[0].fin && !to[0].rst,
        "open from a handshake, never closed"
    );
    let captured = text(&to[0].bytes);
    // Every tick echoed, but for the last one when the detach came between a send and its echo.
    let echoed = text(&from[0].bytes);
    assert!(captured.starts_with(&echoed), "{captured:?} / {echoed:?}");
    assert!(
        captured[echoed.len()..].lines().count() <= 1,
        "{captured:?} / {echoed:?}"
    );
    let ticks: Vec<u64> = captured
        .lines()
        .map(|l| l.trim_start_matches("tick ").parse().expect("a tick"))
        .collect();
    assert!(ticks.len() >= 3, "{captured}");
    assert!(
        ticks.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive: {captured}"
    );
    assert!(ticks[0] >= 3, "nothing from before the attach: {captured}");
    let after: u64 = last.trim_start_matches("tick ").parse().expect("a tick");
    assert!(
        *ticks.last().expect("ticks") < after,
        "nothing from after the detach"
    );
    let comments = crate::support::tshark::fields(&cap, "tcp.flags.syn == 1", &["frame.comment"]);
    assert!(
        comments.contains("synthesized: the connection was found already open"),
        "{comments}"
    );
}
