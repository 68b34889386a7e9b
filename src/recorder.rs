//! The in-process side: append one record per intercepted call to this process's ring.
//!
//! Everything the capture needs is decided by the collector; this module keeps only what the
//! hooks must know without asking anyone: which descriptor numbers are internet sockets (one
//! atomic byte each, so `read`/`write` on files and pipes cost one load), and where this
//! process's ring is. On the steady path: no lock, no allocation, no thread, no descriptor and no
//! system call of ours. While the ring is full the writer sleeps in short steps until the
//! collector makes room (never spinning: they may share one core); if the collector is gone,
//! recording stops and the program runs on.

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU8, AtomicUsize};

use crate::record::{Kind, Record, HEADER_LEN};
use crate::ring::{Region, Ring};
use crate::sys;

/// The variable naming the run's shared region (set by the CLI or by the first traced process).
pub const RING_VAR: &str = "NETINTERCEPT_RING";
const RING_VAR_C: &std::ffi::CStr = c"NETINTERCEPT_RING";
/// Set by the first process of an LD_PRELOAD run to its pid: that process (in every image it
/// execs) waits at exit until the collector has written everything, because its exit is what
/// the user waits for. Other processes never wait: their records outlive them in the ring, and
/// under the CLI the CLI itself waits for the collector.
pub const ROOT_VAR: &str = "NETINTERCEPT_ROOT";
const ROOT_VAR_C: &std::ffi::CStr = c"NETINTERCEPT_ROOT";
/// Set by the CLI for `--backend both`: the system-call tracer records every socket call of
/// this process, so the library records only what the tracer cannot see, TLS.
pub const TRACED_VAR: &str = "NETINTERCEPT_TRACED";
const TRACED_VAR_C: &std::ffi::CStr = c"NETINTERCEPT_TRACED";
/// Only TLS records are written (see [`TRACED_VAR`]): no descriptor is ever marked a socket, so
/// every socket hook takes its one-load path, and no other kind leaves the process.
static TLS_ONLY: AtomicBool = AtomicBool::new(false);

/// Slots and ring size of a region: a process each, alive at the same time.
pub const SLOTS: u32 = 128;
pub const RING_BYTES: u64 = 4 << 20;
/// A payload larger than this is recorded as several consecutive records.
const MAX_CHUNK: usize = 1 << 20;

static BASE: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static LEN: AtomicUsize = AtomicUsize::new(0);
/// This process's slot, or `NO_SLOT`.
static SLOT: AtomicU32 = AtomicU32::new(NO_SLOT);
const NO_SLOT: u32 = u32::MAX;
/// The pid that claimed `SLOT`, as the collector sees it (the pid in the namespace of /proc).
static PID: AtomicI32 = AtomicI32::new(0);
/// The same process as `getpid()` names it (another number inside a pid namespace).
static NS_PID: AtomicI32 = AtomicI32::new(0);
/// This process runs in a pid namespace other than /proc's (a sandbox's).
static OWN_PID_NS: AtomicBool = AtomicBool::new(false);
static ENABLED: AtomicBool = AtomicBool::new(false);
/// This process is the one the user waits for (see [`ROOT_VAR`]).
static ROOT: AtomicBool = AtomicBool::new(false);

/// What a descriptor number is, as far as the hooks know.
pub mod kind {
    /// Never seen: not recorded by `read`/`write`; socket calls record it for the collector.
    pub const UNKNOWN: u8 = 0;
    /// A file, pipe, unix socket…
    pub const OTHER: u8 = 1;
    pub const TCP: u8 = 2;
    pub const UDP: u8 = 3;
    /// Arrived in an SCM_RIGHTS message: recorded until the collector knows what it is.
    pub const RECEIVED: u8 = 4;
    /// Flag: the local address was recorded once already (UDP).
    pub const LOCAL_KNOWN: u8 = 0x80;
}

