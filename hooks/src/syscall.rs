//! libc's `syscall()` (issue 12, B): libuv 1.44 and earlier send datagrams with
//! `syscall(SYS_sendmmsg, …)` and close with `syscall(SYS_close, …)` (Debian 12's libuv, under
//! `dig`); other programs call `syscall(SYS_sendto, …)` and the like. The numbers the named hooks
//! handle get the same bookkeeping here; every other number goes to the real `syscall` untouched.
//!
//! `syscall` itself is a trampoline without a frame of its own: it tests the number against a
//! bitmap and *jumps* either to the real function or to [`dispatch`]. A call that must not run
//! under an extra frame (`clone` and `vfork`, whose child returns through the caller's stack;
//! `rt_sigreturn`; `exit`) therefore runs exactly as without us, and every other number costs a
//! compare, a bit test and an indirect jump. The real call always goes through libc's own
//! `syscall`, so its result is the raw system call's: -1 and `errno` on failure, as the program
//! expects from `syscall()`, and no cancellation point where there was none.
//!
//! x86-64 only: elsewhere `syscall` is not interposed (on AArch64 the same shape would test `x0`).

use std::ffi::c_void;
use std::sync::atomic::{AtomicPtr, Ordering};

use libc::{c_int, c_long, c_uint, iovec, mmsghdr, msghdr, size_t, sockaddr, socklen_t, ssize_t};
use netintercept_core::events;
use netintercept_core::sys;

use super::{after, sendfile_start};

/// The real `syscall`, resolved at load (or by the first call, if that comes earlier).
static REAL: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());

type SyscallFn =
    unsafe extern "C" fn(c_long, c_long, c_long, c_long, c_long, c_long, c_long) -> c_long;

/// The numbers [`dispatch`] handles (all below 512), one bit each.
static HANDLED: [u64; 8] = handled();

const fn handled() -> [u64; 8] {
    const NUMBERS: &[c_long] = &[
        libc::SYS_socket,
        libc::SYS_connect,
        libc::SYS_bind,
        libc::SYS_listen,
        libc::SYS_accept,
        libc::SYS_accept4,
        libc::SYS_shutdown,
        libc::SYS_close,
        libc::SYS_close_range,
        libc::SYS_getsockopt,
        libc::SYS_write,
        libc::SYS_sendto,
        libc::SYS_writev,
        libc::SYS_sendmsg,
        libc::SYS_sendmmsg,
        libc::SYS_sendfile,
        libc::SYS_read,
        libc::SYS_recvfrom,
        libc::SYS_readv,
        libc::SYS_recvmsg,
        libc::SYS_recvmmsg,
        libc::SYS_dup,
        libc::SYS_dup2,
        libc::SYS_dup3,
        libc::SYS_fcntl,
        libc::SYS_open,
        libc::SYS_openat,
        libc::SYS_creat,
        libc::SYS_eventfd,
        libc::SYS_eventfd2,
        libc::SYS_epoll_create,
        libc::SYS_epoll_create1,
        libc::SYS_timerfd_create,
        libc::SYS_memfd_create,
        libc::SYS_signalfd,
        libc::SYS_signalfd4,
        libc::SYS_inotify_init,
        libc::SYS_inotify_init1,
        libc::SYS_pipe,
        libc::SYS_pipe2,
        libc::SYS_socketpair,
    ];
    let mut bits = [0u64; 8];
    let mut i = 0;
    while i < NUMBERS.len() {
        let n = NUMBERS[i] as usize;
        assert!(n < 512, "the bitmap covers numbers below 512");
        bits[n / 64] |= 1 << (n % 64);
        i += 1;
    }
    bits
}

