//! TCP internals without root (issue 15): `TCP_INFO` samples taken by the collector from outside
//! the program (`-b`, `-u`), and TCP events as deeptcptracer shows them (`--tcp-events`), from
//! real connections: on the host's loopback, and with retransmissions, zero windows and a reset
//! in a network namespace of the test's own.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::{self, servers, TempDir};

/// Prints one tab-separated line per event of every trace under DIR: folder, file, type,
/// fake_call, timestamp_usec, the top-level keys, the details' keys in order, and the details
/// as `key=value` pairs (nested objects re-serialized).
const READER: &str = r#"
import json, os, sys
root = sys.argv[1]
for folder in sorted(os.listdir(root)):
    d = os.path.join(root, folder)
    for name in sorted((n for n in os.listdir(d) if n.endswith(".json")), key=lambda n: int(n[:-5])):
        for line in open(os.path.join(d, name), encoding="utf-8"):
            e = json.loads(line)
            det = e["details"]
            print("\t".join([folder, name[:-5], e["type"], str(e["fake_call"]),
                str(e["timestamp_usec"]), ",".join(e.keys()), ",".join(det.keys()),
                ";".join("%s=%s" % (k, json.dumps(v, sort_keys=True)) for k, v in det.items())]))
"#;

#[derive(Debug)]
struct Event {
    folder: String,
    file: u32,
    ty: String,
    fake: bool,
    usec: u64,
    keys: String,
    detail_keys: Vec<String>,
    details: Vec<(String, String)>,
}

impl Event {
    fn get(&self, key: &str) -> Option<&str> {
        self.details
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    fn num(&self, key: &str) -> u64 {
        self.get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{key} in {self:?}"))
    }
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
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            assert_eq!(c.len(), 8, "{l}");
            Event {
                folder: c[0].into(),
                file: c[1].parse().expect("file"),
                ty: c[2].into(),
                fake: c[3] == "True",
                usec: c[4].parse().expect("timestamp_usec"),
                keys: c[5].into(),
                detail_keys: c[6]
                    .split(',')
                    .filter(|k| !k.is_empty())
                    .map(str::to_owned)
                    .collect(),
                details: c[7]
                    .split(';')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            }
        })
        .collect()
}

/// Every field of `struct tcp_info` in the kernel's order: tcpsnitch's keys where it writes the
/// field, the kernel's names (linux/tcp.h) for the rest. A kernel older than 6.18 fills fewer:
/// then the keys are the first ones of this list.
const TCP_INFO_KEYS: &[&str] = &[
    "state",
    "ca_state",
    "retransmits",
    "probes",
    "backoff",
    "options",
    "snd_wscale",
    "rcv_wscale",
    "tcpi_delivery_rate_app_limited",
    "tcpi_fastopen_client_fail",
    "rto",
    "ato",
    "snd_mss",
    "rcv_mss",
    "unacked",
    "sacked",
    "lost",
    "retrans",
    "fackets",
    "last_data_sent",
    "last_ack_sent",
    "last_data_recv",
    "last_ack_recv",
    "pmtu",
    "rcv_ssthresh",
    "rtt",
    "rttvar",
    "snd_ssthresh",
    "snd_cwnd",
    "advmss",
    "reordering",
    "rcv_rtt",
    "rcv_space",
    "total_retrans",
    "tcpi_pacing_rate",
    "tcpi_max_pacing_rate",
    "tcpi_bytes_acked",
    "tcpi_bytes_received",
    "tcpi_segs_out",
    "tcpi_segs_in",
    "tcpi_notsent_bytes",
    "tcpi_min_rtt",
    "tcpi_data_segs_in",
    "tcpi_data_segs_out",
    "tcpi_delivery_rate",
    "tcpi_busy_time",
    "tcpi_rwnd_limited",
    "tcpi_sndbuf_limited",
    "tcpi_delivered",
    "tcpi_delivered_ce",
    "tcpi_bytes_sent",
    "tcpi_bytes_retrans",
    "tcpi_dsack_dups",
    "tcpi_reord_seen",
    "tcpi_rcv_ooopack",
    "tcpi_snd_wnd",
    "tcpi_rcv_wnd",
    "tcpi_rehash",
    "tcpi_total_rto",
    "tcpi_total_rto_recoveries",
    "tcpi_total_rto_time",
    "tcpi_received_ce",
    "tcpi_delivered_e1_bytes",
    "tcpi_delivered_e0_bytes",
    "tcpi_delivered_ce_bytes",
    "tcpi_received_e1_bytes",
    "tcpi_received_e0_bytes",
    "tcpi_received_ce_bytes",
    "tcpi_accecn_fail_mode",
    "tcpi_accecn_opt_seen",
];

