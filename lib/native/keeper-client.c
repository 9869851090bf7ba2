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
#include "keeper-wire.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <napi-macros.h>

static napi_value keeper_throw (napi_env env, const char *sock, const char *what, int err) {
  char msg[8192];
  if (err) snprintf(msg, sizeof(msg), "keeper %s: %s: %s", sock, what, strerror(err));
  else snprintf(msg, sizeof(msg), "keeper %s: %s", sock, what);
  napi_throw_error(env, err ? "EKEEPER" : "EKEEPERPROTO", msg);
  return NULL;
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
