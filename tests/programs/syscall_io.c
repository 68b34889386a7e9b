/* Network I/O made only through libc's syscall() (issue 12, B), as libuv 1.44 sends datagrams
 * (syscall(SYS_sendmmsg)) and closes (syscall(SYS_close)).
 *
 *   syscall_io TCP_PORT UDP_PORT OUT
 *
 * TCP: socket, connect, write, sendto, writev, sendmsg, dup + write, shutdown(SHUT_WR); then
 * read, recvfrom, readv, recvmsg until the server closes; close. UDP: socket, one sendmmsg of
 * three datagrams and a sendto to 127.0.0.1:UDP_PORT, then the four answers through recvfrom
 * (with and without an address), recvmsg and recvmmsg; close. Every byte received goes to OUT.
 * No socket call goes through its libc wrapper; each syscall() result is checked.
 */
#include "common.h"

#include <sys/uio.h>

static long sys_ok(long r, const char *what)
{
    if (r < 0)
        die(what);
    return r;
}

int main(int argc, char **argv)
{
    if (argc != 4)
        return 2;
    int tcp_port = atoi(argv[1]), udp_port = atoi(argv[2]);
    FILE *keep = fopen(argv[3], "w");
    if (keep == NULL)
        die("fopen OUT");

    /* ---- TCP ---- */
    int s = (int)sys_ok(syscall(SYS_socket, AF_INET, SOCK_STREAM, 0), "socket");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(tcp_port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sys_ok(syscall(SYS_connect, s, &a, sizeof a), "connect");
    sys_ok(syscall(SYS_write, s, "write;", 6), "write");
    sys_ok(syscall(SYS_sendto, s, "sendto;", 7, 0, NULL, 0), "sendto");
    struct iovec v[2] = {{"write", 5}, {"v;", 2}};
    sys_ok(syscall(SYS_writev, s, v, 2), "writev");
    struct iovec mv[2] = {{"send", 4}, {"msg;", 4}};
    struct msghdr m = {.msg_iov = mv, .msg_iovlen = 2};
    sys_ok(syscall(SYS_sendmsg, s, &m, 0), "sendmsg");
    int d = (int)sys_ok(syscall(SYS_dup, s), "dup");
    sys_ok(syscall(SYS_write, d, "dup;", 4), "write dup");
    sys_ok(syscall(SYS_close, d), "close dup");
    sys_ok(syscall(SYS_write, s, "END\n", 4), "write END");
    sys_ok(syscall(SYS_shutdown, s, SHUT_WR), "shutdown");
    char buf[256];
    for (int i = 0;; i = (i + 1) % 4) {
        long n;
        if (i == 0) {
            n = syscall(SYS_read, s, buf, 7);
        } else if (i == 1) {
            n = syscall(SYS_recvfrom, s, buf, 5, 0, NULL, NULL);
        } else if (i == 2) {
            struct iovec rv[2] = {{buf, 3}, {buf + 3, 4}};
            n = syscall(SYS_readv, s, rv, 2);
        } else {
            struct iovec rv = {buf, 6};
            struct msghdr rm = {.msg_iov = &rv, .msg_iovlen = 1};
            n = syscall(SYS_recvmsg, s, &rm, 0);
        }
        sys_ok(n, "tcp receive");
        if (n == 0)
            break;
        fwrite(buf, 1, (size_t)n, keep);
    }
    sys_ok(syscall(SYS_close, s), "close");

    /* ---- UDP ---- */
    int u = (int)sys_ok(syscall(SYS_socket, AF_INET, SOCK_DGRAM, 0), "udp socket");
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(udp_port)};
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const char *dg[3] = {"first datagram", "second", "third, the longest of the three"};
    struct iovec dv[3];
    struct mmsghdr mm[3];
    memset(mm, 0, sizeof mm);
    for (int i = 0; i < 3; i++) {
        dv[i].iov_base = (void *)dg[i];
        dv[i].iov_len = strlen(dg[i]);
        mm[i].msg_hdr.msg_name = &to;
        mm[i].msg_hdr.msg_namelen = sizeof to;
        mm[i].msg_hdr.msg_iov = &dv[i];
        mm[i].msg_hdr.msg_iovlen = 1;
    }
    if (sys_ok(syscall(SYS_sendmmsg, u, mm, 3, 0), "sendmmsg") != 3) {
        fprintf(stderr, "sendmmsg sent fewer than 3\n");
        return 98;
    }
    sys_ok(syscall(SYS_sendto, u, "fourth", 6, 0, &to, sizeof to), "udp sendto");
    struct sockaddr_in from;
    socklen_t fromlen = sizeof from;
    long n = sys_ok(syscall(SYS_recvfrom, u, buf, sizeof buf, 0, &from, &fromlen), "recvfrom");
    fwrite(buf, 1, (size_t)n, keep);
    n = sys_ok(syscall(SYS_recvfrom, u, buf, sizeof buf, 0, NULL, NULL), "recvfrom no address");
    fwrite(buf, 1, (size_t)n, keep);
    struct iovec rv = {buf, sizeof buf};
    struct msghdr rm = {.msg_iov = &rv, .msg_iovlen = 1};
    n = sys_ok(syscall(SYS_recvmsg, u, &rm, 0), "udp recvmsg");
    fwrite(buf, 1, (size_t)n, keep);
    struct mmsghdr rmm;
    memset(&rmm, 0, sizeof rmm);
    /* With an address, as libuv asks (a recvmmsg without one, on an unconnected socket, is not
     * routed by the collector, named or not). */
    rmm.msg_hdr.msg_name = &from;
    rmm.msg_hdr.msg_namelen = sizeof from;
    rmm.msg_hdr.msg_iov = &rv;
    rmm.msg_hdr.msg_iovlen = 1;
    if (sys_ok(syscall(SYS_recvmmsg, u, &rmm, 1, 0, NULL), "recvmmsg") != 1) {
        fprintf(stderr, "recvmmsg got no message\n");
        return 98;
    }
    fwrite(buf, 1, rmm.msg_len, keep);
    sys_ok(syscall(SYS_close, u), "udp close");
    fclose(keep);
    return 0;
}
