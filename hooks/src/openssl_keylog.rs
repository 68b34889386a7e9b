//! OpenSSL's session secrets (1.1.1 and 3), through its key-log callback.
//!
//! OpenSSL hands each secret of a handshake, as one line of NSS's key log format, to the
//! callback of the SSL object's context (`SSL_CTX_set_keylog_callback`): one callback per
//! `SSL_CTX`, and the only way to TLS 1.3's secrets. So every context gets ours, when it is made
//! (`SSL_CTX_new`, `SSL_CTX_new_ex`) and again whenever the program sets a callback of its own.
//! Ours records the line, then calls the program's callback for that context, if it set one,
//! with the same arguments, as OpenSSL would have; `SSL_CTX_get_keylog_callback` answers with
//! the program's own (or NULL). The program's callbacks are kept by context in
//! [`Callbacks`](netintercept_core::key_callbacks::Callbacks): when that table is full, the
//! program's callback is installed as it asked and that context's keys are missed.
#![allow(non_snake_case)]

use std::ffi::CStr;
use std::mem::transmute;

use libc::{c_char, c_void};
use netintercept_core::events::{self, record};
use netintercept_core::key_callbacks::Callbacks;
use netintercept_core::real_fn::{RealFn, LIBSSL};

/// `SSL_CTX_keylog_cb_func`.
type KeylogCallback = unsafe extern "C" fn(ssl: *const c_void, line: *const c_char);

/// The program's own callback of each context that has one, as an address.
static PROGRAM: Callbacks = Callbacks::new();

static REAL_SSL_CTX_NEW: RealFn = RealFn::in_libs(c"SSL_CTX_new", LIBSSL);
static REAL_SSL_CTX_NEW_EX: RealFn = RealFn::in_libs(c"SSL_CTX_new_ex", LIBSSL);
static REAL_SET_KEYLOG: RealFn = RealFn::in_libs(c"SSL_CTX_set_keylog_callback", LIBSSL);
static REAL_GET_KEYLOG: RealFn = RealFn::in_libs(c"SSL_CTX_get_keylog_callback", LIBSSL);
static REAL_GET_SSL_CTX: RealFn = RealFn::in_libs(c"SSL_get_SSL_CTX", LIBSSL);

/// The real `SSL_CTX_set_keylog_callback` (OpenSSL 1.1.1 and later), if there is one.
fn real_set() -> Option<unsafe extern "C" fn(*mut c_void, Option<KeylogCallback>)> {
    let p = REAL_SET_KEYLOG.get();
    // SAFETY: the function has this signature in OpenSSL 1.1.1 and 3.
    (!p.is_null()).then(|| unsafe { transmute(p) })
}

/// A context was just made at `ctx`: it has no callback of the program's; it gets ours.
fn made(ctx: *mut c_void) {
    if ctx.is_null() {
        return;
    }
    // Any panic stays here, errno is the program's again after.
    record(|| {
        PROGRAM.reset(ctx as usize);
        if let Some(set) = real_set() {
            // SAFETY: `ctx` is the live context the real call just returned; setting the
            // callback stores one field.
            unsafe { set(ctx, Some(on_keylog)) };
            events::on_tls_keylog(ctx as usize);
        }
    });
}

#[no_mangle]
pub unsafe extern "C" fn SSL_CTX_new(method: *const c_void) -> *mut c_void {
    let p = REAL_SSL_CTX_NEW.get();
    if p.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: the next definition of SSL_CTX_new has this signature.
    let real =
        unsafe { transmute::<*mut c_void, unsafe extern "C" fn(*const c_void) -> *mut c_void>(p) };
    // SAFETY: forwarding the caller's argument unchanged.
    let ctx = unsafe { real(method) };
    made(ctx);
    ctx
}

// OpenSSL 3; its own SSL_CTX_new may call it through the PLT, which installs ours twice: the
// same store twice.
#[no_mangle]
pub unsafe extern "C" fn SSL_CTX_new_ex(
    libctx: *mut c_void,
    propq: *const c_char,
    method: *const c_void,
) -> *mut c_void {
    let p = REAL_SSL_CTX_NEW_EX.get();
    if p.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: the next definition of SSL_CTX_new_ex has this signature.
    let real = unsafe {
        transmute::<
            *mut c_void,
            unsafe extern "C" fn(*mut c_void, *const c_char, *const c_void) -> *mut c_void,
        >(p)
    };
    // SAFETY: forwarding the caller's arguments unchanged.
    let ctx = unsafe { real(libctx, propq, method) };
    made(ctx);
    ctx
}

#[no_mangle]
pub unsafe extern "C" fn SSL_CTX_set_keylog_callback(
    ctx: *mut c_void,
    callback: Option<KeylogCallback>,
) {
    let Some(set) = real_set() else { return };
    // Only atomics: nothing here can panic or touch errno.
    let chained = !ctx.is_null()
        && match callback {
            None => {
                PROGRAM.reset(ctx as usize);
                true
            }
            Some(f) => PROGRAM.set(ctx as usize, f as usize),
        };
    let installed = if chained {
        Some(on_keylog as KeylogCallback)
    } else {
        callback
    };
    // SAFETY: the caller's context; the callback is ours (which calls the program's) or, when
    // there is no room to remember the program's, the program's own, as it asked.
    unsafe { set(ctx, installed) }
}

#[no_mangle]
pub unsafe extern "C" fn SSL_CTX_get_keylog_callback(ctx: *const c_void) -> Option<KeylogCallback> {
    let p = REAL_GET_KEYLOG.get();
    if p.is_null() {
        return None;
    }
    // SAFETY: the next definition has this signature in OpenSSL 1.1.1 and 3.
    let real = unsafe {
        transmute::<*mut c_void, unsafe extern "C" fn(*const c_void) -> Option<KeylogCallback>>(p)
    };
    // SAFETY: forwarding the caller's argument unchanged.
    let current = unsafe { real(ctx) };
    match current {
        Some(f) if f as usize == on_keylog as KeylogCallback as usize => program_callback(ctx),
        other => other,
    }
}

/// The callback the program set on context `ctx`, if any.
fn program_callback(ctx: *const c_void) -> Option<KeylogCallback> {
    let f = PROGRAM.get(ctx as usize);
    // SAFETY: a non-zero value is the address of a callback the program gave
    // SSL_CTX_set_keylog_callback, of this type.
    (f != 0).then(|| unsafe { transmute::<usize, KeylogCallback>(f) })
}

/// Ours, on every context: record the line, then hand it to the program's callback.
unsafe extern "C" fn on_keylog(ssl: *const c_void, line: *const c_char) {
    record(|| {
        if !line.is_null() {
            // SAFETY: OpenSSL passes a NUL-terminated line that lives through the call.
            let bytes = unsafe { CStr::from_ptr(line) }.to_bytes();
            events::on_tls_key(ssl as usize, bytes);
        }
    });
    let p = REAL_GET_SSL_CTX.get();
    if p.is_null() || ssl.is_null() {
        return;
    }
    // SAFETY: SSL_get_SSL_CTX has this signature in OpenSSL 1.1.1 and 3.
    let get_ctx =
        unsafe { transmute::<*mut c_void, unsafe extern "C" fn(*const c_void) -> *mut c_void>(p) };
    // SAFETY: `ssl` is the live SSL object OpenSSL is logging for; the getter reads one field,
    // the context whose callback OpenSSL called (ours).
    let ctx = unsafe { get_ctx(ssl) };
    if let Some(program) = program_callback(ctx) {
        // SAFETY: the program's callback, called as OpenSSL would have called it.
        unsafe { program(ssl, line) }
    }
}
