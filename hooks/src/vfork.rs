//! `vfork()`. The child runs on its parent's memory and stack, so in its parent's recorder and
//! under its parent's pid, until it execs or exits; the parent waits meanwhile. What the child
//! closes (CPython's `subprocess` runs `close_range` there; inetd-style servers close and dup)
//! must not end the parent's connections. Asking the kernel who we are at every close would
//! cost a system call; instead this hook marks the calling thread with the child's pid for
//! exactly that while ([`recorder::vfork_child`]: a `getpid` only for closes made while a mark
//! is set), and the recorder says so in the child's Close records.
//!
//! It cannot be a Rust function around libc's `vfork`: the child would return through a frame
//! the parent then returns through again. Like libc's own, it keeps its return address in a
//! register, not on the shared stack, across the system call. x86-64 only: elsewhere libc's
//! `vfork` runs and the collector tells the child's closes from what `/proc` shows.

use libc::{c_int, c_long};
use netintercept_core::{recorder, sys};

/// `pid_t vfork(void)`.
#[unsafe(naked)]
#[no_mangle]
pub unsafe extern "C" fn vfork() -> libc::pid_t {
    std::arch::naked_asm!(
        // This thread's mark now, kept in esi (a vfork child may vfork again): the parent gets
        // its own registers back from the kernel, whatever the child did meanwhile.
        "sub rsp, 8",
        "call {mark}",
        "add rsp, 8",
        "mov esi, eax",
        // The return address leaves the stack the child is about to share.
        "pop rdi",
        "mov eax, {nr}",
        "syscall",
        "push rdi",
        "cmp rax, -4095",
        "jae 3f",
        "test rax, rax",
        "jnz 2f",
        // The child: marked until it execs or exits. It leaves by a jump, not `ret`: with
        // shadow stacks (CET), a `ret` would pop the entry its parent's `ret` needs, and the
        // child's next call would overwrite it.
        "sub rsp, 8",
        "call {child}",
        "add rsp, 8",
        "pop rdi",
        "xor eax, eax",
        "jmp rdi",
        // The parent, back once the child has exec'd or exited: its mark as it was.
        "2:",
        "push rax",
        "mov edi, esi",
        "call {parent}",
        "pop rax",
        "ret",
        // No child: -1 and errno, as libc's vfork.
        "3:",
        "mov rdi, rax",
        "sub rsp, 8",
        "call {failed}",
        "add rsp, 8",
        "ret",
        mark = sym mark_now,
        nr = const libc::SYS_vfork,
        child = sym child_starts,
        parent = sym parent_resumes,
        failed = sym no_child,
    )
}

/// This thread's mark before the call (also makes sure its thread-locals exist, so the
/// child's access below takes no slow path: no loader lock, no allocation in the child).
extern "C" fn mark_now() -> c_int {
    recorder::vfork_child_mark()
}

/// The mark is the child's pid: a signal handler that runs in the parent as it returns from
/// the system call, before [`parent_resumes`], still sees the mark, and must not be taken for
/// the child (the recorder compares pids while a mark is set).
extern "C" fn child_starts() {
    recorder::set_vfork_child_mark(sys::getpid());
}

extern "C" fn parent_resumes(mark: c_int) {
    recorder::set_vfork_child_mark(mark);
}

extern "C" fn no_child(ret: c_long) -> c_int {
    sys::set_errno(-ret as c_int);
    -1
}
