/*
 * The client of the connect-rate benchmark: new connections, one after the
 * other, for a number of seconds.
 *
 *   connect-loop tcp ADDR[,ADDR...] PORT SECONDS
 *     socket, connect (the kernel picks a fresh ephemeral port), write
 *     "ping", read the answer until the server closes, close; addresses in
 *     turn. Prints {"connections","seconds","p50_us","p99_us"}, the
 *     latencies being whole connections (connect to close).
 *   connect-loop udp ADDR[,ADDR...] PORT SECONDS
 *     one unconnected socket, sendto ADDR:PORT in a loop, addresses in turn
 *     (every datagram goes through the cgroup sendmsg hook). Prints
 *     {"datagrams","seconds"}.
 *
 * Any failed call ends the run with exit status 1 and the reason on stderr:
 * a rate over failing connections would mean nothing.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PROGRAM "connect-loop"
#include "native.h"

#define MAX_ADDRESSES 64

static void usage(void) {
  fprintf(stderr, "usage: connect-loop tcp|udp ADDR[,ADDR...] PORT SECONDS\n");
  exit(2);
}

static int parse_addresses(char *list, int port, struct sockaddr_in *out) {
  int n = 0;
  for (char *tok = strtok(list, ","); tok != NULL; tok = strtok(NULL, ",")) {
    if (n == MAX_ADDRESSES) usage();
    memset(&out[n], 0, sizeof(out[n]));
    out[n].sin_family = AF_INET;
    out[n].sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, tok, &out[n].sin_addr) != 1) usage();
    n++;
  }
  if (n == 0) usage();
  return n;
}

static int compare_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* The same order statistic as bench/lib/report.ts's percentile(). */
static double percentile_us(const uint64_t *sorted, size_t n, double p) {
  size_t i = (size_t)(p / 100.0 * (double)n);
  if (i >= n) i = n - 1;
  return (double)sorted[i] / 1000.0;
}

static void one_connection(const struct sockaddr_in *to) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) fail("socket");
  if (connect(fd, (const struct sockaddr *)to, sizeof(*to)) < 0) fail("connect");
  if (write(fd, "ping", 4) != 4) fail("write");
  /* Read to end of stream: the server closes first, so TIME_WAIT stays on
     its side and this ephemeral port is free again at once. */
  char buf[64];
  size_t got = 0;
  for (;;) {
    ssize_t r = read(fd, buf, sizeof(buf));
    if (r < 0) fail("read");
    if (r == 0) break;
    got += (size_t)r;
  }
  if (got == 0) {
    errno = ECONNRESET;
    fail("no answer");
  }
  close(fd);
}

static void tcp_loop(struct sockaddr_in *to, int n_to, double seconds) {
  size_t cap = 1 << 16, n = 0;
  uint64_t *latencies = malloc(cap * sizeof(*latencies));
  if (latencies == NULL) fail("malloc");
  uint64_t start = now_ns(), deadline = start + (uint64_t)(seconds * 1e9), t = start;
  while (t < deadline) {
    one_connection(&to[n % (size_t)n_to]);
    uint64_t done = now_ns();
    if (n == cap) {
      cap *= 2;
      latencies = realloc(latencies, cap * sizeof(*latencies));
      if (latencies == NULL) fail("realloc");
    }
    latencies[n++] = done - t;
    t = done;
  }
  qsort(latencies, n, sizeof(*latencies), compare_u64);
  printf("{\"connections\":%zu,\"seconds\":%.6f,\"p50_us\":%.3f,\"p99_us\":%.3f}\n", n, (double)(t - start) / 1e9,
         percentile_us(latencies, n, 50), percentile_us(latencies, n, 99));
  free(latencies);
}

static void udp_loop(const struct sockaddr_in *to, int n_to, double seconds) {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) fail("socket");
  uint64_t start = now_ns(), deadline = start + (uint64_t)(seconds * 1e9), t = start;
  size_t n = 0;
  while (t < deadline) {
    /* A full socket buffer is the receiver's problem, not a failed call. */
    const struct sockaddr_in *dst = &to[n % (size_t)n_to];
    if (sendto(fd, "ping", 4, 0, (const struct sockaddr *)dst, sizeof(*dst)) < 0 && errno != ENOBUFS && errno != EAGAIN) fail("sendto");
    n++;
    if ((n & 255) == 0) t = now_ns();
  }
  t = now_ns();
  close(fd);
  printf("{\"datagrams\":%zu,\"seconds\":%.6f}\n", n, (double)(t - start) / 1e9);
}

int main(int argc, char **argv) {
  if (argc != 5) usage();
  struct sockaddr_in to[MAX_ADDRESSES];
  int port = atoi(argv[3]);
  double seconds = atof(argv[4]);
  if (port <= 0 || port > 65535 || seconds <= 0) usage();
  int n_to = parse_addresses(argv[2], port, to);
  if (strcmp(argv[1], "tcp") == 0) tcp_loop(to, n_to, seconds);
  else if (strcmp(argv[1], "udp") == 0) udp_loop(to, n_to, seconds);
  else usage();
  return 0;
}
