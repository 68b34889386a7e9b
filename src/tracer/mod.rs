//! The system-call tracer: a second source of the collector's records, for programs the
//! preload library cannot enter (statically linked ones, Go's raw system calls) and for calls
//! libc makes inside itself (glibc's DNS resolver).
//!
//! The command runs under a seccomp filter ([`filter`]) that stops only the calls the capture
//! needs; a thread of the CLI traces it and every process and thread it starts (ptrace with
//! `PTRACE_O_TRACESECCOMP`, fork/vfork/clone/exec followed), reads each call's result at its
//! exit and its buffers with `process_vm_readv`, and writes the same records the recorder
//! would ([`calls`]) into one ring per traced process ([`sink`]). Nothing is added to the
//! program: no library, no descriptor, no thread. It runs with `no_new_privs` (the kernel's
//! condition for an unprivileged seccomp filter), so a setuid program it starts runs without
//! its privileges.
//!
//! The program's own signals, stops and exits pass through unchanged: signals are delivered
//! as they arrive, group-stops are kept with `PTRACE_LISTEN` (the tracees are seized), and
//! the command's wait status is the CLI's to report.

mod attach;
pub mod calls;
pub mod filter;
mod launch;
pub mod payload;
pub mod sink;
pub mod tracee;

pub use attach::{attach, detach_on_signals};
pub use launch::launch;

use std::ffi::CString;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::mpsc;

use crate::fast_hash::{HashMap, HashSet};
use crate::record::{Kind, Record};
use crate::ring::{Region, Ring};
use calls::{Calls, Fds, Next, Pending, Sock};
use payload::Payload;
use tracee::{Process, Tracee};

/// What to run.
pub struct Spec {
    /// The executable, resolved through PATH.
    pub path: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    /// The capture goes to standard output: the program's goes to stderr.
    pub stdout_to_stderr: bool,
    /// `--events`: closes are followed to their result.
    pub events: bool,
    /// Processes the command starts are recorded (`--no-follow`: they are traced, as the
    /// filter they inherit needs a tracer, but nothing of theirs is recorded).
    pub follow: bool,
}

/// A command started under the tracer.
pub struct Running {
    pub pid: i32,
    /// The command's wait status, sent when it ends (its descendants may still run).
    pub status: mpsc::Receiver<ExitStatus>,
}

/// Why the command could not start.
#[derive(Debug)]
pub enum LaunchError {
    /// execve failed in the child (`errno`).
    Exec(i32),
    /// The tracer itself could not be set up.
    Tracer(String),
    /// `-p`: a process could not be attached (the line says why and what to do).
    Attach(String),
}

/// Following every task, seeing the filter's stops, and, as the command would fail untraced,
/// taking it down with the tracer.
const OPTIONS: libc::c_int = FOLLOW | libc::PTRACE_O_TRACESECCOMP | libc::PTRACE_O_EXITKILL;

/// What every tracee is seized with: syscall stops told apart from SIGTRAP, and every new
/// task and image followed.
const FOLLOW: libc::c_int = libc::PTRACE_O_TRACESYSGOOD
    | libc::PTRACE_O_TRACEFORK
    | libc::PTRACE_O_TRACEVFORK
    | libc::PTRACE_O_TRACECLONE
    | libc::PTRACE_O_TRACEEXEC;

