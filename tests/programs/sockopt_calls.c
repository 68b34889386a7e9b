/* sockopt_calls: the calls recorded for event traces alone (setsockopt, getsockopt,
 * getsockname, getpeername, a failed bind, fcntl, ioctl) and dup3 on an IPv6 TCP socket, good and bad: a length the kernel
 * refuses, pointers it cannot read or write. Prints each call's return value and errno, so a
 * traced run can be compared with an untraced one. */
#include "common.h"
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/time.h>

#define SHOW(what, call)                                                                       \
    do {                                                                                       \
        errno = 0;                                                                             \
        int r_ = (call);                                                                       \
        printf("%s %d %d\n", what, r_, r_ < 0 ? errno : 0);                                    \
    } while (0)

int main(void)
{
    int s = socket(AF_INET6, SOCK_STREAM, 0);
    if (s < 0)
        die("socket");
    int one = 1, v = 0;
    /* Before the bind, which would make it EINVAL. */
    SHOW("v6only", setsockopt(s, SOL_IPV6, IPV6_V6ONLY, &one, sizeof one));
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    socklen_t alen = sizeof a;
    SHOW("bind", bind(s, (struct sockaddr *)&a, sizeof a));
    SHOW("name", getsockname(s, (struct sockaddr *)&a, &alen));
    int s2 = socket(AF_INET6, SOCK_STREAM, 0);
    if (s2 < 0)
        die("socket");
    /* The same port again: refused, with the address read. */
    SHOW("bind-in-use", bind(s2, (struct sockaddr *)&a, sizeof a));
    close(s2);
    socklen_t len = sizeof v;
    struct timeval tv = {.tv_sec = 3, .tv_usec = 5};
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof ss;
    SHOW("nodelay", setsockopt(s, SOL_TCP, TCP_NODELAY, &one, sizeof one));
    SHOW("rcvtimeo", setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv));
    SHOW("linger-short", setsockopt(s, SOL_SOCKET, SO_LINGER, &one, 1));
    SHOW("set-bad-pointer", setsockopt(s, SOL_SOCKET, SO_RCVBUF, (void *)8, sizeof v));
    SHOW("get-bad-pointer", getsockopt(s, SOL_SOCKET, SO_RCVBUF, (void *)8, &len));
    SHOW("get-bad-len", getsockopt(s, SOL_SOCKET, SO_RCVBUF, &v, (socklen_t *)8));
    len = sizeof v;
    SHOW("rcvbuf", getsockopt(s, SOL_SOCKET, SO_RCVBUF, &v, &len));
    printf("rcvbuf-len %u\n", (unsigned)len);
    SHOW("name-bad-pointer", getsockname(s, (struct sockaddr *)8, &sslen));
    SHOW("name-bad-len", getsockname(s, (struct sockaddr *)&ss, (socklen_t *)8));
    SHOW("peer-unconnected", getpeername(s, (struct sockaddr *)&ss, &sslen));
    SHOW("getfl", fcntl(s, F_GETFL));
    SHOW("setfl", fcntl(s, F_SETFL, O_NONBLOCK));
    int avail = 0;
    SHOW("fionread", ioctl(s, FIONREAD, &avail));
    SHOW("dup3", dup3(s, 20, O_CLOEXEC));
    close(20);
    SHOW("dupfd", fcntl(s, F_DUPFD_CLOEXEC, 30));
    close(30);
    close(s);
    return 0;
}
