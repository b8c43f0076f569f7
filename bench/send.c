/* The minimal C sender that bench/hare_vs_c.sh compares hare against: what the original C
 * hare does on a login — read the PAM variables, build the legacy JSON, send it in one UDP
 * datagram — and nothing else (no escaping, no signing, no config).
 *
 *   gcc -O2 -o send bench/send.c && PAM_USER=dan ./send 127.0.0.1 9
 */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* A PAM variable as a JSON value: "value", or null when unset. */
static const char *item(const char *name, char *buf, size_t len) {
    const char *v = getenv(name);
    if (v == NULL)
        return "null";
    snprintf(buf, len, "\"%s\"", v);
    return buf;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s HOST PORT\n", argv[0]);
        return 2;
    }
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    char user[128], service[128], rhost[128], tty[128], json[1024];
    int n = snprintf(json, sizeof json,
                     "{\"tst\":%ld,\"hostname\":\"%s\",\"user\":%s,\"service\":%s,"
                     "\"rhost\":%s,\"tty\":%s}",
                     (long)time(NULL), host, item("PAM_USER", user, sizeof user),
                     item("PAM_SERVICE", service, sizeof service),
                     item("PAM_RHOST", rhost, sizeof rhost), item("PAM_TTY", tty, sizeof tty));
    if (n < 0 || (size_t)n >= sizeof json)
        return 1;

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_DGRAM}, *ai;
    if (getaddrinfo(argv[1], argv[2], &hints, &ai) != 0)
        return 1;
    int fd = socket(ai->ai_family, ai->ai_socktype, 0);
    if (fd < 0 || sendto(fd, json, (size_t)n, 0, ai->ai_addr, ai->ai_addrlen) < 0)
        return 1;
    close(fd);
    freeaddrinfo(ai);
    return 0;
}
