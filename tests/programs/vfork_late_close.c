/* vfork_late_close PORT: a vfork child closes the parent's connection and exits; the parent then
 * goes on using it, and exits at once. Before the vfork, 6 MiB of datagrams (to a port nobody
 * listens on) keep the collector busy, so that it reads the child's close only after the
 * parent is gone, when /proc can no longer say whose close it was. */
#include "common.h"

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    int s = connect_to(atoi(argv[1]));
    exchange(s, "before|");
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    if (u < 0)
        die("udp socket");
    struct sockaddr_in nobody = {.sin_family = AF_INET, .sin_port = htons(9)};
    nobody.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    static char datagram[1400];
    for (int i = 0; i < 4500; i++)
        if (sendto(u, datagram, sizeof datagram, 0, (struct sockaddr *)&nobody, sizeof nobody) < 0
            && errno != ECONNREFUSED)
            die("sendto");
    pid_t child = vfork();
    if (child == 0) {
        close(s);
        _exit(0);
    }
    if (child < 0)
        die("vfork");
    exchange(s, "after|");
    close(s);
    return 0;
}
