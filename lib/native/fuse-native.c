// The native layer's addon: fuse-native 2.2.6's addon, ported from libfuse 2's high-level API to
// libfuse 3's low-level one, and fixed. fuse-native is MIT-licensed (LICENSE.fuse-native, beside
// this file); what we changed and added is Apache-2.0, as the rest of dapifs. build.mjs builds
// it and puts it where fuse-native's index.js loads its addon from, so that fuse-native's JS, as
// published, drives it; fuse.ts, a subclass of its Fuse, passes what the port adds.
// native-notes/README.md says why, with the measurements; scripts/native-diff.sh prints what
// differs from fuse-native's own fuse-native.c.
//
// A request's way through, in five steps:
// 1. A worker of the shared pool (pool.c: a few threads for every mount of the process) reads a
//    request from a mount's /dev/fuse, and has libfuse call our low-level op for it (ll_lookup,
//    ll_getattr, ...) with node ids.
// 2. The op resolves the ids to paths in the mount's node table (node-table.h) and calls
//    fuse-native's path handler (fuse_native_getattr, ...: FUSE_METHOD), as libfuse 2's high-level
//    API called it.
// 3. The handler puts the request in the worker's thread-locals, with the mount it is for, wakes
//    Node's thread (uv_async_send) and waits on the worker's semaphore.
// 4. On Node's thread, fuse_native_dispatch calls fuse-native's JS handler, which calls the ops
//    (lib/fs/mount.ts), and the answer comes back through fuse_native_signal_<op>, which posts the
//    semaphore.
// 5. The op replies to libfuse: a lookup with the node id that JS's stat gives (nt_ref).
//
// What the port changes or adds, beyond the API it sits on:
// - libfuse 3 (Debian's libfuse3, 3.14; headers from libfuse3-dev, found with pkg-config), on its
//   low-level API: fuse_session_new + fuse_session_mount, and the session served by the shared
//   pool (pool.c) instead of a loop of its own; the thin ll_* ops keep fuse-native's JS API
//   path-based. getattr and setattr route to
//   fgetattr and ftruncate when given a file, rename refuses flags, readdir serves windows of the
//   whole listing JS gave (kept per opendir), init sets the capabilities.
// - Node ids are what JS says each object is: the `ino` of its stat (up to 2^53 - 1, so stats
//   have a 19th slot, the high word), so that a process taking a mount over can answer the ids
//   the kernel holds (node-table.h).
// - Options: fuse-native's one -o string. The high-level API's library options are parsed here
//   (entry_timeout, attr_timeout, negative_timeout; kernel_cache: keep_cache on opens; others
//   ignored), the rest (allow_other, fsname=, subtype=, noatime, debug...) go to
//   fuse_session_new (parse_options).
// - fuse_native_mount's 8th argument, from fuse.ts: [workers, 0, cacheSymlinks, noOpen].
//   - cacheSymlinks: FUSE_CAP_CACHE_SYMLINKS, so the kernel keeps symlink targets in its page
//     cache and a warm path walk through `labels -> ..data/labels` asks the daemon nothing.
//   - noOpen: with no JS open handler, open answers ENOSYS here; the kernel then stops sending
//     open and release (FUSE_NO_OPEN_SUPPORT), and kept pages serve reads.
//   - workers: the size of the shared pool, set by the first mount of the process.
//   Atomic O_TRUNC is turned off (with no opens, O_TRUNC would be dropped silently), and
//   max_write is the pool's (pool.h).
// - One set of thread-locals per worker of the pool (a JS buffer pinned by a reference, and a
//   uv_async handle on Node's loop), made on Node's thread when the pool starts, and each request
//   says which mount it is for. fuse-native set them up lazily for each new libfuse worker of each
//   mount, and never freed them (`pthread_key_create(..., NULL); // TODO: add destructor`).
// - When a mount's connection ends, the pool's last worker out destroys its session
//   (session_ended), and Node's thread lets go of the JS objects the mount held (fuse-native
//   never did: each unmounted Fuse, its ops and what they hold stayed reachable for good).
// - fuse_native_detach(thread): the pool stops reading a mount's requests (the process is
//   leaving it to the keeper and the next process).
// - fuse_native_pool_info(): [workers, sessions served, requests read, requests in flight].
// - fuse_native_invalidate_root_entry(thread, name, cb): FUSE_NOTIFY_INVAL_ENTRY for a name in the
//   mount's root, written from libuv's thread pool. The kernel keeps the entries it has looked up
//   until memory runs short, and the node table keeps a node for each; dapifs calls this for
//   each generation directory it drops, so both are freed.
// - fuse_native_may_hold_absent(thread, name): whether the kernel may hold a root name as absent
//   (absent-names.c), for a flip to tell it otherwise only if so.
// - fuse_native_invalidate_root_listing(thread, cb): FUSE_NOTIFY_INVAL_INODE for the root, the
//   same way: the kernel drops the root's attributes and the listing it keeps (ll_opendir), after
//   the root changed inside the daemon.
// - Restarts (native-notes, Restarts). With an adoptFd (fuse_native_mount's 9th argument: fuse.ts's
//   `adopt`), the mount takes over the live connection of a /dev/fuse fd whose server died: no
//   mount, stat or unmount of mnt; fuse_session_mount(se, "/dev/fd/N"); the node table pre-filled
//   with the 10th, `known` [path, ino] pairs (kept until unmount); FUSE_NOTIFY_RESEND written
//   (kernel 6.9+), so that requests the dead server had read are queued again; and a made-up
//   FUSE_INIT fed to the session before the pool serves it (synth_init; its init calls no JS,
//   and fuse.ts calls the mount's callback at once). fuse_native_session_fd
//   gives the fd to hand to the keeper, whose client is keeper-client.c.
// - fuse_native_conn_info(thread): [capable, want, resend] after init.
// - fuse_native_vfs_steps(steps, cb): a flip's symlinks, renames, unlinks or lchowns on the
//   daemon's own mount, one after another on a thread that holds no descriptor (vfs-steps.c).
// - fuse-native's utimens passed atime as mtime too.
// The addon exports `dapifs_native`, so that dapifs can tell it from fuse-native's prebuilt one.

#define FUSE_USE_VERSION 312

#include <uv.h>
#include <node_api.h>
#include <napi-macros.h>

#include <string.h>
#include <stdio.h>
#include <stdlib.h>
#include <assert.h>

#include <fuse.h>
#include <fuse_opt.h>
#include <fuse_common.h>
#include <fuse_lowlevel.h>

#include <unistd.h>
#include <limits.h>
#include <errno.h>
#include <sys/wait.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <fcntl.h>
#include <linux/fuse.h>

#include "keeper-client.h"
#include "vfs-steps.h"
#include "node-table.h"
#include "absent-names.h"
#include "pool.h"

_Static_assert(NT_ROOT_ID == FUSE_ROOT_ID, "the node table's root is the kernel's");

#ifndef FUSE_NOTIFY_RESEND
#define FUSE_NOTIFY_RESEND 7 // kernel 6.9+, protocol 7.40
#endif

static int IS_ARRAY_BUFFER_DETACH_SUPPORTED = 0;

napi_status napi_detach_arraybuffer(napi_env env, napi_value buf);

#define FUSE_NATIVE_CALLBACK(fn, blk)\
  napi_env env = ft->env;\
  napi_handle_scope scope;\
  napi_open_handle_scope(env, &scope);\
  napi_value ctx;\
  napi_get_reference_value(env, ft->ctx, &ctx);\
  napi_value callback;\
  napi_get_reference_value(env, fn, &callback);\
  blk\
  napi_close_handle_scope(env, scope);

#define FUSE_NATIVE_HANDLER(name, blk)\
  fuse_thread_locals_t *l = get_thread_locals();\
  l->op = op_##name;\
  l->op_fn = fuse_native_dispatch_##name;\
  blk\
  uv_async_send(&(l->async));\
  uv_sem_wait(&(l->sem));\
  return l->res;

#define FUSE_METHOD(name, callbackArgs, signalArgs, signature, callBlk, callbackBlk, signalBlk)\
  static void fuse_native_dispatch_##name (uv_async_t* handle, fuse_thread_locals_t* l, fuse_thread_t* ft) {\
    uint32_t op = op_##name;\
    FUSE_NATIVE_CALLBACK(ft->handlers[op], {\
      napi_value argv[callbackArgs + 2];\
      napi_get_reference_value(env, l->self, &(argv[0]));\
      napi_create_uint32(env, l->op, &(argv[1]));\
      callbackBlk\
      NAPI_MAKE_CALLBACK(env, NULL, ctx, callback, callbackArgs + 2, argv, NULL)\
    })\
  }\
  NAPI_METHOD(fuse_native_signal_##name) {\
    NAPI_ARGV(signalArgs + 2)\
    NAPI_ARGV_BUFFER_CAST(fuse_thread_locals_t *, l, 0);\
    NAPI_ARGV_INT32(res, 1);\
    signalBlk\
    l->res = res;\
    uv_sem_post(&(l->sem));\
    return NULL;\
  }\
  static int fuse_native_##name signature {\
    FUSE_NATIVE_HANDLER(name, callBlk)\
  }

#define FUSE_METHOD_VOID(name, callbackArgs, signalArgs, signature, callBlk, callbackBlk)\
  FUSE_METHOD(name, callbackArgs, signalArgs, signature, callBlk, callbackBlk, {})

