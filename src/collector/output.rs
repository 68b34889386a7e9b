//! The capture files of a run: one file, or one per process when the name has `%p`.
//!
//! A file is opened at its first packet (a run that captured nothing leaves no file), never
//! through a symlink, never a FIFO, block device or socket (opened non-blocking and checked
//! before anything is written), never a file with other hard links or of another user; a name
//! refused is tried once, and its packets counted as lost from then on. A
//! character device (`/dev/null`) is the user's explicit choice and is written as it is: never
//! created, never truncated. Buffers hold whole records only; a failed write is cut back to the
//! last whole record, so a full disk still leaves a readable capture.
//!
//! TLS keys the libraries logged go, as lines of NSS's key log format, into pcapng Decryption
//! Secrets Blocks (when the capture holds ciphertext: raw and both modes), each before the
//! packets that need it, and into the `--keylog` file, opened at its first line by the same
//! rules as a capture. A line comes once to each: the same secret may come from our hook and
//! from the key log file the program writes too (`key_file`).

use crate::fast_hash::{HashMap, HashSet};
use std::ffi::{CString, OsStr, OsString};
use std::hash::{Hash, Hasher};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::time::Duration;

use super::contents::Contents;
use super::machine::{Note, Origin};
use super::procfs;
use crate::output_path::{self, ProcessInfo};
use crate::quoted::{quoted, PATH_CHARS};
use crate::record::call_name;
use crate::sys;

/// Buffered bytes past which a capture's buffer is written out. 512 KiB fits this machine's L2
/// cache (per core): the bytes are still there when the kernel copies them, and 4 MiB writes
/// measured 2–4x slower than 512 KiB ones.
const HIGH_WATER: usize = 512 << 10;

/// Key lines kept for captures not open yet (about 5,000 connections' worth).
const MAX_PENDING_KEYS: usize = 1 << 20;

/// Where packets go and how they are written.
pub struct Outputs {
    pattern: OsString,
    pcapng: bool,
    per_process: bool,
    filter: Option<crate::filter::Filter>,
    /// Realtime minus monotonic, to stamp records taken on the monotonic clock.
    clock_offset_ns: i128,
    start_secs: u64,
    files: HashMap<i32, File>,
    exe: HashMap<i32, OsString>,
    /// Paths already reported as unwritable (said once), and how many packets each lost.
    refused: Vec<(OsString, u64)>,
    /// The files (by key, as `files`) whose path was refused: tried once, never again, so a
    /// capture never starts halfway through the run (and no open is made per packet).
    refused_keys: HashMap<i32, OsString>,
    /// `-w -`: the one output is standard output.
    stdout: bool,
    /// Write nothing (a bad filter: a user who asked for less never gets more).
    discard: bool,
    /// Write TLS keys into pcapng captures (which then hold ciphertext).
    keys_in_capture: bool,
    /// The captures hold ciphertext (raw and both modes), whatever their format.
    ciphertext: bool,
    /// Keys not yet written to a capture because it is not open yet, with their process.
    pending_keys: Vec<(i32, Vec<u8>)>,
    pending_bytes: usize,
    /// The `--keylog` file's name, and the file once opened.
    keylog_path: Option<OsString>,
    keylog: Option<File>,
    /// The key log could not be opened or written (said once; apart from the captures').
    keylog_refused: Vec<(OsString, u64)>,
    /// Hashes of the key lines written, to the key log (capture key `None`) and to each
    /// capture: eight bytes a line, however long the run.
    keys_written: HashSet<(Option<i32>, u64)>,
    /// The key log files the programs' environments name (`SSLKEYLOGFILE`).
    key_files: super::key_file::KeyFiles,
    /// NSS was seen without a key log file (said once).
    nss_said: bool,
    /// Executables said to speak TLS through a library we do not hook (each said once).
    unhooked: Vec<OsString>,
    /// The per-socket event traces (`--events`).
    traces: Option<super::sock_trace::SockTraces>,
    /// Frame numbers of the packets written since the last [`Outputs::take_frames`].
    frames: Vec<u64>,
    /// Each socket's packets also go to its own pcap (`-c`).
    sock_pcaps: bool,
    /// Packets of the record being applied, for the socket pcaps: (pid, fd, time, bytes). An
    /// accept's or a dup's packets come before the trace of their socket exists.
    sock_packets: Vec<(i32, i32, Duration, Vec<u8>)>,
    /// TCP_INFO samples and TCP events (`-b`, `-u`, `--tcp-events`).
    tcp: Option<super::tcp_events::TcpWatch>,
}

