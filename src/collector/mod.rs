//! The collector: one per run, outside the traced programs. It reads every process's ring,
//! merges the records in time order, turns them into packets ([`machine`]) and writes the
//! capture ([`output`]).
//!
//! Merging: each ring is in reservation order, and a record's timestamp is taken after its
//! reservation. So when every other ring is either empty (looked at after the candidate was
//! read) or holds a later record, the earliest committed record can go: nothing stamped before
//! it can still appear. A ring whose head stays reserved but uncommitted (a writer preempted,
//! or stopped in a signal handler) holds the merge back for at most [`STUCK`]; a dead owner's
//! unfinished frame is skipped.

pub mod contents;
mod key_file;
mod key_hold;
pub mod machine;
mod mem_bio;
pub mod output;
pub mod procfs;
pub mod sock_trace;
pub mod spawn;
mod tcp_events;
mod tcp_info;

use crate::fast_hash::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use machine::{Machine, Origin, PacketSink};
use output::Outputs;

use crate::record::{Kind, Record};
use crate::ring::{Peek, Region, Ring, SLOT_ACTIVE};

/// How long an uncommitted head may hold back the other rings.
const STUCK: Duration = Duration::from_millis(50);
/// The shortest and longest sleep of an idle collector.
const MIN_NAP_US: u64 = 500;
const MAX_NAP_US: u64 = 2000;
/// The longest wait, once the run looks over, for a process that may still claim a slot.
const LINGER: Duration = Duration::from_millis(250);
/// How often `/proc` is searched for such a process meanwhile.
const UNCLAIMED_LOOK: Duration = Duration::from_millis(10);
/// How often owners are checked for life.
const LIVENESS: Duration = Duration::from_millis(20);

/// When the run is over.
pub enum Until {
    /// The CLI's command: the run ends when it has exited and no traced process remains. With
    /// the region's path, as the traced processes find it in their environment.
    Child(std::process::Child, std::ffi::OsString),
    /// A detached collector: when no traced process remains (after at least one appeared).
    LastProcess,
    /// The system-call tracer's command ([`crate::tracer`]): the run ends when the tracer has
    /// reported the command's exit and no traced process remains. The tracer, not the kernel's
    /// view of a pid, says when a process is gone (it ends each process's records with Exit).
    Traced(std::sync::mpsc::Receiver<std::process::ExitStatus>),
}

struct SlotView {
    /// The pid this slot's records are filed under: the owner's, or for a sandboxed process
    /// that could not name itself, the pid found from outside or a number of our own.
    pid: i32,
    claim_seq: u64,
    stuck_since: Option<Instant>,
    /// The pid could not be found from outside: life is judged by the parent's slot.
    parent_slot: Option<u32>,
    unresolved: bool,
    exited: bool,
    /// Who writes this ring, once its Start said so.
    writer: Writer,
    /// When the collector first saw the slot in use.
    seen: Instant,
}

/// Who writes a ring.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// No Start read yet.
    Unknown,
    /// The library in the process (all of its records, or its TLS records beside the tracer).
    Library,
    /// The system-call tracer: the process is gone when the tracer says so.
    Tracer,
}

impl SlotView {
    fn new(ring: Ring) -> SlotView {
        SlotView {
            pid: ring.owner(),
            claim_seq: ring.claim_seq(),
            stuck_since: None,
            parent_slot: None,
            unresolved: false,
            exited: false,
            writer: Writer::Unknown,
            seen: Instant::now(),
        }
    }
}

impl PacketSink for Outputs {
    fn packet(&mut self, origin: &Origin, bytes: &[u8]) {
        Outputs::packet(self, origin, bytes)
    }
    fn tls_key(&mut self, origin: &Origin, line: &[u8]) {
        Outputs::tls_key(self, origin, line)
    }
    fn key_log_file(&mut self, origin: &Origin, path: &[u8], size: i64, inode: u64) {
        self.watch_key_file(origin.pid, path, size, inode)
    }
    fn nss_without_keys(&mut self, origin: &Origin) {
        Outputs::nss_without_keys(self, origin.pid)
    }
}