#define FUSE_UINT64_TO_INTS_ARGV(n, pos)\
  uint32_t low##pos = n % 4294967296;\
  uint32_t high##pos = (n - low##pos) / 4294967296;\
  napi_create_uint32(env, low##pos, &(argv[pos]));\
  napi_create_uint32(env, high##pos, &(argv[pos + 1]));


// Opcodes

static const uint32_t op_init = 0;
static const uint32_t op_error = 1;
static const uint32_t op_access = 2;
static const uint32_t op_statfs = 3;
static const uint32_t op_fgetattr = 4;
static const uint32_t op_getattr = 5;
static const uint32_t op_flush = 6;
static const uint32_t op_fsync = 7;
static const uint32_t op_fsyncdir = 8;
static const uint32_t op_readdir = 9;
static const uint32_t op_truncate = 10;
static const uint32_t op_ftruncate = 11;
static const uint32_t op_utimens = 12;
static const uint32_t op_readlink = 13;
static const uint32_t op_chown = 14;
static const uint32_t op_chmod = 15;
static const uint32_t op_mknod = 16;
static const uint32_t op_setxattr = 17;
static const uint32_t op_getxattr = 18;
static const uint32_t op_listxattr = 19;
static const uint32_t op_removexattr = 20;
static const uint32_t op_open = 21;
static const uint32_t op_opendir = 22;
static const uint32_t op_read = 23;
static const uint32_t op_write = 24;
static const uint32_t op_release = 25;
static const uint32_t op_releasedir = 26;
static const uint32_t op_create = 27;
static const uint32_t op_unlink = 28;
static const uint32_t op_rename = 29;
static const uint32_t op_link = 30;
static const uint32_t op_symlink = 31;
static const uint32_t op_mkdir = 32;
static const uint32_t op_rmdir = 33;

// Data structures

typedef struct fuse_thread_s {
  napi_env env;
  napi_ref ctx;

  // Operation handlers
  napi_ref handlers[35];

  struct fuse_session *se;
  int mounted;
  // How the shared pool serves the session (pool.h); ps.se is se.
  pool_session_t ps;
  // Held while a notification is written with se, and while se is destroyed.
  pthread_mutex_t se_mut;
  // Sessions ended, for Node's thread to let go of their JS references (ended_async).
  struct fuse_thread_s *next_ended;

  // What the kernel's node ids stand for (node-table.h).
  node_table_t nodes;
  // Root names the kernel may hold as absent (absent-names.h), for the flips.
  absent_names_t absent;
  // Directory handles given out by opendir (fi->fh), for checking an fh before using it.
  pthread_mutex_t dirh_mut;
  struct fuse_native_dirh_s *dirhs;

  // Library options of the high-level API, parsed in C (fuse_session_new knows none of them)
  double entry_timeout;
  double attr_timeout;
  double negative_timeout;
  uint32_t kernel_cache;
  uint32_t implemented[35];
  // Adoption of a live /dev/fuse connection: the fd, or -1; the RESEND's result (0, or errno)
  int adopt_fd;
  int resend_res;

  // libfuse 3 settings from JS (fuse_native_mount's 8th argument)
  uint32_t cache_symlinks;
  uint32_t no_open;
  uint32_t has_fgetattr;
  uint32_t has_ftruncate;
  // What init negotiated, for JS (fuse_native_conn_info)
  uint32_t capable;
  uint32_t want;
} fuse_thread_t;

typedef struct fuse_thread_locals_s {
  napi_ref self;

  // Opcode
  uint32_t op;
  void *op_fn;

  // Payloads
  const char *path;
  const char *dest;
  char *linkname;
  struct fuse_file_info *info;
  const void *buf;
  off_t offset;
  size_t len;
  mode_t mode;
  dev_t dev;
  uid_t uid;
  gid_t gid;
  size_t atime;
  size_t mtime;
  int32_t res;

  // Extended attributes
  const char *name;
  const char *value;
  char *list;
  size_t size;
  uint32_t position;
  int flags;

  // Stat + Statfs
  struct stat *stat;
  struct statvfs *statvfs;

  // Readdir
  fuse_fill_dir_t readdir_filler;

  // Internal bookkeeping: the mount of the request in hand, and the way to Node's thread and back
  fuse_thread_t *fuse;
  uv_sem_t sem;
  uv_async_t async;
} fuse_thread_locals_t;

// The mount whose request this thread is serving: each low-level op sets it (LL_BEGIN) from
// fuse_req_userdata before calling a path handler.
static __thread fuse_thread_t *current_ft;
// This worker's thread-locals (pool_enter).
static __thread fuse_thread_locals_t *my_locals;

// Tells dapifs that this addon is the native layer's (lib/native), not fuse-native's prebuilt one.
static const uint32_t dapifs_native = 1;
static fuse_thread_locals_t* get_thread_locals();

// Helpers

static uint64_t uint32s_to_uint64 (uint32_t **ints) {
  uint64_t low = *((*ints)++);
  uint64_t high = *((*ints)++);
  return high * 4294967296 + low;
}

static void uint32s_to_timespec (struct timespec* ts, uint32_t** ints) {
  uint64_t ms = uint32s_to_uint64(ints);
  ts->tv_sec = ms / 1000;
  ts->tv_nsec = (ms % 1000) * 1000000;
}

static uint64_t timespec_to_uint64 (const struct timespec* ts) {
  uint64_t ms = (ts->tv_sec * 1000) + (ts->tv_nsec / 1000000);
  return ms;
}

// A stat array from JS, `count` uint32s: 18 as fuse-native's getStatArray makes it, or 19 as
// fuse.ts's statArray does, with the inode number's high word at 18 (its low word is at 7), so
// that JS can give 53-bit node ids.
static void populate_stat (uint32_t *ints, size_t count, struct stat* stat) {
  uint32_t *base = ints;
  stat->st_mode = *ints++;
  stat->st_uid = *ints++;
  stat->st_gid = *ints++;
  stat->st_size = uint32s_to_uint64(&ints);
  stat->st_dev = *ints++;
  stat->st_nlink = *ints++;
  stat->st_ino = *ints++;
  stat->st_rdev = *ints++;
  stat->st_blksize = *ints++;
  stat->st_blocks = uint32s_to_uint64(&ints);
#ifdef __APPLE__
  uint32s_to_timespec(&stat->st_atimespec, &ints);
  uint32s_to_timespec(&stat->st_mtimespec, &ints);
  uint32s_to_timespec(&stat->st_ctimespec, &ints);
#else
  uint32s_to_timespec(&stat->st_atim, &ints);
  uint32s_to_timespec(&stat->st_mtim, &ints);
  uint32s_to_timespec(&stat->st_ctim, &ints);
#endif
  if (count > 18) stat->st_ino = ((uint64_t) base[18] << 32) | base[7];
}

static void populate_statvfs (uint32_t *ints, struct statvfs* statvfs) {
  statvfs->f_bsize = *ints++;
  statvfs->f_frsize = *ints++;
  statvfs->f_blocks = *ints++;
  statvfs->f_bfree = *ints++;
  statvfs->f_bavail = *ints++;
  statvfs->f_files = *ints++;
  statvfs->f_ffree = *ints++;
  statvfs->f_favail = *ints++;
  statvfs->f_fsid = *ints++;
  statvfs->f_flag = *ints++;
  statvfs->f_namemax = *ints++;
}

// Methods

FUSE_METHOD(statfs, 1, 1, (const char * path, struct statvfs *statvfs), {
  l->path = path;
  l->statvfs = statvfs;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
}, {
  NAPI_ARGV_BUFFER_CAST(uint32_t*, ints, 2)
  populate_statvfs(ints, l->statvfs);
})

FUSE_METHOD(getattr, 1, 1, (const char *path, struct stat *stat), {
  l->path = path;
  l->stat = stat;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
}, {
  NAPI_ARGV_BUFFER_CAST(uint32_t*, ints, 2)
  populate_stat(ints, ints_len / sizeof(uint32_t), l->stat);
})

FUSE_METHOD(fgetattr, 2, 1, (const char *path, struct stat *stat, struct fuse_file_info *info), {
  l->path = path;
  l->stat = stat;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  if (l->info != NULL) {
    napi_create_uint32(env, l->info->fh, &(argv[3]));
  } else {
    napi_create_uint32(env, 0, &(argv[3]));
  }
}, {
  NAPI_ARGV_BUFFER_CAST(uint32_t*, ints, 2)
  populate_stat(ints, ints_len / sizeof(uint32_t), l->stat);
})

FUSE_METHOD_VOID(access, 2, 0, (const char *path, int mode), {
  l->path = path;
  l->mode = mode;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->mode, &(argv[3]));
})

FUSE_METHOD(open, 2, 1, (const char *path, struct fuse_file_info *info), {
  l->path = path;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  if (l->info != NULL) {
    napi_create_uint32(env, l->info->flags, &(argv[3]));
  } else {
    napi_create_uint32(env, 0, &(argv[3]));
  }
}, {
  NAPI_ARGV_INT32(fd, 2)
  if (fd != 0) {
    l->info->fh = fd;
  }
})

FUSE_METHOD(opendir, 3, 1, (const char *path, struct fuse_file_info *info), {
  l->path = path;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  if (l->info != NULL) {
    napi_create_uint32(env, l->info->fh, &(argv[3]));
    napi_create_uint32(env, l->info->flags, &(argv[4]));
  } else {
    napi_create_uint32(env, 0, &(argv[3]));
    napi_create_uint32(env, 0, &(argv[4]));
  }
}, {
  NAPI_ARGV_INT32(fd, 2)
  if (fd != 0) {
    l->info->fh = fd;
  }
})

FUSE_METHOD(create, 2, 1, (const char *path, mode_t mode, struct fuse_file_info *info), {
  l->path = path;
  l->mode = mode;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->mode, &(argv[3]));
}, {
  NAPI_ARGV_INT32(fd, 2)
  if (fd != 0) {
    l->info->fh = fd;
  }
})

FUSE_METHOD_VOID(utimens, 5, 0, (const char *path, const struct timespec tv[2]), {
  l->path = path;
  l->atime = timespec_to_uint64(&tv[0]);
  l->mtime = timespec_to_uint64(&tv[1]);
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  FUSE_UINT64_TO_INTS_ARGV(l->atime, 3)
  FUSE_UINT64_TO_INTS_ARGV(l->mtime, 5)
})

FUSE_METHOD_VOID(release, 2, 0, (const char *path, struct fuse_file_info *info), {
  l->path = path;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  if (l->info != NULL) {
    napi_create_uint32(env, l->info->fh, &(argv[3]));
  } else {
    napi_create_uint32(env, 0, &(argv[3]));
  }
})

FUSE_METHOD_VOID(releasedir, 2, 0, (const char *path, struct fuse_file_info *info), {
  l->path = path;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  if (l->info != NULL) {
    napi_create_uint32(env, l->info->fh, &(argv[3]));
  } else {
    napi_create_uint32(env, 0, &(argv[3]));
  }
})

FUSE_METHOD(read, 6, 2, (const char *path, char *buf, size_t len, off_t offset, struct fuse_file_info *info), {
  l->path = path;
  l->buf = buf;
  l->len = len;
  l->offset = offset;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->info->fh, &(argv[3]));
  napi_create_external_buffer(env, l->len, (char *) l->buf, NULL, NULL, &(argv[4]));
  napi_create_uint32(env, l->len, &(argv[5]));
  FUSE_UINT64_TO_INTS_ARGV(l->offset, 6)
}, {
  if (IS_ARRAY_BUFFER_DETACH_SUPPORTED == 1) assert(napi_detach_arraybuffer(env, argv[3]) == napi_ok);
})

