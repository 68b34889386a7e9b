//! OpenSSL BIOs: TLS through OpenSSL where the program neither gives the SSL object a socket
//! nor calls `SSL_read`/`SSL_write` for its plaintext.
//!
//! - An SSL BIO (`BIO_f_ssl`: `openssl s_server -WWW`, `BIO_new_ssl_connect`): the program reads
//!   and writes plaintext with `BIO_read`, `BIO_write`, … on it, and OpenSSL 3's SSL BIO calls
//!   libssl's internal functions, never the exported `SSL_read`. So a call on an SSL BIO is an
//!   SSL call on the BIO's SSL object (`openssl::enter`: the object's socket, the thread marked,
//!   the outermost call records the plaintext); OpenSSL 1.1's SSL BIO calls `SSL_read` itself,
//!   nested, so that call records nothing. A buffering BIO on top (s_server's) needs nothing:
//!   libcrypto calls `BIO_read`/`BIO_write` on the SSL BIO under it through its PLT, so these
//!   hooks see the SSL BIO's own bytes.
//! - Memory BIOs (`BIO_s_mem`: Python's asyncio through `ssl.MemoryBIO`): the SSL object has no
//!   socket; outside any SSL call the program reads ciphertext out of the write BIO and sends it,
//!   and writes what it received into the read BIO. [`note_memory_bios`] tells the collector
//!   which BIOs an SSL object uses, and each handshake record the program moves through a memory
//!   BIO is reported by its first bytes; the collector finds the same bytes on a socket and so
//!   the SSL object's descriptor (`collector::mem_bio` says why there).
//!
//! Any other BIO (files, sockets, the BIOs libssl itself reads and writes inside SSL calls) costs
//! one call to `BIO_method_type` before the real call, nothing after.
#![allow(non_snake_case)]

use std::mem::transmute;
use std::ptr;

use libc::{c_char, c_int, c_long, c_void, size_t};
use netintercept_core::events::{self, record};
use netintercept_core::real_fn::{RealFn, LIBCRYPTO, LIBSSL};
use netintercept_core::{sys, tls};
use synth::Side;

use super::bytes;
use super::openssl::{self, ex_count};

/// `BIO_TYPE_SSL` (7 | BIO_TYPE_FILTER).
const BIO_TYPE_SSL: c_int = 0x0207;
/// `BIO_TYPE_MEM` (1 | BIO_TYPE_SOURCE_SINK): `BIO_s_mem` and `BIO_s_secmem`.
const BIO_TYPE_MEM: c_int = 0x0401;
/// The control behind the `BIO_get_ssl` macro.
const BIO_C_GET_SSL: c_int = 110;

/// What a BIO is to these hooks.
enum Bio {
    /// An SSL BIO over this SSL object: its calls are SSL calls.
    Ssl(*mut c_void),
    /// A memory BIO touched outside any SSL call: maybe the program moving ciphertext.
    Memory,
    /// Anything else: passed through.
    Other,
}

fn classify(bio: *mut c_void) -> Bio {
    // In every mode, as `openssl::enter`: only the plaintext depends on it.
    if bio.is_null() {
        return Bio::Other;
    }
    match method_type(bio) {
        BIO_TYPE_SSL => ssl_of(bio).map_or(Bio::Other, Bio::Ssl),
        // Inside an SSL call it is libssl reading or writing its own BIO: not the program.
        BIO_TYPE_MEM if tls::current() == 0 && is_memory_buffer(bio) => Bio::Memory,
        _ => Bio::Other,
    }
}

/// A read or write on SSL BIO `bio` over `ssl`: an SSL call moving plaintext at `buf` to the
/// peer (`side` Local) or from it (Remote); `moved` turns the result into a byte count.
fn ssl_call(
    ssl: *mut c_void,
    side: Side,
    buf: *const c_void,
    call: &'static str,
    real: impl FnOnce() -> c_int,
    moved: impl FnOnce(c_int) -> usize,
) -> c_int {
    let prev = openssl::enter(ssl);
    let ret = real();
    openssl::leave(prev, ssl, side, buf, moved(ret), call);
    if side == Side::Remote {
        openssl::note_close(prev, ssl, ret);
    }
    ret
}

/// A read out of (`side` Local) or a write into (Remote) memory BIO `bio`, outside SSL calls:
/// handshake ciphertext on its way to or from a socket is reported by its first bytes.
fn memory_call(
    bio: *mut c_void,
    side: Side,
    buf: *const c_void,
    real: impl FnOnce() -> c_int,
    moved: impl FnOnce(c_int) -> usize,
) -> c_int {
    let ret = real();
    let n = moved(ret);
    if n > 0 {
        // SAFETY: the call just filled or took `n` bytes at `buf`.
        let data = unsafe { bytes(buf, n) };
        record(|| events::on_tls_cipher(bio as usize, side, data));
    }
    ret
}

