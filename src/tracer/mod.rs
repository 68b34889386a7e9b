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

pub mod calls;
pub mod filter;
pub mod sink;
pub mod tracee;

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::mpsc;

use crate::record::{Kind, Record};
use crate::ring::{Region, Ring};
use calls::{Calls, Fds, Next, Pending, Sock};
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
}

const OPTIONS: libc::c_int = libc::PTRACE_O_TRACESYSGOOD
    | libc::PTRACE_O_TRACEFORK
    | libc::PTRACE_O_TRACEVFORK
    | libc::PTRACE_O_TRACECLONE
    | libc::PTRACE_O_TRACEEXEC
    | libc::PTRACE_O_TRACESECCOMP
    | libc::PTRACE_O_EXITKILL;

/// Start `spec` under the tracer, whose records go into `region`. Returns once the program's
/// image is running (its exec succeeded) or could not start.
pub fn launch(spec: Spec, region: Region) -> Result<Running, LaunchError> {
    let (started_tx, started_rx) = mpsc::channel();
    let (status_tx, status_rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("netintercept-tracer".into())
        .spawn(move || {
            // ptrace requests must all come from the thread that seized the tracees.
            let mut t = match start(&spec) {
                Ok((pid, errpipe)) => Tracer::new(pid, region, spec.events, errpipe),
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                    return;
                }
            };
            t.run(Some(started_tx), &status_tx);
        });
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

/// Fork the command, seize it, and let it exec under the filter. Returns its pid and the read
/// end of the pipe on which a failed execve leaves its errno.
fn start(spec: &Spec) -> Result<(i32, i32), LaunchError> {
    let prog = filter::program().map_err(LaunchError::Tracer)?;
    let ptrs = |v: &[CString]| {
        let mut p: Vec<*const libc::c_char> = v.iter().map(|s| s.as_ptr()).collect();
        p.push(std::ptr::null());
        p
    };
    let argv = ptrs(&spec.argv);
    let envp = ptrs(&spec.envp);
    let mut sync = [-1; 2];
    let mut errp = [-1; 2];
    // SAFETY: pipe2 writes two descriptors into each array.
    if unsafe { libc::pipe2(sync.as_mut_ptr(), libc::O_CLOEXEC) } != 0
        // SAFETY: as above.
        || unsafe { libc::pipe2(errp.as_mut_ptr(), libc::O_CLOEXEC) } != 0
    {
        return Err(LaunchError::Tracer(format!(
            "cannot make a pipe: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: the child only makes async-signal-safe calls (read, write, dup2, prctl, seccomp,
    // execve, _exit) on memory prepared before the fork; it never returns.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: see above; every pointer was built before the fork and is still valid.
        unsafe { child(spec, &prog, sync, errp, &argv, &envp) }
    }
    crate::sys::close(sync[0]);
    crate::sys::close(errp[1]);
    if pid < 0 {
        crate::sys::close(sync[1]);
        crate::sys::close(errp[0]);
        return Err(LaunchError::Tracer(format!(
            "cannot fork: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: seizing our own child, which waits on the sync pipe.
    let seized = unsafe {
        libc::ptrace(
            libc::PTRACE_SEIZE,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            OPTIONS as usize as *mut libc::c_void,
        )
    };
    if seized != 0 {
        let e = std::io::Error::last_os_error();
        crate::sys::close(sync[1]);
        crate::sys::close(errp[0]);
        // The child reads EOF and leaves; reap it.
        let mut st = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        return Err(LaunchError::Tracer(format!(
            "the kernel refused to trace the program ({e}){}",
            if e.raw_os_error() == Some(libc::EPERM) {
                ": ptrace is not allowed here (a container's seccomp policy, or \
                 kernel.yama.ptrace_scope = 3); use --backend preload"
            } else {
                ""
            }
        )));
    }
    let _ = crate::sys::write_all(sync[1], b"g");
    crate::sys::close(sync[1]);
    Ok((pid, errp[0]))
}

/// The forked child: wait until seized, install the filter, exec.
///
/// # Safety
/// Called only in the child of `fork`, with pointers valid there.
unsafe fn child(
    spec: &Spec,
    prog: &seccompiler::BpfProgram,
    sync: [i32; 2],
    errp: [i32; 2],
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ! {
    let fail = |e: i32| -> ! {
        let b = e.to_ne_bytes();
        // SAFETY: writing our own 4 bytes to the pipe, then leaving without atexit handlers.
        unsafe {
            libc::write(errp[1], b.as_ptr().cast(), 4);
            libc::_exit(127)
        }
    };
    // SAFETY: plain descriptor calls on our own descriptors.
    unsafe {
        libc::close(sync[1]);
        libc::close(errp[0]);
        if spec.stdout_to_stderr {
            libc::dup2(2, 1);
        }
    }
    let mut b = 0u8;
    loop {
        // SAFETY: reading one byte into our own variable.
        let n = unsafe { libc::read(sync[0], (&mut b as *mut u8).cast(), 1) };
        if n == 1 {
            break;
        }
        // SAFETY: reading errno.
        if n < 0 && unsafe { *libc::__errno_location() } == libc::EINTR {
            continue;
        }
        // The tracer could not seize us: run nothing untraced.
        // SAFETY: leaving at once.
        unsafe { libc::_exit(127) };
    }
    if seccompiler::apply_filter(prog).is_err() {
        // SAFETY: reading errno.
        fail(unsafe { *libc::__errno_location() });
    }
    // SAFETY: null-terminated arrays of C strings built before the fork.
    unsafe { libc::execve(spec.path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    // SAFETY: reading errno.
    fail(unsafe { *libc::__errno_location() })
}

/// One traced process.
struct Proc {
    ring: Option<Ring>,
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
    root: i32,
    events: bool,
    /// The pipe a failed execve of the command writes its errno to (-1 once read).
    errpipe: i32,
    procs: HashMap<i32, Proc>,
    threads: HashMap<i32, Thread>,
    /// New tracees stopped before their parent's fork event named them.
    early: HashSet<i32>,
    scratch: Vec<u8>,
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

const STOP_SIGNALS: [i32; 4] = [libc::SIGSTOP, libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU];

impl Tracer {
    fn new(root: i32, region: Region, events: bool, errpipe: i32) -> Tracer {
        let mut threads = HashMap::new();
        threads.insert(
            root,
            Thread {
                pid: root,
                started: true,
                pending: None,
            },
        );
        Tracer {
            region,
            root,
            events,
            errpipe,
            procs: HashMap::new(),
            threads,
            early: HashSet::new(),
            scratch: Vec::new(),
        }
    }

    fn run(
        &mut self,
        mut started: Option<mpsc::Sender<Result<i32, LaunchError>>>,
        status: &mpsc::Sender<ExitStatus>,
    ) {
        loop {
            let mut st = 0;
            // SAFETY: waiting for any of our tracees or children.
            let tid = unsafe { libc::waitpid(-1, &mut st, libc::__WALL) };
            if tid < 0 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                break;
            }
            if libc::WIFEXITED(st) || libc::WIFSIGNALED(st) {
                if tid == self.root {
                    if let Some(tx) = started.take() {
                        let _ = tx.send(Err(LaunchError::Exec(self.exec_errno())));
                        // The command never ran: there is nothing to report.
                    } else {
                        let _ = status.send(ExitStatus::from_raw(st));
                    }
                }
                self.gone(tid);
                continue;
            }
            if !libc::WIFSTOPPED(st) {
                continue;
            }
            let sig = libc::WSTOPSIG(st);
            let event = (st >> 16) & 0xff;
            let Some(th) = self.threads.get_mut(&tid) else {
                // A new tracee whose parent's event has not been seen: it waits for it.
                self.early.insert(tid);
                continue;
            };
            if !th.started {
                th.started = true;
                ptrace(libc::PTRACE_CONT, tid, 0);
                continue;
            }
            match event {
                libc::PTRACE_EVENT_SECCOMP => self.on_entry(tid),
                libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK | libc::PTRACE_EVENT_CLONE => {
                    self.on_new(tid, event);
                    ptrace(libc::PTRACE_CONT, tid, 0);
                }
                libc::PTRACE_EVENT_EXEC => {
                    self.on_exec(tid);
                    if let Some(tx) = started.take() {
                        let _ = tx.send(Ok(self.root));
                    }
                    ptrace(libc::PTRACE_CONT, tid, 0);
                }
                libc::PTRACE_EVENT_STOP => {
                    if STOP_SIGNALS.contains(&sig) {
                        // A group-stop: it lasts until SIGCONT, as untraced.
                        ptrace(libc::PTRACE_LISTEN, tid, 0);
                    } else {
                        ptrace(libc::PTRACE_CONT, tid, 0);
                    }
                }
                0 if sig == libc::SIGTRAP | 0x80 => {
                    self.on_exit(tid);
                    ptrace(libc::PTRACE_CONT, tid, 0);
                }
                // A signal on its way to the program: delivered as it came.
                _ => {
                    ptrace(libc::PTRACE_CONT, tid, sig as usize);
                }
            }
        }
        if self.errpipe >= 0 {
            crate::sys::close(self.errpipe);
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
                Some(p) => {
                    let ring = p.ring;
                    let mut c = Calls {
                        fds: &mut p.fds,
                        t: &p.process,
                        pid,
                        events: self.events,
                        scratch: &mut self.scratch,
                    };
                    c.entry(&regs, &mut |r| put(ring, pid, tid, r))
                }
                None => Next::Run,
            },
            _ => Next::Run,
        };
        match next {
            Next::Run => {
                ptrace(libc::PTRACE_CONT, tid, 0);
            }
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
            scratch: &mut self.scratch,
        };
        c.exit(&pending, regs.ret, &mut |r| put(ring, pid, tid, r));
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
            self.threads.insert(
                new,
                Thread {
                    pid: parent_pid,
                    started: false,
                    pending: None,
                },
            );
        } else {
            let (fds, parent_ring) = match self.procs.get(&parent_pid) {
                Some(p) => (p.fds.clone(), p.ring),
                None => (Fds::default(), None),
            };
            let mut fork = Record::new(Kind::Fork);
            fork.ret = i64::from(new);
            put(parent_ring, parent_pid, tid, &fork);
            let ring = self.region.claim(new);
            let mut start = Record::new(Kind::Start);
            start.arg0 = i64::from(parent_pid);
            start.arg1 = 1;
            put(ring, new, new, &start);
            self.procs.insert(
                new,
                Proc {
                    ring,
                    fds,
                    process: Process::open(new),
                    threads: 1,
                },
            );
            self.threads.insert(
                new,
                Thread {
                    pid: new,
                    started: false,
                    pending: None,
                },
            );
        }
        if self.early.remove(&new) {
            if let Some(t) = self.threads.get_mut(&new) {
                t.started = true;
            }
            ptrace(libc::PTRACE_CONT, new, 0);
        }
    }

    /// The clone flags of the clone or clone3 call `tid` is stopped in.
    fn clone_flags(&self, tid: i32) -> u64 {
        let Some(r) = tracee::regs(tid) else { return 0 };
        if r.nr == libc::SYS_clone3 {
            let pid = self.threads.get(&tid).map_or(tid, |t| t.pid);
            let mut b = [0u8; 8];
            if Process::open(pid).read(r.args[0], &mut b) == 8 {
                return u64::from_ne_bytes(b);
            }
            return 0;
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
        let p = self.procs.entry(pid).or_insert_with(|| Proc {
            ring: self.region.claim(pid),
            fds: Fds::default(),
            process: Process::open(pid),
            threads: 1,
        });
        p.threads = 1;
        p.fds.clear();
        let mut start = Record::new(Kind::Start);
        let name = if self.events {
            program_name(pid)
        } else {
            Vec::new()
        };
        start.data = &name;
        put(p.ring, pid, tid, &start);
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
            put(p.ring, pid, tid, &d);
        }
        put(p.ring, pid, tid, &Record::new(Kind::Scanned));
    }

    /// Thread `tid` is gone (reaped). The last thread of a process ends its records.
    fn gone(&mut self, tid: i32) {
        self.early.remove(&tid);
        let Some(t) = self.threads.remove(&tid) else {
            return;
        };
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
                put(p.ring, pid, tid, &Record::new(Kind::Exit));
            }
        }
    }
}

/// The program's name for the event traces' folders: the base name of its `argv[0]`.
fn program_name(pid: i32) -> Vec<u8> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let arg0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    let base = arg0.rsplit(|&b| b == b'/').next().unwrap_or_default();
    base[..base.len().min(255)].to_vec()
}

/// Write `r` for thread `tid` of process `pid` into its process's ring.
fn put(ring: Option<Ring>, pid: i32, tid: i32, r: &Record) {
    let Some(ring) = ring else { return };
    let mut r = *r;
    r.pid = pid;
    r.tid = tid;
    sink::emit(ring, &r);
}
