//! TCP events as deeptcptracer shows them, without root: derived from the calls' results and
//! from consecutive `TCP_INFO` samples the collector takes from outside ([`tcp_info`]).
//!
//! Samples are taken every `-b BYTES` sent and received on a socket (counted from the calls'
//! results) and every `-u USEC` (driven by the collector's loop, so the interval holds while
//! the program makes no call); `--tcp-events` alone samples every [`DEFAULT_EVERY_US`]. With
//! `--events`, each sample is a `tcp_info` line and each event a `tcp_event` line in the
//! socket's trace; with `--tcp-events`, each event is also a line on stderr in deeptcptracer's
//! columns, and in a pcapng capture the comment of the socket's next packet names it.
//!
//! What the samples cannot see, the calls tell: a connect's result, a listen, a shutdown or the
//! last close of a socket, a receive of 0 bytes (the peer's FIN), ECONNRESET and EPIPE (a
//! reset), and the errors a call or SO_ERROR reported. After the last close the program holds no
//! descriptor to copy: the socket is then followed by its addresses in the kernel's
//! `/proc/net/tcp` until it is gone or in TIME_WAIT (on stderr only: its trace has ended).
//!
//! The collector works a moment behind the program, and a sample is the kernel's present: it
//! may show what the calls applied so far have not told yet. States a sample skipped are filled
//! in where they are certain (a socket seen connected was connecting), and each event is stamped
//! when it was seen.
//!
//! [`tcp_info`]: super::tcp_info

use crate::fast_hash::HashMap;
use std::io::Write;
use std::net::SocketAddr;

use super::sock_trace::{addr_json, errno_name, SockTraces, J};
use super::tcp_info::{Missed, Sample, Sampler};
use crate::record::{Kind, Record};

/// How often `--tcp-events` samples when `-u` does not say: often enough to see a handshake's
/// and a close's states on a LAN, rarely enough that a program with hundreds of sockets costs
/// the collector little (six system calls a socket a sample).
pub const DEFAULT_EVERY_US: u64 = 10_000;

pub use crate::config::TcpSettings as Settings;

// Linux's TCP states (include/net/tcp_states.h).
const ESTABLISHED: u8 = 1;
const SYN_SENT: u8 = 2;
const SYN_RECV: u8 = 3;
const FIN_WAIT1: u8 = 4;
const FIN_WAIT2: u8 = 5;
const TIME_WAIT: u8 = 6;
const CLOSE: u8 = 7;
const CLOSE_WAIT: u8 = 8;
const LAST_ACK: u8 = 9;
const LISTEN: u8 = 10;
const CLOSING: u8 = 11;
const NEW_SYN_RECV: u8 = 12;

/// A state's name, as deeptcptracer prints it.
pub fn state_name(s: u8) -> &'static str {
    match s {
        ESTABLISHED => "ESTABLISHED",
        SYN_SENT => "SYN_SENT",
        SYN_RECV => "SYN_RECV",
        FIN_WAIT1 => "FIN_WAIT1",
        FIN_WAIT2 => "FIN_WAIT2",
        TIME_WAIT => "TIME_WAIT",
        CLOSE => "CLOSE",
        CLOSE_WAIT => "CLOSE_WAIT",
        LAST_ACK => "LAST_ACK",
        LISTEN => "LISTEN",
        CLOSING => "CLOSING",
        NEW_SYN_RECV => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

/// The kinds of event, by deeptcptracer's names for them (the kernel function it probes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum What {
    /// The state changed (`tcp_state` says from what to what).
    State,
    /// Segments were retransmitted by this socket (towards DESTINATION).
    Retransmit,
    /// The peer's FIN arrived.
    FinReceived,
    /// This socket sent its FIN.
    FinSent,
    /// The peer's RST arrived (ECONNRESET, EPIPE, ECONNREFUSED).
    Reset,
    /// The peer advertised a zero window.
    ZeroWindowReceived,
    /// This socket advertised a zero window (its receive buffer is full).
    ZeroWindowAdvertised,
    /// The socket reported an error to the program.
    Error,
}

impl What {
    /// The EVENT column.
    pub fn name(self) -> &'static str {
        match self {
            What::State => "tcp_set_state()",
            What::Retransmit => "tcp_retransmit_skb()",
            What::FinReceived => "tcp_fin()",
            What::FinSent => "tcp_send_fin()",
            What::Reset => "tcp_reset()",
            What::ZeroWindowReceived => "tcp_ack()/win==0",
            // deeptcptracer has none; the kernel chooses the window it advertises here.
            What::ZeroWindowAdvertised => "tcp_select_window()/win==0",
            What::Error => "sock_def_error_report()",
        }
    }
}

/// One event on one socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub what: What,
    pub ts_ns: u64,
    pub pid: i32,
    pub tid: i32,
    pub fd: i32,
    pub source: Option<SocketAddr>,
    pub destination: Option<SocketAddr>,
    /// `OLD -> NEW` for a state change, else the state.
    pub tcp_state: String,
    pub sk_err: Option<i32>,
    /// Retransmissions since the last sample, and in all.
    pub retransmitted: Option<(u64, u64)>,
}

