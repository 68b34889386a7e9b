/* close_range_cloexec PORT: close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) only marks descriptors
 * close-on-exec; every descriptor must still be open afterwards and the socket still usable.
 * Calls glibc's close_range (not a raw syscall) so that a preloaded hook sees the call. */
#include "common.h"
#include <linux/close_range.h>

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    int file = open("/dev/null", O_RDONLY);
    int p[2];
    if (file < 0 || pipe(p) != 0)
        die("open/pipe");
    int s = connect_to(atoi(argv[1]));
    exchange(s, "before|");
    if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) != 0)
        die("close_range");
    int fds[] = {file, p[0], p[1], s};
    int bad = 0;
    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++) {
        int fl = fcntl(fds[i], F_GETFD);
        if (fl < 0) {
            fprintf(stderr, "fd %d was closed by close_range(CLOEXEC): %s\n", fds[i], strerror(errno));
            bad = 1;
        } else if (!(fl & FD_CLOEXEC)) {
            fprintf(stderr, "fd %d lacks FD_CLOEXEC\n", fds[i]);
            bad = 1;
        }
    }
    if (bad)
        return 1;
    if (write(p[1], "x", 1) != 1)
        die("pipe write");
    exchange(s, "after|");
    close(s);
    return 0;
}
