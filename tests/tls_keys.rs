//! Issue 14: TLS keys. A pcapng of ciphertext (`NETINTERCEPT_TLS=raw`) carries the session keys
//! in Decryption Secrets Blocks, so tshark decrypts it with no option; `--keylog FILE` writes
//! them for pcap users; a program's own key-log callback works as untraced; TLS by a library we
//! do not hook (node's built-in OpenSSL) is said to be so. NSS's keys come from the key log file
//! SSLKEYLOGFILE names (the user's, or with `--nss-keys` the run's own).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pcap_file::pcapng::{Block, PcapNgReader};

use crate::support::{self, servers, TempDir};
use crate::tls::{make_site, s_server, BODY, HTTPS_SERVER, LIMIT};

/// The text of a GET of /index.html, in hex as tshark shows TCP payloads.
const GET_HEX: &str = "474554202f696e6465782e68746d6c"; // "GET /index.html"

/// The key log lines of every Decryption Secrets Block of pcapng `cap`, in file order, and how
/// many packets came before the first one.
fn secrets(cap: &Path) -> (Vec<String>, usize) {
    let bytes = std::fs::read(cap).expect("capture");
    let mut reader = PcapNgReader::new(&bytes[..]).expect("a pcapng section");
    let (mut lines, mut packets, mut before) = (Vec::new(), 0, None);
    while let Some(block) = reader.next_block() {
        match block.expect("a readable block") {
            Block::EnhancedPacket(_) => packets += 1,
            Block::Unknown(b) if b.type_ == 0x0a => {
                assert_eq!(&b.value[..4], &0x544c_534bu32.to_le_bytes(), "TLS key log");
                let len = u32::from_le_bytes([b.value[4], b.value[5], b.value[6], b.value[7]]);
                let text = String::from_utf8(b.value[8..8 + len as usize].to_vec()).expect("text");
                assert!(text.ends_with('\n'), "{text:?}");
                lines.extend(text.lines().map(str::to_string));
                before.get_or_insert(packets);
            }
            _ => {}
        }
    }
    (lines, before.unwrap_or(packets))
}

/// The labels of key log lines.
fn labels(lines: &[String]) -> Vec<&str> {
    lines
        .iter()
        .map(|l| l.split(' ').next().unwrap_or(""))
        .collect()
}