/// A tcp_info event: tcpsnitch's top-level keys, a fake call, the fields of `struct tcp_info`
/// by name in order (at least those of Linux 5.19, whose tcpi_rcv_wnd the zero window needs).
fn check_tcp_info(e: &Event) {
    assert_eq!(
        e.keys, "type,timestamp_usec,return_value,success,thread_id,fake_call,details,frames",
        "{e:?}"
    );
    assert!(e.fake, "{e:?}");
    let n = e.detail_keys.len();
    let rcv_wnd = TCP_INFO_KEYS
        .iter()
        .position(|k| *k == "tcpi_rcv_wnd")
        .expect("listed");
    assert!(n > rcv_wnd, "{e:?}");
    assert_eq!(e.detail_keys, TCP_INFO_KEYS[..n], "{e:?}");
}

/// A sink: reads each connection to its end, then answers with the count and closes.
const SINK: &str = r#"
import socket, sys, threading
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", int(sys.argv[1]))); l.listen(8)
def serve(c):
    n = 0
    while True:
        b = c.recv(65536)
        if not b: break
        n += len(b)
    c.sendall(b"%d" % n); c.close()
while True:
    c, _ = l.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// The traced client: 1,000,000 bytes in sends of 10,000 (running a program on the way), a pause
/// of half a second without any call (printing the time around it), then the end.
const CLIENT: &str = r#"
import socket, subprocess, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
for i in range(100):
    if i == 10:
        # A vfork child (subprocess) closes its copies: under this process's pid.
        subprocess.run(["true"], check=True)
    s.sendall(b"x" * 10000)
    # A pace the collector keeps up with, so that samples are taken along the way.
    time.sleep(0.01)
before = time.time()
time.sleep(0.5)
after = time.time()
s.shutdown(socket.SHUT_WR)
assert s.recv(100) == b"1000000"
s.close()
print(int(before * 1e6), int(after * 1e6))
"#;

