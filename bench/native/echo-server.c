/*
 * The server of the connect-rate benchmark: on each PORT, TCP and UDP.
 *
 *   echo-server PORT[,PORT...]
 *
 * TCP: accept, read the request, write "pong", close. Closing first puts
 * TIME_WAIT on this side, so the client's ephemeral ports are free at once.
 * UDP: datagrams are read and dropped (no reply, and no ICMP unreachable
 * either, as a closed port would send). Prints "listening" once every port is
 * bound; runs until killed.
 */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define PROGRAM "echo-server"
#include "native.h"

#define MAX_PORTS 32

static int bound_socket(int type, int port) {
  int fd = socket(AF_INET, type | SOCK_NONBLOCK, 0);
  if (fd < 0) fail("socket");
  int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0) fail("SO_REUSEADDR");
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port), .sin_addr = {htonl(INADDR_ANY)}};
  if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) fail("bind");
  if (type == SOCK_STREAM && listen(fd, 4096) < 0) fail("listen");
  return fd;
}

static void serve_connection(int fd) {
  /* A client that never sends must not stall every other one. */
  struct timeval timeout = {.tv_sec = 1};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  char buf[64];
  if (read(fd, buf, sizeof(buf)) > 0) (void)!write(fd, "pong", 4);
  close(fd);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: echo-server PORT[,PORT...]\n");
    return 2;
  }
  struct pollfd fds[2 * MAX_PORTS];
  int n = 0;
  for (char *tok = strtok(argv[1], ","); tok != NULL; tok = strtok(NULL, ",")) {
    int port = atoi(tok);
    if (port <= 0 || port > 65535 || n == 2 * MAX_PORTS) {
      fprintf(stderr, "echo-server: bad port list\n");
      return 2;
    }
    fds[n++] = (struct pollfd){.fd = bound_socket(SOCK_STREAM, port), .events = POLLIN};
    fds[n++] = (struct pollfd){.fd = bound_socket(SOCK_DGRAM, port), .events = POLLIN};
  }
  printf("listening\n");
  fflush(stdout);
  for (;;) {
    if (poll(fds, (nfds_t)n, -1) < 0) {
      if (errno == EINTR) continue;
      fail("poll");
    }
    for (int i = 0; i < n; i++) {
      if (!(fds[i].revents & POLLIN)) continue;
      int is_listener = i % 2 == 0;
      for (;;) {
        if (is_listener) {
          int conn = accept(fds[i].fd, NULL, NULL); /* Linux: not O_NONBLOCK like its listener */
          if (conn < 0) break;
          serve_connection(conn);
        } else {
          char buf[64];
          if (recv(fds[i].fd, buf, sizeof(buf), 0) < 0) break;
        }
      }
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ECONNABORTED && errno != EINTR) fail(is_listener ? "accept" : "recv");
    }
  }
}
