//! Issue 12: the exact wire. Calls that change a connection in ways plain data does not (Fast
//! Open, urgent data, bytes discarded unread, dissolved associations, refused, interrupted,
//! reset or unanswered connects) must give the packets the kernel itself put on loopback.
//!
//! Each scenario runs `tests/programs/wire.c` in a network namespace of its own (`unshare -n`,
//! so these tests need root): loopback there carries nothing else, the Fast Open sysctl is set
//! there alone, and the same scenario run untraced under `tcpdump -i lo` gives the kernel's own
//! packets to compare with. Servers are untraced; the client is traced by the CLI.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::{self, pcap_reader::Capture, tshark, TempDir};

/// Long enough for a correct run on a loaded 2-core machine.
const LIMIT: Duration = Duration::from_secs(30);

/// One scenario's directory and its build of the wire program.
struct Scenario {
    dir: TempDir,
    wire: PathBuf,
}

impl Scenario {
    fn new(tag: &str) -> Self {
        let dir = TempDir::new(tag);
        let wire = support::build_c(dir.path(), "wire", "wire", &["-O1"], &[]);
        Self { dir, wire }
    }

    /// The untraced `server` (a `serve-*` role, may be empty), then `client` traced by the CLI
    /// into `ours.pcapng`; the client's standard output.
    fn traced(&self, server: &str, client: &str) -> String {
        self.netns(&format!(
            "{}\"$NI\" -w ours.pcapng -- \"$W\" {client}\n",
            self.server_line(server)
        ))
    }

    /// The same scenario untraced, with `tcpdump -i lo` writing the kernel's packets to
    /// `real.pcap`; the client's standard output.
    fn real(&self, server: &str, client: &str) -> String {
        self.netns(&format!(
            "tcpdump -i lo -U --immediate-mode -Z root -w real.pcap 2>tcpdump.log & TD=$!\n\
             # tcpdump says it listens a moment before it sees every packet: probe (UDP to\n\
             # port 9, never compared) until one is in the file, past its 24-byte header.\n\
             until [ $(stat -c %s real.pcap 2>/dev/null || echo 0) -gt 24 ]; do\n\
               \"$W\" probe 9; sleep 0.05\n\
             done\n\
             {}\"$W\" {client}\n\
             # The same the other way: tcpdump writes in the order it captured, so once a probe\n\
             # to another port, sent after the client, is in the file, every packet of the\n\
             # client's is too. (A fixed sleep lost the last connection's packets on a loaded\n\
             # machine; so did counting port-9 probes, as the first ones were still on their\n\
             # way.)\n\
             \"$W\" probe 10\n\
             for i in $(seq 200); do\n\
               [ -n \"$(tcpdump -r real.pcap udp port 10 2>/dev/null)\" ] && break\n\
               sleep 0.05\n\
             done\n\
             kill $TD; wait $TD || true\n",
            self.server_line(server)
        ))
    }

    fn server_line(&self, server: &str) -> String {
        if server.is_empty() {
            String::new()
        } else {
            format!("\"$W\" {server}\n")
        }
    }

