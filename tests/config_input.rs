//! Issue 12, exactness of configuration and outputs: values that are not UTF-8, variables that
//! name nothing, long bad filters, devices as the capture, long pcapng options. Each case is run
//! through the CLI and through a bare LD_PRELOAD (the detached collector).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::{self, TempDir};

const LIMIT: Duration = Duration::from_secs(120);

/// One UDP datagram to 127.0.0.1:argv[1] (nobody needs to listen); extra arguments are only
/// there to be part of the command line. Says "sent" so the test sees the program ran.
const SEND: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(b"exact", ("127.0.0.1", int(sys.argv[1])))
print("sent")
"#;

/// Variables of ours the outer environment must not bring in.
const OURS: [&str; 5] = [
    "NETINTERCEPT_FILE",
    "NETINTERCEPT_FILTER",
    "NETINTERCEPT_FORMAT",
    "NETINTERCEPT_FLUSH_MS",
    "NETINTERCEPT_TLS",
];

/// The sender traced with a bare LD_PRELOAD, writing to the pattern `file` (bytes) in `dir`.
fn bare(dir: &Path, file: &[u8], extra: &[&str]) -> Command {
    let port = support::free_port().to_string();
    let mut cmd = support::traced(dir, Path::new("unused"), "python3", &["-c", SEND, &port]);
    cmd.args(extra);
    for v in OURS {
        cmd.env_remove(v);
    }
    cmd.env("NETINTERCEPT_FILE", OsStr::from_bytes(file));
    cmd
}

/// The sender under the CLI, with `options` before the command.
fn cli(dir: &Path, options: &[&OsStr], extra: &[&str]) -> Command {
    let port = support::free_port().to_string();
    let mut cmd = Command::new(support::cli());
    cmd.args(options)
        .arg("--")
        .args(["python3", "-c", SEND, &port])
        .args(extra)
        .current_dir(dir);
    for v in OURS {
        cmd.env_remove(v);
    }
    cmd
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
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

/// The names in `dir` other than the ones a test made itself.
fn names(dir: &Path) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().as_bytes().to_vec())
        .collect();
    v.sort();
    v
}

/// A Latin-1 name is used as those bytes, with `%p` expanded, through NETINTERCEPT_FILE (bare
/// and CLI) and `-w`; the capture is clean and the CLI names it exactly.
#[test]
fn file_names_that_are_not_utf8_are_written_exactly() {
    let dir = TempDir::new("cfg-latin1");
    let out = run(&mut bare(dir.path(), b"caf\xe9-%p.pcap", &[]));
    assert!(out.status.success() && lines(&out).is_empty(), "{out:?}");
    let found = names(dir.path());
    assert_eq!(found.len(), 1, "one capture: {found:?}");
    let name = &found[0];
    let pid = name
        .strip_prefix(b"caf\xe9-")
        .and_then(|n| n.strip_suffix(b".pcap"))
        .expect("the exact bytes around the pid");
    assert!(
        !pid.is_empty() && pid.iter().all(u8::is_ascii_digit),
        "{name:?}"
    );
    let path = dir.path().join(OsStr::from_bytes(name));
    assert_eq!(support::check_clean(&path).udp.len(), 1);
    std::fs::remove_file(&path).expect("remove");

    let by_option = cli(
        dir.path(),
        &[os("-w"), OsStr::from_bytes(b"cli\xe9.pcap")],
        &[],
    );
    let mut by_env = cli(dir.path(), &[], &[]);
    by_env.env("NETINTERCEPT_FILE", OsStr::from_bytes(b"env\xe9.pcap"));
    let cases = [
        (by_option, &b"cli\xe9.pcap"[..], r"'cli\xe9.pcap'"),
        (by_env, b"env\xe9.pcap", r"'env\xe9.pcap'"),
    ];
    for (mut cmd, name, shown) in cases {
        let out = run(&mut cmd);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(out.stdout, b"sent\n");
        assert_eq!(
            lines(&out),
            [format!(
                "netintercept: capture written to {shown}: 1 packet, 1 UDP flow"
            )]
        );
        let path = dir.path().join(OsStr::from_bytes(name));
        assert_eq!(support::check_clean(&path).udp.len(), 1);
    }
}