/// What is known of one descriptor's socket.
#[derive(Clone)]
struct Watched {
    inode: u64,
    /// The thread that last used it: samples and events are filed under it.
    tid: i32,
    state: Option<u8>,
    local: Option<SocketAddr>,
    peer: Option<SocketAddr>,
    /// Bytes moved since the last sample (for `-b`).
    bytes: u64,
    last_sample_ns: u64,
    total_retrans: Option<u64>,
    zero_received: bool,
    zero_advertised: bool,
    fin_received: bool,
    fin_sent: bool,
    reset: bool,
    /// SO_LINGER with a zero timeout: the last close resets the connection, with no FIN.
    abortive: bool,
    /// An EPIPE not yet judged (the call that failed): a reset, unless the next call on the
    /// socket is the program's own shutdown (a blocked send may fail after a shutdown stamped
    /// later).
    epipe: Option<Record<'static>>,
    /// Events not yet named on a packet of this socket's (pcapng comments).
    notes: Vec<String>,
    /// The descriptor was found not to name the socket any more: no samples until a call on it
    /// says otherwise.
    stale: bool,
}

impl Watched {
    fn new(inode: u64, tid: i32, state: Option<u8>) -> Watched {
        Watched {
            inode,
            tid,
            state,
            local: None,
            peer: None,
            bytes: 0,
            last_sample_ns: 0,
            total_retrans: None,
            zero_received: false,
            zero_advertised: false,
            fin_received: false,
            fin_sent: false,
            reset: false,
            abortive: false,
            epipe: None,
            notes: Vec::new(),
            stale: false,
        }
    }
}

/// Events a socket keeps for its next packet's comment, at most.
const MAX_NOTES: usize = 16;

/// How often closing sockets are looked for in `/proc/net/tcp` (a whole table read each time).
const ORPHAN_SCAN_NS: u64 = 10_000_000;
/// How long a closing socket is followed at most.
const ORPHAN_FOLLOW_NS: u64 = 65_000_000_000;

/// A socket closed by its last holder and still closing in the kernel.
struct Orphan {
    pid: i32,
    tid: i32,
    fd: i32,
    local: SocketAddr,
    peer: SocketAddr,
    state: u8,
    since_ns: u64,
}

/// The run's TCP sockets, their samples and their events.
pub struct TcpWatch {
    settings: Settings,
    /// Samples every this many ns (0: never), `-u` or the default of `--tcp-events`.
    every_ns: u64,
    sampler: Sampler,
    socks: HashMap<(i32, i32), Watched>,
    comms: HashMap<i32, String>,
    printer: Option<Printer>,
    /// Sockets no process holds any more, still closing: followed in `/proc/net/tcp`.
    orphans: Vec<Orphan>,
    orphans_seen_ns: u64,
    /// Events are named in the comments of the packets after them (a pcapng capture).
    notes: bool,
    /// Events are kept here instead of printed and traced (unit tests).
    kept: Option<Vec<Event>>,
}

impl TcpWatch {
    /// A watch for `settings`, its records stamped on the monotonic clock `clock_offset_ns`
    /// behind realtime.
    pub fn new(settings: Settings, clock_offset_ns: i128) -> TcpWatch {
        let every_us = match settings.every_us {
            0 if settings.print => DEFAULT_EVERY_US,
            us => us,
        };
        TcpWatch {
            settings,
            every_ns: every_us.saturating_mul(1000),
            sampler: Sampler::default(),
            socks: HashMap::default(),
            comms: HashMap::default(),
            printer: settings.print.then_some(Printer {
                timestamps: settings.timestamps,
                header: false,
                clock_offset_ns,
            }),
            orphans: Vec::new(),
            orphans_seen_ns: 0,
            notes: false,
            kept: None,
        }
    }

    /// Record `r` was applied; `inode` tells which TCP socket a descriptor names now, as the
    /// connection table knows it.
    pub fn record(
        &mut self,
        r: &Record,
        inode: &dyn Fn(i32, i32) -> Option<u64>,
        mut traces: Option<&mut SockTraces>,
    ) {
        let pid = r.pid;
        match r.kind {
            Kind::Start if r.arg1 == 1 => self.fork(r.arg0 as i32, pid),
            Kind::Fork => self.fork(pid, r.ret as i32),
            Kind::Exit => self.process_gone(pid),
            Kind::Socket | Kind::Accept | Kind::Dup | Kind::Discovered => {
                let fd = if r.kind == Kind::Discovered {
                    r.fd
                } else {
                    r.ret as i32
                };
                let Some(ino) = inode(pid, fd) else { return };
                let mut w = match r.kind {
                    Kind::Socket => Watched::new(ino, r.tid, Some(CLOSE)),
                    Kind::Accept => Watched::new(ino, r.tid, Some(ESTABLISHED)),
                    Kind::Dup => match self.socks.get(&(pid, r.fd)) {
                        Some(orig) => Watched {
                            tid: r.tid,
                            ..orig.clone()
                        },
                        None => Watched::new(ino, r.tid, None),
                    },
                    _ => Watched::new(ino, r.tid, None),
                };
                w.inode = ino;
                if r.kind != Kind::Dup {
                    w.local = r.local;
                    w.peer = r.addr;
                }
                self.comm(pid);
                self.socks.insert((pid, fd), w);
            }
            // A vfork child's closes arrive under its parent's pid: when the connection table
            // still has the descriptor (the parent's still names the socket), it was not closed.
            Kind::Close if inode(pid, r.fd).is_none() => self.closed(r, r.fd, traces),
            Kind::CloseRange => {
                let mut fds: Vec<i32> = self
                    .socks
                    .keys()
                    .filter(|(p, fd)| *p == pid && (r.arg0..=r.arg1).contains(&i64::from(*fd)))
                    .filter(|(_, fd)| inode(pid, *fd).is_none())
                    .map(|&(_, fd)| fd)
                    .collect();
                fds.sort_unstable();
                for fd in fds {
                    self.closed(r, fd, traces.as_deref_mut());
                }
            }
            // Recorded with --events only: an abortive close is the one option that changes
            // what a close does on the wire.
            Kind::SockOpt if r.ret == 0 && crate::record::call_name(r.call) == "setsockopt" => {
                let name = r.arg1 as u32 as i32;
                if r.arg0 == i64::from(libc::SOL_SOCKET) && name == libc::SO_LINGER {
                    if let Some(w) = self.socks.get_mut(&(pid, r.fd)) {
                        let int = |at: usize| {
                            r.data
                                .get(at..at + 4)
                                .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                        };
                        w.abortive = int(0).is_some_and(|on| on != 0) && int(4) == Some(0);
                    }
                }
            }
            Kind::NewFd => {
                for fd in [r.ret, r.arg0] {
                    self.socks.remove(&(pid, fd as i32));
                }
            }
            Kind::Connect
            | Kind::Bind
            | Kind::Listen
            | Kind::Shutdown
            | Kind::SoError
            | Kind::Send
            | Kind::Recv => {
                let key = (pid, r.fd);
                let Some(w) = self.socks.get_mut(&key) else {
                    return;
                };
                w.tid = r.tid;
                w.stale = false;
                w.local = r.local.or(w.local);
                let mut events = Vec::new();
                if let Some(epipe) = w.epipe.take() {
                    let how = r.arg0 as i32;
                    let own_shutdown = r.kind == Kind::Shutdown
                        && r.ret == 0
                        && (how == libc::SHUT_WR || how == libc::SHUT_RDWR);
                    if !own_shutdown {
                        events.extend(reset(&epipe, w));
                    }
                }
                events.extend(call_events(r, w));
                for e in events {
                    self.emit(e, traces.as_deref_mut());
                }
                let every = self.settings.every_bytes;
                let due = self.socks.get_mut(&key).is_some_and(|w| {
                    w.bytes = w.bytes.saturating_add(r.ret.max(0) as u64);
                    every > 0 && w.bytes >= every && matches!(r.kind, Kind::Send | Kind::Recv)
                });
                if due {
                    self.sample(key, crate::recorder::now_ns(), traces);
                }
            }
            _ => {}
        }
    }