struct File {
    fd: i32,
    path: OsString,
    /// What the file is, for messages: "capture", "key log".
    what: &'static str,
    /// A character device: written as it is, never truncated.
    device: bool,
    buf: Vec<u8>,
    /// Bytes in the file, and packets among them (the rest are in `buf`).
    written: u64,
    packets_buffered: u64,
    broken: bool,
    /// Packets written to it: the last one's frame number.
    packets: u64,
    contents: Contents,
}

/// One capture file written whole, and what it holds.
pub struct Written {
    /// Its name, or `-` for standard output.
    pub path: OsString,
    pub contents: Contents,
}

/// What the run's outputs came to, for the CLI's end-of-run block.
#[derive(Default)]
pub struct Report {
    /// The capture files written whole, sorted by name.
    pub written: Vec<Written>,
    /// Packets went to a character device the user named (`/dev/null`).
    pub device: bool,
    /// Files that could not be opened or written (each said in its own line then), with the
    /// packets each lost.
    pub lost: Vec<(OsString, u64)>,
    /// The key log, when keys were written to it whole.
    pub keylog: Option<OsString>,
    /// The key log could not be opened or written (its line was printed then).
    pub keylog_failed: bool,
}

impl Outputs {
    pub fn new(
        pattern: &OsStr,
        pcapng: bool,
        filter: Option<crate::filter::Filter>,
        clock_offset_ns: i128,
        start_secs: u64,
    ) -> Outputs {
        Outputs {
            pattern: pattern.to_os_string(),
            pcapng,
            per_process: output_path::is_per_process(pattern),
            filter,
            clock_offset_ns,
            start_secs,
            files: HashMap::default(),
            exe: HashMap::default(),
            refused: Vec::new(),
            refused_keys: HashMap::default(),
            stdout: pattern == "-",
            discard: false,
            keys_in_capture: false,
            ciphertext: false,
            pending_keys: Vec::new(),
            pending_bytes: 0,
            keylog_path: None,
            keylog: None,
            keylog_refused: Vec::new(),
            keys_written: HashSet::default(),
            key_files: Default::default(),
            nss_said: false,
            unhooked: Vec::new(),
            traces: None,
            frames: Vec::new(),
            sock_pcaps: false,
            sock_packets: Vec::new(),
            tcp: None,
        }
    }

    /// Also sample TCP_INFO and derive TCP events as `settings` ask.
    pub fn tcp(mut self, settings: crate::config::TcpSettings, clock_offset_ns: i128) -> Outputs {
        self.tcp = settings.any().then(|| {
            let mut w = super::tcp_events::TcpWatch::new(settings, clock_offset_ns);
            if self.pcapng {
                w.note_packets();
            }
            w
        });
        self
    }

    /// Record `r` was applied; `inode` names the TCP socket a descriptor of a process holds.
    pub fn tcp_record(
        &mut self,
        r: &crate::record::Record,
        inode: &dyn Fn(i32, i32) -> Option<u64>,
    ) {
        if let Some(w) = &mut self.tcp {
            w.record(r, inode, self.traces.as_mut());
        }
    }

    /// The collector's loop came round at `now_ns` (monotonic): take the samples that are due.
    pub fn tcp_tick(&mut self, now_ns: u64) {
        if let Some(w) = &mut self.tcp {
            w.tick(now_ns, self.traces.as_mut());
        }
    }

    /// Process `pid` is gone (found dead from outside).
    pub fn tcp_process_gone(&mut self, pid: i32) {
        if let Some(w) = &mut self.tcp {
            w.process_gone(pid);
        }
    }

    /// Also write per-socket event traces under `dir` (records stamped on the monotonic clock,
    /// `clock_offset_ns` behind realtime).
    /// `pcaps`: each socket's packets also go beside its trace (`-c`).
    pub fn events(mut self, dir: Option<OsString>, pcaps: bool, clock_offset_ns: i128) -> Outputs {
        self.traces = dir.map(|d| {
            super::sock_trace::SockTraces::new(d.into(), clock_offset_ns, procfs::exe_path)
                .with_pcaps(pcaps)
        });
        self.sock_pcaps = pcaps && self.traces.is_some();
        self
    }

