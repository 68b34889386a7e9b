/* readiness_calls: the calls event traces record alone on loopback sockets of its own: poll,
 * ppoll, select, pselect, epoll_ctl/epoll_wait/epoll_pwait, sockatmark, isfdtype and fdopen on
 * a TCP connection (both ends here), then sendmmsg and recvmmsg between two UDP sockets, good
 * and bad. Prints each call's return value and errno (and what came back), so a traced run can
 * be compared with an untraced one. */
#include "common.h"
#include <poll.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <time.h>

#define SHOW(what, call)                                                                       \
    do {                                                                                       \
        errno = 0;                                                                             \
        long r_ = (long)(call);                                                                \
        printf("%s %ld %d\n", what, r_, r_ < 0 ? errno : 0);                                   \
    } while (0)

static struct sockaddr_in bound(int s)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(s, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(s, (struct sockaddr *)&a, &len) != 0)
        die("bind");
    return a;
}

int main(void)
{
    /* 0.json: the listener, 1.json: the client, 2.json: the accepted end. */
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in la = bound(l);
    if (listen(l, 1) != 0)
        die("listen");
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, (struct sockaddr *)&la, sizeof la) != 0)
        die("connect");
    int a = accept(l, NULL, NULL);
    if (a < 0)
        die("accept");
    int pipefd[2];
    if (pipe(pipefd) != 0)
        die("pipe");

    /* poll: the client can write, the pipe is not a socket, the accepted end has nothing. */
    struct pollfd p[3] = {{c, POLLOUT, 0}, {pipefd[0], POLLIN, 0}, {a, POLLIN | POLLPRI, 0}};
    SHOW("poll", poll(p, 3, 1500));
    printf("revents %d %d %d\n", p[0].revents, p[1].revents, p[2].revents);
    struct pollfd *volatile unreadable = (struct pollfd *)8;
    SHOW("poll-bad", poll(unreadable, 1, 0));
    send_all(c, "hello", 5);
    struct pollfd q = {a, POLLIN, 0};
    struct timespec ts = {.tv_sec = 1, .tv_nsec = 500};
    SHOW("ppoll", ppoll(&q, 1, &ts, NULL));
    printf("revents %d\n", q.revents);
    char buf[64];
    SHOW("recv", recv(a, buf, sizeof buf, 0));

    /* select: asked to read the accepted end (nothing there) and write the client. */
    fd_set rs, ws;
    FD_ZERO(&rs);
    FD_ZERO(&ws);
    FD_SET(a, &rs);
    FD_SET(c, &ws);
    struct timeval tv = {0, 0};
    int nfds = (a > c ? a : c) + 1;
    SHOW("select", select(nfds, &rs, &ws, NULL, &tv));
    printf("sets %d %d\n", FD_ISSET(a, &rs), FD_ISSET(c, &ws));
    send_all(c, "world", 5);
    FD_ZERO(&rs);
    FD_SET(a, &rs);
    struct timespec pts = {.tv_sec = 3, .tv_nsec = 7};
    SHOW("pselect", pselect(nfds, &rs, NULL, NULL, &pts, NULL));
    printf("sets %d\n", FD_ISSET(a, &rs));

    /* epoll: the accepted end under data that is not its number, the client under its own. */
    int ep = epoll_create1(0);
    if (ep < 0)
        die("epoll_create1");
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0xabcdef};
    SHOW("ctl-add-a", epoll_ctl(ep, EPOLL_CTL_ADD, a, &ev));
    SHOW("ctl-add-a-again", epoll_ctl(ep, EPOLL_CTL_ADD, a, &ev));
    struct epoll_event evc = {.events = EPOLLOUT | EPOLLET, .data.fd = c};
    SHOW("ctl-add-c", epoll_ctl(ep, EPOLL_CTL_ADD, c, &evc));
    struct epoll_event got[8];
    int n = epoll_wait(ep, got, 8, 1500);
    printf("wait %d\n", n);
    SHOW("ctl-del-c", epoll_ctl(ep, EPOLL_CTL_DEL, c, NULL));
    SHOW("ctl-mod-c", epoll_ctl(ep, EPOLL_CTL_MOD, c, &evc));
    SHOW("pwait", epoll_pwait(ep, got, 8, 0, NULL));
    SHOW("recv", recv(a, buf, sizeof buf, 0));

    SHOW("sockatmark", sockatmark(a));
    SHOW("isfdtype", isfdtype(a, S_IFSOCK));
    errno = 0;
    FILE *bad = fdopen(a, "x");
    printf("fdopen-bad %d %d\n", bad != NULL, errno);
    FILE *f = fdopen(c, "w");
    SHOW("fdopen", f != NULL);
    if (f)
        fclose(f);
    close(a);
    close(l);
    close(ep);

    /* 3.json and 4.json: two UDP sockets, three messages one way in one call. */
    int u1 = socket(AF_INET, SOCK_DGRAM, 0);
    int u2 = socket(AF_INET, SOCK_DGRAM, 0);
    bound(u1);
    struct sockaddr_in to = bound(u2);
    struct iovec v[4] = {{"abc", 3}, {"de", 2}, {"fghi", 4}, {"j", 1}};
    struct mmsghdr out[3];
    memset(out, 0, sizeof out);
    for (int i = 0; i < 3; i++) {
        out[i].msg_hdr.msg_name = &to;
        out[i].msg_hdr.msg_namelen = sizeof to;
    }
    out[0].msg_hdr.msg_iov = &v[0];
    out[0].msg_hdr.msg_iovlen = 1;
    out[1].msg_hdr.msg_iov = &v[1];
    out[1].msg_hdr.msg_iovlen = 2;
    out[2].msg_hdr.msg_iov = &v[3];
    out[2].msg_hdr.msg_iovlen = 1;
    SHOW("sendmmsg", sendmmsg(u1, out, 3, 0));
    SHOW("sendmmsg-bad", sendmmsg(u1, (struct mmsghdr *)8, 1, 0));
    char rb[3][16];
    struct iovec rv[3];
    struct mmsghdr in[3];
    memset(in, 0, sizeof in);
    for (int i = 0; i < 3; i++) {
        rv[i].iov_base = rb[i];
        rv[i].iov_len = sizeof rb[i];
        in[i].msg_hdr.msg_iov = &rv[i];
        in[i].msg_hdr.msg_iovlen = 1;
    }
    struct timespec rts = {.tv_sec = 5, .tv_nsec = 0};
    n = recvmmsg(u2, in, 3, 0, &rts);
    printf("recvmmsg %d %u %u %u\n", n, in[0].msg_len, in[1].msg_len, in[2].msg_len);
    SHOW("recvmmsg-empty", recvmmsg(u2, in, 1, MSG_DONTWAIT, NULL));
    close(u1);
    close(u2);
    return 0;
}
