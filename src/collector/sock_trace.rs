//! Per-socket event traces in tcpsnitch's format (`--events DIR`, NETINTERCEPT_EVENTS).
//!
//! DIR holds one folder per traced process, `<program>_<NNN>` (a three-digit counter in order of
//! appearance across the run; a forked child's folder is made at the fork, so it sorts after
//! its parent's), with one file per internet socket, `0.json`, `1.json`, … in the order the
//! process got them, and a `logs.txt`. Each line of a socket's file is one complete JSON object
//! for one call, with tcpsnitch's keys (`type`, `timestamp_usec`, `return_value`, `success`,
//! `errno` when it failed, `thread_id`, `fake_call`, `details`) and one of ours, `frames`: the
//! capture's frame numbers (1-based, in the capture file of the event's process) of the packets
//! the call produced.
//!
//! Like tcpsnitch, a dup makes a new socket trace: the call is written in the original's trace
//! and again as the first event of the new one, with `sock_info`; a forked child's inherited
//! socket starts with a `forked_socket` event (`fake_call: true`). An accepted connection is a
//! new trace whose first event is the `accept`.
//!
//! With `-c` (tcpsnitch's option), each socket's packets also go to a `<n>.pcap` beside its
//! `<n>.json`: the packets the capture holds whose call was made on that socket.
//!
//! poll and ppoll give one event per traced socket in their set; select and pselect one per
//! traced socket in their *returned* sets, with `requested_events` holding what those prove
//! was asked (the sets asked with are overwritten by the call, and reading them before it
//! could fault where the kernel returns EFAULT). epoll_wait's events name sockets through the
//! data the program gave epoll_ctl: a socket registered with data another registration of the
//! same epoll shares is not told apart.
//!
//! Nothing here runs in the traced program: the records are the ones the packets are made from.

use crate::fast_hash::HashMap;
use std::ffi::OsString;
use std::fmt::{self, Write as _};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::quoted::{quoted, PATH_CHARS};
use crate::record::{call_name, Kind, Record};

/// The event traces of a run.
pub struct SockTraces {
    dir: PathBuf,
    /// Realtime minus monotonic: records are stamped on the monotonic clock.
    clock_offset_ns: i128,
    /// The program name of a process (tcpsnitch names folders after it), when the caller
    /// did not know it.
    name_of: fn(i32) -> OsString,
    /// Names the caller told (see [`SockTraces::name`]).
    names: HashMap<i32, OsString>,
    /// The buffers of the vectored call each thread is making, by (pid, tid): its IoVec
    /// record comes just before the call's own.
    vectors: HashMap<(i32, i32), Vector>,
    /// Closes waiting for their result (a Closed record from the same thread), by (pid, tid):
    /// the socket's trace, the Close record and the frames it produced.
    closing: HashMap<(i32, i32), (Sock, Record<'static>, Vec<u64>)>,
    next_folder: u32,
    procs: HashMap<i32, Proc>,
    /// The directory could not be written (said once; the capture goes on).
    broken: bool,
    /// Also write each socket's packets to `<n>.pcap` (`-c`).
    pcaps: bool,
    /// The frames of the sendmmsg or recvmmsg each thread is making, by (pid, tid): its Mmsg
    /// record comes after the call's Send or Recv records and writes the one event.
    mmsg_frames: HashMap<(i32, i32), Vec<u64>>,
}

#[derive(Default)]
struct Proc {
    folder: Option<PathBuf>,
    log: Option<BufWriter<File>>,
    next_index: u32,
    socks: HashMap<i32, Sock>,
    /// Each epoll descriptor's registrations of our sockets: the data the program gave, and the
    /// socket it stands for.
    epolls: HashMap<i32, HashMap<u64, i32>>,
}

struct Sock {
    /// Its file's number in its process's folder.
    index: u32,
    info: SockInfo,
    file: Option<TraceFile>,
    /// Its packets (`-c`).
    pcap: Option<PcapFile>,
}

/// A socket's `<n>.pcap`, opened only to append what is pending, as its trace.
struct PcapFile {
    path: PathBuf,
    pending: Vec<u8>,
}

/// What an IoVec record said of a vectored call.
struct Vector {
    fd: i32,
    count: i64,
    sizes: Vec<i64>,
    /// The control data's length; -1 for writev and readv.
    control: i64,
    first_cmsg: Option<(i32, i32)>,
    msg_flags: i32,
}

impl Vector {
    fn of(r: &Record) -> Vector {
        let first_cmsg =
            (r.ssl >> 63 == 1).then_some((r.ssl as u32 as i32, (r.ssl >> 32) as i32 & 0x7fff_ffff));
        Vector {
            fd: r.fd,
            count: r.arg0,
            sizes: r
                .data
                .chunks_exact(8)
                .map(|c| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    u64::from_ne_bytes(b) as i64
                })
                .collect(),
            control: r.arg1,
            first_cmsg,
            msg_flags: r.ret as i32,
        }
    }

    /// tcpsnitch's `iovec`.
    fn iovec(&self) -> J {
        J::Obj(vec![
            ("iovec_count", J::Int(self.count)),
            (
                "iovec_sizes",
                J::Arr(self.sizes.iter().map(|&n| J::Int(n)).collect()),
            ),
        ])
    }

    /// tcpsnitch's `msghdr`: the returned flags (only when there are some), the buffers, the
    /// control data's length and its first message.
    fn msghdr(&self) -> J {
        let mut m = Vec::new();
        if self.msg_flags != 0 {
            m.push(("flags", recv_flags(self.msg_flags.into())));
        }
        m.push(("iovec", self.iovec()));
        m.push(("control_data_len", J::Int(self.control.max(0))));
        let first = self.first_cmsg.map(|(level, ty)| {
            J::Obj(vec![
                ("cmsg_level", J::Int(level.into())),
                ("cmsg_type", J::Int(ty.into())),
            ])
        });
        m.push(("control_data", J::Arr(first.into_iter().collect())));
        J::Obj(m)
    }
}

/// A socket's file, opened only to append what is pending: a server with thousands of open
/// connections must not cost the collector a descriptor each.
struct TraceFile {
    path: PathBuf,
    pending: String,
}

/// Pending bytes past which a trace is written out at once.
const PENDING_MAX: usize = 64 * 1024;

/// What `socket()` said about a socket, for `sock_info`, and its addresses as the records told
/// them (for getsockname and getpeername, whose caller's buffer is not read).
#[derive(Clone, Copy)]
struct SockInfo {
    domain: i32,
    /// With SOCK_NONBLOCK and SOCK_CLOEXEC.
    ty: i32,
    protocol: i32,
    local: Option<SocketAddr>,
    peer: Option<SocketAddr>,
}

impl Proc {
    /// Socket `fd` is closed: the kernel drops it from every epoll set.
    fn drop_from_epolls(&mut self, fd: i32) {
        for set in self.epolls.values_mut() {
            set.retain(|_, f| *f != fd);
        }
    }
}

impl SockTraces {
    /// Traces under `dir`, created at the first socket; `name_of` names a process's folder.
    pub fn new(dir: PathBuf, clock_offset_ns: i128, name_of: fn(i32) -> OsString) -> SockTraces {
        SockTraces {
            dir,
            clock_offset_ns,
            name_of,
            names: HashMap::default(),
            vectors: HashMap::default(),
            closing: HashMap::default(),
            next_folder: 0,
            procs: HashMap::default(),
            broken: false,
            pcaps: false,
            mmsg_frames: HashMap::default(),
        }
    }

    /// Also write each socket's packets beside its trace (`-c`).
    pub fn with_pcaps(mut self, on: bool) -> SockTraces {
        self.pcaps = on;
        self
    }

    /// A packet made by a call on socket `fd` of `pid`, stamped `ts` since the Unix epoch: into
    /// the socket's pcap. False when `fd` is not (or not yet) a traced socket of `pid`.
    pub fn packet(&mut self, pid: i32, fd: i32, ts: std::time::Duration, bytes: &[u8]) -> bool {
        let Some(sock) = self.procs.get_mut(&pid).and_then(|p| p.socks.get_mut(&fd)) else {
            return false;
        };
        if let Some(f) = &mut sock.pcap {
            synth::pcap_record(ts, bytes, &mut f.pending);
            if f.pending.len() >= PENDING_MAX {
                flush_pcap(&mut sock.pcap);
            }
        }
        true
    }

