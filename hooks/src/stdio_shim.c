/* The printf family on sockets (issue 12, A; see hooks/src/stdio.rs).
 *
 * These functions are variadic, which stable Rust cannot define, so they live here and are
 * exported through Rust trampolines (stdio.rs, `trampoline!`) that jump to them. For a stream
 * (or, for dprintf, a descriptor) that is not a tracked stream socket they hand their arguments
 * to the real v* function at once. For a socket they format into a buffer with the real
 * vsnprintf (__vsnprintf_chk for the _chk forms, so fortify's checks, %n in writable memory
 * among them, are glibc's own), write exactly those bytes with the real fwrite (or write, for
 * dprintf), record them, and return what the real call would: the count, or -1 with errno as the
 * failed write left it. When the formatting itself fails (EOVERFLOW, an invalid wide character)
 * or no memory is left for a long result, the real function runs instead, unrecorded, so the
 * program still sees exactly what it would have.
 *
 * No lock, no descriptor; memory is allocated only for a result longer than the stack buffer
 * (glibc's vfprintf allocates in the same cases), and only on sockets.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <wchar.h>

/* stdio.rs reads `_fileno` at this offset. */
_Static_assert(offsetof(FILE, _fileno) == 112, "glibc FILE layout: _fileno offset");

/* stdio.rs */
int netintercept_stdio_socket(FILE *stream);
int netintercept_fd_socket(int fd);
void netintercept_stdio_sent(int fd, const char *call, const char *buf, size_t len);

/* glibc's fortified formatter (debug/vsnprintf_chk.c). */
int __vsnprintf_chk(char *s, size_t maxlen, int flag, size_t slen, const char *format,
                    va_list ap);

/* Output up to this long is formatted on the stack (glibc's vfprintf keeps about as much). */
#define STACK_BUFFER 1024

/* ---- real functions, resolved once ------------------------------------------------------ */

/* The next definition of `name`; a race between two first calls stores the same address. */
static void *real(void **slot, const char *name) {
    void *p = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (p == NULL) {
        p = dlsym(RTLD_NEXT, name);
        __atomic_store_n(slot, p, __ATOMIC_RELEASE);
    }
    return p;
}