/// A filter that is not text: one line, nothing written, the program untouched (bare); the CLI
/// exits 2 before starting the program, for `-f` and for the variable.
#[test]
fn a_filter_that_is_not_utf8_is_refused_with_one_line() {
    let dir = TempDir::new("cfg-filter-bytes");
    let line = r"netintercept: bad filter 'udp\xff': not UTF-8 text (byte 0xff at offset 3)";
    let mut cmd = bare(dir.path(), b"bare.pcap", &[]);
    cmd.env("NETINTERCEPT_FILTER", OsStr::from_bytes(b"udp\xff"));
    let out = run(&mut cmd);
    assert!(out.status.success() && out.stdout == b"sent\n", "{out:?}");
    assert_eq!(lines(&out), [line]);
    assert!(names(dir.path()).is_empty(), "nothing written");

    let by_option = cli(
        dir.path(),
        &[
            os("-w"),
            os("c.pcap"),
            os("-f"),
            OsStr::from_bytes(b"udp\xff"),
        ],
        &[],
    );
    let mut by_env = cli(dir.path(), &[os("-w"), os("c.pcap")], &[]);
    by_env.env("NETINTERCEPT_FILTER", OsStr::from_bytes(b"udp\xff"));
    for mut cmd in [by_option, by_env] {
        let out = run(&mut cmd);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert!(out.stdout.is_empty(), "the program never ran");
        assert_eq!(String::from_utf8_lossy(&out.stderr), format!("{line}\n"));
        assert!(names(dir.path()).is_empty(), "nothing written");
    }
}

/// NETINTERCEPT_FLUSH_MS is read by nothing: any value is said to be ignored, once, and the
/// run goes on.
#[test]
fn a_flush_interval_is_said_to_be_ignored() {
    let dir = TempDir::new("cfg-flush");
    for value in ["abc", "-1", "0", "99999999999999999999999"] {
        let line = format!(
            "netintercept: NETINTERCEPT_FLUSH_MS='{value}' is ignored: packets reach the capture \
             as the collector makes them, there is no flush interval to set"
        );
        let mut cmd = bare(dir.path(), b"bare.pcap", &[]);
        cmd.env("NETINTERCEPT_FLUSH_MS", value);
        let out = run(&mut cmd);
        assert!(out.status.success() && out.stdout == b"sent\n", "{out:?}");
        assert_eq!(lines(&out), std::slice::from_ref(&line));
        assert_eq!(support::check_clean(&dir.join("bare.pcap")).udp.len(), 1);

        let mut cmd = cli(dir.path(), &[os("-w"), os("cli.pcap")], &[]);
        cmd.env("NETINTERCEPT_FLUSH_MS", value);
        let out = run(&mut cmd);
        assert!(out.status.success() && out.stdout == b"sent\n", "{out:?}");
        assert_eq!(
            lines(&out),
            [
                line,
                "netintercept: capture written to 'cli.pcap': 1 packet, 1 UDP flow".into()
            ]
        );
        assert_eq!(support::check_clean(&dir.join("cli.pcap")).udp.len(), 1);
    }
}

/// NETINTERCEPT_FORMAT that names no format: the CLI exits 2 before starting the program; a
/// detached collector says so once and writes the format the file name implies.
#[test]
fn a_bad_format_is_named_once() {
    let dir = TempDir::new("cfg-format");
    const PCAP: [u8; 4] = [0xd4, 0xc3, 0xb2, 0xa1];
    const PCAPNG: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];
    for (value, shown) in [(&b"bogus"[..], "'bogus'"), (b"pcapng\xff", r"'pcapng\xff'")] {
        let head = format!("netintercept: NETINTERCEPT_FORMAT={shown} is not pcap or pcapng");
        let mut cmd = cli(dir.path(), &[os("-w"), os("c.pcapng")], &[]);
        cmd.env("NETINTERCEPT_FORMAT", OsStr::from_bytes(value));
        let out = run(&mut cmd);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert!(out.stdout.is_empty(), "the program never ran");
        assert_eq!(String::from_utf8_lossy(&out.stderr), format!("{head}\n"));
        assert!(names(dir.path()).is_empty());

        for (file, magic, format) in [("b.pcapng", PCAPNG, "pcapng"), ("b.pcap", PCAP, "pcap")] {
            let mut cmd = bare(dir.path(), file.as_bytes(), &[]);
            cmd.env("NETINTERCEPT_FORMAT", OsStr::from_bytes(value));
            let out = run(&mut cmd);
            assert!(out.status.success() && out.stdout == b"sent\n", "{out:?}");
            assert_eq!(
                lines(&out),
                [format!(
                    "{head}: writing {format}, as the file name implies"
                )]
            );
            let bytes = std::fs::read(dir.join(file)).expect("capture");
            assert_eq!(bytes[..4], magic, "{file}");
            std::fs::remove_file(dir.join(file)).expect("remove");
        }
    }
}

