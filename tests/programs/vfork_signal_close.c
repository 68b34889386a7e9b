/* vfork_signal_close PORT: a vfork child signals its parent and exits; the parent's handler,
 * run as the parent returns from vfork (the signal is pending by then), closes the parent's
 * first connection. Then a second connection exchanges a marker. The handler's close is the
 * parent's own: its FIN must come before the second connection's handshake. */
#include "common.h"

static int first = -1;

static void on_usr1(int sig)
{
    (void)sig;
    close(first);
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    int port = atoi(argv[1]);
    first = connect_to(port);
    exchange(first, "first|");
    struct sigaction sa = {.sa_handler = on_usr1};
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR1, &sa, NULL) != 0)
        die("sigaction");
    /* Made now, so that nothing new takes the first connection's number after the handler's
     * close (a new descriptor under that number would end the connection by itself). */
    int second = socket(AF_INET, SOCK_STREAM, 0);
    if (second < 0)
        die("socket");
    pid_t parent = getpid();
    pid_t child = vfork();
    if (child == 0) {
        kill(parent, SIGUSR1);
        _exit(0);
    }
    if (child < 0)
        die("vfork");
    waitpid(child, NULL, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(second, (struct sockaddr *)&a, sizeof a) != 0)
        die("connect");
    exchange(second, "second|");
    close(second);
    return 0;
}