/// What tshark, with `options`, shows of GET requests in `cap`: their URIs.
fn tshark_gets(cap: &Path, options: &[&str]) -> String {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(cap)
        .args(options)
        .args(["-Y", "http.request.method == \"GET\"", "-T", "fields"])
        .args(["-e", "http.request.uri"])
        .output()
        .expect("tshark");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The TCP payloads of `cap`, in hex, one packet a line.
fn payloads(cap: &Path) -> String {
    support::tshark::fields(cap, "tcp.len > 0", &["tcp.payload"])
}

/// The CLI running `command` in `dir` with `args` before it and `NETINTERCEPT_TLS=mode`.
fn cli(dir: &Path, mode: &str, args: &[&str], command: &[&str]) -> Output {
    cli_env(dir, mode, args, command, &[])
}

/// [`cli`], with variables `env` set too.
fn cli_env(
    dir: &Path,
    mode: &str,
    args: &[&str],
    command: &[&str],
    env: &[(&str, &OsStr)],
) -> Output {
    let mut cmd = Command::new(support::cli());
    cmd.args(args)
        .arg("--")
        .args(command)
        .current_dir(dir)
        .env("NETINTERCEPT_TLS", mode)
        .env_remove("NETINTERCEPT_FILE")
        .env_remove("NETINTERCEPT_KEYLOG")
        .env_remove("SSLKEYLOGFILE")
        .env_remove("LD_PRELOAD");
    for (name, value) in env {
        cmd.env(name, value);
    }
    let out = support::run_with_timeout(&mut cmd, LIMIT);
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A test directory with a site served by an untraced `openssl s_server -WWW` on 127.0.0.1.
fn site(tag: &str) -> (TempDir, u16, crate::support::servers::Server) {
    let dir = TempDir::new(tag);
    make_site(dir.path());
    let port = support::free_port();
    let srv = s_server(dir.path(), "127.0.0.1", port);
    (dir, port, srv)
}

/// A capture of ciphertext that tshark decrypts by itself: the keys are in it, before the
/// packets that need them (the ServerHello for TLS 1.3's handshake secrets), the GET is shown,
/// and no plaintext is among the packets (the bytes are what the program sent).
fn assert_decrypts_alone(cap: &Path, port: u16, last_label: &str) {
    let report = support::tshark::inspect(cap);
    assert_eq!(
        (
            report.bad_checksums,
            report.analysis_flags,
            report.malformed
        ),
        (0, 0, 0),
        "{}",
        report.flagged
    );
    let (lines, before) = secrets(cap);
    assert!(labels(&lines).contains(&last_label), "{lines:?}");
    // SYN, SYN-ACK, ACK, ClientHello: then the keys, then the server's answer.
    assert_eq!(before, 4, "the keys come right after the ClientHello");
    assert_eq!(tshark_gets(cap, &[]).trim(), "/index.html");
    let hex = payloads(cap);
    assert!(!hex.is_empty() && !hex.contains(GET_HEX), "ciphertext only");
    let hellos = support::tshark::fields(cap, "tls.handshake.type == 1", &["tcp.dstport"]);
    // Two after a HelloRetryRequest (NSS's first key share is not what s_server prefers).
    assert!(
        (1..=2).contains(&hellos.lines().count()) && hellos.lines().all(|p| p == port.to_string()),
        "the client's own ClientHello: {hellos}"
    );
    assert!(
        support::tshark::fields(
            cap,
            "frame.comment contains \"do not hook\"",
            &["frame.number"]
        )
        .is_empty(),
        "curl and gnutls-cli use libraries we hook"
    );
}

fn curl_raw_pcapng(version: &[&str], last_label: &str) {
    let (dir, port, _srv) = site("keys-curl");
    let cap = dir.join("curl.pcapng");
    let url = format!("https://127.0.0.1:{port}/index.html");
    let mut command = vec!["curl", "-sSk"];
    command.extend_from_slice(version);
    command.push(&url);
    let out = cli(dir.path(), "raw", &["-w", "curl.pcapng"], &command);
    assert_eq!(out.stdout, BODY);
    assert_decrypts_alone(&cap, port, last_label);
}

#[test]
fn curl_tls13_raw_pcapng_decrypts_without_options() {
    curl_raw_pcapng(&["--tlsv1.3"], "CLIENT_TRAFFIC_SECRET_0");
}

#[test]
fn curl_tls12_raw_pcapng_decrypts_without_options() {
    curl_raw_pcapng(&["--tlsv1.2", "--tls-max", "1.2"], "CLIENT_RANDOM");
}

/// gnutls-cli (GnuTLS), TLS 1.3 and 1.2: the same.
#[test]
fn gnutls_cli_raw_pcapng_decrypts_without_options() {
    for (priority, last_label) in [
        ("NORMAL", "CLIENT_TRAFFIC_SECRET_0"),
        ("NORMAL:-VERS-TLS1.3", "CLIENT_RANDOM"),
    ] {
        let (dir, port, _srv) = site("keys-gnutls");
        std::fs::write(dir.join("req"), b"GET /index.html HTTP/1.0\r\n\r\n").expect("request");
        let shell =
            format!("exec gnutls-cli --insecure --priority {priority} -p {port} 127.0.0.1 < req");
        let out = cli(
            dir.path(),
            "raw",
            &["-w", "g.pcapng"],
            &["sh", "-c", &shell],
        );
        assert!(out.stdout.windows(BODY.len()).any(|w| w == BODY));
        assert_decrypts_alone(&dir.join("g.pcapng"), port, last_label);
    }
}

/// A traced server (Python's ssl, OpenSSL) answering untraced curls over TLS 1.3 and 1.2: its
/// raw pcapng decrypts alone too, both ways (a server logs the master secret and its traffic
/// secret only after the packets that need them: they wait too).
#[test]
fn traced_server_raw_pcapng_decrypts_without_options() {
    let dir = TempDir::new("keys-server");
    make_site(dir.path());
    let port = support::free_port();
    let cap = dir.join("server.pcapng");
    let python = support::python_exe();
    let mut cmd = support::traced(
        dir.path(),
        &cap,
        &python,
        &["-c", HTTPS_SERVER, &port.to_string()],
    );
    cmd.env("NETINTERCEPT_TLS", "raw")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _srv = servers::Server(cmd.spawn().expect("traced https server"));
    servers::wait_tcp("127.0.0.1", port);
    let url = format!("https://127.0.0.1:{port}/index.html");
    for version in [
        ["--tlsv1.3", "--tls-max", "1.3"],
        ["--tlsv1.2", "--tls-max", "1.2"],
    ] {
        let out = support::run_ok(
            &mut support::untraced(
                dir.path(),
                "curl",
                &[&["-sSk"][..], &version, &[&url]].concat(),
            ),
            LIMIT,
        );
        assert_eq!(out.stdout, BODY);
    }
    std::thread::sleep(std::time::Duration::from_millis(800)); // several flush intervals
    let (lines, _) = secrets(&cap);
    let labels = labels(&lines);
    assert!(labels.contains(&"CLIENT_TRAFFIC_SECRET_0") && labels.contains(&"CLIENT_RANDOM"));
    assert_eq!(tshark_gets(&cap, &[]), "/index.html\n/index.html\n");
    let answers = support::tshark::fields(&cap, "http.response.code == 200", &["tcp.srcport"]);
    assert_eq!(answers.lines().count(), 2, "{answers}");
    assert!(!payloads(&cap).contains(GET_HEX), "ciphertext only");
}

/// `--keylog FILE` with a plain pcap of the ciphertext: a 0600 file of SSLKEYLOGFILE lines
/// with which tshark decrypts it, and without which it does not.
#[test]
fn keylog_file_decrypts_a_pcap() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, port, _srv) = site("keys-file");
    let url = format!("https://127.0.0.1:{port}/index.html");
    let out = cli(
        dir.path(),
        "raw",
        &["-w", "c.pcap", "--keylog", "keys.log"],
        &["curl", "-sSk", &url],
    );
    assert_eq!(out.stdout, BODY);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("netintercept: TLS keys written to 'keys.log'"),
        "{err}"
    );
    let keys = dir.join("keys.log");
    let mode = std::fs::metadata(&keys)
        .expect("key log")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = std::fs::read_to_string(&keys).expect("key log");
    for line in text.lines() {
        let words: Vec<&str> = line.split(' ').collect();
        assert_eq!(words.len(), 3, "{line}");
        assert_eq!(words[1].len(), 64, "the client random: {line}");
        assert!(words[1..]
            .iter()
            .all(|w| w.bytes().all(|b| b.is_ascii_hexdigit())));
    }
    assert!(
        text.ends_with('\n') && text.contains("CLIENT_TRAFFIC_SECRET_0 "),
        "{text}"
    );
    let cap = dir.join("c.pcap");
    support::check_clean(&cap);
    assert_eq!(tshark_gets(&cap, &[]), "", "no keys, no plaintext");
    let option = format!("tls.keylog_file:{}", keys.display());
    assert_eq!(tshark_gets(&cap, &["-o", &option]).trim(), "/index.html");
}

