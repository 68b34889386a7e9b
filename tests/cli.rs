//! Issue 17: what the CLI says at the end of a run (and not under `-q`), its exit statuses, and
//! how an installed CLI finds its libraries (and a library its CLI) in each layout.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::{self, servers, TempDir};

const LIMIT: Duration = Duration::from_secs(120);

/// Two HTTP GETs (two TCP connections) to 127.0.0.1:argv[1], then one UDP datagram to
/// 127.0.0.1:argv[2] (nobody needs to listen).
const CLIENT: &str = r#"
import socket, sys, urllib.request
for _ in range(2):
    urllib.request.urlopen("http://127.0.0.1:%s/page" % sys.argv[1]).read()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(b"one", ("127.0.0.1", int(sys.argv[2])))
"#;

/// One UDP datagram to 127.0.0.1:argv[1].
const SEND: &str = r#"
import socket, sys
socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", int(sys.argv[1])))
"#;

/// A TLS ClientHello's first bytes sent as plain data to 127.0.0.1:argv[1]: what a program
/// whose TLS library no hook knows (rustls, a statically linked OpenSSL) puts on the wire.
const FOREIGN_TLS: &str = r#"
import socket, sys
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
c.sendall(bytes([22, 3, 1, 0, 8, 1, 0, 0, 4, 3, 3, 0, 0]))
c.close()
"#;

/// The CLI with `args`, run in `dir`, with none of our variables from outside.
fn cli(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(support::cli());
    cmd.args(args).current_dir(dir);
    for v in [
        "NETINTERCEPT_FILE",
        "NETINTERCEPT_FILTER",
        "NETINTERCEPT_TLS",
        "NETINTERCEPT_LIB",
        "NETINTERCEPT_COLLECTOR",
    ] {
        cmd.env_remove(v);
    }
    cmd
}

/// Our lines on stderr.
fn lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("netintercept:"))
        .map(str::to_owned)
        .collect()
}

fn run(cmd: &mut Command) -> Output {
    support::run_with_timeout(cmd, LIMIT)
}

/// The block names the file with as many packets as the readers find, two TCP connections and
/// one UDP flow; `-q` leaves it out and writes the same capture.
#[test]
fn the_end_of_run_block_counts_what_each_file_holds() {
    let dir = TempDir::new("cli-block");
    std::fs::write(dir.join("page"), b"hello").expect("page");
    let port = support::free_port();
    let _server = servers::http_server(dir.path(), "127.0.0.1", port);
    let ports = [port.to_string(), support::free_port().to_string()];
    let client = ["python3", "-c", CLIENT, &ports[0], &ports[1]];

    let out = run(cli(dir.path(), &["-w", "out.pcap", "--"]).args(client));
    assert!(out.status.success(), "{out:?}");
    let packets = support::check_clean(&dir.join("out.pcap")).packets;
    assert!(packets > 10, "two HTTP exchanges: {packets} packets");
    assert_eq!(
        lines(&out),
        [format!(
            "netintercept: capture written to 'out.pcap': {packets} packets, 2 TCP connections, \
             1 UDP flow"
        )]
    );

    let out = run(cli(dir.path(), &["-q", "-w", "quiet.pcap", "--"]).args(client));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(lines(&out), Vec::<String>::new(), "-q: nothing said");
    let quiet = support::check_clean(&dir.join("quiet.pcap"));
    assert_eq!(
        (quiet.tcp.len(), quiet.udp.len()),
        (4, 1),
        "the same capture"
    );
}

/// One file per process (`%p`): one line each, naming the file the process wrote.
#[test]
fn the_block_has_a_line_per_file() {
    let dir = TempDir::new("cli-per-process");
    let port = support::free_port().to_string();
    let twice = format!("python3 -c '{SEND}' {port}; python3 -c '{SEND}' {port}");
    let out = run(&mut cli(
        dir.path(),
        &["-w", "p-%p.pcap", "sh", "-c", &twice],
    ));
    assert!(out.status.success(), "{out:?}");
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    let expected: Vec<String> = files
        .iter()
        .map(|f| format!("netintercept: capture written to '{f}': 1 packet, 1 UDP flow"))
        .collect();
    assert_eq!(lines(&out), expected);
}

/// A file that cannot be written is named once, when it happens; the block adds what it cost
/// and does not name it again.
#[test]
fn a_refused_file_is_named_once_and_its_cost_said() {
    let dir = TempDir::new("cli-refused");
    let port = support::free_port().to_string();
    let out = run(&mut cli(
        dir.path(),
        &["-w", "no/such/dir/x.pcap", "python3", "-c", SEND, &port],
    ));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        lines(&out),
        [
            "netintercept: cannot write capture to 'no/such/dir/x.pcap': No such file or \
             directory",
            "netintercept: not captured: 1 packet, as the capture file could not be written \
             (said above)",
        ]
    );
}

