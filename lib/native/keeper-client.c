// The keeper's client: puts a mount's /dev/fuse descriptor in the keeper (lib/keeper/keeper.c,
// a process that holds a dup of each, so that the connection outlives the serving process),
// drops it, or takes them all back. JS calls it through lib/native/keeper-client.ts; it is C
// because Node cannot pass a descriptor over a unix socket.
//
// Synchronous, on a unix stream socket (the keeper answers at once, from the same machine); each
// call connects, talks and closes. Lines are "\n"-terminated; an fd travels by SCM_RIGHTS in the
// same sendmsg as its line (keeper.c has the whole protocol).
//   PUT <key>\n  + fd  ->  OK\n | ERR <text>\n
//   DROP <key>\n       ->  OK\n | ERR <text>\n
//   TAKE\n             ->  (FD <key>\n + fd)* END\n
// Each call throws an Error naming the socket when it fails.

#include "keeper-client.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <napi-macros.h>

#define KEEPER_TIMEOUT_S 30

static napi_value keeper_throw (napi_env env, const char *sock, const char *what, int err) {
  char msg[8192];
  if (err) snprintf(msg, sizeof(msg), "keeper %s: %s: %s", sock, what, strerror(err));
  else snprintf(msg, sizeof(msg), "keeper %s: %s", sock, what);
  napi_throw_error(env, err ? "EKEEPER" : "EKEEPERPROTO", msg);
  return NULL;
}

static int keeper_connect (const char *sock) {
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
static int keeper_send (int s, const char *line, int fd) {
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
static int keeper_recv_line (int s, char *line, size_t cap, int *fd) {
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

// One request and its one-line answer: OK, or ERR <text> (thrown).
static napi_value keeper_simple (napi_env env, const char *sock, const char *line, int fd) {
  int s = keeper_connect(sock);
  if (s < 0) return keeper_throw(env, sock, "connect", errno);
  if (keeper_send(s, line, fd) < 0) {
    int e = errno;
    close(s);
    return keeper_throw(env, sock, "send", e);
  }
  char answer[4200];
  int afd;
  if (keeper_recv_line(s, answer, sizeof(answer), &afd) < 0) {
    int e = errno;
    close(s);
    return keeper_throw(env, sock, e ? "receive" : "no answer (connection closed)", e);
  }
  close(s);
  if (afd >= 0) close(afd);
  if (strcmp(answer, "OK") == 0) return NULL;
  char what[4300];
  snprintf(what, sizeof(what), "answered \"%s\"", answer);
  return keeper_throw(env, sock, what, 0);
}

static int keeper_key_ok (const char *key) {
  return key[0] != 0 && strchr(key, '\n') == NULL;
}

// fuse_native_keeper_put(sockPath, key, fd): PUT <key> with a dup of fd; throws on failure.
static NAPI_METHOD(fuse_native_keeper_put) {
  NAPI_ARGV(3)
  NAPI_ARGV_UTF8(sock, 1024, 0)
  NAPI_ARGV_UTF8(key, 4096, 1)
  NAPI_ARGV_INT32(fd, 2)
  if (!keeper_key_ok(key)) return keeper_throw(env, sock, "PUT: bad key", EINVAL);
  char line[4200];
  snprintf(line, sizeof(line), "PUT %s\n", key);
  return keeper_simple(env, sock, line, fd);
}

// fuse_native_keeper_drop(sockPath, key): DROP <key>; throws on failure.
static NAPI_METHOD(fuse_native_keeper_drop) {
  NAPI_ARGV(2)
  NAPI_ARGV_UTF8(sock, 1024, 0)
  NAPI_ARGV_UTF8(key, 4096, 1)
  if (!keeper_key_ok(key)) return keeper_throw(env, sock, "DROP: bad key", EINVAL);
  char line[4200];
  snprintf(line, sizeof(line), "DROP %s\n", key);
  return keeper_simple(env, sock, line, -1);
}

// fuse_native_keeper_take(sockPath) -> [{key, fd}, ...]: dups of every fd the keeper holds.
static NAPI_METHOD(fuse_native_keeper_take) {
  NAPI_ARGV(1)
  NAPI_ARGV_UTF8(sock, 1024, 0)
  int s = keeper_connect(sock);
  if (s < 0) return keeper_throw(env, sock, "connect", errno);
  if (keeper_send(s, "TAKE\n", -1) < 0) {
    int e = errno;
    close(s);
    return keeper_throw(env, sock, "send", e);
  }
  int fds[4096];
  char *keys[4096];
  int count = 0;
  napi_value err = NULL;
  for (;;) {
    char line[4200];
    int fd;
    if (keeper_recv_line(s, line, sizeof(line), &fd) < 0) {
      int e = errno;
      err = keeper_throw(env, sock, e ? "TAKE: receive" : "TAKE: connection closed before END", e);
      break;
    }
    if (strcmp(line, "END") == 0) {
      if (fd >= 0) close(fd);
      break;
    }
    if (strncmp(line, "FD ", 3) != 0 || fd < 0 || count == 4096) {
      if (fd >= 0) close(fd);
      char what[4300];
      snprintf(what, sizeof(what), "TAKE: unexpected \"%s\"%s", line, fd < 0 ? " (no fd)" : "");
      err = keeper_throw(env, sock, what, 0);
      break;
    }
    fds[count] = fd;
    keys[count] = strdup(line + 3);
    count++;
  }
  close(s);
  napi_value arr = NULL;
  if (err == NULL) {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (!pending) napi_create_array(env, &arr);
  }
  for (int i = 0; i < count; i++) {
    if (arr != NULL) {
      napi_value o, k, f;
      napi_create_object(env, &o);
      napi_create_string_utf8(env, keys[i], NAPI_AUTO_LENGTH, &k);
      napi_create_int32(env, fds[i], &f);
      napi_set_named_property(env, o, "key", k);
      napi_set_named_property(env, o, "fd", f);
      napi_set_element(env, arr, i, o);
    } else {
      close(fds[i]);
    }
    free(keys[i]);
  }
  return arr;
}

void keeper_client_export (napi_env env, napi_value exports) {
  NAPI_EXPORT_FUNCTION(fuse_native_keeper_put)
  NAPI_EXPORT_FUNCTION(fuse_native_keeper_drop)
  NAPI_EXPORT_FUNCTION(fuse_native_keeper_take)
}
