//! Issue 3: descriptors and processes.

use std::time::Duration;

use crate::support::{self, servers, TempDir};

const LIMIT: Duration = Duration::from_secs(120);

pub const ECHO: &str = r#"
import socket, sys, threading
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
l = socket.socket(fam, socket.SOCK_STREAM)
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((sys.argv[1], int(sys.argv[2])))
l.listen(64)
def serve(c):
    while True:
        d = c.recv(65536)
        if not d:
            break
        c.sendall(d)
    c.close()
while True:
    c, _ = l.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

fn echo_server() -> (servers::Server, u16) {
    let port = support::free_port();
    let s = servers::python(ECHO, &["127.0.0.1", &port.to_string()]);
    servers::wait_tcp("127.0.0.1", port);
    (s, port)
}

#[test]
fn dup2_over_a_live_connection_is_one_stream() {
    let (_srv, port) = echo_server();
    let dir = TempDir::new("dup2");
    let cap = dir.join("dup2.pcap");
    let script = r#"
import socket, os, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"before")
assert s.recv(100) == b"before"
other = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
os.dup2(s.fileno(), other.fileno())   # closes `other`'s connection implicitly
os.write(other.fileno(), b"after")
assert s.recv(100) == b"after"
other.close()
s.close()
"#;
    support::run_ok(
        &mut support::traced(
            dir.path(),
            &cap,
            "python3",
            &["-c", script, &port.to_string()],
        ),
        LIMIT,
    );
    let ours = support::check_clean(&cap);
    let up = ours.to_port(port);
    assert_eq!(up.len(), 2, "two connections");
    let mut sent: Vec<&[u8]> = up.iter().map(|d| d.bytes.as_slice()).collect();
    sent.sort();
    assert_eq!(sent, [&b""[..], &b"beforeafter"[..]]);
    assert!(up.iter().all(|d| d.fin && d.syn), "each ends with one FIN");
    let syns = ours.tcp_flags.iter().filter(|f| f.as_str() == "S").count();
    assert_eq!(syns, 2, "no duplicated handshake");
}

#[test]
fn fork_gives_each_process_its_own_file() {
    let (_srv, port) = echo_server();
    let script = r#"
import socket, os, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
pid = os.fork()
who = b"child" if pid == 0 else b"parent"
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
c.sendall(who)
assert c.recv(100) == who
c.close()
if pid == 0:
    sys.exit(0)
os.waitpid(pid, 0)
s.sendall(b"shared")
assert s.recv(100) == b"shared"
s.close()
"#;
    for pattern in ["cap.pcap", "cap-%p.pcap"] {
        let dir = TempDir::new("fork");
        let cap = dir.join(pattern);
        support::run_ok(
            &mut support::traced(
                dir.path(),
                &cap,
                "python3",
                &["-c", script, &port.to_string()],
            ),
            LIMIT,
        );
        let mut files: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        let expected = if pattern.contains("%p") { 2 } else { 1 };
        assert_eq!(
            files.len(),
            expected,
            "{pattern}: one file per run, or per process with %p: {files:?}"
        );
        let mut payloads = Vec::new();
        for f in &files {
            let ours = support::check_clean(f);
            for d in ours.to_port(port) {
                payloads.push(String::from_utf8_lossy(&d.bytes).into_owned());
            }
        }
        payloads.sort();
        assert_eq!(
            payloads,
            ["child", "parent", "shared"],
            "{pattern}: the inherited socket appears once, in the parent"
        );
    }
}

