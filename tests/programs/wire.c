/* wire ROLE PORT [ARGS]: the programs of the exact-wire tests (tests/wire.rs).
 *
 * Each test runs in a network namespace of its own, so loopback carries nothing else and
 * `tcpdump -i lo` there records exactly what the kernel put on the wire for the same program.
 * Server roles (serve-*) are run untraced: they listen, then detach (the parent exits once the
 * child is ready, so a shell script may start the client right after) and serve one scenario.
 * Client roles are the traced programs; they print what the kernel told them (local ports,
 * results) for the test to compare with the capture. Every failure exits 99 and says why. */
#include "common.h"

#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>

static int port;

static struct sockaddr_storage dest(int family, const char *host, socklen_t *len)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(port);
        if (inet_pton(AF_INET6, host ? host : "::1", &a->sin6_addr) != 1)
            die("inet_pton");
        *len = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons(port);
        if (inet_pton(AF_INET, host ? host : "127.0.0.1", &a->sin_addr) != 1)
            die("inet_pton");
        *len = sizeof *a;
    }
    return ss;
}

static struct sockaddr_in loopback(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

/* The local port of `s`, as getsockname reports it. */
static int local_port(int s)
{
    struct sockaddr_storage ss;
    socklen_t l = sizeof ss;
    if (getsockname(s, (struct sockaddr *)&ss, &l) != 0)
        die("getsockname");
    return ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                          : ((struct sockaddr_in *)&ss)->sin_port);
}

static void wait_for(int s, short events)
{
    struct pollfd p = {.fd = s, .events = events};
    if (poll(&p, 1, 5000) != 1)
        die("poll");
}

static void expect(int s, const char *want)
{
    char got[64];
    size_t n = strlen(want);
    recv_exact(s, got, n);
    if (memcmp(got, want, n) != 0) {
        fprintf(stderr, "expected '%s', got '%.*s'\n", want, (int)n, got);
        exit(99);
    }
}

/* ---- servers: listen, detach, serve ---------------------------------------------------- */

/* Fork; the parent notes the child's pid in server.pid (for the script to end it whatever
 * happens) and exits, the child serves and ends by itself within 20 s in any case. */
static void detach(void)
{
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid > 0) {
        FILE *f = fopen("server.pid", "w");
        if (!f || fprintf(f, "%d\n", (int)pid) < 0 || fclose(f) != 0)
            die("server.pid");
        _exit(0);
    }
    alarm(20);
}

/* Listen on 127.0.0.1:port (with a Fast Open queue when `tfo`), then detach. */
static int listen_detached(int backlog, int tfo)
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = loopback();
    if (bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, backlog) != 0)
        die("bind/listen");
    int qlen = 8;
    if (tfo && setsockopt(l, IPPROTO_TCP, TCP_FASTOPEN, &qlen, sizeof qlen) != 0)
        die("TCP_FASTOPEN");
    detach();
    return l;
}

static int udp_detached(void)
{
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = loopback();
    if (bind(s, (struct sockaddr *)&a, sizeof a) != 0)
        die("bind");
    detach();
    return s;
}

static int accept_one(int l)
{
    int c = accept(l, NULL, NULL);
    if (c < 0)
        die("accept");
    return c;
}

/* Echo each of `n` connections until its peer closes or resets it. */
static void serve_echo(int n, int tfo)
{
    int l = listen_detached(8, tfo);
    for (int i = 0; i < n; i++) {
        int c = accept_one(l);
        char buf[4096];
        ssize_t r;
        while ((r = recv(c, buf, sizeof buf, 0)) > 0)
            send_all(c, buf, (size_t)r);
        close(c);
    }
}

static void serve_udp(int n)
{
    int s = udp_detached();
    for (int i = 0; i < n; i++) {
        char buf[2048];
        struct sockaddr_storage from;
        socklen_t fl = sizeof from;
        ssize_t r = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
        if (r < 0)
            die("recvfrom");
        if (sendto(s, buf, (size_t)r, 0, (struct sockaddr *)&from, fl) != r)
            die("sendto");
    }
}

/* Greet with "hi", then read until the client closes. */
static void serve_greet(void)
{
    int c = accept_one(listen_detached(8, 0));
    send_all(c, "hi", 2);
    char buf[64];
    while (recv(c, buf, sizeof buf, 0) > 0) {
    }
    close(c);
}