    /// The collector's loop came round at `now_ns`: sample what is due.
    pub fn tick(&mut self, now_ns: u64, mut traces: Option<&mut SockTraces>) {
        if !self.orphans.is_empty() && now_ns.saturating_sub(self.orphans_seen_ns) >= ORPHAN_SCAN_NS
        {
            self.orphans_seen_ns = now_ns;
            self.follow_orphans(now_ns);
        }
        if self.every_ns == 0 {
            return;
        }
        let mut due: Vec<(i32, i32)> = self
            .socks
            .iter()
            .filter(|(_, w)| !w.stale && now_ns.saturating_sub(w.last_sample_ns) >= self.every_ns)
            .map(|(k, _)| *k)
            .collect();
        due.sort_unstable();
        for key in due {
            self.sample(key, now_ns, traces.as_deref_mut());
        }
    }

    /// Name each event in the comment of its socket's next packet (the capture is pcapng).
    pub fn note_packets(&mut self) {
        self.notes = true;
    }

    /// The events of socket `fd` of `pid` not yet named on a packet, for the comment of the
    /// packet it is writing now.
    pub fn take_notes(&mut self, pid: i32, fd: i32) -> Vec<String> {
        self.socks
            .get_mut(&(pid, fd))
            .map(|w| std::mem::take(&mut w.notes))
            .unwrap_or_default()
    }

    /// Process `pid` is gone.
    pub fn process_gone(&mut self, pid: i32) {
        self.socks.retain(|&(p, _), _| p != pid);
        self.comms.remove(&pid);
        self.sampler.forget(pid);
    }

    /// Keep events for the caller instead of printing and tracing them (unit tests).
    #[cfg(test)]
    fn keep(mut self) -> TcpWatch {
        self.kept = Some(Vec::new());
        self
    }

    fn fork(&mut self, parent: i32, child: i32) {
        let inherited: Vec<((i32, i32), Watched)> = self
            .socks
            .iter()
            .filter(|((p, _), _)| *p == parent)
            .map(|(&(_, fd), w)| ((child, fd), w.clone()))
            .collect();
        for (k, w) in inherited {
            self.socks.entry(k).or_insert(w);
        }
        if let Some(c) = self.comms.get(&parent).cloned() {
            self.comms.entry(child).or_insert(c);
        }
    }

