/* unshare_userns PORT: use a socket, then unshare(CLONE_NEWUSER), which the kernel refuses
 * (EINVAL) in a multi-threaded process; print the result, use the socket again. */
#include "common.h"
#include <sched.h>

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    int s = connect_to(atoi(argv[1]));
    exchange(s, "before-unshare|");
    if (unshare(CLONE_NEWUSER) == 0)
        printf("unshare: ok\n");
    else
        printf("unshare: %s\n", strerror(errno));
    exchange(s, "after-unshare|");
    close(s);
    return 0;
}