/// A key log named through a symbolic link is refused in one line, its target left alone, and
/// the capture written all the same.
#[test]
fn keylog_through_a_symlink_is_refused() {
    let (dir, port, _srv) = site("keys-symlink");
    std::fs::write(dir.join("target"), b"untouched").expect("target");
    std::os::unix::fs::symlink(dir.join("target"), dir.join("keys.log")).expect("symlink");
    let url = format!("https://127.0.0.1:{port}/index.html");
    let out = cli(
        dir.path(),
        "raw",
        &["-w", "c.pcap", "--keylog", "keys.log"],
        &["curl", "-sSk", "-o", "/dev/null", &url],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.matches("netintercept: cannot write key log to 'keys.log': it is a symbolic link\n")
            .count(),
        1,
        "{err}"
    );
    assert!(!err.contains("TLS keys written"), "{err}");
    assert_eq!(
        std::fs::read(dir.join("target")).expect("target"),
        b"untouched"
    );
    assert!(dir.join("c.pcap").is_file());
}

/// Python's ssl module with `keylog_filename` (its own SSL_CTX_set_keylog_callback): traced, its
/// file is what it would be untraced (its header, then the same lines in the same order), and
/// its lines are exactly the ones `--keylog` wrote, in the default (plain) mode too.
#[test]
fn a_programs_own_keylog_callback_still_writes_its_file() {
    let (dir, port, _srv) = site("keys-python");
    let script = r#"
import ssl, sys, urllib.request
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.keylog_filename = sys.argv[2]
sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1], context=ctx).read())
"#;
    let url = format!("https://127.0.0.1:{port}/index.html");
    let python = support::python_exe();
    let out = support::run_ok(
        &mut support::untraced(dir.path(), &python, &["-c", script, &url, "untraced.log"]),
        LIMIT,
    );
    assert_eq!(out.stdout, BODY);
    let out = cli(
        dir.path(),
        "plain",
        &["-w", "py.pcap", "--keylog", "ours.log"],
        &[&python, "-c", script, &url, "traced.log"],
    );
    assert_eq!(out.stdout, BODY);
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).expect(name);
    let (untraced, traced, ours) = (read("untraced.log"), read("traced.log"), read("ours.log"));
    let header = |t: &str| t.lines().next().unwrap_or("").to_string();
    assert!(header(&untraced).starts_with("# "), "{untraced}");
    assert_eq!(header(&traced), header(&untraced));
    let body = |t: &str| -> Vec<String> { t.lines().skip(1).map(str::to_string).collect() };
    assert_eq!(labels(&body(&traced)), labels(&body(&untraced)));
    assert_eq!(traced, format!("{}\n{ours}", header(&untraced)));
    assert_plain_page(&dir.join("py.pcap"), port);
}