    /// Descriptor `fd` is closed: when it was the socket's last, what the kernel does then.
    fn closed(&mut self, r: &Record, fd: i32, traces: Option<&mut SockTraces>) {
        let Some(mut w) = self.socks.remove(&(r.pid, fd)) else {
            return;
        };
        let mut events = Vec::new();
        if let Some(epipe) = w.epipe.take() {
            events.extend(reset(&epipe, &mut w));
        }
        if self.socks.values().any(|o| o.inode == w.inode) {
            let mut traces = traces;
            for e in events {
                self.emit(e, traces.as_deref_mut());
            }
            return;
        }
        let at = |w: &Watched, what: What, tcp_state: String| Event {
            what,
            ts_ns: r.ts_ns,
            pid: r.pid,
            tid: r.tid,
            fd,
            source: w.local,
            destination: w.peer,
            tcp_state,
            sk_err: None,
            retransmitted: None,
        };
        // What the kernel's table says now: a close with unread data resets the connection (no
        // FIN), as SO_LINGER 0 does, and the socket is gone at once.
        let gone = match (w.local, w.peer) {
            (Some(l), Some(p)) if self.kept.is_none() => {
                super::procfs::tcp_state(r.pid, l, p) == Some(None)
            }
            _ => false,
        };
        let next = match w.state {
            Some(ESTABLISHED | CLOSE_WAIT) if w.abortive => Some(CLOSE),
            // Gone after a FIN of ours would be in FIN_WAIT2 or TIME_WAIT still; from
            // CLOSE_WAIT, LAST_ACK may have been acknowledged already.
            Some(ESTABLISHED) if gone => Some(CLOSE),
            Some(ESTABLISHED) => Some(FIN_WAIT1),
            Some(CLOSE_WAIT) => Some(LAST_ACK),
            Some(SYN_SENT | LISTEN) => Some(CLOSE),
            _ => None,
        };
        if let (Some(old), Some(new)) = (w.state, next) {
            events.push(at(&w, What::State, transition(old, new)));
            w.state = Some(new);
            if matches!(new, FIN_WAIT1 | LAST_ACK) && !w.fin_sent {
                events.push(at(&w, What::FinSent, state_name(new).into()));
            }
        }
        if let (Some(state), Some(local), Some(peer)) = (w.state, w.local, w.peer) {
            if matches!(state, FIN_WAIT1 | FIN_WAIT2 | LAST_ACK | CLOSING) && self.printer.is_some()
            {
                self.orphans.push(Orphan {
                    pid: r.pid,
                    tid: r.tid,
                    fd,
                    local,
                    peer,
                    state,
                    since_ns: r.ts_ns,
                });
            }
        }
        let mut traces = traces;
        for e in events {
            self.emit(e, traces.as_deref_mut());
        }
    }

    /// Follow the sockets no process holds, to their end (or TIME_WAIT, whose end is a minute
    /// away and tells nothing): what `/proc/net/tcp` says of them now.
    fn follow_orphans(&mut self, now_ns: u64) {
        let mut events = Vec::new();
        self.orphans.retain_mut(|o| {
            let Some(now) = super::procfs::tcp_state(o.pid, o.local, o.peer) else {
                return now_ns.saturating_sub(o.since_ns) <= ORPHAN_FOLLOW_NS;
            };
            let new = now.unwrap_or(CLOSE);
            let ev = |tcp_state: String| Event {
                what: What::State,
                ts_ns: now_ns,
                pid: o.pid,
                tid: o.tid,
                fd: o.fd,
                source: Some(o.local),
                destination: Some(o.peer),
                tcp_state,
                sk_err: None,
                retransmitted: None,
            };
            if new != o.state {
                events.push(ev(transition(o.state, new)));
                o.state = new;
            }
            // The kernel's FIN_WAIT2 timeout is a minute: a socket still closing then is left.
            let stale = now_ns.saturating_sub(o.since_ns) > ORPHAN_FOLLOW_NS;
            !(matches!(new, CLOSE | TIME_WAIT) || stale)
        });
        for e in events {
            self.emit(e, None);
        }
    }

    /// Sample socket `key` now and derive what changed since its last sample.
    fn sample(&mut self, key: (i32, i32), now_ns: u64, traces: Option<&mut SockTraces>) {
        let Some(w) = self.socks.get_mut(&key) else {
            return;
        };
        w.last_sample_ns = now_ns;
        w.bytes = 0;
        let s = match self.sampler.sample(key.0, key.1, w.inode) {
            Ok(s) => s,
            Err(Missed::Gone) => {
                w.stale = true;
                return;
            }
            Err(Missed::Refused) => {
                // No samples this run: the calls alone tell the events.
                self.every_ns = 0;
                self.settings.every_bytes = 0;
                return;
            }
        };
        let mut traces = traces;
        if self.settings.every_bytes > 0 || self.settings.every_us > 0 {
            if let Some(t) = traces.as_deref_mut() {
                t.collector_event((key.0, w.tid, key.1, now_ns), "tcp_info", s.details());
            }
        }
        let events = sample_events(&s, w, key, now_ns);
        for e in events {
            self.emit(e, traces.as_deref_mut());
        }
    }

    fn comm(&mut self, pid: i32) -> String {
        self.comms
            .entry(pid)
            .or_insert_with(|| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .map(|c| c.trim_end().to_string())
                    .unwrap_or_default()
            })
            .clone()
    }

    fn emit(&mut self, e: Event, traces: Option<&mut SockTraces>) {
        if let Some(kept) = &mut self.kept {
            kept.push(e);
            return;
        }
        // Without --tcp-events, the samples alone were asked for.
        if !self.settings.print {
            return;
        }
        if let Some(t) = traces {
            t.collector_event((e.pid, e.tid, e.fd, e.ts_ns), "tcp_event", e.details());
        }
        if self.notes {
            // A listener's packets are its accepted connections' (accept makes their
            // handshakes): its own events belong on none of them.
            let connected = |w: &&mut Watched| w.peer.is_some();
            if let Some(w) = self.socks.get_mut(&(e.pid, e.fd)).filter(connected) {
                // A socket whose packets stopped keeps the last few.
                if w.notes.len() >= MAX_NOTES {
                    w.notes.remove(0);
                }
                w.notes.push(e.note());
            }
        }
        let comm = self.comm(e.pid);
        if let Some(p) = &mut self.printer {
            p.print(&e, &comm);
        }
    }
}

