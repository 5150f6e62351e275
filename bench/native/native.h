/*
 * What every bench/native program shares: the monotonic clock and how a
 * failed call ends the program. Each program defines PROGRAM (its name, for
 * messages) before including this.
 */
#ifndef KPX_BENCH_NATIVE_H
#define KPX_BENCH_NATIVE_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void fail(const char *what) {
  fprintf(stderr, PROGRAM ": %s: %s\n", what, strerror(errno));
  exit(1);
}

#endif