const KINDS_LEN: usize = 1 << 16;
static KINDS: [AtomicU8; KINDS_LEN] = [const { AtomicU8::new(0) }; KINDS_LEN];

/// What the hooks know of `fd` (descriptors beyond the table are UNKNOWN).
#[inline]
pub fn kind_of(fd: i32) -> u8 {
    match usize::try_from(fd) {
        Ok(i) if i < KINDS_LEN => KINDS[i].load(Relaxed) & !kind::LOCAL_KNOWN,
        _ => kind::UNKNOWN,
    }
}

/// Whether `fd` is a socket whose `read`/`write` calls are recorded (the hot-path test).
#[inline]
pub fn is_tracked(fd: i32) -> bool {
    ENABLED.load(Relaxed) && matches!(kind_of(fd), kind::TCP | kind::UDP | kind::RECEIVED)
}

pub fn set_kind(fd: i32, k: u8) {
    if TLS_ONLY.load(Relaxed) {
        // No number is a socket to the hooks: the tracer records the socket calls.
        return;
    }
    if let Ok(i) = usize::try_from(fd) {
        if i < KINDS_LEN {
            KINDS[i].store(k, Relaxed);
        }
    }
}

/// True the first time it is asked for `fd` since the number got its kind.
pub fn first_local(fd: i32) -> bool {
    match usize::try_from(fd) {
        Ok(i) if i < KINDS_LEN => {
            KINDS[i].fetch_or(kind::LOCAL_KNOWN, Relaxed) & kind::LOCAL_KNOWN == 0
        }
        _ => false,
    }
}

fn region() -> Option<Region> {
    let base = BASE.load(Acquire);
    if base.is_null() {
        return None;
    }
    // SAFETY: BASE/LEN describe our mapping of the region, never unmapped while the process runs.
    unsafe { Region::attach(base, LEN.load(Relaxed)) }
}

fn ring() -> Option<Ring> {
    let slot = SLOT.load(Acquire);
    if slot == NO_SLOT {
        return None;
    }
    region().map(|r| r.ring(slot))
}

/// CLOCK_MONOTONIC in nanoseconds (vDSO: no system call).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