/// A bad filter of 100 KB is shown by its first 200 characters, in one line, once; a bad filter
/// with a line break stays one line. Both through the CLI and a bare LD_PRELOAD.
#[test]
fn a_long_or_multiline_bad_filter_is_one_short_line() {
    let dir = TempDir::new("cfg-long-filter");
    let long = format!("{} and and", "port 1 or ".repeat(10_000));
    assert!(long.len() > 100_000);
    let cases = [
        (long.as_str(), format!("'{}…'", &long[..200])),
        (
            "tcp port banana\nor udp",
            r"'tcp port banana\nor udp'".to_string(),
        ),
    ];
    for (expr, shown) in &cases {
        let head = format!("netintercept: bad filter {shown}: ");
        let mut cmd = bare(dir.path(), b"bare.pcap", &[]);
        cmd.env("NETINTERCEPT_FILTER", expr);
        let out = run(&mut cmd);
        assert!(out.status.success() && out.stdout == b"sent\n", "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with(&head) && err.len() < 400, "{err}");

        let out = run(&mut cli(
            dir.path(),
            &[os("-w"), os("c.pcap"), os("-f"), os(expr)],
            &[],
        ));
        assert_eq!(out.status.code(), Some(2));
        assert!(out.stdout.is_empty(), "the program never ran");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with(&head) && err.len() < 400, "{err}");
        assert!(names(dir.path()).is_empty(), "nothing written");
    }
}

/// `/dev/null` named as the capture takes it silently; `/dev/full` gives one line with the
/// real reason. Neither is replaced or truncated.
#[test]
fn character_devices_named_as_the_capture() {
    let dir = TempDir::new("cfg-devices");
    let full = "netintercept: cannot write capture to '/dev/full': No space left on device";
    for (device, expected) in [("/dev/null", None), ("/dev/full", Some(full))] {
        let outs = [
            run(&mut cli(dir.path(), &[os("-w"), os(device)], &[])),
            run(&mut bare(dir.path(), device.as_bytes(), &[])),
            run(&mut cli(
                dir.path(),
                &[os("-w"), os(device), os("-f"), os("udp")],
                &[],
            )),
        ];
        // The CLI's end-of-run block adds what the refused device cost, without naming it again.
        let lost = "netintercept: not captured: 1 packet, as the capture file could not be \
                    written (said above)";
        for (out, by_cli) in outs.into_iter().zip([true, false, true]) {
            assert!(out.status.success() && out.stdout == b"sent\n", "{out:?}");
            let mut want: Vec<&str> = expected.into_iter().collect();
            if by_cli && expected.is_some() {
                want.push(lost);
            }
            assert_eq!(lines(&out), want, "{device}");
        }
        let meta = std::fs::symlink_metadata(device).expect("device");
        assert!(
            meta.file_type().is_char_device(),
            "{device} is still a device"
        );
    }
    assert!(names(dir.path()).is_empty());
}