/// The events a call's result implies for socket `w`, whose state it updates.
fn call_events(r: &Record, w: &mut Watched) -> Vec<Event> {
    let mut out = Vec::new();
    let ev = |w: &Watched, what: What, tcp_state: String, err: Option<i32>| Event {
        what,
        ts_ns: r.ts_ns,
        pid: r.pid,
        tid: r.tid,
        fd: r.fd,
        source: w.local,
        destination: w.peer,
        tcp_state,
        sk_err: err,
        retransmitted: None,
    };
    let go = |w: &mut Watched, out: &mut Vec<Event>, new: u8| {
        if let Some(old) = w.state.filter(|&o| o != new) {
            out.push(ev(w, What::State, transition(old, new), None));
        }
        w.state = Some(new);
    };
    let failed = r.ret < 0;
    match r.kind {
        Kind::Connect => {
            if r.addr.is_some() && (r.ret == 0 || r.errno == libc::EINPROGRESS) {
                w.peer = r.addr;
            }
            let sent_syn =
                r.ret == 0 || r.errno == libc::EINPROGRESS || r.errno == libc::ECONNREFUSED;
            if sent_syn && w.state == Some(CLOSE) {
                go(w, &mut out, SYN_SENT);
            }
            if r.ret == 0 && w.state == Some(SYN_SENT) {
                go(w, &mut out, ESTABLISHED);
            }
            if failed && r.errno == libc::ECONNREFUSED {
                out.extend(refused(r, w, r.errno));
            } else if failed && is_socket_error(r.errno) {
                out.push(ev(w, What::Error, state_now(w), Some(r.errno)));
            }
        }
        Kind::SoError => {
            let err = r.arg0 as i32;
            if err == 0 && w.state == Some(SYN_SENT) {
                go(w, &mut out, ESTABLISHED);
            } else if err == libc::ECONNREFUSED {
                out.extend(refused(r, w, err));
            } else if err != 0 {
                out.push(ev(w, What::Error, state_now(w), Some(err)));
            }
        }
        Kind::Listen if !failed => go(w, &mut out, LISTEN),
        Kind::Shutdown if !failed => {
            let how = r.arg0 as i32;
            if how == libc::SHUT_WR || how == libc::SHUT_RDWR {
                let next = match w.state {
                    Some(ESTABLISHED) => Some(FIN_WAIT1),
                    Some(CLOSE_WAIT) => Some(LAST_ACK),
                    _ => None,
                };
                if let Some(n) = next {
                    go(w, &mut out, n);
                    out.push(ev(w, What::FinSent, state_now(w), None));
                }
                w.fin_sent = true;
            }
        }
        Kind::Recv if r.ret == 0 && r.arg0 > 0 => {
            if !w.fin_received {
                w.fin_received = true;
                out.push(ev(w, What::FinReceived, state_now(w), None));
            }
            match w.state {
                Some(ESTABLISHED) => go(w, &mut out, CLOSE_WAIT),
                Some(FIN_WAIT2) => go(w, &mut out, TIME_WAIT),
                _ => {}
            }
        }
        Kind::Send | Kind::Recv if failed => match r.errno {
            libc::ECONNRESET => out.extend(reset(r, w)),
            libc::EPIPE if !w.fin_sent && !w.reset => {
                w.epipe = Some(Record { data: &[], ..*r });
            }
            e if is_socket_error(e) => out.push(ev(w, What::Error, state_now(w), Some(e))),
            _ => {}
        },
        _ => {}
    }
    out
}

/// The peer's RST, as call `r` (ECONNRESET, EPIPE) told it: once per socket, the state back to
/// CLOSE, and the error the program was told (EPIPE is not the socket's error but its
/// aftermath).
fn reset(r: &Record, w: &mut Watched) -> Vec<Event> {
    let mut out = Vec::new();
    if w.reset {
        return out;
    }
    w.reset = true;
    let ev = |w: &Watched, what: What, tcp_state: String, err: Option<i32>| Event {
        what,
        ts_ns: r.ts_ns,
        pid: r.pid,
        tid: r.tid,
        fd: r.fd,
        source: w.local,
        destination: w.peer,
        tcp_state,
        sk_err: err,
        retransmitted: None,
    };
    out.push(ev(w, What::Reset, state_now(w), Some(r.errno)));
    if let Some(old) = w.state.filter(|&s| s != CLOSE) {
        out.push(ev(w, What::State, transition(old, CLOSE), None));
        w.state = Some(CLOSE);
    }
    if r.errno == libc::ECONNRESET {
        out.push(ev(w, What::Error, state_now(w), Some(r.errno)));
    }
    out
}

/// A connection refused (`err`, as call `r` or its SO_ERROR told it): the RST, the state back to
/// CLOSE, the error the program is told.
fn refused(r: &Record, w: &mut Watched, err: i32) -> Vec<Event> {
    let mut out = reset(&Record { errno: err, ..*r }, w);
    // `reset` tells ECONNRESET's error; a refusal's is ECONNREFUSED.
    out.push(Event {
        what: What::Error,
        ts_ns: r.ts_ns,
        pid: r.pid,
        tid: r.tid,
        fd: r.fd,
        source: w.local,
        destination: w.peer,
        tcp_state: state_now(w),
        sk_err: Some(err),
        retransmitted: None,
    });
    out
}

/// Errors the kernel keeps on a socket for the program (sk_err), as opposed to a call's misuse.
fn is_socket_error(e: i32) -> bool {
    matches!(
        e,
        libc::ECONNREFUSED
            | libc::ECONNRESET
            | libc::ETIMEDOUT
            | libc::EHOSTUNREACH
            | libc::ENETUNREACH
            | libc::EHOSTDOWN
            | libc::ENETDOWN
            | libc::ECONNABORTED
    )
}