    /// Give the traces the packets waiting for their socket's trace; `last`: those whose
    /// socket never came are dropped (they belong to no traced socket).
    fn deliver_sock_packets(&mut self, last: bool) {
        let Some(t) = &mut self.traces else { return };
        self.sock_packets
            .retain(|(pid, fd, ts, bytes)| !t.packet(*pid, *fd, *ts, bytes) && !last);
    }

    /// The frame numbers of the packets written since the last call, and forget them.
    pub fn take_frames(&mut self) -> Vec<u64> {
        self.deliver_sock_packets(true);
        std::mem::take(&mut self.frames)
    }

    /// Record `r` was applied: its event goes to the traces with the frames it produced.
    pub fn trace_event(&mut self, r: &crate::record::Record) {
        if let Some(t) = &mut self.traces {
            if r.kind == crate::record::Kind::Start {
                // The name the program gave itself, else its executable's (while it lived); a
                // fork child (`arg1` 1) keeps its parent's.
                if !r.data.is_empty() {
                    t.name(r.pid, OsStr::from_bytes(r.data));
                } else if let Some(exe) = self.exe.get(&r.pid).filter(|_| r.arg1 == 0) {
                    t.name(r.pid, exe);
                }
            }
            let frames = std::mem::take(&mut self.frames);
            // An accept's packets (the handshake) are made on the listener's call but are the
            // new connection's, whose trace lists them.
            if r.kind == crate::record::Kind::Accept {
                for p in &mut self.sock_packets {
                    if (p.0, p.1) == (r.pid, r.fd) {
                        p.1 = r.ret as i32;
                    }
                }
            }
            // Before the record (a close ends its socket's trace), then after it (an accept
            // starts one).
            self.deliver_sock_packets(false);
            if let Some(t) = &mut self.traces {
                t.apply(r, &frames);
            }
            self.deliver_sock_packets(true);
        }
    }

    /// Where TLS keys go: into the pcapng capture (`in_capture`: it holds ciphertext) and into
    /// a key log file.
    pub fn keys(mut self, in_capture: bool, keylog: Option<OsString>) -> Outputs {
        self.keys_in_capture = in_capture && self.pcapng;
        self.ciphertext = in_capture;
        self.keylog_path = keylog;
        self
    }

    /// Outputs that write nothing.
    pub fn discard() -> Outputs {
        let mut o = Outputs::new(OsStr::new(""), false, None, 0, 0);
        o.discard = true;
        o
    }

    /// Note a process's executable while it is alive (for comments and `%e`); called at each
    /// image's start, so an exec replaces what was known.
    pub fn learn_process(&mut self, pid: i32) {
        self.exe.insert(pid, procfs::exe_path(pid));
        if self.per_process {
            // A new image (or a reused pid) may name another file (`%e`): it gets its own try.
            self.refused_keys.remove(&pid);
        }
    }

