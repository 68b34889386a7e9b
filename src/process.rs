//! Process life: load.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::{recorder, sys};

static INITIALISED: AtomicBool = AtomicBool::new(false);

/// Remove this library from LD_PRELOAD so that programs this one executes run untraced.
fn stop_following() {
    let Some(dir) = crate::collector::spawn::own_dir() else {
        return;
    };
    let ours = dir.join("libnetintercept.so");
    let ours = ours.to_string_lossy();
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

/// Called once from the library's constructor, before the program's `main`. `errno` is left as
/// it was.
pub fn init() {
    if INITIALISED.swap(true, Ordering::AcqRel) {
        return;
    }
    let saved = sys::errno();
    // A panic in a hook is caught; its message must never reach the program's stderr.
    std::panic::set_hook(Box::new(|_| {}));
    // A value that means nothing is said by the collector; here the default holds.
    // Read in place, like every variable here: the constructor allocates nothing.
    use std::os::unix::ffi::OsStrExt;
    let follow =
        sys::env(c"NETINTERCEPT_FOLLOW").map(|v| std::ffi::OsStr::from_bytes(v.to_bytes()));
    let follow = crate::config::follow(follow).unwrap_or(true);
    recorder::FOLLOW.store(follow, Ordering::Relaxed);
    let events = sys::env(c"NETINTERCEPT_EVENTS").is_some_and(|d| !d.is_empty());
    recorder::EVENTS.store(events, Ordering::Relaxed);
    if !follow {
        stop_following();
    }
    if let Err(why) = recorder::init() {
        // No collector can say it: this is the one line the program's stderr may get.
        sys::report(&why);
    }
    sys::set_errno(saved);
}