    /// Process `pid` runs the executable `exe`, as learnt while it was alive (a short-lived
    /// process may be gone when its first socket's folder is made).
    pub fn name(&mut self, pid: i32, exe: &std::ffi::OsStr) {
        if !exe.is_empty() {
            self.names.insert(pid, exe.to_os_string());
        }
    }

    /// Write the event(s) of record `r`, which produced capture frames `frames`.
    pub fn apply(&mut self, r: &Record, frames: &[u64]) {
        let pid = r.pid;
        match r.kind {
            // A new image (exec) starts a new folder, as tcpsnitch's library starts again.
            Kind::Start if r.arg1 == 0 => self.end_process(pid, "a new program image started"),
            Kind::Start => self.fork(r.arg0 as i32, pid, r),
            Kind::Fork => self.fork(pid, r.ret as i32, r),
            Kind::Detached => self.end_process(pid, "netintercept detached from the process"),
            Kind::Exit => {
                self.end_process(pid, "the process exited");
                self.names.remove(&pid);
            }
            Kind::Socket => {
                let info = SockInfo {
                    ty: r.arg1 as i32,
                    domain: (r.arg1 >> 32) as u16 as i32,
                    protocol: (r.arg1 >> 48) as u16 as i32,
                    local: None,
                    peer: None,
                };
                let details = vec![("sock_info", info.json())];
                self.open(pid, r.ret as i32, info, r, "socket", false, details, frames);
            }
            Kind::Accept => {
                let listener = self.procs.get(&pid).and_then(|p| p.socks.get(&r.fd));
                let Some(l) = listener else { return };
                // The listener's domain and protocol; the type's flags are accept4's.
                let flags = r.arg0 as i32 & (libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
                let info = SockInfo {
                    ty: (l.info.ty & 0xf) | flags,
                    local: r.local,
                    peer: r.addr,
                    ..l.info
                };
                let mut details = vec![("addr", addr_json(r.addr))];
                if call_name(r.call) == "accept4" {
                    details.push(("flags", J::Int(r.arg0)));
                }
                details.push(("sock_info", info.json()));
                let ty = event_type(r.call);
                self.open(pid, r.ret as i32, info, r, ty, false, details, frames);
            }
            Kind::Dup => self.dup(r, frames),
            // A socket the process had when it was loaded (inherited over exec or from an
            // untraced parent): tcpsnitch's ghost socket, a fake first event with `sock_info`
            // as the kernel tells it.
            Kind::Discovered => {
                let ty = r.arg0 as i32;
                let info = SockInfo {
                    domain: match r.local {
                        Some(SocketAddr::V6(_)) => libc::AF_INET6,
                        _ => libc::AF_INET,
                    },
                    ty,
                    // What SO_PROTOCOL says of an internet stream or datagram socket.
                    protocol: if ty == libc::SOCK_STREAM {
                        libc::IPPROTO_TCP
                    } else {
                        libc::IPPROTO_UDP
                    },
                    local: r.local,
                    peer: r.addr,
                };
                let fake = Record {
                    ret: r.fd.into(),
                    ..*r
                };
                let details = vec![("sock_info", info.json())];
                self.open(
                    pid,
                    r.fd,
                    info,
                    &fake,
                    "ghost_socket",
                    true,
                    details,
                    frames,
                );
            }
            // The number is free at once (another socket may take it); the event waits for
            // the call's result.
            Kind::Close => {
                let sock = self.procs.get_mut(&pid).and_then(|p| {
                    let sock = p.socks.remove(&r.fd);
                    if sock.is_some() {
                        p.drop_from_epolls(r.fd);
                    }
                    sock
                });
                if let Some(sock) = sock {
                    let held = (sock, Record { data: &[], ..*r }, frames.to_vec());
                    if let Some(earlier) = self.closing.insert((pid, r.tid), held) {
                        self.closed(earlier, None);
                    }
                }
            }
            Kind::Closed => {
                let key = (pid, r.tid);
                if self.closing.get(&key).is_some_and(|(_, c, _)| c.fd == r.fd) {
                    if let Some(held) = self.closing.remove(&key) {
                        self.closed(held, Some(r));
                    }
                }
            }
            Kind::CloseRange => {
                let mut fds: Vec<i32> = self
                    .procs
                    .get(&pid)
                    .map(|p| {
                        p.socks
                            .keys()
                            .copied()
                            .filter(|&f| (r.arg0..=r.arg1).contains(&i64::from(f)))
                            .collect()
                    })
                    .unwrap_or_default();
                fds.sort_unstable();
                for fd in fds {
                    let one = Record { fd, ..*r };
                    self.event(&one, frames);
                    self.forget(pid, fd);
                }
            }
            // The numbers now name something else (a pipe, a file): their sockets were closed
            // where no hook saw it.
            Kind::NewFd => {
                for fd in [r.ret, r.arg0] {
                    self.forget(pid, fd as i32);
                    if let Some(p) = self.procs.get_mut(&pid) {
                        p.epolls.remove(&(fd as i32));
                    }
                }
            }
            Kind::IoVec => {
                self.vectors.insert((pid, r.tid), Vector::of(r));
            }
            // One event per message would not be tcpsnitch's: the call's Mmsg record writes it.
            Kind::Send | Kind::Recv if matches!(event_type(r.call), "sendmmsg" | "recvmmsg") => {
                self.vectors.remove(&(pid, r.tid));
                self.mmsg_frames
                    .entry((pid, r.tid))
                    .or_default()
                    .extend_from_slice(frames);
            }
            Kind::Mmsg => {
                let mut all = self.mmsg_frames.remove(&(pid, r.tid)).unwrap_or_default();
                all.extend_from_slice(frames);
                if let Some(details) = mmsg_details(r) {
                    let line = self.line(r, event_type(r.call), false, details, &all);
                    self.write(pid, r.fd, &line);
                }
            }
            Kind::Ready => {
                if let Some(details) = ready_details(r) {
                    let line = self.line(r, event_type(r.call), false, details, frames);
                    self.write(pid, r.fd, &line);
                }
            }
            Kind::EpollCtl => self.epoll_ctl(r, frames),
            Kind::EpollWait => self.epoll_wait(r, frames),
            Kind::SockCall => {
                let details = match event_type(r.call) {
                    "isfdtype" => vec![("fdtype", J::Int(r.arg0))],
                    "fdopen" => {
                        vec![("mode", J::Str(String::from_utf8_lossy(r.data).into_owned()))]
                    }
                    _ => Vec::new(),
                };
                let line = self.line(r, event_type(r.call), false, details, frames);
                self.write(pid, r.fd, &line);
            }
            Kind::Connect
            | Kind::Bind
            | Kind::Listen
            | Kind::Shutdown
            | Kind::SoError
            | Kind::Send
            | Kind::Recv
            | Kind::SockOpt
            | Kind::FdControl => {
                self.learn_addresses(r);
                self.event(r, frames)
            }
            Kind::SockName => {
                let Some(info) = self.sock_info(pid, r.fd) else {
                    return;
                };
                let addr = match event_type(r.call) {
                    "getpeername" => info.peer,
                    _ => info.local,
                };
                let details = if r.ret == 0 {
                    opt_addr(addr)
                } else {
                    Vec::new()
                };
                let line = self.line(r, event_type(r.call), false, details, frames);
                self.write(pid, r.fd, &line);
            }
            _ => {}
        }
    }

    /// An event the collector made itself, from outside the program (a `tcp_info` sample, a
    /// `tcp_event`), on the trace of socket `fd` of `pid` when it has one: `fake_call` true,
    /// return value 0, as tcpsnitch writes its samples.
    pub(super) fn collector_event(
        &mut self,
        at: (i32, i32, i32, u64),
        ty: &str,
        details: Vec<(&'static str, J)>,
    ) {
        let (pid, tid, fd, ts_ns) = at;
        let r = Record {
            pid,
            tid,
            fd,
            ts_ns,
            ..Record::new(Kind::Send)
        };
        let line = self.line(&r, ty, true, details, &[]);
        self.write(pid, fd, &line);
    }

    /// Write what is buffered (the collector is idle), so a trace is readable while it grows.
    pub fn flush(&mut self) {
        for p in self.procs.values_mut() {
            for s in p.socks.values_mut() {
                flush(&mut s.file);
                flush_pcap(&mut s.pcap);
            }
            if let Some(l) = &mut p.log {
                let _ = l.flush();
            }
        }
    }

    /// Close every file (the run is over).
    pub fn finish(&mut self) {
        let mut pids: Vec<i32> = self.procs.keys().copied().collect();
        pids.sort_unstable();
        for pid in pids {
            self.end_process(pid, "the run ended");
        }
    }

    /// Write a close's event, with its result when `result` (the Closed record) came, and end
    /// its trace.
    fn closed(&self, held: (Sock, Record<'static>, Vec<u64>), result: Option<&Record>) {
        let (mut sock, mut close, frames) = held;
        if let Some(res) = result {
            close.ret = res.ret;
            close.errno = res.errno;
        }
        let line = self.line(&close, event_type(close.call), false, Vec::new(), &frames);
        write_line(&mut sock.file, &line);
        flush(&mut sock.file);
        flush_pcap(&mut sock.pcap);
    }

    /// The event of `r` on its descriptor's trace, when that is a socket of ours.
    fn event(&mut self, r: &Record, frames: &[u64]) {
        let vector = match r.kind {
            Kind::Send | Kind::Recv => self
                .vectors
                .remove(&(r.pid, r.tid))
                .filter(|v| v.fd == r.fd),
            _ => None,
        };
        let Some(mut details) = details(r) else {
            return;
        };
        if let Some(v) = vector {
            match event_type(r.call) {
                "writev" | "readv" => details.push(("iovec", v.iovec())),
                "sendmsg" | "recvmsg" => details.push(("msghdr", v.msghdr())),
                _ => {}
            }
        }
        let line = self.line(r, event_type(r.call), false, details, frames);
        self.write(r.pid, r.fd, &line);
    }

    fn write(&mut self, pid: i32, fd: i32, line: &str) {
        if let Some(sock) = self.procs.get_mut(&pid).and_then(|p| p.socks.get_mut(&fd)) {
            write_line(&mut sock.file, line);
        }
    }

    fn sock_info(&self, pid: i32, fd: i32) -> Option<SockInfo> {
        self.procs.get(&pid)?.socks.get(&fd).map(|s| s.info)
    }

    /// What `r` tells of its socket's addresses: the kernel's answers the hooks recorded.
    fn learn_addresses(&mut self, r: &Record) {
        let Some(s) = self
            .procs
            .get_mut(&r.pid)
            .and_then(|p| p.socks.get_mut(&r.fd))
        else {
            return;
        };
        let info = &mut s.info;
        info.local = r.local.or(info.local);
        let connecting = r.ret == 0 || r.errno == libc::EINPROGRESS;
        match r.kind {
            Kind::Connect if connecting && r.arg0 == i64::from(libc::AF_UNSPEC) => info.peer = None,
            Kind::Connect if connecting => info.peer = r.addr.or(info.peer),
            _ => {}
        }
    }

    /// An epoll_ctl on one of our sockets: its event, and what epoll_wait will say of it.
    fn epoll_ctl(&mut self, r: &Record, frames: &[u64]) {
        let op = r.arg0 as u32 as i32;
        let epfd = (r.arg0 >> 32) as i32;
        if let Some(p) = self.procs.get_mut(&r.pid) {
            if p.socks.contains_key(&r.fd) && r.ret == 0 {
                let set = p.epolls.entry(epfd).or_default();
                match op {
                    libc::EPOLL_CTL_ADD | libc::EPOLL_CTL_MOD => {
                        set.retain(|_, f| *f != r.fd);
                        set.insert(r.ssl, r.fd);
                    }
                    _ => set.retain(|_, f| *f != r.fd),
                }
            }
        }
        let op_name = match op {
            libc::EPOLL_CTL_ADD => "EPOLL_CTL_ADD".to_string(),
            libc::EPOLL_CTL_MOD => "EPOLL_CTL_MOD".to_string(),
            libc::EPOLL_CTL_DEL => "EPOLL_CTL_DEL".to_string(),
            other => other.to_string(),
        };
        let details = vec![
            ("op", J::Str(op_name)),
            ("requested_events", epoll_events(r.arg1 as u32)),
        ];
        let line = self.line(r, event_type(r.call), false, details, frames);
        self.write(r.pid, r.fd, &line);
    }

    /// An epoll_wait's events: one event on each of our sockets it named.
    fn epoll_wait(&mut self, r: &Record, frames: &[u64]) {
        const SIZE: usize = std::mem::size_of::<libc::epoll_event>();
        let Some(set) = self.procs.get(&r.pid).and_then(|p| p.epolls.get(&r.fd)) else {
            return;
        };
        let ready: Vec<(i32, u32)> = r
            .data
            .chunks_exact(SIZE)
            .filter_map(|e| {
                // `struct epoll_event`: the events, then the data (packed on x86-64, so at
                // offset 4; at 8 elsewhere).
                let events = u32::from_ne_bytes(e.get(..4)?.try_into().ok()?);
                let data = u64::from_ne_bytes(e.get(SIZE - 8..)?.try_into().ok()?);
                Some((*set.get(&data)?, events))
            })
            .collect();
        for (fd, events) in ready {
            let details = vec![
                ("timeout", J::Int(r.arg0)),
                ("returned_events", epoll_events(events)),
            ];
            let one = Record { fd, ..*r };
            let line = self.line(&one, event_type(r.call), false, details, frames);
            self.write(r.pid, fd, &line);
        }
    }

    /// A dup: written in the original's trace, then as the first event of the copy's.
    fn dup(&mut self, r: &Record, frames: &[u64]) {
        let pid = r.pid;
        let new = r.ret as i32;
        let ty = event_type(r.call);
        // A dup2 onto a socket of ours closes it first, silently, as the kernel does.
        self.forget(pid, new);
        let Some(info) = self
            .procs
            .get(&pid)
            .and_then(|p| p.socks.get(&r.fd))
            .map(|s| s.info)
        else {
            return;
        };
        let mut details = Vec::new();
        match ty {
            "dup2" => details.push(("newfd", J::Int(new.into()))),
            "dup3" => {
                details.push(("newfd", J::Int(new.into())));
                // As tcpsnitch: the flags were exactly O_CLOEXEC.
                details.push(("O_CLOEXEC", J::Bool(r.arg0 == i64::from(libc::O_CLOEXEC))));
            }
            "fcntl" => {
                details.push(("cmd", J::Str(fcntl_cmd_name(r.arg0 as i32))));
                details.push(("arg", J::Int(r.arg1)));
            }
            _ => {}
        }
        let line = self.line(r, ty, false, details.clone(), frames);
        if let Some(sock) = self
            .procs
            .get_mut(&pid)
            .and_then(|p| p.socks.get_mut(&r.fd))
        {
            write_line(&mut sock.file, &line);
        }
        details.push(("sock_info", info.json()));
        self.open(pid, new, info, r, ty, false, details, &[]);
    }

    /// Process `child` was forked by `parent`: its inherited sockets get traces of their own in
    /// a folder of its own, each starting with a `forked_socket` event. Done once per child
    /// (the parent's Fork record and the child's Start may both say it).
    fn fork(&mut self, parent: i32, child: i32, r: &Record) {
        if self.procs.contains_key(&child) {
            return;
        }
        let mut inherited: Vec<(u32, i32, SockInfo)> = self
            .procs
            .get(&parent)
            .map(|p| {
                p.socks
                    .iter()
                    .map(|(&fd, s)| (s.index, fd, s.info))
                    .collect()
            })
            .unwrap_or_default();
        // The child shares its parent's epoll descriptors and their registrations.
        let epolls = self
            .procs
            .get(&parent)
            .map(|p| p.epolls.clone())
            .unwrap_or_default();
        self.procs.insert(
            child,
            Proc {
                epolls,
                ..Proc::default()
            },
        );
        // Until it executes another program, the child is its parent's.
        if let Some(n) = self.names.get(&parent).cloned() {
            self.names.entry(child).or_insert(n);
        }
        // In the order the parent got them.
        inherited.sort_unstable_by_key(|&(i, _, _)| i);
        for (_, fd, info) in inherited {
            let fake = Record {
                pid: child,
                tid: child,
                fd,
                ret: fd.into(),
                errno: 0,
                ..*r
            };
            let details = vec![("sock_info", info.json())];
            self.open(child, fd, info, &fake, "forked_socket", true, details, &[]);
        }
    }

    /// A new trace for socket `fd` of `pid`, whose first event is `ty` with `details`.
    #[allow(clippy::too_many_arguments)]
    fn open(
        &mut self,
        pid: i32,
        fd: i32,
        info: SockInfo,
        r: &Record,
        ty: &str,
        fake: bool,
        details: Vec<(&'static str, J)>,
        frames: &[u64],
    ) {
        self.forget(pid, fd);
        let line = self.line(r, ty, fake, details, frames);
        let folder = self.folder(pid);
        let p = self.procs.entry(pid).or_default();
        let index = p.next_index;
        p.next_index += 1;
        let mut file = folder.as_ref().and_then(|dir| {
            let path = dir.join(format!("{index}.json"));
            create(p, &path).then_some(TraceFile {
                path,
                pending: String::new(),
            })
        });
        write_line(&mut file, &line);
        let pcap = folder.filter(|_| self.pcaps).and_then(|dir| {
            let path = dir.join(format!("{index}.pcap"));
            create(p, &path).then(|| PcapFile {
                path,
                pending: synth::pcap_header(),
            })
        });
        p.socks.insert(
            fd,
            Sock {
                index,
                info,
                file,
                pcap,
            },
        );
    }

    /// The folder of `pid`, made at its first socket (`None` when it cannot be).
    fn folder(&mut self, pid: i32) -> Option<PathBuf> {
        if let Some(f) = self.procs.get(&pid).and_then(|p| p.folder.clone()) {
            return Some(f);
        }
        if self.broken {
            return None;
        }
        let name = match self.names.get(&pid) {
            Some(n) => n.clone(),
            None => (self.name_of)(pid),
        };
        let base = Path::new(&name)
            .file_name()
            .map(|n| n.to_os_string())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| OsString::from("unknown"));
        if let Err(e) = std::fs::create_dir_all(&self.dir) {
            return self.refuse(&e);
        }
        // A folder left by an earlier run is never written into: the next number is taken.
        let folder = loop {
            let mut n = base.clone();
            n.push(format!("_{:03}", self.next_folder));
            self.next_folder += 1;
            let path = self.dir.join(n);
            match std::fs::create_dir(&path) {
                Ok(()) => break path,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return self.refuse(&e),
            }
        };
        let log_file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(folder.join("logs.txt"))
            .ok()
            .map(BufWriter::new);
        let p = self.procs.entry(pid).or_default();
        p.folder = Some(folder.clone());
        p.log = log_file;
        log(
            p,
            &format!(
                "[INFO] pid {pid} ({}): one file per internet socket, in the order it got them",
                name.to_string_lossy()
            ),
        );
        Some(folder)
    }

    fn refuse(&mut self, e: &std::io::Error) -> Option<PathBuf> {
        eprintln!(
            "netintercept: cannot write event traces to {}: {e}",
            quoted(self.dir.as_os_str().as_bytes(), PATH_CHARS)
        );
        self.broken = true;
        None
    }

    /// Socket `fd` of `pid` is gone: its trace is complete.
    fn forget(&mut self, pid: i32, fd: i32) {
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        if let Some(mut s) = p.socks.remove(&fd) {
            flush(&mut s.file);
            flush_pcap(&mut s.pcap);
            p.drop_from_epolls(fd);
        }
    }

    fn end_process(&mut self, pid: i32, why: &str) {
        self.vectors.retain(|&(p, _), _| p != pid);
        self.mmsg_frames.retain(|&(p, _), _| p != pid);
        // A close whose result never came (its thread was killed): written as announced.
        let mut pending: Vec<(i32, i32)> = self
            .closing
            .keys()
            .filter(|k| k.0 == pid)
            .copied()
            .collect();
        pending.sort_unstable();
        for key in pending {
            if let Some(held) = self.closing.remove(&key) {
                self.closed(held, None);
            }
        }
        let Some(mut p) = self.procs.remove(&pid) else {
            return;
        };
        for s in p.socks.values_mut() {
            flush(&mut s.file);
            flush_pcap(&mut s.pcap);
        }
        if p.folder.is_some() {
            let line = format!("[INFO] pid {pid}: {why}; {} socket(s) traced", p.next_index);
            log(&mut p, &line);
        }
        if let Some(l) = &mut p.log {
            let _ = l.flush();
        }
    }

    /// One event as a JSON line, keys in tcpsnitch's order, then ours.
    fn line(
        &self,
        r: &Record,
        ty: &str,
        fake: bool,
        details: Vec<(&'static str, J)>,
        frames: &[u64],
    ) -> String {
        let usec = (r.ts_ns as i128 + self.clock_offset_ns).max(0) / 1000;
        // fdopen's return value is tcpsnitch's: 1 for a stream, 0 for none.
        let success = if r.kind == Kind::SockCall && event_type(r.call) == "fdopen" {
            r.ret != 0
        } else {
            r.ret >= 0
        };
        let mut fields = vec![
            ("type", J::Str(ty.to_string())),
            ("timestamp_usec", J::Int(usec as i64)),
            ("return_value", J::Int(r.ret)),
            ("success", J::Bool(success)),
        ];
        if !success {
            fields.push(("errno", J::Str(errno_name(r.errno))));
        }
        fields.push(("thread_id", J::Int(r.tid.into())));
        fields.push(("fake_call", J::Bool(fake)));
        fields.push(("details", J::Obj(details)));
        fields.push((
            "frames",
            J::Arr(frames.iter().map(|&f| J::Int(f as i64)).collect()),
        ));
        let mut s = J::Obj(fields).to_string();
        s.push('\n');
        s
    }
}

impl SockInfo {
    /// tcpsnitch's `sock_info`: domain and type by name, the protocol's name (its number as a
    /// string when it is 0 or unknown), the two creation flags.
    fn json(&self) -> J {
        let domain = match self.domain {
            libc::AF_INET => "AF_INET".to_string(),
            libc::AF_INET6 => "AF_INET6".to_string(),
            d => d.to_string(),
        };
        let ty = match self.ty & 0xf {
            libc::SOCK_STREAM => "SOCK_STREAM".to_string(),
            libc::SOCK_DGRAM => "SOCK_DGRAM".to_string(),
            libc::SOCK_RAW => "SOCK_RAW".to_string(),
            t => t.to_string(),
        };
        let protocol = match self.protocol {
            libc::IPPROTO_TCP => "tcp".to_string(),
            libc::IPPROTO_UDP => "udp".to_string(),
            p => p.to_string(),
        };
        J::Obj(vec![
            ("domain", J::Str(domain)),
            ("type", J::Str(ty)),
            ("protocol", J::Str(protocol)),
            ("SOCK_CLOEXEC", J::Bool(self.ty & libc::SOCK_CLOEXEC != 0)),
            ("SOCK_NONBLOCK", J::Bool(self.ty & libc::SOCK_NONBLOCK != 0)),
        ])
    }
}

/// The event type of call number `call`: its name, the fortified and 64-bit variants under the
/// name tcpsnitch hooks.
fn event_type(call: u16) -> &'static str {
    match call_name(call) {
        "__read_chk" => "read",
        "__recv_chk" => "recv",
        "__recvfrom_chk" => "recvfrom",
        "fcntl64" => "fcntl",
        "sendfile64" => "sendfile",
        "__poll_chk" => "poll",
        "__ppoll_chk" => "ppoll",
        name => name,
    }
}

/// The `details` of a call on an existing socket, by tcpsnitch's keys (`None`: not an event).
fn details(r: &Record) -> Option<Vec<(&'static str, J)>> {
    let ty = event_type(r.call);
    Some(match r.kind {
        Kind::Connect => opt_addr(r.addr),
        // The address asked for, as tcpsnitch writes it (port 0 stays 0).
        Kind::Bind => opt_addr(r.addr),
        Kind::Listen => vec![("backlog", J::Int(r.arg0))],
        Kind::Shutdown => {
            let how = r.arg0 as i32;
            vec![
                (
                    "SHUT_RD",
                    J::Bool(how == libc::SHUT_RD || how == libc::SHUT_RDWR),
                ),
                (
                    "SHUT_WR",
                    J::Bool(how == libc::SHUT_WR || how == libc::SHUT_RDWR),
                ),
            ]
        }
        Kind::SoError => vec![
            ("level", J::Str("SOL_SOCKET".into())),
            ("optname", J::Str("SO_ERROR".into())),
            ("optlen", J::Int(4)),
            ("optval", J::Int(r.arg0)),
        ],
        Kind::Close | Kind::CloseRange => Vec::new(),
        Kind::SockOpt => sockopt_details(r),
        Kind::FdControl if ty == "ioctl" => {
            vec![("request", J::Str(ioctl_request_name(r.arg0 as u64)))]
        }
        Kind::FdControl => fcntl_details(r),
        Kind::Send => {
            // What the call asked to send when the hook said, else what the kernel took.
            let bytes = if r.arg0 > 0 { r.arg0 } else { r.ret.max(0) };
            let mut d = vec![("bytes", J::Int(bytes))];
            if matches!(ty, "send" | "sendto" | "sendmsg") {
                d.push(("flags", send_flags(r.arg1)));
            }
            if ty == "sendto" {
                d.extend(opt_addr(r.addr));
            }
            d
        }
        Kind::Recv => {
            let mut d = vec![("bytes", J::Int(r.arg0))];
            if matches!(ty, "recv" | "recvfrom" | "recvmsg") {
                d.push(("flags", recv_flags(r.arg1)));
            }
            if ty == "recvfrom" {
                d.extend(opt_addr(r.addr));
            }
            d
        }
        _ => return None,
    })
}

/// tcpsnitch's details of setsockopt and getsockopt: the level and option by name (the number
/// as a string when this table has none), the option's length, and its value for the options
/// tcpsnitch decodes, when it was read.
fn sockopt_details(r: &Record) -> Vec<(&'static str, J)> {
    let level = r.arg0 as i32;
    let name = r.arg1 as u32 as i32;
    let len = (r.arg1 >> 32) as u32;
    let mut d = vec![
        ("level", J::Str(level_name(level))),
        ("optname", J::Str(option_name(level, name))),
        ("optlen", J::Int(len.into())),
    ];
    if len > 0 {
        if let Some(v) = option_value(level, name, r.data) {
            d.push(("optval", v));
        }
    }
    d
}

fn level_name(level: i32) -> String {
    match level {
        libc::SOL_SOCKET => "SOL_SOCKET",
        libc::SOL_TCP => "SOL_TCP",
        libc::SOL_UDP => "SOL_UDP",
        libc::SOL_IP => "SOL_IP",
        libc::SOL_IPV6 => "SOL_IPV6",
        _ => return level.to_string(),
    }
    .to_string()
}

fn option_name(level: i32, name: i32) -> String {
    use libc::*;
    let known = match (level, name) {
        (SOL_SOCKET, SO_DEBUG) => "SO_DEBUG",
        (SOL_SOCKET, SO_REUSEADDR) => "SO_REUSEADDR",
        (SOL_SOCKET, SO_TYPE) => "SO_TYPE",
        (SOL_SOCKET, SO_ERROR) => "SO_ERROR",
        (SOL_SOCKET, SO_DONTROUTE) => "SO_DONTROUTE",
        (SOL_SOCKET, SO_BROADCAST) => "SO_BROADCAST",
        (SOL_SOCKET, SO_SNDBUF) => "SO_SNDBUF",
        (SOL_SOCKET, SO_RCVBUF) => "SO_RCVBUF",
        (SOL_SOCKET, SO_KEEPALIVE) => "SO_KEEPALIVE",
        (SOL_SOCKET, SO_OOBINLINE) => "SO_OOBINLINE",
        (SOL_SOCKET, SO_PRIORITY) => "SO_PRIORITY",
        (SOL_SOCKET, SO_LINGER) => "SO_LINGER",
        (SOL_SOCKET, SO_REUSEPORT) => "SO_REUSEPORT",
        (SOL_SOCKET, SO_PASSCRED) => "SO_PASSCRED",
        (SOL_SOCKET, SO_PEERCRED) => "SO_PEERCRED",
        (SOL_SOCKET, SO_RCVLOWAT) => "SO_RCVLOWAT",
        (SOL_SOCKET, SO_SNDLOWAT) => "SO_SNDLOWAT",
        (SOL_SOCKET, SO_RCVTIMEO) => "SO_RCVTIMEO",
        (SOL_SOCKET, SO_SNDTIMEO) => "SO_SNDTIMEO",
        (SOL_SOCKET, SO_BINDTODEVICE) => "SO_BINDTODEVICE",
        (SOL_SOCKET, SO_TIMESTAMP) => "SO_TIMESTAMP",
        (SOL_SOCKET, SO_ACCEPTCONN) => "SO_ACCEPTCONN",
        (SOL_SOCKET, SO_MARK) => "SO_MARK",
        (SOL_SOCKET, SO_PROTOCOL) => "SO_PROTOCOL",
        (SOL_SOCKET, SO_DOMAIN) => "SO_DOMAIN",
        (SOL_TCP, TCP_NODELAY) => "TCP_NODELAY",
        (SOL_TCP, TCP_MAXSEG) => "TCP_MAXSEG",
        (SOL_TCP, TCP_CORK) => "TCP_CORK",
        (SOL_TCP, TCP_KEEPIDLE) => "TCP_KEEPIDLE",
        (SOL_TCP, TCP_KEEPINTVL) => "TCP_KEEPINTVL",
        (SOL_TCP, TCP_KEEPCNT) => "TCP_KEEPCNT",
        (SOL_TCP, TCP_SYNCNT) => "TCP_SYNCNT",
        (SOL_TCP, TCP_LINGER2) => "TCP_LINGER2",
        (SOL_TCP, TCP_DEFER_ACCEPT) => "TCP_DEFER_ACCEPT",
        (SOL_TCP, TCP_WINDOW_CLAMP) => "TCP_WINDOW_CLAMP",
        (SOL_TCP, TCP_INFO) => "TCP_INFO",
        (SOL_TCP, TCP_QUICKACK) => "TCP_QUICKACK",
        (SOL_TCP, TCP_CONGESTION) => "TCP_CONGESTION",
        (SOL_TCP, TCP_USER_TIMEOUT) => "TCP_USER_TIMEOUT",
        (SOL_TCP, TCP_FASTOPEN) => "TCP_FASTOPEN",
        (SOL_TCP, TCP_NOTSENT_LOWAT) => "TCP_NOTSENT_LOWAT",
        (SOL_TCP, TCP_FASTOPEN_CONNECT) => "TCP_FASTOPEN_CONNECT",
        (SOL_IP, IP_TOS) => "IP_TOS",
        (SOL_IP, IP_TTL) => "IP_TTL",
        (SOL_IP, IP_HDRINCL) => "IP_HDRINCL",
        (SOL_IP, IP_OPTIONS) => "IP_OPTIONS",
        (SOL_IP, IP_PKTINFO) => "IP_PKTINFO",
        (SOL_IP, IP_MTU_DISCOVER) => "IP_MTU_DISCOVER",
        (SOL_IP, IP_RECVERR) => "IP_RECVERR",
        (SOL_IP, IP_RECVTOS) => "IP_RECVTOS",
        (SOL_IP, IP_FREEBIND) => "IP_FREEBIND",
        (SOL_IP, IP_TRANSPARENT) => "IP_TRANSPARENT",
        (SOL_IP, IP_BIND_ADDRESS_NO_PORT) => "IP_BIND_ADDRESS_NO_PORT",
        (SOL_IP, IP_MULTICAST_TTL) => "IP_MULTICAST_TTL",
        (SOL_IP, IP_MULTICAST_LOOP) => "IP_MULTICAST_LOOP",
        (SOL_IP, IP_ADD_MEMBERSHIP) => "IP_ADD_MEMBERSHIP",
        (SOL_IPV6, IPV6_UNICAST_HOPS) => "IPV6_UNICAST_HOPS",
        (SOL_IPV6, IPV6_MULTICAST_HOPS) => "IPV6_MULTICAST_HOPS",
        (SOL_IPV6, IPV6_MTU_DISCOVER) => "IPV6_MTU_DISCOVER",
        (SOL_IPV6, IPV6_RECVERR) => "IPV6_RECVERR",
        (SOL_IPV6, IPV6_V6ONLY) => "IPV6_V6ONLY",
        (SOL_IPV6, IPV6_RECVPKTINFO) => "IPV6_RECVPKTINFO",
        (SOL_IPV6, IPV6_TCLASS) => "IPV6_TCLASS",
        (SOL_UDP, UDP_CORK) => "UDP_CORK",
        _ => return name.to_string(),
    };
    known.to_string()
}

/// The value of the options tcpsnitch decodes (`None` for the others, or too few bytes).
fn option_value(level: i32, name: i32, v: &[u8]) -> Option<J> {
    let int = |at: usize| -> Option<i64> {
        let b = v.get(at..at + 4)?;
        Some(i32::from_ne_bytes([b[0], b[1], b[2], b[3]]).into())
    };
    let long = |at: usize| -> Option<i64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(v.get(at..at + 8)?);
        Some(i64::from_ne_bytes(a))
    };
    use libc::*;
    Some(match (level, name) {
        (SOL_SOCKET, SO_RCVTIMEO | SO_SNDTIMEO) => J::Obj(vec![
            ("tv_sec", J::Int(long(0)?)),
            ("tv_usec", J::Int(long(8)?)),
        ]),
        (SOL_SOCKET, SO_LINGER) => J::Obj(vec![
            ("l_onoff", J::Int(int(0)?)),
            ("l_linger", J::Int(int(4)?)),
        ]),
        (SOL_SOCKET, SO_RCVBUF | SO_SNDBUF | SO_ERROR)
        | (SOL_TCP, TCP_KEEPINTVL | TCP_KEEPIDLE) => J::Int(int(0)?),
        (SOL_SOCKET, SO_KEEPALIVE | SO_DEBUG | SO_REUSEADDR)
        | (SOL_TCP, TCP_NODELAY)
        | (SOL_IPV6, IPV6_V6ONLY) => J::Bool(int(0)? != 0),
        _ => return None,
    })
}

/// tcpsnitch's details of an fcntl that is not a dup: the command by name, then what it set or
/// got: the descriptor's flags (`O_CLOEXEC`), the file status flags, or an integer argument.
fn fcntl_details(r: &Record) -> Vec<(&'static str, J)> {
    let cmd = r.arg0 as i32;
    let mut d = vec![("cmd", J::Str(fcntl_cmd_name(cmd)))];
    // What the flags commands got is their return value (when they succeeded).
    let got = r.ret.max(0);
    let fd_flags = |v: i64| ("O_CLOEXEC", J::Bool(v & i64::from(libc::FD_CLOEXEC) != 0));
    let fl_flags = |v: i64| {
        let bit = |b: i32| J::Bool(v & i64::from(b) != 0);
        [
            ("O_APPEND", bit(libc::O_APPEND)),
            ("O_ASYNC", bit(libc::O_ASYNC)),
            ("O_DIRECT", bit(libc::O_DIRECT)),
            ("O_NOATIME", bit(libc::O_NOATIME)),
            ("O_NONBLOCK", bit(libc::O_NONBLOCK)),
        ]
    };
    match cmd {
        libc::F_GETFD => d.push(fd_flags(got)),
        libc::F_SETFD => d.push(fd_flags(r.arg1)),
        libc::F_GETFL => d.extend(fl_flags(got)),
        libc::F_SETFL => d.extend(fl_flags(r.arg1)),
        libc::F_DUPFD
        | libc::F_DUPFD_CLOEXEC
        | libc::F_SETOWN
        | F_SETSIG
        | libc::F_SETLEASE
        | libc::F_NOTIFY
        | libc::F_SETPIPE_SZ => d.push(("arg", J::Int(r.arg1))),
        _ => {}
    }
    d
}

/// Linux's F_SETSIG and F_GETSIG (<bits/fcntl-linux.h>), which the libc crate does not name.
const F_SETSIG: i32 = 10;
const F_GETSIG: i32 = 11;

fn fcntl_cmd_name(cmd: i32) -> String {
    let name = match cmd {
        libc::F_DUPFD => "F_DUPFD",
        libc::F_GETFD => "F_GETFD",
        libc::F_SETFD => "F_SETFD",
        libc::F_GETFL => "F_GETFL",
        libc::F_SETFL => "F_SETFL",
        libc::F_GETLK => "F_GETLK",
        libc::F_SETLK => "F_SETLK",
        libc::F_SETLKW => "F_SETLKW",
        libc::F_SETOWN => "F_SETOWN",
        libc::F_GETOWN => "F_GETOWN",
        F_SETSIG => "F_SETSIG",
        F_GETSIG => "F_GETSIG",
        libc::F_SETLEASE => "F_SETLEASE",
        libc::F_GETLEASE => "F_GETLEASE",
        libc::F_NOTIFY => "F_NOTIFY",
        libc::F_DUPFD_CLOEXEC => "F_DUPFD_CLOEXEC",
        libc::F_SETPIPE_SZ => "F_SETPIPE_SZ",
        libc::F_GETPIPE_SZ => "F_GETPIPE_SZ",
        _ => return cmd.to_string(),
    };
    name.to_string()
}

/// Linux's socket ioctls SIOCATMARK and SIOCGSTAMP (<asm/sockios.h>), which the libc crate
/// does not name.
const SIOCATMARK: libc::Ioctl = 0x8905;
const SIOCGSTAMP: libc::Ioctl = 0x8906;

fn ioctl_request_name(request: u64) -> String {
    let name = match request as libc::Ioctl {
        libc::FIONREAD => "FIONREAD",
        libc::FIONBIO => "FIONBIO",
        libc::FIOCLEX => "FIOCLEX",
        libc::FIONCLEX => "FIONCLEX",
        libc::FIOASYNC => "FIOASYNC",
        // SIOCOUTQ is TIOCOUTQ's number.
        libc::TIOCOUTQ => "SIOCOUTQ",
        SIOCATMARK => "SIOCATMARK",
        SIOCGSTAMP => "SIOCGSTAMP",
        _ => return request.to_string(),
    };
    name.to_string()
}

/// tcpsnitch's `{seconds, nanoseconds}` timeout.
fn timeout_json(seconds: i64, nanoseconds: i64) -> J {
    J::Obj(vec![
        ("seconds", J::Int(seconds)),
        ("nanoseconds", J::Int(nanoseconds)),
    ])
}

/// The details of a poll, ppoll, select or pselect on one socket (a Ready record).
fn ready_details(r: &Record) -> Option<Vec<(&'static str, J)>> {
    let asked = r.arg0 as u16;
    let got = (r.arg0 >> 16) as u16;
    let events: fn(u16) -> J = match event_type(r.call) {
        "poll" | "ppoll" => poll_events,
        "select" | "pselect" => select_events,
        _ => return None,
    };
    Some(vec![
        ("timeout", timeout_json(r.arg1, r.ssl as i64)),
        ("requested_events", events(asked)),
        ("returned_events", events(got)),
    ])
}

fn poll_events(bits: u16) -> J {
    let bit = |b: i16| J::Bool(bits & b as u16 != 0);
    J::Obj(vec![
        ("POLLIN", bit(libc::POLLIN)),
        ("POLLPRI", bit(libc::POLLPRI)),
        ("POLLOUT", bit(libc::POLLOUT)),
        ("POLLRDHUP", bit(libc::POLLRDHUP)),
        ("POLLERR", bit(libc::POLLERR)),
        ("POLLHUP", bit(libc::POLLHUP)),
        ("POLLNVAL", bit(libc::POLLNVAL)),
    ])
}

/// select's sets as the hooks record them: READ 1, WRITE 2, EXCEPT 4.
fn select_events(bits: u16) -> J {
    J::Obj(vec![
        ("READ", J::Bool(bits & 1 != 0)),
        ("WRITE", J::Bool(bits & 2 != 0)),
        ("EXCEPT", J::Bool(bits & 4 != 0)),
    ])
}

fn epoll_events(bits: u32) -> J {
    let bit = |b: i32| J::Bool(bits & b as u32 != 0);
    J::Obj(vec![
        ("EPOLLIN", bit(libc::EPOLLIN)),
        ("EPOLLOUT", bit(libc::EPOLLOUT)),
        ("EPOLLRDHUP", bit(libc::EPOLLRDHUP)),
        ("EPOLLPRI", bit(libc::EPOLLPRI)),
        ("EPOLLERR", bit(libc::EPOLLERR)),
        ("EPOLLHUP", bit(libc::EPOLLHUP)),
        ("EPOLLET", bit(libc::EPOLLET)),
        ("EPOLLONESHOT", bit(libc::EPOLLONESHOT)),
        ("EPOLLWAKEUP", bit(libc::EPOLLWAKEUP)),
    ])
}

/// tcpsnitch's details of sendmmsg and recvmmsg from an Mmsg record: `bytes` (the buffers'
/// sizes of the messages the kernel handled), the flags, `mmsghdr_count` (the messages asked),
/// `mmsghdr_vec` (one entry per message handled) and, for recvmmsg, the timeout.
fn mmsg_details(r: &Record) -> Option<Vec<(&'static str, J)>> {
    let ty = event_type(r.call);
    let recv = match ty {
        "sendmmsg" => false,
        "recvmmsg" => true,
        _ => return None,
    };
    let words: Vec<i64> = r
        .data
        .chunks_exact(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            i64::from_ne_bytes(b)
        })
        .collect();
    let (seconds, nanoseconds) = (*words.first()?, *words.get(1)?);
    let mut vec = Vec::new();
    let mut bytes = 0i64;
    let mut at = 2;
    while let Some(head) = words.get(at..at + 5) {
        let count = head[4];
        let kept = (count.max(0) as usize).min(crate::record::MMSG_SIZES);
        let Some(sizes) = words.get(at + 5..at + 5 + kept) else {
            break;
        };
        at += 5 + kept;
        bytes += sizes.iter().sum::<i64>();
        let cmsg = head[3] as u64;
        let v = Vector {
            fd: r.fd,
            count,
            sizes: sizes.to_vec(),
            control: head[2],
            first_cmsg: (cmsg >> 63 == 1)
                .then_some((cmsg as u32 as i32, (cmsg >> 32) as i32 & 0x7fff_ffff)),
            msg_flags: head[1] as i32,
        };
        vec.push(J::Obj(vec![
            ("transmitted_bytes", J::Int(head[0])),
            ("msghdr", v.msghdr()),
        ]));
    }
    let flags = if recv {
        recv_flags(r.arg1)
    } else {
        send_flags(r.arg1)
    };
    let mut d = vec![
        ("bytes", J::Int(bytes)),
        ("flags", flags),
        ("mmsghdr_count", J::Int(r.arg0)),
        ("mmsghdr_vec", J::Arr(vec)),
    ];
    if recv {
        d.push(("timeout", timeout_json(seconds, nanoseconds)));
    }
    Some(d)
}

/// tcpsnitch's send flags: one boolean per MSG_* flag a send takes.
fn send_flags(bits: i64) -> J {
    let flag = |bit: i32| J::Bool(bits & i64::from(bit) != 0);
    J::Obj(vec![
        ("MSG_CONFIRM", flag(libc::MSG_CONFIRM)),
        ("MSG_DONTROUTE", flag(libc::MSG_DONTROUTE)),
        ("MSG_DONTWAIT", flag(libc::MSG_DONTWAIT)),
        ("MSG_EOR", flag(libc::MSG_EOR)),
        ("MSG_MORE", flag(libc::MSG_MORE)),
        ("MSG_NOSIGNAL", flag(libc::MSG_NOSIGNAL)),
        ("MSG_OOB", flag(libc::MSG_OOB)),
    ])
}

/// tcpsnitch's recv flags: one boolean per MSG_* flag a receive takes.
fn recv_flags(bits: i64) -> J {
    let flag = |bit: i32| J::Bool(bits & i64::from(bit) != 0);
    J::Obj(vec![
        ("MSG_CMSG_CLOEXEC", flag(libc::MSG_CMSG_CLOEXEC)),
        ("MSG_DONTWAIT", flag(libc::MSG_DONTWAIT)),
        ("MSG_ERRQUEUE", flag(libc::MSG_ERRQUEUE)),
        ("MSG_OOB", flag(libc::MSG_OOB)),
        ("MSG_PEEK", flag(libc::MSG_PEEK)),
        ("MSG_TRUNC", flag(libc::MSG_TRUNC)),
        ("MSG_WAITALL", flag(libc::MSG_WAITALL)),
    ])
}

/// `addr` as tcpsnitch writes it, absent when the call had none.
fn opt_addr(a: Option<SocketAddr>) -> Vec<(&'static str, J)> {
    a.map(|a| vec![("addr", addr_json(Some(a)))])
        .unwrap_or_default()
}

pub(super) fn addr_json(a: Option<SocketAddr>) -> J {
    let Some(a) = a else {
        return J::Obj(Vec::new());
    };
    let family = if a.is_ipv4() { "AF_INET" } else { "AF_INET6" };
    J::Obj(vec![
        ("sa_family", J::Str(family.into())),
        ("ip", J::Str(a.ip().to_string())),
        // A string, as tcpsnitch writes it.
        ("port", J::Str(a.port().to_string())),
    ])
}

fn write_line(file: &mut Option<TraceFile>, line: &str) {
    if let Some(f) = file {
        f.pending.push_str(line);
        if f.pending.len() >= PENDING_MAX {
            flush(file);
        }
    }
}

/// Append what is pending; a file that cannot be written is given up (the run goes on).
fn flush(file: &mut Option<TraceFile>) {
    let Some(f) = file else { return };
    if f.pending.is_empty() {
        return;
    }
    let written = OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&f.path)
        .and_then(|mut out| out.write_all(f.pending.as_bytes()));
    f.pending.clear();
    if let Err(e) = written {
        eprintln!(
            "netintercept: cannot write event trace {}: {e}",
            quoted(f.path.as_os_str().as_bytes(), PATH_CHARS)
        );
        *file = None;
    }
}