    /// Write one packet made by `origin`.
    pub fn packet(&mut self, origin: &Origin, bytes: &[u8]) {
        if origin.note == Some(Note::UnhookedTls) {
            self.say_unhooked(origin.pid);
        }
        if self.discard {
            return;
        }
        if let Some(f) = &self.filter {
            if !f.matches(bytes) {
                return;
            }
        }
        let ts = (origin.ts_ns as i128 + self.clock_offset_ns).max(0) as u128;
        let ts = Duration::from_nanos(ts.min(u64::MAX as u128) as u64);
        if self.sock_pcaps {
            self.sock_packets
                .push((origin.pid, origin.fd, ts, bytes.to_vec()));
        }
        let key = if self.per_process { origin.pid } else { 0 };
        if let Some(path) = self.refused_keys.get(&key) {
            lose(&mut self.refused, path.clone(), 1);
            return;
        }
        if !self.files.contains_key(&key) {
            let pid = origin.pid;
            self.exe.entry(pid).or_insert_with(|| procfs::exe_path(pid));
            match self.open(origin.pid) {
                Ok(mut f) => {
                    self.write_pending_keys(key, &mut f);
                    self.files.insert(key, f);
                }
                Err(path) => {
                    lose(&mut self.refused, path.clone(), 1);
                    self.refused_keys.insert(key, path);
                    return;
                }
            }
        }
        let comment = self.pcapng.then(|| {
            let mut c = self.comment(origin);
            // The TCP events seen on this socket since its last packet.
            let notes = self
                .tcp
                .as_mut()
                .map(|w| w.take_notes(origin.pid, origin.fd))
                .unwrap_or_default();
            if !notes.is_empty() {
                c.push_str("; tcp: ");
                c.push_str(&notes.join(", "));
            }
            c
        });
        let Some(file) = self.files.get_mut(&key) else {
            return;
        };
        if file.broken {
            lose(&mut self.refused, file.path.clone(), 1);
            return;
        }
        file.packets += 1;
        if self.traces.is_some() {
            self.frames.push(file.packets);
        }
        file.packets_buffered += 1;
        file.contents.add(bytes);
        match &comment {
            Some(c) => synth::pcapng_record(ts, bytes, c, &mut file.buf),
            // A packet that brings the buffer to the high-water mark goes to the file from where
            // it is, after the buffer, in the same `writev` (no copy of its bytes). Only then:
            // a `writev` for every 64 KiB packet measured slower (64 MiB bulk: a third more
            // system time in 1,026 writes than in 67, more than the copies it saved).
            None if file.buf.len() + synth::RECORD_HEADER_LEN + bytes.len() >= HIGH_WATER => {
                // As `pcap_record`, nothing for a record the format cannot hold.
                if let Some(header) = synth::pcap_record_header(ts, bytes.len()) {
                    file.write_out_with(&mut self.refused, &[&header, bytes]);
                }
                return;
            }
            None => synth::pcap_record(ts, bytes, &mut file.buf),
        }
        if file.buf.len() >= HIGH_WATER {
            file.write_out(&mut self.refused);
        }
    }

    /// Whether TLS keys go into the capture.
    pub fn keys_in_capture(&self) -> bool {
        self.keys_in_capture
    }

    /// A TLS library of `origin`'s process logged `line` (NSS key log format, no newline).
    pub fn tls_key(&mut self, origin: &Origin, line: &[u8]) {
        // One line of printable text, as the format is: anything else is not a key line and
        // would break the lines after it.
        if self.discard
            || line.is_empty()
            || !line.iter().all(|b| b.is_ascii_graphic() || *b == b' ')
        {
            return;
        }
        let mut text = Vec::with_capacity(line.len() + 1);
        text.extend_from_slice(line);
        text.push(b'\n');
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        line.hash(&mut hasher);
        let hash = hasher.finish();
        if self.keys_written.insert((None, hash)) {
            self.log_key(&text);
        }
        if !self.keys_in_capture {
            return;
        }
        let key = if self.per_process { origin.pid } else { 0 };
        if !self.keys_written.insert((Some(key), hash)) {
            return;
        }
        match self.files.get_mut(&key) {
            Some(f) if !f.broken => synth::pcapng_secrets(&text, &mut f.buf),
            Some(_) => {}
            // Written when the file opens, before its first packet. A file that never opens
            // (its packets filtered away) would keep them forever: kept up to a bound.
            None if self.pending_bytes + text.len() <= MAX_PENDING_KEYS => {
                self.pending_bytes += text.len();
                self.pending_keys.push((origin.pid, text));
            }
            None => {}
        }
    }

    /// Process `pid` names key log file `path`, of `size` bytes and inode `inode` at its load:
    /// its new lines are read from now on ([`Outputs::read_key_files`]).
    pub fn watch_key_file(&mut self, pid: i32, path: &[u8], size: i64, inode: u64) {
        if !self.discard {
            self.key_files.watch(pid, path, size, inode);
        }
    }

    /// The key lines written to the watched key log files since the last call, each with the
    /// process it is credited to.
    pub fn read_key_files(&mut self) -> Vec<(i32, Vec<u8>)> {
        if self.key_files.is_empty() {
            return Vec::new();
        }
        self.key_files.read()
    }