/// The tracer's whole life on a thread of its own (ptrace requests must all come from the
/// thread that seized the tracees): `body` sets the tracer up, says on its first sender
/// whether the program runs (its pid) or why not, then traces to the end, sending the
/// command's wait status on its second. Returns once the first has spoken.
fn on_tracer_thread(
    body: impl FnOnce(mpsc::Sender<Result<i32, LaunchError>>, mpsc::Sender<ExitStatus>) + Send + 'static,
) -> Result<Running, LaunchError> {
    let (started_tx, started_rx) = mpsc::channel();
    let (status_tx, status_rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("netintercept-tracer".into())
        .spawn(move || body(started_tx, status_tx));
    if let Err(e) = thread {
        return Err(LaunchError::Tracer(format!(
            "cannot start the tracer thread: {e}"
        )));
    }
    match started_rx.recv() {
        Ok(Ok(pid)) => Ok(Running {
            pid,
            status: status_rx,
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(LaunchError::Tracer("the tracer thread ended".into())),
    }
}

/// One traced process.
struct Proc {
    /// None: nothing of it is recorded (`--no-follow`, or every slot taken).
    ring: Option<Ring>,
    /// Never recorded, in any image (a child under `--no-follow`).
    silent: bool,
    fds: Fds,
    process: Process,
    /// Threads alive, the leader included.
    threads: usize,
}

/// One traced thread.
struct Thread {
    /// Its process.
    pid: i32,
    /// It has had its first stop (a new tracee's, to be let go).
    started: bool,
    /// The call it is in, kept from its entry stop to its exit stop.
    pending: Option<Pending>,
}

struct Tracer {
    region: Region,
    /// The processes the run is about: the command, or those attached with `-p`.
    roots: Vec<i32>,
    events: bool,
    follow: bool,
    /// Attached to running processes (`-p`): no seccomp filter, every system call stops
    /// (entry and exit, `PTRACE_SYSCALL`), and the processes are let go at the end.
    attached: bool,
    /// The pipe a failed execve of the command writes its errno to (-1 once read).
    errpipe: i32,
    procs: HashMap<i32, Proc>,
    threads: HashMap<i32, Thread>,
    /// New tracees stopped before their parent's fork event named them.
    early: HashSet<i32>,
}

fn ptrace(req: libc::c_uint, tid: i32, data: usize) -> i64 {
    // SAFETY: requests on our own tracees; `data` is a signal number or options, never a pointer.
    unsafe {
        libc::ptrace(
            req,
            tid,
            std::ptr::null_mut::<libc::c_void>(),
            data as *mut libc::c_void,
        )
    }
}

fn event_msg(tid: i32) -> u64 {
    let mut msg: libc::c_ulong = 0;
    // SAFETY: the kernel writes one unsigned long.
    unsafe {
        libc::ptrace(
            libc::PTRACE_GETEVENTMSG,
            tid,
            std::ptr::null_mut::<libc::c_void>(),
            &mut msg as *mut libc::c_ulong,
        )
    };
    msg
}

/// Whether `tid`'s syscall stop is an entry (else an exit), from PTRACE_GET_SYSCALL_INFO.
fn at_entry(tid: i32) -> bool {
    const PTRACE_GET_SYSCALL_INFO: libc::c_uint = 0x420e;
    const ENTRY: u8 = 1;
    let mut info = [0u8; 96];
    // SAFETY: the kernel writes at most `info.len()` bytes of struct ptrace_syscall_info.
    let n = unsafe {
        libc::ptrace(
            PTRACE_GET_SYSCALL_INFO,
            tid,
            info.len() as *mut libc::c_void,
            info.as_mut_ptr() as *mut libc::c_void,
        )
    };
    n > 0 && info[0] == ENTRY
}

const STOP_SIGNALS: [i32; 4] = [libc::SIGSTOP, libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU];

impl Tracer {
    fn new(
        roots: Vec<i32>,
        region: Region,
        events: bool,
        follow: bool,
        attached: bool,
        errpipe: i32,
    ) -> Tracer {
        let mut threads = HashMap::default();
        for &root in &roots {
            threads.insert(
                root,
                Thread {
                    pid: root,
                    started: true,
                    pending: None,
                },
            );
        }
        Tracer {
            region,
            roots,
            events,
            follow,
            attached,
            errpipe,
            procs: HashMap::default(),
            threads,
            early: HashSet::default(),
        }
    }

    /// Let `tid` go on from its stop, delivering `sig`: to the next filtered call, or when
    /// attached, to the next system call.
    fn resume(&self, tid: i32, sig: i32) {
        let req = if self.attached {
            libc::PTRACE_SYSCALL
        } else {
            libc::PTRACE_CONT
        };
        ptrace(req, tid, sig as usize);
    }

    fn run(
        &mut self,
        mut started: Option<mpsc::Sender<Result<i32, LaunchError>>>,
        status: &mpsc::Sender<ExitStatus>,
    ) {
        loop {
            if self.attached && attach::detach_asked() {
                self.detach_all();
                break;
            }
            let mut st = 0;
            // SAFETY: waiting for any of our tracees or children.
            let tid = unsafe { libc::waitpid(-1, &mut st, libc::__WALL) };
            if tid < 0 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                break;
            }
            self.on_status(tid, st, &mut started, status);
        }
        if self.attached {
            let _ = status.send(ExitStatus::from_raw(0));
        }
        if self.errpipe >= 0 {
            crate::sys::close(self.errpipe);
        }
    }

    fn on_status(
        &mut self,
        tid: i32,
        st: i32,
        started: &mut Option<mpsc::Sender<Result<i32, LaunchError>>>,
        status: &mpsc::Sender<ExitStatus>,
    ) {
        if libc::WIFEXITED(st) || libc::WIFSIGNALED(st) {
            if !self.attached && self.roots.first() == Some(&tid) {
                if let Some(tx) = started.take() {
                    // The command never ran: there is nothing more to report.
                    let _ = tx.send(Err(LaunchError::Exec(self.exec_errno())));
                } else {
                    let _ = status.send(ExitStatus::from_raw(st));
                }
            }
            self.gone(tid);
            return;
        }
        if !libc::WIFSTOPPED(st) {
            return;
        }
        let sig = libc::WSTOPSIG(st);
        let event = (st >> 16) & 0xff;
        let Some(th) = self.threads.get_mut(&tid) else {
            // A new tracee whose parent's event has not been seen: it waits for it.
            self.early.insert(tid);
            return;
        };
        if !th.started {
            th.started = true;
            self.resume(tid, 0);
            return;
        }
        match event {
            libc::PTRACE_EVENT_SECCOMP => self.on_entry(tid),
            libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK | libc::PTRACE_EVENT_CLONE => {
                self.on_new(tid, event);
                self.resume(tid, 0);
            }
            libc::PTRACE_EVENT_EXEC => {
                self.on_exec(tid);
                if let Some(tx) = started.take() {
                    let _ = tx.send(Ok(tid));
                }
                self.resume(tid, 0);
            }
            libc::PTRACE_EVENT_STOP => {
                if STOP_SIGNALS.contains(&sig) {
                    // A group-stop: it lasts until SIGCONT, as untraced.
                    ptrace(libc::PTRACE_LISTEN, tid, 0);
                } else {
                    self.resume(tid, 0);
                }
            }
            0 if sig == libc::SIGTRAP | 0x80 => {
                if self.attached && at_entry(tid) {
                    self.on_entry(tid);
                } else {
                    self.on_exit(tid);
                    self.resume(tid, 0);
                }
            }
            // A signal on its way to the program: delivered as it came.
            _ => self.resume(tid, sig),
        }
    }

    /// The errno a failed execve left in the pipe.
    fn exec_errno(&mut self) -> i32 {
        let mut b = [0u8; 4];
        // SAFETY: reading 4 bytes into our own buffer.
        let n = unsafe { libc::read(self.errpipe, b.as_mut_ptr().cast(), 4) };
        if n == 4 {
            i32::from_ne_bytes(b)
        } else {
            libc::ENOEXEC
        }
    }

    fn on_entry(&mut self, tid: i32) {
        let next = match (tracee::regs(tid), self.threads.get(&tid).map(|t| t.pid)) {
            (Some(regs), Some(pid)) => match self.procs.get_mut(&pid) {
                Some(p) if p.ring.is_some() => {
                    let ring = p.ring;
                    let mut c = Calls {
                        fds: &mut p.fds,
                        t: &p.process,
                        pid,
                        events: self.events,
                    };
                    c.entry(&regs, &mut |r, data| put(ring, pid, tid, r, data))
                }
                _ => Next::Run,
            },
            _ => Next::Run,
        };
        match next {
            Next::Run => self.resume(tid, 0),
            Next::Exit(pending) => {
                if let Some(t) = self.threads.get_mut(&tid) {
                    t.pending = Some(pending);
                }
                ptrace(libc::PTRACE_SYSCALL, tid, 0);
            }
        }
    }

    fn on_exit(&mut self, tid: i32) {
        let Some(t) = self.threads.get_mut(&tid) else {
            return;
        };
        let Some(pending) = t.pending.take() else {
            return;
        };
        let pid = t.pid;
        let Some(regs) = tracee::regs(tid) else {
            return;
        };
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        let ring = p.ring;
        let mut c = Calls {
            fds: &mut p.fds,
            t: &p.process,
            pid,
            events: self.events,
        };
        c.exit(&pending, regs.ret, &mut |r, data| {
            put(ring, pid, tid, r, data)
        });
    }

    /// `tid` forked, vforked or cloned (`event`): follow the new task.
    fn on_new(&mut self, tid: i32, event: i32) {
        let new = event_msg(tid) as i32;
        let Some(parent_pid) = self.threads.get(&tid).map(|t| t.pid) else {
            return;
        };
        let thread = event == libc::PTRACE_EVENT_CLONE
            && self.clone_flags(tid) & libc::CLONE_THREAD as u64 != 0;
        if thread {
            if let Some(p) = self.procs.get_mut(&parent_pid) {
                p.threads += 1;
            }
        } else {
            let (fds, parent_ring, parent_silent) = match self.procs.get(&parent_pid) {
                Some(p) => (p.fds.clone(), p.ring, p.silent),
                None => (Fds::default(), None, true),
            };
            let silent = parent_silent || !self.follow;
            let ring = if silent {
                None
            } else {
                let mut fork = Record::new(Kind::Fork);
                fork.ret = i64::from(new);
                put(parent_ring, parent_pid, tid, &fork, Payload::Inline);
                let ring = self.region.claim(new);
                let mut start = Record::new(Kind::Start);
                start.errno = crate::record::BY_TRACER;
                start.arg0 = i64::from(parent_pid);
                start.arg1 = 1;
                put(ring, new, new, &start, Payload::Inline);
                ring
            };
            self.procs.insert(
                new,
                Proc {
                    ring,
                    silent,
                    fds,
                    process: Process::open(new),
                    threads: 1,
                },
            );
        }
        self.threads.insert(
            new,
            Thread {
                pid: if thread { parent_pid } else { new },
                started: false,
                pending: None,
            },
        );
        if self.early.remove(&new) {
            if let Some(t) = self.threads.get_mut(&new) {
                t.started = true;
            }
            self.resume(new, 0);
        }
    }

    /// The clone flags of the clone or clone3 call `tid` is stopped in.
    fn clone_flags(&self, tid: i32) -> u64 {
        let Some(r) = tracee::regs(tid) else { return 0 };
        if r.nr == libc::SYS_clone3 {
            let pid = self.threads.get(&tid).map_or(tid, |t| t.pid);
            let mut b = [0u8; 8];
            let read = match self.procs.get(&pid) {
                Some(p) => p.process.read(r.args[0], &mut b),
                None => Process::open(pid).read(r.args[0], &mut b),
            };
            return if read == 8 { u64::from_ne_bytes(b) } else { 0 };
        }
        r.args[0]
    }

    /// Process `tid` replaced its image: a new Start, and the sockets that survived the exec.
    fn on_exec(&mut self, tid: i32) {
        let former = event_msg(tid) as i32;
        if former != tid {
            // A thread other than the leader exec'd and took the leader's pid.
            self.threads.remove(&former);
        }
        let pid = tid;
        if let Some(t) = self.threads.get_mut(&tid) {
            t.pid = pid;
            t.pending = None;
        }
        self.threads.retain(|&k, t| t.pid != pid || k == tid);
        let region = self.region;
        let p = self.procs.entry(pid).or_insert_with(|| Proc {
            ring: region.claim(pid),
            silent: false,
            fds: Fds::default(),
            process: Process::open(pid),
            threads: 1,
        });
        p.threads = 1;
        if !p.silent {
            scan(p, pid, tid, self.events);
        }
    }

    /// Thread `tid` is gone (reaped). The last thread of a process ends its records.
    fn gone(&mut self, tid: i32) {
        self.early.remove(&tid);
        let Some(t) = self.threads.remove(&tid) else {
            return;
        };
        if self.attached {
            attach::poke_other(tid, self.threads.keys().next().copied());
        }
        let pid = t.pid;
        let last = match self.procs.get_mut(&pid) {
            Some(p) => {
                p.threads = p.threads.saturating_sub(1);
                p.threads == 0 || tid == pid
            }
            None => false,
        };
        if last {
            if let Some(p) = self.procs.remove(&pid) {
                put(p.ring, pid, tid, &Record::new(Kind::Exit), Payload::Inline);
            }
        }
    }
}

/// A process image the tracer meets (after an exec, or attached): its Start, then each internet
/// socket it holds, then Scanned.
fn scan(p: &mut Proc, pid: i32, tid: i32, events: bool) {
    p.fds.clear();
    let mut start = Record::new(Kind::Start);
    start.errno = crate::record::BY_TRACER;
    let name = if events {
        program_name(pid)
    } else {
        Vec::new()
    };
    start.data = &name;
    put(p.ring, pid, tid, &start, Payload::Inline);
    for fd in tracee::descriptors(pid) {
        if tracee::socket_inode(pid, fd).is_none() {
            continue;
        }
        let Some(info) = p.process.socket(fd) else {
            continue;
        };
        let sock = match info.ty {
            _ if info.domain != libc::AF_INET && info.domain != libc::AF_INET6 => continue,
            libc::SOCK_STREAM => Sock::Tcp,
            libc::SOCK_DGRAM => Sock::Udp,
            _ => continue,
        };
        p.fds.insert(fd, sock);
        let mut d = Record::new(Kind::Discovered);
        d.fd = fd;
        d.arg0 = i64::from(info.ty);
        d.arg1 = info.inode as i64;
        d.ret = i64::from(info.listening);
        d.local = info.local;
        d.addr = info.peer;
        put(p.ring, pid, tid, &d, Payload::Inline);
    }
    put(
        p.ring,
        pid,
        tid,
        &Record::new(Kind::Scanned),
        Payload::Inline,
    );
}

/// The program's name for the event traces' folders: the base name of its `argv[0]`.
fn program_name(pid: i32) -> Vec<u8> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let arg0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    let base = arg0.rsplit(|&b| b == b'/').next().unwrap_or_default();
    base[..base.len().min(255)].to_vec()
}

/// Write `r` (with its payload `data`) for thread `tid` of process `pid` into its process's
/// ring.
fn put(ring: Option<Ring>, pid: i32, tid: i32, r: &Record, data: Payload) {
    let Some(ring) = ring else { return };
    let mut r = *r;
    r.pid = pid;
    r.tid = tid;
    sink::emit(ring, &r, &data);
}
