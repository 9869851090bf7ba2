// The flip's steps through the VFS (lib/fs/flip.ts): symlink, rename, unlink and lchown on the
// daemon's own mounts, made on threads of their own that hold no descriptor.
//
// Why not libuv's pool, which makes Node's fs calls: each step is a request to this very process,
// and a process cannot finish dying while one of its threads waits in one. Killed after a worker
// of the pool (lib/native/pool.c) had read the request and before it answered, the kernel never
// ends it: the calling thread waits uninterruptibly (a FUSE request already read waits out even a
// SIGKILL). A thread of libuv's pool shares the process's descriptor table, so that one thread
// would hold every descriptor open: the mounts' /dev/fuse (without a keeper, the connection is
// then never aborted, and nothing ends the request) and the keeper's AGENT socket (the keeper never
// learns the agent is gone, and nothing answers it). The process stays, a zombie; in a container it
// is PID 1, so the container never exits and its restart never comes.
//
// These threads unshare their descriptor table at start and close their copy of it. (So they
// cannot wake Node's loop either, which takes a descriptor: a relay thread that shares the table
// hands their results to Node's thread.) Killed, the process lets go of everything but the
// waiting thread: without a keeper the connection ends (the last /dev/fuse descriptor closed)
// and the request with it; with one, the keeper answers the request (lib/keeper/keeper.c, "An
// agent gone"). The thread returns, and the process ends.
//
// The keeper knows these threads' requests by their group: each thread takes VFS_STEP_GID as its
// filesystem gid (setfsgid: this thread's alone), which every FUSE request carries. Not their pid:
// the kernel gives a request the caller's pid in the namespace of whoever mounted, and an agent
// that took a mount over from one in another container is 0 there, as the pods' readers are. As
// root the group grants nothing (its capabilities decide), and the tree gives links their own
// owner, whatever the caller's. A pod could take that gid too, to no avail: what it gets is an
// answer of EIO to its own requests made while no agent runs.
//
// fuse_native_vfs_steps(steps, cb): steps an array of [op, a, b, gid], made one after another on
// one thread, up to the first that fails: op 0 symlink(a, b) (b links to a), 1 rename(a, b),
// 2 unlink(a), 3 lchown(a, -1, gid); cb(errno, index) on Node's thread, errno 0 when all
// succeeded, else that of the step at index. A flip's symlink and rename go as one call: each step
// through Node's thread and back would cost it a turn and two thread hops more. Calls run on
// VFS_THREADS threads, started with the addon: several volumes' flips at once.

#define _GNU_SOURCE
#include "vfs-steps.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <unistd.h>

#include <napi-macros.h>

#define VFS_THREADS 4

typedef struct {
  int op;
  char *a;
  char *b;
  int gid;
} vfs_step_t;

typedef struct vfs_call {
  unsigned n;
  vfs_step_t *steps;
  int result;     // errno of the step that failed, or 0
  unsigned index; // that step
  napi_ref cb;
  struct vfs_call *next;
} vfs_call_t;

static int make_step (const vfs_step_t *s) {
  switch (s->op) {
    case 0: return symlink(s->a, s->b);
    case 1: return rename(s->a, s->b);
    case 2: return unlink(s->a);
    case 3: return lchown(s->a, (uid_t) -1, (gid_t) s->gid);
    default: errno = EINVAL; return -1;
  }
}

static pthread_mutex_t queue_mut = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t queue_cond = PTHREAD_COND_INITIALIZER;
static vfs_call_t *queue_head, *queue_tail;
static pthread_cond_t done_cond = PTHREAD_COND_INITIALIZER;
static vfs_call_t *done_head; // under queue_mut too; the relay takes them all at once
static napi_threadsafe_function done_tsfn;
static int started;
static unsigned inflight; // Node's thread only: the tsfn holds the loop while steps are under way

static void *vfs_thread (void *arg) {
  (void) arg;
  pthread_setname_np(pthread_self(), "dapifs-vfs");
  if (unshare(CLONE_FILES) == 0) close_range(0, ~0U, 0);
  setfsgid(VFS_STEP_GID);
  for (;;) {
    pthread_mutex_lock(&queue_mut);
    while (queue_head == NULL) pthread_cond_wait(&queue_cond, &queue_mut);
    vfs_call_t *c = queue_head;
    queue_head = c->next;
    if (queue_head == NULL) queue_tail = NULL;
    pthread_mutex_unlock(&queue_mut);
    c->result = 0;
    for (c->index = 0; c->index < c->n; c->index++) {
      if (make_step(&c->steps[c->index]) != 0) { c->result = errno; break; }
    }
    if (c->result == 0) c->index = 0;
    pthread_mutex_lock(&queue_mut);
    c->next = done_head;
    done_head = c;
    pthread_cond_signal(&done_cond);
    pthread_mutex_unlock(&queue_mut);
  }
  return NULL;
}

