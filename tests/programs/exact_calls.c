/* Calls at the socket API's corners, each printed as "case return errno": run untraced and
 * traced, the two outputs must be identical (issue 12). Arguments: a TCP port where a peer
 * reads "hello", sends 1000 'A's, reads "again" and sends "world"; a UDP port with an echo;
 * the set of cases (bad, errqueue, trunc). Bad pointers are a page just unmapped, so any read
 * of them faults. */
#define _GNU_SOURCE
#include "common.h"
#include <linux/errqueue.h>
#include <linux/net_tstamp.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/uio.h>

static void show(const char *what, long ret)
{
    printf("%s %ld %d\n", what, ret, ret < 0 ? errno : 0);
    fflush(stdout);
}

static void *bad_page(void)
{
    void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        die("mmap");
    munmap(p, 4096);
    return p;
}

/* Enable transmit timestamps: each send queues a note on the socket's error queue. */
static void timestamps(int s)
{
    int v = SOF_TIMESTAMPING_TX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE | SOF_TIMESTAMPING_OPT_TSONLY;
    if (setsockopt(s, SOL_SOCKET, SO_TIMESTAMPING, &v, sizeof v) != 0)
        die("SO_TIMESTAMPING");
}

/* Wait for the error queue's note and read it as SO_TIMESTAMPING users do. */
static long read_errqueue(int s)
{
    struct pollfd p = {.fd = s, .events = 0};
    poll(&p, 1, 2000);
    char data[64], control[512];
    struct iovec iov = {.iov_base = data, .iov_len = sizeof data};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                       .msg_controllen = sizeof control};
    return recvmsg(s, &m, MSG_ERRQUEUE);
}

/* Bad pointers and lengths: each call must fail exactly as it does untraced. */
static void bad_calls(int tcp_port, struct sockaddr_in peer)
{
    void *bad = bad_page();
    int t = socket(AF_INET, SOCK_STREAM, 0);
    show("connect_bad_addr", connect(t, bad, sizeof(struct sockaddr_in)));
    close(t);

    int u = socket(AF_INET, SOCK_DGRAM, 0);
    show("sendto_bad_addr", sendto(u, "x", 1, 0, bad, sizeof(struct sockaddr_in)));
    show("sendto_bad_buf", sendto(u, bad, 1, 0, (struct sockaddr *)&peer, sizeof peer));
    show("sendmsg_bad_msg", sendmsg(u, bad, 0));
    show("recvmsg_bad_msg", recvmsg(u, bad, MSG_DONTWAIT));
    char one[1];
    struct iovec iov1 = {.iov_base = one, .iov_len = 1};
    struct msghdr too_long = {.msg_name = &peer, .msg_namelen = sizeof peer, .msg_iov = &iov1,
                              .msg_iovlen = 2000};
    show("sendmsg_iovlen_2000", sendmsg(u, &too_long, 0));
    too_long.msg_name = NULL;
    too_long.msg_namelen = 0;
    show("recvmsg_iovlen_2000", recvmsg(u, &too_long, MSG_DONTWAIT));
    struct msghdr bad_iov = {.msg_name = &peer, .msg_namelen = sizeof peer, .msg_iov = bad,
                             .msg_iovlen = 1};
    show("sendmsg_bad_iov", sendmsg(u, &bad_iov, 0));
    /* A datagram waits; the kernel faults on the address length after taking it. */
    show("udp_sendto", sendto(u, "ping", 4, 0, (struct sockaddr *)&peer, sizeof peer));
    struct pollfd in = {.fd = u, .events = POLLIN};
    poll(&in, 1, 2000);
    struct sockaddr_in src;
    char echo[16];
    show("recvfrom_bad_alen", recvfrom(u, echo, sizeof echo, 0, (struct sockaddr *)&src, bad));
    close(u);

    t = connect_to(tcp_port);
    show("readv_bad_iov", readv(t, bad, 1));
    show("writev_bad_iov", writev(t, bad, 1));
    struct iovec many1[1] = {{.iov_base = one, .iov_len = 1}};
    struct iovec *volatile many = many1; /* the compiler must not see the array's size */
    show("readv_iovcnt_2000", readv(t, many, 2000));
    show("writev_iovcnt_2000", writev(t, many, 2000));
    struct iovec huge[2] = {{.iov_base = one, .iov_len = 1},
                            {.iov_base = one, .iov_len = (size_t)-1}};
    show("writev_len_overflow", writev(t, huge, 2));
    show("send_bad_buf", send(t, bad, 10, 0));
    show("tcp_send", send(t, "hello", 5, 0));
    close(t);
}

/* Transmit timestamps: the error queue's notes are neither an EOF nor a datagram. */
static void errqueue_calls(int tcp_port, struct sockaddr_in peer)
{
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    timestamps(u);
    show("udp_sendto", sendto(u, "ping", 4, 0, (struct sockaddr *)&peer, sizeof peer));
    show("udp_errqueue", read_errqueue(u));
    char echo[16];
    show("udp_recv", recv(u, echo, sizeof echo, 0));
    close(u);

    int t = connect_to(tcp_port);
    timestamps(t);
    show("tcp_send", send(t, "hello", 5, 0));
    show("tcp_errqueue", read_errqueue(t));
    char wait_all[1000];
    show("tcp_recv_1000", recv(t, wait_all, sizeof wait_all, MSG_WAITALL));
    show("tcp_send_again", send(t, "again", 5, 0));
    char world[5];
    show("tcp_recv_world", recv(t, world, sizeof world, MSG_WAITALL));
    close(t);
}

/* MSG_TRUNC on a stream discards bytes unread: a stale buffer of 'J's must never be taken for
 * them, and a 16-byte buffer offered 65536 must not be read past its end. */
static void trunc_calls(int tcp_port)
{
    int t = connect_to(tcp_port);
    show("tcp_send", send(t, "hello", 5, 0));
    char *small = malloc(16);
    memset(small, 'J', 16);
    char wait_all[1000];
    /* All 1000 bytes arrived (a peek is not recorded), then they are discarded. */
    show("tcp_peek_1000", recv(t, wait_all, sizeof wait_all, MSG_PEEK | MSG_WAITALL));
    show("tcp_recv_trunc", recv(t, small, 65536, MSG_TRUNC));
    show("tcp_send_again", send(t, "again", 5, 0));
    char world[5];
    show("tcp_recv_world", recv(t, world, sizeof world, MSG_WAITALL));
    close(t);
    free(small);
}

int main(int argc, char **argv)
{
    int errno_at_start = errno;
    if (argc < 4)
        return 2;
    show("errno_at_start", errno_at_start);
    int tcp_port = atoi(argv[1]), udp_port = atoi(argv[2]);
    struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons(udp_port)};
    peer.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (strcmp(argv[3], "bad") == 0)
        bad_calls(tcp_port, peer);
    else if (strcmp(argv[3], "errqueue") == 0)
        errqueue_calls(tcp_port, peer);
    else if (strcmp(argv[3], "trunc") == 0)
        trunc_calls(tcp_port);
    else
        return 2;
    return 0;
}