FUSE_METHOD(write, 6, 2, (const char *path, const char *buf, size_t len, off_t offset, struct fuse_file_info *info), {
  l->path = path;
  l->buf = buf;
  l->len = len;
  l->offset = offset;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->info->fh, &(argv[3]));
  napi_create_external_buffer(env, l->len, (char *) l->buf, NULL, NULL, &(argv[4]));
  napi_create_uint32(env, l->len, &(argv[5]));
  FUSE_UINT64_TO_INTS_ARGV(l->offset, 6)
}, {
  if (IS_ARRAY_BUFFER_DETACH_SUPPORTED == 1) assert(napi_detach_arraybuffer(env, argv[3]) == napi_ok);
})

FUSE_METHOD(readdir, 1, 2, (const char *path, void *buf, fuse_fill_dir_t filler, off_t offset, struct fuse_file_info *info, enum fuse_readdir_flags rflags), {
  l->buf = buf;
  l->path = path;
  l->offset = offset;
  l->info = info;
  l->readdir_filler = filler;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
}, {
  uint32_t stats_length;
  uint32_t names_length;
  napi_get_array_length(env, argv[3], &stats_length);
  napi_get_array_length(env, argv[2], &names_length);

  napi_value raw_names = argv[2];
  napi_value raw_stats = argv[3];

  if (names_length != stats_length) {
    NAPI_FOR_EACH(raw_names, raw_name) {
      NAPI_UTF8(name, 1024, raw_name)
      int err = l->readdir_filler((char *) l->buf, name, NULL, 0, 0);
      if (err == 1) {
        break;
      }
    }
  } else {
    NAPI_FOR_EACH(raw_names, raw_name) {
      NAPI_UTF8(name, 1024, raw_name)
      napi_value raw_stat;
      napi_get_element(env, raw_stats, i, &raw_stat);

      NAPI_BUFFER_CAST(uint32_t*, stats_array, raw_stat);
      struct stat st;
      populate_stat(stats_array, stats_array_len / sizeof(uint32_t), &st);

      // TODO: It turns out readdirplus likely won't work with FUSE 29...
      // Metadata caching between readdir/getattr will be enabled when we upgrade fuse-shared-library
      int err = l->readdir_filler((char *) l->buf, name, (struct stat *) &st, 0, 0);
      if (err == 1) {
        break;
      }
    }
  }
})

#ifdef __APPLE__

FUSE_METHOD(setxattr, 5, 1, (const char *path, const char *name, const char *value, size_t size, int flags, uint32_t position), {
  l->path = path;
  l->name = name;
  l->value = value;
  l->size = size;
  l->flags = flags;
  l->position = position;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_string_utf8(env, l->name, NAPI_AUTO_LENGTH, &(argv[3]));
  napi_create_external_buffer(env, l->size, (char *) l->value, NULL, NULL, &(argv[4]));
  napi_create_uint32(env, l->position, &(argv[5]));
  napi_create_uint32(env, l->flags, &(argv[6]));
}, {
  if (IS_ARRAY_BUFFER_DETACH_SUPPORTED == 1) assert(napi_detach_arraybuffer(env, argv[2]) == napi_ok);
})

FUSE_METHOD(getxattr, 4, 1, (const char *path, const char *name, char *value, size_t size, uint32_t position), {
  l->path = path;
  l->name = name;
  l->value = value;
  l->size = size;
  l->position = position;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_string_utf8(env, l->name, NAPI_AUTO_LENGTH, &(argv[3]));
  napi_create_external_buffer(env, l->size, (char *) l->value, NULL, NULL, &(argv[4]));
  napi_create_uint32(env, l->position, &(argv[5]));
}, {
  if (IS_ARRAY_BUFFER_DETACH_SUPPORTED == 1) assert(napi_detach_arraybuffer(env, argv[2]) == napi_ok);
})

#else

FUSE_METHOD(setxattr, 5, 1, (const char *path, const char *name, const char *value, size_t size, int flags), {
  l->path = path;
  l->name = name;
  l->value = value;
  l->size = size;
  l->flags = flags;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_string_utf8(env, l->name, NAPI_AUTO_LENGTH, &(argv[3]));
  napi_create_external_buffer(env, l->size, (char *) l->value, NULL, NULL, &(argv[4]));
  napi_create_uint32(env, 0, &(argv[5])); // normalize apis between mac and linux
  napi_create_uint32(env, l->flags, &(argv[6]));
}, {
  if (IS_ARRAY_BUFFER_DETACH_SUPPORTED == 1) assert(napi_detach_arraybuffer(env, argv[2]) == napi_ok);
})

FUSE_METHOD(getxattr, 4, 1, (const char *path, const char *name, char *value, size_t size), {
  l->path = path;
  l->name = name;
  l->value = value;
  l->size = size;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_string_utf8(env, l->name, NAPI_AUTO_LENGTH, &(argv[3]));
  napi_create_external_buffer(env, l->size, (char *) l->value, NULL, NULL, &(argv[4]));
  napi_create_uint32(env, 0, &(argv[5]));
}, {
  if (IS_ARRAY_BUFFER_DETACH_SUPPORTED == 1) assert(napi_detach_arraybuffer(env, argv[2]) == napi_ok);
})

#endif

FUSE_METHOD(listxattr, 2, 1, (const char *path, char *list, size_t size), {
  l->path = path;
  l->list = list;
  l->size = size;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_external_buffer(env, l->size, l->list, NULL, NULL, &(argv[3]));
}, {
  if (IS_ARRAY_BUFFER_DETACH_SUPPORTED == 1) assert(napi_detach_arraybuffer(env, argv[2]) == napi_ok);
})

FUSE_METHOD_VOID(removexattr, 2, 0, (const char *path, const char *name), {
  l->path = path;
  l->name = name;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_string_utf8(env, l->name, NAPI_AUTO_LENGTH, &(argv[3]));
})

FUSE_METHOD_VOID(flush, 2, 0, (const char *path, struct fuse_file_info *info), {
  l->path = path;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  if (l->info != NULL) {
    napi_create_uint32(env, l->info->fh, &(argv[3]));
  } else {
    napi_create_uint32(env, 0, &(argv[3]));
  }
})

FUSE_METHOD_VOID(fsync, 3, 0, (const char *path, int datasync, struct fuse_file_info *info), {
  l->path = path;
  l->mode = datasync;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->mode, &(argv[3]));
  if (l->info != NULL) {
    napi_create_uint32(env, l->info->fh, &(argv[4]));
  } else {
    napi_create_uint32(env, 0, &(argv[4]));
  }
})

FUSE_METHOD_VOID(fsyncdir, 3, 0, (const char *path, int datasync, struct fuse_file_info *info), {
  l->path = path;
  l->mode = datasync;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->mode, &(argv[3]));
  if (l->info != NULL) {
    napi_create_uint32(env, l->info->fh, &(argv[4]));
  } else {
    napi_create_uint32(env, 0, &(argv[4]));
  }
})


FUSE_METHOD_VOID(truncate, 3, 0, (const char *path, off_t size), {
  l->path = path;
  l->offset = size;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  FUSE_UINT64_TO_INTS_ARGV(l->offset, 3)
})

FUSE_METHOD_VOID(ftruncate, 4, 0, (const char *path, off_t size, struct fuse_file_info *info), {
  l->path = path;
  l->offset = size;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  if (l->info != NULL) {
    napi_create_uint32(env, l->info->fh, &(argv[3]));
  } else {
    napi_create_uint32(env, 0, &(argv[3]));
  }
  FUSE_UINT64_TO_INTS_ARGV(l->offset, 4)
})

FUSE_METHOD(readlink, 1, 1, (const char *path, char *linkname, size_t len), {
  l->path = path;
  l->linkname = linkname;
  l->len = len;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
}, {
  NAPI_ARGV_UTF8(linkname, l->len, 2)
  strncpy(l->linkname, linkname, l->len);
})

FUSE_METHOD_VOID(chown, 3, 0, (const char *path, uid_t uid, gid_t gid), {
  l->path = path;
  l->uid = uid;
  l->gid = gid;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->uid, &(argv[3]));
  napi_create_uint32(env, l->gid, &(argv[4]));
})

FUSE_METHOD_VOID(chmod, 2, 0, (const char *path, mode_t mode), {
  l->path = path;
  l->mode = mode;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->mode, &(argv[3]));
})

FUSE_METHOD_VOID(mknod, 3, 0, (const char *path, mode_t mode, dev_t dev), {
  l->path = path;
  l->mode = mode;
  l->dev = dev;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->mode, &(argv[3]));
  napi_create_uint32(env, l->dev, &(argv[4]));
})

FUSE_METHOD_VOID(unlink, 1, 0, (const char *path), {
  l->path = path;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
})

FUSE_METHOD_VOID(rename, 2, 0, (const char *path, const char *dest), {
  l->path = path;
  l->dest = dest;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_string_utf8(env, l->dest, NAPI_AUTO_LENGTH, &(argv[3]));
})

FUSE_METHOD_VOID(link, 2, 0, (const char *path, const char *dest), {
  l->path = path;
  l->dest = dest;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_string_utf8(env, l->dest, NAPI_AUTO_LENGTH, &(argv[3]));
})

FUSE_METHOD_VOID(symlink, 2, 0, (const char *path, const char *dest), {
  l->path = path;
  l->dest = dest;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_string_utf8(env, l->dest, NAPI_AUTO_LENGTH, &(argv[3]));
})

FUSE_METHOD_VOID(mkdir, 2, 0, (const char *path, mode_t mode), {
  l->path = path;
  l->mode = mode;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->mode, &(argv[3]));
})

FUSE_METHOD_VOID(rmdir, 1, 0, (const char *path), {
  l->path = path;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
})

static void fuse_native_dispatch_init (uv_async_t* handle, fuse_thread_locals_t* l, fuse_thread_t* ft) {\
  FUSE_NATIVE_CALLBACK(ft->handlers[op_init], {
    napi_value argv[2];

    napi_get_reference_value(env, l->self, &(argv[0]));
    napi_create_uint32(env, l->op, &(argv[1]));

    NAPI_MAKE_CALLBACK(env, NULL, ctx, callback, 2, argv, NULL);
  })
}

NAPI_METHOD(fuse_native_signal_init) {
  NAPI_ARGV(2)
  NAPI_ARGV_BUFFER_CAST(fuse_thread_locals_t *, l, 0);
  NAPI_ARGV_INT32(res, 1);
  l->res = res;
  uv_sem_post(&(l->sem));
  return NULL;
}

