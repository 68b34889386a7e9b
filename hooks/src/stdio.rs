//! stdio on sockets (issue 12, A): a program that `fdopen`s a socket, or runs with a socket on
//! stdin or stdout (inetd-style servers, `busybox wget`), moves its bytes through glibc's internal
//! read and write, which no preload sees. These hooks record them at the stdio call instead:
//!
//! - output: the bytes the program handed to the stream, in order, when it handed them. The
//!   packet's time is the stdio call's, not the later flush's; bytes still buffered when the
//!   program dies without flushing appear although they were never sent, and a `write(2)` on the
//!   same descriptor between a buffered `fputs` and its flush appears after the `fputs`' bytes,
//!   where the wire has it before.
//! - input: the bytes the call returned to the program. What stdio read ahead into its buffer
//!   and the program never asked for is not in the capture.
//!
//! Datagram sockets are left alone (stdio erases datagram boundaries, so its calls cannot say
//! which datagram a byte was in). The printf family is variadic and lives in `stdio_shim.c`,
//! reached through [`trampoline!`]s; its bytes are recorded by [`netintercept_stdio_sent`].
//!
//! Not hooked, and why:
//! - `getc_unlocked`, `putc_unlocked`, `getchar_unlocked`, `putchar_unlocked`, `fgetc_unlocked`,
//!   `fputc_unlocked`: glibc's `<bits/stdio.h>` defines them as inline functions that touch the
//!   stream's buffer directly when a program is compiled with optimization; only a call the
//!   compiler left out of line (no `-O`, or a program such as busybox that calls the exported
//!   symbols) reaches these hooks. The same header turns `getline` into `__getdelim`, hooked.
//! - the scanf family: the bytes a conversion consumes are not returned to the caller, and when
//!   the stream refills its buffer inside the call the earlier bytes are gone, so a hook cannot
//!   know them without parsing the format itself.
//! - `ungetc`: a byte pushed back and read again is recorded twice.
//! - `gets` (removed from C11; it drops the newline, so what it consumed is unknown) and the
//!   wide-character functions (`fputws`, `fwprintf`, `fgetws`…: converted through a locale).

use libc::{c_char, c_int, c_void, size_t, ssize_t, FILE};
use netintercept_core::events;
use netintercept_core::recorder::Payload;

use super::bytes;

// ---- the hooks' shape -------------------------------------------------------------------------

/// `hook!`'s shape for stdio functions, whose failure value is not always -1: `or $fail` is what
/// the hook returns (with ENOSYS) when no real function exists, as the real one fails.
macro_rules! stdio_hook {
    ($real_static:ident, fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty, or $fail:expr, |$real:ident| $body:block) => {
        static $real_static: netintercept_core::real_fn::RealFn =
            netintercept_core::real_fn::RealFn::new(hook!(@name $name));

        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            const CALL: u16 = netintercept_core::record::call_id(stringify!($name));
            // The call's name is noted only when something is recorded.
            #[allow(dead_code)]
            fn record(f: impl FnOnce()) {
                netintercept_core::guard::set_call_id(CALL);
                netintercept_core::events::record(f)
            }
            let p = $real_static.get();
            if p.is_null() {
                netintercept_core::sys::set_errno(libc::ENOSYS);
                return $fail;
            }
            // SAFETY: dlsym gave the next definition of this same symbol, whose C signature is the
            // one declared here.
            let $real = unsafe {
                std::mem::transmute::<*mut std::ffi::c_void, unsafe extern "C" fn($($ty),*) -> $ret>(p)
            };
            $body
        }
    };
}

// ---- fdopen: recorded for the event traces only ----------------------------------------------