thread_local! {
    static TID: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
    /// What this thread may not do any more ([`limit`]); inherited by a fork child as the
    /// kernel's own restriction is.
    static LIMITS: std::cell::Cell<u8> = const { std::cell::Cell::new(0) };
    /// This thread's last timestamp (what a stamp without the clock must follow).
    static LAST_TS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

thread_local! {
    /// The pid of the vfork child this thread runs (0: none). The child runs on its parent's
    /// memory, this very thread-local included, until it execs or exits; set and cleared by
    /// the `vfork` hook.
    static VFORK_CHILD: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
}

/// The vfork child mark of this thread (see the `vfork` hook).
pub fn vfork_child_mark() -> i32 {
    VFORK_CHILD.try_with(std::cell::Cell::get).unwrap_or(0)
}

pub fn set_vfork_child_mark(pid: i32) {
    let _ = VFORK_CHILD.try_with(|c| c.set(pid));
}

/// Whether this thread runs a vfork child. The mark alone is not enough: a signal handler in
/// the parent may run before the mark is cleared, so the pid is asked (only while a mark is
/// set: vfork children are short-lived).
pub fn vfork_child() -> bool {
    let mark = vfork_child_mark();
    mark != 0 && sys::getpid() == mark
}

/// Restrictions the kernel placed on a thread, seen by the `prctl` hook.
pub mod limit {
    /// The time-stamp counter faults (`PR_SET_TSC`, or seccomp strict mode), so the vDSO clock
    /// does too.
    pub const NO_CLOCK: u8 = 1;
    /// Seccomp strict mode: only read, write, exit and sigreturn; any other call kills.
    pub const NO_SYSCALLS: u8 = 2;
}

/// This thread is about to ask the kernel for `limits` (learn now what needs a system call).
pub fn before_limit() {
    let _ = tid();
}

/// The kernel accepted: from now on this thread records without `limits`.
pub fn limited(limits: u8) {
    let _ = LIMITS.try_with(|l| l.set(l.get() | limits));
}

/// The clock works again (`PR_SET_TSC` back to enabled).
pub fn clock_back() {
    let _ = LIMITS.try_with(|l| l.set(l.get() & !limit::NO_CLOCK));
}

fn limits() -> u8 {
    LIMITS.try_with(|l| l.get()).unwrap_or(0)
}

/// This thread's id, asked of the kernel once per thread.
fn tid() -> i32 {
    TID.try_with(|t| {
        if t.get() == 0 {
            t.set(sys::gettid());
        }
        t.get()
    })
    .unwrap_or(0)
}

/// Bytes moved by one call, possibly scattered over several buffers.
pub trait Payload {
    /// Call `f` with each piece, in order.
    fn for_each_piece(&self, f: &mut dyn FnMut(&[u8]));
    /// The total length.
    fn len(&self) -> usize {
        let mut n = 0;
        self.for_each_piece(&mut |p| n += p.len());
        n
    }
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Payload for &[u8] {
    fn for_each_piece(&self, f: &mut dyn FnMut(&[u8])) {
        f(self)
    }
}

/// No payload.
pub const NOTHING: &[u8] = &[];

/// The first `total` bytes of a scatter/gather list.
pub struct IoVecs<'a> {
    pub iov: &'a [libc::iovec],
    pub total: usize,
}

impl Payload for IoVecs<'_> {
    fn for_each_piece(&self, f: &mut dyn FnMut(&[u8])) {
        let mut left = self.total;
        for v in self.iov {
            let n = v.iov_len.min(left);
            left -= n;
            if n == 0 || v.iov_base.is_null() {
                continue;
            }
            // SAFETY: the creator of `IoVecs` guarantees each iovec describes memory that the
            // real call just read from or filled, valid for at least the bytes it reported.
            f(unsafe { std::slice::from_raw_parts(v.iov_base as *const u8, n) });
        }
    }
}

/// Append `rec` with `total` payload bytes taken from `data`. Payloads larger than a ring
/// allows are split into consecutive records, each reporting its own length.
pub fn emit(rec: &Record, total: usize, data: &dyn Payload) {
    if !ENABLED.load(Relaxed) {
        return;
    }
    if TLS_ONLY.load(Relaxed) && !rec.kind.is_tls() && rec.kind != Kind::Start {
        return;
    }
    let Some(ring) = ring() else { return };
    let mut rec = *rec;
    rec.pid = PID.load(Relaxed);
    rec.tid = tid();
    if total > MAX_CHUNK {
        rec.ret = MAX_CHUNK as i64;
    }
    let mut left = total;
    let mut open: Option<(crate::ring::Reservation, usize)> = None;
    if total == 0 {
        if let Some(res) = start(ring, &mut rec, 0) {
            res.commit();
        }
        return;
    }
    data.for_each_piece(&mut |mut piece| {
        while !piece.is_empty() && (left > 0 || open.is_some()) {
            if open.is_none() {
                let n = left.min(MAX_CHUNK);
                if total > MAX_CHUNK {
                    rec.ret = n as i64;
                }
                match start(ring, &mut rec, n) {
                    Some(res) => open = Some((res, n)),
                    None => {
                        left = 0;
                        return;
                    }
                }
                left -= n;
            }
            let Some((res, room)) = open.as_mut() else {
                return;
            };
            let take = piece.len().min(*room);
            res.write(&piece[..take]);
            *room -= take;
            piece = &piece[take..];
            if *room == 0 {
                if let Some((res, _)) = open.take() {
                    res.commit();
                }
            }
        }
    });
    // A payload shorter than announced: the rest of the frame stays zero, still whole.
    if let Some((res, _)) = open.take() {
        res.commit();
    }
}

