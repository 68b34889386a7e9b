/* seccomp_worker PORT: after connecting, fork a worker that enters seccomp strict mode (only read,
 * write, exit and sigreturn allowed), writes to the socket and leaves with a raw exit. The parent
 * reports how the worker ended, then enters strict mode itself, writes, and leaves the same way:
 * the process ends only if no other thread is left in it. */
#include "common.h"
#include <linux/seccomp.h>
#include <sys/prctl.h>

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    int s = connect_to(atoi(argv[1]));
    send_all(s, "parent-hello|", 13);
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT) != 0)
            syscall(SYS_exit, 2);
        long ok = write(s, "worker-bytes|", 13) == 13;
        syscall(SYS_exit, ok ? 0 : 1);
    }
    int status;
    if (waitpid(pid, &status, 0) != pid)
        die("waitpid");
    char report[64];
    if (WIFEXITED(status))
        snprintf(report, sizeof report, "worker: exit %d\n", WEXITSTATUS(status));
    else
        snprintf(report, sizeof report, "worker: signal %d\n", WTERMSIG(status));
    /* On both streams: stdout for the test, stderr so that a timeout's message shows it too. */
    fputs(report, stdout);
    fputs(report, stderr);
    fflush(stdout);
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT) != 0)
        die("prctl");
    long ok = write(s, "main-strict|", 12) == 12;
    syscall(SYS_exit, ok ? 0 : 1);
    return 1; /* not reached */
}