fn count(ret: c_int) -> usize {
    ret.max(0) as usize
}

hook!(REAL_BIO_READ in LIBCRYPTO, fn BIO_read(bio: *mut c_void, buf: *mut c_void, len: c_int) -> c_int, |real| {
    // SAFETY: forwarding the caller's arguments unchanged.
    let call = || unsafe { real(bio, buf, len) };
    match classify(bio) {
        Bio::Ssl(ssl) => ssl_call(ssl, Side::Remote, buf, "BIO_read", call, count),
        Bio::Memory => memory_call(bio, Side::Local, buf, call, count),
        Bio::Other => call(),
    }
});

hook!(REAL_BIO_WRITE in LIBCRYPTO, fn BIO_write(bio: *mut c_void, buf: *const c_void, len: c_int) -> c_int, |real| {
    // SAFETY: forwarding the caller's arguments unchanged.
    let call = || unsafe { real(bio, buf, len) };
    match classify(bio) {
        Bio::Ssl(ssl) => ssl_call(ssl, Side::Local, buf, "BIO_write", call, count),
        Bio::Memory => memory_call(bio, Side::Remote, buf, call, count),
        Bio::Other => call(),
    }
});

hook!(REAL_BIO_READ_EX in LIBCRYPTO, fn BIO_read_ex(bio: *mut c_void, buf: *mut c_void, len: size_t, got: *mut size_t) -> c_int, |real| {
    // SAFETY: forwarding the caller's arguments unchanged.
    let call = || unsafe { real(bio, buf, len, got) };
    // SAFETY: `got` is the caller's out-parameter, written when the call succeeds.
    let moved = |ret| unsafe { ex_count(ret, got) };
    match classify(bio) {
        Bio::Ssl(ssl) => ssl_call(ssl, Side::Remote, buf, "BIO_read_ex", call, moved),
        Bio::Memory => memory_call(bio, Side::Local, buf, call, moved),
        Bio::Other => call(),
    }
});

hook!(REAL_BIO_WRITE_EX in LIBCRYPTO, fn BIO_write_ex(bio: *mut c_void, buf: *const c_void, len: size_t, put: *mut size_t) -> c_int, |real| {
    // SAFETY: forwarding the caller's arguments unchanged.
    let call = || unsafe { real(bio, buf, len, put) };
    // SAFETY: `put` is the caller's out-parameter, written when the call succeeds.
    let moved = |ret| unsafe { ex_count(ret, put) };
    match classify(bio) {
        Bio::Ssl(ssl) => ssl_call(ssl, Side::Local, buf, "BIO_write_ex", call, moved),
        Bio::Memory => memory_call(bio, Side::Remote, buf, call, moved),
        Bio::Other => call(),
    }
});

// OpenSSL's own SSL BIO has no gets; another library's SSL-typed BIO might. A line read from a
// memory BIO is never the program moving ciphertext.
hook!(REAL_BIO_GETS in LIBCRYPTO, fn BIO_gets(bio: *mut c_void, buf: *mut c_char, size: c_int) -> c_int, |real| {
    // SAFETY: forwarding the caller's arguments unchanged.
    let call = || unsafe { real(bio, buf, size) };
    match classify(bio) {
        Bio::Ssl(ssl) => ssl_call(ssl, Side::Remote, buf as *const c_void, "BIO_gets", call, count),
        _ => call(),
    }
});

hook!(REAL_BIO_PUTS in LIBCRYPTO, fn BIO_puts(bio: *mut c_void, s: *const c_char) -> c_int, |real| {
    // SAFETY: forwarding the caller's arguments unchanged.
    let call = || unsafe { real(bio, s) };
    match classify(bio) {
        Bio::Ssl(ssl) => ssl_call(ssl, Side::Local, s as *const c_void, "BIO_puts", call, count),
        _ => call(),
    }
});

static REAL_BIO_METHOD_TYPE: RealFn = RealFn::in_libs(c"BIO_method_type", LIBCRYPTO);

/// `BIO_method_type(bio)`: one load in libcrypto, no callback, no errno.
fn method_type(bio: *mut c_void) -> c_int {
    let p = REAL_BIO_METHOD_TYPE.get();
    if p.is_null() || bio.is_null() {
        return 0;
    }
    // SAFETY: BIO_method_type has this signature in OpenSSL 1.1 and 3.
    let f = unsafe { transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void) -> c_int>(p) };
    // SAFETY: `bio` is a live BIO the program or libssl is using.
    unsafe { f(bio) }
}

static REAL_BIO_METHOD_NAME: RealFn = RealFn::in_libs(c"BIO_method_name", LIBCRYPTO);