/// A connection whose first bytes are a ClientHello sent as data is TLS no hook decrypted: the
/// block says so in the default mode, not in `raw` mode (where ciphertext is what was asked),
/// and never for TLS the hooks decrypted (curl with OpenSSL).
#[test]
fn tls_that_could_not_be_decrypted_is_said() {
    let dir = TempDir::new("cli-tls");
    let port = support::free_port();
    let _sink = servers::sink(port);
    let port = port.to_string();
    let foreign = ["-w", "tls.pcap", "python3", "-c", FOREIGN_TLS, &port];
    let out = run(&mut cli(dir.path(), &foreign));
    assert!(out.status.success(), "{out:?}");
    let packets = support::check_clean(&dir.join("tls.pcap")).packets;
    // The collector names the program when it sees the ClientHello (any mode); the block counts.
    let (named, block): (Vec<String>, Vec<String>) = lines(&out)
        .into_iter()
        .partition(|l| l.contains("does not hook"));
    assert_eq!(named.len(), 1, "the program named once: {out:?}");
    assert_eq!(
        block,
        [
            format!(
                "netintercept: capture written to 'tls.pcap': {packets} packets, 1 TCP \
                 connection"
            ),
            "netintercept: not decrypted: 1 TLS connection in 'tls.pcap' is ciphertext (its \
             TLS library is not OpenSSL, NSS or GnuTLS loaded as a shared library)"
                .into()
        ]
    );
    let out = run(cli(dir.path(), &foreign).env("NETINTERCEPT_TLS", "raw"));
    assert_eq!(
        lines(&out)
            .iter()
            .filter(|l| !l.contains("does not hook"))
            .count(),
        1,
        "raw: ciphertext was asked for: {out:?}"
    );

    crate::tls::make_site(dir.path());
    let tls_port = support::free_port();
    let _server = crate::tls::s_server(dir.path(), "127.0.0.1", tls_port);
    let url = format!("https://127.0.0.1:{tls_port}/index.html");
    let out = run(&mut cli(
        dir.path(),
        &["-w", "curl.pcap", "curl", "-sSk", &url],
    ));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, crate::tls::BODY);
    let [line] = &lines(&out)[..] else {
        panic!("one line: {out:?}");
    };
    assert!(
        line.starts_with("netintercept: capture written to 'curl.pcap': ")
            && line.ends_with(" packets, 1 TCP connection"),
        "{line}"
    );
}

/// 127 for a command not found, 126 for one that cannot be executed, 2 for a usage error: one
/// line each, as a shell says them.
#[test]
fn exit_statuses_for_commands_that_cannot_run() {
    let dir = TempDir::new("cli-status");
    std::fs::write(dir.join("not-executable"), b"#!/bin/sh\n").expect("file");
    std::fs::create_dir(dir.join("a-directory")).expect("dir");
    for (command, status) in [
        ("./no-such-program", 127),
        ("no-such-program-on-the-path", 127),
        ("./not-executable", 126),
        ("./a-directory", 126),
    ] {
        let out = run(&mut cli(dir.path(), &["--", command]));
        assert_eq!(out.status.code(), Some(status), "{command}: {out:?}");
        let l = lines(&out);
        assert_eq!(l.len(), 1, "{l:?}");
        assert!(
            l[0].starts_with(&format!("netintercept: cannot run '{command}': ")),
            "{l:?}"
        );
    }
    let out = run(&mut cli(dir.path(), &["--bogus", "true"]));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "netintercept: unexpected argument '--bogus' found; see 'netintercept --help'\n"
    );
}

/// Copies of the CLI and the libraries laid out under `root` as `bin` and `lib` say.
fn lay_out(root: &Path, bin: &str, lib: Option<&str>) -> PathBuf {
    let bin = root.join(bin);
    std::fs::create_dir_all(&bin).expect("bin dir");
    std::fs::copy(support::cli(), bin.join("netintercept")).expect("copy the CLI");
    if let Some(lib) = lib {
        let lib = root.join(lib);
        std::fs::create_dir_all(&lib).expect("lib dir");
        let built = support::library().parent().expect("lib dir");
        for name in ["libnetintercept.so", "libnetintercept_pcapfilter.so"] {
            std::fs::copy(built.join(name), lib.join(name)).expect("copy a library");
        }
    }
    bin.join("netintercept")
}

/// The CLI alone (what `cargo install` gives): one line saying what to do, exit 2, the program
/// never started.
#[test]
fn a_cli_without_its_libraries_says_what_to_do() {
    let dir = TempDir::new("cli-alone");
    let alone = lay_out(dir.path(), "cargo-home/bin", None);
    let out = run(Command::new(&alone)
        .args(["--", "touch", "ran"])
        .current_dir(dir.path())
        .env_remove("NETINTERCEPT_LIB"));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("netintercept: libnetintercept.so is neither beside ")
            && err.contains("`cargo install` installs the CLI without its libraries")
            && err.contains("NETINTERCEPT_LIB"),
        "{err}"
    );
    assert!(!dir.join("ran").exists(), "the program never started");
}

/// The Debian package's layout (`usr/bin`, `usr/lib/netintercept`): the CLI finds the preload
/// and filter libraries, and a bare LD_PRELOAD of the library finds the CLI as its collector.
#[test]
fn the_debian_layout_finds_libraries_and_collector() {
    let dir = TempDir::new("cli-deb-layout");
    let cli = lay_out(dir.path(), "usr/bin", Some("usr/lib/netintercept"));
    let port = support::free_port().to_string();
    let out = run(Command::new(&cli)
        .args(["-f", "udp", "-w", "deb.pcap", "python3", "-c", SEND, &port])
        .current_dir(dir.path())
        .env_remove("NETINTERCEPT_LIB"));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        lines(&out),
        ["netintercept: capture written to 'deb.pcap': 1 packet, 1 UDP flow"]
    );
    assert_eq!(support::check_clean(&dir.join("deb.pcap")).udp.len(), 1);

    let lib = dir.join("usr/lib/netintercept/libnetintercept.so");
    let out = run(Command::new("python3")
        .args(["-c", SEND, &port])
        .current_dir(dir.path())
        .env("LD_PRELOAD", &lib)
        .env("NETINTERCEPT_FILE", "bare.pcap")
        .env_remove("NETINTERCEPT_FILTER")
        .env_remove("NETINTERCEPT_COLLECTOR"));
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    assert_eq!(support::check_clean(&dir.join("bare.pcap")).udp.len(), 1);
}
