/*
 * dapifs-keeper: holds each dapifs mount's /dev/fuse descriptor, so that the mount outlives the
 * process that serves it.
 *
 * A FUSE connection lives as long as some process holds its /dev/fuse descriptor. The node agent
 * (`dapifs csi`) hands the keeper a duplicate of each mount's descriptor when it mounts, and takes
 * duplicates back when it starts again: after an upgrade, a crash or a kill, the new agent serves
 * the very same connections, and the kernel's requests that came meanwhile simply wait for it.
 * The keeper does nothing else, so that it never needs upgrading: no FUSE, no Kubernetes, no
 * allocation per request, about a hundred lines.
 *
 * Protocol: a unix stream socket; each request is one line, answered at once.
 *   PUT <key>    with one descriptor attached (SCM_RIGHTS): keep it under <key> (replacing,
 *                and closing, one kept before) -> "OK"
 *   DROP <key>   close and forget it (absent is fine) -> "OK"
 *   TAKE         one message "FD <key>" per descriptor kept, each with a duplicate attached,
 *                then "END"; the keeper keeps its own
 *   LIST         "KEY <key>" per descriptor kept, then "END"
 *   AGENT        this connection is a live agent: while none is open (after --abandon-after
 *                seconds), the keeper lets go of every descriptor
 * anything else -> "ERR <why>". Keys are the mounts' target paths.
 *
 * Letting go: with no agent, a request the kernel cannot answer from its caches waits. So that
 * it does not wait for ever, the keeper closes its descriptors when no agent has been connected
 * for --abandon-after seconds (default 300): the connections then end, and those reads fail
 * with ENOTCONN instead of hanging.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_KEPT 4096
#define MAX_CLIENTS 64
#define LINE 4200

struct kept { char *key; int fd; };
struct client { int sock; int agent; char buf[LINE]; size_t len; int fds[16]; int nfds; };

static struct kept kept[MAX_KEPT];
static int nkept;
static struct client clients[MAX_CLIENTS];
static int nclients;
static double alone_since;

static void say(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "dapifs-keeper: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int send_line(int sock, const char *line, int fd) {
  struct iovec iov = { (void *) line, strlen(line) };
  union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } u;
  struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
  if (fd >= 0) {
    msg.msg_control = u.buf;
    msg.msg_controllen = sizeof u.buf;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof(int));
  }
  return sendmsg(sock, &msg, MSG_NOSIGNAL) < 0 ? -1 : 0;
}

static int find(const char *key) {
  for (int i = 0; i < nkept; i++) if (strcmp(kept[i].key, key) == 0) return i;
  return -1;
}

static void drop(int i) {
  close(kept[i].fd);
  free(kept[i].key);
  kept[i] = kept[--nkept];
}

static void handle(struct client *c, char *line) {
  char reply[LINE + 16];
  if (strncmp(line, "PUT ", 4) == 0) {
    if (c->nfds == 0) { send_line(c->sock, "ERR PUT without a descriptor\n", -1); return; }
    int fd = c->fds[0];
    memmove(c->fds, c->fds + 1, --c->nfds * sizeof(int));
    int i = find(line + 4);
    if (i >= 0) { close(kept[i].fd); kept[i].fd = fd; }
    else if (nkept == MAX_KEPT) { close(fd); send_line(c->sock, "ERR too many descriptors\n", -1); return; }
    else {
      if (nkept == 0) alone_since = now();
      kept[nkept].key = strdup(line + 4);
      kept[nkept++].fd = fd;
    }
    say("keeping %s (%d held)", line + 4, nkept);
    send_line(c->sock, "OK\n", -1);
  } else if (strncmp(line, "DROP ", 5) == 0) {
    int i = find(line + 5);
    if (i >= 0) { drop(i); say("let go of %s (%d held)", line + 5, nkept); }
    send_line(c->sock, "OK\n", -1);
  } else if (strcmp(line, "TAKE") == 0 || strcmp(line, "LIST") == 0) {
    int take = line[0] == 'T';
    for (int i = 0; i < nkept; i++) {
      snprintf(reply, sizeof reply, "%s %s\n", take ? "FD" : "KEY", kept[i].key);
      if (send_line(c->sock, reply, take ? kept[i].fd : -1) < 0) return;
    }
    send_line(c->sock, "END\n", -1);
    if (take) say("handed %d descriptors over", nkept);
  } else if (strcmp(line, "AGENT") == 0) {
    c->agent = 1;
    send_line(c->sock, "OK\n", -1);
  } else {
    send_line(c->sock, "ERR unknown request (PUT, DROP, TAKE, LIST, AGENT)\n", -1);
  }
}

/* Reads what a client sent; 0 when it hung up or misbehaved. */
static int receive(struct client *c) {
  union { char buf[CMSG_SPACE(16 * sizeof(int))]; struct cmsghdr align; } u;
  struct iovec iov = { c->buf + c->len, sizeof c->buf - 1 - c->len };
  struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf };
  ssize_t n = recvmsg(c->sock, &msg, MSG_CMSG_CLOEXEC);
  if (n <= 0) return 0;
  for (struct cmsghdr *m = CMSG_FIRSTHDR(&msg); m; m = CMSG_NXTHDR(&msg, m)) {
    if (m->cmsg_level != SOL_SOCKET || m->cmsg_type != SCM_RIGHTS) continue;
    int count = (m->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (int k = 0; k < count; k++) {
      int fd;
      memcpy(&fd, CMSG_DATA(m) + k * sizeof(int), sizeof(int));
      if (c->nfds < 16) c->fds[c->nfds++] = fd; else close(fd);
    }
  }
  c->len += n;
  char *nl;
  while ((nl = memchr(c->buf, '\n', c->len)) != NULL) {
    *nl = 0;
    handle(c, c->buf);
    c->len -= nl + 1 - c->buf;
    memmove(c->buf, nl + 1, c->len);
  }
  return c->len < sizeof c->buf - 1;
}

