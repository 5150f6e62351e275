/*
 * The generator of bench/forwarding-rate where the kernel refuses
 * BPF_PROG_TEST_RUN live frames: one Ethernet frame sent over and over out
 * of a device through an AF_PACKET socket, batched with sendmmsg.
 *
 *   frame-sender DEVICE FRAME_HEX SECONDS
 *     Prints {"sent","seconds","cpuSeconds"}: frames the device took, wall
 *     time, and this process's CPU time (user and system). The system time
 *     includes the softirq work each send raises: the kernel does it when
 *     the send re-enables bottom halves, on the same CPU, and tick-based
 *     accounting charges it to the task it interrupts.
 *
 * A frame the device drops for want of room (ENOBUFS) is not counted as
 * sent; any other failed call ends the run with exit status 1.
 */
#define _GNU_SOURCE /* sendmmsg */
#include <errno.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PROGRAM "frame-sender"
#include "native.h"

/** Frames per sendmmsg call: the syscall's cost shared, the clock read once a batch. */
#define BATCH 64
#define MAX_FRAME 1514

static void usage(void) {
  fprintf(stderr, "usage: frame-sender DEVICE FRAME_HEX SECONDS\n");
  exit(2);
}

static size_t parse_hex(const char *hex, unsigned char *out) {
  size_t len = strlen(hex);
  if (len % 2 != 0 || len / 2 > MAX_FRAME) usage();
  for (size_t i = 0; i < len / 2; i++) {
    unsigned int byte;
    if (sscanf(hex + 2 * i, "%2x", &byte) != 1) usage();
    out[i] = (unsigned char)byte;
  }
  return len / 2;
}

static double seconds_of(struct timeval tv) {
  return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

int main(int argc, char **argv) {
  if (argc != 4) usage();
  unsigned int ifindex = if_nametoindex(argv[1]);
  if (ifindex == 0) fail(argv[1]);
  static unsigned char frame[MAX_FRAME];
  size_t frame_len = parse_hex(argv[2], frame);
  double seconds = atof(argv[3]);
  if (frame_len < 14 || seconds <= 0) usage();

  // Protocol 0: the socket sends only, no received frame is queued to it.
  int fd = socket(AF_PACKET, SOCK_RAW, 0);
  if (fd < 0) fail("socket");
  struct sockaddr_ll device = { .sll_family = AF_PACKET, .sll_ifindex = (int)ifindex };
  if (bind(fd, (struct sockaddr *)&device, sizeof(device)) < 0) fail("bind");

  struct iovec iov = { .iov_base = frame, .iov_len = frame_len };
  struct mmsghdr msgs[BATCH];
  memset(msgs, 0, sizeof(msgs));
  for (int i = 0; i < BATCH; i++) {
    msgs[i].msg_hdr.msg_iov = &iov;
    msgs[i].msg_hdr.msg_iovlen = 1;
  }

  uint64_t sent = 0;
  uint64_t start = now_ns();
  uint64_t deadline = start + (uint64_t)(seconds * 1e9);
  uint64_t now = start;
  while (now < deadline) {
    int n = sendmmsg(fd, msgs, BATCH, 0);
    if (n < 0 && errno != ENOBUFS) fail("sendmmsg");
    if (n > 0) sent += (uint64_t)n;
    now = now_ns();
  }
  struct rusage usage;
  if (getrusage(RUSAGE_SELF, &usage) < 0) fail("getrusage");
  printf("{\"sent\":%llu,\"seconds\":%.6f,\"cpuSeconds\":%.6f}\n", (unsigned long long)sent, (double)(now - start) / 1e9,
         seconds_of(usage.ru_utime) + seconds_of(usage.ru_stime));
  close(fd);
  return 0;
}
