/*
 * dapifs-keeper: holds each dapifs mount's /dev/fuse descriptor, so that the mount outlives the
 * process that serves it.
 *
 * A FUSE connection lives as long as some process holds its /dev/fuse descriptor. The node agent
 * (`dapifs csi`) hands the keeper a duplicate of each mount's descriptor when it mounts, and takes
 * duplicates back when it starts again: after an upgrade, a crash or a kill, the new agent serves
 * the very same connections, and the kernel's requests that came meanwhile simply wait for it.
 * The keeper does nothing else, so that it never needs upgrading: no FUSE, no Kubernetes, a few
 * hundred lines of C.
 *
 * Protocol: a unix stream socket; each request is one line, answered at once (queued, when the
 * client is not reading: below).
 *   PUT <key>    with one descriptor attached (SCM_RIGHTS): keep it under <key> (replacing,
 *                and closing, one kept before) -> "OK"
 *   DROP <key>   close and forget it (absent is fine) -> "OK"
 *   TAKE         one message "FD <key>" per descriptor kept, each with a duplicate attached,
 *                then "END"; the keeper keeps its own
 *   LIST         "KEY <key>" per descriptor kept, then "END"
 *   AGENT        this connection is a live agent: while none is open (after --abandon-after
 *                seconds), the keeper lets go of every descriptor; when it closes, the agent
 *                reads its mounts no more (below, "An agent gone")
 * anything else -> "ERR <why>". Keys are the mounts' target paths.
 *
 * An upgrade with surge (a new agent started while the old one still serves) needs nothing more
 * here: the agents hand the volumes over between themselves (lib/csi/handover.ts), and the new
 * one TAKEs only once the old one has stopped reading every mount and said so. A keeper of any
 * release serves that unchanged; two AGENT connections at once (the old agent's, until it
 * exits, and the new one's) are fine.
 *
 * An agent gone: the agent makes its flips through its own mounts (lib/fs/flip.ts), so a thread of
 * it may be waiting for its own RENAME or SYMLINK when it is killed. If one of its workers had
 * already read that request, the kernel will never end it: the thread waits uninterruptibly,
 * the killed process cannot finish dying (its threads hold its descriptors, so the connection
 * is not aborted either), and in a container it is PID 1, so the container never exits and
 * its restart never comes. So when an agent's AGENT connection closes, no other agent is
 * connected, and no TAKE came since it connected, the keeper, for each descriptor:
 *   1. writes FUSE_NOTIFY_RESEND (kernel 6.9 and later; before, it can do nothing): every
 *      request read but not answered goes back to the kernel's queue;
 *   2. reads each request waiting, and answers EIO those of the agent's flip steps, which it
 *      knows by their gid (STEP_GID: lib/native/vfs-steps.c): the rename itself, or the
 *      GETATTR or LOOKUP on the way to it. The dead agent's thread gets its error, and the
 *      process ends. Every other request (a pod's read) it leaves unanswered; FORGETs and
 *      INTERRUPTs need no answer;
 *   3. writes FUSE_NOTIFY_RESEND again: the reads it left go back to the queue, for the next
 *      agent, which TAKEs and answers them.
 * For that, the agent makes its steps on threads that hold no descriptor (vfs-steps.c): one
 * that shared the process's would keep the AGENT connection open, and the keeper would never
 * know.
 *
 * Letting go: with no agent, a request the kernel cannot answer from its caches waits. So that
 * it does not wait for ever, the keeper closes its descriptors when no agent has been connected
 * for --abandon-after seconds (default 300): the connections then end, and those reads fail
 * with ENOTCONN instead of hanging.
 *
 * What it holds is every pod's volume on the node, so it trusts little:
 *   - only root peers (SO_PEERCRED), whatever the socket's mode says;
 *   - it never blocks on a client: replies wait in that client's queue (each descriptor in it a
 *     duplicate, so that a DROP meanwhile cannot change what is sent) and go as the client reads;
 *     a client with a reply waiting is not read from, so one that never reads holds one reply;
 *   - out of descriptors, it refuses the connection or the request, and goes on: a spare
 *     descriptor kept for that lets it accept and close a connection it cannot serve, instead of
 *     finding the same connection pending for ever. At start it raises its own limit to the
 *     hard one.
 *
 * SIGTERM (or SIGINT) ends it at once, with its socket removed (if the path is still the one it
 * bound) and its descriptors closed, as a kill would close them: in a container it is PID 1, for
 * which a signal without a handler does nothing, so without one a pod's deletion would wait its
 * whole grace period for the SIGKILL, and leave the socket behind.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef FUSE_NOTIFY_RESEND
#define FUSE_NOTIFY_RESEND 7 /* kernel 6.9+, protocol 7.40 */
#endif
#define MAX_KEPT 4096
#define MAX_CLIENTS 64
#define LINE 4200