/// How a run ended.
pub struct Ended {
    /// The command's exit status (CLI mode).
    pub status: Option<std::process::ExitStatus>,
    /// What was written, and what could not be.
    pub report: output::Report,
}

/// Collect until the run ends.
pub fn run(region: Region, mut outputs: Outputs, mode: crate::tls::Mode, until: Until) -> Ended {
    // SAFETY: getpid cannot fail.
    region.set_collector_pid(unsafe { libc::getpid() });
    let mut machine = Machine::new(procfs::ProcFs, mode, crate::recorder::now_ns() ^ 0x5eed);
    if outputs.keys_in_capture() {
        machine.hold_for_keys();
    }
    let mut slots: HashMap<u32, SlotView> = HashMap::default();
    let mut last_liveness = Instant::now();
    let mut idle_since: Option<Instant> = None;
    let mut ever = false;
    let (mut child, traced, mut unclaimed) = match until {
        Until::Child(c, path) => {
            let first = c.id();
            (Some(c), None, Unclaimed::look(path, first))
        }
        // Nobody waits for a detached collector's end: it always gives late children the
        // whole while (its first process set the variable with setenv, which /proc does not
        // show, so looking would not find its children).
        Until::LastProcess => (None, None, Unclaimed::Always),
        // The tracer creates a process's ring before the process runs.
        Until::Traced(rx) => (None, Some(rx), Unclaimed::Never),
    };
    let mut status = None;
    let started = Instant::now();
    // Idle, the collector sleeps at least half a millisecond: waking every few microseconds
    // took the CPU from the traced programs on a 2-core machine (a traced ping-pong of 6,250
    // round trips: 0.18 s with 20 µs naps, 0.05-0.10 s with these; 0.04 s untraced). A ring
    // holds milliseconds of even a bulk sender's bytes, so nothing waits on the nap.
    let mut sleep_us = MIN_NAP_US;
    loop {
        // The heartbeat producers look at while their ring is full.
        region.set_clock_floor(crate::recorder::now_ns());
        // Which slots are in use.
        for i in 0..region.slot_count() {
            let ring = region.ring(i);
            if ring.state() == SLOT_ACTIVE {
                let v = slots.entry(i).or_insert_with(|| SlotView::new(ring));
                if v.claim_seq != ring.claim_seq() {
                    *v = SlotView::new(ring);
                }
                ever = true;
            }
        }
        let mut moved = merge(&region, &mut slots, &mut machine, &mut outputs);
        // Keys the programs wrote to their key log files: before a process found gone releases
        // what waits for them.
        moved += read_key_files(&mut machine, &mut outputs);
        // `-u` holds while the programs make no call: samples are due by the clock.
        outputs.tcp_tick(crate::recorder::now_ns());
        if last_liveness.elapsed() >= LIVENESS || moved == 0 {
            last_liveness = Instant::now();
            reap(
                &region,
                &mut slots,
                &mut machine,
                &mut outputs,
                traced.is_some(),
            );
        }
        if let Some(c) = child.as_mut() {
            if status.is_none() {
                status = c.try_wait().ok().flatten();
            }
        }
        if let Some(rx) = traced.as_ref() {
            if status.is_none() {
                match rx.try_recv() {
                    Ok(s) => status = Some(s),
                    // The tracer is gone without a word (it cannot be: it always reports): end.
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        status = Some(std::process::ExitStatus::from_raw(255 << 8))
                    }
                    Err(std::sync::mpsc::TryRecvError::Empty) => {}
                }
            }
        }
        let over = slots.is_empty()
            && match (&child, &traced) {
                (Some(_), _) | (_, Some(_)) => status.is_some(),
                (None, None) => ever || started.elapsed() > Duration::from_secs(10),
            };
        if over {
            // A child a traced process started may not have claimed its slot yet when its
            // parent is gone (a fork child claims as it returns from fork; an exec'd image as
            // the library loads): wait for it a moment before ending the run. Only if there
            // may be one (see `Unclaimed`).
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() > LINGER || !unclaimed.may_remain(since.elapsed()) {
                break;
            }
        } else {
            idle_since = None;
        }
        if moved == 0 {
            outputs.flush();
            std::thread::sleep(Duration::from_micros(sleep_us));
            sleep_us = (sleep_us * 2).min(MAX_NAP_US);
        } else {
            sleep_us = MIN_NAP_US;
        }
    }
    read_key_files(&mut machine, &mut outputs);
    machine.finish(&mut outputs);
    Ended {
        status,
        report: outputs.close(),
    }
}