fn state_now(w: &Watched) -> String {
    w.state.map_or("UNKNOWN", state_name).to_string()
}

fn transition(old: u8, new: u8) -> String {
    format!("{} -> {}", state_name(old), state_name(new))
}

/// What sample `s` shows changed on socket `w` since the last one; updates `w`.
fn sample_events(s: &Sample, w: &mut Watched, key: (i32, i32), now_ns: u64) -> Vec<Event> {
    w.local = s.local.or(w.local);
    w.peer = s.peer.or(w.peer);
    let mut out = Vec::new();
    let ev = |w: &Watched, what: What, tcp_state: String| Event {
        what,
        ts_ns: now_ns,
        pid: key.0,
        tid: w.tid,
        fd: key.1,
        source: w.local,
        destination: w.peer,
        tcp_state,
        sk_err: None,
        retransmitted: None,
    };
    let new = s.state();
    if let Some(mut old) = w.state.filter(|&o| o != new) {
        // A sample is the kernel's present, which may be ahead of the calls applied so far: a
        // socket seen connected was connecting first (the connect's record comes later).
        let connected = !matches!(new, CLOSE | SYN_SENT | LISTEN | SYN_RECV | NEW_SYN_RECV);
        if old == CLOSE && connected {
            out.push(ev(w, What::State, transition(CLOSE, SYN_SENT)));
            old = SYN_SENT;
        }
        if old == SYN_SENT && connected && new != ESTABLISHED {
            out.push(ev(w, What::State, transition(SYN_SENT, ESTABLISHED)));
            old = ESTABLISHED;
        }
        // The peer's FIN is what moves these states on; a receive may not have told it yet.
        if matches!(new, CLOSE_WAIT | CLOSING | TIME_WAIT) && !w.fin_received {
            w.fin_received = true;
            out.push(ev(w, What::FinReceived, state_name(old).into()));
        }
        out.push(ev(w, What::State, transition(old, new)));
    }
    w.state = Some(new);
    if let Some(total) = s.get("total_retrans") {
        let before = w.total_retrans.unwrap_or(0);
        if total > before {
            let mut e = ev(w, What::Retransmit, state_name(new).into());
            e.retransmitted = Some((total - before, total));
            out.push(e);
        }
        w.total_retrans = Some(total);
    }
    // Windows mean something only while data may flow.
    let open = matches!(new, ESTABLISHED | CLOSE_WAIT | FIN_WAIT1 | FIN_WAIT2);
    let zero_rx = open && s.get("tcpi_snd_wnd") == Some(0);
    if zero_rx && !w.zero_received {
        out.push(ev(w, What::ZeroWindowReceived, state_name(new).into()));
    }
    w.zero_received = zero_rx;
    let zero_adv = open && s.get("tcpi_rcv_wnd") == Some(0);
    if zero_adv && !w.zero_advertised {
        out.push(ev(w, What::ZeroWindowAdvertised, state_name(new).into()));
    }
    w.zero_advertised = zero_adv;
    out
}

impl Event {
    /// The `details` of its `tcp_event` line.
    fn details(&self) -> Vec<(&'static str, J)> {
        let mut d = vec![
            ("event", J::Str(self.what.name().into())),
            ("source", addr_json(self.source)),
            ("destination", addr_json(self.destination)),
            ("tcp_state", J::Str(self.tcp_state.clone())),
            (
                "sk_err",
                J::Str(self.sk_err.map(errno_name).unwrap_or_default()),
            ),
        ];
        if let Some((n, total)) = self.retransmitted {
            d.push(("retransmitted", J::Int(n as i64)));
            d.push(("total_retrans", J::Int(total as i64)));
            // TCP_INFO counts what this socket sent again: towards its peer.
            d.push(("direction", J::Str("sent".into())));
        }
        d
    }

    /// The event in a packet's comment: EVENT TCP_STATE SK_ERR DETAILS, as on stderr.
    fn note(&self) -> String {
        let err = self.sk_err.map(errno_name).unwrap_or_default();
        [self.what.name(), &self.tcp_state, &err, &self.more()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<&str>>()
            .join(" ")
    }

    /// The free text after SK_ERR.
    fn more(&self) -> String {
        match (self.what, self.retransmitted) {
            (What::Retransmit, Some((n, total))) => {
                format!("{n} segment(s) sent again ({total} in all)")
            }
            (What::ZeroWindowReceived, _) => "zero window received".into(),
            (What::ZeroWindowAdvertised, _) => "zero window advertised".into(),
            _ => String::new(),
        }
    }
}

/// `--tcp-events`: lines on stderr in deeptcptracer's columns.
struct Printer {
    timestamps: bool,
    header: bool,
    clock_offset_ns: i128,
}

impl Printer {
    fn print(&mut self, e: &Event, comm: &str) {
        let mut out = String::new();
        if !self.header {
            self.header = true;
            out.push_str(&header(self.timestamps));
            out.push('\n');
        }
        if self.timestamps {
            let ns = (e.ts_ns as i128 + self.clock_offset_ns).max(0);
            out.push_str(&time_of_day(ns));
        }
        out.push_str(&columns(e, comm));
        out.push('\n');
        let _ = std::io::stderr().lock().write_all(out.as_bytes());
    }
}

/// The header line, as deeptcptracer prints it (its `-t` adds TIME).
pub fn header(timestamps: bool) -> String {
    let time = if timestamps {
        format!("{:<14}", "TIME")
    } else {
        String::new()
    };
    format!(
        "{time}{:<23} {:<6} {:<16} {:<21} {:<21} {:<24} {:<7} DETAILS",
        "EVENT", "PID", "COMM", "SOURCE", "DESTINATION", "TCP_STATE", "SK_ERR"
    )
    .trim_end()
    .to_string()
}

/// `HH:MM:SS.mmm  ` in local time, as deeptcptracer's `-t`.
fn time_of_day(realtime_ns: i128) -> String {
    use chrono::TimeZone;
    let secs = (realtime_ns / 1_000_000_000) as i64;
    let nanos = (realtime_ns % 1_000_000_000) as u32;
    match chrono::Local.timestamp_opt(secs, nanos).single() {
        Some(t) => format!("{}  ", t.format("%H:%M:%S%.3f")),
        None => format!("{:<14}", "?"),
    }
}

/// One event's columns (after the time).
pub fn columns(e: &Event, comm: &str) -> String {
    let addr = |a: Option<SocketAddr>| a.map_or_else(|| "-".to_string(), |a| a.to_string());
    // The kernel's TASK_COMM_LEN: 15 characters.
    let comm: String = comm.chars().take(15).collect();
    format!(
        "{:<23} {:<6} {:<16} {:<21} {:<21} {:<24} {:<7} {}",
        e.what.name(),
        e.pid,
        comm,
        addr(e.source),
        addr(e.destination),
        e.tcp_state,
        e.sk_err.map(errno_name).unwrap_or_default(),
        e.more()
    )
    .trim_end()
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(kind: Kind, fd: i32, ret: i64) -> Record<'static> {
        let mut r = Record::new(kind);
        r.pid = 50;
        r.tid = 50;
        r.fd = fd;
        r.ret = ret;
        r.ts_ns = 1_000;
        r
    }

