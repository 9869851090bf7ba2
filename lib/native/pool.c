// The shared worker pool: a fixed few threads serve the requests of every mount of the process,
// in place of a libfuse loop per mount (fuse_session_loop_mt: a thread of its own, and one or two
// idle workers, per mount, so 3 threads a mount at rest, 3,000 at 1,000 mounts).
//
// How a request goes through it:
// 1. Each mount's session (pool_add) has its /dev/fuse descriptor made non-blocking and put in
//    one epoll set, armed for one wake-up (EPOLLONESHOT): a request that arrives wakes exactly one
//    worker, never all of them.
// 2. That worker reads one request (fuse_session_receive_buf, into its own buffer), and re-arms
//    the descriptor at once, before serving it: the mount's next request can be read by another
//    worker meanwhile, as libfuse's loop lets it.
// 3. It serves the request (fuse_session_process_buf: our low-level op, which may wait for Node's
//    thread), and goes back to waiting on the set.
// A read that finds nothing (EAGAIN) is no error: the request it was woken for went away (its
// reader was killed while it waited, and the kernel dropped it), which is why the descriptors are
// non-blocking: a blocking read would hold the worker until that mount's next request.
//
// Ending: when a connection ends (unmounted, aborted), its read says so (ENODEV: libfuse marks the
// session exited). The session then leaves the set, and once none of its requests is in flight,
// the last worker out calls its `ended`, which destroys it. A mount that is unmounted lazily while
// a container still holds it is served until the kernel lets the connection go, as before.
//
// An adopted connection (a takeover) is added once its made-up FUSE_INIT has gone through
// (fuse-native.c): no request of it is read before its session is initialised (libfuse would
// answer it EIO).
//
// The workers block every signal (Node's thread takes them), as libfuse's workers do. They never
// exit: the pool lives as long as the process.
#define _GNU_SOURCE
#include "pool.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

typedef struct {
  int epfd;
  pthread_mutex_t mut;
  unsigned workers;
  uint32_t sessions;
  uint32_t requests;
  uint32_t inflight; // requests being read or served, all sessions together
  void (*enter)(unsigned i, void *arg);
  void *arg;
} pool_t;

static pool_t pool = { .epfd = -1, .mut = PTHREAD_MUTEX_INITIALIZER };

// What a worker reads a request into. The kernel's largest requests are writes of max_write bytes
// (fuse-native.c's init sets it to POOL_MAX_WRITE), plus a header; a request that does not fit
// is failed by the kernel (EIO to its caller) and the read goes on to the next one.
#define POOL_BUF_SIZE (POOL_MAX_WRITE + 4096)

static __thread char *worker_buf;

int pool_started(void) {
  return pool.epfd >= 0;
}

// libfuse's read, bounded by the worker's buffer (libfuse asks for its own bufsize, which before
// INIT is a megabyte).
static ssize_t pool_read(int fd, void *buf, size_t len, void *userdata) {
  (void) userdata;
  return read(fd, buf, len < POOL_BUF_SIZE ? len : POOL_BUF_SIZE);
}

static ssize_t pool_writev(int fd, struct iovec *iov, int count, void *userdata) {
  (void) userdata;
  return writev(fd, iov, count);
}

const struct fuse_custom_io pool_io = { .writev = pool_writev, .read = pool_read };

static void arm(pool_session_t *s, int op) {
  struct epoll_event ev = { .events = EPOLLIN | EPOLLONESHOT, .data.ptr = s };
  epoll_ctl(pool.epfd, op, s->fd, &ev);
}

// The session's connection has ended, or a read failed: out of the set. Called with the lock.
static void close_locked(pool_session_t *s) {
  if (s->closing) return;
  s->closing = 1;
  if (!s->detached) epoll_ctl(pool.epfd, EPOLL_CTL_DEL, s->fd, NULL);
}

// Called with the lock; whether the caller is to call `ended` (after unlocking).
static int last_out_locked(pool_session_t *s) {
  if (!s->closing || s->inflight > 0 || s->done) return 0;
  s->done = 1;
  pool.sessions--;
  return 1;
}

static void serve(pool_session_t *s) {
  pthread_mutex_lock(&pool.mut);
  if (s->closing || s->detached) { pthread_mutex_unlock(&pool.mut); return; }
  s->inflight++;
  pool.inflight++;
  pthread_mutex_unlock(&pool.mut);

  struct fuse_buf buf;
  memset(&buf, 0, sizeof(buf));
  buf.mem = worker_buf;
  buf.size = POOL_BUF_SIZE;
  int res = fuse_session_receive_buf(s->se, &buf);
  int live = res > 0 || res == -EAGAIN || res == -EINTR;
  if (live) arm(s, EPOLL_CTL_MOD); // after a detach, the descriptor is out of the set: ENOENT
  if (res > 0) fuse_session_process_buf(s->se, &buf);

  pthread_mutex_lock(&pool.mut);
  if (res > 0) pool.requests++;
  s->inflight--;
  pool.inflight--;
  if (!live) close_locked(s);
  int last = last_out_locked(s);
  pthread_mutex_unlock(&pool.mut);
  if (last) s->ended(s);
}

static void *worker(void *data) {
  unsigned i = (unsigned) (uintptr_t) data;
  worker_buf = malloc(POOL_BUF_SIZE);
  pool.enter(i, pool.arg);
  for (;;) {
    struct epoll_event ev;
    int n = epoll_wait(pool.epfd, &ev, 1, -1);
    if (n <= 0) continue; // EINTR: signals are blocked here, but a debugger's stop does it
    serve((pool_session_t *) ev.data.ptr);
  }
  return NULL;
}

int pool_start(unsigned workers, void (*enter)(unsigned i, void *arg), void *arg) {
  if (pool_started()) return 0;
  int epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) return -errno;
  pool.epfd = epfd;
  pool.enter = enter;
  pool.arg = arg;

  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 512 * 1024); // the ops keep a path or two on the stack
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old); // inherited by the workers
  for (unsigned i = 0; i < workers; i++) {
    pthread_t t;
    if (pthread_create(&t, &attr, worker, (void *) (uintptr_t) i) == 0) pool.workers++;
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&attr);
  return pool.workers > 0 ? 0 : -EAGAIN;
}

int pool_add(pool_session_t *s) {
  if (!pool_started()) return -EINVAL;
  s->fd = fuse_session_fd(s->se);
  int flags = fcntl(s->fd, F_GETFL);
  if (flags < 0 || fcntl(s->fd, F_SETFL, flags | O_NONBLOCK) != 0) return -errno;
  pthread_mutex_lock(&pool.mut);
  s->inflight = s->closing = s->detached = s->done = 0;
  pool.sessions++;
  arm(s, EPOLL_CTL_ADD);
  pthread_mutex_unlock(&pool.mut);
  return 0;
}

void pool_detach(pool_session_t *s) {
  pthread_mutex_lock(&pool.mut);
  if (!s->detached && !s->closing) {
    s->detached = 1;
    epoll_ctl(pool.epfd, EPOLL_CTL_DEL, s->fd, NULL);
    int flags = fcntl(s->fd, F_GETFL);
    if (flags >= 0) fcntl(s->fd, F_SETFL, flags & ~O_NONBLOCK);
  }
  pthread_mutex_unlock(&pool.mut);
}

void pool_info(uint32_t out[4]) {
  pthread_mutex_lock(&pool.mut);
  out[0] = pool.workers;
  out[1] = pool.sessions;
  out[2] = pool.requests;
  out[3] = pool.inflight;
  pthread_mutex_unlock(&pool.mut);
}