static void hang_up(int i) {
  struct client *c = &clients[i];
  for (int k = 0; k < c->nfds; k++) close(c->fds[k]);
  close(c->sock);
  clients[i] = clients[--nclients];
}

static int usage(const char *what, const char *why) {
  fprintf(stderr, "dapifs-keeper: %s: %s\nusage: dapifs-keeper --socket PATH [--abandon-after SECONDS]\n", what, why);
  return 2;
}

int main(int argc, char **argv) {
  const char *path = NULL;
  double abandon = 300;
  for (int i = 1; i < argc; i++) {
    int has_value = i + 1 < argc;
    if (strcmp(argv[i], "--socket") == 0) {
      if (!has_value) return usage("--socket", "needs a value: the unix socket to listen on");
      path = argv[++i];
    } else if (strcmp(argv[i], "--abandon-after") == 0) {
      if (!has_value) return usage("--abandon-after", "needs a value: seconds");
      char *end;
      abandon = strtod(argv[++i], &end);
      if (*end || end == argv[i] || !(abandon > 0)) return usage("--abandon-after", "must be a number of seconds above 0");
    } else {
      return usage(argv[i], "unknown argument (allowed: --socket, --abandon-after)");
    }
  }
  if (!path) return usage("--socket", "is required");
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  if (path[0] != '/' || strlen(path) >= sizeof addr.sun_path) return usage("--socket", "must be an absolute path of at most 107 bytes");
  strcpy(addr.sun_path, path);
  signal(SIGPIPE, SIG_IGN);

  int lsock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  unlink(path);
  mode_t old = umask(077);
  if (bind(lsock, (struct sockaddr *) &addr, sizeof addr) < 0 || listen(lsock, 16) < 0) {
    say("%s: cannot listen: %s", path, strerror(errno));
    return 1;
  }
  umask(old);
  say("listening on %s; letting go after %gs without an agent", path, abandon);

  alone_since = now();
  for (;;) {
    struct pollfd p[MAX_CLIENTS + 1];
    p[0] = (struct pollfd) { lsock, POLLIN, 0 };
    int agents = 0;
    for (int i = 0; i < nclients; i++) {
      p[i + 1] = (struct pollfd) { clients[i].sock, POLLIN, 0 };
      agents += clients[i].agent;
    }
    if (agents) alone_since = now();
    else if (nkept && now() - alone_since >= abandon) {
      say("no agent for %gs: letting go of %d descriptors (their reads now fail instead of waiting)", abandon, nkept);
      while (nkept) drop(nkept - 1);
    }
    int wait = -1;
    if (!agents && nkept) wait = (int) ((alone_since + abandon - now()) * 1000) + 1;
    if (!agents && nkept && wait < 1) wait = 1;
    if (poll(p, nclients + 1, wait) < 0 && errno != EINTR) {
      say("poll: %s", strerror(errno));
      return 1;
    }
    for (int i = nclients - 1; i >= 0; i--) {
      if (p[i + 1].revents && !receive(&clients[i])) {
        if (clients[i].agent) alone_since = now();
        hang_up(i);
      }
    }
    if (p[0].revents & POLLIN) {
      int s = accept4(lsock, NULL, NULL, SOCK_CLOEXEC);
      if (s >= 0 && nclients < MAX_CLIENTS) clients[nclients++] = (struct client) { .sock = s };
      else if (s >= 0) close(s);
    }
  }
}
