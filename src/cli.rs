//! The `netintercept` command: run a program with the library preloaded.

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config;
use crate::layout;
use crate::quoted::{quoted, PATH_CHARS};

mod backend;
mod docs;
mod options;
mod private_key_log;
mod summary;

use options::Parsed;

/// Every flag a user may type (`-w`, `--no-follow`, …), from the options' one definition: the
/// docs test checks that each is documented.
pub fn flags() -> Vec<String> {
    let mut out = Vec::new();
    for arg in options::public()
        .get_arguments()
        .filter(|a| !a.is_hide_set())
    {
        out.extend(arg.get_short().map(|s| format!("-{s}")));
        out.extend(arg.get_long().map(|l| format!("--{l}")));
    }
    out
}

/// The preload library: $NETINTERCEPT_LIB, else `libnetintercept.so` beside this executable, in
/// `../lib/netintercept` or in `../lib` (see [`crate::layout`]).
fn library() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("NETINTERCEPT_LIB").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return std::fs::canonicalize(&p)
            .map_err(|e| format!("NETINTERCEPT_LIB '{}': {e}", p.display()));
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let found = layout::find(dir, &layout::LIB_DIRS_FROM_CLI, "libnetintercept.so");
    // LD_PRELOAD then names /usr/lib/netintercept/…, not /usr/bin/../lib/netintercept/….
    let found = found.map(|p| std::fs::canonicalize(&p).unwrap_or(p));
    found.ok_or_else(|| {
        // `cargo install` copies the CLI alone (cargo installs no libraries): say what works.
        format!(
            "libnetintercept.so is neither beside {} nor in ../lib/netintercept or ../lib: \
             `cargo install` installs the CLI without its libraries; install the Debian package \
             (cargo deb) or use CMake's install, or set NETINTERCEPT_LIB",
            exe.display()
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

/// Start the command under the system-call tracer; `Err` holds the exit code after a failure
/// was said.
fn trace(
    args: &options::Options,
    exe: Option<&Path>,
    events: bool,
    stdout_to_stderr: bool,
    region: crate::ring::Region,
    extra_env: &[(OsString, OsString)],
) -> Result<crate::collector::Until, i32> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStringExt;
    let name = args.command[0].to_string_lossy().into_owned();
    let cstr = |b: Vec<u8>| CString::new(b).map_err(|_| ());
    let Some(exe) = exe else {
        eprintln!("netintercept: cannot run '{name}': No such file or directory");
        return Err(127);
    };
    let argv: Result<Vec<CString>, ()> = args
        .command
        .iter()
        .map(|a| cstr(a.as_bytes().to_vec()))
        .collect();
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| !extra_env.iter().any(|(e, _)| e == k))
        .collect();
    env.extend(extra_env.iter().cloned());
    let envp: Result<Vec<CString>, ()> = env
        .into_iter()
        .map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend(v.into_vec());
            cstr(kv)
        })
        .collect();
    let (Ok(path), Ok(argv), Ok(envp)) = (cstr(exe.as_os_str().as_bytes().to_vec()), argv, envp)
    else {
        eprintln!("netintercept: cannot run '{name}': an argument holds a NUL byte");
        return Err(2);
    };
    let spec = crate::tracer::Spec {
        path,
        argv,
        envp,
        stdout_to_stderr,
        events,
        follow: !args.no_follow
            && config::follow(std::env::var_os("NETINTERCEPT_FOLLOW").as_deref()).unwrap_or(true),
    };
    match crate::tracer::launch(spec, region) {
        Ok(running) => Ok(crate::collector::Until::Traced(running.status)),
        Err(crate::tracer::LaunchError::Exec(e)) => {
            eprintln!(
                "netintercept: cannot run '{name}': {}",
                std::io::Error::from_raw_os_error(e)
            );
            Err(if e == libc::ENOENT { 127 } else { 126 })
        }
        Err(
            crate::tracer::LaunchError::Tracer(line) | crate::tracer::LaunchError::Attach(line),
        ) => {
            eprintln!("netintercept: {line}");
            Err(2)
        }
    }
}