/* After "go": 18 bytes in one write, of which the client discards the middle 10 unread. */
static void serve_trunc(void)
{
    int c = accept_one(listen_detached(8, 0));
    expect(c, "go");
    send_all(c, "HEAD0123456789TAIL", 18);
    char buf[64];
    while (recv(c, buf, sizeof buf, 0) > 0) {
    }
    close(c);
}

/* The client sends "abc" with MSG_OOB: read up to the mark, then the urgent byte, answer. */
static void serve_oob_recv(void)
{
    int c = accept_one(listen_detached(8, 0));
    char buf[8];
    size_t got = 0;
    for (;;) {
        int mark = 0;
        if (ioctl(c, SIOCATMARK, &mark) != 0)
            die("SIOCATMARK");
        if (mark && got > 0)
            break;
        ssize_t r = recv(c, buf + got, sizeof buf - got, 0);
        if (r <= 0)
            die("recv");
        got += (size_t)r;
    }
    char urgent;
    if (recv(c, &urgent, 1, MSG_OOB) != 1)
        die("recv MSG_OOB");
    printf("server: normal '%.*s' urgent '%c'\n", (int)got, buf, urgent);
    send_all(c, "ok", 2);
    while (recv(c, buf, sizeof buf, 0) > 0) {
    }
    close(c);
}

/* After "go": "xyz" in line; after the client's "k": "!" with MSG_OOB. */
static void serve_oob_send(void)
{
    int c = accept_one(listen_detached(8, 0));
    expect(c, "go");
    send_all(c, "xyz", 3);
    expect(c, "k");
    if (send(c, "!", 1, MSG_OOB) != 1)
        die("send MSG_OOB");
    char buf[64];
    while (recv(c, buf, sizeof buf, 0) > 0) {
    }
    close(c);
}

/* Accept, wait for "go", then close with a zero linger: the kernel answers with a RST. */
static void serve_reset(int wait_go)
{
    int c = accept_one(listen_detached(8, 0));
    if (wait_go)
        expect(c, "go");
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    if (setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) != 0)
        die("SO_LINGER");
    close(c);
    sleep(1);
}

/* A backlog of 0: the first connection fills the accept queue, so the next SYN is dropped until
 * a moment later the first is accepted (the client's SYN retransmission then gets its answer). */
static void serve_backlog(void)
{
    int l = listen_detached(0, 0);
    usleep(600 * 1000);
    int a = accept_one(l);
    int b = accept_one(l);
    char buf[64];
    while (recv(b, buf, sizeof buf, 0) > 0) {
    }
    close(b);
    close(a);
}

/* A backlog of 0 and no accept: after the first connection every SYN is dropped. */
static void serve_full(void)
{
    listen_detached(0, 0);
    sleep(5);
}

/* One UDP datagram to 127.0.0.1:port, for a script to see that tcpdump captures already. */
static void probe(void)
{
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = loopback();
    if (sendto(s, "probe", 5, 0, (struct sockaddr *)&a, sizeof a) != 5)
        die("sendto");
    close(s);
}

/* ---- clients (traced) ------------------------------------------------------------------- */

/* Four Fast Open connections: non-blocking without a cookie (the SYN leaves without data,
 * EINPROGRESS), non-blocking with the cookie the first one got (data in the SYN), blocking,
 * and blocking from a socket bound to the wildcard address first. */
static void tfo(void)
{
    const char *msgs[] = {"one", "two", "three", "four"};
    for (int i = 0; i < 4; i++) {
        int s = socket(AF_INET, SOCK_STREAM | (i < 2 ? SOCK_NONBLOCK : 0), 0);
        if (i == 3) {
            struct sockaddr_in any = {.sin_family = AF_INET};
            if (bind(s, (struct sockaddr *)&any, sizeof any) != 0)
                die("bind");
        }
        socklen_t l;
        struct sockaddr_storage d = dest(AF_INET, NULL, &l);
        size_t n = strlen(msgs[i]);
        ssize_t r = sendto(s, msgs[i], n, MSG_FASTOPEN, (struct sockaddr *)&d, l);
        if (r < 0 && errno != EINPROGRESS)
            die("sendto MSG_FASTOPEN");
        printf("%s: %s local %d\n", msgs[i], r < 0 ? "EINPROGRESS" : "sent", local_port(s));
        if (r < 0) {
            wait_for(s, POLLOUT);
            if (send(s, msgs[i], n, 0) != (ssize_t)n)
                die("send");
        } else if (r != (ssize_t)n) {
            exit(98);
        }
        int fl = fcntl(s, F_GETFL);
        fcntl(s, F_SETFL, fl & ~O_NONBLOCK);
        expect(s, msgs[i]);
        close(s);
    }
}