    fn watch() -> TcpWatch {
        TcpWatch::new(Settings::default(), 0).keep()
    }

    fn kept(w: &TcpWatch) -> Vec<String> {
        w.kept
            .iter()
            .flatten()
            .map(|e| {
                format!(
                    "{} {} {}",
                    e.what.name(),
                    e.tcp_state,
                    e.sk_err.map(errno_name).unwrap_or_default()
                )
            })
            .map(|s| s.trim_end().to_string())
            .collect()
    }

    fn inode(_: i32, fd: i32) -> Option<u64> {
        Some(1000 + fd as u64)
    }

    /// A connect that succeeds at once, a FIN from the peer, then the last close.
    #[test]
    fn handshake_fin_and_close_from_the_calls() {
        let mut w = watch();
        w.record(&rec(Kind::Socket, -1, 3), &inode, None);
        let mut c = rec(Kind::Connect, 3, 0);
        c.addr = Some("127.0.0.1:80".parse().expect("addr"));
        c.local = Some("127.0.0.1:5555".parse().expect("addr"));
        w.record(&c, &inode, None);
        let mut eof = rec(Kind::Recv, 3, 0);
        eof.arg0 = 100;
        w.record(&eof, &inode, None);
        w.record(&rec(Kind::Close, 3, 0), &|_, _| None, None);
        assert_eq!(
            kept(&w),
            [
                "tcp_set_state() CLOSE -> SYN_SENT",
                "tcp_set_state() SYN_SENT -> ESTABLISHED",
                "tcp_fin() ESTABLISHED",
                "tcp_set_state() ESTABLISHED -> CLOSE_WAIT",
                "tcp_set_state() CLOSE_WAIT -> LAST_ACK",
                "tcp_send_fin() LAST_ACK",
            ]
        );
        let e = &w.kept.as_ref().expect("kept")[0];
        assert_eq!(e.source.map(|a| a.port()), Some(5555));
        assert_eq!(e.destination.map(|a| a.port()), Some(80));
    }

    /// A refused connect: the RST, back to CLOSE, the error; a reset on an open connection; a
    /// copy's close is not the socket's.
    #[test]
    fn refused_and_reset() {
        let mut w = watch();
        w.record(&rec(Kind::Socket, -1, 3), &inode, None);
        let mut c = rec(Kind::Connect, 3, -1);
        c.errno = libc::ECONNREFUSED;
        w.record(&c, &inode, None);
        assert_eq!(
            kept(&w),
            [
                "tcp_set_state() CLOSE -> SYN_SENT",
                "tcp_reset() SYN_SENT ECONNREFUSED",
                "tcp_set_state() SYN_SENT -> CLOSE",
                "sock_def_error_report() CLOSE ECONNREFUSED",
            ]
        );
        let mut w = watch();
        w.record(&rec(Kind::Socket, -1, 4), &inode, None);
        w.record(&rec(Kind::Connect, 4, 0), &inode, None);
        let mut dup = rec(Kind::Dup, 4, 9);
        dup.arg0 = 0;
        w.record(&dup, &|_, _| Some(1004), None);
        let mut recv = rec(Kind::Recv, 4, -1);
        recv.errno = libc::ECONNRESET;
        w.record(&recv, &inode, None);
        // A second failure is the same reset.
        let mut send = rec(Kind::Send, 4, -1);
        send.errno = libc::EPIPE;
        w.record(&send, &inode, None);
        w.record(&rec(Kind::Send, 4, 10), &inode, None);
        w.record(&rec(Kind::Close, 4, 0), &|_, _| None, None);
        assert_eq!(
            kept(&w)[2..],
            [
                "tcp_reset() ESTABLISHED ECONNRESET",
                "tcp_set_state() ESTABLISHED -> CLOSE",
                "sock_def_error_report() CLOSE ECONNRESET",
            ]
        );
    }

