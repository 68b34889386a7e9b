/* fork_threads PORT FORKS: four threads exchange messages with an echo server, each on its own
 * connection, while the main thread forks FORKS times; each child exits at once (every other one
 * after making and closing a UDP socket). A child not gone within 2 s counts as hung: it is
 * killed and reported, forking stops, and the exit status is 3. */
#include "common.h"
#include <pthread.h>
#include <time.h>

static int port;
static volatile int stop;

static void *talk(void *arg)
{
    long t = (long)arg;
    int s = connect_to(port);
    char msg[65];
    for (long i = 0; !stop; i++) {
        snprintf(msg, sizeof msg, "thread %ld message %010ld|", t, i);
        exchange(s, msg);
    }
    close(s);
    return NULL;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    port = atoi(argv[1]);
    int forks = atoi(argv[2]);
    pthread_t th[4];
    for (long t = 0; t < 4; t++)
        pthread_create(&th[t], NULL, talk, (void *)t);
    int hung = 0, i;
    for (i = 0; i < forks && !hung; i++) {
        pid_t pid = fork();
        if (pid < 0)
            die("fork");
        if (pid == 0) {
            if (i % 2) {
                int u = socket(AF_INET, SOCK_DGRAM, 0);
                close(u);
            }
            _exit(0);
        }
        double deadline = now() + 2.0;
        int status;
        while (waitpid(pid, &status, WNOHANG) == 0) {
            if (now() > deadline) {
                fprintf(stderr, "fork %d: child %d hung\n", i, (int)pid);
                kill(pid, SIGKILL);
                waitpid(pid, &status, 0);
                hung++;
                break;
            }
            usleep(50);
        }
    }
    stop = 1;
    for (int t = 0; t < 4; t++)
        pthread_join(th[t], NULL);
    printf("forks=%d hung=%d\n", i, hung);
    return hung ? 3 : 0;
}
