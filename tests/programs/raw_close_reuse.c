/* raw_close_reuse PORT: close a connected socket with a raw system call (as libuv and Go do), so
 * no hook sees it, then open a file that takes the same number and move bytes through it with
 * write and read. */
#include "common.h"

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    int s = connect_to(atoi(argv[1]));
    exchange(s, "A");
    if (syscall(SYS_close, s) != 0)
        die("raw close");
    int f = open("reuse.bin", O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (f != s) {
        fprintf(stderr, "open gave %d, not the socket's %d\n", f, s);
        return 3;
    }
    if (write(f, "FILEBYTES", 9) != 9)
        die("write");
    if (lseek(f, 0, SEEK_SET) != 0)
        die("lseek");
    char back[9];
    if (read(f, back, 9) != 9 || memcmp(back, "FILEBYTES", 9) != 0)
        die("read");
    close(f);
    return 0;
}