/// The plain capture still holds the exchange as plaintext.
fn assert_plain_page(cap: &Path, port: u16) {
    let ours = support::check_clean(cap);
    let down = ours.sent_from_port(port);
    assert!(
        down.iter().any(|d| d.bytes.ends_with(BODY)),
        "{:?}",
        ours.tcp.keys()
    );
}

/// Node's TLS (OpenSSL linked into node) and NSS's (tstclnt, hooked, in raw mode where nothing
/// is decrypted) in one run: only node's ClientHello is marked, once, and the collector names
/// node, once.
#[test]
fn tls_by_a_library_we_do_not_hook_is_said_once() {
    let (dir, port, _srv) = site("keys-node");
    std::fs::create_dir(dir.join("db")).expect("db dir");
    let st = Command::new("certutil")
        .args(["-N", "-d", "sql:db", "--empty-password"])
        .current_dir(dir.path())
        .status()
        .expect("certutil (libnss3-tools) is installed");
    assert!(st.success());
    std::fs::write(dir.join("req"), b"GET /index.html HTTP/1.0\r\n\r\n").expect("request");
    let node = "const get = () => require('https').get(process.argv[1], \
                {rejectUnauthorized: false, agent: false}, r => r.resume()); get(); get();";
    let shell = format!(
        "tstclnt -h 127.0.0.1 -p {port} -d sql:db -o < req > /dev/null; \
         exec node -e \"{node}\" https://127.0.0.1:{port}/index.html"
    );
    let out = cli(
        dir.path(),
        "raw",
        &["-w", "n.pcapng"],
        &["sh", "-c", &shell],
    );
    let cap: PathBuf = dir.join("n.pcapng");
    let marked = support::tshark::fields(
        &cap,
        "frame.comment contains \"TLS by a library we do not hook: ciphertext\"",
        &["tcp.srcport", "tls.handshake.type", "frame.comment"],
    );
    let marked: Vec<&str> = marked.lines().collect();
    assert_eq!(
        marked.len(),
        2,
        "each of node's two connections, once: {marked:?}"
    );
    for m in &marked {
        let f: Vec<&str> = m.split('\t').collect();
        assert_eq!(f[1], "1", "on the ClientHello: {m}");
        assert!(f[2].contains("exe=node"), "{m}");
    }
    assert_ne!(marked[0], marked[1], "two connections");
    let hellos = support::tshark::fields(&cap, "tls.handshake.type == 1", &["frame.comment"]);
    assert_eq!(
        hellos.lines().count(),
        3,
        "tstclnt's and node's two: {hellos}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let said: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("does not hook"))
        .collect();
    assert_eq!(said.len(), 1, "{err}");
    assert!(
        said[0].starts_with("netintercept: '/usr/bin/node' (pid "),
        "{err}"
    );
}

/// A C program with key-log callbacks of its own in OpenSSL and GnuTLS
/// (`tests/programs/keylog_callbacks.c`): traced, the getters answer what they answer untraced
/// (NULL, GnuTLS's own, the program's), its callbacks get the same lines in the same order, and
/// those lines are exactly what `--keylog` wrote.
#[test]
fn the_programs_own_callbacks_and_getters_are_untouched() {
    let (dir, port, _srv) = site("keys-callbacks");
    let programs = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs");
    let program = dir.join("keylog_callbacks");
    let built = Command::new("gcc")
        .args(["-O1", "-Wall", "-I"])
        .arg(&programs)
        .arg("-o")
        .arg(&program)
        .arg(programs.join("keylog_callbacks.c"))
        .args(["-lssl", "-lcrypto", "-lgnutls"])
        .output()
        .expect("gcc is installed");
    assert!(
        built.status.success(),
        "gcc keylog_callbacks.c (libssl-dev, libgnutls28-dev): {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let program = program.to_string_lossy();
    let port = port.to_string();
    let untraced = support::run_ok(
        &mut support::untraced(dir.path(), &program, &[&port]),
        LIMIT,
    );
    let traced = cli(
        dir.path(),
        "raw",
        &["-w", "k.pcapng", "--keylog", "keys.log"],
        &[&program, &port],
    );
    let (untraced, traced) = (
        String::from_utf8_lossy(&untraced.stdout).into_owned(),
        String::from_utf8_lossy(&traced.stdout).into_owned(),
    );
    // "openssl new=NULL", "gnutls set=ours"…: the checks; the other lines are key lines.
    let split = |out: &str| -> (Vec<String>, Vec<String>) {
        let (checks, keys): (Vec<&str>, Vec<&str>) = out.lines().partition(|l| l.contains('='));
        let keys = keys
            .iter()
            .map(|l| l.split_once(' ').map_or("", |(_, k)| k).to_string())
            .collect();
        (checks.iter().map(|c| c.to_string()).collect(), keys)
    };
    let (untraced_checks, untraced_keys) = split(&untraced);
    let (traced_checks, traced_keys) = split(&traced);
    assert_eq!(traced_checks, untraced_checks);
    assert_eq!(
        untraced_checks,
        [
            "openssl new=NULL",
            "openssl set=ours",
            "openssl unset=NULL",
            "gnutls new=gnutls's own",
            "gnutls set=ours",
            "gnutls reset=gnutls's own",
        ]
    );
    assert_eq!(labels(&traced_keys), labels(&untraced_keys));
    assert_eq!(
        traced_keys.len(),
        10,
        "five lines from each library: {traced}"
    );
    let ours = std::fs::read_to_string(dir.join("keys.log")).expect("key log");
    assert_eq!(ours.lines().collect::<Vec<_>>(), traced_keys);
}

/// Where Firefox's own NSS lives: Debian's libnss3 is built without SSLKEYLOGFILE support,
/// Firefox's copy has it, and tstclnt runs on it.
const FIREFOX_NSS: &str = "/usr/lib/firefox-esr";

/// A site, an NSS database and a request for tstclnt, as in `tls::nss_tstclnt_is_decrypted`.
fn nss_site(tag: &str) -> (TempDir, u16, crate::support::servers::Server) {
    let (dir, port, srv) = site(tag);
    std::fs::create_dir(dir.join("db")).expect("db dir");
    let st = Command::new("certutil")
        .args(["-N", "-d", "sql:db", "--empty-password"])
        .current_dir(dir.path())
        .status()
        .expect("certutil (libnss3-tools) is installed");
    assert!(st.success());
    std::fs::write(dir.join("req"), b"GET /index.html HTTP/1.0\r\n\r\n").expect("request");
    (dir, port, srv)
}

/// tstclnt (NSS, Firefox's build) in raw mode, TLS 1.3 and 1.2, with no tshark option: its keys
/// come from the key log file SSLKEYLOGFILE names, the user's (whose lines of an earlier run stay
/// out of the capture, and which is left as NSS wrote it) or, with `--nss-keys`, a private one
/// of the run's, gone at its end. They are in the capture before the packets that need them,
/// and in `--keylog`'s file; and nothing says to use `--nss-keys`.
#[test]
fn nss_tstclnt_raw_pcapng_decrypts_from_its_key_log_file() {
    let old = format!("CLIENT_RANDOM {} {}", "ab".repeat(32), "cd".repeat(48));
    for (version, last_label, own_file) in [
        ("tls1.3:tls1.3", "CLIENT_TRAFFIC_SECRET_0", true),
        ("tls1.2:tls1.2", "CLIENT_RANDOM", false),
        ("tls1.3:tls1.3", "CLIENT_TRAFFIC_SECRET_0", false),
    ] {
        let (dir, port, _srv) = nss_site("keys-nss");
        let user_file = dir.join("user-keys.log");
        std::fs::write(&user_file, format!("{old}\n")).expect("an earlier run's keys");
        let shell = format!("exec tstclnt -V {version} -h 127.0.0.1 -p {port} -d sql:db -o < req");
        let mut env = vec![
            ("LD_LIBRARY_PATH", OsStr::new(FIREFOX_NSS)),
            ("TMPDIR", dir.path().as_os_str()),
        ];
        let mut args = vec!["-w", "t.pcapng", "--keylog", "ours.log"];
        if own_file {
            env.push(("SSLKEYLOGFILE", user_file.as_os_str()));
        } else {
            args.push("--nss-keys");
        }
        let out = cli_env(dir.path(), "raw", &args, &["sh", "-c", &shell], &env);
        assert!(out.stdout.windows(BODY.len()).any(|w| w == BODY));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("--nss-keys"), "{err}");
        let cap = dir.join("t.pcapng");
        assert_decrypts_alone(&cap, port, last_label);
        let (lines, _) = secrets(&cap);
        assert!(!lines.contains(&old), "an earlier run's line: {lines:?}");
        let ours = std::fs::read_to_string(dir.join("ours.log")).expect("--keylog");
        assert_eq!(ours.lines().collect::<Vec<_>>(), lines);
        if own_file {
            let user = std::fs::read_to_string(&user_file).expect("the user's file");
            let written: Vec<&str> = user.lines().filter(|l| !l.starts_with('#')).collect();
            assert_eq!(written[0], old, "left as it was");
            assert_eq!(written[1..], lines, "NSS's lines, read as it wrote them");
        }
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("netintercept-keys")
            })
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "the private key log is removed: {left:?}");
    }
}