/// Reserve a record with `n` payload bytes and write its header.
fn start(ring: Ring, rec: &mut Record, n: usize) -> Option<crate::ring::Reservation> {
    let mut res = ring.reserve(HEADER_LEN + n, &mut wait_for_room)?;
    // The timestamp is taken after the reservation, so a ring found empty by the collector can
    // only later hold records stamped after that look (the collector's merge relies on it).
    // A thread without the clock stamps after everything it stamped before (its last record may
    // be a clocked one from before seccomp strict mode) and after every other clockless stamp.
    rec.ts_ns = if limits() & limit::NO_CLOCK != 0 {
        let last = LAST_TS.try_with(|t| t.get()).unwrap_or(0);
        region().map_or(last + 1, |r| r.stamp_without_clock(last))
    } else {
        now_ns()
    };
    let _ = LAST_TS.try_with(|t| t.set(rec.ts_ns));
    let mut head = [0u8; HEADER_LEN];
    rec.encode_header(n, &mut head);
    res.write(&head);
    Some(res)
}

/// The ring is full: sleep a little and look again, unless the collector is gone.
fn wait_for_room(attempt: u32) -> bool {
    let Some(region) = region() else { return false };
    if region.disabled() {
        return false;
    }
    if limits() & limit::NO_SYSCALLS != 0 {
        // No sleep and no look at the collector is allowed: spin a bounded while (about a
        // second), then let this record go.
        for _ in 0..1000 {
            std::hint::spin_loop();
        }
        return attempt < 200_000;
    }
    if attempt % 64 == 63 && collector_gone(region) {
        region.disable();
        ENABLED.store(false, Relaxed);
        return false;
    }
    let micros = 20u64 << attempt.min(6);
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: (micros * 1000) as libc::c_long,
    };
    // SAFETY: a valid timespec; no remainder wanted.
    unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
    true
}

/// Ten seconds without a collector at all, or without a sign of life from it. Its heartbeat is
/// read from the region: signalling it (`kill(pid, 0)`) is refused in sandboxes.
fn collector_gone(region: Region) -> bool {
    const SILENCE_NS: u64 = 10_000_000_000;
    if limits() & limit::NO_CLOCK != 0 {
        return false;
    }
    let now = now_ns();
    match region.heartbeat_ns() {
        0 => now.saturating_sub(region.start_clocks().1) > SILENCE_NS,
        beat => now.saturating_sub(beat) > SILENCE_NS,
    }
}

/// Called once from the library's constructor: map the run's region (creating it and starting
/// a collector when this is the first traced process), claim a slot, and report the sockets
/// this process image already holds. Returns a line to print when tracing is impossible.
pub fn init() -> Result<(), String> {
    // The environment is read in place (`sys::env`): nothing here allocates, so a program that
    // never calls malloc (`/bin/true`) does not get a heap set up by us at every exec.
    let detached;
    let path: &std::ffi::CStr = match sys::env(RING_VAR_C) {
        Some(p) => p,
        None => {
            let p = crate::collector::spawn::start_detached()?;
            std::env::set_var(RING_VAR, &p);
            std::env::set_var(
                ROOT_VAR,
                proc_self_pid().unwrap_or(sys::getpid()).to_string(),
            );
            use std::os::unix::ffi::OsStrExt;
            detached = std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|_| "bad path")?;
            &detached
        }
    };

    TLS_ONLY.store(sys::env(TRACED_VAR_C).is_some(), Relaxed);
    let (base, len) = crate::collector::spawn::map_region_file(path)?;
    BASE.store(base, Release);
    LEN.store(len, Relaxed);
    let ns_pid = sys::getpid();
    let global = proc_self_pid();
    let pid = global.unwrap_or(ns_pid);
    OWN_PID_NS.store(global != Some(ns_pid), Relaxed);
    let root = sys::env(ROOT_VAR_C)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok());
    ROOT.store(root == Some(pid), Relaxed);
    claim(pid, ns_pid)?;
    // SAFETY: the handlers are `extern "C"` functions with the signatures these calls expect and
    // live as long as the process.
    unsafe {
        libc::pthread_atfork(None, None, Some(after_fork_child));
        libc::atexit(at_exit);
    }
    let mut start = Record::new(Kind::Start);
    // SAFETY: getppid has no arguments and cannot fail.
    start.arg0 = unsafe { libc::getppid() } as i64;
    start.ret = global.is_none() as i64;
    if TLS_ONLY.load(Relaxed) {
        start.errno = crate::record::TLS_ONLY;
    }
    let name = program_name();
    emit(&start, name.len(), &name);
    announce_key_log_file();
    if !TLS_ONLY.load(Relaxed) {
        // Under the tracer, it found them (and its probe's calls would be the program's).
        scan_inherited();
    }
    emit(&Record::new(Kind::Scanned), 0, &NOTHING);
    Ok(())
}