stdio_hook!(REAL_FDOPEN, fn fdopen(fd: c_int, mode: *const c_char) -> *mut FILE, or std::ptr::null_mut(), |real| {
    // SAFETY: forwarding the caller's arguments unchanged.
    let stream = unsafe { real(fd, mode) };
    if events::events_on() && events::is_tracked(fd) {
        let errno = netintercept_core::sys::errno();
        // glibc's fdopen parses the mode before anything else (it fails with EINVAL on a bad
        // one, and a bad pointer would have faulted there): having returned, it read it up to
        // its NUL. A few characters are all a mode has.
        let mut m = [0u8; 8];
        let mut n = 0;
        if !mode.is_null() {
            while n < m.len() {
                // SAFETY: glibc just read the mode up to its NUL.
                let c = unsafe { *mode.add(n) } as u8;
                if c == 0 {
                    break;
                }
                m[n] = c;
                n += 1;
            }
        }
        let ret = i32::from(!stream.is_null());
        record(|| events::on_sock_call(fd, 0, &m[..n], ret, errno));
    }
    stream
});

// ---- which streams ----------------------------------------------------------------------------

/// glibc's `_IO_IS_FILEBUF` (libio/libio.h): the stream reads and writes a descriptor, as
/// opposed to `fmemopen`, `open_memstream` and `fopencookie` streams, whose `_fileno` means
/// nothing. `fileno()` checks the same flag.
const IO_IS_FILEBUF: c_int = 0x2000;
/// glibc's `_IO_EOF_SEEN` (<bits/types/struct_FILE.h>).
const IO_EOF_SEEN: c_int = 0x10;
/// Offset of `_fileno` in glibc's `struct _IO_FILE` on LP64 (x86-64, AArch64): `int _flags`,
/// then twelve pointers and `_chain`. `stdio_shim.c` checks it against the installed header.
const FILENO_OFFSET: usize = 112;

/// The descriptor under `stream` (-1 for streams that have none), read from the stream itself as
/// `fileno_unlocked` would, without its `errno` on failure or a call.
///
/// # Safety
/// `stream` is null or a glibc `FILE` the caller passed to stdio.
#[inline]
unsafe fn descriptor_of(stream: *mut FILE) -> c_int {
    if stream.is_null() {
        return -1;
    }
    // SAFETY: a glibc FILE begins with `int _flags` and has `int _fileno` at FILENO_OFFSET (the
    // shim's static assertion). Volatile: another thread may be using the stream under its lock;
    // these two aligned ints are read whole, as fileno_unlocked reads them.
    let (flags, fd) = unsafe {
        (
            std::ptr::read_volatile(stream as *const c_int),
            std::ptr::read_volatile((stream as *const u8).add(FILENO_OFFSET) as *const c_int),
        )
    };
    if flags & IO_IS_FILEBUF == 0 {
        -1
    } else {
        fd
    }
}

/// The descriptor under `stream` if it is a tracked stream socket, else -1: the only test made
/// on streams that are not (two loads from the FILE, one atomic load of the descriptor table).
///
/// # Safety
/// As [`descriptor_of`].
#[inline]
unsafe fn socket_of(stream: *mut FILE) -> c_int {
    // SAFETY: per the contract.
    let fd = unsafe { descriptor_of(stream) };
    if events::is_tracked(fd) && !events::is_datagram(fd) {
        fd
    } else {
        -1
    }
}

/// Whether a read on `stream` ended at end of file (not an error).
///
/// # Safety
/// As [`descriptor_of`], and non-null.
unsafe fn at_eof(stream: *mut FILE) -> bool {
    // SAFETY: per the contract; `_flags` is the FILE's first int.
    unsafe { std::ptr::read_volatile(stream as *const c_int) & IO_EOF_SEEN != 0 }
}

extern "C" {
    static mut stdin: *mut FILE;
    static mut stdout: *mut FILE;
}

/// The current `stdout` (a program may assign it).
fn stdout_stream() -> *mut FILE {
    // SAFETY: glibc's `stdout` variable, read by value.
    unsafe { stdout }
}