    /// Run `body` with `sh` in a new network namespace whose loopback is up and which allows
    /// TCP Fast Open both ways; the detached server, if any, is ended afterwards.
    fn netns(&self, body: &str) -> String {
        let script = format!(
            "set -e\n\
             ip link set lo up\n\
             sysctl -qw net.ipv4.tcp_fastopen=3\n\
             {body}\
             if [ -e server.pid ]; then kill $(cat server.pid) 2>/dev/null || true; fi\n"
        );
        let mut cmd = Command::new("unshare");
        cmd.args(["-n", "sh", "-c", &script])
            .current_dir(self.dir.path())
            .env("W", &self.wire)
            .env("NI", support::cli())
            .env_remove("LD_PRELOAD")
            .env_remove("NETINTERCEPT_FILE")
            .env_remove("NETINTERCEPT_FILTER")
            .env_remove("NETINTERCEPT_FORMAT");
        let out = support::run_with_timeout(&mut cmd, LIMIT);
        assert!(
            out.status.success(),
            "scenario failed (these tests need root for `unshare -n`):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_file(self.dir.join("server.pid"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn ours(&self) -> PathBuf {
        self.dir.join("ours.pcapng")
    }

    fn kernels(&self) -> PathBuf {
        self.dir.join("real.pcap")
    }

    /// Our capture passed through both readers (tshark and ours, which wants plain pcap).
    fn clean(&self) -> Capture {
        let pcap = self.dir.join("ours.pcap");
        let converted = Command::new("editcap")
            .args(["-F", "pcap"])
            .arg(self.ours())
            .arg(&pcap)
            .output()
            .expect("editcap is installed (with tshark)");
        assert!(converted.status.success(), "editcap");
        support::check_clean(&pcap)
    }
}

/// The port after `prefix` ("local 43210") on the line of `stdout` that starts with `prefix`.
fn port_after(stdout: &str, prefix: &str) -> u16 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|rest| rest.rsplit(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no '{prefix} … PORT' line in {stdout:?}"))
}

fn lo(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

const PORT: u16 = 5555;

/// Each TCP packet of `file` matching `filter`, as the `fields` tshark gives.
fn rows(file: &Path, filter: &str, fields: &[&str]) -> Vec<Vec<String>> {
    tshark::fields(file, filter, fields)
        .lines()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

/// tshark prints booleans as 1/0 (4.0) or True/False (later).
fn yes(v: &str) -> bool {
    v == "1" || v.eq_ignore_ascii_case("true")
}

/// Per TCP connection, in the order they start: the bytes the client sent to the server and
/// the bytes it got back, in order, read by tshark from each packet's payload (loopback
/// retransmits nothing, so no byte repeats).
fn conversations(file: &Path) -> BTreeMap<u32, (Vec<u8>, Vec<u8>)> {
    let mut convs: BTreeMap<u32, (Vec<u8>, Vec<u8>)> = BTreeMap::new();
    for row in rows(file, "tcp", &["tcp.stream", "tcp.srcport", "tcp.payload"]) {
        let stream: u32 = row[0].parse().expect("stream index");
        let bytes = hex(row.get(2).map_or("", String::as_str));
        let conv = convs.entry(stream).or_default();
        if row[1] == PORT.to_string() {
            conv.1.extend(bytes);
        } else {
            conv.0.extend(bytes);
        }
    }
    convs
}

/// tshark's hex ("61:62:63" or "616263") as bytes.
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).expect("ascii"), 16).expect("hex"))
        .collect()
}