/// Append a socket's pending packets; a file that cannot be written is given up.
fn flush_pcap(file: &mut Option<PcapFile>) {
    let Some(f) = file else { return };
    if f.pending.is_empty() {
        return;
    }
    let written = OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&f.path)
        .and_then(|mut out| out.write_all(&f.pending));
    f.pending.clear();
    if let Err(e) = written {
        eprintln!(
            "netintercept: cannot write socket capture {}: {e}",
            quoted(f.path.as_os_str().as_bytes(), PATH_CHARS)
        );
        *file = None;
    }
}

/// Create `path` for a trace or a socket's capture: new (never over an existing file or
/// through a link), readable by its owner alone. Written when flushed.
fn create(p: &mut Proc, path: &Path) -> bool {
    let made = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path);
    if let Err(e) = &made {
        log(p, &format!("[ERROR] cannot create {}: {e}", path.display()));
    }
    made.is_ok()
}

fn log(p: &mut Proc, line: &str) {
    if let Some(l) = &mut p.log {
        let _ = writeln!(l, "{line}");
    }
}

/// errno's symbolic name, as tcpsnitch writes it (the number when it has none here).
pub(super) fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EEXIST => "EEXIST",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EINVAL => "EINVAL",
        libc::EMFILE => "EMFILE",
        libc::ENFILE => "ENFILE",
        libc::EPIPE => "EPIPE",
        libc::ENOTSOCK => "ENOTSOCK",
        libc::EDESTADDRREQ => "EDESTADDRREQ",
        libc::EMSGSIZE => "EMSGSIZE",
        libc::EPROTOTYPE => "EPROTOTYPE",
        libc::ENOPROTOOPT => "ENOPROTOOPT",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETDOWN => "ENETDOWN",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ENETRESET => "ENETRESET",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::ECONNRESET => "ECONNRESET",
        libc::ENOBUFS => "ENOBUFS",
        libc::EISCONN => "EISCONN",
        libc::ENOTCONN => "ENOTCONN",
        libc::ESHUTDOWN => "ESHUTDOWN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EHOSTDOWN => "EHOSTDOWN",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::EALREADY => "EALREADY",
        libc::EINPROGRESS => "EINPROGRESS",
        _ => return e.to_string(),
    };
    name.to_string()
}

