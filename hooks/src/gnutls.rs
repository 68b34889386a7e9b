//! GnuTLS (libgnutls.so.30: gnutls-cli, wget, libcurl-gnutls as git uses it, apt): plaintext of
//! TLS sessions.
//!
//! Each session call marks this thread as inside it (`tls::enter`), so the socket calls it makes,
//! directly or through the program's own push/pull functions (libcurl-gnutls), are known to be
//! ciphertext and tie the session to its descriptor; the outermost call records the plaintext it
//! moved. libgnutls calls some of its own exported functions through its PLT
//! (`gnutls_record_send` → `gnutls_record_send2`, `gnutls_record_uncork` → `gnutls_record_send`),
//! so those reach these hooks nested inside the outer call, where they record nothing: each byte
//! is recorded once. Real symbols are resolved at first call, with a fallback for a libgnutls
//! loaded later with dlopen.

use libc::{c_int, c_uint, c_void, size_t, ssize_t};
use netintercept_core::events::{self, record};
use netintercept_core::real_fn::{RealFn, LIBGNUTLS};
use netintercept_core::{guard, sys, tls};
use synth::Side;

use super::bytes;

static REAL_GET_PTR2: RealFn = RealFn::in_libs(c"gnutls_transport_get_ptr2", LIBGNUTLS);

/// The descriptor a session's transport names, when it names one.
///
/// GnuTLS keeps one pointer-sized transport value per direction: a descriptor set with
/// `gnutls_transport_set_int2` (or cast to a pointer, as wget does) or the program's own pointer
/// for its push/pull functions (libcurl-gnutls passes its filter object). `gnutls_transport_get_int`
/// would truncate a pointer into a plausible number, so the whole value is read and only one that
/// fits a descriptor, is the same both ways and is a socket we track is taken. 0 is left out: a
/// push/pull transport given a null pointer reads as 0; the nested socket calls still find a real
/// descriptor 0.
fn transport_fd(session: *mut c_void) -> Option<c_int> {
    let p = REAL_GET_PTR2.get();
    if p.is_null() || session.is_null() {
        return None;
    }
    // SAFETY: gnutls_transport_get_ptr2 has this signature in every GnuTLS 3.
    let get_ptr2 = unsafe {
        std::mem::transmute::<
            *mut c_void,
            unsafe extern "C" fn(*mut c_void, *mut *mut c_void, *mut *mut c_void),
        >(p)
    };
    let (mut recv, mut send) = (std::ptr::null_mut(), std::ptr::null_mut());
    // SAFETY: `session` is the live session the program is calling with; the function only copies
    // two fields into the out-parameters (no errno, no I/O).
    unsafe { get_ptr2(session, &mut recv, &mut send) };
    let value = recv as usize;
    if recv != send || value == 0 || value > c_int::MAX as usize {
        return None;
    }
    let fd = value as c_int;
    events::is_tracked(fd).then_some(fd)
}

/// Enter a GnuTLS call on `session`, recording its descriptor where the transport names one, so
/// the connection is TLS before the handshake's first byte.
fn enter(session: *mut c_void, call: &'static str) -> usize {
    let prev = tls::enter(session as usize);
    // In every mode: raw captures need to know which connections GnuTLS runs too.
    if prev == 0 {
        record(|| {
            if let Some(fd) = transport_fd(session) {
                guard::set_call(call);
                events::on_tls_fd(session as usize, fd);
            }
        });
    }
    prev
}

/// Leave the call and record `n` plaintext bytes at `buf` moved by the outermost call.
fn leave(
    prev: usize,
    session: *mut c_void,
    side: Side,
    buf: *const c_void,
    n: usize,
    call: &'static str,
) {
    tls::leave(prev);
    if prev == 0 && n > 0 {
        // Socket calls nested in the GnuTLS call noted their own names.
        guard::set_call(call);
        // SAFETY: the GnuTLS call just read or filled `n` bytes at `buf`.
        let data = unsafe { bytes(buf, n) };
        record(|| events::on_tls_data(session as usize, side, data));
    }
}

/// The outermost call saw the peer's close_notify (`closed`): the end of its stream, its FIN.
fn note_close(prev: usize, session: *mut c_void, closed: bool, call: &'static str) {
    if prev == 0 && closed {
        guard::set_call(call);
        record(|| events::on_tls_eof(session as usize));
    }
}

fn count(ret: ssize_t) -> usize {
    ret.max(0) as usize
}

hook!(REAL_RECORD_SEND in LIBGNUTLS, fn gnutls_record_send(session: *mut c_void, data: *const c_void, size: size_t) -> ssize_t, |real| {
    let prev = enter(session, "gnutls_record_send");
    // SAFETY: forwarding the caller's arguments unchanged.
    let ret = unsafe { real(session, data, size) };
    leave(prev, session, Side::Local, data, count(ret), "gnutls_record_send");
    ret
});

// GnuTLS 3.6.3 and later; libgnutls's own gnutls_record_send calls it through the PLT.
hook!(REAL_RECORD_SEND2 in LIBGNUTLS, fn gnutls_record_send2(session: *mut c_void, data: *const c_void, size: size_t, pad: size_t, flags: c_uint) -> ssize_t, |real| {
    let prev = enter(session, "gnutls_record_send2");
    // SAFETY: forwarding the caller's arguments unchanged.
    let ret = unsafe { real(session, data, size, pad, flags) };
    leave(prev, session, Side::Local, data, count(ret), "gnutls_record_send2");
    ret
});