/// Whether a process that may still claim a slot exists, once the run looks over.
enum Unclaimed {
    /// Looked up in `/proc` at most every [`UNCLAIMED_LOOK`]: processes started since the
    /// run's first (`first`) that carry the region's `path`.
    Look {
        path: std::ffi::OsString,
        first: u32,
        /// When the run looked over at the last look (the time since then), and its answer.
        last: Option<(Duration, bool)>,
    },
    Always,
    Never,
}

impl Unclaimed {
    fn look(path: std::ffi::OsString, first: u32) -> Unclaimed {
        Unclaimed::Look {
            path,
            first,
            last: None,
        }
    }

    fn may_remain(&mut self, looking_for: Duration) -> bool {
        match self {
            Unclaimed::Always => true,
            Unclaimed::Never => false,
            Unclaimed::Look { path, first, last } => match *last {
                Some((at, answer)) if looking_for < at + UNCLAIMED_LOOK => answer,
                _ => {
                    let answer = procfs::may_claim(crate::recorder::RING_VAR, path, *first);
                    *last = Some((looking_for, answer));
                    answer
                }
            },
        }
    }
}

/// Give the machine the lines written to the key log files since the last look; returns how
/// many.
fn read_key_files(machine: &mut Machine<procfs::ProcFs>, outputs: &mut Outputs) -> usize {
    let lines = outputs.read_key_files();
    if lines.is_empty() {
        return 0;
    }
    let now = crate::recorder::now_ns();
    for (pid, line) in &lines {
        machine.file_key(*pid, line, now, outputs);
    }
    // Packets released meanwhile belong to no call's event.
    outputs.take_frames();
    lines.len()
}

/// Apply records in time order while that order is certain; returns how many were applied.
fn merge(
    region: &Region,
    slots: &mut HashMap<u32, SlotView>,
    machine: &mut Machine<procfs::ProcFs>,
    outputs: &mut Outputs,
) -> usize {
    let mut applied = 0;
    let mut ids: Vec<u32> = slots.keys().copied().collect();
    ids.sort_unstable();
    loop {
        let mut best: Option<(u64, u32)> = None;
        let mut empty = Vec::new();
        let mut blocked = false;
        for &i in &ids {
            let ring = region.ring(i);
            match ring.peek() {
                Peek::Empty => {
                    if let Some(v) = slots.get_mut(&i) {
                        v.stuck_since = None;
                    }
                    empty.push(i)
                }
                Peek::InFlight => {
                    let v = slots.get_mut(&i);
                    if let Some(v) = v {
                        let since = *v.stuck_since.get_or_insert_with(Instant::now);
                        if since.elapsed() < STUCK {
                            blocked = true;
                        }
                    }
                }
                Peek::Frame { bytes, .. } => {
                    if let Some(v) = slots.get_mut(&i) {
                        v.stuck_since = None;
                    }
                    let ts = Record::decode(bytes).map_or(0, |r| r.ts_ns);
                    if best.is_none_or(|(b, _)| ts < b) {
                        best = Some((ts, i));
                    }
                }
            }
        }
        let Some((_, i)) = best else { return applied };
        if blocked {
            return applied;
        }
        // Rings that were empty must still be empty now that the candidate has been read.
        // Threads without a clock stamp from this floor on, so what they write after this
        // look sorts after the candidate too.
        if !empty.is_empty() {
            region.set_clock_floor(crate::recorder::now_ns());
        }
        if empty
            .iter()
            .any(|&e| !matches!(region.ring(e).peek(), Peek::Empty))
        {
            continue;
        }
        let ring = region.ring(i);
        apply_head(region, i, slots, machine, outputs);
        applied += 1;
        // Drain this ring while its records stay earliest (the common case: one busy process).
        if ids.len() == 1 {
            while let Peek::Frame { .. } = ring.peek() {
                apply_head(region, i, slots, machine, outputs);
                applied += 1;
                if applied % 4096 == 0 {
                    break;
                }
            }
        }
        if applied >= 65536 {
            return applied;
        }
    }
}

