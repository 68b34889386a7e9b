/* vector_calls PORT: writev, readv, sendmsg and recvmsg on a TCP connection to an echo server
 * on 127.0.0.1:PORT, with buffer vectors of known sizes. */
#include "common.h"
#include <sys/uio.h>

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    int s = connect_to(atoi(argv[1]));
    char a[2] = "ab", b[3] = "cde", in1[2], in2[10];
    struct iovec out[2] = {{a, 2}, {b, 3}};
    if (writev(s, out, 2) != 5)
        die("writev");
    struct iovec in[2] = {{in1, sizeof in1}, {in2, sizeof in2}};
    ssize_t got = 0;
    while (got < 5) {
        ssize_t n = readv(s, in, 2);
        if (n <= 0)
            die("readv");
        got += n;
    }
    char x[1] = "x", y[2] = "yz", z[3] = "123";
    struct iovec m3[3] = {{x, 1}, {y, 2}, {z, 3}};
    struct msghdr sm = {.msg_iov = m3, .msg_iovlen = 3};
    if (sendmsg(s, &sm, 0) != 6)
        die("sendmsg");
    char buf[100], control[64];
    struct iovec one = {buf, sizeof buf};
    got = 0;
    while (got < 6) {
        struct msghdr rm = {.msg_iov = &one, .msg_iovlen = 1, .msg_control = control,
                            .msg_controllen = sizeof control};
        ssize_t n = recvmsg(s, &rm, 0);
        if (n <= 0)
            die("recvmsg");
        got += n;
    }
    close(s);
    return 0;
}
