//! `-p PID,…`: tracing processes that are already running, and letting them go.
//!
//! No seccomp filter can be put into a running process, so an attached process stops at every
//! system call (`PTRACE_SYSCALL`, entry and exit). The sockets it already holds are found at
//! attach (their streams start with a synthesized handshake). SIGINT, SIGTERM or SIGHUP to the
//! CLI detach every thread: the processes run on, unaware.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use super::{on_tracer_thread, ptrace, LaunchError, Proc, Running, Thread, Tracer, FOLLOW};
use crate::ring::Region;

/// A detach was asked for.
static DETACH: AtomicBool = AtomicBool::new(false);
/// A tracee the signal handler interrupts, so that the tracer's wait returns at once.
static POKE: AtomicI32 = AtomicI32::new(0);

const SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

pub(super) fn detach_asked() -> bool {
    DETACH.load(Ordering::Relaxed)
}

/// Some tracee other than `gone` for the handler to interrupt.
pub(super) fn poke_other(gone: i32, any: Option<i32>) {
    let _ = POKE.compare_exchange(gone, any.unwrap_or(0), Ordering::Relaxed, Ordering::Relaxed);
}

extern "C" fn on_signal(_: libc::c_int) {
    DETACH.store(true, Ordering::Relaxed);
    let tid = POKE.load(Ordering::Relaxed);
    if tid > 0 {
        // Runs on the tracer thread (the only one not blocking these signals), so the request
        // is the tracer's; the stop it makes ends the tracer's wait.
        ptrace(libc::PTRACE_INTERRUPT, tid, 0);
    }
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill our own set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Call on the CLI's main thread before [`attach`]: the detaching signals are blocked there
/// (and in every thread started after, but the tracer, which takes them).
pub fn detach_on_signals() {
    let set = signal_set();
    // SAFETY: blocking signals in this thread; the handler only stores atomics and makes one
    // ptrace request.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        // No SA_RESTART: the tracer's wait returns EINTR.
        libc::sigemptyset(&mut sa.sa_mask);
        for s in SIGNALS {
            libc::sigaction(s, &sa, std::ptr::null_mut());
        }
    }
}

/// Trace the running processes `pids` (and every process they start) into `region`, until a
/// detaching signal or until they are all gone.
pub fn attach(pids: Vec<i32>, region: Region, events: bool) -> Result<Running, LaunchError> {
    let first = pids.first().copied().unwrap_or(0);
    on_tracer_thread(move |started_tx, status_tx| {
        let set = signal_set();
        // SAFETY: unblocking in this thread the signals the main thread blocked.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
        let mut t = Tracer::new(Vec::new(), region, events, true, true, -1);
        if let Err(e) = t.seize_all(&pids) {
            t.detach_all();
            let _ = started_tx.send(Err(e));
            return;
        }
        POKE.store(first, Ordering::Relaxed);
        let _ = started_tx.send(Ok(first));
        t.run(None, &status_tx);
    })
}

/// Why the kernel refused to let us trace `pid`, and what to do.
fn refusal(pid: i32, e: std::io::Error) -> String {
    let why = match e.raw_os_error() {
        Some(libc::ESRCH) => "no such process".to_string(),
        Some(libc::EPERM) => {
            let yama = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok());
            match yama {
                Some(n) if n >= 1 => format!(
                    "kernel.yama.ptrace_scope is {n}: only a process's ancestors may trace it; \
                     start the program under netintercept instead, or (as root) \
                     sysctl kernel.yama.ptrace_scope=0"
                ),
                _ => "not permitted: it belongs to another user, runs a setuid program, or is \
                      already traced (a debugger, strace)"
                    .to_string(),
            }
        }
        _ => e.to_string(),
    };
    format!("cannot attach to process {pid}: {why}")
}

impl Tracer {
    /// Seize every thread of every process in `pids`, then report what each holds.
    fn seize_all(&mut self, pids: &[i32]) -> Result<(), LaunchError> {
        for &pid in pids {
            if self.procs.contains_key(&pid) {
                continue;
            }
            // Threads may be born while we seize: look again until no new one appears.
            let mut seized = 0usize;
            loop {
                let tids = super::tracee::threads(pid);
                if tids.is_empty() && seized == 0 {
                    return Err(LaunchError::Attach(refusal(
                        pid,
                        std::io::Error::from_raw_os_error(libc::ESRCH),
                    )));
                }
                let mut new = 0;
                for tid in tids {
                    if self.threads.contains_key(&tid) {
                        continue;
                    }
                    // SAFETY: seizing a thread; options only.
                    let rc = unsafe {
                        libc::ptrace(
                            libc::PTRACE_SEIZE,
                            tid,
                            std::ptr::null_mut::<libc::c_void>(),
                            FOLLOW as usize as *mut libc::c_void,
                        )
                    };
                    if rc != 0 {
                        let e = std::io::Error::last_os_error();
                        if e.raw_os_error() == Some(libc::ESRCH) && seized > 0 {
                            continue; // a thread that just ended
                        }
                        return Err(LaunchError::Attach(refusal(pid, e)));
                    }
                    self.threads.insert(
                        tid,
                        Thread {
                            pid,
                            started: false,
                            pending: None,
                        },
                    );
                    // Its first stop is this interrupt's; from there it runs under PTRACE_SYSCALL.
                    ptrace(libc::PTRACE_INTERRUPT, tid, 0);
                    seized += 1;
                    new += 1;
                }
                if new == 0 {
                    break;
                }
            }
            self.roots.push(pid);
            let mut p = Proc {
                ring: self.region.claim(pid),
                silent: false,
                fds: Default::default(),
                process: super::tracee::Process::open(pid),
                threads: seized,
            };
            super::scan(&mut p, pid, pid, self.events);
            self.procs.insert(pid, p);
        }
        Ok(())
    }

    /// Let every tracee go: interrupt each, detach it at its stop (a signal it was about to
    /// receive is delivered), and end each process's records.
    pub(super) fn detach_all(&mut self) {
        for &tid in self.threads.keys().chain(self.early.iter()) {
            ptrace(libc::PTRACE_INTERRUPT, tid, 0);
        }
        let mut left: std::collections::HashSet<i32> = self
            .threads
            .keys()
            .chain(self.early.iter())
            .copied()
            .collect();
        while !left.is_empty() {
            let mut st = 0;
            // SAFETY: waiting for our tracees.
            let tid = unsafe { libc::waitpid(-1, &mut st, libc::__WALL) };
            if tid < 0 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                break;
            }
            if libc::WIFEXITED(st) || libc::WIFSIGNALED(st) {
                left.remove(&tid);
                self.gone(tid);
                continue;
            }
            let sig = libc::WSTOPSIG(st);
            let event = (st >> 16) & 0xff;
            // A signal-delivery stop holds the signal: it goes on with the detach.
            let deliver = if event == 0 && sig != (libc::SIGTRAP | 0x80) {
                sig
            } else {
                0
            };
            ptrace(libc::PTRACE_DETACH, tid, deliver as usize);
            left.remove(&tid);
        }
        self.threads.clear();
        self.early.clear();
        for (pid, p) in self.procs.drain() {
            super::put(
                p.ring,
                pid,
                pid,
                &crate::record::Record::new(crate::record::Kind::Detached),
                super::Payload::Inline,
            );
        }
    }
}