static void *relay_thread (void *arg) {
  (void) arg;
  pthread_setname_np(pthread_self(), "dapifs-vfs-done");
  for (;;) {
    pthread_mutex_lock(&queue_mut);
    while (done_head == NULL) pthread_cond_wait(&done_cond, &queue_mut);
    vfs_call_t *c = done_head;
    done_head = NULL;
    pthread_mutex_unlock(&queue_mut);
    while (c != NULL) {
      vfs_call_t *next = c->next;
      napi_call_threadsafe_function(done_tsfn, c, napi_tsfn_blocking);
      c = next;
    }
  }
  return NULL;
}

static void vfs_done (napi_env env, napi_value js_cb, void *context, void *data) {
  (void) js_cb;
  (void) context;
  vfs_call_t *c = (vfs_call_t *) data;
  if (env != NULL) {
    napi_value cb, global, argv[2];
    napi_get_reference_value(env, c->cb, &cb);
    napi_get_global(env, &global);
    napi_create_int32(env, c->result, &argv[0]);
    napi_create_uint32(env, c->index, &argv[1]);
    if (--inflight == 0) napi_unref_threadsafe_function(env, done_tsfn);
    napi_call_function(env, global, cb, 2, argv, NULL);
    napi_delete_reference(env, c->cb);
  }
  for (unsigned i = 0; i < c->n; i++) { free(c->steps[i].a); free(c->steps[i].b); }
  free(c->steps);
  free(c);
}

static char *string_arg (napi_env env, napi_value v) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) return NULL;
  char *s = malloc(len + 1);
  if (s) napi_get_value_string_utf8(env, v, s, len + 1, &len);
  return s;
}

// Starts the threads: with the addon, so that a process's number of threads does not change at
// its first flip (and its descriptor table, copied by each, is small then). 0, or -1.
static int start (napi_env env) {
  napi_value name;
  napi_create_string_utf8(env, "dapifs vfs step", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, NULL, NULL, name, 0, 1, NULL, NULL, NULL, vfs_done, &done_tsfn) != napi_ok) return -1;
  napi_unref_threadsafe_function(env, done_tsfn);
  // The relay first, then the steps' threads; without the relay and one of them, nothing.
  for (int i = 0; i <= VFS_THREADS; i++) {
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int err = pthread_create(&t, &attr, i == 0 ? relay_thread : vfs_thread, NULL);
    pthread_attr_destroy(&attr);
    if (err != 0 && i <= 1) return -1; // the threads started wait for nothing, for good
  }
  started = 1;
  return 0;
}

static NAPI_METHOD(fuse_native_vfs_steps) {
  NAPI_ARGV(2)
  if (!started) {
    napi_throw_error(env, NULL, "the VFS step threads could not start");
    return NULL;
  }
  uint32_t n = 0;
  napi_get_array_length(env, argv[0], &n);
  vfs_call_t *c = calloc(1, sizeof(vfs_call_t));
  c->n = n;
  c->steps = calloc(n ? n : 1, sizeof(vfs_step_t));
  for (uint32_t i = 0; i < n; i++) {
    napi_value step, v;
    napi_get_element(env, argv[0], i, &step);
    napi_get_element(env, step, 0, &v);
    napi_get_value_int32(env, v, &c->steps[i].op);
    napi_get_element(env, step, 1, &v);
    c->steps[i].a = string_arg(env, v);
    napi_get_element(env, step, 2, &v);
    c->steps[i].b = string_arg(env, v);
    napi_get_element(env, step, 3, &v);
    napi_get_value_int32(env, v, &c->steps[i].gid);
  }
  napi_create_reference(env, argv[1], 1, &c->cb);
  if (inflight++ == 0) napi_ref_threadsafe_function(env, done_tsfn);
  pthread_mutex_lock(&queue_mut);
  if (queue_tail) queue_tail->next = c; else queue_head = c;
  queue_tail = c;
  pthread_cond_signal(&queue_cond);
  pthread_mutex_unlock(&queue_mut);
  return NULL;
}

void vfs_steps_export (napi_env env, napi_value exports) {
  start(env);
  NAPI_EXPORT_FUNCTION(fuse_native_vfs_steps)
}