struct kept { char *key; int fd; };
/* A reply line waiting to be sent, with its own duplicate of the descriptor it carries (or -1). */
struct out { char *line; int fd; };
struct client {
  int sock; int agent; unsigned long takes_before; /* takes when it said AGENT */ char buf[LINE]; size_t len; int fds[16]; int nfds;
  struct out *outq; int nout, outcap, outhead; size_t outpos; /* outpos: bytes of outq[outhead] sent */
  int broken;
};

static struct kept kept[MAX_KEPT];
static int nkept;
static struct client clients[MAX_CLIENTS];
static int nclients;
static double alone_since;
static int spare = -1; /* held for the moment descriptors run out: see accept_one() */
static volatile sig_atomic_t stopping; /* the signal that asked it to stop */
static unsigned long takes; /* TAKEs answered so far */

static void on_stop(int sig) { stopping = sig; }

/* Log lines whose write would have blocked: the next line that goes says how many. */
static long dropped_lines;

/* One line on stderr, in one write. Once running, stderr does not block (main; unless it is a
 * terminal): a log reader that stalls costs lines, never the keeper. */
static void say(const char *fmt, ...) {
  char line[LINE + 256];
  int n = 0;
  if (dropped_lines) n = snprintf(line, sizeof line, "dapifs-keeper: (%ld log lines dropped: stderr was not read)\n", dropped_lines);
  n += snprintf(line + n, sizeof line - n, "dapifs-keeper: ");
  va_list ap;
  va_start(ap, fmt);
  n += vsnprintf(line + n, sizeof line - n, fmt, ap);
  va_end(ap);
  if (n > (int) sizeof line - 2) n = sizeof line - 2;
  line[n++] = '\n';
  if (write(2, line, n) == n) dropped_lines = 0;
  else dropped_lines++;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Queues a reply line for the client, with a duplicate of fd (if fd >= 0); 0, or -1 if it can't. */
static int reply(struct client *c, const char *line, int fd) {
  if (c->broken) return -1;
  if (c->nout == c->outcap) {
    int cap = c->outcap ? c->outcap * 2 : 8;
    struct out *q = realloc(c->outq, cap * sizeof *q);
    if (!q) { c->broken = 1; return -1; }
    c->outq = q;
    c->outcap = cap;
  }
  int dup = fd >= 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1;
  char *copy = strdup(line);
  if ((fd >= 0 && dup < 0) || !copy) {
    if (dup >= 0) close(dup);
    free(copy);
    return -1;
  }
  c->outq[c->nout++] = (struct out) { copy, dup };
  return 0;
}

static void free_out(struct out *o) {
  if (o->fd >= 0) close(o->fd);
  free(o->line);
}

/* Sends what the client's queue holds, as far as its socket takes it now; 0 on a broken client. */
static int flush(struct client *c) {
  while (c->outhead < c->nout) {
    struct out *o = &c->outq[c->outhead];
    size_t len = strlen(o->line);
    struct iovec iov = { o->line + c->outpos, len - c->outpos };
    union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } u;
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
    if (o->fd >= 0 && c->outpos == 0) {
      msg.msg_control = u.buf;
      msg.msg_controllen = sizeof u.buf;
      struct cmsghdr *m = CMSG_FIRSTHDR(&msg);
      m->cmsg_level = SOL_SOCKET;
      m->cmsg_type = SCM_RIGHTS;
      m->cmsg_len = CMSG_LEN(sizeof(int));
      memcpy(CMSG_DATA(m), &o->fd, sizeof(int));
    }
    ssize_t n = sendmsg(c->sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
    c->outpos += n;
    if (c->outpos < len) continue;
    free_out(o);
    c->outpos = 0;
    c->outhead++;
  }
  c->nout = c->outhead = 0;
  return 1;
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
  char text[LINE + 16];
  if (strncmp(line, "PUT ", 4) == 0) {
    if (c->nfds == 0) { reply(c, "ERR PUT without a descriptor\n", -1); return; }
    int fd = c->fds[0];
    memmove(c->fds, c->fds + 1, --c->nfds * sizeof(int));
    int i = find(line + 4);
    if (i >= 0) { close(kept[i].fd); kept[i].fd = fd; }
    else if (nkept == MAX_KEPT) { close(fd); reply(c, "ERR too many descriptors\n", -1); return; }
    else {
      if (nkept == 0) alone_since = now();
      kept[nkept].key = strdup(line + 4);
      kept[nkept++].fd = fd;
    }
    say("keeping %s (%d held)", line + 4, nkept);
    reply(c, "OK\n", -1);
  } else if (strncmp(line, "DROP ", 5) == 0) {
    int i = find(line + 5);
    if (i >= 0) { drop(i); say("let go of %s (%d held)", line + 5, nkept); }
    reply(c, "OK\n", -1);
  } else if (strcmp(line, "TAKE") == 0 || strcmp(line, "LIST") == 0) {
    int take = line[0] == 'T';
    for (int i = 0; i < nkept; i++) {
      snprintf(text, sizeof text, "%s %s\n", take ? "FD" : "KEY", kept[i].key);
      if (reply(c, text, take ? kept[i].fd : -1) < 0) {
        /* Out of descriptors (or memory): say so instead of a partial list. */
        for (int k = c->outhead; k < c->nout; k++) free_out(&c->outq[k]);
        c->nout = c->outhead = 0;
        c->outpos = 0;
        reply(c, "ERR out of descriptors; try again\n", -1);
        say("could not hand the descriptors over: %s", strerror(errno));
        return;
      }
    }
    reply(c, "END\n", -1);
    if (take) { takes++; say("handed %d descriptors over", nkept); }
  } else if (strcmp(line, "AGENT") == 0) {
    c->agent = 1;
    c->takes_before = takes;
    reply(c, "OK\n", -1);
  } else {
    reply(c, "ERR unknown request (PUT, DROP, TAKE, LIST, AGENT)\n", -1);
  }
}

/* Handles the complete lines received, one reply at a time: none while one still waits to be
 * sent. 0 when the client is broken. */
static int handle_lines(struct client *c) {
  char *nl;
  while (c->nout == 0 && (nl = memchr(c->buf, '\n', c->len)) != NULL) {
    *nl = 0;
    handle(c, c->buf);
    c->len -= nl + 1 - c->buf;
    memmove(c->buf, nl + 1, c->len);
    if (!flush(c)) return 0;
  }
  return !c->broken;
}

/* Reads what a client sent; 0 when it hung up or misbehaved. */
static int receive(struct client *c) {
  union { char buf[CMSG_SPACE(16 * sizeof(int))]; struct cmsghdr align; } u;
  struct iovec iov = { c->buf + c->len, sizeof c->buf - 1 - c->len };
  struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf };
  ssize_t n = recvmsg(c->sock, &msg, MSG_CMSG_CLOEXEC);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return 1;
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
  return handle_lines(c) && c->len < sizeof c->buf - 1;
}