/// This process's pid in the namespace of the /proc the collector reads: a sandbox's pid
/// namespace (Chromium's zygote) gives `getpid()` numbers the collector cannot look up.
fn proc_self_pid() -> Option<i32> {
    let mut buf = [0u8; 32];
    // SAFETY: `buf` is writable for its length; readlink does not terminate it.
    let n = unsafe { libc::readlink(c"/proc/self".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let digits = buf.get(..usize::try_from(n).ok()?)?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn claim(pid: i32, ns_pid: i32) -> Result<(), String> {
    let region = region().ok_or("the run's shared region is not valid")?;
    let ring = region
        .claim(pid)
        .ok_or("every recording slot of the run is taken")?;
    let slot = (0..region.slot_count())
        .find(|&i| region.ring(i).claim_seq() == ring.claim_seq() && region.ring(i).owner() == pid)
        .ok_or("slot lost")?;
    PID.store(pid, Relaxed);
    NS_PID.store(ns_pid, Relaxed);
    SLOT.store(slot, Release);
    ENABLED.store(!region.disabled(), Relaxed);
    Ok(())
}

/// The program's name for the event traces' folders (`--events` only, else empty): glibc's
/// `program_invocation_short_name`, the base name of `argv[0]`, read from memory (no system
/// call), so the collector knows it even when the process is gone before it looks.
fn program_name() -> &'static [u8] {
    extern "C" {
        static program_invocation_short_name: *const libc::c_char;
    }
    if !EVENTS.load(Relaxed) {
        return &[];
    }
    // SAFETY: libc sets this pointer during its own initialisation, which runs before any
    // preloaded library's constructor; it is a NUL-terminated string that lives as long as the
    // process, or null.
    let p = unsafe { program_invocation_short_name };
    if p.is_null() {
        return &[];
    }
    // SAFETY: non-null, NUL-terminated and never freed (see above).
    let name = unsafe { std::ffi::CStr::from_ptr(p) }.to_bytes();
    &name[..name.len().min(255)]
}

/// The key log file the environment names (`SSLKEYLOGFILE`), for the collector to read: NSS
/// writes its keys there and nowhere a hook can see them. Named by its absolute path (the
/// collector's working directory is not the program's), with its size and inode now, so that
/// lines of earlier runs are not taken for this one's. Only a `stat`: no descriptor is opened.
fn announce_key_log_file() {
    let Some(path) = std::env::var_os("SSLKEYLOGFILE").filter(|p| !p.is_empty()) else {
        return;
    };
    let path = std::path::Path::new(&path);
    let path = match std::env::current_dir() {
        Ok(cwd) if path.is_relative() => cwd.join(path),
        _ => path.to_path_buf(),
    };
    let mut r = Record::new(Kind::KeyLogFile);
    (r.arg0, r.arg1) = match std::fs::metadata(&path) {
        Ok(m) => {
            use std::os::unix::fs::MetadataExt;
            (m.len() as i64, m.ino() as i64)
        }
        Err(_) => (-1, 0),
    };
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    emit(&r, bytes.len(), &bytes);
}

/// Every internet socket open at load (inherited over exec or from an untraced parent). The
/// directory is read with raw `getdents64` into a buffer on the stack: std's `read_dir` would
/// allocate (the program's first `malloc`, its heap and glibc's `getrandom` for it).
fn scan_inherited() {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    let Ok(dir) = sys::open(c"/proc/self/fd", flags, 0) else {
        return;
    };
    let mut buf = [0u64; 512];
    while let Ok(n @ 1..) = sys::getdents64(dir, &mut buf) {
        // SAFETY: viewing the initialised prefix of a u64 array as bytes.
        let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
        for fd in descriptor_numbers(bytes).filter(|&fd| fd != dir) {
            set_kind(fd, kind::OTHER);
            probe(fd);
        }
    }
    sys::close(dir);
}

/// The descriptor numbers named by `linux_dirent64` records (`.` and `..` are skipped).
fn descriptor_numbers(mut bytes: &[u8]) -> impl Iterator<Item = i32> + '_ {
    // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
    const NAME: usize = 19;
    std::iter::from_fn(move || loop {
        let len = usize::from(u16::from_ne_bytes([*bytes.get(16)?, *bytes.get(17)?]));
        let record = bytes.get(..len).filter(|_| len > NAME)?;
        bytes = &bytes[len..];
        let name = &record[NAME..];
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        if let Some(fd) = std::str::from_utf8(name).ok().and_then(|n| n.parse().ok()) {
            return Some(fd);
        }
    })
}

/// Look at a descriptor this process did not create through a hook (inherited, or received in
/// an SCM_RIGHTS message) and report it if it is an internet socket. These few system calls are
/// made once per such descriptor, at load or on arrival, never on the data path.
pub fn probe(fd: i32) {
    {
        let Ok(st) = sys::fstat(fd) else { return };
        if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
            return;
        }
        let Some(local) = sys::local_addr(fd) else {
            return;
        };
        let Ok(ty) = sys::sockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE) else {
            return;
        };
        let k = match ty {
            libc::SOCK_STREAM => kind::TCP,
            libc::SOCK_DGRAM => kind::UDP,
            _ => return,
        };
        set_kind(fd, k);
        let listening = sys::sockopt_int(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN) == Ok(1);
        let mut r = Record::new(Kind::Discovered);
        r.fd = fd;
        r.arg0 = ty as i64;
        r.arg1 = st.st_ino as i64;
        r.ret = listening as i64;
        r.local = Some(local);
        r.addr = sys::peer_addr(fd);
        emit(&r, 0, &NOTHING);
    }
}