/// The current `stdin`.
fn stdin_stream() -> *mut FILE {
    // SAFETY: glibc's `stdin` variable, read by value.
    unsafe { stdin }
}

// ---- what is recorded -------------------------------------------------------------------------

/// Bytes in two pieces (`puts`: the string, then its newline).
struct Pieces<'a>([&'a [u8]; 2]);

impl Payload for Pieces<'_> {
    fn for_each_piece(&self, f: &mut dyn FnMut(&[u8])) {
        for p in self.0 {
            if !p.is_empty() {
                f(p)
            }
        }
    }
}

/// The program handed `data` to the stream on socket `fd`: a send of those bytes.
fn sent(fd: c_int, data: &dyn Payload) {
    events::on_send_result(fd, data.len() as isize, 0, 0, data, None);
}

/// A stdio input call that asked for `requested` bytes returned `data` to the program.
fn received(fd: c_int, data: &dyn Payload, requested: usize) {
    events::on_receive_result(fd, data.len() as isize, requested, 0, 0, data, None);
}

/// A stdio input call found the stream's end: the peer's FIN, as a `read` returning 0 says.
fn end_of_stream(fd: c_int, requested: usize) {
    events::on_receive_result(
        fd,
        0,
        requested,
        0,
        0,
        &netintercept_core::recorder::NOTHING,
        None,
    );
}

/// The printf family's bytes (`stdio_shim.c`): `len` bytes at `buf` that `call` handed to the
/// stream or wrote to the descriptor `fd`.
///
/// # Safety
/// `buf` is valid for `len` bytes; `call` is null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn netintercept_stdio_sent(
    fd: c_int,
    call: *const c_char,
    buf: *const c_char,
    len: size_t,
) {
    if !call.is_null() {
        // SAFETY: per the contract.
        let name = unsafe { std::ffi::CStr::from_ptr(call) };
        netintercept_core::guard::set_call(name.to_str().unwrap_or(""));
    }
    // SAFETY: per the contract.
    let data = unsafe { bytes(buf as *const c_void, len) };
    events::record(|| sent(fd, &data));
}

/// For `stdio_shim.c`: the tracked stream socket under `stream`, or -1.
///
/// # Safety
/// As [`descriptor_of`].
#[no_mangle]
pub unsafe extern "C" fn netintercept_stdio_socket(stream: *mut FILE) -> c_int {
    // SAFETY: per the contract.
    unsafe { socket_of(stream) }
}

/// For `stdio_shim.c` (`dprintf`): whether `fd` is a tracked stream socket.
#[no_mangle]
pub extern "C" fn netintercept_fd_socket(fd: c_int) -> c_int {
    (events::is_tracked(fd) && !events::is_datagram(fd)) as c_int
}

// ---- output -----------------------------------------------------------------------------------

/// fwrite and its aliases: `ret` whole items of `size` bytes were taken from `buf`. (An item that
/// was taken in part before an error is not reported by fwrite, so it is not recorded.)
macro_rules! fwrite_hook {
    ($($real:ident: $name:ident),*) => {$(
        stdio_hook!($real, fn $name(buf: *const c_void, size: size_t, n: size_t, stream: *mut FILE) -> size_t, or 0, |real| {
            // SAFETY: forwarding the caller's arguments unchanged.
            let ret = unsafe { real(buf, size, n, stream) };
            // SAFETY: the caller's stream.
            let fd = unsafe { socket_of(stream) };
            if fd >= 0 && ret > 0 {
                // SAFETY: fwrite took `ret` items of `size` bytes from `buf`.
                let data = unsafe { bytes(buf, ret.saturating_mul(size)) };
                record(|| sent(fd, &data));
            }
            ret
        });
    )*};
}

fwrite_hook!(REAL_FWRITE: fwrite, REAL_FWRITE_UNLOCKED: fwrite_unlocked, REAL_IO_FWRITE: _IO_fwrite);