/* The filesystem gid of the agent's flip steps (VFS_STEP_GID in lib/native/vfs-steps.h). */
#define STEP_GID 4294967294u

/* A request's buffer: the header, and a WRITE of up to the kernel's largest max_write (256 pages).
 * A connection whose requests could be larger refuses a read into it (EINVAL), and consumes
 * nothing: then the keeper stops there. */
#define REQUEST_MAX (sizeof(struct fuse_in_header) + sizeof(struct fuse_write_in) + 256 * 4096)

static int resend(int fd) {
  struct fuse_out_header o = { .len = sizeof o, .error = FUSE_NOTIFY_RESEND, .unique = 0 };
  return write(fd, &o, sizeof o) == (ssize_t) sizeof o ? 0 : -1;
}

/* "An agent gone" (above), for one descriptor. Counts what it answered and left. */
static void answer_left(int fd, char *buf, long *answered, long *left) {
  if (resend(fd) < 0) return;
  long read_here = 0;
  for (int n = 0; n < 100000; n++) {
    struct pollfd p = { fd, POLLIN, 0 };
    if (poll(&p, 1, 0) != 1 || !(p.revents & POLLIN)) break;
    ssize_t r = read(fd, buf, REQUEST_MAX);
    if (r < (ssize_t) sizeof(struct fuse_in_header)) break;
    struct fuse_in_header h;
    memcpy(&h, buf, sizeof h);
    if (h.opcode == FUSE_FORGET || h.opcode == FUSE_BATCH_FORGET || h.opcode == FUSE_INTERRUPT) continue;
    if (h.gid == STEP_GID) {
      struct fuse_out_header o = { .len = sizeof o, .error = -EIO, .unique = h.unique };
      if (write(fd, &o, sizeof o) == (ssize_t) sizeof o) { (*answered)++; continue; }
    }
    read_here++;
  }
  if (read_here) resend(fd);
  *left += read_here;
}

static void answer_left_all(void) {
  static char *buf;
  if (!buf && !(buf = malloc(REQUEST_MAX))) return;
  long answered = 0, left = 0;
  for (int i = 0; i < nkept; i++) answer_left(kept[i].fd, buf, &answered, &left);
  if (answered || left) say("the agent left: answered %ld requests of its own flips (EIO), left %ld for the next agent", answered, left);
}