fn apply_head(
    region: &Region,
    slot: u32,
    slots: &mut HashMap<u32, SlotView>,
    machine: &mut Machine<procfs::ProcFs>,
    outputs: &mut Outputs,
) {
    let ring = region.ring(slot);
    let Peek::Frame { bytes, next } = ring.peek() else {
        return;
    };
    if let Some(mut r) = Record::decode(bytes) {
        if r.kind == Kind::Start {
            let writer = if r.errno == crate::record::BY_TRACER {
                Writer::Tracer
            } else {
                Writer::Library
            };
            if let Some(v) = slots.get_mut(&slot) {
                v.writer = writer;
            }
            if r.errno == crate::record::TLS_ONLY {
                // It names the ring's writer, nothing more: the tracer reports the process.
                ring.release(next);
                return;
            }
            name_process(slot, &r, slots);
        }
        let Some(v) = slots.get_mut(&slot) else {
            ring.release(next);
            return;
        };
        r.pid = v.pid;
        if r.kind == Kind::Start {
            if let Some(parent) = v.parent_slot.and_then(|p| slots.get(&p)) {
                r.arg0 = i64::from(parent.pid);
            }
            outputs.learn_process(r.pid);
        }
        // A connection waiting for keys a key log file brings is released by the process's
        // next call of another kind (a close, an exit): the file, written before that call,
        // is read first.
        if machine.holds_for_keys() {
            read_key_files(machine, outputs);
        }
        // Packets written meanwhile belong to no call's event (a process found gone).
        outputs.take_frames();
        machine.apply(&r, outputs);
        // A vfork child's closes arrive under its parent's pid (it shares its parent's memory,
        // so its recorder): when the machine kept the descriptors (the parent's still name the
        // sockets), they are no event of the parent's sockets.
        let vfork_child_close = match r.kind {
            Kind::Close => machine.holds(r.pid, r.fd.into()..=r.fd.into()),
            Kind::CloseRange => machine.holds(r.pid, r.arg0..=r.arg1),
            _ => false,
        };
        if !vfork_child_close {
            outputs.trace_event(&r);
        }
        outputs.tcp_record(&r, &|pid, fd| machine.tcp_inode(pid, fd));
        if matches!(r.kind, Kind::Exit | Kind::Detached) {
            if let Some(v) = slots.get_mut(&slot) {
                v.exited = true;
            }
            outputs.flush();
            ring.release(next);
            ring.ack_exit();
            return;
        }
    }
    ring.release(next);
}

/// A process's first record: note its parent's slot, and when it could not name itself (a
/// sandbox's pid namespace without /proc), find its pid from its parent's, or give it a number
/// no real process has.
fn name_process(slot: u32, start: &Record, slots: &mut HashMap<u32, SlotView>) {
    let parent_slot = (start.ssl as u32).checked_sub(1);
    let parent = parent_slot.and_then(|p| slots.get(&p)).map(|p| p.pid);
    let Some(v) = slots.get_mut(&slot) else {
        return;
    };
    v.parent_slot = parent_slot;
    if start.ret != 1 {
        return;
    }
    match parent.and_then(|p| procfs::child_in_namespace(p, v.pid)) {
        Some(pid) => v.pid = pid,
        None => {
            v.unresolved = true;
            v.pid = -((v.claim_seq & 0x3fff_ffff) as i32) - 1;
        }
    }
}