    /// Process `pid` runs TLS through NSS and names no key log file: said once per run, with
    /// what to do, when the keys were wanted (a capture of ciphertext, or `--keylog`).
    pub fn nss_without_keys(&mut self, pid: i32) {
        if self.nss_said || self.discard || !self.ciphertext && self.keylog_path.is_none() {
            return;
        }
        self.nss_said = true;
        let exe = self
            .exe
            .entry(pid)
            .or_insert_with(|| procfs::exe_path(pid))
            .clone();
        eprintln!(
            "netintercept: {} (pid {pid}) speaks TLS through NSS, which writes its keys only to \
             the file SSLKEYLOGFILE names: run netintercept with --nss-keys, or set \
             SSLKEYLOGFILE, for keys that decrypt its connections",
            quoted(exe.as_bytes(), PATH_CHARS)
        );
    }

    /// Append `text` (a line and its newline) to the key log file, opening it at the first.
    fn log_key(&mut self, text: &[u8]) {
        let Some(path) = &self.keylog_path else {
            return;
        };
        if self.keylog.is_none() {
            if !self.keylog_refused.is_empty() {
                return;
            }
            match open_capture(path) {
                Ok((fd, device)) => {
                    self.keylog = Some(File {
                        fd,
                        path: path.clone(),
                        what: "key log",
                        device,
                        buf: Vec::new(),
                        written: 0,
                        packets: 0,
                        packets_buffered: 0,
                        broken: false,
                        contents: Contents::default(),
                    })
                }
                Err(reason) => {
                    eprintln!(
                        "netintercept: cannot write key log to {}: {reason}",
                        quoted(path.as_bytes(), PATH_CHARS)
                    );
                    self.keylog_refused.push((path.clone(), 0));
                    return;
                }
            }
        }
        if let Some(f) = self.keylog.as_mut().filter(|f| !f.broken) {
            f.buf.extend_from_slice(text);
            if f.buf.len() >= HIGH_WATER {
                f.write_out(&mut self.keylog_refused);
            }
        }
    }

    /// Capture `f` (key `key`) was just opened: the keys its process(es) logged before go first.
    fn write_pending_keys(&mut self, key: i32, f: &mut File) {
        let per_process = self.per_process;
        let mut kept_bytes = 0;
        self.pending_keys.retain(|(pid, text)| {
            if per_process && *pid != key {
                kept_bytes += text.len();
                return true;
            }
            synth::pcapng_secrets(text, &mut f.buf);
            false
        });
        self.pending_bytes = kept_bytes;
    }

    /// Process `pid` was seen starting TLS through a library we do not hook: said once per
    /// executable.
    fn say_unhooked(&mut self, pid: i32) {
        let exe = self
            .exe
            .entry(pid)
            .or_insert_with(|| procfs::exe_path(pid))
            .clone();
        if self.unhooked.contains(&exe) {
            return;
        }
        eprintln!(
            "netintercept: {} (pid {pid}) speaks TLS through a library netintercept does not hook \
             (linked into the program, as node's OpenSSL, BoringSSL, Go's or rustls): its TLS \
             connections are ciphertext in the capture, with no keys",
            quoted(exe.as_bytes(), PATH_CHARS)
        );
        self.unhooked.push(exe);
    }

    /// Write everything buffered.
    pub fn flush(&mut self) {
        if let Some(t) = &mut self.traces {
            t.flush();
        }
        for f in self.files.values_mut() {
            f.write_out(&mut self.refused);
        }
        if let Some(f) = &mut self.keylog {
            f.write_out(&mut self.keylog_refused);
        }
    }

    /// Close the key log file; its name when it was written whole (a device too).
    fn close_keylog(&mut self) -> Option<OsString> {
        let mut f = self.keylog.take()?;
        f.write_out(&mut self.keylog_refused);
        if f.fd > 2 {
            sys::close(f.fd);
        }
        (!f.broken).then_some(f.path)
    }

    /// Flush and close every file; says what was written and what was lost.
    pub fn close(&mut self) -> Report {
        self.deliver_sock_packets(true);
        if let Some(t) = &mut self.traces {
            t.finish();
        }
        self.flush();
        let mut report = Report::default();
        for (_, f) in self.files.drain() {
            if f.fd > 2 {
                sys::close(f.fd);
            }
            if f.broken {
                continue;
            }
            if f.device {
                report.device = true;
            } else {
                report.written.push(Written {
                    path: f.path,
                    contents: f.contents,
                });
            }
        }
        report.written.sort_by(|a, b| a.path.cmp(&b.path));
        report.lost = std::mem::take(&mut self.refused);
        report.keylog = self.close_keylog();
        report.keylog_failed = !self.keylog_refused.is_empty();
        report
    }

