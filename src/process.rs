//! Process life: load, fork and exit.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::{config, connection, events, fd_table, guard, sink, sys};

static INITIALISED: AtomicBool = AtomicBool::new(false);

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
}

extern "C" fn at_exit() {
    let _ = std::panic::catch_unwind(|| {
        let _entered = guard::enter();
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
    connection::seed_isn(sys::now().as_nanos() as u64 ^ ((sys::getpid() as u64) << 32));
}

/// Write buffered packets before the process image is replaced.
pub fn before_exec() {
    sink::flush();
}