// The capabilities the port wants (init, for both a fresh mount and an adopted connection).
static void want_capabilities (fuse_thread_t *ft, struct fuse_conn_info *conn) {
  // The kernel keeps symlink targets in the page cache: a warm path walk through a symlink
  // costs no readlink. A link changed inside the daemon is a new node (its id is its target), and
  // fuse_native_invalidate_root_entry drops the kernel's entry for the old one.
  if (ft->cache_symlinks && (conn->capable & FUSE_CAP_CACHE_SYMLINKS)) conn->want |= FUSE_CAP_CACHE_SYMLINKS;
  else conn->want &= ~FUSE_CAP_CACHE_SYMLINKS;
  // libfuse 3 turns on atomic O_TRUNC, which leaves truncation to FUSE_OPEN; with no open sent
  // (noOpen) O_TRUNC would then be dropped silently. Off, the kernel truncates with setattr first,
  // and a read-only filesystem's answer to that fails the open.
  conn->want &= ~FUSE_CAP_ATOMIC_O_TRUNC;
  // FUSE_CAP_NO_OPEN_SUPPORT is only reported by the kernel (want has no effect): with it, an
  // ENOSYS answer to open makes the kernel stop sending open and release for good.
  ft->capable = conn->capable;
  ft->want = conn->want;
}

static void * fuse_native_init (struct fuse_conn_info *conn, struct fuse_config *cfg) {
  fuse_thread_locals_t *l = get_thread_locals();
  want_capabilities(l->fuse, conn);

  l->op = op_init;
  l->op_fn = fuse_native_dispatch_init;

  uv_async_send(&(l->async));
  uv_sem_wait(&(l->sem));

  return l->fuse;
}

// The low-level API (fuse_session_*): libfuse's requests come by node id. Node ids are chosen by
// JS (the `ino` of a getattr stat), so that a successor process can answer the ids the kernel
// already holds (Restarts, in dapifs's native-notes). The thin ll_* ops below resolve ids to
// paths in the mount's node table (node-table.h), call the path handlers above, and reply.

static char *join_path (const char *parent, const char *name) {
  size_t pl = strlen(parent);
  char *p = malloc(pl + strlen(name) + 2);
  if (pl == 1) { p[0] = '/'; strcpy(p + 1, name); }
  else { memcpy(p, parent, pl); p[pl] = '/'; strcpy(p + pl + 1, name); }
  return p;
}

// Each op: the mount (for get_thread_locals), and the path of `ino`, or ESTALE.
#define LL_BEGIN(req) \
  fuse_thread_t *ft = (fuse_thread_t *) fuse_req_userdata(req);\
  current_ft = ft;

#define LL_PATH(req, ino, var) \
  char *var = NULL;\
  { int _e = nt_path(&ft->nodes, (ino), &var); if (_e < 0) { fuse_reply_err(req, -_e); return; } }

#define LL_CHILD(req, parent, name, var) \
  char *var = NULL;\
  { char *_pp = NULL; int _e = nt_path(&ft->nodes, (parent), &_pp); if (_e < 0) { fuse_reply_err(req, -_e); return; }\
    var = join_path(_pp, (name)); free(_pp); }

#define HAS(op) (ft->implemented[op_##op])

// Replies the entry for `path` (after a lookup, or a create of any kind): getattr, then the id
// from the stat, counted as one more lookup. 1 if it replied that the name is absent, for
// negative_timeout (a negative entry); else 0.
static int ll_reply_entry (fuse_req_t req, fuse_thread_t *ft, const char *path, struct fuse_file_info *fi) {
  struct stat st;
  memset(&st, 0, sizeof(st));
  int res = fuse_native_getattr(path, &st);
  if (res < 0) {
    if (res == -ENOENT && ft->negative_timeout > 0 && fi == NULL) {
      struct fuse_entry_param e;
      memset(&e, 0, sizeof(e));
      e.entry_timeout = ft->negative_timeout;
      fuse_reply_entry(req, &e);
      return 1;
    }
    fuse_reply_err(req, -res);
    return 0;
  }
  uint64_t id = nt_ref(&ft->nodes, path, st.st_ino, 1, 0);
  struct fuse_entry_param e;
  memset(&e, 0, sizeof(e));
  e.ino = id;
  e.generation = 0;
  e.attr = st;
  e.attr.st_ino = id;
  e.attr_timeout = ft->attr_timeout;
  e.entry_timeout = ft->entry_timeout;
  int sent = fi != NULL ? fuse_reply_create(req, &e, fi) : fuse_reply_entry(req, &e);
  if (sent != 0) nt_forget(&ft->nodes, id, 1); // the request was interrupted: the kernel has no such lookup
  return 0;
}

static void ll_init (void *userdata, struct fuse_conn_info *conn) {
  fuse_thread_t *ft = (fuse_thread_t *) userdata;
  current_ft = ft;
  // What a worker's buffer holds (pool.h): larger writes would not reach us whole.
  if (conn->max_write > POOL_MAX_WRITE) conn->max_write = POOL_MAX_WRITE;
  // An adopted connection's made-up INIT (synth_init) is fed on Node's thread, in
  // fuse_native_mount, and calls no JS: the mount's callback comes from fuse.ts at once.
  if (ft->adopt_fd >= 0) want_capabilities(ft, conn);
  else fuse_native_init(conn, NULL);
}

static void ll_lookup (fuse_req_t req, fuse_ino_t parent, const char *name) {
  LL_BEGIN(req)
  LL_CHILD(req, parent, name, path)
  int root = parent == FUSE_ROOT_ID && ft->negative_timeout > 0;
  if (root) absent_asking(&ft->absent, name);
  int absent = ll_reply_entry(req, ft, path, NULL);
  if (root) absent_answered(&ft->absent, name, absent, ft->negative_timeout);
  free(path);
}

static void ll_forget (fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  fuse_thread_t *ft = (fuse_thread_t *) fuse_req_userdata(req);
  nt_forget(&ft->nodes, ino, nlookup);
  fuse_reply_none(req);
}

static void ll_forget_multi (fuse_req_t req, size_t count, struct fuse_forget_data *forgets) {
  fuse_thread_t *ft = (fuse_thread_t *) fuse_req_userdata(req);
  for (size_t i = 0; i < count; i++) nt_forget(&ft->nodes, forgets[i].ino, forgets[i].nlookup);
  fuse_reply_none(req);
}

static int ll_stat (fuse_thread_t *ft, const char *path, struct stat *st, struct fuse_file_info *fi) {
  memset(st, 0, sizeof(*st));
  if (fi != NULL && ft->has_fgetattr) return fuse_native_fgetattr(path, st, fi);
  return fuse_native_getattr(path, st);
}

static void ll_getattr (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  LL_BEGIN(req)
  LL_PATH(req, ino, path)
  struct stat st;
  int res = ll_stat(ft, path, &st, fi);
  free(path);
  if (res < 0) { fuse_reply_err(req, -res); return; }
  st.st_ino = ino;
  fuse_reply_attr(req, &st, ft->attr_timeout);
}

static void ll_setattr (fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi) {
  LL_BEGIN(req)
  LL_PATH(req, ino, path)
  int res = 0;
  if (to_set & FUSE_SET_ATTR_MODE) {
    res = HAS(chmod) ? fuse_native_chmod(path, attr->st_mode) : -ENOSYS;
  }
  if (res == 0 && (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))) {
    uid_t uid = (to_set & FUSE_SET_ATTR_UID) ? attr->st_uid : (uid_t) -1;
    gid_t gid = (to_set & FUSE_SET_ATTR_GID) ? attr->st_gid : (gid_t) -1;
    res = HAS(chown) ? fuse_native_chown(path, uid, gid) : -ENOSYS;
  }
  if (res == 0 && (to_set & FUSE_SET_ATTR_SIZE)) {
    if (fi != NULL && ft->has_ftruncate) res = fuse_native_ftruncate(path, attr->st_size, fi);
    else res = HAS(truncate) ? fuse_native_truncate(path, attr->st_size) : -ENOSYS;
  }
  if (res == 0 && (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME))) {
    struct timespec tv[2];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct stat cur;
    int have_cur = ll_stat(ft, path, &cur, fi) == 0;
    tv[0] = (to_set & FUSE_SET_ATTR_ATIME_NOW) ? now : (to_set & FUSE_SET_ATTR_ATIME) ? attr->st_atim : have_cur ? cur.st_atim : now;
    tv[1] = (to_set & FUSE_SET_ATTR_MTIME_NOW) ? now : (to_set & FUSE_SET_ATTR_MTIME) ? attr->st_mtim : have_cur ? cur.st_mtim : now;
    res = HAS(utimens) ? fuse_native_utimens(path, tv) : -ENOSYS;
  }
  if (res == 0) {
    struct stat st;
    res = ll_stat(ft, path, &st, fi);
    if (res == 0) {
      st.st_ino = ino;
      fuse_reply_attr(req, &st, ft->attr_timeout);
    }
  }
  free(path);
  if (res < 0) fuse_reply_err(req, -res);
}

static void ll_readlink (fuse_req_t req, fuse_ino_t ino) {
  LL_BEGIN(req)
  LL_PATH(req, ino, path)
  char link[PATH_MAX + 1];
  memset(link, 0, sizeof(link));
  int res = fuse_native_readlink(path, link, PATH_MAX);
  free(path);
  if (res < 0) { fuse_reply_err(req, -res); return; }
  link[PATH_MAX] = 0;
  fuse_reply_readlink(req, link);
}

static void ll_mknod (fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev) {
  LL_BEGIN(req)
  LL_CHILD(req, parent, name, path)
  int res = fuse_native_mknod(path, mode, rdev);
  if (res < 0) fuse_reply_err(req, -res);
  else ll_reply_entry(req, ft, path, NULL);
  free(path);
}

static void ll_mkdir (fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode) {
  LL_BEGIN(req)
  LL_CHILD(req, parent, name, path)
  int res = fuse_native_mkdir(path, mode);
  if (res < 0) fuse_reply_err(req, -res);
  else ll_reply_entry(req, ft, path, NULL);
  free(path);
}

static void ll_symlink (fuse_req_t req, const char *link, fuse_ino_t parent, const char *name) {
  LL_BEGIN(req)
  LL_CHILD(req, parent, name, path)
  int res = fuse_native_symlink(link, path);
  if (res < 0) fuse_reply_err(req, -res);
  else ll_reply_entry(req, ft, path, NULL);
  free(path);
}

static void ll_link (fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname) {
  LL_BEGIN(req)
  LL_PATH(req, ino, from)
  char *path = NULL;
  {
    char *pp = NULL;
    int e = nt_path(&ft->nodes, newparent, &pp);
    if (e < 0) { free(from); fuse_reply_err(req, -e); return; }
    path = join_path(pp, newname);
    free(pp);
  }
  int res = fuse_native_link(from, path);
  if (res < 0) fuse_reply_err(req, -res);
  else ll_reply_entry(req, ft, path, NULL);
  free(from);
  free(path);
}

