/* client PORT MSG: connect, send MSG, shut down the sending side, read until the server closes,
 * print "ok fd=N" (N: the socket's descriptor number, so a test knows which slot it took). */
#include "common.h"

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    int s = connect_to(atoi(argv[1]));
    send_all(s, argv[2], strlen(argv[2]));
    if (shutdown(s, SHUT_WR) != 0)
        die("shutdown");
    char buf[4096];
    ssize_t r;
    while ((r = recv(s, buf, sizeof buf, 0)) != 0) {
        if (r < 0 && errno != EINTR)
            die("recv");
    }
    close(s);
    printf("ok fd=%d\n", s);
    return 0;
}
