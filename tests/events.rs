//! `--events DIR`: per-socket event traces in tcpsnitch's format, read back by Python's own JSON
//! parser (not ours) and checked against the capture of the same run.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::{self, servers, TempDir};

/// Reads every trace under DIR with Python's json module and prints one tab-separated line per
/// event: folder, file, type, top-level keys in order, details' key paths sorted, return_value,
/// success, errno, fake_call, frames, bytes, the JSON types of `timestamp_usec`, `thread_id`
/// and an address's `port`, and the details re-serialized with sorted keys. A line that is not one JSON object prints INVALID.
const READER: &str = r#"
import json, os, sys
root = sys.argv[1]
def paths(o, pre=""):
    out = []
    for k, v in o.items():
        p = pre + k
        if isinstance(v, dict) and v:
            out += paths(v, p + ".")
        else:
            out.append(p)
    return out
for folder in sorted(os.listdir(root)):
    d = os.path.join(root, folder)
    names = [n for n in os.listdir(d) if n.endswith(".json")]
    for name in sorted(names, key=lambda n: int(n[:-5])):
        for line in open(os.path.join(d, name), encoding="utf-8"):
            try:
                e = json.loads(line)
                assert isinstance(e, dict)
            except Exception:
                print("INVALID", folder, name, repr(line)); continue
            det = e.get("details", {})
            port = det.get("addr", {}).get("port")
            print("\t".join([folder, name[:-5], str(e.get("type")), ",".join(e.keys()),
                ",".join(sorted(paths(det))), str(e.get("return_value")), str(e.get("success")),
                str(e.get("errno", "")), str(e.get("fake_call")),
                ",".join(str(f) for f in e.get("frames", [])), str(det.get("bytes", "")),
                type(e.get("timestamp_usec")).__name__ + "," + type(e.get("thread_id")).__name__
                + "," + type(port).__name__, json.dumps(det, sort_keys=True)]))
"#;

/// One event as the reader printed it.
#[derive(Debug)]
struct Event {
    folder: String,
    file: u32,
    ty: String,
    keys: String,
    details: String,
    ret: i64,
    success: bool,
    errno: String,
    fake: bool,
    frames: Vec<u32>,
    bytes: Option<i64>,
    types: String,
    json: String,
}

fn read_events(dir: &Path) -> Vec<Event> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(READER)
        .arg(dir)
        .env_remove("LD_PRELOAD")
        .output()
        .expect("python3 is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("INVALID"),
        "lines that are not JSON:\n{text}"
    );
    text.lines()
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            assert_eq!(c.len(), 13, "{l}");
            Event {
                folder: c[0].into(),
                file: c[1].parse().expect("file index"),
                ty: c[2].into(),
                keys: c[3].into(),
                details: c[4].into(),
                ret: c[5].parse().expect("return_value is an integer"),
                success: c[6] == "True",
                errno: c[7].into(),
                fake: c[8] == "True",
                frames: c[9]
                    .split(',')
                    .filter(|f| !f.is_empty())
                    .map(|f| f.parse().expect("frame"))
                    .collect(),
                bytes: c[10].parse().ok(),
                types: c[11].into(),
                json: c[12].into(),
            }
        })
        .collect()
}

const SEND_FLAGS: &str = "flags.MSG_CONFIRM,flags.MSG_DONTROUTE,flags.MSG_DONTWAIT,flags.MSG_EOR,\
                          flags.MSG_MORE,flags.MSG_NOSIGNAL,flags.MSG_OOB";
const RECV_FLAGS: &str = "flags.MSG_CMSG_CLOEXEC,flags.MSG_DONTWAIT,flags.MSG_ERRQUEUE,\
                          flags.MSG_OOB,flags.MSG_PEEK,flags.MSG_TRUNC,flags.MSG_WAITALL";
const MSGHDR: &str = "msghdr.control_data,msghdr.control_data_len,msghdr.iovec.iovec_count,\
                      msghdr.iovec.iovec_sizes";
const SOCK_INFO: &str = "sock_info.SOCK_CLOEXEC,sock_info.SOCK_NONBLOCK,sock_info.domain,\
                         sock_info.protocol,sock_info.type";