fn run_traced_script(tag: &str, script: &str, args: &[&str]) -> (TempDir, std::path::PathBuf) {
    let dir = TempDir::new(tag);
    let cap = dir.join(&format!("{tag}.pcap"));
    let mut all = vec!["-c", script];
    all.extend_from_slice(args);
    let out = support::run_with_timeout(
        &mut support::traced(dir.path(), &cap, "python3", &all),
        LIMIT,
    );
    assert!(
        out.status.success(),
        "{tag}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (dir, cap)
}

#[test]
fn close_range_ends_every_open_connection() {
    let (_srv, port) = echo_server();
    let script = r#"
import socket, os, sys, ctypes
socks = [socket.create_connection(("127.0.0.1", int(sys.argv[1]))) for _ in range(3)]
for i, s in enumerate(socks):
    s.sendall(b"c%d" % i)
    assert s.recv(10) == b"c%d" % i
lo = min(s.fileno() for s in socks)
assert ctypes.CDLL(None, use_errno=True).close_range(lo, lo + 64, 0) == 0
for s in socks:
    s.detach()
"#;
    let (_dir, cap) = run_traced_script("close_range", script, &[&port.to_string()]);
    let ours = support::check_clean(&cap);
    let up = ours.to_port(port);
    assert_eq!(up.len(), 3);
    assert!(up.iter().all(|d| d.fin), "close_range gives each its FIN");
}

#[test]
fn scm_rights_descriptor_is_captured_in_the_receiver() {
    let (_srv, port) = echo_server();
    let script = r#"
import socket, os, sys, array
a, b = socket.socketpair()
pid = os.fork()
if pid == 0:
    a.close()
    msg, anc, flags, addr = b.recvmsg(10, socket.CMSG_SPACE(4))
    fd = array.array("i", anc[0][2])[0]
    s = socket.socket(fileno=fd)
    s.sendall(b"from-receiver")
    assert s.recv(100) == b"from-receiver"
    s.close()
    sys.exit(0)
b.close()
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
os.environ  # the sender connects, then hands the socket over
s.connect(("127.0.0.1", int(sys.argv[1])))
a.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [s.fileno()]))])
s.close()
os.waitpid(pid, 0)
"#;
    let (dir, _cap) = run_traced_script("scm", script, &[&port.to_string()]);
    let mut payloads = Vec::new();
    for e in std::fs::read_dir(dir.path()).expect("dir") {
        let ours = support::check_clean(&e.expect("entry").path());
        for d in ours.to_port(port) {
            payloads.push(String::from_utf8_lossy(&d.bytes).into_owned());
        }
    }
    assert!(
        payloads.contains(&"from-receiver".to_string()),
        "{payloads:?}"
    );
}

#[test]
fn socket_inherited_across_exec_is_discovered() {
    let (_srv, port) = echo_server();
    let script = r#"
import socket, os, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"before-exec")
assert s.recv(100) == b"before-exec"
fd = s.detach()
os.set_inheritable(fd, True)
os.execv(sys.executable, [sys.executable, "-c",
    "import socket,sys; s=socket.socket(fileno=int(sys.argv[1])); s.sendall(b'after-exec'); assert s.recv(100)==b'after-exec'; s.close()",
    str(fd)])
"#;
    let (dir, _cap) = run_traced_script("exec", script, &[&port.to_string()]);
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(
        files.len(),
        1,
        "one capture for the run, across the exec: {files:?}"
    );
    let mut payloads = Vec::new();
    for f in &files {
        let ours = support::check_clean(f);
        for d in ours.to_port(port) {
            assert!(d.syn, "the stream has its handshake");
            payloads.push(String::from_utf8_lossy(&d.bytes).into_owned());
        }
    }
    payloads.sort();
    assert_eq!(
        payloads,
        ["before-execafter-exec"],
        "flushed before exec, found after"
    );
}

#[test]
fn sixteen_threads_fifty_requests_each() {
    let (_srv, port) = echo_server();
    let script = r#"
import socket, sys, threading
port = int(sys.argv[1])
def worker(t):
    for i in range(50):
        s = socket.create_connection(("127.0.0.1", port))
        msg = b"t%02d-r%02d" % (t, i)
        s.sendall(msg)
        got = b""
        while len(got) < len(msg):
            got += s.recv(100)
        assert got == msg
        s.close()
ts = [threading.Thread(target=worker, args=(t,)) for t in range(16)]
[t.start() for t in ts]
[t.join() for t in ts]
"#;
    let (_dir, cap) = run_traced_script("threads", script, &[&port.to_string()]);
    let ours = support::check_clean(&cap);
    let up = ours.to_port(port);
    let down = ours.sent_from_port(port);
    assert!(up.len() >= 790, "about 800 connections: {}", up.len());
    let mut sent: Vec<_> = up.iter().map(|d| d.bytes.clone()).collect();
    sent.sort();
    sent.dedup();
    assert_eq!(sent.len(), 800, "every request exactly once");
    assert!(down.iter().all(|d| d.bytes.len() == 7));
}