/// fputs and its aliases: on success (non-negative) the whole string went to the stream. On
/// failure how much of it did is unknown, and nothing is recorded.
macro_rules! fputs_hook {
    ($($real:ident: $name:ident),*) => {$(
        stdio_hook!($real, fn $name(s: *const c_char, stream: *mut FILE) -> c_int, or libc::EOF, |real| {
            // SAFETY: forwarding the caller's arguments unchanged.
            let ret = unsafe { real(s, stream) };
            // SAFETY: the caller's stream.
            let fd = unsafe { socket_of(stream) };
            if fd >= 0 && ret >= 0 && !s.is_null() {
                // SAFETY: fputs just read this NUL-terminated string.
                let data = unsafe { std::ffi::CStr::from_ptr(s) }.to_bytes();
                record(|| sent(fd, &data));
            }
            ret
        });
    )*};
}

fputs_hook!(REAL_FPUTS: fputs, REAL_FPUTS_UNLOCKED: fputs_unlocked, REAL_IO_FPUTS: _IO_fputs);

/// puts: the string and a newline to stdout.
macro_rules! puts_hook {
    ($($real:ident: $name:ident),*) => {$(
        stdio_hook!($real, fn $name(s: *const c_char) -> c_int, or libc::EOF, |real| {
            let stream = stdout_stream();
            // SAFETY: forwarding the caller's argument unchanged.
            let ret = unsafe { real(s) };
            // SAFETY: glibc's stdout.
            let fd = unsafe { socket_of(stream) };
            if fd >= 0 && ret >= 0 && !s.is_null() {
                // SAFETY: puts just read this NUL-terminated string.
                let line = unsafe { std::ffi::CStr::from_ptr(s) }.to_bytes();
                record(|| sent(fd, &Pieces([line, b"\n"])));
            }
            ret
        });
    )*};
}

puts_hook!(REAL_PUTS: puts, REAL_IO_PUTS: _IO_puts);

/// fputc and its aliases: one byte, returned on success.
macro_rules! fputc_hook {
    ($($real:ident: $name:ident),*) => {$(
        stdio_hook!($real, fn $name(c: c_int, stream: *mut FILE) -> c_int, or libc::EOF, |real| {
            // SAFETY: forwarding the caller's arguments unchanged.
            let ret = unsafe { real(c, stream) };
            // SAFETY: the caller's stream.
            let fd = unsafe { socket_of(stream) };
            if fd >= 0 && ret != libc::EOF {
                let byte = [ret as u8];
                record(|| sent(fd, &&byte[..]));
            }
            ret
        });
    )*};
}

fputc_hook!(
    REAL_FPUTC: fputc,
    REAL_FPUTC_UNLOCKED: fputc_unlocked,
    REAL_PUTC: putc,
    REAL_PUTC_UNLOCKED: putc_unlocked,
    REAL_IO_PUTC: _IO_putc
);

/// putchar: one byte to stdout.
macro_rules! putchar_hook {
    ($($real:ident: $name:ident),*) => {$(
        stdio_hook!($real, fn $name(c: c_int) -> c_int, or libc::EOF, |real| {
            let stream = stdout_stream();
            // SAFETY: forwarding the caller's argument unchanged.
            let ret = unsafe { real(c) };
            // SAFETY: glibc's stdout.
            let fd = unsafe { socket_of(stream) };
            if fd >= 0 && ret != libc::EOF {
                let byte = [ret as u8];
                record(|| sent(fd, &&byte[..]));
            }
            ret
        });
    )*};
}

putchar_hook!(REAL_PUTCHAR: putchar, REAL_PUTCHAR_UNLOCKED: putchar_unlocked);

// ---- input ------------------------------------------------------------------------------------

