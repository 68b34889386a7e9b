//! NSPR/NSS (Firefox, Thunderbird, NSS tools): plaintext of descriptors that carry an SSL layer.
//!
//! NSPR stacks I/O layers on one `PRFileDesc`; PR_Read and friends enter at the top and each
//! layer calls the next through its method table, never through PR_Read again. So a call on a
//! stack that contains NSS's "SSL" layer moves plaintext; one without it is a plain socket, which
//! the libc hooks already record, and is passed through untouched.
#![allow(non_snake_case)]

use std::ffi::CStr;
use std::sync::atomic::{AtomicI32, Ordering};

use libc::{c_char, c_int, c_void};
use netintercept_core::events::{self, record};
use netintercept_core::real_fn::{RealFn, LIBNSPR};
use netintercept_core::tls;
use synth::Side;

use super::bytes;

/// NSPR's file descriptor: the stable public layout of `struct PRFileDesc` (prio.h).
#[repr(C)]
pub struct PrFileDesc {
    methods: *const c_void,
    secret: *mut c_void,
    lower: *mut PrFileDesc,
    higher: *mut PrFileDesc,
    dtor: *mut c_void,
    identity: c_int,
}

/// One element of PR_Writev's vector (prio.h `PRIOVec`).
#[repr(C)]
pub struct PrIoVec {
    base: *const c_char,
    len: c_int,
}

static REAL_NAME_FOR_IDENTITY: RealFn = RealFn::in_libs(c"PR_GetNameForIdentity", LIBNSPR);
static REAL_NATIVE_HANDLE: RealFn = RealFn::in_libs(c"PR_FileDesc2NativeHandle", LIBNSPR);

/// The SSL layer's identity, once seen (-1 before).
static SSL_IDENTITY: AtomicI32 = AtomicI32::new(-1);

fn is_ssl_identity(id: c_int) -> bool {
    // 0 is NSPR's own bottom layer and negatives are markers: only layers registered with
    // PR_GetUniqueIdentity (positive) have names, and asking NSPR for the name of 0 before any
    // layer is registered dereferences an empty table.
    if id <= 0 {
        return false;
    }
    let known = SSL_IDENTITY.load(Ordering::Relaxed);
    if known >= 0 {
        return id == known;
    }
    let p = REAL_NAME_FOR_IDENTITY.get();
    if p.is_null() {
        return false;
    }
    // SAFETY: PR_GetNameForIdentity has this signature in every NSPR 4.
    let name_of = unsafe {
        std::mem::transmute::<*mut c_void, unsafe extern "C" fn(c_int) -> *const c_char>(p)
    };
    // SAFETY: any identity is a valid argument; the result is null or a static string.
    let name = unsafe { name_of(id) };
    // SAFETY: non-null names are NUL-terminated strings owned by NSPR.
    let ssl = !name.is_null() && unsafe { CStr::from_ptr(name) }.to_bytes() == b"SSL";
    if ssl {
        SSL_IDENTITY.store(id, Ordering::Relaxed);
    }
    ssl
}

/// The OS descriptor under `fd` when its layer stack contains NSS's SSL layer (asked in every
/// mode: see `events::on_tls_fd`).
///
/// # Safety
/// `fd` is null or a live PRFileDesc the program is calling with.
unsafe fn ssl_socket(fd: *mut PrFileDesc) -> Option<c_int> {
    let mut layer = fd;
    let mut found = false;
    for _ in 0..32 {
        if layer.is_null() {
            break;
        }
        // SAFETY: per the contract, each layer of a live stack is a valid PRFileDesc.
        let l = unsafe { &*layer };
        if is_ssl_identity(l.identity) {
            found = true;
            break;
        }
        layer = l.lower;
    }
    if !found {
        return None;
    }
    let p = REAL_NATIVE_HANDLE.get();
    if p.is_null() {
        return None;
    }
    // SAFETY: PR_FileDesc2NativeHandle has this signature (PROsfd is int on Unix).
    let native = unsafe {
        std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut PrFileDesc) -> c_int>(p)
    };
    // SAFETY: `fd` is live per the contract.
    let os_fd = unsafe { native(fd) };
    (os_fd >= 0).then_some(os_fd)
}

/// Run `call` (the NSPR function `name`) as a TLS call on `fd` when it carries SSL, recording
/// `side` bytes at `buf`.
///
/// # Safety
/// `fd` is null or live; `buf` is valid for as many bytes as `call` reports.
unsafe fn tls_call(
    fd: *mut PrFileDesc,
    name: &'static str,
    side: Side,
    buf: *const c_void,
    call: impl FnOnce() -> c_int,
) -> c_int {
    // SAFETY: per the contract.
    let Some(os_fd) = (unsafe { ssl_socket(fd) }) else {
        return call();
    };
    let key = fd as usize;
    let prev = tls::enter(key);
    // The records name this call; the socket calls nested in it name themselves, so the name
    // is set again afterwards.
    netintercept_core::guard::set_call(name);
    if prev == 0 {
        record(|| events::on_tls_fd(key, os_fd));
    }
    let ret = call();
    tls::leave(prev);
    netintercept_core::guard::set_call(name);
    if prev == 0 && ret > 0 {
        // SAFETY: the call moved `ret` bytes at `buf`.
        let data = unsafe { bytes(buf, ret as usize) };
        record(|| events::on_tls_data(key, side, data));
    } else if prev == 0 && ret == 0 && side == Side::Remote {
        record(|| events::on_tls_eof(key));
    }
    ret
}