fn run_client(t: &TempDir, port: u16, options: &[&str]) -> (Vec<Event>, String, (u64, u64)) {
    let events_dir = t.join("ev");
    let _ = std::fs::remove_dir_all(&events_dir);
    let mut cmd = Command::new(support::cli());
    cmd.current_dir(t.path())
        .arg("-w")
        .arg(t.join("c.pcap"))
        .arg("--events")
        .arg(&events_dir)
        .args(options)
        .args([
            "--",
            &support::python_exe(),
            "-c",
            CLIENT,
            &port.to_string(),
        ]);
    let out = support::run_ok(&mut cmd, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut times = stdout.split_whitespace().map(|n| n.parse().expect("usec"));
    let pause = (times.next().expect("before"), times.next().expect("after"));
    (
        read_events(&events_dir),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        pause,
    )
}

/// `-b`: one sample per 65,536 bytes moved (each covers at least that and less than one send
/// more), every field by name, `tcpi_bytes_acked` growing. `-u`: samples also while the
/// program makes no call.
#[test]
fn samples_every_bytes_and_every_interval() {
    let t = TempDir::new("tcpinfo");
    let port = support::free_port();
    let _sink = servers::python(SINK, &[&port.to_string()]);
    servers::wait_tcp("127.0.0.1", port);

    let (events, stderr, _) = run_client(&t, port, &["-b", "65536"]);
    assert!(!stderr.contains("TCP_INFO"), "{stderr}");
    let samples: Vec<&Event> = events.iter().filter(|e| e.ty == "tcp_info").collect();
    // 1,000,000 bytes sent (and 7 received): at most 15 samples of 65,536, at least 13 of
    // less than 75,536.
    assert!(
        (13..=15).contains(&samples.len()),
        "{} samples: {samples:#?}",
        samples.len()
    );
    let mut acked = Vec::new();
    for s in &samples {
        check_tcp_info(s);
        assert_eq!(s.file, 0, "the client's one socket: {s:?}");
        assert_eq!(s.num("state"), 1, "ESTABLISHED: {s:?}");
        // What was acknowledged was sent (the SYN counts one acknowledged byte).
        assert!(
            s.num("tcpi_bytes_sent") + 1 >= s.num("tcpi_bytes_acked"),
            "{s:?}"
        );
        assert!(s.num("snd_mss") > 0 && s.num("rto") > 0, "{s:?}");
        acked.push(s.num("tcpi_bytes_acked"));
    }
    assert!(acked.windows(2).all(|w| w[0] <= w[1]), "{acked:?}");
    assert!(acked[0] < acked[acked.len() - 1], "{acked:?}");
    assert!(acked[acked.len() - 1] >= 65536 * 12, "{acked:?}");
    // No clock-driven samples without -u (nor --tcp-events).
    assert!(events.iter().all(|e| e.ty != "tcp_event"), "{events:#?}");

    let (events, _, (before, after)) = run_client(&t, port, &["-u", "20000"]);
    let samples: Vec<&Event> = events.iter().filter(|e| e.ty == "tcp_info").collect();
    for s in &samples {
        check_tcp_info(s);
    }
    // The program slept without a call between `before` and `after`: the collector's clock
    // took samples all the same.
    let idle = samples
        .iter()
        .filter(|s| s.usec > before && s.usec < after)
        .count();
    assert!(idle >= 1, "no sample while the program slept: {samples:#?}");
}

/// `ip` runs in the namespace: loopback up, and a way to lose packets (netem when the kernel
/// has it, else loopback taken down for a moment).
const NAMESPACED: &str = r#"
import os, socket, struct, sys, threading, time

def tuple_of(s):
    l, p = s.getsockname(), s.getpeername()
    return "%s:%d %s:%d" % (l[0], l[1], p[0], p[1])

def ip(updown):
    # A real fork (subprocess would vfork, whose calls are filed under this process).
    pid = os.fork()
    if pid == 0:
        os.execvp("ip", ["ip", "link", "set", "lo", updown])
    assert os.waitpid(pid, 0)[1] == 0

def total_retrans(s):
    return struct.unpack_from("I", s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104), 100)[0]

l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(8)
port = l.getsockname()[1]

# A: the receiver stops reading: its window closes, the sender is told a zero window.
a = socket.create_connection(("127.0.0.1", port)); a_srv, _ = l.accept()
a_srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
a.setblocking(False)
try:
    while True:
        a.send(b"z" * 65536)
except BlockingIOError:
    pass
print("zero", tuple_of(a), tuple_of(a_srv), flush=True)
time.sleep(0.5)
a.close(); a_srv.close()

# B: packets lost while data flows: the sender retransmits.
b = socket.create_connection(("127.0.0.1", port)); b_srv, _ = l.accept()
stop = threading.Event()
def pump():
    try:
        while not stop.is_set():
            b.sendall(b"r" * 65536)
    except OSError:
        pass
def drain():
    try:
        while b_srv.recv(1 << 20):
            pass
    except OSError:
        pass