/// `--backend both`: this thread enters (`inside`) or leaves the outermost call of a TLS
/// library on object `ssl`. The tracer records the socket calls made in between; this is how
/// the collector knows they carry that object's ciphertext (the hooks no longer see them).
pub fn tls_call(ssl: usize, inside: bool) {
    if !TLS_ONLY.load(Relaxed) {
        return;
    }
    let saved = sys::errno();
    let mut r = Record::new(Kind::TlsCall);
    r.ssl = ssl as u64;
    r.arg0 = i64::from(inside);
    emit(&r, 0, &NOTHING);
    sys::set_errno(saved);
}

/// Whether the calls only event traces need are recorded (`NETINTERCEPT_EVENTS` set at load):
/// without it, their hooks cost this one relaxed load.
pub static EVENTS: AtomicBool = AtomicBool::new(false);

/// Whether fork children record (`NETINTERCEPT_FOLLOW=0` turns it off).
pub static FOLLOW: AtomicBool = AtomicBool::new(true);

extern "C" fn after_fork_child() {
    ROOT.store(false, Relaxed);
    if !FOLLOW.load(Relaxed) {
        ENABLED.store(false, Relaxed);
        return;
    }
    // A fork child writes to a ring of its own; without one it records nothing (the parent's
    // ring must not get records under the parent's pid).
    let parent = PID.load(Relaxed);
    let parent_slot = SLOT.swap(NO_SLOT, AcqRel);
    let _ = TID.try_with(|t| t.set(0));
    let ns_pid = sys::getpid();
    // Inside a sandbox's pid namespace /proc may be out of reach (Chromium's zygote forks after
    // its chroot): the collector then finds the child's pid from its parent's.
    let global = if OWN_PID_NS.load(Relaxed) {
        proc_self_pid()
    } else {
        Some(ns_pid)
    };
    let pid = global.unwrap_or(ns_pid);
    if claim(pid, ns_pid).is_err() {
        ENABLED.store(false, Relaxed);
        return;
    }
    let mut r = Record::new(Kind::Start);
    r.arg0 = parent as i64;
    r.arg1 = 1;
    r.ret = global.is_none() as i64;
    r.ssl = u64::from(parent_slot) + 1;
    if TLS_ONLY.load(Relaxed) {
        r.errno = crate::record::TLS_ONLY;
    }
    emit(&r, 0, &NOTHING);
}

