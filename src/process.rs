//! Process life: load, fork and exit.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::{config, connection, events, fd_table, guard, sink, sys};

static INITIALISED: AtomicBool = AtomicBool::new(false);
static ENABLED: AtomicBool = AtomicBool::new(true);
static FOLLOW: AtomicBool = AtomicBool::new(true);

/// Whether this process records anything (a fork child of a `NETINTERCEPT_FOLLOW=0` run doesn't).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Remove this library from LD_PRELOAD so that programs this one executes run untraced.
fn stop_following() {
    // SAFETY: an all-zero Dl_info (null pointers) is valid.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr reads the address of one of our own functions and fills `info`.
    let found = unsafe { libc::dladdr(init as *const libc::c_void, &mut info) } != 0;
    if !found || info.dli_fname.is_null() {
        return;
    }
    // SAFETY: dladdr gives a NUL-terminated path that lives as long as the object.
    let ours = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) }
        .to_string_lossy()
        .into_owned();
    let Some(preload) = std::env::var_os("LD_PRELOAD") else {
        return;
    };
    let kept: Vec<String> = preload
        .to_string_lossy()
        .split([':', ' '])
        .filter(|e| !e.is_empty() && *e != ours && !e.ends_with("/libnetintercept.so"))
        .map(str::to_owned)
        .collect();
    std::env::set_var("LD_PRELOAD", kept.join(":"));
}

/// Called once from the library's constructor, before the program's `main`.
pub fn init() {
    if INITIALISED.swap(true, Ordering::AcqRel) {
        return;
    }
    let now = sys::now();
    let cfg = config::Config::from_env(now.as_nanos());
    if std::env::var_os(config::SESSION_VAR).is_none() {
        // Children of this process belong to the same run; see `sink` for why they need to know.
        std::env::set_var(config::SESSION_VAR, cfg.session_start_ns.to_string());
    }
    let follow = std::env::var("NETINTERCEPT_FOLLOW").map_or(true, |v| v != "0");
    FOLLOW.store(follow, Ordering::Relaxed);
    if !follow {
        stop_following();
    }
    config::init(cfg);
    sink::set_start(now.as_secs());
    connection::seed_isn(now.as_nanos() as u64 ^ ((sys::getpid() as u64) << 32));
    std::panic::set_hook(Box::new(|_| {
        // A panic inside bookkeeping is caught and counted; never print on the program's stderr.
        if !guard::inside() {
            sys::report("internal error outside a hook");
        }
    }));
    // SAFETY: the handlers are `extern "C"` functions with the signatures these calls expect and
    // live as long as the process.
    unsafe {
        libc::atexit(at_exit);
        libc::pthread_atfork(None, None, Some(after_fork_child));
    }
    let _entered = guard::enter();
    crate::filter::init();
    events::discover_inherited();
}

extern "C" fn at_exit() {
    let _ = std::panic::catch_unwind(|| {
        let _entered = guard::enter();
        events::reap_vanished();
        events::end_all_at_exit();
        sink::flush();
        let dropped = guard::dropped();
        if dropped > 0 {
            sys::report(&format!(
                "{dropped} packets or events were not recorded (a signal handler found a lock busy, or an internal error)"
            ));
        }
    });
}

extern "C" fn after_fork_child() {
    // SAFETY: pthread_atfork child handlers run in the child with only the forking thread alive.
    unsafe {
        sink::after_fork_child();
        connection::reset_free_list_after_fork();
        fd_table::for_each(|_, conn| conn.reset_lock_after_fork());
    }
    if !FOLLOW.load(Ordering::Relaxed) {
        ENABLED.store(false, Ordering::Relaxed);
        fd_table::for_each(|fd, _| {
            fd_table::take(fd);
        });
    }
    connection::seed_isn(sys::now().as_nanos() as u64 ^ ((sys::getpid() as u64) << 32));
}

/// Write buffered packets before the process image is replaced (not from a vfork child, which
/// shares the parent's memory: the parent flushes its own buffer).
pub fn before_exec() {
    let _entered = guard::enter();
    events::reap_vanished();
    sink::flush_if_owner();
}

/// `_exit` is about to end the process without atexit handlers: flush what this process owns (not
/// from a vfork child, whose `_exit` after a failed exec must leave the parent's buffer alone).
pub fn before_exit_now() {
    let _entered = guard::enter();
    sink::flush_if_owner();
}
