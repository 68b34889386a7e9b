//! The CLI's options, defined once: `--help`, the man page and the shell completions are all
//! made from [`public`], and so are the environment, pattern and exit status texts they share.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Arg, ArgAction, Command, CommandFactory, FromArgMatches, Parser, ValueHint};

/// What the command line asks for.
#[derive(Parser, Debug)]
// Each option's help names the variable it sets: the variables are what a bare LD_PRELOAD run
// reads, so the two ways to run stay one interface.
#[command(
    name = "netintercept",
    about = ABOUT,
    override_usage = "netintercept [OPTIONS] [--] COMMAND [ARGS]...\n       netintercept [OPTIONS] -p PID[,PID...]"
)]
pub struct Options {
    /// Capture file pattern, '-' for stdout (sets NETINTERCEPT_FILE; default netintercept.pcap)
    // A value is taken as given, even one starting with '-', as the hand-written parser did.
    #[arg(
        short = 'w',
        value_name = "FILE",
        allow_hyphen_values = true,
        value_hint = ValueHint::FilePath
    )]
    pub file: Option<OsString>,

    /// tcpdump/libpcap filter expression (sets NETINTERCEPT_FILTER)
    #[arg(
        short = 'f',
        value_name = "FILTER",
        allow_hyphen_values = true,
        value_hint = ValueHint::Other
    )]
    pub filter: Option<OsString>,

    /// Do not trace child processes (sets NETINTERCEPT_FOLLOW=0)
    #[arg(long = "no-follow")]
    pub no_follow: bool,

    /// Also write TLS keys to FILE, SSLKEYLOGFILE format (sets NETINTERCEPT_KEYLOG)
    #[arg(
        long = "keylog",
        value_name = "FILE",
        allow_hyphen_values = true,
        value_hint = ValueHint::FilePath
    )]
    pub keylog: Option<OsString>,

    /// Private SSLKEYLOGFILE for NSS's TLS keys, if unset (NSS keeps a descriptor open on it)
    #[arg(long = "nss-keys")]
    pub nss_keys: bool,

    /// Also write tcpsnitch-format traces per socket under DIR (sets NETINTERCEPT_EVENTS)
    #[arg(
        long = "events",
        value_name = "DIR",
        allow_hyphen_values = true,
        value_hint = ValueHint::DirPath
    )]
    pub events: Option<OsString>,

    /// Per-socket N.pcap beside each N.json, with --events (sets NETINTERCEPT_EVENTS_PCAP=1)
    #[arg(short = 'c', long = "events-pcap")]
    pub events_pcap: bool,

    /// Sample TCP_INFO every BYTES sent+received on a socket (sets NETINTERCEPT_TCP_INFO_BYTES)
    #[arg(short = 'b', long = "tcp-info-bytes", value_name = "BYTES")]
    pub tcp_info_bytes: Option<u64>,

    /// Sample TCP_INFO every USEC microseconds (sets NETINTERCEPT_TCP_INFO_USEC)
    #[arg(short = 'u', long = "tcp-info-usec", value_name = "USEC")]
    pub tcp_info_usec: Option<u64>,

    /// Print TCP events on stderr, as deeptcptracer does (sets NETINTERCEPT_TCP_EVENTS=1)
    #[arg(long = "tcp-events")]
    pub tcp_events: bool,

    /// With --tcp-events: each event's time of day (sets NETINTERCEPT_TCP_EVENTS=time)
    #[arg(short = 't', long = "timestamps", requires = "tcp_events")]
    pub timestamps: bool,

    /// Say nothing at the end of the run (errors and warnings are still said)
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,

    /// auto, preload (a library), ptrace (system calls) or both (sets NETINTERCEPT_BACKEND)
    // auto: ptrace for static and Go programs (no library can enter them), else preload.
    #[arg(long = "backend", value_name = "HOW", value_enum)]
    pub backend: Option<Backend>,

    /// Trace running processes (comma-separated pids) by ptrace until ^C, instead of a COMMAND
    #[arg(
        short = 'p',
        long = "attach",
        value_name = "PID",
        value_delimiter = ','
    )]
    pub attach: Vec<u32>,

    /// The program to run, and its arguments: everything from COMMAND on is the program's
    // Not `required`: clap's message for a missing one is several lines, ours is one (`parse`).
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        num_args = 0..,
        value_hint = ValueHint::CommandWithArguments
    )]
    pub command: Vec<OsString>,
}