static void ll_unlink (fuse_req_t req, fuse_ino_t parent, const char *name) {
  LL_BEGIN(req)
  LL_CHILD(req, parent, name, path)
  int res = fuse_native_unlink(path);
  if (res == 0) nt_gone(&ft->nodes, path);
  free(path);
  fuse_reply_err(req, -res);
}

static void ll_rmdir (fuse_req_t req, fuse_ino_t parent, const char *name) {
  LL_BEGIN(req)
  LL_CHILD(req, parent, name, path)
  int res = fuse_native_rmdir(path);
  if (res == 0) nt_gone(&ft->nodes, path);
  free(path);
  fuse_reply_err(req, -res);
}

static void ll_rename (fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent, const char *newname, unsigned int flags) {
  LL_BEGIN(req)
  // RENAME_NOREPLACE / RENAME_EXCHANGE: fuse-native's rename(src, dest, cb) cannot express them.
  if (flags != 0) { fuse_reply_err(req, EINVAL); return; }
  LL_CHILD(req, parent, name, from)
  char *to = NULL;
  {
    char *pp = NULL;
    int e = nt_path(&ft->nodes, newparent, &pp);
    if (e < 0) { free(from); fuse_reply_err(req, -e); return; }
    to = join_path(pp, newname);
    free(pp);
  }
  int res = fuse_native_rename(from, to);
  // Before the reply, as libfuse's high-level API does: a request on the replaced node that
  // comes meanwhile gets ESTALE, and the kernel walks the path again.
  if (res == 0) nt_rename(&ft->nodes, from, to);
  free(from);
  free(to);
  fuse_reply_err(req, -res);
}

static void ll_open (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  LL_BEGIN(req)
  if (!HAS(open) && ft->no_open) {
    // noOpen: the kernel takes ENOSYS as "opens always succeed" and stops sending open/release.
    fuse_reply_err(req, ENOSYS);
    return;
  }
  LL_PATH(req, ino, path)
  int res = HAS(open) ? fuse_native_open(path, fi) : 0;
  if (res < 0) { free(path); fuse_reply_err(req, -res); return; }
  if (ft->kernel_cache) fi->keep_cache = 1;
  if (fuse_reply_open(req, fi) != 0 && HAS(release)) fuse_native_release(path, fi);
  free(path);
}

static void ll_read (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  LL_BEGIN(req)
  LL_PATH(req, ino, path)
  char *buf = malloc(size ? size : 1);
  int res = fuse_native_read(path, buf, size, off, fi);
  free(path);
  if (res < 0) fuse_reply_err(req, -res);
  else fuse_reply_buf(req, buf, (size_t) res > size ? size : (size_t) res);
  free(buf);
}

static void ll_write (fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
  LL_BEGIN(req)
  LL_PATH(req, ino, path)
  int res = fuse_native_write(path, buf, size, off, fi);
  free(path);
  if (res < 0) fuse_reply_err(req, -res);
  else fuse_reply_write(req, res);
}

static void ll_flush (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  LL_BEGIN(req)
  LL_PATH(req, ino, path)
  int res = fuse_native_flush(path, fi);
  free(path);
  fuse_reply_err(req, -res);
}

static void ll_release (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  LL_BEGIN(req)
  char *path = NULL;
  // A release must reach JS even for a node gone meanwhile (its fd is JS's to close): by its
  // last path, as the high-level API passes NULL-path releases through.
  if (nt_path(&ft->nodes, ino, &path) < 0) path = nt_last_path(&ft->nodes, ino);
  int res = fuse_native_release(path, fi);
  free(path);
  fuse_reply_err(req, -res);
}

static void ll_fsync (fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi) {
  LL_BEGIN(req)
  LL_PATH(req, ino, path)
  int res = fuse_native_fsync(path, datasync, fi);
  free(path);
  fuse_reply_err(req, -res);
}

// A directory handle (fi->fh of opendir): JS's own fh, and the whole listing JS gave, as packed
// direntries, of which each readdir serves a window (offsets: index + 1).
typedef struct fuse_native_dirh_s {
  uint64_t js_fh;
  char *buf;
  size_t len;
  size_t cap;
  size_t *offs; // offs[i]: where entry i starts; offs[n] = len
  size_t n;
  size_t ncap;
  int filled;
  struct fuse_native_dirh_s *next;
} fuse_native_dirh_t;

static int ll_filler (void *b, const char *name, const struct stat *st, off_t off, enum fuse_fill_dir_flags flags) {
  fuse_native_dirh_t *d = (fuse_native_dirh_t *) b;
  struct stat s;
  memset(&s, 0, sizeof(s));
  // As the high-level API without use_ino: an unknown inode number unless JS gave one.
  s.st_ino = 0xffffffff;
  if (st != NULL) {
    s.st_mode = st->st_mode;
    if (st->st_ino > FUSE_ROOT_ID) s.st_ino = st->st_ino;
  }
  size_t need = fuse_add_direntry(NULL, NULL, 0, name, NULL, 0);
  if (d->len + need > d->cap) {
    d->cap = (d->len + need) * 2;
    d->buf = realloc(d->buf, d->cap);
  }
  if (d->n + 2 > d->ncap) {
    d->ncap = (d->n + 2) * 2;
    d->offs = realloc(d->offs, d->ncap * sizeof(size_t));
  }
  d->offs[d->n] = d->len;
  fuse_add_direntry(NULL, d->buf + d->len, need, name, &s, d->n + 1);
  d->len += need;
  d->n++;
  d->offs[d->n] = d->len;
  return 0;
}

static fuse_native_dirh_t *ll_dirh (fuse_thread_t *ft, struct fuse_file_info *fi) {
  fuse_native_dirh_t *found = NULL;
  pthread_mutex_lock(&ft->dirh_mut);
  for (fuse_native_dirh_t *d = ft->dirhs; d != NULL; d = d->next) {
    if ((uint64_t) (uintptr_t) d == fi->fh) { found = d; break; }
  }
  pthread_mutex_unlock(&ft->dirh_mut);
  return found; // NULL: not ours (a handle opened by the process we took over from)
}

static void ll_opendir (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  LL_BEGIN(req)
  LL_PATH(req, ino, path)
  fi->fh = 0;
  int res = HAS(opendir) ? fuse_native_opendir(path, fi) : 0;
  free(path);
  if (res < 0) { fuse_reply_err(req, -res); return; }
  fuse_native_dirh_t *d = calloc(1, sizeof(fuse_native_dirh_t));
  d->js_fh = fi->fh;
  pthread_mutex_lock(&ft->dirh_mut);
  d->next = ft->dirhs;
  ft->dirhs = d;
  pthread_mutex_unlock(&ft->dirh_mut);
  fi->fh = (uint64_t) (uintptr_t) d;
  // The kernel keeps each directory's listing (FOPEN_CACHE_DIR, with its pages kept), so that a
  // listing asks Node's thread nothing until the directory changes: opendir and releasedir are
  // answered here, and readdir comes from the kernel's cache. A generation's directories never
  // change. The root changes at a flip: through the VFS (flip.ts), where each step's own request
  // takes the directory's lock and the kernel drops the listing it kept (fuse_dir_changed);
  // inside the daemon, where fuse_native_invalidate_root_listing tells it; and at a takeover,
  // where the mount is adopted (fuse_native_mount).
  if (ft->kernel_cache) { fi->cache_readdir = 1; fi->keep_cache = 1; }
  if (fuse_reply_open(req, fi) != 0) {
    pthread_mutex_lock(&ft->dirh_mut);
    fuse_native_dirh_t **p = &ft->dirhs;
    while (*p != d) p = &(*p)->next;
    *p = d->next;
    pthread_mutex_unlock(&ft->dirh_mut);
    free(d);
  }
}

static void ll_readdir (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  LL_BEGIN(req)
  fuse_native_dirh_t *d = ll_dirh(ft, fi);
  fuse_native_dirh_t tmp;
  if (d == NULL) { memset(&tmp, 0, sizeof(tmp)); d = &tmp; }
  if (!d->filled || off == 0) {
    LL_PATH(req, ino, path)
    d->len = 0;
    d->n = 0;
    if (d->offs == NULL) { d->ncap = 16; d->offs = calloc(d->ncap, sizeof(size_t)); }
    d->offs[0] = 0;
    struct fuse_file_info jfi = *fi;
    jfi.fh = d->js_fh;
    int res = fuse_native_readdir(path, d, ll_filler, 0, &jfi, 0);
    free(path);
    if (res < 0) {
      if (d == &tmp) { free(tmp.buf); free(tmp.offs); }
      fuse_reply_err(req, -res);
      return;
    }
    d->filled = 1;
  }
  size_t start = (off >= 0 && (size_t) off < d->n) ? (size_t) off : d->n;
  size_t end = start;
  while (end < d->n && d->offs[end + 1] - d->offs[start] <= size) end++;
  fuse_reply_buf(req, d->n ? d->buf + d->offs[start] : NULL, d->n ? d->offs[end] - d->offs[start] : 0);
  if (d == &tmp) { free(tmp.buf); free(tmp.offs); }
}

static void ll_releasedir (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  LL_BEGIN(req)
  fuse_native_dirh_t *d = ll_dirh(ft, fi);
  int res = 0;
  if (d != NULL) {
    pthread_mutex_lock(&ft->dirh_mut);
    fuse_native_dirh_t **p = &ft->dirhs;
    while (*p != d) p = &(*p)->next;
    *p = d->next;
    pthread_mutex_unlock(&ft->dirh_mut);
    if (HAS(releasedir)) {
      char *path = NULL;
      if (nt_path(&ft->nodes, ino, &path) < 0) path = strdup("");
      struct fuse_file_info jfi = *fi;
      jfi.fh = d->js_fh;
      res = fuse_native_releasedir(path, &jfi);
      free(path);
    }
    free(d->buf);
    free(d->offs);
    free(d);
  }
  fuse_reply_err(req, -res);
}

static void ll_fsyncdir (fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi) {
  LL_BEGIN(req)
  LL_PATH(req, ino, path)
  fuse_native_dirh_t *d = ll_dirh(ft, fi);
  struct fuse_file_info jfi = *fi;
  jfi.fh = d != NULL ? d->js_fh : 0;
  int res = fuse_native_fsyncdir(path, datasync, &jfi);
  free(path);
  fuse_reply_err(req, -res);
}

static void ll_statfs (fuse_req_t req, fuse_ino_t ino) {
  LL_BEGIN(req)
  LL_PATH(req, ino, path)
  struct statvfs sv;
  memset(&sv, 0, sizeof(sv));
  int res = fuse_native_statfs(path, &sv);
  free(path);
  if (res < 0) fuse_reply_err(req, -res);
  else fuse_reply_statfs(req, &sv);
}