/// `syscall(number, a1, …, a6)`: the number in `rdi`, the arguments in `rsi`, `rdx`, `rcx`,
/// `r8`, `r9` and on the stack, as for a non-variadic function of seven arguments; both targets
/// receive them untouched.
#[unsafe(naked)]
#[no_mangle]
pub unsafe extern "C" fn syscall() {
    std::arch::naked_asm!(
        // A number we handle: to `dispatch`, with the caller's registers and stack.
        "cmp rdi, 511",
        "ja 2f",
        "bt qword ptr [rip + {handled}], rdi",
        "jc {dispatch}",
        // Anything else: straight to the real function.
        "2:",
        "mov rax, qword ptr [rip + {real}]",
        "test rax, rax",
        "jz 3f",
        "jmp rax",
        // Not resolved yet (a call before our constructor ran): resolve, keeping the argument
        // registers (the seventh argument is on the stack, above what we push), then jump.
        "3:",
        "push rdi",
        "push rsi",
        "push rdx",
        "push rcx",
        "push r8",
        "push r9",
        // Six pushes after the return address: 8 more to keep the stack 16-byte aligned.
        "sub rsp, 8",
        "call {resolve}",
        "add rsp, 8",
        "pop r9",
        "pop r8",
        "pop rcx",
        "pop rdx",
        "pop rsi",
        "pop rdi",
        "jmp rax",
        handled = sym HANDLED,
        dispatch = sym dispatch,
        real = sym REAL,
        resolve = sym resolve,
    )
}

/// The real `syscall` (never null: a stand-in that fails with ENOSYS when libc has none).
extern "C" fn resolve() -> *mut c_void {
    let p = REAL.load(Ordering::Acquire);
    if !p.is_null() {
        return p;
    }
    // SAFETY: a NUL-terminated name; RTLD_NEXT is valid from a shared object.
    let mut p = unsafe { libc::dlsym(libc::RTLD_NEXT, c"syscall".as_ptr()) };
    if p.is_null() {
        p = missing as *mut c_void;
    }
    REAL.store(p, Ordering::Release);
    p
}

extern "C" fn missing() -> c_long {
    sys::set_errno(libc::ENOSYS);
    -1
}

extern "C" fn resolve_at_load() {
    resolve();
}

// Resolved at load, so that the trampoline's slow path (a call into Rust before the jump) is
// only taken by a call made before our constructor runs.
#[used]
#[link_section = ".init_array"]
static RESOLVE_AT_LOAD: extern "C" fn() = resolve_at_load;

fn real() -> SyscallFn {
    // SAFETY: `resolve` gives libc's `syscall` (variadic in C; its arguments travel as those of
    // this seven-argument type on x86-64) or `missing`, which ignores its arguments.
    unsafe { std::mem::transmute::<*mut c_void, SyscallFn>(resolve()) }
}

/// The call's name in records: pcapng comments say `call=syscall`.
const CALL: u16 = netintercept_core::record::call_id("syscall");

fn record(f: impl FnOnce()) {
    after::note(CALL, f)
}

/// A handled number: the real system call through libc's `syscall`, then what the named hook
/// records, through the same functions (`after`), so a call means the same either way.
///
/// # Safety
/// The arguments are the caller's, for `syscall(2)`.
unsafe extern "C" fn dispatch(
    n: c_long,
    a1: c_long,
    a2: c_long,
    a3: c_long,
    a4: c_long,
    a5: c_long,
    a6: c_long,
) -> c_long {
    let real = real();
    let call = || {
        // SAFETY: forwarding the caller's arguments unchanged.
        unsafe { real(n, a1, a2, a3, a4, a5, a6) }
    };
    let fd = a1 as c_int;
    match n {
        libc::SYS_close => {
            let tracked = events::is_tracked(fd);
            if tracked {
                // Recorded first: once closed, the number may be reused by another thread.
                record(|| events::on_close(fd));
            }
            let ret = call();
            if tracked && events::events_on() {
                // Its result, for the event trace.
                let errno = sys::errno();
                record(|| events::on_closed(fd, ret as c_int, errno));
                sys::set_errno(errno);
            }
            ret
        }
        libc::SYS_close_range => {
            if a3 as c_int & libc::CLOSE_RANGE_CLOEXEC as c_int == 0 {
                record(|| events::on_close_range(a1 as c_uint, a2 as c_uint));
            }
            call()
        }
        libc::SYS_read | libc::SYS_recvfrom if events::is_tracked(fd) => {
            let (flags, addr, alen) = if n == libc::SYS_read {
                (0, std::ptr::null_mut(), std::ptr::null_mut())
            } else {
                (a4 as c_int, a5 as *mut sockaddr, a6 as *mut socklen_t)
            };
            // SAFETY: the caller's recvfrom(2) arguments (read is recvfrom without flags or
            // address on a socket); see the read hook.
            unsafe {
                super::receive(
                    CALL,
                    fd,
                    a2 as *mut c_void,
                    a3 as size_t,
                    flags,
                    addr,
                    alen,
                    || call() as ssize_t,
                ) as c_long
            }
        }
        _ => {
            let ret = call();
            let errno = sys::errno();
            // SAFETY: the system call `n` just ran with these arguments and returned `ret`.
            unsafe { after(n, [a1, a2, a3, a4, a5, a6], ret, errno) };
            sys::set_errno(errno);
            ret
        }
    }
}

