/* inetd_vfork PORT: an inetd-style server for one connection: accept, greet, vfork, and in the
 * child put the connection on descriptors 0 and 1 and execve /bin/cat, which echoes the rest. */
#include "common.h"

extern char **environ;

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 4) != 0)
        die("bind/listen");
    int c = accept(l, NULL, NULL);
    if (c < 0)
        die("accept");
    close(l);
    send_all(c, "hello from inetd\n", 17);
    pid_t pid = vfork();
    if (pid == 0) {
        if (dup2(c, 0) != 0 || dup2(c, 1) != 1)
            _exit(126);
        close(c);
        char *args[] = {"cat", NULL};
        execve("/bin/cat", args, environ);
        _exit(127);
    }
    if (pid < 0)
        die("vfork");
    close(c);
    int status;
    if (waitpid(pid, &status, 0) != pid)
        die("waitpid");
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
