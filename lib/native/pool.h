// The shared worker pool: a few threads that serve every mount's /dev/fuse, in place of a libfuse
// loop (and its threads) per mount. pool.c explains how; native-notes/README.md (Threading) why.
#ifndef DAPIFS_POOL_H
#define DAPIFS_POOL_H

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <stdint.h>

typedef struct pool_session_s pool_session_t;

// The largest write the kernel is to send (init sets conn->max_write to it): what a worker's
// buffer holds, with the request's header. dapifs is read-only: writes only need to arrive whole
// to be refused with EROFS.
#define POOL_MAX_WRITE (128 * 1024)

// The session's I/O (fuse_session_custom_io): reads bounded by the worker's buffer.
extern const struct fuse_custom_io pool_io;

// One session served by the pool, embedded in the mount's own struct. The mount fills `se` and
// `ended`; the rest is the pool's (guarded by its lock). An adopted connection is added once its
// made-up FUSE_INIT went through (fuse-native.c, synth_init).
struct pool_session_s {
  struct fuse_session *se;
  // Run on a worker once the connection has ended (unmounted, aborted) and no request of it is
  // in flight any more: the session is the mount's to destroy.
  void (*ended)(pool_session_t *s);

  int fd;          // fuse_session_fd(se), non-blocking while served
  int inflight;    // requests of it being read or served
  int closing;     // its connection ended: out of the epoll set, read no more
  int detached;    // pool_detach: out of the epoll set, left to the next process
  int done;        // `ended` has been called (or is being)
};

// Starts the pool's `workers` threads once (later calls change nothing and return 0): each runs
// `enter(i, arg)` first, on its own thread. 0, or -errno.
int pool_start(unsigned workers, void (*enter)(unsigned i, void *arg), void *arg);

// Whether the pool has been started.
int pool_started(void);

// Serves a session from now on: its fd made non-blocking, its requests read by whichever worker
// is free. 0, or -errno.
int pool_add(pool_session_t *s);

// Stops reading a session's requests and gives its fd back its blocking mode, so that the next
// process (the keeper's) finds the connection as a libfuse loop expects it; requests already read
// are still answered. For a process that is leaving: the session is not destroyed.
void pool_detach(pool_session_t *s);

// [workers, sessions served, requests read so far, requests in flight now].
void pool_info(uint32_t out[4]);

#endif
