//! The capture file: claimed on the first packet, buffered, flushed at bounded intervals and exit.
//!
//! Claiming a name: open without following a symlink, create 0600, take an exclusive `flock`, and
//! truncate only a file that no live traced process holds and that was last written before this
//! run began (`config::SESSION_VAR`). Otherwise (the name belongs to another process of this run,
//! or this is a fork child of a pattern without `%p`) the process writes `<name>.<pid>`. So two
//! processes never write the same file, and a later process never clobbers an earlier one's.

use std::ffi::CString;
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};

use crate::{config, guard, output_path, sys};

/// Buffered bytes that trigger a write on the data path.
const HIGH_WATER: usize = 1 << 20;

enum FileState {
    /// No packet yet: no file.
    Unclaimed,
    /// Claimed by process `pid`.
    Open { fd: i32, path: String, pid: i32 },
    /// The file could not be written; the reason was printed once.
    Disabled,
}

struct Sink {
    file: FileState,
    buf: Vec<u8>,
    /// Set in a fork child: the inherited name belongs to the parent.
    forked: bool,
    flusher: bool,
    start_secs: u64,
}

/// The capture file's descriptor (-1 before it is open), so that a program closing descriptors it
/// never opened (closefrom, close_range, a loop of close) cannot close it under us.
static CAPTURE_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// Our capture file's descriptor, or -1.
#[inline]
pub fn capture_fd() -> i32 {
    CAPTURE_FD.load(std::sync::atomic::Ordering::Relaxed)
}

static SINK: Mutex<Sink> = Mutex::new(Sink {
    file: FileState::Unclaimed,
    buf: Vec::new(),
    forked: false,
    flusher: false,
    start_secs: 0,
});

fn lock() -> Option<MutexGuard<'static, Sink>> {
    if guard::nested() {
        let g = SINK.try_lock();
        if g.is_none() {
            guard::count_dropped();
        }
        g
    } else {
        Some(SINK.lock())
    }
}

/// Record the process start time used by `%t`.
pub fn set_start(start_secs: u64) {
    SINK.lock().start_secs = start_secs;
}

/// Append one synthesized packet, stamped now, to the capture.
pub fn emit(packet: &[u8]) {
    if !crate::filter::matches(packet) {
        return;
    }
    let ts = sys::now();
    let Some(mut sink) = lock() else { return };
    if let FileState::Unclaimed = sink.file {
        sink.claim();
    }
    if let FileState::Open { .. } = sink.file {
        if config::get().pcapng {
            let comment = packet_comment();
            synth::pcapng_record(ts, packet, &comment, &mut sink.buf);
        } else {
            synth::pcap_record(ts, packet, &mut sink.buf);
        }
        if sink.buf.len() >= HIGH_WATER {
            sink.write_out();
        }
    }
    if !sink.flusher && !guard::nested() {
        sink.flusher = true;
        start_flusher();
    }
}

/// Write everything buffered to the file now.
pub fn flush() {
    if let Some(mut sink) = lock() {
        sink.write_out();
    }
}

/// Flush, unless this is a vfork child sharing its parent's buffer.
pub fn flush_if_owner() {
    let Some(mut sink) = lock() else { return };
    if let FileState::Open { pid, .. } = sink.file {
        if pid == sys::getpid() {
            sink.write_out();
        }
    }
}

/// Where this process's capture goes, once claimed.
pub fn path() -> Option<String> {
    match &SINK.lock().file {
        FileState::Open { path, .. } => Some(path.clone()),
        _ => None,
    }
}

/// In a fork child: drop the parent's buffered packets (the parent writes them) and its file.
///
/// # Safety
/// Only in a fork child before any other thread exists.
pub unsafe fn after_fork_child() {
    if SINK.is_locked() {
        // SAFETY: the holder was a thread of the parent; it does not exist in the child.
        unsafe { SINK.force_unlock() };
    }
    let mut sink = SINK.lock();
    if let FileState::Open { fd, .. } = sink.file {
        sys::close(fd);
    }
    CAPTURE_FD.store(-1, std::sync::atomic::Ordering::Relaxed);
    sink.file = FileState::Unclaimed;
    sink.buf.clear();
    sink.forked = true;
    sink.flusher = false;
}

fn start_flusher() {
    let every = Duration::from_millis(config::get().flush_ms);
    let spawned = std::thread::Builder::new()
        .name("netintercept-flush".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            let _entered = guard::enter();
            crate::events::reap_vanished();
            flush();
        });
    if spawned.is_err() {
        SINK.lock().flusher = false;
    }
}