/// Where the records come from (`--backend`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    // ptrace for statically linked and Go programs, preload for the rest.
    Auto,
    // The preload library: every libc call, TLS decrypted.
    Preload,
    // The system-call tracer: every system call, whatever made it; TLS stays encrypted.
    Ptrace,
    // Both: the tracer records every system call, the library only TLS (its plaintext, keys).
    Both,
}

/// What the command line means, or the one line that says why it means nothing.
pub enum Parsed {
    Run(Options),
    /// `--collect REGION LIBDIR`: be the detached collector of a bare LD_PRELOAD run.
    Collect(PathBuf, PathBuf),
    /// `--generate-docs DIR`: write the man page and completions under DIR.
    GenerateDocs(PathBuf),
    /// `--help` / `-h`: the text to print on stdout.
    Help(String),
    /// A usage error: the line to print after `netintercept: `.
    Usage(String),
}

/// Parse `argv` (without the program name).
pub fn parse(argv: impl IntoIterator<Item = OsString>) -> Parsed {
    let argv = std::iter::once(OsString::from("netintercept")).chain(argv);
    let matches = match command().try_get_matches_from(argv) {
        Ok(m) => m,
        Err(e) => return from_error(e),
    };
    if let Some(mut paths) = matches.get_many::<PathBuf>(COLLECT) {
        if let (Some(region), Some(lib_dir)) = (paths.next(), paths.next()) {
            return Parsed::Collect(region.clone(), lib_dir.clone());
        }
    }
    if let Some(dir) = matches.get_one::<PathBuf>(GENERATE_DOCS) {
        return Parsed::GenerateDocs(dir.clone());
    }
    match Options::from_arg_matches(&matches) {
        Ok(o) if o.command.is_empty() && o.attach.is_empty() => {
            Parsed::Usage("no COMMAND given; see 'netintercept --help'".into())
        }
        Ok(o) if !o.command.is_empty() && !o.attach.is_empty() => Parsed::Usage(
            "-p traces running processes: give it no COMMAND; see 'netintercept --help'".into(),
        ),
        Ok(o) => Parsed::Run(o),
        Err(e) => from_error(e),
    }
}

/// clap's error as one `netintercept:` line (its own text is several lines, with a usage block).
fn from_error(e: clap::Error) -> Parsed {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        return Parsed::Help(e.render().to_string());
    }
    let text = e.render().to_string();
    let mut lines = text.lines();
    let first = lines
        .next()
        .unwrap_or("bad usage")
        .trim_start_matches("error: ")
        .trim_end();
    // A first line ending in ':' is followed by what it names, indented (a missing argument).
    let named: Vec<&str> = if first.ends_with(':') {
        lines
            .take_while(|l| l.starts_with(' '))
            .map(str::trim)
            .collect()
    } else {
        Vec::new()
    };
    let first = match named.is_empty() {
        true => first.to_string(),
        false => format!("{first} {}", named.join(", ")),
    };
    Parsed::Usage(format!("{first}; see 'netintercept --help'"))
}

/// The internal options: modes of the same program, not for users, so neither in `--help` nor
/// in the man page or the completions.
const COLLECT: &str = "collect";
const GENERATE_DOCS: &str = "generate-docs";

/// The definition the command line is parsed with: [`public`] and the internal modes.
pub fn command() -> Command {
    public()
        .arg(
            // What the preload library runs: `netintercept --collect REGION LIBDIR`.
            Arg::new(COLLECT)
                .long(COLLECT)
                .num_args(2)
                .value_names(["REGION", "LIBDIR"])
                .value_parser(clap::value_parser!(PathBuf))
                .exclusive(true)
                .hide(true),
        )
        .arg(
            Arg::new(GENERATE_DOCS)
                .long(GENERATE_DOCS)
                .value_name("DIR")
                .value_parser(clap::value_parser!(PathBuf))
                .exclusive(true)
                .hide(true),
        )
}

/// The one definition users see: `--help`, the man page and the completions.
pub fn public() -> Command {
    Options::command()
        .long_about(format!("{ABOUT}\n\n{}", fill(DESCRIPTION, 0, 0)))
        .after_help(after_help())
        // `-h` gives the whole help, as `--help` does (and as the hand-written one did).
        .disable_help_flag(true)
        .arg(
            Arg::new("help")
                .short('h')
                .long("help")
                .help("Print this help")
                .action(ArgAction::HelpLong),
        )
}

