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
    let out = support::run_with_timeout(
        &mut support::traced(
            dir.path(),
            &cap,
            "python3",
            &["-c", script, &port.to_string()],
        ),
        LIMIT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
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
        let out = support::run_with_timeout(
            &mut support::traced(
                dir.path(),
                &cap,
                "python3",
                &["-c", script, &port.to_string()],
            ),
            LIMIT,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut files: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        assert_eq!(files.len(), 2, "{pattern}: one file per process: {files:?}");
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