threads = [threading.Thread(target=pump), threading.Thread(target=drain)]
for th in threads: th.start()
for attempt in range(5):
    time.sleep(0.2)
    ip("down")
    time.sleep(1.0)
    ip("up")
    deadline = time.time() + 5
    while total_retrans(b) == 0 and time.time() < deadline:
        time.sleep(0.05)
    if total_retrans(b) > 0:
        break
print("retrans", tuple_of(b), total_retrans(b), flush=True)
time.sleep(0.2)
stop.set(); b.shutdown(socket.SHUT_WR)
for th in threads: th.join()
b.close(); b_srv.close()

# C: the peer resets the connection.
c = socket.create_connection(("127.0.0.1", port)); c_srv, _ = l.accept()
c_srv.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
c_srv.close()
try:
    c.recv(10)
    sys.exit("no reset")
except ConnectionResetError:
    pass
print("reset", "%s:%d" % c.getsockname(), "127.0.0.1:%d" % port, flush=True)
c.close(); l.close()
"#;

/// Whether this test may make a network namespace of its own (root, with unshare and ip).
fn namespace_ok() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root: no network namespace of our own".into());
    }
    let probe = Command::new("unshare")
        .args(["-n", "ip", "link", "set", "lo", "up"])
        .output();
    match probe {
        Ok(o) if o.status.success() => Ok(()),
        other => Err(format!("unshare -n ip link set lo up: {other:?}")),
    }
}

/// A line of `--tcp-events` output: EVENT, SOURCE, DESTINATION, TCP_STATE, SK_ERR, as columns.
fn lines_of<'a>(stderr: &'a str, event: &str) -> Vec<&'a str> {
    stderr
        .lines()
        .filter(|l| l.split_whitespace().next() == Some(event))
        .collect()
}

