//! Issue 14: decrypted TLS through GnuTLS (gnutls-cli and gnutls-serv, wget, git's
//! libcurl-gnutls, and the record calls those programs leave out), with certificates made by the
//! test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{self, pcap_reader::Direction, servers, TempDir};
use crate::tls::{assert_plaintext, make_site, s_server, BODY, HTTPS_SERVER, LIMIT};

const REQUEST: &[u8] = b"GET /index.html HTTP/1.0\r\n\r\n";

/// `gnutls-serv` on `port` with `cert.pem` and `key.pem` from `dir`, acting as `role` says
/// (`--http` answers every request with index.html, `--echo` echoes each line); traced into
/// `capture` when given. gnutls-serv has no option to choose its address: it listens on every
/// interface, but the tests only ever connect to it over 127.0.0.1.
fn gnutls_serv(dir: &Path, port: u16, role: &str, capture: Option<&Path>) -> servers::Server {
    let port_arg = port.to_string();
    let args = [
        role,
        "--httpdata=index.html",
        "-q",
        "-p",
        &port_arg,
        "--x509certfile=cert.pem",
        "--x509keyfile=key.pem",
    ];
    let mut cmd = match capture {
        Some(cap) => support::traced(dir, cap, "gnutls-serv", &args),
        None => support::untraced(dir, "gnutls-serv", &args),
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let srv = servers::Server(cmd.spawn().expect("gnutls-serv (gnutls-bin) is installed"));
    servers::wait_tcp("127.0.0.1", port);
    srv
}

/// A traced `gnutls-cli` sending REQUEST to 127.0.0.1:`port`, with `NETINTERCEPT_TLS=tls_mode`;
/// its capture.
fn gnutls_cli(dir: &Path, name: &str, port: u16, tls_mode: &str) -> PathBuf {
    std::fs::write(dir.join("req"), REQUEST).expect("request");
    let cap = dir.join(name);
    let shell = format!("exec gnutls-cli --insecure -p {port} 127.0.0.1 < req");
    let mut cmd = support::traced(dir, &cap, "sh", &["-c", &shell]);
    cmd.env("NETINTERCEPT_TLS", tls_mode);
    let out = support::run_ok(&mut cmd, LIMIT);
    assert!(
        out.stdout.windows(BODY.len()).any(|w| w == BODY),
        "gnutls-cli got the page: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    cap
}

/// Directions that carried something: the probe connection of `wait_tcp` carried nothing.
fn with_data(dirs: Vec<&Direction>) -> Vec<&Direction> {
    dirs.into_iter().filter(|d| !d.bytes.is_empty()).collect()
}

/// The clean capture holds one exchange with `port` of REQUEST and gnutls-serv's answer: exact
/// plaintext both ways, no TLS record, and tshark dissects the GET and the 200.
fn assert_gnutls_exchange(cap: &Path, port: u16) {
    let ours = support::check_clean(cap);
    let up = with_data(ours.to_port(port));
    let down = with_data(ours.sent_from_port(port));
    assert_eq!((up.len(), down.len()), (1, 1), "{:?}", ours.tcp.keys());
    assert_eq!(
        up[0].bytes,
        REQUEST,
        "{:?}",
        String::from_utf8_lossy(&up[0].bytes)
    );
    let head = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        BODY.len()
    );
    assert_eq!(
        down[0].bytes,
        [head.as_bytes(), BODY].concat(),
        "{:?}",
        String::from_utf8_lossy(&down[0].bytes)
    );
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

/// gnutls-cli and gnutls-serv, each traced into its own capture (two runs, so the two views of
/// the one loopback connection never share a file): both show the same plaintext exchange.
#[test]
fn gnutls_cli_and_gnutls_serv_both_traced_show_the_plaintext() {
    let dir = TempDir::new("gnutls-pair");
    make_site(dir.path());
    let port = support::free_port();
    let serv_cap = dir.join("serv.pcap");
    let _srv = gnutls_serv(dir.path(), port, "--http", Some(&serv_cap));
    let cli_cap = gnutls_cli(dir.path(), "cli.pcap", port, "plain");
    assert_gnutls_exchange(&cli_cap, port);
    std::thread::sleep(Duration::from_millis(800)); // several flush intervals
    assert_gnutls_exchange(&serv_cap, port);
}

/// `NETINTERCEPT_TLS=raw` writes GnuTLS's records as they went on the wire and no plaintext;
/// `both` writes them on the connection's stream and the plaintext on the parallel stream.
#[test]
fn gnutls_cli_raw_and_both_modes_keep_the_ciphertext() {
    let dir = TempDir::new("gnutls-modes");
    make_site(dir.path());
    let port = support::free_port();
    let _srv = gnutls_serv(dir.path(), port, "--http", None);
    let has_body = |d: &Direction| d.bytes.windows(BODY.len()).any(|w| w == BODY);

    let raw = support::check_clean(&gnutls_cli(dir.path(), "raw.pcap", port, "raw"));
    let up = raw.to_port(port);
    assert_eq!(up.len(), 1, "{:?}", raw.tcp.keys());
    assert_eq!(
        &up[0].bytes[..2],
        &[0x16, 0x03],
        "starts with the ClientHello"
    );
    assert!(!has_body(raw.sent_from_port(port)[0]));

    let both = support::check_clean(&gnutls_cli(dir.path(), "both.pcap", port, "both"));
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
    assert!(has_body(down(plain_client)), "plaintext answer");
    assert!(!has_body(down(wire_client)));
}

/// Compile `tests/programs/NAME.c` against libgnutls into `dir/NAME`.
fn build_gnutls_program(dir: &Path, name: &str) -> PathBuf {
    support::build_c(dir, name, name, &["-O1"], &["-lgnutls"])
}

/// The record calls wget and curl do not make (see `tests/programs/gnutls_calls.c`): corked
/// sends flushed by gnutls_record_uncork are written once, gnutls_record_send2, _send_range,
/// _recv_seq and _recv_packet are each seen, and the close_notify that gnutls_bye(RDWR) waits
/// for is the server's FIN. Each data packet's pcapng comment names its call and GnuTLS.
#[test]
fn gnutls_record_calls_are_each_written_once() {
    let dir = TempDir::new("gnutls-calls");
    make_site(dir.path());
    let program = build_gnutls_program(dir.path(), "gnutls_calls");
    let port = support::free_port();
    let _srv = gnutls_serv(dir.path(), port, "--echo", None);
    let program = program.to_string_lossy();
    let port_arg = port.to_string();
    let run = |cap: &Path| {
        let out = support::run_ok(
            &mut support::traced(dir.path(), cap, &program, &[&port_arg]),
            LIMIT,
        );
        assert_eq!(out.stdout, b"one,two\nthree\nbye=0\n");
    };

    let cap = dir.join("calls.pcap");
    run(&cap);
    let ours = support::check_clean(&cap);
    let (up, down) = (ours.to_port(port), ours.sent_from_port(port));
    assert_eq!((up.len(), down.len()), (1, 1), "{:?}", ours.tcp.keys());
    assert_eq!(up[0].bytes, b"one,two\nthree\n", "each byte once");
    assert_eq!(down[0].bytes, b"one,two\nthree\n");
    assert!(
        down[0].fin,
        "the server's close_notify, seen inside gnutls_bye"
    );

    let cap = dir.join("calls.pcapng");
    run(&cap);
    let rows = support::tshark::fields(
        &cap,
        "tcp.len > 0 || tcp.flags.fin == 1",
        &["tcp.payload", "frame.comment"],
    );
    let rows_split: Vec<(&str, &str)> = rows
        .lines()
        .map(|l| l.split_once('\t').unwrap_or((l, "")))
        .collect();
    let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    let want = [
        (hex("one,"), "gnutls_record_send"),
        (hex("two\n"), "gnutls_record_send2"),
        (hex("one,two\n"), "gnutls_record_recv_seq"),
        (hex("three\n"), "gnutls_record_send_range"),
        (hex("three\n"), "gnutls_record_recv_packet"),
        (String::new(), "gnutls_bye"),
    ];
    for (payload, call) in want {
        let comment = format!("call={call} tls=GnuTLS");
        assert!(
            rows_split
                .iter()
                .any(|(p, c)| *p == payload && c.ends_with(&comment)),
            "{call} wrote {payload:?}:\n{rows}"
        );
    }
}

/// Debian's wget links GnuTLS and hands it the socket itself (a descriptor cast to a pointer).
#[test]
fn wget_https_is_decrypted() {
    let dir = TempDir::new("wget-tls");
    make_site(dir.path());
    let port = support::free_port();
    let _srv = s_server(dir.path(), "127.0.0.1", port);
    let cap = dir.join("wget.pcap");
    let url = format!("https://127.0.0.1:{port}/index.html");
    let mut cmd = support::traced(
        dir.path(),
        &cap,
        "wget",
        &["-q", "--no-check-certificate", "-O", "-", &url],
    );
    cmd.env("HOME", dir.path()); // no ~/.wgetrc, no HSTS file of the user's
    let out = support::run_ok(&mut cmd, LIMIT);
    assert_eq!(out.stdout, BODY);
    assert_plaintext(&cap, port);
}

/// `git` with `-c` settings and no user or system configuration.
fn git(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = support::untraced(dir, "git", args);
    cmd.env("HOME", dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com");
    cmd
}

fn git_ok(dir: &Path, args: &[&str]) {
    let out = git(dir, args).output().expect("git is installed");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `git clone https://…` over the dumb HTTP protocol: git-remote-https (libcurl-gnutls, whose
/// own push/pull functions call send/recv) shows each GET and each file served, byte for byte.
#[test]
fn git_clone_over_https_is_decrypted() {
    let dir = TempDir::new("git-tls");
    make_site(dir.path());
    let work = dir.join("work");
    std::fs::create_dir(&work).expect("work tree");
    git_ok(&work, &["init", "-q", "-b", "main"]);
    std::fs::write(work.join("secret.txt"), BODY).expect("file");
    git_ok(&work, &["add", "secret.txt"]);
    git_ok(&work, &["commit", "-q", "-m", "a secret"]);
    git_ok(dir.path(), &["clone", "-q", "--bare", "work", "repo.git"]);
    git_ok(&dir.join("repo.git"), &["update-server-info"]);

    // python's ssl http.server (untraced) serves the directory: info/refs, HEAD, loose objects.
    let port = support::free_port();
    let child = Command::new("python3")
        .args(["-c", HTTPS_SERVER, &port.to_string()])
        .current_dir(dir.path())
        .env_remove("LD_PRELOAD")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 is installed");
    let _srv = servers::Server(child);
    servers::wait_tcp("127.0.0.1", port);

    let cap = dir.join("git.pcap");
    let url = format!("https://127.0.0.1:{port}/repo.git");
    let mut cmd = support::traced(dir.path(), &cap, "git", &["clone", "-q", &url, "clone"]);
    cmd.env("HOME", dir.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_SSL_NO_VERIFY", "1");
    support::run_ok(&mut cmd, LIMIT);
    assert_eq!(
        std::fs::read(dir.join("clone/secret.txt")).expect("cloned"),
        BODY
    );

    let ours = support::check_clean(&cap);
    let ups = with_data(ours.to_port(port));
    let downs = with_data(ours.sent_from_port(port));
    // Each request is one GET, in plaintext, and nothing else (no TLS record).
    let mut paths = Vec::new();
    for up in &ups {
        let text = std::str::from_utf8(&up.bytes).expect("a plaintext request");
        assert!(
            text.starts_with("GET /repo.git/") && text.ends_with("\r\n\r\n"),
            "{text:?}"
        );
        let path = text.split(' ').nth(1).unwrap_or("");
        paths.push(path.split('?').next().unwrap_or("").to_string());
    }
    assert!(
        ups.iter().any(|u| u
            .bytes
            .starts_with(b"GET /repo.git/info/refs?service=git-upload-pack HTTP/1.1\r\n")),
        "the smart-protocol probe"
    );
    for want in ["/repo.git/info/refs", "/repo.git/HEAD"] {
        assert!(paths.iter().any(|p| p == want), "GET {want}: {paths:?}");
    }
    // Each answer is the server's headers then exactly the file's bytes.
    let mut objects = 0;
    for path in &paths {
        let file = std::fs::read(dir.path().join(&path[1..])).expect("a served file");
        let answered = downs.iter().any(|d| {
            d.bytes.starts_with(b"HTTP/1.0 200 OK\r\n")
                && d.bytes.ends_with(&file)
                && d.bytes[..d.bytes.len() - file.len()].ends_with(b"\r\n\r\n")
        });
        assert!(answered, "the bytes of {path}");
        objects += path.contains("/objects/") as usize;
    }
    assert_eq!(objects, 3, "commit, tree and blob: {paths:?}");
    assert_eq!(downs.len(), ups.len());
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&cap)
        .args(["-d", &format!("tcp.port=={port},http")])
        .args(["-Y", "http.request.method == \"GET\"", "-T", "fields"])
        .args(["-e", "http.request.uri"])
        .output()
        .expect("tshark");
    let gets = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        gets.lines().count(),
        ups.len(),
        "tshark dissects every GET:\n{gets}"
    );
}