#define REAL_FN(ret, name, params)                                                             \
    typedef ret(*name##_fn) params;                                                            \
    static void *name##_slot;                                                                  \
    static name##_fn real_##name(void) { return (name##_fn)real(&name##_slot, #name); }

REAL_FN(int, vfprintf, (FILE *, const char *, va_list))
REAL_FN(int, vdprintf, (int, const char *, va_list))
REAL_FN(int, __vfprintf_chk, (FILE *, int, const char *, va_list))
REAL_FN(int, __vdprintf_chk, (int, int, const char *, va_list))
REAL_FN(size_t, fwrite, (const void *, size_t, size_t, FILE *))
REAL_FN(ssize_t, write, (int, const void *, size_t))

/* The real call for a stream, used when we do not format ourselves. `flag` < 0: not a _chk
 * form. */
static int forward_stream(FILE *f, int flag, const char *fmt, va_list ap) {
    if (flag < 0) {
        vfprintf_fn v = real_vfprintf();
        if (v == NULL) {
            errno = ENOSYS;
            return -1;
        }
        return v(f, fmt, ap);
    }
    __vfprintf_chk_fn v = real___vfprintf_chk();
    if (v == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return v(f, flag, fmt, ap);
}

static int forward_fd(int fd, int flag, const char *fmt, va_list ap) {
    if (flag < 0) {
        vdprintf_fn v = real_vdprintf();
        if (v == NULL) {
            errno = ENOSYS;
            return -1;
        }
        return v(fd, fmt, ap);
    }
    __vdprintf_chk_fn v = real___vdprintf_chk();
    if (v == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return v(fd, flag, fmt, ap);
}

/* ---- formatting -------------------------------------------------------------------------- */

/* The formatted output, on the stack or, when longer, on the heap. */
struct formatted {
    char *bytes;  /* NULL: formatting failed or no memory; the real function must run */
    int len;
    char *heap;   /* to free */
};

/* Format `fmt` with a copy of `ap` into `stack` (STACK_BUFFER bytes) or a heap buffer. */
static struct formatted format(char *stack, int flag, const char *fmt, va_list ap) {
    struct formatted out = {NULL, 0, NULL};
    va_list copy;
    va_copy(copy, ap);
    int n = flag < 0 ? vsnprintf(stack, STACK_BUFFER, fmt, copy)
                     : __vsnprintf_chk(stack, STACK_BUFFER, flag, STACK_BUFFER, fmt, copy);
    va_end(copy);
    if (n < 0) {
        return out;
    }
    if (n < STACK_BUFFER) {
        out.bytes = stack;
        out.len = n;
        return out;
    }
    char *heap = malloc((size_t)n + 1);
    if (heap == NULL) {
        return out;
    }
    va_copy(copy, ap);
    int again = flag < 0 ? vsnprintf(heap, (size_t)n + 1, fmt, copy)
                         : __vsnprintf_chk(heap, (size_t)n + 1, flag, (size_t)n + 1, fmt, copy);
    va_end(copy);
    if (again != n) {
        /* An argument changed under us (another thread): let the real call print it. */
        free(heap);
        return out;
    }
    out.bytes = heap;
    out.len = n;
    out.heap = heap;
    return out;
}

/* ---- the hooks' bodies ------------------------------------------------------------------- */

/* vfprintf and its forms on `f`. */
static int traced_vfprintf(FILE *f, int flag, const char *fmt, va_list ap, const char *call) {
    int fd = netintercept_stdio_socket(f);
    /* A wide-oriented stream makes the real call fail in its own way: let it. */
    if (fd < 0 || fwide(f, 0) > 0) {
        return forward_stream(f, flag, fmt, ap);
    }
    int saved = errno;
    char stack[STACK_BUFFER];
    struct formatted out = format(stack, flag, fmt, ap);
    fwrite_fn w = real_fwrite();
    /* Nothing to print leaves the stream's state to the real call (a read-only stream fails). */
    if (out.bytes == NULL || out.len == 0 || w == NULL) {
        free(out.heap);
        errno = saved;
        return forward_stream(f, flag, fmt, ap);
    }
    errno = saved;
    size_t wrote = w(out.bytes, 1, (size_t)out.len, f);
    int err = errno;
    if (wrote > 0) {
        netintercept_stdio_sent(fd, call, out.bytes, wrote);
    }
    free(out.heap);
    errno = err;
    /* vfprintf returns -1 when the stream refused part of its output. */
    return wrote == (size_t)out.len ? out.len : -1;
}

/* vdprintf and its forms on `fd`: glibc writes the whole output through a stream of its own,
 * retrying short writes and failing (-1, errno of the write) at the first error. */
static int traced_vdprintf(int fd, int flag, const char *fmt, va_list ap, const char *call) {
    if (!netintercept_fd_socket(fd)) {
        return forward_fd(fd, flag, fmt, ap);
    }
    int saved = errno;
    char stack[STACK_BUFFER];
    struct formatted out = format(stack, flag, fmt, ap);
    write_fn w = real_write();
    if (out.bytes == NULL || out.len == 0 || w == NULL) {
        free(out.heap);
        errno = saved;
        return forward_fd(fd, flag, fmt, ap);
    }
    errno = saved;
    size_t done = 0;
    int failed = 0;
    while (done < (size_t)out.len) {
        ssize_t n = w(fd, out.bytes + done, (size_t)out.len - done);
        if (n < 0) {
            failed = 1;
            break;
        }
        done += (size_t)n;
    }
    int err = errno;
    if (done > 0) {
        netintercept_stdio_sent(fd, call, out.bytes, done);
    }
    free(out.heap);
    errno = err;
    return failed ? -1 : out.len;
}

/* ---- entry points (exported by stdio.rs's trampolines under the names without the prefix) - */

int netintercept_printf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int r = traced_vfprintf(stdout, -1, fmt, ap, "printf");
    va_end(ap);
    return r;
}

int netintercept_fprintf(FILE *f, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int r = traced_vfprintf(f, -1, fmt, ap, "fprintf");
    va_end(ap);
    return r;
}

int netintercept_dprintf(int fd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int r = traced_vdprintf(fd, -1, fmt, ap, "dprintf");
    va_end(ap);
    return r;
}

int netintercept_vprintf(const char *fmt, va_list ap) {
    return traced_vfprintf(stdout, -1, fmt, ap, "vprintf");
}

int netintercept_vfprintf(FILE *f, const char *fmt, va_list ap) {
    return traced_vfprintf(f, -1, fmt, ap, "vfprintf");
}

int netintercept_vdprintf(int fd, const char *fmt, va_list ap) {
    return traced_vdprintf(fd, -1, fmt, ap, "vdprintf");
}

int netintercept___printf_chk(int flag, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int r = traced_vfprintf(stdout, flag, fmt, ap, "__printf_chk");
    va_end(ap);
    return r;
}

int netintercept___fprintf_chk(FILE *f, int flag, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int r = traced_vfprintf(f, flag, fmt, ap, "__fprintf_chk");
    va_end(ap);
    return r;
}

int netintercept___dprintf_chk(int fd, int flag, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int r = traced_vdprintf(fd, flag, fmt, ap, "__dprintf_chk");
    va_end(ap);
    return r;
}

int netintercept___vprintf_chk(int flag, const char *fmt, va_list ap) {
    return traced_vfprintf(stdout, flag, fmt, ap, "__vprintf_chk");
}

int netintercept___vfprintf_chk(FILE *f, int flag, const char *fmt, va_list ap) {
    return traced_vfprintf(f, flag, fmt, ap, "__vfprintf_chk");
}

int netintercept___vdprintf_chk(int fd, int flag, const char *fmt, va_list ap) {
    return traced_vdprintf(fd, flag, fmt, ap, "__vdprintf_chk");
}

/* Old names of the same functions, still exported by glibc for old binaries. */

int netintercept__IO_printf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int r = traced_vfprintf(stdout, -1, fmt, ap, "_IO_printf");
    va_end(ap);
    return r;
}

int netintercept__IO_fprintf(FILE *f, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int r = traced_vfprintf(f, -1, fmt, ap, "_IO_fprintf");
    va_end(ap);
    return r;
}

int netintercept__IO_vfprintf(FILE *f, const char *fmt, va_list ap) {
    return traced_vfprintf(f, -1, fmt, ap, "_IO_vfprintf");
}