/// Every event has exactly tcpsnitch's keys in its order (`errno` only on failure) and then
/// ours, `frames`; its details exactly the keys tcpsnitch gives its type.
fn check_schema(events: &[Event]) {
    for e in events {
        let keys = if e.success {
            "type,timestamp_usec,return_value,success,thread_id,fake_call,details,frames"
        } else {
            "type,timestamp_usec,return_value,success,errno,thread_id,fake_call,details,frames"
        };
        assert_eq!(e.keys, keys, "{e:?}");
        assert!(e.types.starts_with("int,int,"), "{e:?}");
        let details = match e.ty.as_str() {
            "socket" | "forked_socket" | "ghost_socket" => SOCK_INFO.to_string(),
            "connect" => "addr.ip,addr.port,addr.sa_family".to_string(),
            "send" => format!("bytes,{SEND_FLAGS}"),
            "recv" => format!("bytes,{RECV_FLAGS}"),
            "write" | "read" => "bytes".to_string(),
            "writev" | "readv" => "bytes,iovec.iovec_count,iovec.iovec_sizes".to_string(),
            "sendmsg" => format!("bytes,{SEND_FLAGS},{MSGHDR}"),
            "recvmsg" => format!("bytes,{RECV_FLAGS},{MSGHDR}"),
            "bind" => "addr.ip,addr.port,addr.sa_family".to_string(),
            "listen" => "backlog".to_string(),
            "accept" => format!("addr.ip,addr.port,addr.sa_family,{SOCK_INFO}"),
            "accept4" => format!("addr.ip,addr.port,addr.sa_family,flags,{SOCK_INFO}"),
            "close" => String::new(),
            // Recorded for the traces alone (the CLI's --events turns them on in the hooks).
            "setsockopt" | "getsockopt" => {
                let d = e.details.replace("optval.", "");
                assert!(d.starts_with("level,optlen,optname"), "{e:?}");
                e.details.clone()
            }
            "getsockname" | "getpeername" if e.success => {
                "addr.ip,addr.port,addr.sa_family".to_string()
            }
            "getsockname" | "getpeername" => String::new(),
            "ioctl" => "request".to_string(),
            "fcntl" => {
                assert!(e.details.split(',').any(|k| k == "cmd"), "{e:?}");
                e.details.clone()
            }
            "dup3" if e.details.contains("sock_info") => format!("O_CLOEXEC,newfd,{SOCK_INFO}"),
            "dup3" => "O_CLOEXEC,newfd".to_string(),
            "poll" | "ppoll" => ready_keys(POLL),
            "select" | "pselect" => ready_keys(SELECT),
            "epoll_ctl" => format!("op,{}", flag_keys("requested_events", EPOLL)),
            "epoll_wait" | "epoll_pwait" => {
                format!("{},timeout", flag_keys("returned_events", EPOLL))
            }
            "sockatmark" | "fclose" => String::new(),
            "isfdtype" => "fdtype".to_string(),
            "fdopen" => "mode".to_string(),
            "sendmmsg" => format!("bytes,{SEND_FLAGS},mmsghdr_count,mmsghdr_vec"),
            "recvmmsg" => format!(
                "bytes,{RECV_FLAGS},mmsghdr_count,mmsghdr_vec,timeout.nanoseconds,timeout.seconds"
            ),
            other => panic!("unexpected event type {other}: {e:?}"),
        };
        assert_eq!(e.details, details, "{e:?}");
        if matches!(
            e.ty.as_str(),
            "connect" | "bind" | "accept" | "accept4" | "getsockname" | "getpeername"
        ) && e.success
        {
            assert!(e.types.ends_with(",str"), "port is a string: {e:?}");
        }
        assert_eq!(
            e.fake,
            matches!(e.ty.as_str(), "forked_socket" | "ghost_socket"),
            "{e:?}"
        );
        assert_eq!(e.success, e.errno.is_empty(), "{e:?}");
    }
}

const POLL: &[&str] = &[
    "POLLIN",
    "POLLPRI",
    "POLLOUT",
    "POLLRDHUP",
    "POLLERR",
    "POLLHUP",
    "POLLNVAL",
];
const SELECT: &[&str] = &["READ", "WRITE", "EXCEPT"];
const EPOLL: &[&str] = &[
    "EPOLLIN",
    "EPOLLOUT",
    "EPOLLRDHUP",
    "EPOLLPRI",
    "EPOLLERR",
    "EPOLLHUP",
    "EPOLLET",
    "EPOLLONESHOT",
    "EPOLLWAKEUP",
];

/// `prefix.NAME` for each name, sorted as the reader sorts key paths.
fn flag_keys(prefix: &str, names: &[&str]) -> String {
    let mut k: Vec<String> = names.iter().map(|n| format!("{prefix}.{n}")).collect();
    k.sort();
    k.join(",")
}

/// The details' key paths of poll and select events.
fn ready_keys(names: &[&str]) -> String {
    format!(
        "{},{},timeout.nanoseconds,timeout.seconds",
        flag_keys("requested_events", names),
        flag_keys("returned_events", names)
    )
}

/// One boolean per name, true for those in `set`, as Python writes sorted keys.
fn flags_json(names: &[&str], set: &[&str]) -> String {
    let mut n = names.to_vec();
    n.sort();
    let fields: Vec<String> = n
        .iter()
        .map(|f| format!("\"{f}\": {}", set.contains(f)))
        .collect();
    format!("{{{}}}", fields.join(", "))
}

/// The calls that move data or the connection (the others set options and ask questions).
fn packet_calls<'a>(events: impl IntoIterator<Item = &'a Event>) -> Vec<&'a Event> {
    events
        .into_iter()
        .filter(|e| {
            !matches!(
                e.ty.as_str(),
                "setsockopt" | "getsockname" | "getpeername" | "fcntl" | "ioctl"
            )
        })
        .collect()
}