/// The one line under NAME, and the first of `--help`.
pub const ABOUT: &str = "capture one program's network traffic, TLS decrypted, without root";

/// What netintercept does, under DESCRIPTION and in `--help`.
pub const DESCRIPTION: &str = "Runs COMMAND with libnetintercept.so preloaded and writes a \
    pcap of the TCP and UDP conversations it has over IPv4 and IPv6, synthesized from the calls \
    it makes: handshakes, data in order, FINs, consistent sequence numbers and valid checksums. \
    TLS through OpenSSL, NSS or GnuTLS is written as plaintext. At the end, one short block on \
    stderr says which files were written, how many packets and connections each holds, and what \
    could not be captured.";

/// Width of the text after the options in `--help` (clap leaves free text as it is).
const HELP_WIDTH: usize = 100;

/// A variable of ours: its name, the option that sets it, and what it means.
pub struct Variable {
    pub name: &'static str,
    pub option: Option<&'static str>,
    pub meaning: &'static str,
}

/// Every variable netintercept reads, user-facing ones first.
pub const VARIABLES: &[Variable] = &[
    Variable {
        name: "NETINTERCEPT_FILE",
        option: Some("-w"),
        meaning: "capture file name pattern; a name ending in .pcapng gives pcapng with \
                  per-packet comments; default netintercept.pcap in the working directory",
    },
    Variable {
        name: "NETINTERCEPT_FILTER",
        option: Some("-f"),
        meaning: "tcpdump/libpcap filter run on every packet; a bad one is said once and nothing \
                  is written",
    },
    Variable {
        name: "NETINTERCEPT_FOLLOW",
        option: Some("--no-follow"),
        meaning: "0, no or false leave child processes untraced; 1, yes or true (the default) \
                  trace them; any other value is said in one line, and they are traced",
    },
    Variable {
        name: "NETINTERCEPT_KEYLOG",
        option: Some("--keylog"),
        meaning: "TLS key log file (SSLKEYLOGFILE format) the collector writes, in any TLS mode",
    },
    Variable {
        name: "NETINTERCEPT_EVENTS",
        option: Some("--events"),
        meaning:
            "folder of the per-socket event traces (tcpsnitch's format): DIR/PROGRAM_NNN/N.json \
                  per process and socket, one call a line; when set as the program starts, the \
                  calls only the traces need are recorded too",
    },
    Variable {
        name: "NETINTERCEPT_EVENTS_PCAP",
        option: Some("-c"),
        meaning: "1 also writes each traced socket's packets to DIR/PROGRAM_NNN/N.pcap beside \
                  its N.json (tcpsnitch's -c); needs NETINTERCEPT_EVENTS; default 0",
    },
    Variable {
        name: "NETINTERCEPT_BACKEND",
        option: Some("--backend"),
        meaning: "auto (default: the system-call tracer for statically linked and Go programs, \
                  else the preload library), preload, ptrace or both; read by the CLI",
    },
    Variable {
        name: "NETINTERCEPT_TCP_INFO_BYTES",
        option: Some("-b"),
        meaning: "take a TCP_INFO sample of a TCP socket each time this many more bytes were \
                  sent and received on it (tcpsnitch's -b; 0: never): a tcp_info event, every \
                  field of struct tcp_info by name, in the socket's --events trace; samples are \
                  taken by the collector from outside the program (pidfd_getfd)",
    },
    Variable {
        name: "NETINTERCEPT_TCP_INFO_USEC",
        option: Some("-u"),
        meaning: "take a TCP_INFO sample of each TCP socket every this many microseconds \
                  (tcpsnitch's -u; 0: never), also while the program makes no call",
    },
    Variable {
        name: "NETINTERCEPT_TCP_EVENTS",
        option: Some("--tcp-events"),
        meaning: "1 prints TCP events on stderr in deeptcptracer's columns (EVENT, PID, COMM, \
                  SOURCE, DESTINATION, TCP_STATE, SK_ERR): state changes, retransmissions, \
                  resets and FINs received, FINs sent, zero windows, socket errors, derived \
                  from the calls' results and from TCP_INFO samples (every 10000 microseconds \
                  unless -u says); time adds each event's time of day (as -t); with --events \
                  they are tcp_event lines in the socket's trace too",
    },
    Variable {
        name: "NETINTERCEPT_TLS",
        option: None,
        meaning: "plain (default: decrypted TLS), raw (the ciphertext) or both (the ciphertext \
                  on the connection's stream, the plaintext on a parallel stream from the \
                  client's port XOR 0x8000); a pcapng of raw or both carries the keys of \
                  OpenSSL and GnuTLS, and of NSS through SSLKEYLOGFILE (--nss-keys), so \
                  Wireshark decrypts it alone",
    },
    Variable {
        name: "NETINTERCEPT_FORMAT",
        option: None,
        meaning: "pcap or pcapng, whatever the file name; default: pcapng for a name ending in \
                  .pcapng, else pcap; any other value is said in one line (the CLI then exits \
                  2; without the CLI the file name decides)",
    },
    Variable {
        name: "NETINTERCEPT_LIB",
        option: None,
        meaning: "the library the CLI preloads; default libnetintercept.so beside the CLI, in \
                  ../lib/netintercept/ (the Debian package) or in ../lib/ (CMake's install)",
    },
    Variable {
        name: "NETINTERCEPT_COLLECTOR",
        option: None,
        meaning: "the collector a bare LD_PRELOAD run starts; default the netintercept program \
                  beside the library, in ../bin/ or in ../../bin/",
    },
    Variable {
        name: "NETINTERCEPT_FLUSH_MS",
        option: None,
        meaning: "read by nothing any more (packets are written as they are made): said to be \
                  ignored when set",
    },
    Variable {
        name: "NETINTERCEPT_RING",
        option: None,
        meaning: "set by netintercept for the processes of a run: the run's shared region",
    },
    Variable {
        name: "NETINTERCEPT_ROOT",
        option: None,
        meaning: "set by netintercept for the processes of a bare LD_PRELOAD run: the process \
                  that waits at exit for the capture",
    },
    Variable {
        name: "NETINTERCEPT_TRACED",
        option: None,
        meaning: "set by netintercept --backend both: the library records only TLS, the \
                  system-call tracer the rest",
    },
];

