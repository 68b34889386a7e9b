//! Starting the command under the tracer: fork, seize, then let the child install the seccomp
//! filter and exec. The child waits on a pipe until it is seized, so no filtered call can run
//! untraced (it would fail with ENOSYS).

use std::ffi::CString;

use super::{filter, on_tracer_thread, LaunchError, Running, Spec, Tracer, OPTIONS};
use crate::ring::Region;

/// Start `spec` under the tracer, whose records go into `region`. Returns once the program's
/// image is running (its exec succeeded) or could not start.
pub fn launch(spec: Spec, region: Region) -> Result<Running, LaunchError> {
    on_tracer_thread(move |started_tx, status_tx| {
        let mut t = match start(&spec) {
            Ok((pid, errpipe)) => {
                Tracer::new(vec![pid], region, spec.events, spec.follow, false, errpipe)
            }
            Err(e) => {
                let _ = started_tx.send(Err(e));
                return;
            }
        };
        t.run(Some(started_tx), &status_tx);
    })
}

/// Fork the command, seize it, and let it exec under the filter. Returns its pid and the read
/// end of the pipe on which a failed execve leaves its errno.
fn start(spec: &Spec) -> Result<(i32, i32), LaunchError> {
    let prog = filter::program(spec.events).map_err(LaunchError::Tracer)?;
    let ptrs = |v: &[CString]| {
        let mut p: Vec<*const libc::c_char> = v.iter().map(|s| s.as_ptr()).collect();
        p.push(std::ptr::null());
        p
    };
    let argv = ptrs(&spec.argv);
    let envp = ptrs(&spec.envp);
    let mut sync = [-1; 2];
    let mut errp = [-1; 2];
    // SAFETY: pipe2 writes two descriptors into each array.
    if unsafe { libc::pipe2(sync.as_mut_ptr(), libc::O_CLOEXEC) } != 0
        // SAFETY: as above.
        || unsafe { libc::pipe2(errp.as_mut_ptr(), libc::O_CLOEXEC) } != 0
    {
        return Err(LaunchError::Tracer(format!(
            "cannot make a pipe: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: the child only makes async-signal-safe calls (read, write, dup2, prctl, seccomp,
    // execve, _exit) on memory prepared before the fork; it never returns.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: see above; every pointer was built before the fork and is still valid.
        unsafe { child(spec, &prog, sync, errp, &argv, &envp) }
    }
    crate::sys::close(sync[0]);
    crate::sys::close(errp[1]);
    if pid < 0 {
        crate::sys::close(sync[1]);
        crate::sys::close(errp[0]);
        return Err(LaunchError::Tracer(format!(
            "cannot fork: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: seizing our own child, which waits on the sync pipe.
    let seized = unsafe {
        libc::ptrace(
            libc::PTRACE_SEIZE,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            OPTIONS as usize as *mut libc::c_void,
        )
    };
    if seized != 0 {
        let e = std::io::Error::last_os_error();
        crate::sys::close(sync[1]);
        crate::sys::close(errp[0]);
        // The child reads EOF and leaves; reap it.
        let mut st = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        return Err(LaunchError::Tracer(format!(
            "the kernel refused to trace the program ({e}){}",
            if e.raw_os_error() == Some(libc::EPERM) {
                ": ptrace is not allowed here (a container's seccomp policy, or \
                 kernel.yama.ptrace_scope = 3); use --backend preload"
            } else {
                ""
            }
        )));
    }
    let _ = crate::sys::write_all(sync[1], b"g");
    crate::sys::close(sync[1]);
    Ok((pid, errp[0]))
}

/// The forked child: wait until seized, install the filter, exec.
///
/// # Safety
/// Called only in the child of `fork`, with pointers valid there.
unsafe fn child(
    spec: &Spec,
    prog: &seccompiler::BpfProgram,
    sync: [i32; 2],
    errp: [i32; 2],
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ! {
    let fail = |e: i32| -> ! {
        let b = e.to_ne_bytes();
        // SAFETY: writing our own 4 bytes to the pipe, then leaving without atexit handlers.
        unsafe {
            libc::write(errp[1], b.as_ptr().cast(), 4);
            libc::_exit(127)
        }
    };
    // SAFETY: plain descriptor calls on our own descriptors.
    unsafe {
        libc::close(sync[1]);
        libc::close(errp[0]);
        if spec.stdout_to_stderr {
            libc::dup2(2, 1);
        }
    }
    let mut b = 0u8;
    loop {
        // SAFETY: reading one byte into our own variable.
        let n = unsafe { libc::read(sync[0], (&mut b as *mut u8).cast(), 1) };
        if n == 1 {
            break;
        }
        // SAFETY: reading errno.
        if n < 0 && unsafe { *libc::__errno_location() } == libc::EINTR {
            continue;
        }
        // The tracer could not seize us: run nothing untraced.
        // SAFETY: leaving at once.
        unsafe { libc::_exit(127) };
    }
    if seccompiler::apply_filter(prog).is_err() {
        // SAFETY: reading errno.
        fail(unsafe { *libc::__errno_location() });
    }
    // SAFETY: null-terminated arrays of C strings built before the fork.
    unsafe { libc::execve(spec.path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    // SAFETY: reading errno.
    fail(unsafe { *libc::__errno_location() })
}