    fn comment(&self, o: &Origin) -> String {
        let call = call_name(o.call);
        let library = match call {
            c if c.starts_with("SSL_") || c.starts_with("BIO_") => " tls=OpenSSL",
            c if c.starts_with("PR_") => " tls=NSS",
            c if c.starts_with("gnutls_") => " tls=GnuTLS",
            _ => "",
        };
        // A comment is UTF-8 text (pcapng's opt_comment): a name that is not is shown lossily.
        let exe = self.exe.get(&o.pid).map(|e| e.as_bytes()).unwrap_or(b"");
        let exe = exe.rsplit(|&b| b == b'/').next().unwrap_or(b"");
        let exe = String::from_utf8_lossy(exe);
        let note = o.note.map(|n| format!("; {n}")).unwrap_or_default();
        format!(
            "pid={} tid={} exe={exe} fd={} call={call}{library}{note}",
            o.pid, o.tid, o.fd
        )
    }

    /// Open the file `pid`'s packets go to; on failure (said once per path) its path.
    fn open(&mut self, pid: i32) -> Result<File, OsString> {
        let info = ProcessInfo {
            pid,
            start_secs: self.start_secs,
            host: hostname::get().unwrap_or_default(),
            exe_path: self.exe.get(&pid).cloned().unwrap_or_default(),
            // SAFETY: getuid cannot fail.
            uid: unsafe { libc::getuid() },
        };
        let header = if self.pcapng {
            synth::pcapng_header(&synth::SectionInfo {
                host: &info.host.to_string_lossy(),
                os: std::env::consts::OS,
                application: concat!("netintercept ", env!("CARGO_PKG_VERSION")),
                command_line: &procfs::command_line(pid),
            })
        } else {
            synth::pcap_header()
        };
        let (fd, path, device) = if self.stdout {
            (1, OsString::from("-"), false)
        } else {
            let path = output_path::expand(&self.pattern, &info);
            match open_capture(&path) {
                Ok((fd, device)) => (fd, path, device),
                Err(reason) => {
                    if !self.refused.iter().any(|(p, _)| *p == path) {
                        eprintln!(
                            "netintercept: cannot write capture to {}: {reason}",
                            quoted(path.as_bytes(), PATH_CHARS)
                        );
                        self.refused.push((path.clone(), 0));
                    }
                    return Err(path);
                }
            }
        };
        Ok(File {
            fd,
            path,
            what: "capture",
            device,
            buf: header,
            written: 0,
            packets: 0,
            packets_buffered: 0,
            broken: false,
            contents: Contents::default(),
        })
    }
}

/// Count `packets` lost for `path` (already said to be unwritable).
fn lose(refused: &mut Vec<(OsString, u64)>, path: OsString, packets: u64) {
    match refused.iter_mut().find(|(p, _)| *p == path) {
        Some((_, n)) => *n += packets,
        None => refused.push((path, packets)),
    }
}

impl File {
    fn write_out(&mut self, refused: &mut Vec<(OsString, u64)>) {
        if self.buf.is_empty() {
            return;
        }
        self.write_out_with(refused, &[]);
    }

    /// Write the buffer, then `tail` (the rest of the last packet's record), with one `writev`.
    fn write_out_with(&mut self, refused: &mut Vec<(OsString, u64)>, tail: &[&[u8]]) {
        if self.broken {
            return;
        }
        let mut parts: [&[u8]; sys::MAX_PARTS] = [&[]; sys::MAX_PARTS];
        parts[0] = &self.buf;
        let count = 1 + tail.len().min(sys::MAX_PARTS - 1);
        parts[1..count].copy_from_slice(&tail[..count - 1]);
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if let Err(e) = sys::writev_all(self.fd, &parts[..count]) {
            // Cut a partial record off, so what is in the file stays readable (a device has no
            // length to cut back).
            if !self.device {
                let _ = sys::ftruncate(self.fd, self.written as i64);
            }
            eprintln!(
                "netintercept: cannot write {} to {}: {}",
                self.what,
                quoted(self.path.as_bytes(), PATH_CHARS),
                sys::strerror(e)
            );
            // Everything since the last whole write is cut off: the buffered packets are lost.
            lose(refused, self.path.clone(), self.packets_buffered);
            self.packets_buffered = 0;
            self.broken = true;
            self.buf = Vec::new();
            return;
        }
        self.written += len as u64;
        self.packets_buffered = 0;
        self.buf.clear();
    }
}