/// `fork()` returned `child` in the parent.
pub fn forked(child: i32) {
    // Inside a pid namespace the number means nothing to the collector: the child's own Start
    // record announces it.
    if OWN_PID_NS.load(Relaxed) {
        return;
    }
    let mut r = Record::new(Kind::Fork);
    r.ret = child as i64;
    emit(&r, 0, &NOTHING);
}

extern "C" fn at_exit() {
    leaving();
}

/// The process is ending (exit, or `_exit` in the process that owns the ring): tell the collector.
/// The run's first process then waits, briefly, until the packets are written, so the capture is
/// complete when the program the user started has returned. A vfork child (sharing our memory
/// under another pid) must not do this.
pub fn leaving() {
    if !ENABLED.load(Relaxed) || sys::getpid() != NS_PID.load(Relaxed) {
        return;
    }
    let Some(ring) = ring() else { return };
    emit(&Record::new(Kind::Exit), 0, &NOTHING);
    if !ROOT.load(Relaxed) {
        return;
    }
    for attempt in 0..5000u32 {
        if ring.exit_acked() || !ENABLED.load(Relaxed) {
            return;
        }
        if !wait_for_room(attempt) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One `linux_dirent64` record as the kernel lays it out (8-byte aligned length).
    fn dirent(name: &str) -> Vec<u8> {
        let len = (19 + name.len() + 1).next_multiple_of(8);
        let mut r = vec![0u8; len];
        r[16..18].copy_from_slice(&(len as u16).to_ne_bytes());
        r[18] = libc::DT_LNK;
        r[19..19 + name.len()].copy_from_slice(name.as_bytes());
        r
    }

    #[test]
    fn descriptor_numbers_of_proc_self_fd() {
        let bytes: Vec<u8> = [".", "..", "0", "1", "2", "10", "65535", "1048575"]
            .iter()
            .flat_map(|n| dirent(n))
            .collect();
        let fds: Vec<i32> = descriptor_numbers(&bytes).collect();
        assert_eq!(fds, [0, 1, 2, 10, 65535, 1048575]);
    }

    #[test]
    fn descriptor_numbers_stop_at_a_short_record() {
        let mut bytes = dirent("7");
        bytes.extend_from_slice(&dirent("8")[..12]);
        assert_eq!(descriptor_numbers(&bytes).collect::<Vec<_>>(), [7]);
        // A zero length never loops.
        assert_eq!(descriptor_numbers(&[0u8; 24]).count(), 0);
    }

    #[test]
    fn variable_names_agree() {
        assert_eq!(RING_VAR_C.to_str(), Ok(RING_VAR));
        assert_eq!(ROOT_VAR_C.to_str(), Ok(ROOT_VAR));
        assert_eq!(TRACED_VAR_C.to_str(), Ok(TRACED_VAR));
    }
}
