//! The `netintercept` command: run a program with the library preloaded.

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config;
use crate::quoted::{quoted, PATH_CHARS};

/// The text of `--help`.
pub const HELP: &str = "\
netintercept: capture one program's network traffic, TLS decrypted, without root

Usage: netintercept [-w FILE] [-f FILTER] [--keylog FILE] [--events DIR] [--no-follow] [--] COMMAND [ARGS...]

Runs COMMAND with libnetintercept.so preloaded and writes a pcap of the TCP and UDP
conversations it has over IPv4 and IPv6, synthesized from the calls it makes.

Options:
  -w FILE        capture file name pattern (sets NETINTERCEPT_FILE; default netintercept.pcap)
  -f FILTER      tcpdump/libpcap filter expression (sets NETINTERCEPT_FILTER)
  --keylog FILE  also write the TLS session keys to FILE in SSLKEYLOGFILE format (sets
                 NETINTERCEPT_KEYLOG), for Wireshark's tls.keylog_file with a pcap
  --events DIR   also write per-socket event traces in tcpsnitch's format under DIR (sets
                 NETINTERCEPT_EVENTS): DIR/<program>_<NNN>/<socket>.json, one call a line
  --no-follow    do not trace child processes (sets NETINTERCEPT_FOLLOW=0)
  -h, --help     show this help

Patterns in FILE (as in core(5)):
  %p pid   %t start time (epoch seconds)   %h host name   %e executable name
  %E executable path with '/' written as '!'   %u uid   %% a literal '%'
Without %p every process of the run writes into the same file.

Environment (also usable with LD_PRELOAD=/path/to/libnetintercept.so COMMAND):
  NETINTERCEPT_FILE      capture file name pattern (as -w)
  NETINTERCEPT_FILTER    libpcap filter (as -f)
  NETINTERCEPT_FOLLOW    0 to leave child processes untraced
  NETINTERCEPT_LIB       the library to preload (default: libnetintercept.so beside this program)
  NETINTERCEPT_TLS       plain (default: decrypted TLS), raw (the ciphertext) or both
                         (plaintext on a parallel stream, client port XOR 0x8000); a pcapng of
                         raw or both carries the keys (OpenSSL, GnuTLS): Wireshark decrypts it
  NETINTERCEPT_KEYLOG    TLS key log file (as --keylog), in any TLS mode
  NETINTERCEPT_EVENTS    folder of the per-socket event traces (as --events)
  NETINTERCEPT_FORMAT    pcap or pcapng (pcapng has per-packet comments); default: pcapng
                         for a name ending in .pcapng, else pcap

The exit status is COMMAND's, or 128+N when a signal N killed it.
Statically linked programs cannot be traced: nothing is preloaded into them.
";

struct Args {
    /// Bytes as given: a file name need not be UTF-8 (a filter must, [`config`] says so).
    file: Option<OsString>,
    filter: Option<OsString>,
    keylog: Option<OsString>,
    events: Option<OsString>,
    follow: bool,
    command: Vec<OsString>,
}

enum Parsed {
    Run(Args),
    Help,
    Usage(String),
}

fn parse(mut argv: impl Iterator<Item = OsString>) -> Parsed {
    let mut args = Args {
        file: None,
        filter: None,
        keylog: None,
        events: None,
        follow: true,
        command: Vec::new(),
    };
    while let Some(arg) = argv.next() {
        let Some(s) = arg.to_str().map(str::to_owned) else {
            args.command.push(arg);
            break;
        };
        match s.as_str() {
            "-h" | "--help" => return Parsed::Help,
            "--" => break,
            "--no-follow" => args.follow = false,
            "-w" | "-f" | "--keylog" | "--events" => {
                let Some(v) = argv.next() else {
                    return Parsed::Usage(format!("option {s} needs a value"));
                };
                match s.as_str() {
                    "-w" => args.file = Some(v),
                    "-f" => args.filter = Some(v),
                    "--events" => args.events = Some(v),
                    _ => args.keylog = Some(v),
                }
            }
            _ if s.starts_with('-') && s.len() > 1 => {
                return Parsed::Usage(format!("unknown option '{s}'"))
            }
            _ => {
                args.command.push(arg);
                break;
            }
        }
    }
    args.command.extend(argv);
    if args.command.is_empty() {
        return Parsed::Usage("no COMMAND given".into());
    }
    Parsed::Run(args)
}

