//! Key log files the traced programs' environments name (`SSLKEYLOGFILE`), read as they grow.
//!
//! NSS (Firefox, tstclnt) writes its TLS secrets to that file and nowhere a hook can see them
//! (its writer is not exported, and `SSL_SecretCallback` gives TLS 1.3's only, and may be the
//! program's own). The file is the user's: it is opened read-only, never written, never
//! created; a file that is not a regular one (a FIFO would block, a device never end) is not
//! read, and said so once. Each file is read from where it ended when the first process that
//! named it loaded, so a file kept across runs gives none of the earlier runs' keys; one that
//! shrinks was emptied, and is read again from its start.

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};

use crate::quoted::{quoted, PATH_CHARS};

/// Bytes of a line kept while its end has not been written: a key line is under 200.
const MAX_LINE: usize = 4096;

/// The key log files of a run, by path.
#[derive(Default)]
pub struct KeyFiles {
    files: Vec<Tailed>,
}

struct Tailed {
    path: OsString,
    /// The latest process that named it (the lines' owner when no ClientHello tells).
    pid: i32,
    /// Its size and inode when first named (inode 0: it did not exist).
    size_at_load: u64,
    inode_at_load: u64,
    file: Option<File>,
    /// Bytes read so far, and the start of a line not ended yet.
    offset: u64,
    partial: Vec<u8>,
    /// It cannot be read (said once): no more tries.
    refused: bool,
}

impl KeyFiles {
    /// Process `pid` names key log file `path` (absolute), of `size` bytes and inode `inode`
    /// at its load (`size` negative: absent).
    pub fn watch(&mut self, pid: i32, path: &[u8], size: i64, inode: u64) {
        if path.is_empty() {
            return;
        }
        if let Some(t) = self.files.iter_mut().find(|t| t.path.as_bytes() == path) {
            // Already read from where the first process found it.
            t.pid = pid;
            return;
        }
        self.files.push(Tailed {
            path: std::ffi::OsStr::from_bytes(path).to_os_string(),
            pid,
            size_at_load: size.max(0) as u64,
            inode_at_load: if size < 0 { 0 } else { inode },
            file: None,
            offset: 0,
            partial: Vec::new(),
            refused: false,
        });
    }

    /// Whether any file is watched.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The whole lines written since the last call, each with the process it is credited to;
    /// comments and blank lines left out.
    pub fn read(&mut self) -> Vec<(i32, Vec<u8>)> {
        let mut lines = Vec::new();
        for t in &mut self.files {
            t.read(&mut lines);
        }
        lines
    }
}