/// In the test's own network namespace (never the host's loopback): a receiver that stops
/// reading (zero window, both ends), packets lost (retransmissions by the sender, with its
/// 4-tuple), a reset (tcp_reset with ECONNRESET) — on stderr in deeptcptracer's columns and as
/// `tcp_event` lines in the traces.
#[test]
fn retransmissions_zero_windows_and_reset_in_own_namespace() {
    if let Err(why) = namespace_ok() {
        eprintln!("skipped: {why}");
        return;
    }
    let t = TempDir::new("tcpev-ns");
    let events_dir = t.join("ev");
    let mut cmd = Command::new("unshare");
    cmd.current_dir(t.path())
        .args(["-n", "sh", "-c", "ip link set lo up && exec \"$@\"", "sh"])
        .arg(support::cli())
        .arg("-w")
        .arg(t.join("n.pcapng"))
        .arg("--events")
        .arg(&events_dir)
        .args(["-u", "20000", "--tcp-events", "-t", "--"])
        .args([&support::python_exe(), "-c", NAMESPACED]);
    let out = support::run_ok(&mut cmd, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let said = |what: &str| -> Vec<String> {
        stdout
            .lines()
            .find(|l| l.starts_with(what))
            .unwrap_or_else(|| panic!("{what} in {stdout}"))
            .split_whitespace()
            .skip(1)
            .map(str::to_owned)
            .collect()
    };
    let header = stderr
        .lines()
        .find(|l| l.contains("EVENT") && l.contains("SK_ERR"))
        .expect("the header");
    for column in [
        "TIME",
        "EVENT",
        "PID",
        "COMM",
        "SOURCE",
        "DESTINATION",
        "TCP_STATE",
        "SK_ERR",
    ] {
        assert!(header.contains(column), "{header}");
    }
    // With -t each line starts with HH:MM:SS.mmm: the event is the second word.
    let events_named = |name: &str| -> Vec<Vec<&str>> {
        stderr
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<&str>>())
            .filter(|w| w.len() > 1 && w[1] == name)
            .collect()
    };
    assert!(
        lines_of(&stderr, "tcp_set_state()").is_empty(),
        "-t: time first"
    );

    // A: the sender was told a zero window, the receiver advertised one.
    let zero = said("zero");
    let (sender, receiver) = (&zero[0..2], &zero[2..4]);
    let received = events_named("tcp_ack()/win==0");
    assert!(
        received
            .iter()
            .any(|w| w[4] == sender[0] && w[5] == sender[1]),
        "{stderr}"
    );
    let advertised = events_named("tcp_select_window()/win==0");
    assert!(
        advertised
            .iter()
            .any(|w| w[4] == receiver[0] && w[5] == receiver[1]),
        "{stderr}"
    );

    // B: the sender retransmitted, towards its peer.
    let retrans = said("retrans");
    assert_ne!(retrans[2], "0", "the kernel counted no retransmission");
    let seen = events_named("tcp_retransmit_skb()");
    assert!(
        seen.iter()
            .any(|w| w[4] == retrans[0] && w[5] == retrans[1]),
        "no retransmission of {retrans:?} in\n{stderr}"
    );

    // C: the reset, with the error the program got.
    let reset = said("reset");
    let resets = events_named("tcp_reset()");
    assert!(
        resets
            .iter()
            .any(|w| w[4] == reset[0] && w[5] == reset[1] && w.contains(&"ECONNRESET")),
        "{stderr}"
    );
    // The connections' states, from the calls and the samples.
    let states: Vec<String> = events_named("tcp_set_state()")
        .iter()
        .filter(|w| w[4] == retrans[0])
        .map(|w| w[6..].join(" "))
        .collect();
    assert!(
        states.starts_with(&[
            "CLOSE -> SYN_SENT".to_string(),
            "SYN_SENT -> ESTABLISHED".to_string()
        ]),
        "{states:?}"
    );

    // The same events are tcp_event lines in the traces, with their 4-tuple.
    let traced = read_events(&events_dir);
    let tcp_events: Vec<&Event> = traced.iter().filter(|e| e.ty == "tcp_event").collect();
    for e in &tcp_events {
        assert!(e.fake, "{e:?}");
        let keys = e.detail_keys.join(",");
        assert!(
            keys == "event,source,destination,tcp_state,sk_err"
                || keys
                    == "event,source,destination,tcp_state,sk_err,retransmitted,total_retrans,\
                        direction",
            "{e:?}"
        );
    }
    let port = |addr: &str| addr.rsplit(':').next().unwrap_or("").to_string();
    let retransmission = tcp_events
        .iter()
        .find(|e| {
            e.get("event") == Some("\"tcp_retransmit_skb()\"")
                && e.get("source")
                    .is_some_and(|s| s.contains(&format!("\"port\": \"{}\"", port(&retrans[0]))))
        })
        .expect("a tcp_event for the retransmission");
    assert!(
        retransmission
            .get("destination")
            .is_some_and(|s| s.contains(&format!("\"port\": \"{}\"", port(&retrans[1])))),
        "{retransmission:?}"
    );
    assert_eq!(retransmission.get("direction"), Some("\"sent\""));
    assert!(retransmission.num("retransmitted") >= 1);
    for e in traced.iter().filter(|e| e.ty == "tcp_info") {
        check_tcp_info(e);
    }

    // In the pcapng, a packet of the sender after its retransmissions names them.
    let noted = support::tshark::fields(
        &t.join("n.pcapng"),
        "frame.comment contains \"tcp_retransmit_skb()\"",
        &["tcp.srcport", "frame.comment"],
    );
    assert!(
        noted
            .lines()
            .any(|l| l.starts_with(&format!("{}\t", port(&retrans[0])))),
        "{noted}"
    );
    assert!(
        traced.iter().all(|e| e.folder.starts_with("python")),
        "{traced:#?}"
    );
}