/// What is still refused: a symlink, a FIFO (never blocking the program), a file with another
/// hard link, another user's file; none of them is changed.
#[test]
fn links_fifos_and_other_users_files_are_refused() {
    let dir = TempDir::new("cfg-refused");
    std::fs::write(dir.join("precious"), b"precious").expect("file");
    std::os::unix::fs::symlink(dir.join("precious"), dir.join("link.pcap")).expect("symlink");
    std::fs::write(dir.join("hard.pcap"), b"precious").expect("file");
    std::fs::hard_link(dir.join("hard.pcap"), dir.join("hard2")).expect("hard link");
    let fifo = Command::new("mkfifo")
        .arg(dir.join("fifo.pcap"))
        .status()
        .expect("mkfifo");
    assert!(fifo.success());
    let mut cases = vec![
        ("link.pcap", "it is a symbolic link"),
        ("fifo.pcap", "it is a FIFO"),
        ("hard.pcap", "it has other hard links"),
    ];
    // Only root can give a file away; elsewhere that case is left out.
    std::fs::write(dir.join("theirs.pcap"), b"precious").expect("file");
    let given = Command::new("chown")
        .args(["65534"])
        .arg(dir.join("theirs.pcap"))
        .output()
        .is_ok_and(|o| o.status.success());
    if given {
        cases.push(("theirs.pcap", "it belongs to another user"));
    }
    for (name, why) in cases {
        let line = format!("netintercept: cannot write capture to '{name}': {why}");
        // The CLI's end-of-run block adds what it cost, without naming the file again.
        let lost = "netintercept: not captured: 1 packet, as the capture file could not be \
                    written (said above)";
        let outs = [
            (
                run(&mut cli(dir.path(), &[os("-w"), os(name)], &[])),
                vec![&*line, lost],
            ),
            (
                run(&mut bare(dir.path(), name.as_bytes(), &[])),
                vec![&*line],
            ),
        ];
        for (out, want) in outs {
            assert!(out.status.success() && out.stdout == b"sent\n", "{out:?}");
            assert_eq!(lines(&out), want);
        }
    }
    for name in ["precious", "hard.pcap", "theirs.pcap"] {
        assert_eq!(std::fs::read(dir.join(name)).expect("file"), b"precious");
    }
    let meta = std::fs::symlink_metadata(dir.join("fifo.pcap")).expect("fifo");
    assert!(meta.file_type().is_fifo());
}

/// A traced command line of 70,000 characters goes into the pcapng interface description: the
/// file stays readable by tshark, capinfos and pcap-file, and the description says it was cut.
#[test]
fn a_long_command_line_leaves_a_readable_pcapng() {
    let dir = TempDir::new("cfg-long-cmdline");
    let pad = "x".repeat(70_000);
    let out = run(&mut cli(
        dir.path(),
        &[os("-w"), os("long.pcapng")],
        &[&pad],
    ));
    assert!(out.status.success(), "{out:?}");
    let cap = dir.join("long.pcapng");

    let tshark = Command::new("tshark")
        .arg("-r")
        .arg(&cap)
        .args([
            "-T",
            "fields",
            "-e",
            "frame.interface_description",
            "-e",
            "udp.payload",
        ])
        .output()
        .expect("tshark is installed");
    let text = String::from_utf8_lossy(&tshark.stdout);
    assert!(tshark.status.success(), "{tshark:?}");
    let row: Vec<&str> = text.trim_end().split('\t').collect();
    assert_eq!(row.len(), 2, "one packet: {text:.300}");
    assert!(row[0].contains(" -c "), "the command line: {:.200}", row[0]);
    let tail = &row[0][row[0].len().saturating_sub(40)..];
    assert!(
        tail.contains("x… [cut from ") && tail.ends_with(" bytes]"),
        "marked: {tail}"
    );
    assert_eq!(row[1], "6578616374", "the datagram 'exact'");

    let capinfos = Command::new("capinfos")
        .args(["-c", "-M"])
        .arg(&cap)
        .output()
        .expect("capinfos is installed (Debian package wireshark-common, with tshark)");
    let info = String::from_utf8_lossy(&capinfos.stdout);
    assert!(capinfos.status.success(), "{capinfos:?}");
    let count = info
        .lines()
        .find_map(|l| l.strip_prefix("Number of packets:"))
        .map(str::trim);
    assert_eq!(count, Some("1"), "{info}");

    let bytes = std::fs::read(&cap).expect("capture");
    let mut reader = pcap_file::pcapng::PcapNgReader::new(&bytes[..]).expect("section");
    let mut blocks = 0;
    while let Some(block) = reader.next_block() {
        block.expect("every block reads");
        blocks += 1;
    }
    assert_eq!(blocks, 2, "interface description and one packet");
}

/// With the CLI and a filter, the traced program never maps libpcap (the CLI compiles the
/// filter, once, for the whole run).
#[test]
fn the_cli_keeps_libpcap_out_of_the_traced_program() {
    let dir = TempDir::new("cfg-maps");
    let out = run(Command::new(support::cli())
        .args(["-w", "m.pcap", "-f", "tcp port 1", "cat", "/proc/self/maps"])
        .current_dir(dir.path()));
    let maps = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && maps.contains("libnetintercept.so"),
        "{out:?}"
    );
    assert!(
        !maps.contains("libpcap"),
        "libpcap mapped into the traced program"
    );
}
