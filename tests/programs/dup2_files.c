/* dup2_files PORT: connect, exchange, then put a file on every descriptor 3..30 except the
 * socket's (opening it, then dup2 onto the number when open gave another), write "line N\n" to
 * file fN, exchange again and exit. Prints the socket's number. */
#include "common.h"

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    int s = connect_to(atoi(argv[1]));
    exchange(s, "first|");
    for (int n = 3; n <= 30; n++) {
        if (n == s)
            continue;
        char name[16];
        snprintf(name, sizeof name, "f%d", n);
        int t = open(name, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (t < 0)
            die("open");
        if (t != n) {
            if (dup2(t, n) != n)
                die("dup2");
            close(t);
        }
    }
    for (int n = 3; n <= 30; n++) {
        if (n == s)
            continue;
        char line[16];
        int len = snprintf(line, sizeof line, "line %d\n", n);
        if (write(n, line, (size_t)len) != len)
            die("write");
    }
    exchange(s, "second|");
    close(s);
    printf("sock=%d\n", s);
    return 0;
}