/// As an ordinary user (no capability), the CLI's collector copies its program's sockets with
/// pidfd_getfd: samples are there, and nothing says they could not be taken.
#[test]
fn sampling_works_as_an_ordinary_user() {
    let Some(user) = crate::isolation::test_user() else {
        return;
    };
    let t = TempDir::new("tcpinfo-user");
    std::os::unix::fs::chown(t.path(), Some(user.0), Some(user.1)).expect("chown");
    let port = support::free_port();
    let _sink = servers::python(SINK, &[&port.to_string()]);
    servers::wait_tcp("127.0.0.1", port);
    let client = r#"
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"u" * 100000)
time.sleep(0.3)
s.shutdown(socket.SHUT_WR)
assert s.recv(100) == b"100000"
s.close()
"#;
    let mut cmd = crate::isolation::setpriv(user, t.path());
    cmd.arg(support::cli())
        .arg("-q")
        .arg("-w")
        .arg(t.join("u.pcap"))
        .arg("--events")
        .arg(t.join("ev"))
        .args(["-u", "20000", "-b", "50000", "--tcp-events", "--"])
        .args(["/usr/bin/python3", "-c", client, &port.to_string()]);
    let out = support::run_ok(&mut cmd, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("cannot take TCP_INFO"), "{stderr}");
    let events = read_events(&t.join("ev"));
    let samples: Vec<&Event> = events.iter().filter(|e| e.ty == "tcp_info").collect();
    assert!(samples.len() >= 2, "{events:#?}");
    for s in &samples {
        check_tcp_info(s);
    }
    assert!(
        samples.iter().any(|s| s.num("tcpi_bytes_acked") >= 100000),
        "{samples:#?}"
    );
    // The state changes on stderr came from the calls and the samples alike.
    assert!(
        lines_of(&stderr, "tcp_set_state()")
            .iter()
            .any(|l| l.contains("SYN_SENT -> ESTABLISHED")),
        "{stderr}"
    );
}

/// A program the kernel does not let its ancestor copy descriptors from (it made itself
/// non-dumpable; the CLI runs as an ordinary user): one line says there are no samples, the run
/// goes on, and the events the calls tell are still printed.
#[test]
fn refused_sampling_is_said_once_and_the_run_goes_on() {
    let Some(user) = crate::isolation::test_user() else {
        return;
    };
    let t = TempDir::new("tcpinfo-refused");
    std::os::unix::fs::chown(t.path(), Some(user.0), Some(user.1)).expect("chown");
    let port = support::free_port();
    let _sink = servers::python(SINK, &[&port.to_string()]);
    servers::wait_tcp("127.0.0.1", port);
    let client = r#"
import ctypes, socket, sys, time
PR_SET_DUMPABLE = 4
assert ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
for i in range(2):
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    s.sendall(b"n" * 100000)
    time.sleep(0.2)
    s.shutdown(socket.SHUT_WR)
    assert s.recv(100) == b"100000"
    s.close()
print("done")
"#;
    let mut cmd = crate::isolation::setpriv(user, t.path());
    cmd.arg(support::cli())
        .arg("-q")
        .arg("-w")
        .arg(t.join("r.pcap"))
        .arg("--events")
        .arg(t.join("ev"))
        .args(["-u", "20000", "-b", "50000", "--tcp-events", "--"])
        .args(["/usr/bin/python3", "-c", client, &port.to_string()]);
    let out = support::run_ok(&mut cmd, Duration::from_secs(60));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "done");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("netintercept: cannot take TCP_INFO samples"))
        .collect();
    assert_eq!(said.len(), 1, "{stderr}");
    assert!(said[0].contains("Operation not permitted"), "{stderr}");
    let events = read_events(&t.join("ev"));
    assert!(events.iter().all(|e| e.ty != "tcp_info"), "{events:#?}");
    // Both connections' handshakes, from the calls alone.
    let established = lines_of(&stderr, "tcp_set_state()")
        .iter()
        .filter(|l| l.contains("SYN_SENT -> ESTABLISHED"))
        .count();
    assert_eq!(established, 2, "{stderr}");
}