/// After an input call on the socket `fd` that returned `data` (empty when it returned nothing):
/// record the bytes, then the end of the stream if the call met it (a short fread, a last line
/// without its newline, or nothing at all). The collector takes a repeated end as one FIN.
///
/// # Safety
/// `stream` is the caller's non-null stream.
unsafe fn after_input(fd: c_int, stream: *mut FILE, data: &[u8], requested: usize) {
    if !data.is_empty() {
        events::record(|| received(fd, &data, requested));
    }
    // SAFETY: per the contract.
    if unsafe { at_eof(stream) } {
        events::record(|| end_of_stream(fd, requested.max(1)));
    }
}

/// fread and its aliases: `ret` whole items of `size` bytes were stored at `buf`.
macro_rules! fread_hook {
    ($($real:ident: $name:ident),*) => {$(
        stdio_hook!($real, fn $name(buf: *mut c_void, size: size_t, n: size_t, stream: *mut FILE) -> size_t, or 0, |real| {
            // SAFETY: forwarding the caller's arguments unchanged.
            let ret = unsafe { real(buf, size, n, stream) };
            // SAFETY: the caller's stream.
            let fd = unsafe { socket_of(stream) };
            if fd >= 0 {
                netintercept_core::guard::set_call_id(CALL);
                // SAFETY: fread stored `ret` items of `size` bytes at `buf`; the stream is valid.
                unsafe { after_input(fd, stream, bytes(buf, ret.saturating_mul(size)), size.saturating_mul(n)) };
            }
            ret
        });
    )*};
}

fread_hook!(REAL_FREAD: fread, REAL_FREAD_UNLOCKED: fread_unlocked, REAL_IO_FREAD: _IO_fread);

/// __fread_chk and __fread_unlocked_chk (`_FORTIFY_SOURCE`): the check stays with the real
/// function, which aborts on an overflow before reading.
macro_rules! fread_chk_hook {
    ($($real:ident: $name:ident),*) => {$(
        stdio_hook!($real, fn $name(buf: *mut c_void, buflen: size_t, size: size_t, n: size_t, stream: *mut FILE) -> size_t, or 0, |real| {
            // SAFETY: forwarding the caller's arguments unchanged.
            let ret = unsafe { real(buf, buflen, size, n, stream) };
            // SAFETY: the caller's stream.
            let fd = unsafe { socket_of(stream) };
            if fd >= 0 {
                netintercept_core::guard::set_call_id(CALL);
                // SAFETY: as fread.
                unsafe { after_input(fd, stream, bytes(buf, ret.saturating_mul(size)), size.saturating_mul(n)) };
            }
            ret
        });
    )*};
}

fread_chk_hook!(REAL_FREAD_CHK: __fread_chk, REAL_FREAD_UNLOCKED_CHK: __fread_unlocked_chk);

/// The line fgets stored at `s` (at most `n - 1` bytes). A NUL byte inside the line ends what is
/// recorded: fgets does not say how many bytes it stored.
///
/// # Safety
/// `s` is null or the NUL-terminated string fgets just stored.
unsafe fn fgets_line<'a>(s: *const c_char, n: c_int) -> &'a [u8] {
    if s.is_null() || n <= 1 {
        return &[];
    }
    // SAFETY: per the contract, a NUL is within the first `n` bytes.
    unsafe { std::ffi::CStr::from_ptr(s) }.to_bytes()
}

macro_rules! fgets_hook {
    ($($real:ident: $name:ident),*) => {$(
        stdio_hook!($real, fn $name(s: *mut c_char, n: c_int, stream: *mut FILE) -> *mut c_char, or std::ptr::null_mut(), |real| {
            // SAFETY: forwarding the caller's arguments unchanged.
            let ret = unsafe { real(s, n, stream) };
            // SAFETY: the caller's stream.
            let fd = unsafe { socket_of(stream) };
            if fd >= 0 {
                netintercept_core::guard::set_call_id(CALL);
                // SAFETY: fgets returned `s` holding a NUL-terminated line, or null.
                unsafe { after_input(fd, stream, fgets_line(ret, n), n.max(0) as usize) };
            }
            ret
        });
    )*};
}