/// Whether `bio`, of type `BIO_TYPE_MEM`, is OpenSSL's memory buffer (`BIO_s_mem`,
/// `BIO_s_secmem`) and not a program's own BIO that borrows the type, as curl's does: the
/// program moves ciphertext only through the former with BIO_read/BIO_write.
fn is_memory_buffer(bio: *mut c_void) -> bool {
    let p = REAL_BIO_METHOD_NAME.get();
    if p.is_null() {
        return false;
    }
    // SAFETY: BIO_method_name has this signature in OpenSSL 1.1 and 3.
    let f =
        unsafe { transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void) -> *const c_char>(p) };
    // SAFETY: `bio` is a live BIO; the function returns its method's static name (or null).
    let name = unsafe { f(bio) };
    if name.is_null() {
        return false;
    }
    // SAFETY: a method's name is a NUL-terminated string that lives as long as the method.
    let name = unsafe { std::ffi::CStr::from_ptr(name) }.to_bytes();
    name == b"memory buffer" || name == b"secure memory buffer"
}

static REAL_BIO_CTRL: RealFn = RealFn::in_libs(c"BIO_ctrl", LIBCRYPTO);
static REAL_BIO_GET_CALLBACK: RealFn = RealFn::in_libs(c"BIO_get_callback", LIBCRYPTO);
static REAL_BIO_GET_CALLBACK_EX: RealFn = RealFn::in_libs(c"BIO_get_callback_ex", LIBCRYPTO);

/// The SSL object under SSL BIO `bio` (`BIO_get_ssl`). A BIO with a callback is left alone:
/// `BIO_ctrl` runs it, and the program would see a control call it never made.
fn ssl_of(bio: *mut c_void) -> Option<*mut c_void> {
    if has_callback(bio) {
        return None;
    }
    let p = REAL_BIO_CTRL.get();
    if p.is_null() {
        return None;
    }
    // SAFETY: BIO_ctrl has this signature in OpenSSL 1.1 and 3.
    let ctrl = unsafe {
        transmute::<
            *mut c_void,
            unsafe extern "C" fn(*mut c_void, c_int, c_long, *mut c_void) -> c_long,
        >(p)
    };
    let mut ssl: *mut c_void = ptr::null_mut();
    let saved = sys::errno();
    // SAFETY: `bio` is the live SSL BIO the program is calling with; BIO_C_GET_SSL only copies
    // the SSL pointer into `ssl`.
    unsafe {
        ctrl(
            bio,
            BIO_C_GET_SSL,
            0,
            &mut ssl as *mut *mut c_void as *mut c_void,
        )
    };
    sys::set_errno(saved);
    (!ssl.is_null()).then_some(ssl)
}

fn has_callback(bio: *mut c_void) -> bool {
    [&REAL_BIO_GET_CALLBACK, &REAL_BIO_GET_CALLBACK_EX]
        .iter()
        .any(|getter| {
            let p = getter.get();
            if p.is_null() {
                // Not exported (a build without deprecated functions): nothing can set one.
                return false;
            }
            // SAFETY: both getters take a BIO and return a function pointer, in 1.1 and 3.
            let get = unsafe {
                transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void) -> *mut c_void>(p)
            };
            // SAFETY: `bio` is live; the getter reads one field.
            !unsafe { get(bio) }.is_null()
        })
}

static REAL_SSL_GET_RBIO: RealFn = RealFn::in_libs(c"SSL_get_rbio", LIBSSL);
static REAL_SSL_GET_WBIO: RealFn = RealFn::in_libs(c"SSL_get_wbio", LIBSSL);

/// SSL object `ssl`, which has no descriptor, is in an SSL call: report its memory BIOs, if it
/// has any. Reported at every outermost call (as `SSL_get_fd`'s answer is), so the collector
/// knows them before the program moves the ciphertext of the call's handshake.
pub(crate) fn note_memory_bios(ssl: *mut c_void) {
    let memory = |getter: &RealFn| {
        let p = getter.get();
        if p.is_null() {
            return 0;
        }
        // SAFETY: SSL_get_rbio and SSL_get_wbio take an SSL and return its BIO, in 1.1 and 3.
        let get = unsafe {
            transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void) -> *mut c_void>(p)
        };
        // SAFETY: `ssl` is the live SSL object the program is calling with; the getter reads
        // one field (under the handshake's buffering BIO, the program's own BIO).
        let bio = unsafe { get(ssl) };
        if method_type(bio) == BIO_TYPE_MEM && is_memory_buffer(bio) {
            bio as usize
        } else {
            0
        }
    };
    let (rbio, wbio) = (memory(&REAL_SSL_GET_RBIO), memory(&REAL_SSL_GET_WBIO));
    if rbio != 0 || wbio != 0 {
        record(|| events::on_tls_bios(ssl as usize, rbio, wbio));
    }
}