/// Free the slots of processes that are gone (or replaced their image), once drained.
fn reap(
    region: &Region,
    slots: &mut HashMap<u32, SlotView>,
    machine: &mut Machine<procfs::ProcFs>,
    outputs: &mut Outputs,
    traced: bool,
) {
    let mut newest: HashMap<i32, u64> = HashMap::default();
    // A tracer's ring and the library's TLS-only ring of the same process live side by side
    // (`--backend both`): only a library ring supersedes a library ring.
    for v in slots
        .values()
        .filter(|v| !traced || v.writer == Writer::Library)
    {
        let e = newest.entry(v.pid).or_insert(0);
        *e = (*e).max(v.claim_seq);
    }
    let mut done = Vec::new();
    let ids: Vec<u32> = slots.keys().copied().collect();
    for i in ids {
        let Some(v) = slots.get(&i) else { continue };
        let superseded = (!traced || v.writer == Writer::Library)
            && newest.get(&v.pid).is_some_and(|&n| n > v.claim_seq);
        let dead = if v.writer == Writer::Tracer {
            // The tracer writes each process's Exit after it reaped it: the pid is gone first.
            v.exited
        } else if traced && v.writer == Writer::Unknown {
            // Perhaps the tracer's, its Start about to be committed: give it a moment.
            !procfs::alive(v.pid) && v.seen.elapsed() > Duration::from_secs(1)
        } else if v.unresolved {
            // Its own pid is unknown: it is gone once it said so, or once its parent is (a
            // sandbox's pid namespace dies with its first process).
            v.exited
                || v.parent_slot
                    .and_then(|p| slots.get(&p))
                    .is_none_or(|p| !p.unresolved && !procfs::alive(p.pid))
        } else {
            !procfs::alive(v.pid)
        };
        let pid = v.pid;
        if !(superseded || dead) {
            continue;
        }
        let ring = region.ring(i);
        // Whatever the dead process committed is applied first.
        loop {
            match ring.peek() {
                Peek::Frame { .. } => apply_head(region, i, slots, machine, outputs),
                Peek::InFlight => {
                    ring.skip_stuck();
                }
                Peek::Empty => break,
            }
        }
        done.push((i, pid, dead && !superseded));
    }
    for (i, pid, gone) in done {
        slots.remove(&i);
        region.ring(i).free();
        if gone && !slots.values().any(|v| v.pid == pid) {
            machine.process_gone(pid, crate::recorder::now_ns(), outputs);
            outputs.tcp_process_gone(pid);
        }
    }
}

/// The run may write nothing; why was said on stderr.
#[derive(Debug)]
pub struct Refused;

/// Say each of `cfg`'s problems once and compile its filter (the run's only compilation).
/// `Err` when nothing may be written: a filter that cannot be applied, or for the CLI
/// (`strict`, which then exits before starting the program) any value that names nothing.
pub fn check(
    cfg: &crate::config::Config,
    lib_dir: &std::path::Path,
    strict: bool,
) -> Result<Option<crate::filter::Filter>, Refused> {
    use crate::config::Problem;
    for p in &cfg.problems {
        match p {
            Problem::BadFormat(line) if !strict => {
                let implied = if cfg.pcapng { "pcapng" } else { "pcap" };
                crate::sys::report(&format!(
                    "{line}: writing {implied}, as the file name implies"
                ));
            }
            // One write each: a program writing to the same stderr cannot split the line.
            _ => crate::sys::report(p.line()),
        }
    }
    let refused = cfg.problems.iter().any(|p| match p {
        Problem::BadFilter(_) => true,
        Problem::BadFormat(_) => strict,
        Problem::Ignored(_) | Problem::Defaulted(_) => false,
    });
    if refused {
        return Err(Refused);
    }
    match cfg.filter.as_deref() {
        // An empty expression keeps everything, as tcpdump's does.
        None => Ok(None),
        Some(expr) if expr.trim().is_empty() => Ok(None),
        Some(expr) => crate::filter::Filter::compile_with(lib_dir, expr)
            .map(Some)
            .map_err(|msg| {
                let line = crate::config::bad_filter_line(expr.as_bytes(), &msg);
                crate::sys::report(&line);
                Refused
            }),
    }
}