#[test]
fn signal_handler_writing_to_a_socket_does_not_deadlock() {
    let (_srv, port) = echo_server();
    let script = r#"
import socket, signal, sys
port = int(sys.argv[1])
alarm_sock = socket.create_connection(("127.0.0.1", port))
main_socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
count = [0]
def on_alarm(sig, frame):
    alarm_sock.sendall(b"A")
    count[0] += 1
signal.signal(signal.SIGALRM, on_alarm)
signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
for i in range(3000):
    s = main_socks[i % 2]
    s.sendall(b"m" * 100)
    got = 0
    while got < 100:
        got += len(s.recv(100 - got))
signal.setitimer(signal.ITIMER_REAL, 0, 0)
alarm_sock.shutdown(socket.SHUT_WR)
n = 0
while True:
    d = alarm_sock.recv(65536)
    if not d:
        break
    n += len(d)
assert n == count[0]
print(count[0])
"#;
    let dir = TempDir::new("signals");
    let cap = dir.join("sig.pcap");
    let out = support::run_ok(
        &mut support::traced(
            dir.path(),
            &cap,
            "python3",
            &["-c", script, &port.to_string()],
        ),
        Duration::from_secs(60),
    );
    assert!(
        out.stderr.is_empty(),
        "nothing dropped: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let alarms: usize = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("count");
    assert!(alarms > 10, "the handler ran ({alarms})");
    let ours = support::check_clean(&cap);
    let mut lens: Vec<usize> = ours.to_port(port).iter().map(|d| d.bytes.len()).collect();
    lens.sort();
    assert_eq!(lens.len(), 3);
    assert!(
        lens.contains(&alarms),
        "every handler byte captured: {lens:?} vs {alarms}"
    );
}

#[test]
fn no_follow_leaves_children_untraced() {
    let (_srv, port) = echo_server();
    let dir = TempDir::new("nofollow");
    let child = format!(
        "import socket; s=socket.create_connection(('127.0.0.1',{port})); s.sendall(b'kid'); s.recv(10); s.close()"
    );
    support::run_ok(
        std::process::Command::new(support::cli())
            .args(["--no-follow", "-w", "nf.pcap", &support::python_exe(), "-c"])
            .arg(format!(
                "import subprocess, sys, socket\n{}\nsubprocess.run([sys.executable, '-c', {:?}], check=True)",
                child.replace("kid", "parent"),
                child
            ))
            .current_dir(dir.path()),
        LIMIT,
    );
    let files: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").collect();
    assert_eq!(files.len(), 1, "only the traced parent writes");
    let ours = support::check_clean(&dir.join("nf.pcap"));
    let sent: Vec<_> = ours.to_port(port).iter().map(|d| d.bytes.clone()).collect();
    assert_eq!(sent, [b"parent".to_vec()]);
}

/// The traced parent starts a child and exits at once; the child execs a traced program only
/// 20 ms later (through a static, untraced program). The run must not end in between: the CLI
/// sees a process of the run that has not claimed its slot yet, and waits for it. A run with no
/// such process ends as soon as its last traced process is gone.
#[test]
fn a_child_that_claims_after_its_parent_exited_is_captured() {
    let (_srv, port) = echo_server();
    let dir = TempDir::new("late-child");
    let late = support::build_c(
        dir.path(),
        "late_exec",
        "late_exec",
        &["-static", "-O1"],
        &[],
    );
    let child = format!(
        "import socket; s=socket.create_connection(('127.0.0.1',{port})); s.sendall(b'kid'); s.recv(10); s.close()"
    );
    let python = support::python_exe();
    let script = format!(
        "import subprocess, os\nsubprocess.Popen([{:?}, '20', {:?}, '-c', {:?}])\nos._exit(0)",
        late.to_string_lossy(),
        python,
        child
    );
    let cap = dir.join("late.pcap");
    let started = std::time::Instant::now();
    support::run_ok(
        std::process::Command::new(support::cli())
            .args(["-w", "late.pcap", &python, "-c", &script])
            .current_dir(dir.path()),
        LIMIT,
    );
    let ours = support::check_clean(&cap);
    let sent: Vec<_> = ours.to_port(port).iter().map(|d| d.bytes.clone()).collect();
    assert_eq!(sent, [b"kid".to_vec()], "after {:?}", started.elapsed());
}

/// NETINTERCEPT_FOLLOW=no (bare LD_PRELOAD) leaves the child untraced as 0 does; a value that
/// means nothing is said in one line by the CLI, and the child is traced.
#[test]
fn follow_values() {
    let (_srv, port) = echo_server();
    let child = format!(
        "import socket; s=socket.create_connection(('127.0.0.1',{port})); s.sendall(b'kid'); s.recv(10); s.close()"
    );
    let script = format!(
        "import subprocess, sys, socket\n{}\nsubprocess.run([sys.executable, '-c', {:?}], check=True)",
        child.replace("kid", "parent"),
        child
    );
    let sent = |cap: &std::path::Path| -> Vec<Vec<u8>> {
        let ours = support::check_clean(cap);
        let mut sent: Vec<_> = ours.to_port(port).iter().map(|d| d.bytes.clone()).collect();
        sent.sort();
        sent
    };
    let dir = TempDir::new("follow-no");
    let cap = dir.join("no.pcap");
    let mut cmd = support::traced(dir.path(), &cap, &support::python_exe(), &["-c", &script]);
    support::run_ok(cmd.env("NETINTERCEPT_FOLLOW", "no"), LIMIT);
    assert_eq!(sent(&cap), [b"parent".to_vec()]);
    let dir = TempDir::new("follow-bad");
    let out = support::run_ok(
        std::process::Command::new(support::cli())
            .args(["-w", "bad.pcap", &support::python_exe(), "-c", &script])
            .env("NETINTERCEPT_FOLLOW", "maybe")
            .current_dir(dir.path()),
        LIMIT,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let said: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("NETINTERCEPT_FOLLOW"))
        .collect();
    assert_eq!(said.len(), 1, "{err}");
    assert!(
        said[0].starts_with("netintercept: NETINTERCEPT_FOLLOW='maybe' is not"),
        "{err}"
    );
    assert_eq!(
        sent(&dir.join("bad.pcap")),
        [b"kid".to_vec(), b"parent".to_vec()]
    );
}

#[test]
fn node_fetch_shows_the_clients_fin() {
    let dir = TempDir::new("node");
    std::fs::write(dir.join("page"), b"node page").expect("page");
    let port = support::free_port();
    let _server = servers::http_server(dir.path(), "127.0.0.1", port);
    let cap = dir.join("node.pcap");
    let script = format!(
        "require('http').get('http://127.0.0.1:{port}/page', r => {{ let b=''; r.on('data', d => b += d); r.on('end', () => console.log(b)); }})"
    );
    let out = support::run_ok(
        &mut support::traced(dir.path(), &cap, "node", &["-e", &script]),
        LIMIT,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "node page");
    let ours = support::check_clean(&cap);
    let up = ours.to_port(port);
    assert_eq!(up.len(), 1);
    assert!(up[0].fin, "the client's FIN");
    assert!(ours.sent_from_port(port)[0].bytes.ends_with(b"node page"));
}

/// Fork + threads + signals together, many times under a timeout: no hang, no bad capture.
/// `NI_STRESS` sets the count (.ci/run uses 200; the default keeps `cargo test` quick).
#[test]
fn stress_fork_threads_signals() {
    let (_srv, port) = echo_server();
    let runs: usize = std::env::var("NI_STRESS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let script = r#"
import os, signal, socket, sys, threading
port = int(sys.argv[1])
alarm = socket.create_connection(("127.0.0.1", port))
signal.signal(signal.SIGALRM, lambda *a: alarm.sendall(b"a"))
signal.setitimer(signal.ITIMER_REAL, 0.002, 0.002)
def talk(tag):
    for i in range(5):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(tag)
        got = b""
        while len(got) < len(tag):
            got += s.recv(100)
        s.close()
pid = os.fork()
ts = [threading.Thread(target=talk, args=(b"%d-%d" % (os.getpid(), t),)) for t in range(4)]
[t.start() for t in ts]
[t.join() for t in ts]
signal.setitimer(signal.ITIMER_REAL, 0, 0)
if pid == 0:
    sys.exit(0)
os.waitpid(pid, 0)
"#;
    for run in 0..runs {
        let dir = TempDir::new("stress");
        let cap = dir.join("s.pcap");
        let out = support::run_with_timeout(
            &mut support::traced(
                dir.path(),
                &cap,
                "python3",
                &["-c", script, &port.to_string()],
            ),
            Duration::from_secs(30),
        );
        assert!(
            out.status.success(),
            "run {run}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut conns = 0;
        for e in std::fs::read_dir(dir.path()).expect("dir") {
            conns += support::check_clean(&e.expect("entry").path())
                .to_port(port)
                .iter()
                .filter(|d| !d.bytes.is_empty() && d.bytes[0] != b'a')
                .count();
        }
        assert_eq!(
            conns, 40,
            "run {run}: 2 processes × 4 threads × 5 connections"
        );
    }
}

#[test]
fn sendfile_to_a_socket_is_captured_with_the_file_bytes() {
    let (_srv, port) = echo_server();
    let script = r#"
import os, socket, sys
data = bytes(range(256)) * 1000
with open("payload.bin", "wb") as f:
    f.write(data)
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
with open("payload.bin", "rb") as f:
    f.seek(1000)
    sent = 0
    while sent < len(data) - 1000:
        sent += os.sendfile(s.fileno(), f.fileno(), None, len(data))
    assert f.tell() == len(data), "sendfile moved the offset as usual"
got = b""
while len(got) < len(data) - 1000:
    got += s.recv(65536)
s.close()
"#;
    let (dir, cap) = run_traced_script("sendfile", script, &[&port.to_string()]);
    let data = std::fs::read(dir.join("payload.bin")).expect("payload");
    let ours = support::check_clean(&cap);
    let up = ours.to_port(port);
    assert_eq!(up.len(), 1);
    assert_eq!(
        up[0].bytes,
        data[1000..],
        "the file's bytes from the offset on"
    );
}
