/* A fortified read of 100 bytes into a 16-byte buffer (built with -O2 -D_FORTIFY_SOURCE=2):
 * glibc must abort with "buffer overflow detected" before the kernel writes anything, traced
 * or not. Arguments: tcp|udp, a port on 127.0.0.1 that sends data at once (TCP) or echoes
 * (UDP), and read|recv|recvfrom. */
#include "common.h"

int main(int argc, char **argv)
{
    if (argc < 4)
        return 2;
    int udp = strcmp(argv[1], "udp") == 0;
    int port = atoi(argv[2]);
    int s;
    if (udp) {
        s = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        char ping[100];
        memset(ping, 'p', sizeof ping);
        if (sendto(s, ping, sizeof ping, 0, (struct sockaddr *)&a, sizeof a) < 0)
            die("sendto");
    } else {
        s = connect_to(port);
        send_all(s, "hello", 5);
    }
    char *buf = malloc(16);
    size_t want = 100;
    if (argc > 4)
        want = 16; /* the same program, reading within bounds */
    ssize_t n;
    if (strcmp(argv[3], "read") == 0)
        n = read(s, buf, want);
    else if (strcmp(argv[3], "recv") == 0)
        n = recv(s, buf, want, 0);
    else
        n = recvfrom(s, buf, want, 0, NULL, NULL);
    printf("read %zd\n", n);
    free(buf);
    return 0;
}
