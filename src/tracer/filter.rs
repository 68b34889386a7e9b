//! The seccomp filter the traced program runs under: the system calls the capture needs stop
//! for the tracer (`SECCOMP_RET_TRACE`); every other call runs at full speed, never seen.

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

/// The calls that stop for the tracer: those that make, name, move bytes through or end a
/// descriptor that may be an internet socket. Calls that only create descriptors (open, pipe,
/// eventfd) are not among them: a number is reused only after a close, which is.
pub const TRACED: &[i64] = &[
    libc::SYS_socket,
    libc::SYS_connect,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_shutdown,
    libc::SYS_getsockopt,
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_sendmmsg,
    libc::SYS_recvmmsg,
    libc::SYS_sendfile,
    libc::SYS_close,
    libc::SYS_close_range,
    libc::SYS_dup,
    libc::SYS_dup2,
    libc::SYS_dup3,
    libc::SYS_fcntl,
];

/// With `--events`, the calls only the event traces need stop too.
pub const EVENTS_ONLY: &[i64] = &[
    libc::SYS_setsockopt,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_ioctl,
];

/// The filter as a BPF program, built by seccompiler (no hand-written BPF).
pub fn program(events: bool) -> Result<BpfProgram, String> {
    let extra = if events { EVENTS_ONLY } else { &[] };
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> = TRACED
        .iter()
        .chain(extra)
        .map(|&nr| (nr, Vec::new()))
        .collect();
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| format!("no seccomp filter for this architecture: {e}"))?;
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Trace(0), arch)
        .map_err(|e| format!("cannot build the seccomp filter: {e}"))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| format!("cannot compile the seccomp filter: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_compiles() {
        let prog = program(false).expect("a filter");
        assert!(prog.len() > TRACED.len());
        assert!(program(true).expect("a filter").len() > prog.len());
    }
}
