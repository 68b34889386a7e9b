//! Harness: build the library once, run programs traced, and read captures two ways.

pub mod pcap_reader;
pub mod servers;
pub mod tshark;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The preload library, built once per test run with the same profile as the tests.
pub fn library() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let cli = Path::new(env!("CARGO_BIN_EXE_netintercept"));
        let profile_dir = cli.parent().expect("target profile dir");
        let release = profile_dir.ends_with("release");
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .current_dir(root)
            .args(["build", "-q", "-p", "netintercept-hooks"])
            .args(["-p", "netintercept-pcapfilter"]);
        if release {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("run cargo build for the library");
        assert!(status.success(), "building the libraries failed");
        let lib = profile_dir.join("libnetintercept.so");
        assert!(lib.is_file(), "no library at {}", lib.display());
        lib
    })
}

/// The CLI binary.
pub fn cli() -> &'static Path {
    // The CLI finds the library beside itself; make sure it is built.
    library();
    Path::new(env!("CARGO_BIN_EXE_netintercept"))
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ni-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("NI_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Run `cmd` to completion within `limit`, killing it past that.
pub fn run_with_timeout(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn command");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("poll child").is_some() {
            return child.wait_with_output().expect("collect output");
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect output");
            panic!(
                "timed out after {limit:?}: {cmd:?}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run `cmd` as [`run_with_timeout`] does and require success, showing the program's stderr.
pub fn run_ok(cmd: &mut Command, limit: Duration) -> Output {
    let out = run_with_timeout(cmd, limit);
    assert!(
        out.status.success(),
        "{}: {}",
        cmd.get_program().to_string_lossy(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `program args` with the library preloaded, writing its capture to `capture`, run in `dir`.
pub fn traced(dir: &Path, capture: &Path, program: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .env("LD_PRELOAD", library())
        .env("NETINTERCEPT_FILE", capture)
        .env_remove("NETINTERCEPT_FILTER");
    cmd
}

/// The same command without the library.
pub fn untraced(dir: &Path, program: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(dir).env_remove("LD_PRELOAD");
    cmd
}

/// Both readers agree the capture is clean; returns our own reading of it.
pub fn check_clean(capture: &Path) -> pcap_reader::Capture {
    let report = tshark::inspect(capture);
    assert_eq!(
        report.bad_checksums,
        0,
        "tshark: bad checksums in {}",
        capture.display()
    );
    assert_eq!(
        report.analysis_flags,
        0,
        "tshark: TCP analysis flags in {}:\n{}",
        capture.display(),
        report.flagged
    );
    assert_eq!(
        report.malformed,
        0,
        "tshark: malformed packets in {}",
        capture.display()
    );
    let ours = pcap_reader::read(capture).unwrap_or_else(|e| panic!("our reader: {e}"));
    assert_eq!(
        ours.packets, report.packets,
        "the readers disagree on the packet count"
    );
    ours
}

/// Compile `tests/programs/NAME.c` into `dir/OUT` with `flags` (and the programs' folder on the
/// include path) before the source and `libs` after it.
pub fn build_c(dir: &Path, name: &str, out: &str, flags: &[&str], libs: &[&str]) -> PathBuf {
    let programs = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs");
    let exe = dir.join(out);
    let built = Command::new("gcc")
        .args(flags)
        .args(["-Wall", "-I"])
        .arg(&programs)
        .arg("-o")
        .arg(&exe)
        .arg(programs.join(format!("{name}.c")))
        .args(libs)
        .output()
        .expect("gcc is installed (.ci/run installs it)");
    assert!(
        built.status.success(),
        "gcc {name}.c {libs:?}: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    exe
}

/// A free TCP or UDP port on loopback.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let p = l.local_addr().expect("local addr").port();
    let u = std::net::UdpSocket::bind(("127.0.0.1", p));
    if u.is_err() {
        return free_port();
    }
    p
}

/// The real python3 executable (not a pyenv shim script that would exec it).
pub fn python_exe() -> String {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 is installed");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