/// Raw mode, NSS and no key log file: one line says what to do, however many connections.
#[test]
fn nss_without_a_key_log_file_says_what_to_do() {
    let (dir, port, _srv) = nss_site("keys-nss-say");
    let one = format!("tstclnt -h 127.0.0.1 -p {port} -d sql:db -o < req");
    let shell = format!("{one}; {one}");
    let out = cli(
        dir.path(),
        "raw",
        &["-w", "t.pcapng"],
        &["sh", "-c", &shell],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let said: Vec<&str> = err.lines().filter(|l| l.contains("--nss-keys")).collect();
    assert_eq!(said.len(), 1, "{err}");
    assert!(
        said[0].starts_with("netintercept: '/usr/bin/tstclnt' (pid ")
            && said[0].contains("SSLKEYLOGFILE"),
        "{err}"
    );
    assert_eq!(secrets(&dir.join("t.pcapng")).0, Vec::<String>::new());
}

/// curl (OpenSSL) with SSLKEYLOGFILE: each secret comes from our hook and from the file curl
/// writes, and is written once, to the capture and to `--keylog`.
#[test]
fn a_key_from_the_hook_and_the_file_is_written_once() {
    let (dir, port, _srv) = site("keys-twice");
    let url = format!("https://127.0.0.1:{port}/index.html");
    let file = dir.join("curl-keys.log");
    let out = cli_env(
        dir.path(),
        "raw",
        &["-w", "c.pcapng", "--keylog", "ours.log"],
        &["curl", "-sSk", &url],
        &[("SSLKEYLOGFILE", file.as_os_str())],
    );
    assert_eq!(out.stdout, BODY);
    let curls = std::fs::read_to_string(&file).expect("curl wrote its key log");
    let curls: Vec<&str> = curls.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(curls.len(), 5, "TLS 1.3's five secrets: {curls:?}");
    let (lines, _) = secrets(&dir.join("c.pcapng"));
    assert_eq!(lines, curls);
    let ours = std::fs::read_to_string(dir.join("ours.log")).expect("--keylog");
    assert_eq!(ours.lines().collect::<Vec<_>>(), curls);
}

/// Firefox (headless, its socket process on and off) with `--nss-keys` in raw mode: the pcapng of
/// the process that spoke to the server decrypts alone, and holds only ciphertext.
#[test]
fn firefox_raw_pcapng_decrypts_with_nss_keys() {
    for socket_process in [true, false] {
        let dir = TempDir::new("keys-firefox");
        crate::tls::firefox_profile(dir.path(), socket_process);
        let port = support::free_port();
        let _srv = s_server(dir.path(), "127.0.0.1", port);
        let profile = dir.join("profile");
        let url = format!("https://127.0.0.1:{port}/index.html");
        let shot = dir.join("shot.png");
        let (profile, shot) = (profile.to_string_lossy(), shot.to_string_lossy());
        let out = cli_env(
            dir.path(),
            "raw",
            &["-w", "ff-%p.pcapng", "--nss-keys"],
            &[
                "firefox-esr",
                "--headless",
                "--no-remote",
                "--profile",
                &profile,
                "--screenshot",
                &shot,
                &url,
            ],
            &[
                ("MOZ_CRASHREPORTER_DISABLE", OsStr::new("1")),
                ("HOME", dir.path().as_os_str()),
                ("TMPDIR", dir.path().as_os_str()),
            ],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("SSLKEYLOGFILE"), "{err}");
        let mut decrypted = Vec::new();
        for e in std::fs::read_dir(dir.path()).expect("dir") {
            let p = e.expect("entry").path();
            if p.extension().is_some_and(|x| x == "pcapng") {
                let report = support::tshark::inspect(&p);
                assert_eq!(
                    (
                        report.bad_checksums,
                        report.analysis_flags,
                        report.malformed
                    ),
                    (0, 0, 0),
                    "{}",
                    report.flagged
                );
                if tshark_gets(&p, &[]).trim() == "/index.html" {
                    assert!(!payloads(&p).contains(GET_HEX), "ciphertext only");
                    decrypted.push(p);
                }
            }
        }
        assert_eq!(decrypted.len(), 1, "socket process {socket_process}: {err}");
    }
}