    /// A close the connection table did not apply (a vfork child's, under its parent's pid:
    /// the parent's descriptor still names the socket) leaves the socket watched.
    #[test]
    fn a_vfork_childs_close_is_not_the_parents() {
        let mut w = watch();
        w.record(&rec(Kind::Socket, -1, 6), &inode, None);
        w.record(&rec(Kind::Connect, 6, 0), &inode, None);
        w.record(&rec(Kind::Close, 6, 0), &inode, None);
        assert!(w.socks.contains_key(&(50, 6)));
        assert_eq!(kept(&w).len(), 2, "{:?}", kept(&w));
        w.record(&rec(Kind::Close, 6, 0), &|_, _| None, None);
        assert!(!w.socks.contains_key(&(50, 6)));
    }

    /// EPIPE is a reset unless the program's own shutdown is the next call on the socket (a
    /// blocked send failing after it, stamped before it).
    #[test]
    fn epipe_is_judged_by_the_next_call() {
        let mut epipe = rec(Kind::Send, 5, -1);
        epipe.errno = libc::EPIPE;
        let mut shut = rec(Kind::Shutdown, 5, 0);
        shut.arg0 = libc::SHUT_WR.into();
        let mut w = watch();
        w.record(&rec(Kind::Socket, -1, 5), &inode, None);
        w.record(&rec(Kind::Connect, 5, 0), &inode, None);
        w.record(&epipe, &inode, None);
        w.record(&shut, &inode, None);
        assert_eq!(
            kept(&w)[2..],
            [
                "tcp_set_state() ESTABLISHED -> FIN_WAIT1",
                "tcp_send_fin() FIN_WAIT1"
            ]
        );
        let mut w = watch();
        w.record(&rec(Kind::Socket, -1, 5), &inode, None);
        w.record(&rec(Kind::Connect, 5, 0), &inode, None);
        w.record(&epipe, &inode, None);
        w.record(&rec(Kind::Close, 5, 0), &|_, _| None, None);
        assert_eq!(
            kept(&w)[2..],
            [
                "tcp_reset() ESTABLISHED EPIPE",
                "tcp_set_state() ESTABLISHED -> CLOSE"
            ]
        );
    }

    fn sample(state: u8, total_retrans: u32, snd_wnd: u32, rcv_wnd: u32) -> Sample {
        let mut raw = vec![0u8; 240];
        raw[0] = state;
        raw[100..104].copy_from_slice(&total_retrans.to_ne_bytes());
        raw[228..232].copy_from_slice(&snd_wnd.to_ne_bytes());
        raw[232..236].copy_from_slice(&rcv_wnd.to_ne_bytes());
        Sample::from_bytes(&raw)
    }

    /// Consecutive samples: a state change, retransmissions counted from the last sample, zero
    /// windows once each until they open again.
    #[test]
    fn events_between_samples() {
        let mut w = Watched::new(1, 7, Some(SYN_SENT));
        let names = |v: Vec<Event>| -> Vec<String> {
            v.iter()
                .map(|e| format!("{} {} {:?}", e.what.name(), e.tcp_state, e.retransmitted))
                .collect()
        };
        let k = (1, 3);
        assert_eq!(
            names(sample_events(
                &sample(ESTABLISHED, 0, 100, 100),
                &mut w,
                k,
                5
            )),
            ["tcp_set_state() SYN_SENT -> ESTABLISHED None"]
        );
        assert_eq!(
            names(sample_events(&sample(ESTABLISHED, 3, 0, 100), &mut w, k, 6)),
            [
                "tcp_retransmit_skb() ESTABLISHED Some((3, 3))",
                "tcp_ack()/win==0 ESTABLISHED None"
            ]
        );
        assert_eq!(
            names(sample_events(&sample(ESTABLISHED, 5, 0, 0), &mut w, k, 7)),
            [
                "tcp_retransmit_skb() ESTABLISHED Some((2, 5))",
                "tcp_select_window()/win==0 ESTABLISHED None"
            ]
        );
        assert_eq!(
            names(sample_events(&sample(CLOSE_WAIT, 5, 10, 10), &mut w, k, 8)),
            [
                "tcp_fin() ESTABLISHED None",
                "tcp_set_state() ESTABLISHED -> CLOSE_WAIT None"
            ]
        );
        // A sample ahead of the connect's record: the states it went through.
        let mut w = Watched::new(1, 7, Some(CLOSE));
        assert_eq!(
            names(sample_events(&sample(FIN_WAIT2, 0, 10, 10), &mut w, k, 9)),
            [
                "tcp_set_state() CLOSE -> SYN_SENT None",
                "tcp_set_state() SYN_SENT -> ESTABLISHED None",
                "tcp_set_state() ESTABLISHED -> FIN_WAIT2 None"
            ]
        );
    }

    /// deeptcptracer's columns, widths included.
    #[test]
    fn columns_as_deeptcptracer() {
        let e = Event {
            what: What::State,
            ts_ns: 0,
            pid: 16065,
            tid: 16065,
            fd: 3,
            source: Some("10.0.2.15:60590".parse().expect("addr")),
            destination: Some("87.250.250.242:443".parse().expect("addr")),
            tcp_state: "SYN_SENT -> ESTABLISHED".into(),
            sk_err: None,
            retransmitted: None,
        };
        assert_eq!(
            columns(&e, "wget"),
            "tcp_set_state()         16065  wget             10.0.2.15:60590       \
             87.250.250.242:443    SYN_SENT -> ESTABLISHED"
        );
        assert!(header(false).starts_with("EVENT                   PID    COMM"));
        assert!(header(true).starts_with("TIME          EVENT"));
    }
}