static void hang_up(int i) {
  struct client *c = &clients[i];
  for (int k = 0; k < c->nfds; k++) close(c->fds[k]);
  for (int k = c->outhead; k < c->nout; k++) free_out(&c->outq[k]);
  free(c->outq);
  close(c->sock);
  clients[i] = clients[--nclients];
}

/* The peer's uid, or -1. */
static long peer_uid(int sock) {
  struct ucred cred;
  socklen_t len = sizeof cred;
  return getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 ? (long) cred.uid : -1;
}

/* Accepts one connection: a root peer becomes a client; any other, or one past the limits, is
 * closed at once. Out of descriptors, the spare one makes room to take the connection off the
 * queue and close it, so that poll does not report it again and again. */
static void accept_one(int lsock) {
  int s = accept4(lsock, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (s < 0) {
    if ((errno == EMFILE || errno == ENFILE) && spare >= 0) {
      close(spare);
      s = accept4(lsock, NULL, NULL, SOCK_CLOEXEC);
      if (s >= 0) close(s);
      spare = open("/dev/null", O_RDONLY | O_CLOEXEC);
      say("out of descriptors: refused a connection");
    }
    return;
  }
  long uid = peer_uid(s);
  if (uid != 0 && uid != (long) geteuid()) {
    say("refused a connection from uid %ld: only root may use the keeper", uid);
    const char *no = "ERR only root may use the keeper\n";
    if (send(s, no, strlen(no), MSG_NOSIGNAL | MSG_DONTWAIT) < 0) { /* it is closed either way */ }
    close(s);
    return;
  }
  if (nclients == MAX_CLIENTS) { close(s); return; }
  clients[nclients++] = (struct client) { .sock = s };
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
  struct rlimit nofile;
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
  }
  spare = open("/dev/null", O_RDONLY | O_CLOEXEC);

  int lsock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  unlink(path);
  mode_t old = umask(077);
  if (bind(lsock, (struct sockaddr *) &addr, sizeof addr) < 0 || listen(lsock, 16) < 0) {
    say("%s: cannot listen: %s", path, strerror(errno));
    return 1;
  }
  umask(old);
  struct stat bound;
  if (stat(path, &bound) < 0) bound.st_ino = 0;
  /* Blocked but while it polls, so that a stop request is seen either before a poll or by it. */
  struct sigaction sa = { .sa_handler = on_stop };
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigset_t stops, polling;
  sigemptyset(&stops);
  sigaddset(&stops, SIGTERM);
  sigaddset(&stops, SIGINT);
  sigprocmask(SIG_BLOCK, &stops, &polling);
  say("listening on %s; letting go after %gs without an agent", path, abandon);
  if (!isatty(2)) fcntl(2, F_SETFL, fcntl(2, F_GETFL) | O_NONBLOCK); /* a terminal's flags are its shell's too */

  alone_since = now();
  for (;;) {
    if (stopping) {
      struct stat st;
      if (bound.st_ino && stat(path, &st) == 0 && st.st_ino == bound.st_ino && st.st_dev == bound.st_dev) unlink(path);
      say("%s: stopping; letting go of %d descriptors", strsignal(stopping), nkept);
      return 0;
    }
    struct pollfd p[MAX_CLIENTS + 1];
    p[0] = (struct pollfd) { lsock, POLLIN, 0 };
    int agents = 0;
    for (int i = 0; i < nclients; i++) {
      /* A client with a reply waiting is written to, not read from. */
      p[i + 1] = (struct pollfd) { clients[i].sock, clients[i].nout ? POLLOUT : POLLIN, 0 };
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
    struct timespec ts = { wait / 1000, (wait % 1000) * 1000000L };
    if (ppoll(p, nclients + 1, wait < 0 ? NULL : &ts, &polling) < 0 && errno != EINTR) {
      say("poll: %s", strerror(errno));
      return 1;
    }
    for (int i = nclients - 1; i >= 0; i--) {
      struct client *c = &clients[i];
      short ev = p[i + 1].revents;
      if (!ev) continue;
      int ok;
      if (c->nout) ok = !(ev & (POLLERR | POLLHUP | POLLNVAL)) && flush(c) && handle_lines(c);
      else ok = receive(c);
      if (!ok) {
        int gone = c->agent && c->takes_before == takes;
        if (c->agent) alone_since = now();
        hang_up(i);
        int others = 0;
        for (int k = 0; k < nclients; k++) others += clients[k].agent;
        if (gone && !others) answer_left_all();
      }
    }
    if (p[0].revents & POLLIN) accept_one(lsock);
  }
}
