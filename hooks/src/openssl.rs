//! OpenSSL (libssl.so.3 and .so.1.1 export the same names): plaintext of TLS connections.
//!
//! Each SSL call marks this thread as inside it (`tls::enter`), so the socket calls it makes are
//! known to be ciphertext and tie the SSL object to its descriptor; the outermost call records the
//! plaintext it moved. Real symbols are resolved at first call, with a fallback for a libssl that
//! was loaded later with dlopen. An SSL object with no descriptor tells the collector about its
//! memory BIOs instead, and the SSL BIO's calls count as SSL calls (see `openssl_bio`).
#![allow(non_snake_case)]

use libc::{c_int, c_void, size_t};
use netintercept_core::events::{self, record};
use netintercept_core::real_fn::{RealFn, LIBSSL};
use netintercept_core::{sys, tls};
use synth::Side;

use super::{bytes, openssl_bio};

static REAL_SSL_GET_FD: RealFn = RealFn::in_libs(c"SSL_get_fd", LIBSSL);

/// Enter an SSL call on `ssl`, learning its descriptor where `SSL_get_fd` knows it, or its
/// memory BIOs where it has no descriptor.
pub(crate) fn enter(ssl: *mut c_void) -> usize {
    let prev = tls::enter(ssl as usize);
    // In every mode: raw captures need to know which connections OpenSSL runs too (its
    // plaintext is recorded only when the mode decrypts, in `events`).
    if prev == 0 && !ssl.is_null() {
        let p = REAL_SSL_GET_FD.get();
        if !p.is_null() {
            let saved = sys::errno();
            // SAFETY: SSL_get_fd has this signature in every OpenSSL version.
            let get_fd = unsafe {
                std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void) -> c_int>(p)
            };
            // SAFETY: `ssl` is the live SSL object the program is calling with.
            let fd = unsafe { get_fd(ssl) };
            if fd < 0 {
                openssl_bio::note_memory_bios(ssl);
            }
            sys::set_errno(saved);
            if fd >= 0 {
                record(|| events::on_tls_fd(ssl as usize, fd));
            }
        }
    }
    prev
}

static REAL_SSL_GET_ERROR: RealFn = RealFn::in_libs(c"SSL_get_error", LIBSSL);

/// After a read that returned `ret` <= 0: did the peer close the TLS session (close_notify)?
fn peer_closed(ssl: *mut c_void, ret: c_int) -> bool {
    const SSL_ERROR_ZERO_RETURN: c_int = 6;
    let p = REAL_SSL_GET_ERROR.get();
    if p.is_null() || ret > 0 {
        return false;
    }
    let saved = sys::errno();
    // SAFETY: SSL_get_error has this signature in every OpenSSL version; it only peeks at the
    // error queue, so the program's own SSL_get_error afterwards sees the same answer.
    let get_error = unsafe {
        std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void, c_int) -> c_int>(p)
    };
    // SAFETY: `ssl` is the live SSL object of the call that just returned.
    let closed = unsafe { get_error(ssl, ret) } == SSL_ERROR_ZERO_RETURN;
    sys::set_errno(saved);
    closed
}

/// A TLS read returned `ret`: a clean close_notify is the peer's end of the stream (its FIN).
pub(crate) fn note_close(prev: usize, ssl: *mut c_void, ret: c_int) {
    if prev == 0 && ret <= 0 && peer_closed(ssl, ret) {
        record(|| events::on_tls_eof(ssl as usize));
    }
}

/// Leave the call and record `n` plaintext bytes at `buf` moved by the outermost call.
pub(crate) fn leave(
    prev: usize,
    ssl: *mut c_void,
    side: Side,
    buf: *const c_void,
    n: usize,
    call: &'static str,
) {
    tls::leave(prev);
    // Socket calls nested in the SSL call noted their own names.
    netintercept_core::guard::set_call(call);
    if prev == 0 && n > 0 {
        // SAFETY: the SSL call just read or filled `n` bytes at `buf`.
        let data = unsafe { bytes(buf, n) };
        record(|| events::on_tls_data(ssl as usize, side, data));
    }
}

hook!(REAL_SSL_READ in LIBSSL, fn SSL_read(ssl: *mut c_void, buf: *mut c_void, num: c_int) -> c_int, |real| {
    let prev = enter(ssl);
    // SAFETY: forwarding the caller's arguments unchanged.
    let ret = unsafe { real(ssl, buf, num) };
    leave(prev, ssl, Side::Remote, buf, ret.max(0) as usize, "SSL_read");
    note_close(prev, ssl, ret);
    ret
});

