//! The man page and the shell completions, made from the options' one definition
//! ([`options::command`]) and its shared texts; checked in as `man/netintercept.1` and
//! `completions/*`, and regenerated with `netintercept --generate-docs .` (a test compares).

use std::path::{Path, PathBuf};

use clap_complete::Shell;
use clap_mangen::roff::{bold, italic, roman, Roff};

use super::options::{self, DESCRIPTION, EXIT_STATUS, PATTERNS, VARIABLES};

/// Every generated file: its path under the repository's root and its bytes.
pub fn files() -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = vec![(PathBuf::from("man/netintercept.1"), man_page())];
    for (shell, name) in [
        (Shell::Bash, "netintercept.bash"),
        (Shell::Zsh, "_netintercept"),
        (Shell::Fish, "netintercept.fish"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut options::public(), "netintercept", &mut buf);
        out.push((Path::new("completions").join(name), buf));
    }
    out
}

/// Write [`files`] under `root`.
pub fn write_all(root: &Path) -> std::io::Result<()> {
    for (path, bytes) in files() {
        let path = root.join(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, bytes)?;
    }
    Ok(())
}

/// netintercept(1).
fn man_page() -> Vec<u8> {
    let cmd = options::public();
    let man = clap_mangen::Man::new(cmd.clone())
        .section("1")
        .source(concat!("netintercept ", env!("CARGO_PKG_VERSION")))
        .manual("User Commands");
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = man.render_title(&mut out);
    let _ = man.render_name_section(&mut out);
    out.extend(synopsis(&cmd).render().into_bytes());
    // clap's long about starts with the line NAME already gives.
    let mut description = Roff::new();
    description
        .control("SH", ["DESCRIPTION"])
        .text([roman(DESCRIPTION)]);
    out.extend(description.render().into_bytes());
    let _ = man.render_options_section(&mut out);
    out.extend(prose().render().into_bytes());
    out
}

/// clap_mangen's synopsis leaves out the options' values (`-w` without FILE) and the preload
/// form; this one has both.
fn synopsis(cmd: &clap::Command) -> Roff {
    let mut line = vec![bold("netintercept")];
    for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        let flag = match (arg.get_short(), arg.get_long()) {
            (Some(s), _) => format!("-{s}"),
            (None, Some(l)) => format!("--{l}"),
            (None, None) => continue,
        };
        if flag == "-h" {
            continue;
        }
        line.push(roman(" ["));
        line.push(bold(flag));
        let values = arg.get_value_names().unwrap_or_default();
        for value in values.iter().filter(|_| arg.get_action().takes_values()) {
            line.push(roman(" "));
            line.push(italic(value.as_str()));
        }
        line.push(roman("]"));
    }
    line.extend([
        roman(" ["),
        bold("--"),
        roman("] "),
        italic("COMMAND"),
        roman(" ["),
        italic("ARGS"),
        roman("]..."),
    ]);
    let mut roff = Roff::new();
    roff.control("SH", ["SYNOPSIS"])
        .text(line)
        .control("br", [])
        .text([
            bold("LD_PRELOAD=/usr/lib/netintercept/libnetintercept.so"),
            roman(" "),
            italic("COMMAND"),
            roman(" ["),
            italic("ARGS"),
            roman("]..."),
        ]);
    roff
}

/// The sections clap knows nothing of: environment, patterns, files, exit status, limits.
fn prose() -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["ENVIRONMENT"]).text([roman(
        "Each option sets the variable named with it. The variables are also read by a program \
         run with a bare LD_PRELOAD of the library (its collector reads them); values are read \
         once per run, as the bytes given.",
    )]);
    for v in VARIABLES {
        let mut meaning = v.meaning.to_string();
        if let Some(o) = v.option {
            meaning.push_str(&format!(" (as {o})"));
        }
        roff.control("TP", [])
            .text([bold(v.name)])
            .text([roman(meaning)]);
    }
    roff.control("SH", ["FILE PATTERNS"]).text([roman(
        "As in core(5). Without %p every process of the run writes into the same file. Names \
         are used as the bytes given, UTF-8 or not. A character device named as the capture \
         (/dev/null) is written as it is; symbolic links, FIFOs, hard-linked files and other \
         users' files are refused with one line, and the program runs on.",
    )]);
    for (p, meaning) in PATTERNS {
        roff.control("TP", [])
            .text([bold(*p)])
            .text([roman(*meaning)]);
    }
    roff.control("SH", ["FILES"]);
    for (path, what) in [
        (
            "/usr/bin/netintercept",
            "the CLI, and the collector of bare LD_PRELOAD runs",
        ),
        (
            "/usr/lib/netintercept/libnetintercept.so",
            "the preload library (Debian package). The CLI looks for it beside itself, in \
             ../lib/netintercept/ and in ../lib/ (CMake's install: PREFIX/lib, where \
             netintercept.so is the same library under the original tool's name); the \
             library looks for the collector beside itself, in ../bin/ and in ../../bin/.",
        ),
        (
            "/usr/lib/netintercept/libnetintercept_pcapfilter.so",
            "libpcap's filter compiler, loaded by the collector only when a filter is set; \
             always beside the preload library",
        ),
        (
            "/dev/shm/netintercept-*",
            "a run's shared region (mode 0600), removed when the run ends",
        ),
    ] {
        roff.control("TP", [])
            .text([bold(path)])
            .text([roman(what)]);
    }
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in EXIT_STATUS {
        roff.control("TP", [])
            .text([bold(*code)])
            .text([roman(*meaning)]);
    }
    roff.control("SH", ["LIMITS"]).text([roman(
        "Statically linked programs, system calls made without libc (inline syscall \
         instructions, Go) and io_uring cannot be seen. TLS is decrypted for OpenSSL, NSS and \
         GnuTLS loaded as shared libraries; other TLS (a library linked in statically, rustls, \
         BoringSSL in Chromium) is written as ciphertext, and the end-of-run block says how many \
         connections carried it.",
    )]);
    roff.control("SH", ["SEE ALSO"]).text([roman(
        "tcpdump(1), pcap-filter(7), tshark(1), wireshark(1), core(5), ld.so(8)",
    )]);
    roff
}