fgets_hook!(REAL_FGETS: fgets, REAL_FGETS_UNLOCKED: fgets_unlocked, REAL_IO_FGETS: _IO_fgets);

/// __fgets_chk and __fgets_unlocked_chk: the fortify check stays with the real function.
macro_rules! fgets_chk_hook {
    ($($real:ident: $name:ident),*) => {$(
        stdio_hook!($real, fn $name(s: *mut c_char, size: size_t, n: c_int, stream: *mut FILE) -> *mut c_char, or std::ptr::null_mut(), |real| {
            // SAFETY: forwarding the caller's arguments unchanged.
            let ret = unsafe { real(s, size, n, stream) };
            // SAFETY: the caller's stream.
            let fd = unsafe { socket_of(stream) };
            if fd >= 0 {
                netintercept_core::guard::set_call_id(CALL);
                // SAFETY: as fgets.
                unsafe { after_input(fd, stream, fgets_line(ret, n), n.max(0) as usize) };
            }
            ret
        });
    )*};
}

fgets_chk_hook!(REAL_FGETS_CHK: __fgets_chk, REAL_FGETS_UNLOCKED_CHK: __fgets_unlocked_chk);

/// fgetc and its aliases: one byte, or EOF.
macro_rules! fgetc_hook {
    ($($real:ident: $name:ident),*) => {$(
        stdio_hook!($real, fn $name(stream: *mut FILE) -> c_int, or libc::EOF, |real| {
            // SAFETY: forwarding the caller's argument unchanged.
            let ret = unsafe { real(stream) };
            // SAFETY: the caller's stream.
            let fd = unsafe { socket_of(stream) };
            if fd >= 0 {
                netintercept_core::guard::set_call_id(CALL);
                let byte = [ret as u8];
                let data: &[u8] = if ret == libc::EOF { &[] } else { &byte };
                // SAFETY: the caller's non-null stream (it is a socket's).
                unsafe { after_input(fd, stream, data, 1) };
            }
            ret
        });
    )*};
}

fgetc_hook!(
    REAL_FGETC: fgetc,
    REAL_FGETC_UNLOCKED: fgetc_unlocked,
    REAL_GETC: getc,
    REAL_GETC_UNLOCKED: getc_unlocked,
    REAL_IO_GETC: _IO_getc
);

/// getchar: one byte from stdin, or EOF.
macro_rules! getchar_hook {
    ($($real:ident: $name:ident),*) => {$(
        stdio_hook!($real, fn $name() -> c_int, or libc::EOF, |real| {
            let stream = stdin_stream();
            // SAFETY: getchar has no arguments.
            let ret = unsafe { real() };
            // SAFETY: glibc's stdin.
            let fd = unsafe { socket_of(stream) };
            if fd >= 0 {
                netintercept_core::guard::set_call_id(CALL);
                let byte = [ret as u8];
                let data: &[u8] = if ret == libc::EOF { &[] } else { &byte };
                // SAFETY: stdin, non-null since it has a socket under it.
                unsafe { after_input(fd, stream, data, 1) };
            }
            ret
        });
    )*};
}

getchar_hook!(REAL_GETCHAR: getchar, REAL_GETCHAR_UNLOCKED: getchar_unlocked);

/// The `ret` bytes getline/getdelim stored at `*line`.
///
/// # Safety
/// `line` is null or valid; when `ret` > 0, `*line` holds `ret` bytes.
unsafe fn getdelim_line<'a>(line: *mut *mut c_char, ret: ssize_t) -> &'a [u8] {
    if line.is_null() || ret <= 0 {
        return &[];
    }
    // SAFETY: per the contract.
    unsafe { bytes(*line as *const c_void, ret as usize) }
}