/// What the named hooks record after the call, for the numbers recorded afterwards.
///
/// # Safety
/// System call `n` just ran with `a` and returned `ret` (with `errno`).
unsafe fn after(n: c_long, a: [c_long; 6], ret: c_long, errno: c_int) {
    let fd = a[0] as c_int;
    let new = ret as c_int;
    match n {
        libc::SYS_socket if ret >= 0 => {
            record(|| events::on_socket(new, fd, a[1] as c_int, a[2] as c_int))
        }
        // SAFETY: the arguments of the system call that just ran.
        libc::SYS_connect => unsafe {
            after::connect(
                CALL,
                fd,
                a[1] as *const sockaddr,
                a[2] as socklen_t,
                new,
                errno,
            )
        },
        // SAFETY: the arguments of the system call that just ran.
        libc::SYS_bind if (ret == 0 || events::events_on()) && events::is_tracked(fd) => unsafe {
            after::bind(
                CALL,
                fd,
                a[1] as *const sockaddr,
                a[2] as socklen_t,
                new,
                errno,
            )
        },
        libc::SYS_listen if ret == 0 && events::is_tracked(fd) => {
            record(|| events::on_listen(fd, a[1] as c_int))
        }
        libc::SYS_accept | libc::SYS_accept4 if ret >= 0 && events::is_tracked(fd) => {
            let flags = if n == libc::SYS_accept4 {
                a[3] as c_int
            } else {
                0
            };
            record(|| events::on_accept(fd, new, flags))
        }
        libc::SYS_shutdown if ret == 0 && events::is_tracked(fd) => {
            record(|| events::on_shutdown(fd, a[1] as c_int))
        }
        // SAFETY: the arguments of the system call that just ran.
        libc::SYS_getsockopt => unsafe {
            after::getsockopt(
                CALL,
                fd,
                a[1] as c_int,
                a[2] as c_int,
                a[3] as *const c_void,
                a[4] as *const socklen_t,
                new,
                errno,
            )
        },
        // SAFETY: the arguments of the system call that just ran.
        libc::SYS_write => unsafe {
            after::send(
                CALL,
                fd,
                a[1] as *const c_void,
                a[2] as usize,
                0,
                std::ptr::null(),
                0,
                ret as ssize_t,
                errno,
            )
        },
        // SAFETY: the arguments of the system call that just ran.
        libc::SYS_sendto => unsafe {
            after::send(
                CALL,
                fd,
                a[1] as *const c_void,
                a[2] as usize,
                a[3] as c_int,
                a[4] as *const sockaddr,
                a[5] as socklen_t,
                ret as ssize_t,
                errno,
            )
        },
        // SAFETY: the arguments of the system call that just ran.
        libc::SYS_writev => unsafe {
            after::writev(
                CALL,
                fd,
                a[1] as *const iovec,
                a[2] as c_int,
                ret as ssize_t,
                errno,
            )
        },
        // SAFETY: the arguments of the system call that just ran.
        libc::SYS_sendmsg => unsafe {
            after::sendmsg(
                CALL,
                fd,
                a[1] as *const msghdr,
                a[2] as c_int,
                ret as ssize_t,
                errno,
            )
        },
        // SAFETY: the arguments of the system call that just ran.
        libc::SYS_sendmmsg => unsafe {
            after::sendmmsg(
                CALL,
                fd,
                a[1] as *const mmsghdr,
                a[2] as libc::c_uint,
                a[3] as c_int,
                new,
                errno,
            )
        },
        // SAFETY: the arguments of the system call that just ran.
        libc::SYS_readv => unsafe {
            after::readv(
                CALL,
                fd,
                a[1] as *const iovec,
                a[2] as c_int,
                ret as ssize_t,
                errno,
            )
        },
        // SAFETY: the arguments of the system call that just ran.
        libc::SYS_recvmsg => unsafe {
            after::recvmsg(
                CALL,
                fd,
                a[1] as *const msghdr,
                a[2] as c_int,
                ret as ssize_t,
                errno,
            )
        },
        // SAFETY: the arguments of the system call that just ran.
        libc::SYS_recvmmsg => unsafe {
            after::recvmmsg(
                CALL,
                fd,
                a[1] as *const mmsghdr,
                a[2] as libc::c_uint,
                a[3] as c_int,
                a[4] as *const libc::timespec,
                new,
                errno,
            )
        },
        libc::SYS_sendfile if ret > 0 && events::is_tracked(fd) => {
            // SAFETY: sendfile succeeded: the offset pointer is null or the kernel just wrote it.
            let start = unsafe { sendfile_start(a[1] as c_int, a[2] as *const libc::off_t, ret) };
            if let Some(start) = start {
                record(|| events::on_sendfile(fd, a[1] as c_int, start, ret as usize));
            }
        }
        libc::SYS_dup if ret >= 0 && (events::is_tracked(fd) || events::is_tracked(new)) => {
            record(|| events::on_dup(fd, new))
        }
        libc::SYS_dup2 | libc::SYS_dup3
            if ret >= 0 && (events::is_tracked(fd) || events::is_tracked(a[1] as c_int)) =>
        {
            let flags = if n == libc::SYS_dup3 { a[2] } else { 0 };
            record(|| events::on_dup_with(fd, a[1] as c_int, flags, 0))
        }
        libc::SYS_fcntl
            if ret >= 0
                && (a[1] as c_int == libc::F_DUPFD || a[1] as c_int == libc::F_DUPFD_CLOEXEC)
                && events::is_tracked(fd) =>
        {
            record(|| events::on_dup_with(fd, new, a[1], a[2]))
        }
        libc::SYS_pipe | libc::SYS_pipe2 if ret == 0 && a[0] != 0 => {
            // SAFETY: the call succeeded, so it wrote two descriptors at `a[0]`.
            let pair = unsafe { std::ptr::read_unaligned(a[0] as *const [c_int; 2]) };
            record(|| events::on_new_fds(&pair));
        }
        libc::SYS_socketpair if ret == 0 && a[3] != 0 => {
            // SAFETY: the call succeeded, so it wrote two descriptors at `a[3]`.
            let pair = unsafe { std::ptr::read_unaligned(a[3] as *const [c_int; 2]) };
            record(|| events::on_new_fds(&pair));
        }
        libc::SYS_open
        | libc::SYS_openat
        | libc::SYS_creat
        | libc::SYS_eventfd
        | libc::SYS_eventfd2
        | libc::SYS_epoll_create
        | libc::SYS_epoll_create1
        | libc::SYS_timerfd_create
        | libc::SYS_memfd_create
        | libc::SYS_signalfd
        | libc::SYS_signalfd4
        | libc::SYS_inotify_init
        | libc::SYS_inotify_init1
            if ret >= 0 =>
        {
            record(|| events::on_new_fds(&[new]))
        }
        _ => {}
    }
}
