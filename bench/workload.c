// Benchmark workloads for netintercept: each mode is one program run, traced or not.
// Loopback only; every loop is bounded by its arguments.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int limit_fd = -1; // when set, each buffer is also persisted: the unavoidable cost
static void persist(const void *b, size_t n) {
  if (limit_fd >= 0 && write(limit_fd, b, n) != (ssize_t)n) exit(3);
}
static void die(const char *m) { perror(m); exit(2); }
static struct sockaddr_in addr(int port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}
static int dial(int port) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = addr(port);
  if (connect(s, (void *)&a, sizeof a) < 0) die("connect");
  return s;
}
static int listener(int port) {
  int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = addr(port);
  if (bind(s, (void *)&a, sizeof a) < 0 || listen(s, 128) < 0) die("listen");
  return s;
}
static void write_all(int fd, const char *b, size_t n) {
  while (n) {
    ssize_t w = write(fd, b, n);
    if (w <= 0) die("write");
    persist(b, w);
    b += w, n -= w;
  }
}
static void *drain(void *arg) {
  int c = (int)(long)arg;
  static __thread char buf[1 << 16];
  while (read(c, buf, sizeof buf) > 0) {}
  close(c);
  return NULL;
}
static void *send_bytes(void *arg) {
  long *p = arg;
  int s = dial((int)p[0]);
  char *buf = calloc(1, 1 << 16);
  for (long left = p[1]; left > 0; left -= 1 << 16) write_all(s, buf, left < (1 << 16) ? left : 1 << 16);
  close(s);
  free(buf);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  const char *mode = argv[1];
  int port = atoi(argv[2]);
  long n = argc > 3 ? atol(argv[3]) : 0;
  if (argc > 4 && strcmp(argv[4], "-") != 0) {
    limit_fd = open(argv[4], O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (limit_fd < 0) die("limit file");
  }
  if (!strcmp(mode, "sink")) { // accept n connections (any order), drain each in a thread
    int l = listener(port);
    pthread_t t[64];
    for (long i = 0; i < n; i++) pthread_create(&t[i], NULL, drain, (void *)(long)accept(l, NULL, NULL));
    for (long i = 0; i < n; i++) pthread_join(t[i], NULL);
  } else if (!strcmp(mode, "bulk")) {
    long p[2] = {port, n};
    send_bytes(p);
  } else if (!strcmp(mode, "parallel")) { // 8 threads, n bytes each
    pthread_t t[8];
    long p[2] = {port, n};
    for (int i = 0; i < 8; i++) pthread_create(&t[i], NULL, send_bytes, p);
    for (int i = 0; i < 8; i++) pthread_join(t[i], NULL);
  } else if (!strcmp(mode, "echo")) { // one connection, echo until EOF
    int l = listener(port), c = accept(l, NULL, NULL), one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char b[100];
    ssize_t r;
    while ((r = read(c, b, sizeof b)) > 0) { persist(b, r); write_all(c, b, r); }
  } else if (!strcmp(mode, "pingpong")) {
    int s = dial(port), one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char b[100] = {0};
    for (long i = 0; i < n; i++) {
      write_all(s, b, 100);
      for (size_t got = 0; got < 100;) {
        ssize_t r = read(s, b + got, 100 - got);
        if (r <= 0) die("read");
        persist(b + got, r);
        got += r;
      }
    }
    close(s);
  } else if (!strcmp(mode, "udpsink")) { // drain datagrams until a 1-byte end marker
    int s = socket(AF_INET, SOCK_DGRAM, 0), big = 8 << 20;
    setsockopt(s, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    struct sockaddr_in a = addr(port);
    if (bind(s, (void *)&a, sizeof a) < 0) die("bind");
    char b[2048];
    while (recv(s, b, sizeof b, 0) != 1) {}
  } else if (!strcmp(mode, "udp")) { // n datagrams of argv[5] bytes (512 if not given)
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = addr(port);
    long size = argc > 5 ? atol(argv[5]) : 512;
    char b[1500] = {0};
    if (size < 2 || size > (long)sizeof b) return 2;
    for (long i = 0; i < n; i++) {
      if (sendto(s, b, size, 0, (void *)&a, sizeof a) != size) die("sendto");
      persist(b, size);
    }
    for (int i = 0; i < 50; i++) { sendto(s, b, 1, 0, (void *)&a, sizeof a); usleep(1000); }
  } else if (!strcmp(mode, "acceptloop")) { // accept and close n connections
    int l = listener(port);
    for (long i = 0; i < n; i++) close(accept(l, NULL, NULL));
  } else if (!strcmp(mode, "churn")) {
    // One cycle: connect, wait for the server's close (EOF), close. Paced by the server, so the
    // accept queue never overflows (an overflow drops SYNs, and each retransmit costs a second).
    char c;
    for (long i = 0; i < n; i++) {
      int s = dial(port);
      if (read(s, &c, 1) != 0) die("read");
      close(s);
    }
  } else if (!strcmp(mode, "files")) { // n bytes through a file and a pipe with read/write
    char *buf = calloc(1, 1 << 16);
    int f = open("/tmp/netintercept-bench-file", O_RDWR | O_CREAT | O_TRUNC, 0600), p[2];
    if (pipe(p) < 0) die("pipe");
    for (long left = n; left > 0; left -= 1 << 16) {
      if (pwrite(f, buf, 1 << 16, 0) < 0 || write(p[1], buf, 1 << 16) < 0) die("write");
      for (int got = 0; got < 1 << 16;) got += read(p[0], buf, (1 << 16) - got);
    }
  } else {
    return 2;
  }
  return 0;
}