/// The outputs `cfg` asks for, with `filter` already compiled by [`check`].
pub fn outputs(
    region: &Region,
    cfg: &crate::config::Config,
    filter: Option<crate::filter::Filter>,
) -> Outputs {
    let (realtime, mono) = region.start_clocks();
    Outputs::new(
        &cfg.file_pattern,
        cfg.pcapng,
        filter,
        realtime as i128 - mono as i128,
        realtime / 1_000_000_000,
    )
    // The keys decrypt what a capture of ciphertext holds; a plain one holds the plaintext.
    .keys(
        crate::tls::mode() != crate::tls::Mode::Plain,
        cfg.keylog.clone(),
    )
    .events(
        cfg.events.clone(),
        cfg.events_pcap,
        realtime as i128 - mono as i128,
    )
    .tcp(cfg.tcp, realtime as i128 - mono as i128)
}

/// How often the heartbeat is renewed while the collector is busy before its loop starts.
const BUSY_BEAT: Duration = Duration::from_millis(100);

/// `work()`, with the collector's heartbeat renewed meanwhile by another thread.
fn keeping_heartbeat<T>(region: &Region, work: impl FnOnce() -> T) -> T {
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                // Raising the clock floor is what the merge loop does at each look, and all the
                // floor promises (stamps of clockless threads never below it) holds from any
                // thread: it only ever grows.
                region.set_clock_floor(crate::recorder::now_ns());
                std::thread::sleep(BUSY_BEAT);
            }
        });
        let out = work();
        done.store(true, std::sync::atomic::Ordering::Release);
        out
    })
}

/// `netintercept --collect REGION LIBDIR`: the detached collector of an LD_PRELOAD run.
pub fn detached_main(region_path: &std::path::Path, lib_dir: &std::path::Path) -> i32 {
    let region = match spawn::map_region(region_path) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("netintercept: {e}");
            return 2;
        }
    };
    let cfg = crate::config::Config::from_env();
    // The program is already running: its recorders must see a live collector while libpcap
    // compiles (minutes for a 1,000-term filter), or after 10 s they take it for dead and stop
    // recording for the whole run. Until the merge starts, a full ring makes them wait.
    let checked = keeping_heartbeat(&region, || check(&cfg, lib_dir, false));
    let outputs = match checked {
        Ok(filter) => outputs(&region, &cfg, filter),
        Err(Refused) => Outputs::discard(),
    };
    if let Some(line) = crate::tls::complaint() {
        eprintln!("netintercept: {line}");
    }
    run(region, outputs, crate::tls::mode(), Until::LastProcess);
    let _ = std::fs::remove_file(region_path);
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// While the collector is busy before its loop (compiling a filter), the heartbeat the
    /// recorders look at keeps moving.
    #[test]
    fn a_busy_collector_keeps_its_heartbeat() {
        let (path, region) = spawn::create_region().expect("a region");
        let _ = std::fs::remove_file(&path);
        assert_eq!(region.heartbeat_ns(), 0, "no collector yet");
        let beat_moves = |since: u64| {
            let start = Instant::now();
            while region.heartbeat_ns() <= since {
                if start.elapsed() > Duration::from_secs(30) {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Some(region.heartbeat_ns())
        };
        let beats = keeping_heartbeat(&region, || {
            let first = beat_moves(0)?;
            beat_moves(first).map(|second| (first, second))
        });
        assert!(beats.is_some_and(|(a, b)| b > a), "{beats:?}");
    }
}