/* An unconnected UDP socket whose reply comes through recvmsg with no name buffer. */
static void udp_nullname(void)
{
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = loopback();
    if (sendto(s, "ping", 4, 0, (struct sockaddr *)&a, sizeof a) != 4)
        die("sendto");
    char buf[16];
    struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    ssize_t r = recvmsg(s, &m, 0);
    if (r != 4 || memcmp(buf, "ping", 4) != 0)
        die("recvmsg");
    printf("local %d\n", local_port(s));
    close(s);
}

/* Read 4 bytes, discard 10 unread (MSG_TRUNC, no buffer at all), read the last 4. */
static void trunc_(void)
{
    int s = connect_to(port);
    send_all(s, "go", 2);
    expect(s, "HEAD");
    ssize_t r = recv(s, NULL, 10, MSG_TRUNC);
    if (r != 10)
        die("recv MSG_TRUNC");
    expect(s, "TAIL");
    printf("discarded %zd\n", r);
    close(s);
}

static void oob_send(void)
{
    int s = connect_to(port);
    if (send(s, "abc", 3, MSG_OOB) != 3)
        die("send MSG_OOB");
    expect(s, "ok");
    close(s);
}

static void oob_recv(void)
{
    int s = connect_to(port);
    send_all(s, "go", 2);
    expect(s, "xyz");
    send_all(s, "k", 1);
    wait_for(s, POLLPRI);
    char urgent;
    if (recv(s, &urgent, 1, MSG_OOB) != 1)
        die("recv MSG_OOB");
    printf("urgent '%c'\n", urgent);
    close(s);
}

static void dissolve(int s)
{
    struct sockaddr sa = {.sa_family = AF_UNSPEC};
    if (connect(s, &sa, sizeof sa) != 0)
        die("connect AF_UNSPEC");
}

/* Connect, exchange, dissolve with AF_UNSPEC, connect again on the same socket, exchange. */
static void unspec(int type)
{
    int s = socket(AF_INET, type, 0);
    struct sockaddr_in a = loopback();
    const char *msgs[] = {"one", "two"};
    for (int i = 0; i < 2; i++) {
        if (i == 1)
            dissolve(s);
        if (connect(s, (struct sockaddr *)&a, sizeof a) != 0)
            die("connect");
        printf("%s: local %d\n", msgs[i], local_port(s));
        send_all(s, msgs[i], 3);
        expect(s, msgs[i]);
    }
    close(s);
}

/* A refused connect, blocking or not, IPv4 or IPv6 (to `host`); prints the port it used. */
static void refused(const char *family, const char *mode, const char *host)
{
    int fam = strcmp(family, "6") == 0 ? AF_INET6 : AF_INET;
    int nb = strcmp(mode, "nonblocking") == 0;
    int s = socket(fam, SOCK_STREAM | (nb ? SOCK_NONBLOCK : 0), 0);
    socklen_t l;
    struct sockaddr_storage d = dest(fam, host, &l);
    int r = connect(s, (struct sockaddr *)&d, l);
    if (r == 0 || (errno != ECONNREFUSED && errno != EINPROGRESS))
        die("connect");
    int p = local_port(s);
    if (nb) {
        wait_for(s, POLLOUT);
        int err = 0;
        socklen_t el = sizeof err;
        if (getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != ECONNREFUSED)
            die("SO_ERROR");
    }
    printf("local %d\n", p);
    close(s);
}

/* A non-blocking connect whose outcome the program learns from `how`: getsockopt or send (an
 * echo server), or recv (a greeting server). */
static void settle(const char *how)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = loopback();
    if (connect(s, (struct sockaddr *)&a, sizeof a) == 0 || errno != EINPROGRESS)
        die("connect");
    wait_for(s, POLLOUT);
    if (strcmp(how, "getsockopt") == 0) {
        int err = 0;
        socklen_t el = sizeof err;
        if (getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != 0)
            die("SO_ERROR");
        send_all(s, "hi", 2);
    } else if (strcmp(how, "send") == 0) {
        send_all(s, "hi", 2);
    } else {
        /* The server greets first: the recv that gets its bytes is the first call to succeed. */
        wait_for(s, POLLIN);
        expect(s, "hi");
        close(s);
        return;
    }
    wait_for(s, POLLIN);
    expect(s, "hi");
    close(s);
}