/// The conversations' bytes, without the ports (which differ per run).
fn exchanged(file: &Path) -> Vec<(String, String)> {
    conversations(file)
        .into_values()
        .map(|(to, from)| {
            (
                String::from_utf8_lossy(&to).into_owned(),
                String::from_utf8_lossy(&from).into_owned(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. TCP Fast Open

/// sendto(MSG_FASTOPEN) with no connect: without a cookie on a non-blocking socket (-1
/// EINPROGRESS, the bytes sent after with send), with the cookie (data in the SYN), blocking,
/// and blocking from a socket bound to the wildcard address. Each connection is captured from
/// the address and port the kernel chose, every byte each way.
#[test]
fn fast_open_connections_are_captured_with_their_ports() {
    let s = Scenario::new("wire-tfo");
    let out = s.traced(&format!("serve-echo {PORT} 4 tfo"), &format!("tfo {PORT}"));
    assert!(
        out.contains("one: EINPROGRESS")
            && out.contains("two: sent")
            && out.contains("three: sent"),
        "the kernel took both Fast Open paths: {out}"
    );
    let cap = s.clean();
    for msg in ["one", "two", "three", "four"] {
        let (client, server) = (lo(port_after(&out, &format!("{msg}:"))), lo(PORT));
        let to = cap.tcp.get(&(client, server));
        let back = cap.tcp.get(&(server, client));
        assert!(
            to.is_some_and(|d| d.syn && d.bytes == msg.as_bytes())
                && back.is_some_and(|d| d.syn && d.bytes == msg.as_bytes()),
            "{msg}: a handshake and '{msg}' each way between {client} and {server}: {:?}",
            cap.tcp.keys().collect::<Vec<_>>()
        );
    }
    assert_eq!(cap.tcp.len(), 8, "four connections, nothing else");
    // The kernel's own packets carry the same bytes (in the SYN itself with a cookie). The
    // reference capture sometimes lacks the last connection's packets (about one run in three
    // today, with the client's bytes all echoed: tcpdump's, not ours), so it is taken again
    // before the two are said to differ.
    let ours = exchanged(&s.ours());
    let mut kernels = Vec::new();
    for _ in 0..3 {
        s.real(&format!("serve-echo {PORT} 4 tfo"), &format!("tfo {PORT}"));
        kernels = exchanged(&s.kernels());
        if kernels == ours {
            break;
        }
    }
    assert_eq!(ours, kernels);
}

// ---------------------------------------------------------------------------------------------
// 2. A datagram received without its sender's name

#[test]
fn udp_reply_through_recvmsg_without_a_name_is_captured() {
    let s = Scenario::new("wire-udp-noname");
    let out = s.traced(
        &format!("serve-udp {PORT} 1"),
        &format!("udp-nullname {PORT}"),
    );
    let client = lo(port_after(&out, "local"));
    let cap = s.clean();
    let got: Vec<_> = cap
        .udp
        .iter()
        .map(|d| (d.src, d.dst, d.payload.as_slice()))
        .collect();
    assert_eq!(
        got,
        [
            (client, lo(PORT), &b"ping"[..]),
            (lo(PORT), client, &b"ping"[..])
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Bytes discarded unread (MSG_TRUNC on a stream)

/// The server writes "HEAD0123456789TAIL" in one segment; the client reads HEAD, discards 10
/// bytes with recv(MSG_TRUNC) and reads TAIL. Nothing is invented for the 10 bytes: the peer's
/// sequence jumps by exactly 10 where the kernel's segment has them, and Wireshark says what is
/// true, no more: the ACK covering them acknowledges unseen bytes (our comment says why), TAIL
/// follows bytes not captured, and the next ACK (the FIN) again covers unseen bytes
/// (Wireshark flags the first ACK after a missing segment whatever it follows).
#[test]
fn bytes_discarded_unread_are_a_gap_not_invented_data() {
    let s = Scenario::new("wire-trunc");
    let out = s.traced(&format!("serve-trunc {PORT}"), &format!("trunc {PORT}"));
    assert_eq!(out, "discarded 10\n");
    let report = tshark::inspect(&s.ours());
    assert_eq!((report.bad_checksums, report.malformed), (0, 0));
    let flagged = rows(
        &s.ours(),
        "tcp.analysis.flags",
        &[
            "tcp.srcport",
            "tcp.seq",
            "tcp.ack",
            "tcp.len",
            "tcp.flags.fin",
            "_ws.expert.message",
            "frame.comment",
        ],
    );
    let summary: Vec<_> = flagged
        .iter()
        .map(|r| {
            let from_server = r[0] == PORT.to_string();
            let (seq, ack, len) = (r[1].as_str(), r[2].as_str(), r[3].as_str());
            let what = if r[5].contains("Previous segment(s) not captured") {
                "lost"
            } else if r[5].contains("ACKed segment that wasn't captured") {
                "ack-lost"
            } else {
                "other"
            };
            (from_server, seq, ack, len, yes(&r[4]), what)
        })
        .collect();
    assert_eq!(
        summary,
        [
            (false, "3", "15", "0", false, "ack-lost"),
            (true, "15", "3", "4", false, "lost"),
            (false, "3", "19", "0", true, "ack-lost"),
        ],
        "{}",
        report.flagged
    );
    assert!(
        flagged[0][6].ends_with("; 10 bytes discarded unread (MSG_TRUNC): not captured"),
        "the ACK says why: {}",
        flagged[0][6]
    );
    assert_eq!(report.analysis_flags, 3, "{}", report.flagged);
    let convs = conversations(&s.ours());
    let (to, from) = convs.values().next().expect("one connection");
    assert_eq!(
        (to.as_slice(), from.as_slice()),
        (&b"go"[..], &b"HEADTAIL"[..])
    );
    // The kernel's segment: TAIL's relative sequence number is 15 there too.
    s.real(&format!("serve-trunc {PORT}"), &format!("trunc {PORT}"));
    let real = rows(
        &s.kernels(),
        &format!("tcp.srcport == {PORT} && tcp.len > 0"),
        &["tcp.seq", "tcp.payload"],
    );
    assert_eq!(real.len(), 1);
    assert_eq!(real[0][0], "1");
    let payload = hex(&real[0][1]);
    assert_eq!(payload, b"HEAD0123456789TAIL");
    assert_eq!(1 + payload.len() - 4, 15);
}

// ---------------------------------------------------------------------------------------------
// 4. Urgent data

/// The URG segments, field by field: (from the server, urgent pointer, payload).
fn urgent_segments(file: &Path) -> Vec<(bool, String, Vec<u8>)> {
    rows(
        file,
        "tcp.flags.urg == 1",
        &["tcp.srcport", "tcp.urgent_pointer", "tcp.payload"],
    )
    .into_iter()
    .map(|r| (r[0] == PORT.to_string(), r[1].clone(), hex(&r[2])))
    .collect()
}

#[test]
fn urgent_data_goes_as_the_kernel_sends_it() {
    // The client sends "abc" with MSG_OOB; then the server sends "!" with MSG_OOB, which the
    // client takes with recv(MSG_OOB).
    for (server, client, want) in [
        ("serve-oob-recv", "oob-send", (false, "3", &b"abc"[..])),
        ("serve-oob-send", "oob-recv", (true, "1", &b"!"[..])),
    ] {
        let s = Scenario::new("wire-oob");
        let server = format!("{server} {PORT}");
        let client = format!("{client} {PORT}");
        s.traced(&server, &client);
        s.clean();
        s.real(&server, &client);
        let ours = urgent_segments(&s.ours());
        assert_eq!(
            ours,
            urgent_segments(&s.kernels()),
            "{client}: as the kernel"
        );
        assert_eq!(
            ours,
            [(want.0, want.1.to_string(), want.2.to_vec())],
            "{client}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 5. connect(AF_UNSPEC)

#[test]
fn connect_af_unspec_dissolves_the_association_and_the_next_connect_is_new() {
    let s = Scenario::new("wire-unspec");
    let (server, client) = (format!("serve-echo {PORT} 2"), format!("unspec-tcp {PORT}"));
    let out = s.traced(&server, &client);
    let (first, second) = (port_after(&out, "one:"), port_after(&out, "two:"));
    assert_ne!(first, second);
    let cap = s.clean();
    let way = |port: u16| &cap.tcp[&(lo(port), lo(PORT))];
    assert!(way(first).syn && way(first).rst && !way(first).fin);
    assert_eq!(way(first).bytes, b"one");
    assert!(way(second).syn && !way(second).rst && way(second).fin);
    assert_eq!(way(second).bytes, b"two");
    // The kernel's reset: RST/ACK from the client at its next sequence number.
    s.real(&server, &client);
    let rst = |file: &Path| {
        rows(
            file,
            "tcp.flags.reset == 1",
            &["tcp.srcport", "tcp.flags", "tcp.seq", "tcp.ack"],
        )
        .into_iter()
        .map(|r| {
            (
                r[0] != PORT.to_string(),
                r[1].clone(),
                r[2].clone(),
                r[3].clone(),
            )
        })
        .collect::<Vec<_>>()
    };
    assert_eq!(rst(&s.ours()), rst(&s.kernels()));
    assert_eq!(rst(&s.ours()).len(), 1);
    assert_eq!(exchanged(&s.ours()), exchanged(&s.kernels()));

    // A UDP association likewise: the next connect's datagrams carry the new port. (This half
    // held before: the collector forgot the peer, and the next connect reported its port.)
    let s = Scenario::new("wire-unspec-udp");
    let out = s.traced(
        &format!("serve-udp {PORT} 2"),
        &format!("unspec-udp {PORT}"),
    );
    let (first, second) = (port_after(&out, "one:"), port_after(&out, "two:"));
    let cap = s.clean();
    let got: Vec<_> = cap
        .udp
        .iter()
        .map(|d| (d.src, d.dst, d.payload.as_slice()))
        .collect();
    assert_eq!(
        got,
        [
            (lo(first), lo(PORT), &b"one"[..]),
            (lo(PORT), lo(first), &b"one"[..]),
            (lo(second), lo(PORT), &b"two"[..]),
            (lo(PORT), lo(second), &b"two"[..]),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Refused connects

/// Blocking and non-blocking, IPv4 and IPv6, and to another loopback address: the SYN leaves
/// from the port the kernel used (the program prints it) and the address the kernel uses.
#[test]
fn refused_connects_come_from_the_kernels_address_and_port() {
    for (family, mode, host, source) in [
        ("4", "blocking", "", "127.0.0.1"),
        ("4", "nonblocking", "", "127.0.0.1"),
        ("6", "blocking", "", "::1"),
        ("6", "nonblocking", "", "::1"),
        ("4", "blocking", "127.0.0.2", "127.0.0.1"),
    ] {
        let s = Scenario::new("wire-refused");
        let client = format!("refused {PORT} {family} {mode} {host}");
        let syn_and_rst = |file: &Path, port: u16| {
            let want = |src: &str, sport: u16| format!("{src}/{sport}");
            let got: Vec<_> = rows(
                file,
                "tcp",
                &[
                    "ip.src",
                    "ipv6.src",
                    "tcp.srcport",
                    "tcp.flags.syn",
                    "tcp.flags.reset",
                ],
            )
            .into_iter()
            .map(|r| {
                let flag = if yes(&r[3]) {
                    "S"
                } else if yes(&r[4]) {
                    "R"
                } else {
                    "?"
                };
                (format!("{}{}/{}", r[0], r[1], r[2]), flag)
            })
            .collect();
            assert_eq!(got.len(), 2, "{client}: {got:?}");
            assert_eq!(
                got[0],
                (want(source, port), "S"),
                "{client}: {}",
                file.display()
            );
            assert_eq!(got[1].1, "R", "{client}");
        };
        let out = s.traced("", &client);
        syn_and_rst(&s.ours(), port_after(&out, "local"));
        s.clean();
        let out = s.real("", &client);
        syn_and_rst(&s.kernels(), port_after(&out, "local"));
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Labels of a non-blocking connect's handshake

#[test]
fn a_pending_handshake_is_labelled_with_its_connect() {
    for (server, how) in [
        ("serve-echo", "getsockopt"),
        ("serve-echo", "send"),
        ("serve-greet", "recv"),
    ] {
        let s = Scenario::new("wire-labels");
        s.traced(&format!("{server} {PORT}"), &format!("settle {PORT} {how}"));
        let packets = rows(
            &s.ours(),
            "tcp",
            &["frame.time_epoch", "tcp.flags.syn", "frame.comment"],
        );
        let handshake: Vec<_> = packets[..3].iter().map(|r| r[2].as_str()).collect();
        assert!(
            yes(&packets[0][1]) && yes(&packets[1][1]),
            "{how}: a handshake first"
        );
        for comment in &handshake {
            assert!(
                comment.contains(" fd=3 call=connect"),
                "settled by {how}: the handshake is connect's: {handshake:?}"
            );
        }
        let times: Vec<f64> = packets
            .iter()
            .map(|r| r[0].parse().expect("time"))
            .collect();
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "{how}: packets in time order: {times:?}"
        );
        s.clean();
    }
}

// ---------------------------------------------------------------------------------------------
// 8. Failed calls that change a connection

/// A blocking connect interrupted by a signal (EINTR) goes on in the background; its
/// connection is captured when it completes.
#[test]
fn an_interrupted_connect_is_captured() {
    let s = Scenario::new("wire-eintr");
    let out = s.traced(&format!("serve-backlog {PORT}"), &format!("eintr {PORT}"));
    let port = port_after(&out, "local");
    let cap = s.clean();
    let way = cap.tcp.get(&(lo(port), lo(PORT)));
    assert!(
        way.is_some_and(|d| d.syn && d.bytes == b"late"),
        "the interrupted connect's connection from {port}: {:?}",
        cap.tcp.keys().collect::<Vec<_>>()
    );
}

/// The peer resets: learnt by recv (ECONNRESET), or by SO_ERROR on a non-blocking connect not
/// yet looked at. The peer's RST is written as the kernel's was, and no FIN after it.
#[test]
fn a_reset_by_the_peer_is_written_as_the_kernel_received_it() {
    for (server, client) in [
        (
            format!("serve-reset {PORT} go"),
            format!("reset {PORT} recv"),
        ),
        (
            format!("serve-reset {PORT}"),
            format!("reset {PORT} pending"),
        ),
    ] {
        let s = Scenario::new("wire-reset");
        s.traced(&server, &client);
        s.clean();
        s.real(&server, &client);
        // Ours has no pure ACKs; the rest is the same, field by field.
        let significant = |file: &Path| {
            rows(
                file,
                "tcp.len > 0 || tcp.flags.syn == 1 || tcp.flags.fin == 1 || tcp.flags.reset == 1",
                &["tcp.srcport", "tcp.flags", "tcp.seq", "tcp.ack", "tcp.len"],
            )
            .into_iter()
            .map(|mut r| {
                r[0] = (r[0] == PORT.to_string()).to_string();
                r
            })
            .collect::<Vec<_>>()
        };
        let ours = significant(&s.ours());
        assert_eq!(ours, significant(&s.kernels()), "{client}");
        assert_eq!(
            ours.last().map(|r| r[1].as_str()),
            Some("0x0014"),
            "{client}: ends with RST/ACK"
        );
    }
}

/// A blocking connect whose SYN nobody answers times out (ETIMEDOUT): its SYN is written, from
/// the port it left from, and nothing else. (The kernel also retransmitted it once before giving
/// up; we cannot know how often it did.)
#[test]
fn an_unanswered_connect_writes_its_syn() {
    let s = Scenario::new("wire-timeout");
    let out = s.traced(&format!("serve-full {PORT}"), &format!("timeout {PORT}"));
    let port = port_after(&out, "local");
    let cap = s.clean();
    let way = cap.tcp.get(&(lo(port), lo(PORT)));
    assert!(
        way.is_some_and(|d| d.syn && d.bytes.is_empty() && !d.fin && !d.rst),
        "a SYN from {port}: {:?}",
        cap.tcp.keys().collect::<Vec<_>>()
    );
    assert!(!cap.tcp.contains_key(&(lo(PORT), lo(port))), "no answer");
    let out = s.real(&format!("serve-full {PORT}"), &format!("timeout {PORT}"));
    let port = port_after(&out, "local");
    let syns = rows(
        &s.kernels(),
        &format!("tcp.srcport == {port}"),
        &["tcp.flags.syn", "tcp.flags.ack"],
    );
    assert!(
        !syns.is_empty() && syns.iter().all(|r| yes(&r[0]) && !yes(&r[1])),
        "the kernel sent SYNs only: {syns:?}"
    );
}
