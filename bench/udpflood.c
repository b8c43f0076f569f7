/* udpflood: send COUNT distinct legacy hare datagrams to HOST:PORT (IPv4 or IPv6 literal).
 *
 *   udpflood HOST PORT COUNT [RATE [FIRST [TAG]]]
 *
 * RATE: datagrams per second (0 = as fast as the kernel takes them). Pacing sends in 1 ms
 * slices against an absolute clock, so the average rate holds even if a slice runs late.
 * FIRST: number of the first user (default 0); user names are "u<FIRST+i>" so every datagram
 * has a distinct event id. TAG: the hostname field (default "vm"), to keep runs apart.
 * Prints one line: sent, seconds, rate. Loopback only by intent; bounded by COUNT.
 *
 * Build: gcc -O2 -o udpflood udpflood.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s HOST PORT COUNT [RATE [FIRST [TAG]]]\n", argv[0]);
    return 2;
  }
  const char *host = argv[1];
  int port = atoi(argv[2]);
  long count = atol(argv[3]);
  double rate = argc > 4 ? atof(argv[4]) : 0;
  long first = argc > 5 ? atol(argv[5]) : 0;
  const char *tag = argc > 6 ? argv[6] : "vm";

  struct sockaddr_storage ss;
  socklen_t sl;
  memset(&ss, 0, sizeof ss);
  struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
  if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons(port);
    sl = sizeof *a4;
  } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons(port);
    sl = sizeof *a6;
  } else {
    fprintf(stderr, "bad address %s\n", host);
    return 2;
  }
  int fd = socket(ss.ss_family, SOCK_DGRAM, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&ss, sl) < 0) {
    perror("socket/connect");
    return 1;
  }
  long tst = (long)time(NULL);
  char buf[512];
  double start = now();
  long sent = 0, errors = 0;
  /* datagrams per 1 ms slice */
  double per_slice = rate > 0 ? rate / 1000.0 : 0;
  long slice = 0;
  while (sent < count) {
    long target = count;
    if (rate > 0) {
      slice++;
      target = (long)(per_slice * slice);
      if (target > count) target = count;
      double due = start + slice / 1000.0;
      double d = due - now();
      if (d > 0) {
        struct timespec ts = {(time_t)d, (long)((d - (time_t)d) * 1e9)};
        nanosleep(&ts, NULL);
      }
    }
    while (sent < target) {
      int n = snprintf(buf, sizeof buf,
                       "{\"tst\":%ld,\"hostname\":\"%s\",\"user\":\"u%ld\",\"service\":\"sshd\","
                       "\"rhost\":\"192.0.2.10\",\"tty\":\"ssh\"}",
                       tst, tag, first + sent);
      if (send(fd, buf, n, 0) < 0) {
        /* ECONNREFUSED from an earlier ICMP, ENOBUFS: count and go on (bounded by count) */
        errors++;
        if (errno != ECONNREFUSED && errno != ENOBUFS && errno != EAGAIN) {
          perror("send");
          return 1;
        }
        if (errors > count) return 1;
        continue;
      }
      sent++;
    }
  }
  double el = now() - start;
  printf("sent %ld in %.3f s = %.0f/s (send errors %ld)\n", sent, el, sent / el, errors);
  close(fd);
  return 0;
}