/// A vfork child (Python's subprocess) closes its copies of its parent's sockets, and its records
/// are filed under the parent's pid: the parent's trace goes on (its later calls, its own close,
/// and the samples taken of it), as the capture does.
#[test]
fn a_vfork_childs_closes_leave_the_parents_trace() {
    let t = TempDir::new("tcpinfo-vfork");
    let port = support::free_port();
    let _sink = servers::python(SINK, &[&port.to_string()]);
    servers::wait_tcp("127.0.0.1", port);
    let client = r#"
import socket, subprocess, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"before")
subprocess.run(["true"], check=True)
# The collector tells a vfork child's close from its parent's by the parent's descriptor, read
# in /proc while the parent lives: give it that moment.
time.sleep(0.5)
s.sendall(b"after")
s.shutdown(socket.SHUT_WR)
assert s.recv(100) == b"11"
s.close()
"#;
    let mut cmd = Command::new(support::cli());
    cmd.current_dir(t.path())
        .arg("-w")
        .arg(t.join("v.pcap"))
        .arg("--events")
        .arg(t.join("ev"))
        .args([
            "--",
            &support::python_exe(),
            "-c",
            client,
            &port.to_string(),
        ]);
    support::run_ok(&mut cmd, Duration::from_secs(60));
    let events = read_events(&t.join("ev"));
    let types: Vec<&str> = events
        .iter()
        .filter(|e| e.folder.ends_with("_000") && e.file == 0)
        .map(|e| e.ty.as_str())
        .filter(|t| {
            matches!(
                *t,
                "socket" | "connect" | "send" | "shutdown" | "recv" | "close"
            )
        })
        .collect();
    assert_eq!(
        types,
        ["socket", "connect", "send", "send", "shutdown", "recv", "close"],
        "{events:#?}"
    );
}

/// Counts the data connections that reached their end (`d…`, read until EOF) and tells the
/// count to whoever asks (`q`).
const EOF_COUNTER: &str = r#"
import socket, sys, threading
eofs = 0
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", int(sys.argv[1]))); l.listen(8)
def serve(c):
    global eofs
    if c.recv(1) == b"q":
        c.sendall(b"%d" % eofs); c.close(); return
    while c.recv(65536):
        pass
    eofs += 1
    c.close()
while True:
    c, _ = l.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// The collector's copies are closed at once: a program's close (no shutdown) still ends its
/// connection then, while samples are taken every millisecond, and not when the run ends.
#[test]
fn the_programs_close_still_ends_the_connection() {
    let t = TempDir::new("tcpinfo-close");
    let port = support::free_port();
    let _counter = servers::python(EOF_COUNTER, &[&port.to_string()]);
    servers::wait_tcp("127.0.0.1", port);
    let client = r#"
import socket, sys, time
port = int(sys.argv[1])
def eofs():
    q = socket.create_connection(("127.0.0.1", port))
    q.sendall(b"q")
    n = int(q.recv(10))
    q.close()
    return n
s = socket.create_connection(("127.0.0.1", port))
for i in range(50):
    s.sendall(b"d" * 1000)
    time.sleep(0.002)
# (The test's own probe for the port was a connection too.)
before = eofs()
s.close()
for attempt in range(100):
    if eofs() == before + 1:
        print("eof seen"); break
    time.sleep(0.02)
"#;
    let mut cmd = Command::new(support::cli());
    cmd.current_dir(t.path())
        .arg("-q")
        .arg("-w")
        .arg(t.join("e.pcap"))
        .args(["-u", "1000", "--tcp-events", "--"])
        .args([&support::python_exe(), "-c", client, &port.to_string()]);
    let out = support::run_ok(&mut cmd, Duration::from_secs(60));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "eof seen",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