static void ll_access (fuse_req_t req, fuse_ino_t ino, int mask) {
  LL_BEGIN(req)
  LL_PATH(req, ino, path)
  int res = fuse_native_access(path, mask);
  free(path);
  fuse_reply_err(req, -res);
}

static void ll_setxattr (fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size, int flags) {
  LL_BEGIN(req)
  LL_PATH(req, ino, path)
  int res = fuse_native_setxattr(path, name, value, size, flags);
  free(path);
  fuse_reply_err(req, res < 0 ? -res : 0);
}

static void ll_getxattr (fuse_req_t req, fuse_ino_t ino, const char *name, size_t size) {
  LL_BEGIN(req)
  LL_PATH(req, ino, path)
  char *buf = size ? malloc(size) : NULL;
  int res = fuse_native_getxattr(path, name, buf, size);
  free(path);
  if (res < 0) fuse_reply_err(req, -res);
  else if (size == 0) fuse_reply_xattr(req, res);
  else if ((size_t) res > size) fuse_reply_err(req, ERANGE);
  else fuse_reply_buf(req, buf, res);
  free(buf);
}

static void ll_listxattr (fuse_req_t req, fuse_ino_t ino, size_t size) {
  LL_BEGIN(req)
  LL_PATH(req, ino, path)
  char *buf = size ? malloc(size) : NULL;
  int res = fuse_native_listxattr(path, buf, size);
  free(path);
  if (res < 0) fuse_reply_err(req, -res);
  else if (size == 0) fuse_reply_xattr(req, res);
  else if ((size_t) res > size) fuse_reply_err(req, ERANGE);
  else fuse_reply_buf(req, buf, res);
  free(buf);
}

static void ll_removexattr (fuse_req_t req, fuse_ino_t ino, const char *name) {
  LL_BEGIN(req)
  LL_PATH(req, ino, path)
  int res = fuse_native_removexattr(path, name);
  free(path);
  fuse_reply_err(req, -res);
}

static void ll_create (fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi) {
  LL_BEGIN(req)
  LL_CHILD(req, parent, name, path)
  int res = fuse_native_create(path, mode, fi);
  if (res < 0) {
    fuse_reply_err(req, -res);
  } else {
    if (ft->kernel_cache) fi->keep_cache = 1;
    ll_reply_entry(req, ft, path, fi);
  }
  free(path);
}

// Top-level dispatcher

static void fuse_native_dispatch (uv_async_t* handle) {
  fuse_thread_locals_t *l = (fuse_thread_locals_t *) handle->data;
  fuse_thread_t *ft = l->fuse;
  void (*fn)(uv_async_t *, fuse_thread_locals_t *, fuse_thread_t *) = l->op_fn;

  fn(handle, l, ft);
}

// The shared pool's workers (pool.c) and their thread-locals: one set per worker, made on Node's
// thread when the first mount starts the pool (each a JS buffer pinned by a reference, which
// fuse-native's JS hands back to the signal functions, and a uv_async handle on Node's loop,
// unreferenced so that it does not keep the process alive). A worker serves any mount: each
// request sets the mount it is for (get_thread_locals).
static fuse_thread_locals_t **pool_locals;
// Sessions ended (session_ended, on a worker), for Node's thread to let go of their JS objects.
static uv_async_t ended_async;
static pthread_mutex_t ended_mut = PTHREAD_MUTEX_INITIALIZER;
static fuse_thread_t *ended_list;
// Mounts JS has made and not unmounted (Node's thread only): while there is one, ended_async is
// referenced, so that Node's loop stays alive, as fuse-native's per-mount handle kept it.
static uint32_t js_mounts;

static fuse_thread_locals_t* get_thread_locals () {
  fuse_thread_locals_t *l = my_locals;
  l->fuse = current_ft;
  return l;
}

static void pool_enter (unsigned i, void *arg) {
  (void) arg;
  my_locals = pool_locals[i];
}

// On Node's thread: the JS objects an ended session's mount held (its Fuse object, as `this` of
// the handlers, and the handlers) are no longer needed by C, and may be collected once JS lets
// go of them too.
static void release_ended (uv_async_t *handle) {
  (void) handle;
  pthread_mutex_lock(&ended_mut);
  fuse_thread_t *ft = ended_list;
  ended_list = NULL;
  pthread_mutex_unlock(&ended_mut);
  while (ft != NULL) {
    fuse_thread_t *next = ft->next_ended;
    for (int i = 0; i < 35; i++) {
      if (ft->handlers[i] != NULL) napi_delete_reference(ft->env, ft->handlers[i]);
      ft->handlers[i] = NULL;
    }
    if (ft->ctx != NULL) napi_delete_reference(ft->env, ft->ctx);
    ft->ctx = NULL;
    ft = next;
  }
}

// Starts the pool with `workers` threads, on Node's thread (the first mount's), or says why not.
static const char *start_pool (napi_env env, uint32_t workers) {
  if (pool_started()) return NULL;
  if (workers < 1) workers = 1;
  if (workers > 64) workers = 64;
  pool_locals = calloc(workers, sizeof(fuse_thread_locals_t *));
  for (uint32_t i = 0; i < workers; i++) {
    void *data;
    napi_value buf;
    if (napi_create_buffer(env, sizeof(fuse_thread_locals_t), &data, &buf) != napi_ok) return "fuse failed: cannot allocate the workers' thread-locals";
    fuse_thread_locals_t *l = (fuse_thread_locals_t *) data;
    memset(l, 0, sizeof(*l));
    napi_create_reference(env, buf, 1, &(l->self));
    if (uv_async_init(uv_default_loop(), &(l->async), (uv_async_cb) fuse_native_dispatch) < 0) return "fuse failed: uv_async_init";
    uv_unref((uv_handle_t *) &(l->async));
    uv_sem_init(&(l->sem), 0);
    l->async.data = l;
    pool_locals[i] = l;
  }
  if (uv_async_init(uv_default_loop(), &ended_async, release_ended) < 0) return "fuse failed: uv_async_init";
  uv_unref((uv_handle_t *) &ended_async);
  if (pool_start(workers, pool_enter, NULL) != 0) return "fuse failed: cannot start the workers";
  return NULL;
}

// Feeds libfuse a FUSE_INIT it never got from the kernel, for a taken-over connection: the kernel
// sends INIT once per connection, and a session that has not seen one answers EIO to everything.
// libfuse initialises itself (our init op runs: the capabilities, and no JS) and writes a reply,
// which the kernel refuses with ENOENT (no request has that `unique`); libfuse says nothing of
// ENOENT. The flags are what a current kernel offers, so the session sets itself up as it did
// for the process that mounted (its read buffer holds the kernel's max_write).
static void synth_init (struct fuse_session *se) {
  struct { struct fuse_in_header h; struct fuse_init_in i; } __attribute__((packed)) m;
  memset(&m, 0, sizeof(m));
  m.h.len = sizeof(m);
  m.h.opcode = FUSE_INIT;
  m.h.unique = 1ULL << 62; // even (not an interrupt reply), never a kernel's
  m.i.major = FUSE_KERNEL_VERSION;
  m.i.minor = FUSE_KERNEL_MINOR_VERSION;
  m.i.max_readahead = 128 * 1024;
  m.i.flags = FUSE_ASYNC_READ | FUSE_POSIX_LOCKS | FUSE_ATOMIC_O_TRUNC | FUSE_EXPORT_SUPPORT |
              FUSE_BIG_WRITES | FUSE_DONT_MASK | FUSE_FLOCK_LOCKS | FUSE_HAS_IOCTL_DIR |
              FUSE_AUTO_INVAL_DATA | FUSE_DO_READDIRPLUS | FUSE_READDIRPLUS_AUTO |
              FUSE_ASYNC_DIO | FUSE_NO_OPEN_SUPPORT | FUSE_PARALLEL_DIROPS |
              FUSE_MAX_PAGES | FUSE_CACHE_SYMLINKS | FUSE_NO_OPENDIR_SUPPORT | FUSE_INIT_EXT;
  struct fuse_buf b;
  memset(&b, 0, sizeof(b));
  b.size = sizeof(m);
  b.mem = &m;
  fuse_session_process_buf(se, &b);
}

#define FT_OF(ps) ((fuse_thread_t *) ((char *) (ps) - offsetof(fuse_thread_t, ps)))

// On the worker that served the last request of a mount whose connection has ended: the session
// is destroyed, the node table and directory handles freed, and Node's thread lets go of the
// JS objects (release_ended).
static void session_ended (pool_session_t *ps) {
  fuse_thread_t *ft = FT_OF(ps);
  pthread_mutex_lock(&ft->se_mut);
  struct fuse_session *se = ft->se;
  ft->se = NULL;
  pthread_mutex_unlock(&ft->se_mut);
  // An adopted session has no mountpoint of its own (its fd came from the keeper): this
  // unmounts nothing then, and JS's unmount (fusermount -uz) unmounts the real one.
  fuse_session_unmount(se);
  fuse_session_destroy(se);
  nt_clear(&ft->nodes);
  pthread_mutex_lock(&ft->dirh_mut);
  fuse_native_dirh_t *d = ft->dirhs;
  ft->dirhs = NULL;
  pthread_mutex_unlock(&ft->dirh_mut);
  while (d != NULL) {
    fuse_native_dirh_t *next = d->next;
    free(d->buf);
    free(d->offs);
    free(d);
    d = next;
  }
  pthread_mutex_lock(&ended_mut);
  ft->next_ended = ended_list;
  ended_list = ft;
  pthread_mutex_unlock(&ended_mut);
  uv_async_send(&ended_async);
}