static void on_alarm(int sig)
{
    (void)sig;
}

/* A blocking connect interrupted by a signal (its SYN dropped by a full accept queue) goes on
 * in the background; poll and SO_ERROR tell when it is done, then it carries data. */
static void eintr(void)
{
    int first = connect_to(port);
    struct sigaction sa = {.sa_handler = on_alarm};
    sigaction(SIGALRM, &sa, NULL);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = loopback();
    ualarm(200 * 1000, 0);
    if (connect(s, (struct sockaddr *)&a, sizeof a) == 0 || errno != EINTR)
        die("connect was not interrupted");
    int p = local_port(s);
    wait_for(s, POLLOUT);
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != 0)
        die("SO_ERROR");
    send_all(s, "late", 4);
    printf("local %d\n", p);
    close(s);
    close(first);
}

/* A blocking connect whose SYN is never answered (a full accept queue drops it) and which
 * gives up at its first retransmission timeout (TCP_USER_TIMEOUT): ETIMEDOUT. */
static void timeout(void)
{
    int first = connect_to(port);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    unsigned ms = 300;
    if (setsockopt(s, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof ms) != 0)
        die("TCP_USER_TIMEOUT");
    struct sockaddr_in a = loopback();
    if (connect(s, (struct sockaddr *)&a, sizeof a) == 0 || errno != ETIMEDOUT)
        die("connect did not time out");
    printf("local %d\n", local_port(s));
    close(s);
    close(first);
}

/* The peer resets the connection: learnt by recv (ECONNRESET) or, for a non-blocking connect
 * not yet looked at, by SO_ERROR. */
static void reset(const char *when)
{
    if (strcmp(when, "recv") == 0) {
        int s = connect_to(port);
        send_all(s, "go", 2);
        char c;
        if (recv(s, &c, 1, 0) != -1 || errno != ECONNRESET)
            die("recv did not report the reset");
        close(s);
        return;
    }
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = loopback();
    if (connect(s, (struct sockaddr *)&a, sizeof a) == 0 || errno != EINPROGRESS)
        die("connect");
    usleep(300 * 1000);
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != ECONNRESET)
        die("SO_ERROR was not ECONNRESET");
    close(s);
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    const char *role = argv[1];
    port = atoi(argv[2]);
    setvbuf(stdout, NULL, _IONBF, 0);
    if (strcmp(role, "serve-echo") == 0)
        serve_echo(argc > 3 ? atoi(argv[3]) : 1, argc > 4);
    else if (strcmp(role, "serve-udp") == 0)
        serve_udp(argc > 3 ? atoi(argv[3]) : 1);
    else if (strcmp(role, "serve-greet") == 0)
        serve_greet();
    else if (strcmp(role, "serve-trunc") == 0)
        serve_trunc();
    else if (strcmp(role, "serve-oob-recv") == 0)
        serve_oob_recv();
    else if (strcmp(role, "serve-oob-send") == 0)
        serve_oob_send();
    else if (strcmp(role, "serve-reset") == 0)
        serve_reset(argc > 3);
    else if (strcmp(role, "serve-backlog") == 0)
        serve_backlog();
    else if (strcmp(role, "serve-full") == 0)
        serve_full();
    else if (strcmp(role, "timeout") == 0)
        timeout();
    else if (strcmp(role, "probe") == 0)
        probe();
    else if (strcmp(role, "tfo") == 0)
        tfo();
    else if (strcmp(role, "udp-nullname") == 0)
        udp_nullname();
    else if (strcmp(role, "trunc") == 0)
        trunc_();
    else if (strcmp(role, "oob-send") == 0)
        oob_send();
    else if (strcmp(role, "oob-recv") == 0)
        oob_recv();
    else if (strcmp(role, "unspec-tcp") == 0)
        unspec(SOCK_STREAM);
    else if (strcmp(role, "unspec-udp") == 0)
        unspec(SOCK_DGRAM);
    else if (strcmp(role, "refused") == 0 && argc > 4)
        refused(argv[3], argv[4], argc > 5 ? argv[5] : NULL);
    else if (strcmp(role, "settle") == 0 && argc > 3)
        settle(argv[3]);
    else if (strcmp(role, "eintr") == 0)
        eintr();
    else if (strcmp(role, "reset") == 0 && argc > 3)
        reset(argv[3]);
    else
        return 2;
    return 0;
}