stdio_hook!(REAL_GETLINE, fn getline(line: *mut *mut c_char, n: *mut size_t, stream: *mut FILE) -> ssize_t, or -1, |real| {
    // SAFETY: forwarding the caller's arguments unchanged.
    let ret = unsafe { real(line, n, stream) };
    // SAFETY: the caller's stream.
    let fd = unsafe { socket_of(stream) };
    if fd >= 0 {
        netintercept_core::guard::set_call_id(CALL);
        // SAFETY: getline stored `ret` bytes at `*line`; the stream is valid.
        unsafe { after_input(fd, stream, getdelim_line(line, ret), ret.max(0) as usize) };
    }
    ret
});

macro_rules! getdelim_hook {
    ($($real:ident: $name:ident),*) => {$(
        stdio_hook!($real, fn $name(line: *mut *mut c_char, n: *mut size_t, delim: c_int, stream: *mut FILE) -> ssize_t, or -1, |real| {
            // SAFETY: forwarding the caller's arguments unchanged.
            let ret = unsafe { real(line, n, delim, stream) };
            // SAFETY: the caller's stream.
            let fd = unsafe { socket_of(stream) };
            if fd >= 0 {
                netintercept_core::guard::set_call_id(CALL);
                // SAFETY: getdelim stored `ret` bytes at `*line`; the stream is valid.
                unsafe { after_input(fd, stream, getdelim_line(line, ret), ret.max(0) as usize) };
            }
            ret
        });
    )*};
}

// `getline` in an optimized program is an inline call of `__getdelim` (<bits/stdio.h>).
getdelim_hook!(REAL_GETDELIM: getdelim, REAL_UNDERSCORE_GETDELIM: __getdelim);

// ---- closing ----------------------------------------------------------------------------------

stdio_hook!(REAL_FCLOSE, fn fclose(stream: *mut FILE) -> c_int, or libc::EOF, |real| {
    // SAFETY: the caller's stream, still open.
    let fd = unsafe { descriptor_of(stream) };
    if events::is_tracked(fd) {
        // fclose closes the descriptor with glibc's internal close, which the close hook never
        // sees. Recorded first: once closed, the number may be reused by another thread.
        record(|| events::on_close(fd));
    }
    // SAFETY: forwarding the caller's argument unchanged.
    unsafe { real(stream) }
});

// ---- the printf family (stdio_shim.c) ---------------------------------------------------------

/// Exported names that jump, without a frame of their own, to a C function of `stdio_shim.c`: a
/// variadic function cannot be defined in stable Rust, and a C symbol in a static library is not
/// exported from a Rust cdylib (its version script lists only Rust's own symbols). A jump keeps
/// every argument register, the stack arguments and `%al` (the vector-register count of a
/// variadic call) exactly as the caller set them.
macro_rules! trampoline {
    ($($name:ident => $target:ident),* $(,)?) => {
        extern "C" {
            $(fn $target();)*
        }
        $(
            #[unsafe(naked)]
            #[no_mangle]
            pub unsafe extern "C" fn $name() {
                #[cfg(target_arch = "x86_64")]
                std::arch::naked_asm!("jmp {}", sym $target);
                #[cfg(target_arch = "aarch64")]
                std::arch::naked_asm!("b {}", sym $target);
            }
        )*
    };
}

trampoline! {
    printf => netintercept_printf,
    fprintf => netintercept_fprintf,
    dprintf => netintercept_dprintf,
    vprintf => netintercept_vprintf,
    vfprintf => netintercept_vfprintf,
    vdprintf => netintercept_vdprintf,
    __printf_chk => netintercept___printf_chk,
    __fprintf_chk => netintercept___fprintf_chk,
    __dprintf_chk => netintercept___dprintf_chk,
    __vprintf_chk => netintercept___vprintf_chk,
    __vfprintf_chk => netintercept___vfprintf_chk,
    __vdprintf_chk => netintercept___vdprintf_chk,
    _IO_printf => netintercept__IO_printf,
    _IO_fprintf => netintercept__IO_fprintf,
    _IO_vfprintf => netintercept__IO_vfprintf,
}