hook!(REAL_PR_READ in LIBNSPR, fn PR_Read(fd: *mut PrFileDesc, buf: *mut c_void, amount: c_int) -> c_int, |real| {
    // SAFETY: forwarding the caller's arguments unchanged.
    unsafe { tls_call(fd, "PR_Read", Side::Remote, buf, || real(fd, buf, amount)) }
});

hook!(REAL_PR_WRITE in LIBNSPR, fn PR_Write(fd: *mut PrFileDesc, buf: *const c_void, amount: c_int) -> c_int, |real| {
    // SAFETY: forwarding the caller's arguments unchanged.
    unsafe { tls_call(fd, "PR_Write", Side::Local, buf, || real(fd, buf, amount)) }
});

hook!(REAL_PR_RECV in LIBNSPR, fn PR_Recv(fd: *mut PrFileDesc, buf: *mut c_void, amount: c_int, flags: c_int, timeout: u32) -> c_int, |real| {
    const PR_MSG_PEEK: c_int = 0x2;
    if flags & PR_MSG_PEEK != 0 {
        // SAFETY: forwarding the caller's arguments unchanged.
        return unsafe { real(fd, buf, amount, flags, timeout) };
    }
    // SAFETY: forwarding the caller's arguments unchanged.
    unsafe { tls_call(fd, "PR_Recv", Side::Remote, buf, || real(fd, buf, amount, flags, timeout)) }
});

hook!(REAL_PR_SEND in LIBNSPR, fn PR_Send(fd: *mut PrFileDesc, buf: *const c_void, amount: c_int, flags: c_int, timeout: u32) -> c_int, |real| {
    // SAFETY: forwarding the caller's arguments unchanged.
    unsafe { tls_call(fd, "PR_Send", Side::Local, buf, || real(fd, buf, amount, flags, timeout)) }
});

hook!(REAL_PR_WRITEV in LIBNSPR, fn PR_Writev(fd: *mut PrFileDesc, iov: *const PrIoVec, size: c_int, timeout: u32) -> c_int, |real| {
    // SAFETY: the caller's fd is live.
    let Some(os_fd) = (unsafe { ssl_socket(fd) }) else {
        // SAFETY: forwarding the caller's arguments unchanged.
        return unsafe { real(fd, iov, size, timeout) };
    };
    let key = fd as usize;
    let prev = tls::enter(key);
    netintercept_core::guard::set_call("PR_Writev");
    if prev == 0 {
        record(|| events::on_tls_fd(key, os_fd));
    }
    // SAFETY: forwarding the caller's arguments unchanged.
    let ret = unsafe { real(fd, iov, size, timeout) };
    tls::leave(prev);
    netintercept_core::guard::set_call("PR_Writev");
    if prev == 0 && ret > 0 && !iov.is_null() {
        let mut left = ret as usize;
        for i in 0..size.max(0) as usize {
            // SAFETY: the caller's vector has `size` entries.
            let v = unsafe { &*iov.add(i) };
            let n = (v.len.max(0) as usize).min(left);
            // SAFETY: PR_Writev wrote `n` bytes of this entry.
            let data = unsafe { bytes(v.base as *const c_void, n) };
            record(|| events::on_tls_data(key, Side::Local, data));
            left -= n;
        }
    }
    ret
});

/// A connect on an NSPR stack with an SSL layer: the connection carries TLS from its first byte,
/// so the ClientHello that NSS sends from inside its own handshake calls (SSL_ForceHandshake,
/// PR_ConnectContinue, a poll callback) is never written as data.
///
/// # Safety
/// `fd` is null or live.
unsafe fn mark_tls(fd: *mut PrFileDesc) {
    // SAFETY: per the contract.
    if let Some(os_fd) = unsafe { ssl_socket(fd) } {
        record(|| events::on_tls_fd(fd as usize, os_fd));
    }
}

hook!(REAL_PR_CONNECT in LIBNSPR, fn PR_Connect(fd: *mut PrFileDesc, addr: *const c_void, timeout: u32) -> c_int, |real| {
    // SAFETY: forwarding the caller's arguments unchanged.
    let ret = unsafe { real(fd, addr, timeout) };
    // SAFETY: the caller's fd is live.
    unsafe { mark_tls(fd) };
    ret
});

hook!(REAL_PR_CONNECT_CONTINUE in LIBNSPR, fn PR_ConnectContinue(fd: *mut PrFileDesc, out_flags: i16) -> c_int, |real| {
    // SAFETY: the caller's fd is live.
    unsafe { mark_tls(fd) };
    // SAFETY: forwarding the caller's arguments unchanged.
    unsafe { real(fd, out_flags) }
});

static LIBSSL3: &[&CStr] = &[c"libssl3.so"];

hook!(REAL_SSL_FORCE_HANDSHAKE in LIBSSL3, fn SSL_ForceHandshake(fd: *mut PrFileDesc) -> c_int, |real| {
    // SAFETY: the caller's fd is live.
    unsafe { mark_tls(fd) };
    let prev = tls::enter(fd as usize);
    // SAFETY: forwarding the caller's argument unchanged.
    let ret = unsafe { real(fd) };
    tls::leave(prev);
    ret
});