/// Whether `line` is a key log line: `LABEL <hex> <hex>`, the label in capitals, digits and
/// underscores. Nothing else of the file reaches a capture: it is the program's to name, and
/// may name a file that is no key log at all.
fn is_key_line(line: &[u8]) -> bool {
    let mut fields = line.split(|&b| b == b' ');
    let label = fields.next().unwrap_or_default();
    let hex = |f: Option<&[u8]>| {
        f.is_some_and(|f| {
            !f.is_empty() && f.len() <= MAX_LINE && f.iter().all(u8::is_ascii_hexdigit)
        })
    };
    !label.is_empty()
        && label
            .iter()
            .all(|&b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        && hex(fields.next())
        && hex(fields.next())
        && fields.next().is_none()
}

impl Tailed {
    fn read(&mut self, lines: &mut Vec<(i32, Vec<u8>)>) {
        if self.refused || (self.file.is_none() && !self.open()) {
            return;
        }
        let Some(file) = &self.file else { return };
        if file.metadata().is_ok_and(|m| m.len() < self.offset) {
            // Emptied (or cut): what is there now is new.
            self.offset = 0;
            self.partial.clear();
        }
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match file.read_at(&mut buf, self.offset) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.refuse(&format!("cannot be read: {e}"));
                    return;
                }
            };
            self.offset += n as u64;
            for piece in buf[..n].split_inclusive(|&b| b == b'\n') {
                let Some(line) = piece.strip_suffix(b"\n") else {
                    // A line still being written: kept for the next read, up to a bound (beyond
                    // it, it is no key line, and is dropped whole).
                    if self.partial.len() + piece.len() <= MAX_LINE {
                        self.partial.extend_from_slice(piece);
                    } else {
                        self.partial = vec![b'#'];
                    }
                    continue;
                };
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                if whole.last() == Some(&b'\r') {
                    whole.pop();
                }
                if is_key_line(&whole) {
                    lines.push((self.pid, whole));
                }
            }
        }
    }

    /// Open the file, once it exists; false while it cannot be read yet.
    fn open(&mut self) -> bool {
        let opened = std::fs::OpenOptions::new()
            .read(true)
            // Never blocks on a FIFO, never becomes a controlling terminal; std adds O_CLOEXEC.
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&self.path);
        let file = match opened {
            Ok(f) => f,
            // The library creates it when it first logs.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return false,
            Err(e) => {
                self.refuse(&format!("cannot be read: {e}"));
                return false;
            }
        };
        let Ok(meta) = file.metadata() else {
            return false;
        };
        if !meta.file_type().is_file() {
            self.refuse("is not a regular file");
            return false;
        }
        // The same file as at load: its older lines are not this run's.
        if meta.ino() == self.inode_at_load && meta.len() >= self.size_at_load {
            self.offset = self.size_at_load;
        }
        self.file = Some(file);
        true
    }

    fn refuse(&mut self, why: &str) {
        eprintln!(
            "netintercept: the key log file SSLKEYLOGFILE names, {}, {why}: the TLS keys written \
             there are not in the capture",
            quoted(self.path.as_bytes(), PATH_CHARS)
        );
        self.refused = true;
        self.file = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ni-keyfile-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir(&d).expect("temp dir");
        d
    }

    fn read(k: &mut KeyFiles) -> Vec<String> {
        k.read()
            .into_iter()
            .map(|(_, l)| String::from_utf8(l).expect("text"))
            .collect()
    }

    /// Lines written before the process loaded are not read; lines are given whole, once, as
    /// they are ended; comments are left out; a file emptied is read again from its start.
    #[test]
    fn tails_from_where_it_was_at_load() {
        let d = temp_dir("tail");
        let path = d.join("keys.log");
        std::fs::write(&path, "OLD 00 11\n").expect("old run");
        let meta = std::fs::metadata(&path).expect("meta");
        let mut k = KeyFiles::default();
        k.watch(
            7,
            path.as_os_str().as_bytes(),
            meta.len() as i64,
            meta.ino(),
        );
        assert!(read(&mut k).is_empty());
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("append");
        f.write_all(b"# comment\nA 01 02\nnot a key line\nB 03")
            .expect("write");
        assert_eq!(read(&mut k), ["A 01 02"]);
        f.write_all(b" 04\r\n").expect("write");
        assert_eq!(read(&mut k), ["B 03 04"]);
        assert!(read(&mut k).is_empty(), "each line once");
        f.set_len(0).expect("emptied");
        f.write_all(b"C 05 06\n").expect("write");
        assert_eq!(read(&mut k), ["C 05 06"]);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A file that did not exist at load is read whole once it appears; a second process naming
    /// it takes its lines from then on, and does not read it again.
    #[test]
    fn a_file_made_later_is_read_whole() {
        let d = temp_dir("later");
        let path = d.join("keys.log");
        let mut k = KeyFiles::default();
        k.watch(7, path.as_os_str().as_bytes(), -1, 0);
        assert!(k.read().is_empty());
        std::fs::write(&path, "A 01 02\n").expect("made");
        k.watch(8, path.as_os_str().as_bytes(), 8, 1);
        assert_eq!(k.read(), [(8, b"A 01 02".to_vec())]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn only_key_lines() {
        assert!(is_key_line(b"CLIENT_TRAFFIC_SECRET_0 00aB 11"));
        assert!(is_key_line(b"RSA 0011 22"));
        for bad in [
            &b""[..],
            b"# SSL/TLS secrets log file, generated by NSS",
            b"root:x:0:0:root:/root:/bin/bash",
            b"CLIENT_RANDOM 00 11 22",
            b"CLIENT_RANDOM 00",
            b"client_random 00 11",
            b"CLIENT_RANDOM 0g 11",
        ] {
            assert!(!is_key_line(bad), "{}", String::from_utf8_lossy(bad));
        }
    }

    /// A FIFO is never opened for reading in a way that blocks, and is refused.
    #[test]
    fn a_fifo_is_refused() {
        let d = temp_dir("fifo");
        let path = d.join("keys.fifo");
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path");
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let mut k = KeyFiles::default();
        k.watch(7, path.as_os_str().as_bytes(), 0, 0);
        assert!(k.read().is_empty());
        assert!(k.files[0].refused);
        let _ = std::fs::remove_dir_all(&d);
    }
}
