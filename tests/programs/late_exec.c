/* late_exec MS PROGRAM ARGS...: sleep MS milliseconds, then exec PROGRAM. Built static, so the
 * preload library does not load in it: a run's descendant that has not claimed a slot yet. */
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  long ms = atol(argv[1]);
  struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&t, NULL);
  execv(argv[2], argv + 2);
  return 127;
}