/// Each frame's TCP or UDP payload, by frame number.
fn payloads(capture: &Path) -> HashMap<u32, Vec<u8>> {
    // A frame has one of the two (so a UDP datagram's bytes count too).
    support::tshark::fields(capture, "", &["frame.number", "tcp.payload", "udp.payload"])
        .lines()
        .filter_map(|l| {
            let (n, hex) = l.split_once('\t')?;
            let hex: String = hex.chars().filter(|c| c.is_ascii_hexdigit()).collect();
            let bytes = (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
                .collect();
            Some((n.parse().ok()?, bytes))
        })
        .collect()
}

/// What the frames of `e` carry, joined.
fn carried(e: &Event, frames: &HashMap<u32, Vec<u8>>) -> Vec<u8> {
    e.frames
        .iter()
        .flat_map(|f| frames.get(f).cloned().unwrap_or_default())
        .collect()
}

fn no_error_logged(dir: &Path) {
    for folder in std::fs::read_dir(dir).expect("events dir") {
        let log = folder.expect("entry").path().join("logs.txt");
        let text = std::fs::read_to_string(&log).expect("logs.txt in every process folder");
        assert!(!text.contains("ERROR"), "{}: {text}", log.display());
    }
}

#[test]
fn curl_trace_has_tcpsnitch_keys_and_frames_with_its_bytes() {
    let t = TempDir::new("events-curl");
    let token = "events-curl-token-7f3a";
    std::fs::write(t.join("index.html"), format!("{token}\n")).expect("page");
    let port = support::free_port();
    let _server = servers::http_server(t.path(), "127.0.0.1", port);
    let capture = t.join("c.pcap");
    let events_dir = t.join("ev");
    let url = format!("http://127.0.0.1:{port}/index.html");
    let mut cmd = Command::new(support::cli());
    cmd.current_dir(t.path())
        .arg("-w")
        .arg(&capture)
        .arg("--events")
        .arg(&events_dir)
        .args(["--", "curl", "-s", &url]);
    let out = support::run_ok(&mut cmd, Duration::from_secs(60));
    assert!(String::from_utf8_lossy(&out.stdout).contains(token));

    let events = read_events(&events_dir);
    check_schema(&events);
    no_error_logged(&events_dir);
    let folders: Vec<&str> = events.iter().map(|e| e.folder.as_str()).collect();
    assert!(folders.iter().all(|f| *f == "curl_000"), "{folders:?}");
    assert!(
        events.iter().all(|e| e.file == 0),
        "one socket: {events:#?}"
    );
    // curl asks for TCP_NODELAY before it connects, and for its peer's name after.
    let nodelay = events
        .iter()
        .position(|e| e.ty == "setsockopt" && e.json.contains("\"TCP_NODELAY\""))
        .expect("setsockopt(TCP_NODELAY)");
    assert!(
        events[nodelay].json.contains("\"optval\": true"),
        "{:?}",
        events[nodelay]
    );
    let connect = events
        .iter()
        .position(|e| e.ty == "connect")
        .expect("connect");
    assert!(nodelay < connect);
    let peer = events
        .iter()
        .find(|e| e.ty == "getpeername")
        .expect("getpeername");
    assert!(
        peer.json.contains(&format!("\"port\": \"{port}\"")),
        "{peer:?}"
    );
    let sock = packet_calls(&events);
    let types: Vec<&str> = sock.iter().map(|e| e.ty.as_str()).collect();
    assert_eq!(types[..2], ["socket", "connect"], "{types:?}");
    assert_eq!(types.last(), Some(&"close"), "{types:?}");
    let first_recv = types.iter().position(|t| *t == "recv").expect("a recv");
    let last_send = types.iter().rposition(|t| *t == "send").expect("a send");
    assert!(last_send < first_recv, "{types:?}");

    // Each call's frames carry exactly its bytes: the request, then the response.
    let frames = payloads(&capture);
    let mut request = Vec::new();
    let mut response = Vec::new();
    for e in sock.iter().filter(|e| e.ret > 0) {
        let got = carried(e, &frames);
        match e.ty.as_str() {
            "send" => {
                assert_eq!(got.len() as i64, e.ret, "{e:?}");
                assert_eq!(
                    e.bytes,
                    Some(e.ret),
                    "a blocking-complete send asked this much"
                );
                request.extend(got);
            }
            "recv" => {
                assert_eq!(got.len() as i64, e.ret, "{e:?}");
                assert!(e.bytes.is_some_and(|b| b >= e.ret), "{e:?}");
                response.extend(got);
            }
            _ => {}
        }
    }
    assert!(request.starts_with(b"GET /index.html HTTP/1.1\r\n"));
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.0 200"), "{response}");
    assert!(response.ends_with(&format!("{token}\n")), "{response}");
    // The handshake is produced by the call that learnt the connect succeeded.
    let handshake: usize = sock
        .iter()
        .filter(|e| e.ty == "connect" || e.ty == "getsockopt")
        .map(|e| e.frames.len())
        .sum();
    assert_eq!(handshake, 3, "SYN, SYN-ACK, ACK: {sock:#?}");
}

/// An untraced echo server: each connection's bytes come back until it closes.
const ECHO: &str = r#"
import socket, sys, threading
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", int(sys.argv[1]))); l.listen(8)
def serve(c):
    while True:
        b = c.recv(65536)
        if not b: break
        c.sendall(b)
    c.close()
while True:
    c, _ = l.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// The traced client: a refused connect, then a connection it shares with a forked child.
const CLIENT: &str = r#"
import os, socket, sys
r = socket.socket()
try:
    r.connect(("127.0.0.1", int(sys.argv[2])))
    sys.exit("connected to a closed port")
except ConnectionRefusedError:
    pass
r.close()
s = socket.socket()
s.connect(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"ping-events")
assert s.recv(100) == b"ping-events"
pid = os.fork()
if pid == 0:
    s.sendall(b"from-child")
    os._exit(0)
os.waitpid(pid, 0)
got = b""
while len(got) < 10:
    got += s.recv(100)
assert got == b"from-child", got
s.close()
"#;

#[test]
fn python_refused_connect_and_forked_socket() {
    let t = TempDir::new("events-py");
    let port = support::free_port();
    let closed = support::free_port();
    let _echo = servers::python(ECHO, &[&port.to_string()]);
    servers::wait_tcp("127.0.0.1", port);
    let capture = t.join("c.pcap");
    let events_dir = t.join("ev");
    let python = support::python_exe();
    let mut cmd = Command::new(support::cli());
    cmd.current_dir(t.path())
        .arg("-w")
        .arg(&capture)
        .arg("--events")
        .arg(&events_dir)
        .args([
            "--",
            &python,
            "-c",
            CLIENT,
            &port.to_string(),
            &closed.to_string(),
        ]);
    support::run_ok(&mut cmd, Duration::from_secs(60));

    let events = read_events(&events_dir);
    check_schema(&events);
    no_error_logged(&events_dir);
    let mut by_file: BTreeMap<(String, u32), Vec<&Event>> = BTreeMap::new();
    for e in &events {
        by_file
            .entry((e.folder.clone(), e.file))
            .or_default()
            .push(e);
    }
    let folders: Vec<&String> = by_file.keys().map(|(f, _)| f).collect();
    let parent = folders[0].clone();
    assert!(
        parent.starts_with("python") && parent.ends_with("_000"),
        "{folders:?}"
    );
    let child = format!("{}_001", &parent[..parent.len() - 4]);
    for v in by_file.values_mut() {
        *v = packet_calls(v.iter().copied());
    }
    let types = |folder: &str, file: u32| -> Vec<String> {
        by_file[&(folder.to_string(), file)]
            .iter()
            .map(|e| e.ty.clone())
            .collect()
    };

    // The refused connect: success false, errno by name, return value -1, no packet but the
    // SYN and the RST that refused it.
    assert_eq!(types(&parent, 0), ["socket", "connect", "close"]);
    let refused = by_file[&(parent.clone(), 0)][1];
    assert!(!refused.success && refused.ret == -1, "{refused:?}");
    assert_eq!(refused.errno, "ECONNREFUSED");
    assert_eq!(refused.frames.len(), 2, "SYN and RST: {refused:?}");

    let frames = payloads(&capture);
    let conn = &by_file[&(parent.clone(), 1)];
    assert_eq!(
        types(&parent, 1),
        ["socket", "connect", "send", "recv", "recv", "close"]
    );
    assert_eq!(carried(conn[2], &frames), b"ping-events");
    assert_eq!(carried(conn[3], &frames), b"ping-events");
    assert_eq!(carried(conn[4], &frames), b"from-child");

    // The child's inherited socket: its own folder, after its parent's, starting with a fake
    // forked_socket event.
    assert_eq!(types(&child, 0), ["forked_socket", "send"]);
    let forked = &by_file[&(child.clone(), 0)];
    assert!(forked[0].fake && forked[0].frames.is_empty());
    assert_eq!(carried(forked[1], &frames), b"from-child");
    assert_eq!(by_file.len(), 3, "{:?}", by_file.keys());
}

/// A traced server: the listener's trace, and the accepted connection's own, starting with the
/// accept and its `sock_info`.
const SERVER: &str = r#"
import socket, sys
l = socket.socket(socket.AF_INET6)
l.bind(("::1", int(sys.argv[1])))
l.listen(3)
open(sys.argv[2], "w").close()
c, _ = l.accept()
b = c.recv(100)
c.sendall(b.upper())
c.close()
l.close()
"#;

#[test]
fn traced_server_accepts_into_a_new_trace() {
    let t = TempDir::new("events-srv");
    let port = support::free_port();
    let ready = t.join("ready");
    let events_dir = t.join("ev");
    let python = support::python_exe();
    let mut cmd = Command::new(support::cli());
    cmd.current_dir(t.path())
        .arg("-w")
        .arg(t.join("s.pcap"))
        .arg("--events")
        .arg(&events_dir)
        .args(["--", &python, "-c", SERVER, &port.to_string()])
        .arg(&ready)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut server = cmd.spawn().expect("traced server");
    let start = std::time::Instant::now();
    while !ready.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "server never ready"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut c = std::net::TcpStream::connect(("::1", port)).expect("connect");
    use std::io::{Read, Write};
    c.write_all(b"shout").expect("send");
    let mut got = Vec::new();
    c.read_to_end(&mut got).expect("reply");
    assert_eq!(got, b"SHOUT");
    let status = server.wait().expect("server exits");
    assert!(status.success());

    let events = read_events(&events_dir);
    check_schema(&events);
    no_error_logged(&events_dir);
    let types = |file: u32| -> Vec<&str> {
        packet_calls(events.iter().filter(|e| e.file == file))
            .iter()
            .map(|e| e.ty.as_str())
            .collect()
    };
    assert_eq!(types(0), ["socket", "bind", "listen", "close"]);
    let accepted = types(1);
    assert!(
        accepted == ["accept4", "recv", "send", "close"]
            || accepted == ["accept", "recv", "send", "close"],
        "{accepted:?}"
    );
    let frames = payloads(&t.join("s.pcap"));
    let conn = packet_calls(events.iter().filter(|e| e.file == 1));
    assert_eq!(conn[0].frames.len(), 3, "the handshake is the accept's");
    assert_eq!(carried(conn[1], &frames), b"shout");
    assert_eq!(carried(conn[2], &frames), b"SHOUT");
}

/// Without the CLI, NETINTERCEPT_EVENTS alone asks for the traces.
#[test]
fn bare_preload_reads_netintercept_events() {
    let t = TempDir::new("events-bare");
    std::fs::write(t.join("index.html"), "bare\n").expect("page");
    let port = support::free_port();
    let _server = servers::http_server(t.path(), "127.0.0.1", port);
    let url = format!("http://127.0.0.1:{port}/index.html");
    let mut cmd = support::traced(t.path(), &t.join("b.pcap"), "curl", &["-s", &url]);
    cmd.env("NETINTERCEPT_EVENTS", t.join("ev"));
    support::run_ok(&mut cmd, Duration::from_secs(60));
    // The detached collector writes after the program is gone.
    let trace = t.join("ev/curl_000/0.json");
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(&trace).is_ok_and(|s| s.contains("\"close\"")) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no trace at {trace:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let events = read_events(&t.join("ev"));
    check_schema(&events);
    assert_eq!(events[0].ty, "socket");
}

#[test]
fn help_names_the_option_and_its_variable() {
    let out = Command::new(support::cli())
        .arg("--help")
        .output()
        .expect("cli");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--events <DIR>") && text.contains("NETINTERCEPT_EVENTS"));
}

/// The calls only traces need: each returns what it returns untraced (bad pointers and lengths
/// included), and is written with tcpsnitch's keys: the option by name, its value when
/// tcpsnitch decodes it and the call succeeded, `errno` by name when it failed.
#[test]
fn socket_options_and_names_are_traced_without_changing_them() {
    let t = TempDir::new("events-sockopt");
    let exe = support::build_c(t.path(), "sockopt_calls", "sockopt_calls", &[], &[]);
    let exe = exe.to_str().expect("utf-8 path");
    let plain = support::run_ok(
        &mut support::untraced(t.path(), exe, &[]),
        Duration::from_secs(30),
    );
    let mut cmd = Command::new(support::cli());
    cmd.current_dir(t.path())
        .arg("-w")
        .arg(t.join("o.pcap"))
        .arg("--events")
        .arg(t.join("ev"))
        .args(["--", exe]);
    let traced = support::run_ok(&mut cmd, Duration::from_secs(30));
    assert_eq!(
        String::from_utf8_lossy(&traced.stdout),
        String::from_utf8_lossy(&plain.stdout)
    );

    let events = read_events(&t.join("ev"));
    check_schema(&events);
    no_error_logged(&t.join("ev"));
    // Named after the program, though it is gone before its first socket's folder is made.
    assert!(
        events.iter().all(|e| e.folder == "sockopt_calls_000"),
        "{events:#?}"
    );
    let lines = |file: u32| -> Vec<String> {
        events
            .iter()
            .filter(|e| e.file == file)
            .map(|e| format!("{} {} {} {}", e.ty, e.ret, e.errno, e.json))
            .collect()
    };
    let port = events
        .iter()
        .find(|e| e.ty == "getsockname" && e.success)
        .and_then(|e| e.json.split("\"port\": \"").nth(1)?.split('"').next())
        .expect("the bound port")
        .to_string();
    assert_ne!(port, "0");
    let expected = [
        "socket 3  ".to_string(),
        r#"setsockopt 0  {"level": "SOL_IPV6", "optlen": 4, "optname": "IPV6_V6ONLY", "optval": true}"#.to_string(),
        r#"bind 0  {"addr": {"ip": "::1", "port": "0", "sa_family": "AF_INET6"}}"#.to_string(),
        format!(r#"getsockname 0  {{"addr": {{"ip": "::1", "port": "{port}", "sa_family": "AF_INET6"}}}}"#),
        r#"setsockopt 0  {"level": "SOL_TCP", "optlen": 4, "optname": "TCP_NODELAY", "optval": true}"#.to_string(),
        r#"setsockopt 0  {"level": "SOL_SOCKET", "optlen": 16, "optname": "SO_RCVTIMEO", "optval": {"tv_sec": 3, "tv_usec": 5}}"#.to_string(),
        r#"setsockopt -1 EINVAL {"level": "SOL_SOCKET", "optlen": 1, "optname": "SO_LINGER"}"#.to_string(),
        r#"setsockopt -1 EFAULT {"level": "SOL_SOCKET", "optlen": 4, "optname": "SO_RCVBUF"}"#.to_string(),
        r#"getsockopt -1 EFAULT {"level": "SOL_SOCKET", "optlen": 0, "optname": "SO_RCVBUF"}"#.to_string(),
        r#"getsockopt -1 EFAULT {"level": "SOL_SOCKET", "optlen": 0, "optname": "SO_RCVBUF"}"#.to_string(),
        r#"getsockopt 0  {"level": "SOL_SOCKET", "optlen": 4, "optname": "SO_RCVBUF", "optval": "#.to_string(),
        "getsockname -1 EFAULT {}".to_string(),
        "getsockname -1 EFAULT {}".to_string(),
        "getpeername -1 ENOTCONN {}".to_string(),
        r#"fcntl 2  {"O_APPEND": false, "O_ASYNC": false, "O_DIRECT": false, "O_NOATIME": false, "O_NONBLOCK": false, "cmd": "F_GETFL"}"#.to_string(),
        r#"fcntl 0  {"O_APPEND": false, "O_ASYNC": false, "O_DIRECT": false, "O_NOATIME": false, "O_NONBLOCK": true, "cmd": "F_SETFL"}"#.to_string(),
        r#"ioctl 0  {"request": "FIONREAD"}"#.to_string(),
        r#"dup3 20  {"O_CLOEXEC": true, "newfd": 20}"#.to_string(),
        r#"fcntl 30  {"arg": 30, "cmd": "F_DUPFD_CLOEXEC"}"#.to_string(),
        "close 0  {}".to_string(),
    ];
    let got = lines(0);
    assert_eq!(got.len(), expected.len(), "{got:#?}");
    for (got, want) in got.iter().zip(&expected) {
        assert!(got.starts_with(want.as_str()), "{got}\n  is not\n{want}");
    }
    // Each copy is a trace of its own, starting with the call that made it.
    let copy = |file: u32| -> Vec<String> {
        lines(file)
            .iter()
            .map(|l| l.split(", \"sock_info\"").next().unwrap_or(l).to_string())
            .collect()
    };
    assert_eq!(
        copy(2),
        [r#"dup3 20  {"O_CLOEXEC": true, "newfd": 20"#, "close 0  {}"]
    );
    assert_eq!(
        copy(3),
        [
            r#"fcntl 30  {"arg": 30, "cmd": "F_DUPFD_CLOEXEC""#,
            "close 0  {}"
        ]
    );
    // The refused bind: the address asked for, errno by name.
    assert_eq!(
        lines(1),
        [
            "socket 4  ".to_string() + &events.iter().find(|e| e.file == 1).expect("1.json").json,
            format!(
                r#"bind -1 EADDRINUSE {{"addr": {{"ip": "::1", "port": "{port}", "sa_family": "AF_INET6"}}}}"#
            ),
            "close 0  {}".to_string(),
        ]
    );
}

/// writev, readv, sendmsg and recvmsg: their buffer vectors as tcpsnitch writes them, and
/// frames that carry exactly their bytes.
#[test]
fn vectored_calls_carry_their_buffers() {
    let t = TempDir::new("events-vec");
    let exe = support::build_c(t.path(), "vector_calls", "vector_calls", &[], &[]);
    let port = support::free_port();
    let _echo = servers::python(ECHO, &[&port.to_string()]);
    servers::wait_tcp("127.0.0.1", port);
    let mut cmd = Command::new(support::cli());
    cmd.current_dir(t.path())
        .arg("-w")
        .arg(t.join("v.pcap"))
        .arg("--events")
        .arg(t.join("ev"))
        .arg("--")
        .arg(&exe)
        .arg(port.to_string());
    support::run_ok(&mut cmd, Duration::from_secs(30));
    let events = read_events(&t.join("ev"));
    check_schema(&events);
    let frames = payloads(&t.join("v.pcap"));
    let find = |ty: &str| events.iter().find(|e| e.ty == ty).expect(ty);
    let writev = find("writev");
    assert!(writev
        .json
        .contains(r#""iovec": {"iovec_count": 2, "iovec_sizes": [2, 3]}"#));
    assert_eq!(carried(writev, &frames), b"abcde");
    let readv = find("readv");
    assert!(readv
        .json
        .contains(r#""iovec": {"iovec_count": 2, "iovec_sizes": [2, 10]}"#));
    assert_eq!(readv.bytes, Some(12), "what readv asked for");
    let sendmsg = find("sendmsg");
    assert!(
        sendmsg.json.contains(
            r#""msghdr": {"control_data": [], "control_data_len": 0, "iovec": {"iovec_count": 3, "iovec_sizes": [1, 2, 3]}}"#
        ),
        "{sendmsg:?}"
    );
    assert_eq!(carried(sendmsg, &frames), b"xyz123");
    let recvmsg = find("recvmsg");
    assert!(
        recvmsg
            .json
            .contains(r#""iovec": {"iovec_count": 1, "iovec_sizes": [100]}"#),
        "{recvmsg:?}"
    );
    let echoed: Vec<u8> = events
        .iter()
        .filter(|e| matches!(e.ty.as_str(), "readv" | "recvmsg"))
        .flat_map(|e| carried(e, &frames))
        .collect();
    assert_eq!(echoed, b"abcdexyz123");
}

/// A program that executes another with a connected socket open: the new image's folder comes
/// next, and its trace of the socket it inherited starts with a fake `ghost_socket`.
const EXEC: &str = r#"
import os, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"before")
assert s.recv(100) == b"before"
os.set_inheritable(s.fileno(), True)
child = "import socket, sys; s = socket.socket(fileno=int(sys.argv[1])); s.sendall(b'after'); assert s.recv(100) == b'after'"
os.execv(sys.executable, [sys.executable, "-c", child, str(s.fileno())])
"#;

#[test]
fn an_inherited_socket_starts_with_ghost_socket() {
    let t = TempDir::new("events-ghost");
    let port = support::free_port();
    let _echo = servers::python(ECHO, &[&port.to_string()]);
    servers::wait_tcp("127.0.0.1", port);
    let python = support::python_exe();
    let mut cmd = Command::new(support::cli());
    cmd.current_dir(t.path())
        .arg("-w")
        .arg(t.join("g.pcap"))
        .arg("--events")
        .arg(t.join("ev"))
        .args(["--", &python, "-c", EXEC, &port.to_string()]);
    support::run_ok(&mut cmd, Duration::from_secs(30));
    let events = read_events(&t.join("ev"));
    check_schema(&events);
    no_error_logged(&t.join("ev"));
    let mut folders: Vec<&str> = events.iter().map(|e| e.folder.as_str()).collect();
    folders.dedup();
    assert_eq!(folders.len(), 2, "{folders:?}");
    assert!(folders[0].ends_with("_000") && folders[1].ends_with("_001"));
    let after = packet_calls(events.iter().filter(|e| e.folder == folders[1]));
    let types: Vec<&str> = after.iter().map(|e| e.ty.as_str()).collect();
    assert_eq!(types[0], "ghost_socket", "{types:?}");
    assert!(
        after[0].json.contains(r#""domain": "AF_INET""#),
        "{:?}",
        after[0]
    );
    assert!(
        after[0].json.contains(r#""protocol": "tcp""#),
        "{:?}",
        after[0]
    );
    let frames = payloads(&t.join("g.pcap"));
    let sent: Vec<u8> = after
        .iter()
        .filter(|e| e.ty == "send")
        .flat_map(|e| carried(e, &frames))
        .collect();
    assert_eq!(sent, b"after");
}

/// Runs readiness_calls traced with `--events DIR` and `extra` options or variables; returns
/// the events. The program prints every call's result: the traced run must print the same.
fn readiness_run(
    t: &TempDir,
    capture: &str,
    extra: &[(&str, &str)],
    env: &[(&str, &str)],
) -> Vec<Event> {
    let exe = support::build_c(t.path(), "readiness_calls", "readiness_calls", &[], &[]);
    let exe = exe.to_str().expect("utf-8 path");
    let plain = support::run_ok(
        &mut support::untraced(t.path(), exe, &[]),
        Duration::from_secs(30),
    );
    let mut cmd = Command::new(support::cli());
    cmd.current_dir(t.path())
        .arg("-w")
        .arg(t.join(capture))
        .arg("--events")
        .arg(t.join("ev"));
    for (k, v) in extra {
        cmd.arg(k);
        if !v.is_empty() {
            cmd.arg(v);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(["--", exe]);
    let traced = support::run_ok(&mut cmd, Duration::from_secs(30));
    assert_eq!(
        String::from_utf8_lossy(&traced.stdout),
        String::from_utf8_lossy(&plain.stdout),
        "each call returns what it returns untraced"
    );
    let events = read_events(&t.join("ev"));
    check_schema(&events);
    no_error_logged(&t.join("ev"));
    events
}

/// poll, ppoll, select, pselect, epoll_ctl, epoll_wait, epoll_pwait, sockatmark, isfdtype and
/// fdopen on a loopback connection, and sendmmsg/recvmmsg between UDP sockets: one event per
/// traced socket with tcpsnitch's keys and the values the calls had; a failed poll (its array
/// unreadable) and the pipe in a poll set leave nothing.
#[test]
fn readiness_calls_are_traced_as_tcpsnitch_does() {
    let t = TempDir::new("events-ready");
    let events = readiness_run(&t, "r.pcap", &[], &[]);
    let new_calls = |file: u32| -> Vec<String> {
        events
            .iter()
            .filter(|e| e.file == file)
            .filter(|e| {
                matches!(
                    e.ty.as_str(),
                    "poll"
                        | "ppoll"
                        | "select"
                        | "pselect"
                        | "epoll_ctl"
                        | "epoll_wait"
                        | "epoll_pwait"
                        | "sockatmark"
                        | "isfdtype"
                        | "fdopen"
                        | "sendmmsg"
                        | "recvmmsg"
                )
            })
            .map(|e| format!("{} {} {} {}", e.ty, e.ret, e.errno, e.json))
            .collect()
    };
    let poll = |asked: &[&str], got: &[&str], s: i64, ns: i64| {
        format!(
            r#"{{"requested_events": {}, "returned_events": {}, "timeout": {{"nanoseconds": {ns}, "seconds": {s}}}}}"#,
            flags_json(POLL, asked),
            flags_json(POLL, got)
        )
    };
    let select = |set: &[&str], s: i64, ns: i64| {
        format!(
            r#"{{"requested_events": {}, "returned_events": {}, "timeout": {{"nanoseconds": {ns}, "seconds": {s}}}}}"#,
            flags_json(SELECT, set),
            flags_json(SELECT, set)
        )
    };
    let ctl = |op: &str, asked: &[&str]| {
        format!(
            r#"{{"op": "{op}", "requested_events": {}}}"#,
            flags_json(EPOLL, asked)
        )
    };
    let wait = |got: &[&str], timeout: i64| {
        format!(
            r#"{{"returned_events": {}, "timeout": {timeout}}}"#,
            flags_json(EPOLL, got)
        )
    };
    // The client (1.json): registered under its own number.
    assert_eq!(
        new_calls(1),
        [
            format!(
                "poll 1  {}",
                poll(&["POLLOUT"], &["POLLOUT"], 1, 500_000_000)
            ),
            format!("select 1  {}", select(&["WRITE"], 0, 0)),
            format!(
                "epoll_ctl 0  {}",
                ctl("EPOLL_CTL_ADD", &["EPOLLOUT", "EPOLLET"])
            ),
            format!("epoll_wait 2  {}", wait(&["EPOLLOUT"], 1500)),
            format!("epoll_ctl 0  {}", ctl("EPOLL_CTL_DEL", &[])),
            format!("epoll_ctl -1 ENOENT {}", ctl("EPOLL_CTL_MOD", &[])),
            r#"fdopen 1  {"mode": "w"}"#.to_string(),
        ]
    );
    // The accepted end (2.json): registered under data that is not its number.
    assert_eq!(
        new_calls(2),
        [
            format!(
                "poll 1  {}",
                poll(&["POLLIN", "POLLPRI"], &[], 1, 500_000_000)
            ),
            format!("ppoll 1  {}", poll(&["POLLIN"], &["POLLIN"], 1, 500)),
            format!("pselect 1  {}", select(&["READ"], 3, 7)),
            format!("epoll_ctl 0  {}", ctl("EPOLL_CTL_ADD", &["EPOLLIN"])),
            format!("epoll_ctl -1 EEXIST {}", ctl("EPOLL_CTL_ADD", &[])),
            format!("epoll_wait 2  {}", wait(&["EPOLLIN"], 1500)),
            format!("epoll_pwait 1  {}", wait(&["EPOLLIN"], 0)),
            "sockatmark 0  {}".to_string(),
            r#"isfdtype 1  {"fdtype": 49152}"#.to_string(),
            r#"fdopen 0 EINVAL {"mode": "x"}"#.to_string(),
        ]
    );
    assert!(new_calls(0).is_empty(), "{:?}", new_calls(0));
    // sendmmsg: one event for the call, one entry per message sent, the frames of all three.
    let msg = |sent: i64, sizes: &str| {
        format!(
            r#"{{"msghdr": {{"control_data": [], "control_data_len": 0, "iovec": {{"iovec_count": {}, "iovec_sizes": [{sizes}]}}}}, "transmitted_bytes": {sent}}}"#,
            sizes.split(", ").count()
        )
    };
    let send_flags = flags_json(
        &[
            "MSG_CONFIRM",
            "MSG_DONTROUTE",
            "MSG_DONTWAIT",
            "MSG_EOR",
            "MSG_MORE",
            "MSG_NOSIGNAL",
            "MSG_OOB",
        ],
        &[],
    );
    assert_eq!(
        new_calls(3),
        [
            format!(
                r#"sendmmsg 3  {{"bytes": 10, "flags": {send_flags}, "mmsghdr_count": 3, "mmsghdr_vec": [{}, {}, {}]}}"#,
                msg(3, "3"),
                msg(6, "2, 4"),
                msg(1, "1")
            ),
            format!(
                r#"sendmmsg -1 EFAULT {{"bytes": 0, "flags": {send_flags}, "mmsghdr_count": 1, "mmsghdr_vec": []}}"#
            ),
        ]
    );
    let frames = payloads(&t.join("r.pcap"));
    let sendmmsg = events
        .iter()
        .find(|e| e.ty == "sendmmsg")
        .expect("sendmmsg");
    assert_eq!(sendmmsg.frames.len(), 3, "{sendmmsg:?}");
    assert_eq!(carried(sendmmsg, &frames), b"abcdefghij");
    // recvmmsg: what came, and the time its timeout had left (the kernel writes it back).
    let recv: Vec<&Event> = events.iter().filter(|e| e.ty == "recvmmsg").collect();
    assert_eq!(recv.len(), 2, "{recv:?}");
    assert_eq!((recv[0].file, recv[0].ret, recv[0].bytes), (4, 3, Some(48)));
    let vec = format!(
        r#""mmsghdr_count": 3, "mmsghdr_vec": [{}, {}, {}], "timeout": {{"nanoseconds": "#,
        msg(3, "16"),
        msg(6, "16"),
        msg(1, "16")
    );
    assert!(recv[0].json.contains(&vec), "{}", recv[0].json);
    let left = recv[0]
        .json
        .split(r#""seconds": "#)
        .nth(1)
        .and_then(|s| s.trim_end_matches("}}").parse::<i64>().ok());
    assert!(matches!(left, Some(0..=5)), "{}", recv[0].json);
    assert_eq!((recv[1].ret, recv[1].errno.as_str()), (-1, "EAGAIN"));
    assert!(
        recv[1].json.ends_with(
            r#""mmsghdr_count": 1, "mmsghdr_vec": [], "timeout": {"nanoseconds": 0, "seconds": 0}}"#
        ),
        "{}",
        recv[1].json
    );
    assert!(recv[1].json.contains(r#""MSG_DONTWAIT": true"#));
    // Without -c, no socket capture is written.
    let folder = t.join("ev").join("readiness_calls_000");
    let pcaps = std::fs::read_dir(&folder)
        .expect("folder")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "pcap"))
        })
        .count();
    assert_eq!(pcaps, 0);
}

/// Each frame's TCP flags and payload (TCP or UDP), as tshark reads them, by frame number.
fn frame_signatures(capture: &Path) -> BTreeMap<u32, String> {
    support::tshark::fields(
        capture,
        "",
        &["frame.number", "tcp.flags", "tcp.payload", "udp.payload"],
    )
    .lines()
    .filter_map(|l| {
        let (n, rest) = l.split_once('\t')?;
        Some((n.parse().ok()?, rest.to_string()))
    })
    .collect()
}

/// `-c` (here through NETINTERCEPT_EVENTS_PCAP=1): each socket's N.pcap, created 0600, holds
/// exactly the packets its N.json lists, read cleanly by tshark, so its payload is the
/// socket's sends and receives.
#[test]
fn per_socket_pcaps_hold_the_packets_of_their_trace() {
    use std::os::unix::fs::PermissionsExt;
    let t = TempDir::new("events-pcap");
    let events = readiness_run(&t, "c.pcap", &[], &[("NETINTERCEPT_EVENTS_PCAP", "1")]);
    let main = frame_signatures(&t.join("c.pcap"));
    let folder = t.join("ev").join("readiness_calls_000");
    let mut files: Vec<u32> = events.iter().map(|e| e.file).collect();
    files.dedup();
    assert_eq!(files, [0, 1, 2, 3, 4]);
    for file in files {
        let pcap = folder.join(format!("{file}.pcap"));
        let mode = std::fs::metadata(&pcap)
            .expect("N.pcap beside N.json")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}", pcap.display());
        let report = support::tshark::inspect(&pcap);
        assert_eq!(
            (report.malformed, report.bad_checksums),
            (0, 0),
            "{}",
            pcap.display()
        );
        let listed: Vec<&String> = events
            .iter()
            .filter(|e| e.file == file)
            .flat_map(|e| &e.frames)
            .map(|f| main.get(f).expect("a listed frame is in the capture"))
            .collect();
        let own = frame_signatures(&pcap);
        assert_eq!(report.packets, own.len());
        assert_eq!(
            own.values().collect::<Vec<_>>(),
            listed,
            "{}: the packets its trace lists, in order",
            pcap.display()
        );
    }
    // What the client and the UDP sender sent is what their captures carry.
    let carried_by = |file: u32| -> Vec<u8> {
        let frames: BTreeMap<u32, Vec<u8>> = payloads(&folder.join(format!("{file}.pcap")))
            .into_iter()
            .collect();
        frames.into_values().flatten().collect()
    };
    // A send's bytes are its return value; sendmmsg's, its messages' sizes.
    let sent = |file: u32| -> i64 {
        events
            .iter()
            .filter(|e| e.file == file && e.success)
            .map(|e| match e.ty.as_str() {
                "send" => e.ret,
                "sendmmsg" => e.bytes.unwrap_or(0),
                _ => 0,
            })
            .sum()
    };
    assert_eq!(carried_by(1), b"helloworld");
    assert_eq!(sent(1), 10);
    assert_eq!(carried_by(3), b"abcdefghij");
    assert_eq!(sent(3), 10);
}