/// The file name patterns, as in core(5).
pub const PATTERNS: &[(&str, &str)] = &[
    ("%p", "pid"),
    ("%t", "start time (epoch seconds)"),
    ("%h", "host name"),
    ("%e", "executable name"),
    ("%E", "executable path with '/' written as '!'"),
    ("%u", "uid"),
    ("%%", "a literal '%'"),
];

/// The exit statuses, as `cli::run` returns them.
pub const EXIT_STATUS: &[(&str, &str)] = &[
    ("N", "COMMAND's own status"),
    ("128+N", "COMMAND was killed by signal N"),
    (
        "126",
        "COMMAND was found but could not be executed (not executable, a directory, …)",
    ),
    ("127", "COMMAND was not found"),
    (
        "2",
        "a usage error, a bad filter or NETINTERCEPT_FORMAT, or the library not found: before \
         COMMAND starts",
    ),
];

/// The text after the options in `--help`: variables, patterns, exit status.
fn after_help() -> String {
    let mut s = String::from(
        "Environment (also read by a bare LD_PRELOAD=.../libnetintercept.so COMMAND):\n",
    );
    for v in VARIABLES {
        let meaning = match v.option {
            Some(o) => format!("{} (as {o})", v.meaning),
            None => v.meaning.to_string(),
        };
        s.push_str(&entry(v.name, 26, &meaning));
    }
    s.push_str("\nPatterns in FILE (as in core(5)); without %p every process writes one file:\n");
    for (p, meaning) in PATTERNS {
        s.push_str(&entry(p, 6, meaning));
    }
    s.push_str("\nExit status:\n");
    for (code, meaning) in EXIT_STATUS {
        s.push_str(&entry(code, 9, meaning));
    }
    s.push_str("\nStatically linked programs cannot be traced: nothing is preloaded into them.");
    s
}

/// `  name  meaning…`, the meaning word-wrapped to [`HELP_WIDTH`] under its own column.
fn entry(name: &str, column: usize, meaning: &str) -> String {
    let mut out = format!("  {name:<width$}", width = column - 2);
    // A name as wide as its column still gets a space before its meaning.
    if name.chars().count() + 2 >= column {
        out.push(' ');
    }
    let start = out.chars().count();
    out.push_str(&fill(meaning, start, column));
    out.push('\n');
    out
}

