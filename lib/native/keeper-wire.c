// The keeper's wire, client side: connect, send a line (with a descriptor), read a line (with the
// descriptor that came with it). Plain C, without Node: the addon's client (keeper-client.c) is
// built on it, and so is the test's stand-in agent (test/fixtures/stuck-agent.c). keeper.c has the
// protocol.

#include "keeper-wire.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define KEEPER_TIMEOUT_S 30

// A connection to the keeper at `sock`, with KEEPER_TIMEOUT_S on its reads and writes; -1 (errno).
int keeper_connect (const char *sock) {
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof(sa));
  sa.sun_family = AF_UNIX;
  if (strlen(sock) >= sizeof(sa.sun_path)) { errno = ENAMETOOLONG; return -1; }
  strcpy(sa.sun_path, sock);
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  struct timeval tv = { .tv_sec = KEEPER_TIMEOUT_S, .tv_usec = 0 };
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  if (connect(s, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
    int e = errno;
    close(s);
    errno = e;
    return -1;
  }
  return s;
}

// Sends `line` in one sendmsg, with `fd` attached if >= 0. 0 or -1 (errno).
int keeper_send (int s, const char *line, int fd) {
  struct iovec iov = { .iov_base = (void *) line, .iov_len = strlen(line) };
  union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int))]; } ctl;
  struct msghdr msg;
  memset(&msg, 0, sizeof(msg));
  memset(&ctl, 0, sizeof(ctl));
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (fd >= 0) {
    msg.msg_control = ctl.buf;
    msg.msg_controllen = sizeof(ctl.buf);
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof(int));
  }
  while (iov.iov_len > 0) {
    ssize_t n = sendmsg(s, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    iov.iov_base = (char *) iov.iov_base + n;
    iov.iov_len -= n;
    msg.msg_control = NULL; // the fd went with the first bytes
    msg.msg_controllen = 0;
  }
  return 0;
}

// Reads one line (without its "\n"), with the fd sent with it, if any. *fd: that fd, or -1 (any
// further ones are closed). 0, or -1 (errno; 0 for EOF or a line too long).
//
// An fd sent with a line arrives with that line's first byte (on a stream socket, with the first
// byte of its message), so a line is read up to its "\n" and no further: the next line's fd must
// not come with this one. The line is first looked at without being taken (MSG_PEEK, with no room
// for fds: the kernel closes the copies a peek would give), then taken in one recvmsg of exactly
// its length. A peek stops at the end of a message that carries fds, so it never shows more than
// the line; when it shows less (a line sent in pieces), the rest is read a byte at a time. One
// recvmsg a byte, as before, cost a TAKE of 1,000 mounts a tenth of a second.
int keeper_recv_line (int s, char *line, size_t cap, int *fd) {
  size_t len = 0;
  *fd = -1;
  for (;;) {
    size_t want = 1;
    if (len == 0) {
      ssize_t peeked;
      do peeked = recv(s, line, cap - 1, MSG_PEEK); while (peeked < 0 && errno == EINTR);
      if (peeked > 0) {
        char *nl = memchr(line, '\n', (size_t) peeked);
        if (nl != NULL) want = (size_t) (nl - line) + 1;
      }
    }
    char *into = line + len;
    char c;
    struct iovec iov = { .iov_base = want > 1 ? (void *) into : (void *) &c, .iov_len = want };
    union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int) * 8)]; } ctl;
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl.buf;
    msg.msg_controllen = sizeof(ctl.buf);
    ssize_t n = recvmsg(s, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0 && errno == EINTR) continue;
    for (struct cmsghdr *h = n >= 0 ? CMSG_FIRSTHDR(&msg) : NULL; h != NULL; h = CMSG_NXTHDR(&msg, h)) {
      if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS) continue;
      int count = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (int i = 0; i < count; i++) {
        int got;
        memcpy(&got, CMSG_DATA(h) + i * sizeof(int), sizeof(int));
        if (*fd < 0) *fd = got;
        else close(got);
      }
    }
    if (n < 0) goto fail;
    if (n == 0) { errno = 0; goto fail; }
    if (want > 1) {
      len += (size_t) n;
      if (line[len - 1] == '\n') { line[len - 1] = 0; return 0; }
      continue; // less than the line came: the rest, a byte at a time
    }
    if (c == '\n') { line[len] = 0; return 0; }
    if (len + 1 >= cap) { errno = 0; goto fail; }
    line[len++] = c;
  }
fail:
  {
    int e = errno;
    if (*fd >= 0) close(*fd);
    *fd = -1;
    errno = e;
    return -1;
  }
}