/// `-p PID,…`: trace running processes until a detaching signal (or until they are gone),
/// then write the capture and let them run on.
fn attached(
    args: &options::Options,
    cfg: &config::Config,
    filter: Option<crate::filter::Filter>,
) -> i32 {
    let (region_path, region) = match crate::collector::spawn::create_region() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("netintercept: {e}");
            return 2;
        }
    };
    // SAFETY: getpid cannot fail.
    region.set_collector_pid(unsafe { libc::getpid() });
    let outputs = crate::collector::outputs(&region, cfg, filter);
    crate::tracer::detach_on_signals();
    let pids = args.attach.iter().map(|&p| p as i32).collect();
    let running = match crate::tracer::attach(pids, region, cfg.events.is_some()) {
        Ok(r) => r,
        Err(
            crate::tracer::LaunchError::Attach(line) | crate::tracer::LaunchError::Tracer(line),
        ) => {
            let _ = std::fs::remove_file(&region_path);
            eprintln!("netintercept: {line}");
            return 1;
        }
        Err(crate::tracer::LaunchError::Exec(_)) => return 1,
    };
    let mode = crate::tls::mode();
    let ended = crate::collector::run(
        region,
        outputs,
        mode,
        crate::collector::Until::Traced(running.status),
    );
    let _ = std::fs::remove_file(&region_path);
    report(args, cfg, &ended, mode);
    0
}

/// The end-of-run block (unless `-q`).
fn report(
    args: &options::Options,
    cfg: &config::Config,
    ended: &crate::collector::Ended,
    mode: crate::tls::Mode,
) {
    if args.quiet {
        return;
    }
    for line in summary::lines(&ended.report, mode == crate::tls::Mode::Plain) {
        eprintln!("netintercept: {line}");
    }
    // The key log is a file of its own, whatever the capture's name.
    match (&ended.report.keylog, &cfg.keylog) {
        (Some(f), _) => eprintln!(
            "netintercept: TLS keys written to {}",
            quoted(f.as_bytes(), PATH_CHARS)
        ),
        (None, Some(_)) if !ended.report.keylog_failed => {
            eprintln!("netintercept: no TLS keys logged, no key log written")
        }
        _ => {}
    }
}

