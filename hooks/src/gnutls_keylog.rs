//! GnuTLS's session secrets (3.6.13 and later), through its key-log function.
//!
//! GnuTLS hands each secret of a handshake (label, secret) to the session's key-log function.
//! `gnutls_init` gives every session GnuTLS's own, which appends to the file named by
//! `GNUTLS_KEYLOGFILE` (or `SSLKEYLOGFILE`) when one is set; a program may set another with
//! `gnutls_session_set_keylog_function`. Each session gets ours in its place: ours records the
//! secret as a key log line, then calls the function the session had (GnuTLS's own, or the
//! program's) and returns what it returned, so the key log file GnuTLS writes and the program's
//! function work as before; `gnutls_session_get_keylog_function` answers with that function.
//! GnuTLS's own function is the same for every session and kept once; a program's own is kept
//! by session in [`Callbacks`](netintercept_core::key_callbacks::Callbacks) (when that table is
//! full, the program's function is installed as it asked and that session's keys are missed).
//!
//! GnuTLS 3.7's `gnutls_init` sets its own function with `gnutls_session_set_keylog_function`,
//! through its PLT, so into our hook: that call, made inside `gnutls_init` on this thread, is
//! how GnuTLS's own is learnt, and it installs ours. A GnuTLS that stores it directly leaves it
//! for our `gnutls_init` hook to find after the call.

use std::cell::Cell;
use std::mem::transmute;
use std::sync::atomic::{AtomicUsize, Ordering};

use libc::{c_char, c_int, c_uint, c_void};
use netintercept_core::events::{self, record};
use netintercept_core::key_callbacks::Callbacks;
use netintercept_core::real_fn::{RealFn, LIBGNUTLS};

/// `gnutls_datum_t`.
#[repr(C)]
pub struct Datum {
    data: *const u8,
    size: c_uint,
}

/// `gnutls_keylog_func`.
type KeylogFunction =
    unsafe extern "C" fn(session: *mut c_void, label: *const c_char, secret: *const Datum) -> c_int;

/// The function `gnutls_init` gives every session (GnuTLS's own), once seen.
static GNUTLS_OWN: AtomicUsize = AtomicUsize::new(UNSEEN);
/// [`GNUTLS_OWN`] before the first session.
const UNSEEN: usize = usize::MAX;
/// In [`PROGRAM`]: the program set no function at all (NULL) on this session.
const NONE: usize = usize::MAX;
/// The function of each session whose function is not GnuTLS's own (0: GnuTLS's own).
static PROGRAM: Callbacks = Callbacks::new();

static REAL_SET: RealFn = RealFn::in_libs(c"gnutls_session_set_keylog_function", LIBGNUTLS);
static REAL_GET: RealFn = RealFn::in_libs(c"gnutls_session_get_keylog_function", LIBGNUTLS);
static REAL_GET_RANDOM: RealFn = RealFn::in_libs(c"gnutls_session_get_random", LIBGNUTLS);

type SetFn = unsafe extern "C" fn(*mut c_void, Option<KeylogFunction>);
type GetFn = unsafe extern "C" fn(*mut c_void) -> Option<KeylogFunction>;

fn real_set() -> Option<SetFn> {
    let p = REAL_SET.get();
    // SAFETY: the function has this signature in every GnuTLS since 3.6.13.
    (!p.is_null()).then(|| unsafe { transmute::<*mut c_void, SetFn>(p) })
}

fn real_get() -> Option<GetFn> {
    let p = REAL_GET.get();
    // SAFETY: the function has this signature in every GnuTLS since 3.6.13.
    (!p.is_null()).then(|| unsafe { transmute::<*mut c_void, GetFn>(p) })
}

fn address(f: Option<KeylogFunction>) -> usize {
    f.map_or(0, |f| f as usize)
}

/// `f` as kept in [`PROGRAM`] (never 0, which means GnuTLS's own).
fn kept(f: Option<KeylogFunction>) -> usize {
    f.map_or(NONE, |f| f as usize)
}

thread_local! {
    /// This thread is inside `gnutls_init`: a key-log function set now is GnuTLS's own.
    static IN_INIT: Cell<bool> = const { Cell::new(false) };
}

fn in_init() -> bool {
    IN_INIT.try_with(Cell::get).unwrap_or(false)
}

hook!(REAL_GNUTLS_INIT in LIBGNUTLS, fn gnutls_init(session: *mut *mut c_void, flags: c_uint) -> c_int, |real| {
    let outer = !in_init();
    if outer {
        let _ = IN_INIT.try_with(|c| c.set(true));
    }
    // SAFETY: forwarding the caller's arguments unchanged.
    let ret = unsafe { real(session, flags) };
    if outer {
        let _ = IN_INIT.try_with(|c| c.set(false));
    }
    if ret == 0 && !session.is_null() {
        // SAFETY: gnutls_init succeeded, so it stored the new session at `session`.
        let s = unsafe { *session };
        // Any panic stays here, errno is the program's again after.
        record(|| made(s));
    }
    ret
});

/// Session `s` was just made: ours goes in place of the function GnuTLS gave it, unless GnuTLS
/// set it through our hook (then it is ours already).
fn made(s: *mut c_void) {
    let (Some(get), Some(set)) = (real_get(), real_set()) else {
        return;
    };
    // SAFETY: `s` is the live session gnutls_init just made; the getter reads one field.
    let given = address(unsafe { get(s) });
    if given == on_keylog as KeylogFunction as usize {
        return;
    }
    PROGRAM.reset(s as usize);
    let own = match GNUTLS_OWN.compare_exchange(UNSEEN, given, Ordering::AcqRel, Ordering::Acquire)
    {
        Ok(_) => given,
        Err(seen) => seen,
    };
    // Every session is given the same function; one that is not keeps its own here.
    if given != own && !PROGRAM.set(s as usize, if given == 0 { NONE } else { given }) {
        return;
    }
    // SAFETY: the live session; setting the function stores one field.
    unsafe { set(s, Some(on_keylog)) };
    events::on_tls_keylog(s as usize);
}