// Splits fuse-native's one "-oa,b,c" option string: the high-level API's library options are
// parsed here (fuse_session_new knows none of them), the rest goes to fuse_session_new (mount
// options such as allow_other, default_permissions, fsname=, subtype=, noatime, ro; debug).
static void parse_options (fuse_thread_t *ft, const char *mntopts, char *rest, size_t rest_len) {
  static const char *ignored[] = {
    "auto_cache", "noauto_cache", "ac_attr_timeout=", "uid=", "gid=", "umask=", "noforget",
    "remember=", "modules=", "use_ino", "readdir_ino", "direct_io", "hard_remove", "nopath",
    "intr", "intr_signal=", "user_id=", NULL
  };
  ft->entry_timeout = 1.0; // the high-level API's defaults
  ft->attr_timeout = 1.0;
  ft->negative_timeout = 0.0;
  ft->kernel_cache = 0;
  rest[0] = 0;
  if (strncmp(mntopts, "-o", 2) != 0) return;
  char *copy = strdup(mntopts + 2);
  char *save = NULL;
  for (char *o = strtok_r(copy, ",", &save); o != NULL; o = strtok_r(NULL, ",", &save)) {
    if (*o == 0) continue;
    if (strncmp(o, "entry_timeout=", 14) == 0) { ft->entry_timeout = atof(o + 14); continue; }
    if (strncmp(o, "attr_timeout=", 13) == 0) { ft->attr_timeout = atof(o + 13); continue; }
    if (strncmp(o, "negative_timeout=", 17) == 0) { ft->negative_timeout = atof(o + 17); continue; }
    if (strcmp(o, "kernel_cache") == 0) { ft->kernel_cache = 1; continue; }
    int skip = 0;
    for (int i = 0; ignored[i] != NULL; i++) {
      size_t n = strlen(ignored[i]);
      if (ignored[i][n - 1] == '=' ? strncmp(o, ignored[i], n) == 0 : strcmp(o, ignored[i]) == 0) { skip = 1; break; }
    }
    if (skip) continue;
    size_t used = strlen(rest);
    if (used + strlen(o) + 2 >= rest_len) break;
    if (used) strcat(rest, ",");
    strcat(rest, o);
  }
  free(copy);
}

// fuse_native_mount(mnt, opts, thread, ctx, malloc, handlers, implemented, config[, adoptFd, known])
// adoptFd >= 0: take over that /dev/fuse fd's live connection (mounted at mnt by a process that
// has died) instead of mounting; known: [[path, ino], ...], nodes the kernel may hold already.
NAPI_METHOD(fuse_native_mount) {
  NAPI_ARGV(10)

  NAPI_ARGV_UTF8(mnt, PATH_MAX, 0);
  NAPI_ARGV_UTF8(mntopts, 1024, 1);
  NAPI_ARGV_BUFFER_CAST(fuse_thread_t *, ft, 2);
  // [workers, 0, cacheSymlinks, noOpen] (fuse.ts)
  NAPI_ARGV_BUFFER_CAST(uint32_t *, config, 7)
  if (config_len < 4 * sizeof(uint32_t)) {
    napi_throw_error(env, NULL, "fuse_native_mount: the 8th argument must be 4 uint32s");
    return NULL;
  }
  if (mnt_len >= PATH_MAX - 1) { // it may have been cut short: that would be another path
    napi_throw_error(env, NULL, "fuse_native_mount: the mountpoint's path is too long");
    return NULL;
  }
  {
    const char *why = start_pool(env, config[0]);
    if (why != NULL) {
      napi_throw_error(env, "fuse failed", why);
      return NULL;
    }
  }
  // libfuse takes one of glibc's PTHREAD_KEYS_MAX (1,024) thread keys per session, for good: say
  // so, rather than fuse_session_new's failure alone.
  {
    pthread_key_t probe;
    if (pthread_key_create(&probe, NULL) != 0) {
      napi_throw_error(env, "fuse failed", "fuse failed: this process serves as many mounts as it can (libfuse takes one of glibc's 1,024 thread keys for each)");
      return NULL;
    }
    pthread_key_delete(probe);
  }
  napi_value handlers = argv[5];
  NAPI_ARGV_BUFFER_CAST(uint32_t *, implemented, 6)

  for (int i = 0; i < 35; i++) {
    ft->handlers[i] = NULL;
    ft->implemented[i] = implemented[i];
  }
  ft->ctx = NULL;

  ft->env = env;

  ft->cache_symlinks = config[2];
  ft->no_open = config[3];
  ft->has_fgetattr = implemented[op_fgetattr];
  ft->has_ftruncate = implemented[op_ftruncate];

  int32_t adopt_fd = -1;
  napi_valuetype adopt_type;
  napi_typeof(env, argv[8], &adopt_type);
  if (adopt_type == napi_number) napi_get_value_int32(env, argv[8], &adopt_fd);
  ft->adopt_fd = adopt_fd;
  ft->resend_res = -1;

  // The ll layer needs lookup, forget, getattr, setattr, open and opendir itself; the rest only
  // when JS implements them (libfuse then answers ENOSYS, or its default, as the high-level did).
  struct fuse_lowlevel_ops ops;
  memset(&ops, 0, sizeof(ops));
  ops.init = ll_init;
  ops.lookup = ll_lookup;
  ops.forget = ll_forget;
  ops.forget_multi = ll_forget_multi;
  ops.getattr = ll_getattr;
  ops.setattr = ll_setattr;
  ops.open = ll_open;
  ops.opendir = ll_opendir;
  ops.releasedir = ll_releasedir;
  if (implemented[op_readdir]) ops.readdir = ll_readdir;
  if (implemented[op_readlink]) ops.readlink = ll_readlink;
  if (implemented[op_mknod]) ops.mknod = ll_mknod;
  if (implemented[op_mkdir]) ops.mkdir = ll_mkdir;
  if (implemented[op_unlink]) ops.unlink = ll_unlink;
  if (implemented[op_rmdir]) ops.rmdir = ll_rmdir;
  if (implemented[op_symlink]) ops.symlink = ll_symlink;
  if (implemented[op_rename]) ops.rename = ll_rename;
  if (implemented[op_link]) ops.link = ll_link;
  if (implemented[op_read]) ops.read = ll_read;
  if (implemented[op_write]) ops.write = ll_write;
  if (implemented[op_flush]) ops.flush = ll_flush;
  if (implemented[op_release]) ops.release = ll_release;
  if (implemented[op_fsync]) ops.fsync = ll_fsync;
  if (implemented[op_fsyncdir]) ops.fsyncdir = ll_fsyncdir;
  if (implemented[op_statfs]) ops.statfs = ll_statfs;
  if (implemented[op_access]) ops.access = ll_access;
  if (implemented[op_setxattr]) ops.setxattr = ll_setxattr;
  if (implemented[op_getxattr]) ops.getxattr = ll_getxattr;
  if (implemented[op_listxattr]) ops.listxattr = ll_listxattr;
  if (implemented[op_removexattr]) ops.removexattr = ll_removexattr;
  if (implemented[op_create]) ops.create = ll_create;

  char rest[1024];
  parse_options(ft, mntopts, rest, sizeof(rest));
  char *_argv[] = { (char *) "fuse_bindings_dummy", (char *) "-o", rest, NULL };
  struct fuse_args args = FUSE_ARGS_INIT(rest[0] ? 3 : 1, _argv);
  struct fuse_session *se = fuse_session_new(&args, &ops, sizeof(ops), ft);
  fuse_opt_free_args(&args);

  if (se == NULL) {
    napi_throw_error(env, "fuse failed", "fuse failed: fuse_session_new (bad options?)");
    return NULL;
  }

  // A fresh mount: fuse_session_mount mounts mnt and opens /dev/fuse. An adopted connection: its
  // fd, as it is (no mount). Either way, reads and replies go through the pool's I/O.
  int io = adopt_fd >= 0 ? fuse_session_custom_io(se, &pool_io, adopt_fd)
    : fuse_session_mount(se, mnt) != 0 ? -1 : fuse_session_custom_io(se, &pool_io, fuse_session_fd(se));
  if (io != 0) {
    if (adopt_fd < 0) fuse_session_unmount(se);
    fuse_session_destroy(se);
    napi_throw_error(env, "fuse failed", adopt_fd >= 0 ? "fuse failed: taking over the adopted fd" : "fuse failed: fuse_session_mount");
    return NULL;
  }

  nt_init(&ft->nodes);
  absent_init(&ft->absent);
  pthread_mutex_init(&ft->dirh_mut, NULL);
  pthread_mutex_init(&ft->se_mut, NULL);
  ft->dirhs = NULL;

  if (adopt_fd >= 0) {
    // Nodes the kernel may hold from the process we take over from: kept until unmount.
    napi_valuetype kt;
    napi_typeof(env, argv[9], &kt);
    if (kt == napi_object) {
      napi_value known = argv[9];
      NAPI_FOR_EACH(known, pair) {
        napi_value p, n;
        napi_get_element(env, pair, 0, &p);
        napi_get_element(env, pair, 1, &n);
        char kpath[4096];
        size_t kl;
        double kino = 0;
        if (napi_get_value_string_utf8(env, p, kpath, sizeof(kpath), &kl) != napi_ok) continue;
        napi_get_value_double(env, n, &kino);
        if (kino > FUSE_ROOT_ID) nt_ref(&ft->nodes, kpath, (uint64_t) kino, 0, 1);
      }
    }
    // Requests the dead process had read but not answered go back to the kernel's queue, to be
    // read again (kernel 6.9+; older kernels refuse the notification, and those requests wait).
    struct fuse_out_header o = { .len = sizeof(struct fuse_out_header), .error = FUSE_NOTIFY_RESEND, .unique = 0 };
    ssize_t w = write(fuse_session_fd(se), &o, sizeof(o));
    ft->resend_res = w == (ssize_t) sizeof(o) ? 0 : (w < 0 ? errno : EIO);
    // The session is initialised before the pool reads any of its requests (libfuse would answer
    // them EIO). Here, on Node's thread: this init calls no JS (ll_init).
    synth_init(se);
    // The kernel may keep a listing of the root as the dead process served it (ll_opendir): a
    // generation it had staged, say, which this one never knew. Taken here, before any request is
    // read; the notification waits for no lock.
    fuse_lowlevel_notify_inval_inode(se, FUSE_ROOT_ID, 0, 0);
    // And it may hold names as absent that the dead process answered so.
    absent_any(&ft->absent, ft->negative_timeout);
  }

  // The JS objects the handlers need, held until the session ends (release_ended): before the
  // pool reads its first request.
  napi_create_reference(env, argv[3], 1, &(ft->ctx));
  NAPI_FOR_EACH(handlers, handler) {
    napi_create_reference(env, handler, 1, &ft->handlers[i]);
  }

  ft->se = se;
  memset(&ft->ps, 0, sizeof(ft->ps));
  ft->ps.se = se;
  ft->ps.ended = session_ended;
  ft->next_ended = NULL;
  if (pool_add(&ft->ps) != 0) {
    // Undone as a failed mount is above, and nothing of it is counted.
    napi_delete_reference(env, ft->ctx);
    for (int i = 0; i < (int) handlers_len; i++) napi_delete_reference(env, ft->handlers[i]);
    ft->se = NULL;
    if (adopt_fd < 0) fuse_session_unmount(se);
    fuse_session_destroy(se);
    napi_throw_error(env, "fuse failed", "fuse failed: the pool cannot serve the session");
    return NULL;
  }
  ft->mounted++;
  if (js_mounts++ == 0) uv_ref((uv_handle_t *) &ended_async);
  return NULL;
}

