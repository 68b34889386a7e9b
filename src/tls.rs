//! Decrypted TLS: which connections carry TLS, and the SSL call under way on this thread.
//!
//! In the default mode (`NETINTERCEPT_TLS=plain`) a connection that carries TLS shows its
//! plaintext, recorded by the OpenSSL/NSPR hooks, and none of its ciphertext: socket calls made
//! inside an SSL call are ciphertext, and they also tell which descriptor an SSL object uses when
//! `SSL_get_fd` cannot (a custom BIO, as curl's). A connection becomes TLS at the first SSL call
//! or the first ciphertext seen inside one, so a ClientHello is never written as data; bytes sent
//! in the clear before that (a STARTTLS exchange) stay, as they really were plaintext. An SSL
//! object on memory BIOs (Python's asyncio) makes no socket call at all: the collector ties it
//! to its socket by the handshake bytes the program moves between the two (`collector::mem_bio`).
//! `NETINTERCEPT_TLS=raw` writes the wire bytes only, as if no TLS library were hooked; the hooks
//! still say which connections they run (so the collector can tell TLS it cannot decrypt: see
//! `Note::UnhookedTls`) and log the session keys (`Kind::TlsKey`), which decrypt those bytes.
//! `NETINTERCEPT_TLS=both` records the wire bytes on the connection's own stream and the
//! plaintext on a parallel stream (same addresses and server port, the client's port XOR 0x8000:
//! see `synth::TcpStream::parallel`), so Wireshark dissects TLS on one and the application
//! protocol on the other.

use std::cell::Cell;

use dashmap::DashMap;
use once_cell::sync::Lazy;

/// What the capture shows of a TLS connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The plaintext, on the connection's own stream.
    Plain,
    /// The ciphertext as it went on the wire.
    Raw,
    /// The ciphertext on the connection's stream, the plaintext on a parallel one.
    Both,
}

impl Mode {
    /// Whether the SSL/NSPR hooks record plaintext.
    pub fn decrypts(self) -> bool {
        self != Mode::Raw
    }
}

/// The mode chosen by `NETINTERCEPT_TLS` (an unknown value means plain; the collector says so).
pub fn mode() -> Mode {
    static MODE: Lazy<Mode> =
        Lazy::new(|| parse(std::env::var_os("NETINTERCEPT_TLS").as_deref()).0);
    *MODE
}

/// The line the collector prints when `NETINTERCEPT_TLS` names no mode.
pub fn complaint() -> Option<String> {
    parse(std::env::var_os("NETINTERCEPT_TLS").as_deref()).1
}

/// A value that is not UTF-8 names no mode either: it is said, not silently taken as unset.
fn parse(value: Option<&std::ffi::OsStr>) -> (Mode, Option<String>) {
    match value.map(|v| v.to_str().ok_or(v)) {
        Some(Ok("raw")) => (Mode::Raw, None),
        Some(Ok("both")) => (Mode::Both, None),
        Some(Ok("plain")) | Some(Ok("")) | None => (Mode::Plain, None),
        Some(Ok(_)) | Some(Err(_)) => {
            let bytes = value.map(|v| v.as_encoded_bytes()).unwrap_or_default();
            let shown = crate::quoted::quoted(bytes, crate::quoted::VALUE_CHARS);
            (
                Mode::Plain,
                Some(format!(
                    "NETINTERCEPT_TLS={shown} is not plain, raw or both: using plain"
                )),
            )
        }
    }
}

/// How many first bytes of a ciphertext chunk identify it (see `on_tls_cipher`): the record
/// header and the start of the hello, whose 32 random bytes begin at byte 11.
pub const CIPHER_HEAD: usize = 32;

/// Whether `bytes` start with a TLS handshake record (content type 22, version 3.0 to 3.4): what
/// each side of a TLS connection sends first, the ClientHello and the ServerHello.
pub fn starts_handshake(bytes: &[u8]) -> bool {
    matches!(bytes, [0x16, 0x03, minor, ..] if *minor <= 4)
}

/// Whether `bytes` start a TLS record holding a ClientHello (handshake type 1, when that byte is
/// there: OpenSSL reads a record's 5-byte header alone first): the first bytes of every TLS
/// connection, from the client.
pub fn starts_client_hello(bytes: &[u8]) -> bool {
    starts_handshake(bytes) && bytes.get(5).is_none_or(|&t| t == 1)
}

thread_local! {
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// Enter an SSL call on object `ssl` (any non-zero key); returns what to pass to [`leave`].
/// A non-zero return means this call is nested inside another SSL call.
pub fn enter(ssl: usize) -> usize {
    CURRENT
        .try_with(|c| {
            let prev = c.get();
            if prev == 0 {
                c.set(ssl);
                crate::recorder::tls_call(ssl, true);
            }
            prev
        })
        .unwrap_or(usize::MAX)
}

/// Leave the SSL call entered with [`enter`].
pub fn leave(prev: usize) {
    if prev == 0 {
        let ssl = CURRENT.try_with(|c| c.replace(0)).unwrap_or(0);
        if ssl != 0 {
            crate::recorder::tls_call(ssl, false);
        }
    }
}

/// The SSL object whose call this thread is inside, or 0.
pub fn current() -> usize {
    CURRENT.try_with(Cell::get).unwrap_or(0)
}

static DESCRIPTORS: Lazy<DashMap<usize, i32>> = Lazy::new(DashMap::new);

/// Remember that `ssl` talks through descriptor `fd`.
pub fn bind(ssl: usize, fd: i32) {
    DESCRIPTORS.insert(ssl, fd);
}

/// The descriptor `ssl` was seen to use.
pub fn fd_of(ssl: usize) -> Option<i32> {
    DESCRIPTORS.get(&ssl).map(|e| *e)
}

/// `ssl` was freed.
pub fn forget(ssl: usize) {
    DESCRIPTORS.remove(&ssl);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn modes_and_the_line_for_anything_else() {
        let p = |v: &[u8]| parse(Some(OsStr::from_bytes(v)));
        assert_eq!(p(b"raw"), (Mode::Raw, None));
        assert_eq!(p(b"both"), (Mode::Both, None));
        assert_eq!(parse(None), (Mode::Plain, None));
        let (mode, line) = p(b"raw\xff");
        assert_eq!(mode, Mode::Plain);
        assert_eq!(
            line.as_deref(),
            Some(r"NETINTERCEPT_TLS='raw\xff' is not plain, raw or both: using plain")
        );
    }
}
