/* alarm_malloc PORT: a SIGALRM handler sends an 8-byte message on a connected socket about 1000
 * times a second while the main thread does nothing but malloc/free of varying sizes for 2 s, so
 * the handler regularly interrupts the allocator with its lock held. Prints how many messages the
 * handler sent. */
#include "common.h"
#include <sys/time.h>
#include <time.h>

static int sock = -1;
static volatile sig_atomic_t sent, failed;

static void on_alarm(int sig)
{
    (void)sig;
    int saved = errno;
    if (send(sock, "ALRMMSG\n", 8, 0) == 8)
        sent++;
    else
        failed++;
    errno = saved;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    sock = connect_to(atoi(argv[1]));
    struct sigaction sa = {.sa_handler = on_alarm, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {{0, 1000}, {0, 1000}};
    setitimer(ITIMER_REAL, &it, NULL);
    void *keep[64] = {0};
    unsigned x = 12345;
    double start = now();
    while (now() - start < 2.0) {
        for (int i = 0; i < 1000; i++) {
            x = x * 1103515245u + 12345u;
            /* Small sizes come from tcache without a lock; large ones take the arena lock. */
            size_t size = 16 + (x >> 8) % 100000;
            unsigned k = (x >> 4) % 64;
            free(keep[k]);
            keep[k] = malloc(size);
            if (keep[k])
                memset(keep[k], 0x5a, 16);
        }
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    for (unsigned k = 0; k < 64; k++)
        free(keep[k]);
    if (failed)
        fprintf(stderr, "%d handler sends failed\n", (int)failed);
    printf("%d\n", (int)sent);
    fflush(stdout);
    close(sock);
    return failed ? 1 : 0;
}