impl Sink {
    fn report(&mut self, path: &str, errno: i32) {
        sys::report(&format!(
            "cannot write capture to '{path}': {}",
            sys::strerror(errno)
        ));
        self.file = FileState::Disabled;
        self.buf = Vec::new();
    }

    fn write_out(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        if let FileState::Open { fd, ref path, .. } = self.file {
            if let Err(e) = sys::write_all(fd, &self.buf) {
                let path = path.clone();
                sys::close(fd);
                CAPTURE_FD.store(-1, std::sync::atomic::Ordering::Relaxed);
                self.report(&path, e);
                return;
            }
        }
        self.buf.clear();
    }

    fn claim(&mut self) {
        let cfg = config::get();
        let info = output_path::ProcessInfo::current(self.start_secs);
        let base = output_path::expand(&cfg.file_pattern, &info);
        let shared_name = !output_path::is_per_process(&cfg.file_pattern);
        let mut candidates = Vec::with_capacity(3);
        if !(self.forked && shared_name) {
            candidates.push(base.clone());
        }
        candidates.push(format!("{base}.{}", info.pid));
        candidates.push(format!("{base}.{}.{}", info.pid, cfg.session_start_ns));
        for path in candidates {
            match try_claim(&path, cfg.session_start_ns) {
                Ok(Some(fd)) => {
                    // The header goes out at once: even after _exit the file is a valid capture.
                    let header = if cfg.pcapng {
                        pcapng_header(&info)
                    } else {
                        synth::pcap_header()
                    };
                    if let Err(e) = sys::write_all(fd, &header) {
                        sys::close(fd);
                        return self.report(&path, e);
                    }
                    CAPTURE_FD.store(fd, std::sync::atomic::Ordering::Relaxed);
                    self.file = FileState::Open {
                        fd,
                        path,
                        pid: info.pid,
                    };
                    return;
                }
                Ok(None) => continue,
                Err(e) => return self.report(&path, e),
            }
        }
        self.report(&base, libc::EEXIST);
    }
}

/// Which process, thread, descriptor and call made the packet being written.
fn packet_comment() -> String {
    let call = guard::call();
    let library = match call {
        c if c.starts_with("SSL_") => " tls=OpenSSL",
        c if c.starts_with("PR_") => " tls=NSS",
        _ => "",
    };
    format!(
        "pid={} tid={} exe={} fd={} call={call}{library}",
        sys::getpid(),
        sys::gettid(),
        exe_name(),
        guard::fd()
    )
}

fn exe_name() -> &'static str {
    static NAME: once_cell::sync::OnceCell<String> = once_cell::sync::OnceCell::new();
    NAME.get_or_init(|| {
        std::fs::read_link("/proc/self/exe")
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default()
    })
}

fn pcapng_header(info: &output_path::ProcessInfo) -> Vec<u8> {
    let command_line = std::fs::read("/proc/self/cmdline")
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    synth::pcapng_header(&synth::SectionInfo {
        host: &info.host,
        os: std::env::consts::OS,
        application: concat!("netintercept ", env!("CARGO_PKG_VERSION")),
        command_line: &command_line,
    })
}

/// Open and lock `path` for this process: `Ok(None)` when another process of this run has it.
fn try_claim(path: &str, session_start_ns: u128) -> Result<Option<i32>, i32> {
    let c_path = CString::new(path).map_err(|_| libc::EINVAL)?;
    let fd = sys::open(
        &c_path,
        libc::O_WRONLY | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        0o600,
    )?;
    let keep = (|| {
        let st = sys::fstat(fd)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(libc::EISDIR);
        }
        if sys::flock(fd, libc::LOCK_EX | libc::LOCK_NB).is_err() {
            return Ok(false);
        }
        let mtime_ns = st.st_mtime as i128 * 1_000_000_000 + st.st_mtime_nsec as i128;
        if st.st_size > 0 && mtime_ns >= session_start_ns as i128 {
            return Ok(false);
        }
        sys::ftruncate(fd, 0)?;
        Ok(true)
    })();
    match keep {
        Ok(true) => Ok(Some(fd)),
        Ok(false) => {
            sys::close(fd);
            Ok(None)
        }
        Err(e) => {
            sys::close(fd);
            Err(e)
        }
    }
}

/// Unused-name check for tests and the CLI: the path a process would use is `base` or a suffix.
pub fn is_capture_of(base: &str, candidate: &str) -> bool {
    candidate == base
        || candidate
            .strip_prefix(base)
            .and_then(|rest| rest.strip_prefix('.'))
            .is_some_and(|rest| {
                rest.split('.')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            })
}