/// The preload library: $NETINTERCEPT_LIB, else `libnetintercept.so` beside this executable or
/// in `../lib`.
fn library() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("NETINTERCEPT_LIB").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return std::fs::canonicalize(&p)
            .map_err(|e| format!("NETINTERCEPT_LIB '{}': {e}", p.display()));
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let beside = exe.with_file_name("libnetintercept.so");
    // Installed as PREFIX/bin/netintercept with PREFIX/lib/libnetintercept.so.
    let installed = exe
        .parent()
        .and_then(Path::parent)
        .map(|p| p.join("lib/libnetintercept.so"));
    [Some(beside.clone()), installed]
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "library not found at '{}' (set NETINTERCEPT_LIB)",
                beside.display()
            )
        })
}

/// `cmd` resolved through PATH as execvp would.
fn resolve(cmd: &Path) -> Option<PathBuf> {
    if cmd.components().count() > 1 {
        return Some(cmd.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

/// Whether `bytes` are an ELF executable without a program interpreter (statically linked).
pub fn is_static_elf(bytes: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return false; // not a 64-bit little-endian ELF (scripts and others are not judged)
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let Some(phoff) = u64_at(32) else {
        return false;
    };
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    (0..phnum).all(|i| u32_at(phoff as usize + i * phentsize) != Some(PT_INTERP))
}

fn warn_if_static(cmd: &Path) {
    let Some(path) = resolve(cmd) else { return };
    let mut head = vec![0u8; 4096];
    let Ok(n) = std::fs::File::open(&path).and_then(|mut f| std::io::Read::read(&mut f, &mut head))
    else {
        return;
    };
    if is_static_elf(&head[..n]) {
        eprintln!(
            "netintercept: '{}' is statically linked: the dynamic loader never runs in it, so nothing is preloaded and nothing can be captured",
            path.display()
        );
    }
}

/// Run the CLI with `argv` (without the program name); returns the exit status.
pub fn run(argv: impl Iterator<Item = OsString>) -> i32 {
    let mut argv = argv.peekable();
    if argv.peek().is_some_and(|a| a == "--collect") {
        let rest: Vec<OsString> = argv.skip(1).collect();
        if rest.len() != 2 {
            eprintln!("netintercept: --collect REGION LIBDIR");
            return 2;
        }
        return crate::collector::detached_main(Path::new(&rest[0]), Path::new(&rest[1]));
    }
    let args = match parse(argv) {
        Parsed::Help => {
            print!("{HELP}");
            return 0;
        }
        Parsed::Usage(msg) => {
            eprintln!("netintercept: {msg}\n\n{HELP}");
            return 2;
        }
        Parsed::Run(a) => a,
    };
    let lib = match library() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("netintercept: {e}");
            return 2;
        }
    };
    let lib_dir = lib.parent().map(Path::to_path_buf).unwrap_or_default();
    // The options stand for the variables they set; everything is checked, and the filter
    // compiled, once, before the program starts.
    let cfg = config::Config::from_lookup(|name| match name {
        "NETINTERCEPT_FILE" if args.file.is_some() => args.file.clone(),
        "NETINTERCEPT_FILTER" if args.filter.is_some() => args.filter.clone(),
        "NETINTERCEPT_KEYLOG" if args.keylog.is_some() => args.keylog.clone(),
        "NETINTERCEPT_EVENTS" if args.events.is_some() => args.events.clone(),
        _ => std::env::var_os(name),
    });
    let Ok(filter) = crate::collector::check(&cfg, &lib_dir, true) else {
        return 2;
    };
    warn_if_static(Path::new(&args.command[0]));
    let pattern = cfg.file_pattern.clone();
    let mut preload = lib.into_os_string();
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|o| !o.is_empty()) {
        preload.push(":");
        preload.push(old);
    }
    let (region_path, region) = match crate::collector::spawn::create_region() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("netintercept: {e}");
            return 2;
        }
    };
    // SAFETY: getpid cannot fail.
    region.set_collector_pid(unsafe { libc::getpid() });
    let mut cmd = Command::new(&args.command[0]);
    cmd.args(&args.command[1..])
        .env("LD_PRELOAD", preload)
        .env("NETINTERCEPT_FILE", &pattern)
        .env(crate::recorder::RING_VAR, &region_path);
    if let Some(f) = &args.filter {
        cmd.env("NETINTERCEPT_FILTER", f);
    }
    if let Some(k) = &args.keylog {
        cmd.env("NETINTERCEPT_KEYLOG", k);
    }
    if let Some(e) = &args.events {
        // The hooks record the calls only the traces need when this is set.
        cmd.env("NETINTERCEPT_EVENTS", e);
    }
    if !args.follow {
        cmd.env("NETINTERCEPT_FOLLOW", "0");
    }
    if pattern == "-" {
        // The capture owns standard output; the program's own output goes to stderr.
        cmd.stdout(std::process::Stdio::from(
            std::io::stderr()
                .as_fd()
                .try_clone_to_owned()
                .expect("dup stderr"),
        ));
    }
    let outputs = crate::collector::outputs(&region, &cfg, filter);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&region_path);
            eprintln!(
                "netintercept: cannot run '{}': {e}",
                args.command[0].to_string_lossy()
            );
            return if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
        }
    };
    if let Some(line) = crate::tls::complaint() {
        eprintln!("netintercept: {line}");
    }
    // Like a shell waiting for a foreground job: the terminal's ^C and ^\ are for the program.
    // SAFETY: setting a signal disposition to SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
    }
    let ended = crate::collector::run(
        region,
        outputs,
        crate::tls::mode(),
        crate::collector::Until::Child(child),
    );
    let _ = std::fs::remove_file(&region_path);
    let Some(status) = ended.status else {
        eprintln!("netintercept: waiting for the program failed");
        return 2;
    };
    if pattern != "-" {
        // The collector's own list: the regular files it wrote whole. A file it could not
        // write was named with the reason already; a device (`-w /dev/null`) is the user's
        // own choice and needs no word.
        if ended.written.is_empty() && !ended.failed && !ended.device {
            eprintln!("netintercept: no packets captured, no capture file written");
        }
        for f in &ended.written {
            eprintln!(
                "netintercept: capture written to {}",
                quoted(f.as_bytes(), PATH_CHARS)
            );
        }
    }
    // The key log is a file of its own, whatever the capture's name.
    match (&ended.keylog, &cfg.keylog) {
        (Some(f), _) => eprintln!(
            "netintercept: TLS keys written to {}",
            quoted(f.as_bytes(), PATH_CHARS)
        ),
        (None, Some(_)) if !ended.keylog_failed => {
            eprintln!("netintercept: no TLS keys logged, no key log written")
        }
        _ => {}
    }
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Parsed {
        parse(v.iter().map(OsString::from).collect::<Vec<_>>().into_iter())
    }

    #[test]
    fn parses_options_then_command() {
        let Parsed::Run(a) = args(&[
            "-w", "x.pcap", "-f", "tcp", "--keylog", "k.log", "curl", "-w", "y",
        ]) else {
            panic!("expected a command");
        };
        assert_eq!(a.file.as_deref(), Some(std::ffi::OsStr::new("x.pcap")));
        assert_eq!(a.filter.as_deref(), Some(std::ffi::OsStr::new("tcp")));
        assert_eq!(a.keylog.as_deref(), Some(std::ffi::OsStr::new("k.log")));
        assert_eq!(a.command, ["curl", "-w", "y"]);
    }

    #[test]
    fn double_dash_ends_options() {
        let Parsed::Run(a) = args(&["--no-follow", "--", "-weird"]) else {
            panic!("expected a command");
        };
        assert!(!a.follow);
        assert_eq!(a.command, ["-weird"]);
    }

    #[test]
    fn usage_errors() {
        assert!(matches!(args(&[]), Parsed::Usage(_)));
        assert!(matches!(args(&["-w"]), Parsed::Usage(_)));
        assert!(matches!(args(&["--keylog"]), Parsed::Usage(_)));
        assert!(matches!(args(&["--bogus", "x"]), Parsed::Usage(_)));
        assert!(matches!(args(&["--help"]), Parsed::Help));
    }

    #[test]
    fn static_detection_reads_program_headers() {
        let sh = std::fs::read("/bin/sh").expect("/bin/sh");
        assert!(!is_static_elf(&sh));
        assert!(!is_static_elf(b"#!/bin/sh\n"));
    }
}
