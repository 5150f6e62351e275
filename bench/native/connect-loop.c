/*
 * The client of the connect-rate benchmark: new connections, one after the
 * other, for a number of seconds.
 *
 *   connect-loop tcp DEST [DEST...] SECONDS
 *     DEST is ADDR[,ADDR...]:PORT. socket, connect (the kernel picks a fresh
 *     ephemeral port), write "ping", read the answer until the server
 *     closes, close; the destinations in turn, connection by connection, and
 *     each one's addresses in turn. Interleaved so finely, destinations meet
 *     the same machine: a VM that drifts between runs cannot favour one.
 *     Prints {"destinations":[{"connections","seconds","p50_us","p99_us"}]},
 *     in the order given; "seconds" is the sum of that destination's
 *     connections, each from the end of the one before it (so including
 *     what that one left the kernel to do) to its own close; the latencies
 *     are the same spans.
 *   connect-loop udp DEST SECONDS
 *     one unconnected socket, sendto in a loop, DEST's addresses in turn
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
#define MAX_DESTINATIONS 8

struct destination {
  struct sockaddr_in to[MAX_ADDRESSES];
  int n_to;
  /* Each connection's duration, in ns. */
  uint64_t *latencies;
  size_t n, cap;
  uint64_t total_ns;
};

static void usage(void) {
  fprintf(stderr, "usage: connect-loop tcp DEST [DEST...] SECONDS | connect-loop udp DEST SECONDS (DEST: ADDR[,ADDR...]:PORT)\n");
  exit(2);
}

static void parse_destination(char *spec, struct destination *d) {
  char *colon = strrchr(spec, ':');
  if (colon == NULL) usage();
  *colon = '\0';
  int port = atoi(colon + 1);
  if (port <= 0 || port > 65535) usage();
  d->n_to = 0;
  for (char *tok = strtok(spec, ","); tok != NULL; tok = strtok(NULL, ",")) {
    if (d->n_to == MAX_ADDRESSES) usage();
    struct sockaddr_in *a = &d->to[d->n_to++];
    memset(a, 0, sizeof(*a));
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, tok, &a->sin_addr) != 1) usage();
  }
  if (d->n_to == 0) usage();
}

static int compare_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* The same order statistic as bench/lib/report.ts's percentile(). */
static double percentile_us(const uint64_t *sorted, size_t n, double p) {
  if (n == 0) return 0;
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

static void record(struct destination *d, uint64_t ns) {
  if (d->n == d->cap) {
    d->cap = d->cap ? d->cap * 2 : 1 << 14;
    d->latencies = realloc(d->latencies, d->cap * sizeof(*d->latencies));
    if (d->latencies == NULL) fail("realloc");
  }
  d->latencies[d->n++] = ns;
  d->total_ns += ns;
}

static void tcp_loop(struct destination *dests, int n_dests, double seconds) {
  uint64_t start = now_ns(), deadline = start + (uint64_t)(seconds * 1e9), t = start;
  for (size_t n = 0; t < deadline; n++) {
    struct destination *d = &dests[n % (size_t)n_dests];
    one_connection(&d->to[(n / (size_t)n_dests) % (size_t)d->n_to]);
    uint64_t done = now_ns();
    record(d, done - t);
    t = done;
  }
  printf("{\"destinations\":[");
  for (int i = 0; i < n_dests; i++) {
    struct destination *d = &dests[i];
    qsort(d->latencies, d->n, sizeof(*d->latencies), compare_u64);
    printf("%s{\"connections\":%zu,\"seconds\":%.6f,\"p50_us\":%.3f,\"p99_us\":%.3f}", i ? "," : "", d->n, (double)d->total_ns / 1e9,
           percentile_us(d->latencies, d->n, 50), percentile_us(d->latencies, d->n, 99));
    free(d->latencies);
  }
  printf("]}\n");
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
  if (argc < 4) usage();
  double seconds = atof(argv[argc - 1]);
  int n_dests = argc - 3;
  if (seconds <= 0 || n_dests > MAX_DESTINATIONS) usage();
  static struct destination dests[MAX_DESTINATIONS];
  for (int i = 0; i < n_dests; i++) parse_destination(argv[2 + i], &dests[i]);
  if (strcmp(argv[1], "tcp") == 0) tcp_loop(dests, n_dests, seconds);
  else if (strcmp(argv[1], "udp") == 0 && n_dests == 1) udp_loop(dests[0].to, dests[0].n_to, seconds);
  else usage();
  return 0;
}