/// Open `path` for a new capture: a regular file of ours with one link (emptied), a new one
/// (0600), or a character device named explicitly (`/dev/null`: opened as it is). Returns the
/// descriptor and whether it is a device.
fn open_capture(path: &OsStr) -> Result<(i32, bool), String> {
    let c = CString::new(path.as_bytes()).map_err(|_| "the name holds a NUL byte".to_string())?;
    // O_CREAT creates nothing where a name exists, so a device is opened, never made; without
    // O_TRUNC a device or another user's file is not touched before the checks below.
    let fd = sys::open(
        &c,
        libc::O_WRONLY
            | libc::O_CREAT
            | libc::O_NOFOLLOW
            | libc::O_NONBLOCK
            | libc::O_NOCTTY
            | libc::O_CLOEXEC,
        0o600,
    )
    .map_err(|e| match e {
        libc::ELOOP => "it is a symbolic link".to_string(),
        // A FIFO without a reader (or a unix socket) refuses a non-blocking writer with ENXIO,
        // whose text ("No such device or address") would not say what the name is.
        libc::ENXIO => match std::fs::symlink_metadata(path).map(|m| m.file_type()) {
            Ok(t) if t.is_fifo() => "it is a FIFO".to_string(),
            Ok(t) if t.is_socket() => "it is a socket".to_string(),
            _ => sys::strerror(e),
        },
        e => sys::strerror(e),
    })?;
    let checked = (|| {
        let st = sys::fstat(fd).map_err(sys::strerror)?;
        let device = match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => false,
            // Only a name the user gave can lead here: an unprivileged user cannot plant a
            // device node (mknod needs CAP_MKNOD) to divert a capture into.
            libc::S_IFCHR => true,
            libc::S_IFIFO => return Err("it is a FIFO".to_string()),
            libc::S_IFBLK => return Err("it is a block device".to_string()),
            libc::S_IFSOCK => return Err("it is a socket".to_string()),
            _ => return Err("not a regular file".to_string()),
        };
        if !device {
            if st.st_nlink > 1 {
                return Err("it has other hard links".to_string());
            }
            // SAFETY: geteuid cannot fail.
            if st.st_uid != unsafe { libc::geteuid() } {
                return Err("it belongs to another user".to_string());
            }
            sys::ftruncate(fd, 0).map_err(sys::strerror)?;
        }
        // SAFETY: clearing O_NONBLOCK on our own descriptor: a device that is slow to take the
        // bytes (a terminal) is waited for, as a file is.
        unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_WRONLY) };
        Ok(device)
    })();
    match checked {
        Ok(device) => Ok((fd, device)),
        Err(e) => {
            sys::close(fd);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(pid: i32) -> Origin {
        Origin {
            pid,
            tid: pid,
            fd: 3,
            call: 0,
            ts_ns: 1,
            note: None,
        }
    }

    /// A refused path is tried once: once it could be written (the link removed), later packets
    /// still do not start a capture halfway through the run, and each counts as lost.
    #[test]
    fn a_refused_path_is_tried_once() {
        let dir = std::env::temp_dir().join(format!("ni-refused-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("dir");
        let path = dir.join("c.pcap");
        std::os::unix::fs::symlink(dir.join("elsewhere"), &path).expect("symlink");
        let mut o = Outputs::new(path.as_os_str(), false, None, 0, 0);
        o.packet(&origin(10), &[0x45; 20]);
        std::fs::remove_file(&path).expect("link removed");
        o.packet(&origin(10), &[0x45; 20]);
        let report = o.close();
        assert!(!path.exists() && !dir.join("elsewhere").exists());
        assert_eq!(report.lost, [(path.into_os_string(), 2)]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
