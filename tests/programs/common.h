/* Shared helpers for the isolation tests' C programs: loopback IPv4 only, blocking sockets.
 * Every failure exits with status 99 and says why on stderr (which may be closed: then silent). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static inline void die(const char *what)
{
    fprintf(stderr, "%s: %s\n", what, strerror(errno));
    exit(99);
}

/* A TCP connection to 127.0.0.1:port. */
static inline int connect_to(int port)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0)
        die("socket");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s, (struct sockaddr *)&a, sizeof a) != 0)
        die("connect");
    return s;
}

static inline void send_all(int s, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = send(s, p, n, 0);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            die("send");
        p += w;
        n -= (size_t)w;
    }
}

static inline void recv_exact(int s, void *buf, size_t n)
{
    char *p = buf;
    while (n > 0) {
        ssize_t r = recv(s, p, n, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            die("recv");
        p += r;
        n -= (size_t)r;
    }
}

/* Send `msg` to an echo server and require the same bytes back. */
static inline void exchange(int s, const char *msg)
{
    size_t n = strlen(msg);
    char back[4096];
    if (n > sizeof back)
        exit(98);
    send_all(s, msg, n);
    recv_exact(s, back, n);
    if (memcmp(back, msg, n) != 0) {
        fprintf(stderr, "echo mismatch for '%s'\n", msg);
        exit(97);
    }
}