/// The little JSON this module writes: objects keep their keys' order, which tcpsnitch's
/// output (jansson, insertion order) has too.
#[derive(Clone)]
pub(super) enum J {
    Bool(bool),
    Int(i64),
    /// An unsigned value that may not fit i64 (TCP_INFO's u64 counters).
    UInt(u64),
    Str(String),
    Obj(Vec<(&'static str, J)>),
    Arr(Vec<J>),
}

impl fmt::Display for J {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            J::Bool(b) => write!(f, "{b}"),
            J::Int(i) => write!(f, "{i}"),
            J::UInt(i) => write!(f, "{i}"),
            J::Str(s) => {
                f.write_char('"')?;
                for c in s.chars() {
                    match c {
                        '"' => f.write_str("\\\"")?,
                        '\\' => f.write_str("\\\\")?,
                        c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
                        c => f.write_char(c)?,
                    }
                }
                f.write_char('"')
            }
            // jansson's separators (", " and ": "), as in tcpsnitch's traces.
            J::Obj(fields) => {
                f.write_char('{')?;
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "\"{k}\": {v}")?;
                }
                f.write_char('}')
            }
            J::Arr(items) => {
                f.write_char('[')?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_char(']')
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(_pid: i32) -> OsString {
        OsString::from("/usr/bin/prog")
    }

    fn rec(kind: Kind, call: &str, fd: i32, ret: i64) -> Record<'static> {
        let mut r = Record::new(kind);
        r.call = crate::record::call_id(call);
        r.pid = 100;
        r.tid = 100;
        r.fd = fd;
        r.ret = ret;
        r.ts_ns = 5_000;
        r
    }