hook!(REAL_SSL_WRITE in LIBSSL, fn SSL_write(ssl: *mut c_void, buf: *const c_void, num: c_int) -> c_int, |real| {
    let prev = enter(ssl);
    // SAFETY: forwarding the caller's arguments unchanged.
    let ret = unsafe { real(ssl, buf, num) };
    leave(prev, ssl, Side::Local, buf, ret.max(0) as usize, "SSL_write");
    ret
});

/// The count an `_ex` call reported through `out`, when it succeeded.
///
/// # Safety
/// `out` is null or valid.
pub(crate) unsafe fn ex_count(ret: c_int, out: *const size_t) -> usize {
    if ret == 1 && !out.is_null() {
        // SAFETY: per the contract; the call succeeded, so it wrote the count.
        unsafe { *out }
    } else {
        0
    }
}

hook!(REAL_SSL_READ_EX in LIBSSL, fn SSL_read_ex(ssl: *mut c_void, buf: *mut c_void, num: size_t, got: *mut size_t) -> c_int, |real| {
    let prev = enter(ssl);
    // SAFETY: forwarding the caller's arguments unchanged.
    let ret = unsafe { real(ssl, buf, num, got) };
    // SAFETY: `got` is the caller's out-parameter.
    leave(prev, ssl, Side::Remote, buf, unsafe { ex_count(ret, got) }, "SSL_read_ex");
    note_close(prev, ssl, ret);
    ret
});

hook!(REAL_SSL_WRITE_EX in LIBSSL, fn SSL_write_ex(ssl: *mut c_void, buf: *const c_void, num: size_t, put: *mut size_t) -> c_int, |real| {
    let prev = enter(ssl);
    // SAFETY: forwarding the caller's arguments unchanged.
    let ret = unsafe { real(ssl, buf, num, put) };
    // SAFETY: `put` is the caller's out-parameter.
    leave(prev, ssl, Side::Local, buf, unsafe { ex_count(ret, put) }, "SSL_write_ex");
    ret
});

// Peeked bytes are recorded once, when SSL_read consumes them: the peek itself records nothing.
hook!(REAL_SSL_PEEK in LIBSSL, fn SSL_peek(ssl: *mut c_void, buf: *mut c_void, num: c_int) -> c_int, |real| {
    let prev = enter(ssl);
    // SAFETY: forwarding the caller's arguments unchanged.
    let ret = unsafe { real(ssl, buf, num) };
    tls::leave(prev);
    ret
});

hook!(REAL_SSL_PEEK_EX in LIBSSL, fn SSL_peek_ex(ssl: *mut c_void, buf: *mut c_void, num: size_t, got: *mut size_t) -> c_int, |real| {
    let prev = enter(ssl);
    // SAFETY: forwarding the caller's arguments unchanged.
    let ret = unsafe { real(ssl, buf, num, got) };
    tls::leave(prev);
    ret
});

hook!(REAL_SSL_CONNECT in LIBSSL, fn SSL_connect(ssl: *mut c_void) -> c_int, |real| {
    let prev = enter(ssl);
    // SAFETY: forwarding the caller's argument unchanged.
    let ret = unsafe { real(ssl) };
    tls::leave(prev);
    ret
});

hook!(REAL_SSL_ACCEPT in LIBSSL, fn SSL_accept(ssl: *mut c_void) -> c_int, |real| {
    let prev = enter(ssl);
    // SAFETY: forwarding the caller's argument unchanged.
    let ret = unsafe { real(ssl) };
    tls::leave(prev);
    ret
});

hook!(REAL_SSL_DO_HANDSHAKE in LIBSSL, fn SSL_do_handshake(ssl: *mut c_void) -> c_int, |real| {
    let prev = enter(ssl);
    // SAFETY: forwarding the caller's argument unchanged.
    let ret = unsafe { real(ssl) };
    tls::leave(prev);
    ret
});

hook!(REAL_SSL_SHUTDOWN in LIBSSL, fn SSL_shutdown(ssl: *mut c_void) -> c_int, |real| {
    let prev = enter(ssl);
    // SAFETY: forwarding the caller's argument unchanged.
    let ret = unsafe { real(ssl) };
    tls::leave(prev);
    ret
});

static REAL_SSL_FREE: RealFn = RealFn::in_libs(c"SSL_free", LIBSSL);

#[no_mangle]
pub unsafe extern "C" fn SSL_free(ssl: *mut c_void) {
    let p = REAL_SSL_FREE.get();
    if !p.is_null() {
        // SAFETY: the next definition of SSL_free has this signature.
        let real =
            unsafe { std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void)>(p) };
        let prev = tls::enter(ssl as usize);
        // SAFETY: forwarding the caller's argument unchanged.
        unsafe { real(ssl) };
        tls::leave(prev);
    }
    record(|| tls::forget(ssl as usize));
}