#[no_mangle]
pub unsafe extern "C" fn gnutls_session_set_keylog_function(
    session: *mut c_void,
    func: Option<KeylogFunction>,
) {
    let Some(set) = real_set() else { return };
    if in_init() {
        // GnuTLS setting its own (see the module's comment).
        let _ =
            GNUTLS_OWN.compare_exchange(UNSEEN, address(func), Ordering::AcqRel, Ordering::Acquire);
    }
    // Only atomics and a thread-local read: nothing here can panic or touch errno.
    let chained = !session.is_null()
        && if address(func) == GNUTLS_OWN.load(Ordering::Acquire) {
            // GnuTLS's own (a new session, at an address an old one may have had): no slot.
            PROGRAM.reset(session as usize);
            true
        } else {
            PROGRAM.set(session as usize, kept(func))
        };
    let announce = chained && in_init();
    let installed = if chained {
        Some(on_keylog as KeylogFunction)
    } else {
        func
    };
    // SAFETY: the caller's session; the function is ours (which calls the program's) or, when
    // there is no room to remember the program's, the program's own, as it asked.
    unsafe { set(session, installed) };
    if announce {
        record(|| events::on_tls_keylog(session as usize));
    }
}

#[no_mangle]
pub unsafe extern "C" fn gnutls_session_get_keylog_function(
    session: *mut c_void,
) -> Option<KeylogFunction> {
    let get = real_get()?;
    // SAFETY: forwarding the caller's argument unchanged.
    let current = unsafe { get(session) };
    if address(current) == on_keylog as KeylogFunction as usize {
        session_function(session)
    } else {
        current
    }
}

/// The function session `s` would have without us: the program's, or GnuTLS's own.
fn session_function(s: *mut c_void) -> Option<KeylogFunction> {
    let f = match PROGRAM.get(s as usize) {
        0 => GNUTLS_OWN.load(Ordering::Acquire),
        f => f,
    };
    // SAFETY: any value other than the two markers is the address of a key-log function
    // GnuTLS gave the session or the program set on it.
    (f != 0 && f != NONE).then(|| unsafe { transmute::<usize, KeylogFunction>(f) })
}

/// Ours, on every session: record the secret, then hand it on.
unsafe extern "C" fn on_keylog(
    session: *mut c_void,
    label: *const c_char,
    secret: *const Datum,
) -> c_int {
    // SAFETY: GnuTLS passes the live session, a NUL-terminated label and a valid datum.
    record(|| unsafe { record_secret(session, label, secret) });
    match session_function(session) {
        // SAFETY: the session's own function, called as GnuTLS would have called it.
        Some(f) => unsafe { f(session, label, secret) },
        None => 0,
    }
}

/// Record `LABEL <client random> <secret>` (hex), built on the stack.
///
/// # Safety
/// As GnuTLS calls a key-log function: a live session, a NUL-terminated label, a valid datum.
unsafe fn record_secret(session: *mut c_void, label: *const c_char, secret: *const Datum) {
    let p = REAL_GET_RANDOM.get();
    if p.is_null() || label.is_null() || secret.is_null() {
        return;
    }
    // SAFETY: gnutls_session_get_random has this signature in every GnuTLS 3.
    let get_random = unsafe {
        transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void, *mut Datum, *mut Datum)>(p)
    };
    let mut client = Datum {
        data: std::ptr::null(),
        size: 0,
    };
    let mut server = Datum {
        data: std::ptr::null(),
        size: 0,
    };
    // SAFETY: the live session; the call points the datums at the session's own randoms.
    unsafe { get_random(session, &mut client, &mut server) };
    // SAFETY: per the contract, and the datums GnuTLS just filled (null when empty).
    let (label, secret, random) = unsafe {
        (
            std::ffi::CStr::from_ptr(label).to_bytes(),
            datum(&*secret),
            datum(&client),
        )
    };
    if random.is_empty() || secret.is_empty() {
        return;
    }
    let mut line = Line {
        bytes: [0; 512],
        len: 0,
        whole: true,
    };
    line.put(label);
    for part in [random, secret] {
        line.put(b" ");
        for b in part {
            line.put(&hex(*b));
        }
    }
    if line.whole {
        events::on_tls_key(session as usize, &line.bytes[..line.len]);
    }
}

/// A key log line built on the stack (hooks never allocate).
struct Line {
    bytes: [u8; 512],
    len: usize,
    /// Everything put fitted.
    whole: bool,
}

impl Line {
    fn put(&mut self, part: &[u8]) {
        match self.bytes.get_mut(self.len..self.len + part.len()) {
            Some(to) => {
                to.copy_from_slice(part);
                self.len += part.len();
            }
            None => self.whole = false,
        }
    }
}

/// The bytes of `d`.
///
/// # Safety
/// `d.data` is null or valid for `d.size` bytes.
unsafe fn datum(d: &Datum) -> &[u8] {
    if d.data.is_null() {
        return &[];
    }
    // SAFETY: per the contract.
    unsafe { std::slice::from_raw_parts(d.data, d.size as usize) }
}

fn hex(b: u8) -> [u8; 2] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0xf)]]
}