// Length hiding (CBC suites): libgnutls sends without going through gnutls_record_send.
hook!(REAL_RECORD_SEND_RANGE in LIBGNUTLS, fn gnutls_record_send_range(session: *mut c_void, data: *const c_void, size: size_t, range: *const c_void) -> ssize_t, |real| {
    let prev = enter(session, "gnutls_record_send_range");
    // SAFETY: forwarding the caller's arguments unchanged.
    let ret = unsafe { real(session, data, size, range) };
    leave(prev, session, Side::Local, data, count(ret), "gnutls_record_send_range");
    ret
});

// A corked session's gnutls_record_send only buffers (and is recorded then); uncork sends the
// buffer through gnutls_record_send again, which must not record the same bytes twice.
hook!(REAL_RECORD_UNCORK in LIBGNUTLS, fn gnutls_record_uncork(session: *mut c_void, flags: c_uint) -> c_int, |real| {
    let prev = enter(session, "gnutls_record_uncork");
    // SAFETY: forwarding the caller's arguments unchanged.
    let ret = unsafe { real(session, flags) };
    tls::leave(prev);
    ret
});

hook!(REAL_RECORD_RECV in LIBGNUTLS, fn gnutls_record_recv(session: *mut c_void, data: *mut c_void, size: size_t) -> ssize_t, |real| {
    let prev = enter(session, "gnutls_record_recv");
    // SAFETY: forwarding the caller's arguments unchanged.
    let ret = unsafe { real(session, data, size) };
    leave(prev, session, Side::Remote, data, count(ret), "gnutls_record_recv");
    // 0 is the peer's close_notify; a read of 0 bytes also returns 0 and means nothing.
    note_close(prev, session, ret == 0 && size > 0, "gnutls_record_recv");
    ret
});

hook!(REAL_RECORD_RECV_SEQ in LIBGNUTLS, fn gnutls_record_recv_seq(session: *mut c_void, data: *mut c_void, size: size_t, seq: *mut u8) -> ssize_t, |real| {
    let prev = enter(session, "gnutls_record_recv_seq");
    // SAFETY: forwarding the caller's arguments unchanged.
    let ret = unsafe { real(session, data, size, seq) };
    leave(prev, session, Side::Remote, data, count(ret), "gnutls_record_recv_seq");
    note_close(prev, session, ret == 0 && size > 0, "gnutls_record_recv_seq");
    ret
});

/// `gnutls_datum_t`.
#[repr(C)]
struct Datum {
    data: *const u8,
    size: c_uint,
}

static REAL_PACKET_GET: RealFn = RealFn::in_libs(c"gnutls_packet_get", LIBGNUTLS);

/// The plaintext a `gnutls_record_recv_packet` call handed over in `packet` (GnuTLS's buffer).
///
/// # Safety
/// `packet` is null or the live packet the call just returned.
unsafe fn packet_data(packet: *mut c_void) -> (*const c_void, usize) {
    let p = REAL_PACKET_GET.get();
    if p.is_null() || packet.is_null() {
        return (std::ptr::null(), 0);
    }
    // SAFETY: gnutls_packet_get has this signature in every GnuTLS 3.
    let get = unsafe {
        std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void, *mut Datum, *mut u8)>(
            p,
        )
    };
    let mut d = Datum {
        data: std::ptr::null(),
        size: 0,
    };
    // The call only reads the packet, but the program's errno is kept whatever it does.
    let saved = sys::errno();
    // SAFETY: per the contract; a null sequence pointer is allowed.
    unsafe { get(packet, &mut d, std::ptr::null_mut()) };
    sys::set_errno(saved);
    (d.data as *const c_void, d.size as usize)
}

// Zero-copy reads (gnutls-cli imports it): the plaintext stays in GnuTLS's packet until
// gnutls_packet_deinit, so it is read right after the call.
hook!(REAL_RECORD_RECV_PACKET in LIBGNUTLS, fn gnutls_record_recv_packet(session: *mut c_void, packet: *mut *mut c_void) -> ssize_t, |real| {
    let prev = enter(session, "gnutls_record_recv_packet");
    // SAFETY: forwarding the caller's arguments unchanged.
    let ret = unsafe { real(session, packet) };
    let (buf, n) = if prev == 0 && ret > 0 && !packet.is_null() {
        // SAFETY: the call succeeded, so `*packet` is the packet it filled.
        unsafe { packet_data(*packet) }
    } else {
        (std::ptr::null(), 0)
    };
    leave(prev, session, Side::Remote, buf, n.min(count(ret)), "gnutls_record_recv_packet");
    note_close(prev, session, ret == 0, "gnutls_record_recv_packet");
    ret
});

hook!(REAL_HANDSHAKE in LIBGNUTLS, fn gnutls_handshake(session: *mut c_void) -> c_int, |real| {
    let prev = enter(session, "gnutls_handshake");
    // SAFETY: forwarding the caller's argument unchanged.
    let ret = unsafe { real(session) };
    tls::leave(prev);
    ret
});

hook!(REAL_BYE in LIBGNUTLS, fn gnutls_bye(session: *mut c_void, how: c_int) -> c_int, |real| {
    const GNUTLS_SHUT_RDWR: c_int = 0;
    let prev = enter(session, "gnutls_bye");
    // SAFETY: forwarding the caller's arguments unchanged.
    let ret = unsafe { real(session, how) };
    tls::leave(prev);
    // Success with SHUT_RDWR means the peer's close_notify arrived inside this call.
    note_close(prev, session, ret == 0 && how == GNUTLS_SHUT_RDWR, "gnutls_bye");
    ret
});