// Makes the kernel forget a name in the mount's root (FUSE_NOTIFY_INVAL_ENTRY), and with it the
// dentries and inodes below it, so that their FORGETs let libfuse free its nodes for them. The
// kernel otherwise keeps entries it has looked up until memory pressure, however stale.
//
// The notification must not be written from Node's thread: the kernel takes the root's inode
// lock for it, and a lookup holding that lock may be waiting for an answer from Node's thread.
// So it is written from libuv's thread pool, and `cb(res)` is called back with 0 or -errno
// (-ENOENT: the kernel had no such entry cached). Only call it while mounted, and let every call
// come back before unmounting.
typedef struct {
  napi_async_work work;
  napi_ref cb;
  fuse_thread_t *ft;
  char name[4096]; // empty: the root's listing (FUSE_NOTIFY_INVAL_INODE of the root)
  int res;
} fuse_native_inval_t;

static void inval_execute (napi_env env, void *data) {
  fuse_native_inval_t *w = (fuse_native_inval_t *) data;
  pthread_mutex_lock(&w->ft->se_mut);
  if (w->ft->se == NULL) w->res = -ENOTCONN;
  else if (w->name[0] == 0) w->res = fuse_lowlevel_notify_inval_inode(w->ft->se, FUSE_ROOT_ID, 0, 0);
  else w->res = fuse_lowlevel_notify_inval_entry(w->ft->se, FUSE_ROOT_ID, w->name, strlen(w->name));
  pthread_mutex_unlock(&w->ft->se_mut);
}

static void inval_complete (napi_env env, napi_status status, void *data) {
  fuse_native_inval_t *w = (fuse_native_inval_t *) data;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value cb, global, argv[1];
  napi_get_reference_value(env, w->cb, &cb);
  napi_get_global(env, &global);
  napi_create_int32(env, status == napi_ok ? w->res : -ECANCELED, &argv[0]);
  napi_call_function(env, global, cb, 1, argv, NULL);
  napi_close_handle_scope(env, scope);
  napi_delete_reference(env, w->cb);
  napi_delete_async_work(env, w->work);
  free(w);
}

static void inval_queue (napi_env env, fuse_native_inval_t *w, napi_value cb) {
  napi_create_reference(env, cb, 1, &(w->cb));
  napi_value resource_name;
  napi_create_string_utf8(env, "fuse_native_invalidate", NAPI_AUTO_LENGTH, &resource_name);
  napi_create_async_work(env, NULL, resource_name, inval_execute, inval_complete, w, &(w->work));
  napi_queue_async_work(env, w->work);
}

NAPI_METHOD(fuse_native_invalidate_root_entry) {
  NAPI_ARGV(3)
  NAPI_ARGV_BUFFER_CAST(fuse_thread_t *, ft, 0);
  fuse_native_inval_t *w = calloc(1, sizeof(fuse_native_inval_t));
  size_t len;
  napi_get_value_string_utf8(env, argv[1], w->name, sizeof(w->name), &len);
  w->ft = ft;
  if (w->name[0] == 0) { free(w); napi_throw_error(env, NULL, "an empty name"); return NULL; }
  inval_queue(env, w, argv[2]);
  return NULL;
}

// Whether the kernel may hold a root name as absent (absent-names.c): if not, a flip that makes
// that name need not tell the kernel to drop it.
NAPI_METHOD(fuse_native_may_hold_absent) {
  NAPI_ARGV(2)
  NAPI_ARGV_BUFFER_CAST(fuse_thread_t *, ft, 0);
  char name[4096];
  size_t len;
  napi_get_value_string_utf8(env, argv[1], name, sizeof(name), &len);
  napi_value out;
  napi_get_boolean(env, absent_may_hold(&ft->absent, name), &out);
  return out;
}

NAPI_METHOD(fuse_native_invalidate_root_listing) {
  NAPI_ARGV(2)
  NAPI_ARGV_BUFFER_CAST(fuse_thread_t *, ft, 0);
  fuse_native_inval_t *w = calloc(1, sizeof(fuse_native_inval_t));
  w->ft = ft;
  inval_queue(env, w, argv[1]);
  return NULL;
}

// [capable, want, resend] as negotiated by init (zeros before it); resend: for an adopted
// connection, 0 if the kernel took FUSE_NOTIFY_RESEND, else its errno; -1 if not adopted.
NAPI_METHOD(fuse_native_conn_info) {
  NAPI_ARGV(1)
  NAPI_ARGV_BUFFER_CAST(fuse_thread_t *, ft, 0);
  napi_value arr, v;
  napi_create_array(env, &arr);
  napi_create_uint32(env, ft->capable, &v);
  napi_set_element(env, arr, 0, v);
  napi_create_uint32(env, ft->want, &v);
  napi_set_element(env, arr, 1, v);
  napi_create_int32(env, ft->resend_res, &v);
  napi_set_element(env, arr, 2, v);
  return arr;
}

// The mounted session's /dev/fuse fd (the caller may dup it, e.g. to hand it to a keeper).
NAPI_METHOD(fuse_native_session_fd) {
  NAPI_ARGV(1)
  NAPI_ARGV_BUFFER_CAST(fuse_thread_t *, ft, 0);
  napi_value v;
  pthread_mutex_lock(&ft->se_mut);
  int fd = (ft->mounted > 0 && ft->se != NULL) ? fuse_session_fd(ft->se) : -1;
  pthread_mutex_unlock(&ft->se_mut);
  napi_create_int32(env, fd, &v);
  return v;
}

// After JS has unmounted mnt (fusermount -uz): nothing to stop here. The pool serves the
// connection until the kernel ends it (at once, unless a container still holds the mount), and
// then destroys the session (session_ended).
NAPI_METHOD(fuse_native_unmount) {
  NAPI_ARGV(2)
  // argv[0], the mountpoint, is fuse-native's: the session ends when the kernel's connection does.
  NAPI_ARGV_BUFFER_CAST(fuse_thread_t *, ft, 1);
  if (ft->mounted > 0 && --js_mounts == 0) uv_unref((uv_handle_t *) &ended_async);
  ft->mounted--;
  return NULL;
}

// The process is leaving the mount to the keeper and the next process: the pool reads no more of
// its requests (those read already are answered), and its fd is blocking again (pool_detach).
NAPI_METHOD(fuse_native_detach) {
  NAPI_ARGV(1)
  NAPI_ARGV_BUFFER_CAST(fuse_thread_t *, ft, 0);
  if (ft->mounted > 0 && ft->se != NULL) pool_detach(&ft->ps);
  return NULL;
}

// [workers, sessions served, requests read, requests in flight] of the shared pool.
NAPI_METHOD(fuse_native_pool_info) {
  uint32_t pi[4];
  pool_info(pi);
  napi_value arr, v;
  napi_create_array(env, &arr);
  for (uint32_t i = 0; i < 4; i++) {
    napi_create_uint32(env, pi[i], &v);
    napi_set_element(env, arr, i, v);
  }
  return arr;
}

NAPI_INIT() {
  const napi_node_version* version;
  assert(napi_get_node_version(env, &version) == napi_ok);

  if (version->major > 12 || (version->major == 12 && version->minor >= 16)) {
    IS_ARRAY_BUFFER_DETACH_SUPPORTED = 1;
  }

  NAPI_EXPORT_SIZEOF(fuse_thread_t)
  NAPI_EXPORT_UINT32(dapifs_native)

  NAPI_EXPORT_FUNCTION(fuse_native_mount)
  NAPI_EXPORT_FUNCTION(fuse_native_unmount)
  NAPI_EXPORT_FUNCTION(fuse_native_invalidate_root_entry)
  NAPI_EXPORT_FUNCTION(fuse_native_invalidate_root_listing)
  NAPI_EXPORT_FUNCTION(fuse_native_may_hold_absent)
  NAPI_EXPORT_FUNCTION(fuse_native_conn_info)
  NAPI_EXPORT_FUNCTION(fuse_native_session_fd)
  NAPI_EXPORT_FUNCTION(fuse_native_detach)
  NAPI_EXPORT_FUNCTION(fuse_native_pool_info)
  keeper_client_export(env, exports);
  vfs_steps_export(env, exports);

  NAPI_EXPORT_FUNCTION(fuse_native_signal_getattr)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_init)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_access)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_statfs)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_fgetattr)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_getattr)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_flush)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_fsync)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_fsyncdir)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_readdir)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_truncate)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_ftruncate)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_utimens)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_readlink)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_chown)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_chmod)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_mknod)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_setxattr)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_getxattr)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_listxattr)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_removexattr)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_open)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_opendir)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_read)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_write)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_release)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_releasedir)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_create)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_unlink)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_rename)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_link)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_symlink)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_mkdir)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_rmdir)

  NAPI_EXPORT_UINT32(op_getattr)
  NAPI_EXPORT_UINT32(op_init)
  NAPI_EXPORT_UINT32(op_error)
  NAPI_EXPORT_UINT32(op_access)
  NAPI_EXPORT_UINT32(op_statfs)
  NAPI_EXPORT_UINT32(op_fgetattr)
  NAPI_EXPORT_UINT32(op_getattr)
  NAPI_EXPORT_UINT32(op_flush)
  NAPI_EXPORT_UINT32(op_fsync)
  NAPI_EXPORT_UINT32(op_fsyncdir)
  NAPI_EXPORT_UINT32(op_readdir)
  NAPI_EXPORT_UINT32(op_truncate)
  NAPI_EXPORT_UINT32(op_ftruncate)
  NAPI_EXPORT_UINT32(op_utimens)
  NAPI_EXPORT_UINT32(op_readlink)
  NAPI_EXPORT_UINT32(op_chown)
  NAPI_EXPORT_UINT32(op_chmod)
  NAPI_EXPORT_UINT32(op_mknod)
  NAPI_EXPORT_UINT32(op_setxattr)
  NAPI_EXPORT_UINT32(op_getxattr)
  NAPI_EXPORT_UINT32(op_listxattr)
  NAPI_EXPORT_UINT32(op_removexattr)
  NAPI_EXPORT_UINT32(op_open)
  NAPI_EXPORT_UINT32(op_opendir)
  NAPI_EXPORT_UINT32(op_read)
  NAPI_EXPORT_UINT32(op_write)
  NAPI_EXPORT_UINT32(op_release)
  NAPI_EXPORT_UINT32(op_releasedir)
  NAPI_EXPORT_UINT32(op_create)
  NAPI_EXPORT_UINT32(op_unlink)
  NAPI_EXPORT_UINT32(op_rename)
  NAPI_EXPORT_UINT32(op_link)
  NAPI_EXPORT_UINT32(op_symlink)
  NAPI_EXPORT_UINT32(op_mkdir)
  NAPI_EXPORT_UINT32(op_rmdir)
}