    fn socket(fd: i32) -> Record<'static> {
        let mut r = rec(Kind::Socket, "socket", -1, fd.into());
        r.arg1 = i64::from(libc::SOCK_STREAM | libc::SOCK_NONBLOCK)
            | i64::from(libc::AF_INET6 as u16) << 32
            | i64::from(libc::IPPROTO_TCP as u16) << 48;
        r
    }

    fn lines(dir: &Path, file: &str) -> Vec<String> {
        std::fs::read_to_string(dir.join(file))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ni-socktrace-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// A dup is written in the original's trace and starts a new one with `sock_info`; closing
    /// the copy ends only the copy's trace; the clock offset makes realtime microseconds.
    #[test]
    fn a_dup_makes_a_new_trace() {
        let dir = scratch("dup");
        let mut t = SockTraces::new(dir.clone(), 2_000_000, name);
        t.apply(&socket(3), &[]);
        t.apply(&rec(Kind::Dup, "dup2", 3, 7), &[]);
        t.apply(&rec(Kind::Close, "close", 7, 0), &[4]);
        // The close's own result comes after it.
        let mut closed = rec(Kind::Closed, "close", 7, -1);
        closed.errno = libc::EIO;
        t.apply(&closed, &[]);
        let mut send = rec(Kind::Send, "write", 3, 5);
        send.arg0 = 9;
        t.apply(&send, &[5, 6]);
        t.finish();
        let folder = dir.join("prog_000");
        let zero = lines(&folder, "0.json");
        assert_eq!(zero.len(), 3, "{zero:?}");
        assert_eq!(
            zero[0],
            "{\"type\": \"socket\", \"timestamp_usec\": 2005, \"return_value\": 3, \
             \"success\": true, \"thread_id\": 100, \"fake_call\": false, \"details\": \
             {\"sock_info\": {\"domain\": \"AF_INET6\", \"type\": \"SOCK_STREAM\", \
             \"protocol\": \"tcp\", \"SOCK_CLOEXEC\": false, \"SOCK_NONBLOCK\": true}}, \
             \"frames\": []}"
        );
        assert!(zero[1].starts_with("{\"type\": \"dup2\","), "{}", zero[1]);
        assert!(
            zero[1].contains("\"details\": {\"newfd\": 7}"),
            "{}",
            zero[1]
        );
        assert!(zero[2].contains("\"details\": {\"bytes\": 9}, \"frames\": [5, 6]}"));
        let one = lines(&folder, "1.json");
        assert_eq!(one.len(), 2, "{one:?}");
        assert!(one[0].contains("{\"newfd\": 7, \"sock_info\": {\"domain\": \"AF_INET6\""));
        assert!(one[1].starts_with(
            "{\"type\": \"close\", \"timestamp_usec\": 2005, \"return_value\": -1, \
             \"success\": false, \"errno\": \"EIO\","
        ));
        assert!(one[1].ends_with("\"details\": {}, \"frames\": [4]}"));
        let log = std::fs::read_to_string(folder.join("logs.txt")).expect("logs.txt");
        assert!(
            log.contains("2 socket(s)") && !log.contains("ERROR"),
            "{log}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// epoll_wait's events reach the socket epoll_ctl registered their data for, until that
    /// socket is closed (the kernel drops it from the set) or deleted.
    #[test]
    fn epoll_data_names_the_registered_socket() {
        let dir = scratch("epoll");
        let mut t = SockTraces::new(dir.clone(), 0, name);
        t.apply(&socket(3), &[]);
        t.apply(&socket(4), &[]);
        let ctl = |fd: i32, op: i32, data: u64| {
            let mut r = rec(Kind::EpollCtl, "epoll_ctl", fd, 0);
            r.arg0 = i64::from(op) | 9 << 32;
            r.arg1 = i64::from(libc::EPOLLIN);
            r.ssl = data;
            r
        };
        let wait = |datas: &[u64]| {
            let mut bytes = Vec::new();
            for &d in datas {
                let e = libc::epoll_event {
                    events: libc::EPOLLIN as u32,
                    u64: d,
                };
                // SAFETY: epoll_event is plain data; its bytes are what the kernel writes.
                bytes.extend_from_slice(unsafe {
                    std::slice::from_raw_parts(
                        &e as *const libc::epoll_event as *const u8,
                        std::mem::size_of::<libc::epoll_event>(),
                    )
                });
            }
            bytes
        };
        t.apply(&ctl(3, libc::EPOLL_CTL_ADD, 77), &[]);
        t.apply(&ctl(4, libc::EPOLL_CTL_ADD, 78), &[]);
        let both = wait(&[77, 78, 79]);
        let mut w = rec(Kind::EpollWait, "epoll_wait", 9, 3);
        w.data = &both;
        t.apply(&w, &[]);
        t.apply(&rec(Kind::Close, "close", 3, 0), &[]);
        t.apply(&ctl(4, libc::EPOLL_CTL_DEL, 0), &[]);
        // A new socket with the closed one's number was never registered.
        t.apply(&socket(3), &[]);
        t.apply(&w, &[]);
        t.finish();
        let folder = dir.join("prog_000");
        let waits = |file: &str| {
            lines(&folder, file)
                .iter()
                .filter(|l| l.contains("epoll_wait"))
                .count()
        };
        assert_eq!(
            (waits("0.json"), waits("1.json"), waits("2.json")),
            (1, 1, 0)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A folder an earlier run left is never written into; a failed call has `errno` by name.
    #[test]
    fn folders_are_never_reused_and_failures_name_errno() {
        let dir = scratch("reuse");
        std::fs::create_dir_all(dir.join("prog_000")).expect("old folder");
        let mut t = SockTraces::new(dir.clone(), 0, name);
        t.apply(&socket(4), &[]);
        let mut c = rec(Kind::Connect, "connect", 4, -1);
        c.errno = libc::ECONNREFUSED;
        c.addr = Some("[::1]:9".parse().expect("addr"));
        t.apply(&c, &[1, 2]);
        t.finish();
        assert_eq!(
            std::fs::read_dir(dir.join("prog_000"))
                .expect("old")
                .count(),
            0
        );
        let events = lines(&dir.join("prog_001"), "0.json");
        assert!(
            events[1].contains(
                "\"success\": false, \"errno\": \"ECONNREFUSED\", \"thread_id\": 100, \
                 \"fake_call\": false, \"details\": {\"addr\": {\"sa_family\": \"AF_INET6\", \
                 \"ip\": \"::1\", \"port\": \"9\"}}, \"frames\": [1, 2]}"
            ),
            "{}",
            events[1]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
