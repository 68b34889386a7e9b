/* sigkill_self PORT: send 10,000 7-byte messages, then SIGKILL itself. */
#include "common.h"

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    int s = connect_to(atoi(argv[1]));
    char m[8];
    for (int i = 0; i < 10000; i++) {
        snprintf(m, sizeof m, "m%05d\n", i);
        send_all(s, m, 7);
    }
    kill(getpid(), SIGKILL);
    return 1; /* not reached */
}
