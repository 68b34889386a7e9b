/* A TCP client that talks only through stdio (issue 12, A), as inetd-style servers and busybox do.
 *
 *   stdio_socket PORT OUT fdopen   fdopen()s the socket: fprintf, vfprintf, fputs, fwrite, fputc,
 *                                  putc, dprintf out; fgets, getline, getdelim, fgetc, getc, fread in
 *   stdio_socket PORT OUT stdout   puts the socket on stdin and stdout: printf, vprintf, puts,
 *                                  putchar, putc, fwrite, dprintf out; fgets, getline, getdelim,
 *                                  getchar, getc, fread in
 *
 * Both modes send the same bytes (the test knows them) and expect the same reply; what arrived is
 * written to OUT. Each call's return value is checked against what the real call must return
 * (exit 98 on a mismatch). Built plain (-O0) and fortified (-O2 -D_FORTIFY_SOURCE=2: the
 * __*_chk forms, getline inlined as __getdelim).
 */
#include "common.h"

#include <stdarg.h>

static void check(long got, long want, const char *what)
{
    if (got != want) {
        fprintf(stderr, "%s returned %ld, expected %ld\n", what, got, want);
        exit(98);
    }
}

/* vfprintf (or vprintf when `f` is stdout in stdout mode) on a va_list. */
static int vsend(FILE *f, int use_vprintf, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = use_vprintf ? vprintf(fmt, ap) : vfprintf(f, fmt, ap);
    va_end(ap);
    return r;
}

int main(int argc, char **argv)
{
    if (argc != 4)
        return 2;
    int port = atoi(argv[1]);
    int stdout_mode = strcmp(argv[3], "stdout") == 0;
    int s = connect_to(port);
    FILE *out, *in;
    int wfd;
    if (stdout_mode) {
        if (dup2(s, 0) != 0 || dup2(s, 1) != 1)
            die("dup2");
        close(s);
        out = stdout;
        in = stdin;
        wfd = 1;
    } else {
        out = fdopen(s, "w");
        in = fdopen(dup(s), "r");
        if (out == NULL || in == NULL)
            die("fdopen");
        wfd = s;
    }

    /* ---- out ---- */
    static char big[3001];
    memset(big, 'z', 3000);
    if (stdout_mode) {
        check(printf("HELLO %d %s\r\n", 42, "stdio"), 16, "printf");
        check(puts("fputs line") >= 0, 1, "puts");
        check(fwrite("fwrite\0\1\2", 1, 9, out), 9, "fwrite");
        check(putchar('A'), 'A', "putchar");
        check(putc('B', out), 'B', "putc");
        /* More arguments than registers hold, and doubles: the trampoline must pass them all. */
        check(printf("%d %d %d %d %d %d %d %d %.3f %.2f\n", 1, 2, 3, 4, 5, 6, 7, 8, 0.5, 1.25),
              27, "printf many");
        check(vsend(out, 1, "v:%s:%05.1f\n", "x", 2.5), 10, "vprintf");
        check(printf("%d:%s\n", 7, big), 3003, "printf long");
    } else {
        check(fprintf(out, "HELLO %d %s\r\n", 42, "stdio"), 16, "fprintf");
        check(fputs("fputs line\n", out) >= 0, 1, "fputs");
        check(fwrite("fwrite\0\1\2", 1, 9, out), 9, "fwrite");
        check(fputc('A', out), 'A', "fputc");
        check(putc('B', out), 'B', "putc");
        check(fprintf(out, "%d %d %d %d %d %d %d %d %.3f %.2f\n", 1, 2, 3, 4, 5, 6, 7, 8, 0.5,
                      1.25),
              27, "fprintf many");
        check(vsend(out, 0, "v:%s:%05.1f\n", "x", 2.5), 10, "vfprintf");
        check(fprintf(out, "%d:%s\n", 7, big), 3003, "fprintf long");
    }
    /* dprintf writes at once; what the stream holds goes first, so that the wire has the order
     * in which the program handed its bytes over. */
    check(fflush(out), 0, "fflush");
    check(dprintf(wfd, "dprintf %d\n", 9), 10, "dprintf");
    check(fputs("END\n", out) >= 0, 1, "fputs END");
    check(fflush(out), 0, "fflush END");

    /* ---- in ---- */
    FILE *keep = fopen(argv[2], "w");
    if (keep == NULL)
        die("fopen OUT");
    /* Sizes the compiler cannot see: fortified builds call __fgets_chk and __fread_chk. */
    volatile int line_len = 64;
    volatile size_t bin_len = 5000;
    char line[64];
    if (fgets(line, line_len, in) == NULL)
        die("fgets");
    fwrite(line, 1, strlen(line), keep);
    char *l = NULL;
    size_t cap = 0;
    ssize_t n = getline(&l, &cap, in);
    check(n, 9, "getline");
    fwrite(l, 1, (size_t)n, keep);
    n = getdelim(&l, &cap, '|', in);
    check(n, 2, "getdelim");
    fwrite(l, 1, (size_t)n, keep);
    int c = stdout_mode ? getchar() : fgetc(in);
    check(c, 'X', "fgetc/getchar");
    fputc(c, keep);
    c = getc(in);
    check(c, 'Y', "getc");
    fputc(c, keep);
    static char bin[5000];
    check((long)fread(bin, 1, bin_len, in), 5000, "fread");
    fwrite(bin, 1, sizeof bin, keep);
    check((long)fread(bin, 1, 100, in), 0, "fread at end");
    check(getc(in), EOF, "getc at end");
    free(l);
    fclose(keep);

    if (stdout_mode) {
        fclose(stdin);
        fclose(stdout);
    } else {
        fclose(in);
        fclose(out);
    }
    return 0;
}