/// `text` word-wrapped to [`HELP_WIDTH`], its first line starting at column `start`, the others
/// indented to `indent`.
fn fill(text: &str, start: usize, indent: usize) -> String {
    let mut out = String::new();
    let mut column = start;
    for (i, word) in text.split_whitespace().enumerate() {
        let len = word.chars().count();
        if i > 0 && column + 1 + len > HELP_WIDTH {
            out.push('\n');
            out.push_str(&" ".repeat(indent));
            column = indent;
        } else if i > 0 {
            out.push(' ');
            column += 1;
        }
        out.push_str(word);
        column += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn args(v: &[&str]) -> Parsed {
        parse(v.iter().map(OsString::from))
    }

    #[test]
    fn the_definition_is_consistent() {
        command().debug_assert();
        public().debug_assert();
    }

    #[test]
    fn parses_options_then_command() {
        let Parsed::Run(a) = args(&["-w", "x.pcap", "-f", "tcp", "curl", "-w", "y"]) else {
            panic!("expected a command");
        };
        assert_eq!(a.file.as_deref(), Some(std::ffi::OsStr::new("x.pcap")));
        assert_eq!(a.filter.as_deref(), Some(std::ffi::OsStr::new("tcp")));
        assert_eq!(a.command, ["curl", "-w", "y"]);
    }

    #[test]
    fn double_dash_ends_options() {
        let Parsed::Run(a) = args(&["--no-follow", "-q", "--", "-weird", "--x"]) else {
            panic!("expected a command");
        };
        assert!(a.no_follow && a.quiet);
        assert_eq!(a.command, ["-weird", "--x"]);
    }

    #[test]
    fn values_are_taken_as_given() {
        let Parsed::Run(a) = args(&["-w", "-", "--keylog", "-k.log", "sh"]) else {
            panic!("expected a command");
        };
        assert_eq!(a.file.as_deref(), Some(std::ffi::OsStr::new("-")));
        assert_eq!(a.keylog.as_deref(), Some(std::ffi::OsStr::new("-k.log")));
    }

    #[test]
    fn the_collector_mode_takes_two_paths() {
        let Parsed::Collect(region, lib_dir) =
            args(&["--collect", "/dev/shm/r", "/usr/lib/netintercept"])
        else {
            panic!("expected the collector");
        };
        assert_eq!(region, Path::new("/dev/shm/r"));
        assert_eq!(lib_dir, Path::new("/usr/lib/netintercept"));
        assert!(matches!(args(&["--collect", "x"]), Parsed::Usage(_)));
        assert!(matches!(
            args(&["--collect", "a", "b", "-w", "x"]),
            Parsed::Usage(_)
        ));
    }

    #[test]
    fn usage_errors_are_one_line() {
        for bad in [&[][..], &["-w"], &["--bogus", "x"], &["-x"]] {
            let Parsed::Usage(line) = args(bad) else {
                panic!("{bad:?} is a usage error");
            };
            assert_eq!(line.lines().count(), 1, "{line}");
            assert!(line.ends_with("; see 'netintercept --help'"), "{line}");
        }
        let Parsed::Usage(line) = args(&["--bogus", "x"]) else {
            unreachable!()
        };
        assert!(line.starts_with("unexpected argument '--bogus'"), "{line}");
        // What is missing is named on the one line.
        let Parsed::Usage(line) = args(&["-t", "sh"]) else {
            panic!("-t without --tcp-events is a usage error");
        };
        assert_eq!(
            line,
            "the following required arguments were not provided: --tcp-events; see 'netintercept \
             --help'"
        );
        let (Parsed::Help(long), Parsed::Help(short)) = (args(&["--help"]), args(&["-h"])) else {
            panic!("help");
        };
        assert_eq!(long, short);
    }

    #[test]
    fn help_lines_fit_the_width() {
        let Parsed::Help(text) = args(&["--help"]) else {
            panic!("help");
        };
        let long: Vec<&str> = text
            .lines()
            .filter(|l| l.chars().count() > HELP_WIDTH)
            .collect();
        assert!(long.is_empty(), "{long:#?}");
        assert_eq!(
            entry("%p", 6, "pid"),
            "  %p  pid\n",
            "a short entry on one line"
        );
        assert_eq!(
            entry("NAME", 8, &"word ".repeat(30))
                .lines()
                .nth(1)
                .map(|l| &l[..9]),
            Some("        w"),
            "continued under its column"
        );
    }

    #[test]
    fn internal_options_are_not_in_the_help() {
        let Parsed::Help(text) = args(&["--help"]) else {
            panic!("help");
        };
        assert!(!text.contains("--collect") && !text.contains("--generate-docs"));
        assert!(text.contains("--keylog") && text.contains("-q, --quiet"));
    }
}