/// Run the CLI with `argv` (without the program name); returns the exit status.
pub fn run(argv: impl Iterator<Item = OsString>) -> i32 {
    let args = match options::parse(argv) {
        Parsed::Help(text) => {
            print!("{text}");
            return 0;
        }
        Parsed::Usage(line) => {
            eprintln!("netintercept: {line}");
            return 2;
        }
        Parsed::Collect(region, lib_dir) => {
            return crate::collector::detached_main(&region, &lib_dir)
        }
        Parsed::GenerateDocs(root) => {
            return match docs::write_all(&root) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!(
                        "netintercept: cannot write the docs under '{}': {e}",
                        root.display()
                    );
                    2
                }
            }
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
        "NETINTERCEPT_FOLLOW" if args.no_follow => Some("0".into()),
        "NETINTERCEPT_EVENTS_PCAP" if args.events_pcap => Some("1".into()),
        "NETINTERCEPT_TCP_INFO_BYTES" if args.tcp_info_bytes.is_some() => {
            args.tcp_info_bytes.map(|n| n.to_string().into())
        }
        "NETINTERCEPT_TCP_INFO_USEC" if args.tcp_info_usec.is_some() => {
            args.tcp_info_usec.map(|n| n.to_string().into())
        }
        "NETINTERCEPT_TCP_EVENTS" if args.tcp_events => {
            Some(if args.timestamps { "time" } else { "1" }.into())
        }
        _ => std::env::var_os(name),
    });
    let Ok(filter) = crate::collector::check(&cfg, &lib_dir, true) else {
        return 2;
    };
    if !args.attach.is_empty() {
        return attached(&args, &cfg, filter);
    }
    let exe = resolve(Path::new(&args.command[0]));
    let asked = match args.backend {
        Some(b) => b,
        None => match backend::from_env(std::env::var_os("NETINTERCEPT_BACKEND")) {
            Ok(b) => b,
            Err(line) => {
                eprintln!("netintercept: {line}");
                return 2;
            }
        },
    };
    let (how, why) = backend::choose(asked, exe.as_deref());
    if let Some(why) = why {
        eprintln!("netintercept: {why}");
    }
    if how == options::Backend::Preload {
        warn_if_static(Path::new(&args.command[0]));
    }
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
    if args.events_pcap {
        cmd.env("NETINTERCEPT_EVENTS_PCAP", "1");
    }
    if args.no_follow {
        cmd.env("NETINTERCEPT_FOLLOW", "0");
    }
    // A key log file the user named is theirs, and is read as it is; --nss-keys only gives one
    // to a program that has none.
    let _private_keys =
        match args.nss_keys && std::env::var_os("SSLKEYLOGFILE").is_none_or(|f| f.is_empty()) {
            false => None,
            true => match private_key_log::PrivateKeyLog::create() {
                Ok(keys) => {
                    cmd.env("SSLKEYLOGFILE", keys.path());
                    Some(keys)
                }
                Err(line) => {
                    let _ = std::fs::remove_file(&region_path);
                    eprintln!("netintercept: {line}");
                    return 2;
                }
            },
        };
    if pattern == "-" {
        // The capture owns standard output; the program's own output goes to stderr.
        match std::io::stderr().as_fd().try_clone_to_owned() {
            Ok(fd) => {
                cmd.stdout(std::process::Stdio::from(fd));
            }
            Err(e) => {
                let _ = std::fs::remove_file(&region_path);
                eprintln!("netintercept: cannot give the program's output to stderr: {e}");
                return 2;
            }
        }
    }
    let outputs = crate::collector::outputs(&region, &cfg, filter);
    let until = if matches!(how, options::Backend::Ptrace | options::Backend::Both) {
        // With both, the library goes in too, for TLS alone (the tracer records the rest).
        let extra: Vec<(OsString, OsString)> = if how == options::Backend::Both {
            cmd.get_envs()
                .filter_map(|(k, v)| Some((k.to_os_string(), v?.to_os_string())))
                .chain([(
                    OsString::from(crate::recorder::TRACED_VAR),
                    OsString::from("1"),
                )])
                .collect()
        } else {
            Vec::new()
        };
        let traced = trace(
            &args,
            exe.as_deref(),
            cfg.events.is_some(),
            pattern == "-",
            region,
            &extra,
        );
        match traced {
            Ok(u) => u,
            Err(code) => {
                let _ = std::fs::remove_file(&region_path);
                return code;
            }
        }
    } else {
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_file(&region_path);
                eprintln!(
                    "netintercept: cannot run '{}': {e}",
                    args.command[0].to_string_lossy()
                );
                // As a shell says it: 127 not found, 126 found but not executable.
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
        crate::collector::Until::Child(child, region_path.clone().into())
    };
    // Like a shell waiting for a foreground job: the terminal's ^C and ^\ are for the program.
    // SAFETY: setting a signal disposition to SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
    }
    let mode = crate::tls::mode();
    let ended = crate::collector::run(region, outputs, mode, until);
    let _ = std::fs::remove_file(&region_path);
    let Some(status) = ended.status else {
        eprintln!("netintercept: waiting for the program failed");
        return 2;
    };
    report(&args, &cfg, &ended, mode);
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_detection_reads_program_headers() {
        let sh = std::fs::read("/bin/sh").expect("/bin/sh");
        assert!(!is_static_elf(&sh));
        assert!(!is_static_elf(b"#!/bin/sh\n"));
    }
}
