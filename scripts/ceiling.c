/*
 * ceiling: the FUSE ceiling of the benchmark. The least a FUSE filesystem can cost for the kubelet's
 * layout: C on libfuse 3's low-level API, serving it from memory, with exactly the kernel caching
 * dapifs asks for, so that what it reads at is what the kernel's FUSE code allows, and no daemon
 * could do better. What is left between it and tmpfs belongs to the kernel; what is left between
 * dapifs and it belongs to dapifs.
 *
 * The same as dapifs's mounts (lib/fs/mount.ts, lib/native/fuse-native.c), and nothing else:
 *   - mount options allow_other, default_permissions, noatime, fsname=ceiling, subtype=ceiling;
 *   - entry, attribute and negative timeouts of 60 s;
 *   - FUSE_CAP_CACHE_SYMLINKS (link targets in the kernel's page cache), atomic O_TRUNC off;
 *   - open answers ENOSYS, so that the kernel sends no open or release (FUSE_NO_OPEN_SUPPORT),
 *     and kept pages serve the reads; opendir is answered, as dapifs answers it;
 *   - the same modes, link counts and sizes (root 1777, directories 0755, links 0777).
 * Node ids are the index of each node in the layout, plus 2 (1 is the root).
 *
 *   ceiling MOUNTPOINT LAYOUT
 * LAYOUT: one node per line, parents before children, the root first:
 *   d MODE PATH          a directory (MODE in octal, with its type bits)
 *   f MODE PATH HEX      a file and its bytes, in hex
 *   l PATH TARGET        a symlink
 * Says "ready" on stdout once the kernel's INIT is answered; on SIGUSR2 prints
 * "requests {"op":count,...}" (every request that reached it); unmounts on SIGTERM or SIGINT.
 * scripts/bench.mjs builds it (cc ... $(pkg-config --cflags --libs fuse3)) and runs it.
 */
#define FUSE_USE_VERSION 312
#define _GNU_SOURCE
#include <errno.h>
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TIMEOUT 60.0

struct node {
  char *path;     /* absolute, "/" for the root */
  char *name;     /* last segment ("" for the root) */
  fuse_ino_t parent;
  mode_t mode;
  char *data;     /* file bytes, or a link's target */
  size_t size;
  unsigned nlink;
};

static struct node *nodes;
static size_t n_nodes;
static struct timespec born;

enum { OP_LOOKUP, OP_FORGET, OP_GETATTR, OP_READLINK, OP_OPEN, OP_READ, OP_OPENDIR, OP_READDIR,
       OP_RELEASEDIR, OP_GETXATTR, OP_LISTXATTR, OP_STATFS, OP_ACCESS, OP_OTHER, OP_COUNT };
static const char *op_names[OP_COUNT] = { "lookup", "forget", "getattr", "readlink", "open", "read",
  "opendir", "readdir", "releasedir", "getxattr", "listxattr", "statfs", "access", "other" };
static atomic_ulong counts[OP_COUNT];
#define COUNT(op) atomic_fetch_add_explicit(&counts[op], 1, memory_order_relaxed)

static struct node *node_of(fuse_ino_t ino) {
  if (ino < 1 || ino - 1 >= n_nodes) return NULL;
  return &nodes[ino - 1];
}

static void fill_stat(fuse_ino_t ino, struct stat *st) {
  struct node *n = node_of(ino);
  memset(st, 0, sizeof(*st));
  st->st_ino = ino;
  st->st_mode = n->mode;
  st->st_nlink = n->nlink;
  st->st_size = S_ISDIR(n->mode) ? 4096 : (off_t) n->size;
  st->st_blksize = 4096;
  st->st_atim = st->st_mtim = st->st_ctim = born;
}

static void op_init(void *userdata, struct fuse_conn_info *conn) {
  (void) userdata;
  if (conn->capable & FUSE_CAP_CACHE_SYMLINKS) conn->want |= FUSE_CAP_CACHE_SYMLINKS;
  conn->want &= ~FUSE_CAP_ATOMIC_O_TRUNC;
  printf("ready\n");
  fflush(stdout);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
  COUNT(OP_LOOKUP);
  struct fuse_entry_param e;
  memset(&e, 0, sizeof(e));
  for (size_t i = 0; i < n_nodes; i++) {
    if (nodes[i].parent == parent && strcmp(nodes[i].name, name) == 0) {
      e.ino = i + 1;
      fill_stat(e.ino, &e.attr);
      e.attr_timeout = TIMEOUT;
      e.entry_timeout = TIMEOUT;
      fuse_reply_entry(req, &e);
      return;
    }
  }
  e.entry_timeout = TIMEOUT; /* a negative entry, as dapifs's negative_timeout */
  fuse_reply_entry(req, &e);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  (void) ino; (void) nlookup;
  COUNT(OP_FORGET);
  fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets) {
  (void) count; (void) forgets;
  COUNT(OP_FORGET);
  fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  (void) fi;
  COUNT(OP_GETATTR);
  if (!node_of(ino)) { fuse_reply_err(req, ESTALE); return; }
  struct stat st;
  fill_stat(ino, &st);
  fuse_reply_attr(req, &st, TIMEOUT);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino) {
  COUNT(OP_READLINK);
  struct node *n = node_of(ino);
  if (!n || !S_ISLNK(n->mode)) { fuse_reply_err(req, EINVAL); return; }
  fuse_reply_readlink(req, n->data);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  (void) ino; (void) fi;
  COUNT(OP_OPEN);
  fuse_reply_err(req, ENOSYS); /* FUSE_NO_OPEN_SUPPORT: no open or release from now on */
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  (void) fi;
  COUNT(OP_READ);
  struct node *n = node_of(ino);
  if (!n || !S_ISREG(n->mode)) { fuse_reply_err(req, EISDIR); return; }
  if ((size_t) off >= n->size) { fuse_reply_buf(req, NULL, 0); return; }
  size_t len = n->size - off < size ? n->size - off : size;
  fuse_reply_buf(req, n->data + off, len);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  (void) ino;
  COUNT(OP_OPENDIR);
  fi->fh = 0;
  fuse_reply_open(req, fi);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  (void) fi;
  COUNT(OP_READDIR);
  char *buf = calloc(1, size);
  size_t used = 0;
  off_t i = 0;
  struct stat st;
  memset(&st, 0, sizeof(st));
  const char *dots[2] = { ".", ".." };
  for (; i < 2; i++) {
    if (i < off) continue;
    st.st_ino = ino; st.st_mode = S_IFDIR;
    size_t need = fuse_add_direntry(req, buf + used, size - used, dots[i], &st, i + 1);
    if (need > size - used) goto done;
    used += need;
  }
  for (size_t k = 0; k < n_nodes; k++) {
    if (nodes[k].parent != ino || k + 1 == ino) continue;
    if (i++ < off) continue;
    st.st_ino = k + 1; st.st_mode = nodes[k].mode;
    size_t need = fuse_add_direntry(req, buf + used, size - used, nodes[k].name, &st, i);
    if (need > size - used) break;
    used += need;
  }
done:
  fuse_reply_buf(req, buf, used);
  free(buf);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  (void) ino; (void) fi;
  COUNT(OP_RELEASEDIR);
  fuse_reply_err(req, 0);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size) {
  (void) ino; (void) name; (void) size;
  COUNT(OP_GETXATTR);
  fuse_reply_err(req, ENODATA);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  (void) ino;
  COUNT(OP_LISTXATTR);
  if (size == 0) fuse_reply_xattr(req, 0);
  else fuse_reply_buf(req, NULL, 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino) {
  (void) ino;
  COUNT(OP_STATFS);
  struct statvfs sv;
  memset(&sv, 0, sizeof(sv));
  sv.f_bsize = sv.f_frsize = 4096;
  sv.f_namemax = 255;
  fuse_reply_statfs(req, &sv);
}

static void op_access(fuse_req_t req, fuse_ino_t ino, int mask) {
  (void) ino;
  COUNT(OP_ACCESS);
  fuse_reply_err(req, (mask & W_OK) ? EROFS : 0);
}

/* Everything that would change the tree: EROFS, as dapifs answers anyone but its own flips. */
static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi) {
  (void) ino; (void) attr; (void) to_set; (void) fi;
  COUNT(OP_OTHER);
  fuse_reply_err(req, EROFS);
}

static int unhex(int c) {
  return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static fuse_ino_t ino_of_path(const char *path) {
  for (size_t i = 0; i < n_nodes; i++) if (strcmp(nodes[i].path, path) == 0) return i + 1;
  return 0;
}

static int load_layout(const char *file) {
  FILE *f = fopen(file, "r");
  if (!f) { perror(file); return -1; }
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  while ((len = getline(&line, &cap, f)) > 0) {
    if (line[len - 1] == '\n') line[--len] = 0;
    if (len == 0) continue;
    char kind = line[0];
    char *save = NULL;
    strtok_r(line, " ", &save);
    struct node n;
    memset(&n, 0, sizeof(n));
    if (kind == 'd' || kind == 'f') {
      char *mode = strtok_r(NULL, " ", &save);
      char *path = strtok_r(NULL, " ", &save);
      if (!mode || !path) goto bad;
      n.mode = (mode_t) strtoul(mode, NULL, 8);
      n.path = strdup(path);
      if (kind == 'f') {
        char *hex = strtok_r(NULL, " ", &save);
        if (!hex) hex = "";
        n.size = strlen(hex) / 2;
        n.data = malloc(n.size + 1);
        for (size_t i = 0; i < n.size; i++) n.data[i] = (char) (unhex(hex[2 * i]) << 4 | unhex(hex[2 * i + 1]));
      }
    } else if (kind == 'l') {
      char *path = strtok_r(NULL, " ", &save);
      char *target = strtok_r(NULL, " ", &save);
      if (!path || !target) goto bad;
      n.mode = S_IFLNK | 0777;
      n.path = strdup(path);
      n.data = strdup(target);
      n.size = strlen(target);
    } else {
      goto bad;
    }
    n.nlink = S_ISDIR(n.mode) ? 2 : 1;
    if (strcmp(n.path, "/") == 0) {
      n.name = "";
      n.parent = 1;
    } else {
      char *slash = strrchr(n.path, '/');
      n.name = slash + 1;
      char *parent = strndup(n.path, slash == n.path ? 1 : (size_t) (slash - n.path));
      n.parent = ino_of_path(parent);
      free(parent);
      if (n.parent == 0) goto bad;
    }
    nodes = realloc(nodes, (n_nodes + 1) * sizeof(struct node));
    nodes[n_nodes++] = n;
    if (S_ISDIR(n.mode) && n_nodes > 1) nodes[n.parent - 1].nlink++;
  }
  free(line);
  fclose(f);
  if (n_nodes == 0 || strcmp(nodes[0].path, "/") != 0) { fprintf(stderr, "%s: the root must come first\n", file); return -1; }
  return 0;
bad:
  fprintf(stderr, "%s: not a layout line: %s\n", file, line);
  free(line);
  fclose(f);
  return -1;
}

/* SIGUSR2: the request counts, on a thread of its own (printf is not for signal handlers). */
static void *counts_thread(void *arg) {
  sigset_t *set = arg;
  for (;;) {
    int sig;
    if (sigwait(set, &sig) != 0) continue;
    printf("requests {");
    int first = 1;
    for (int i = 0; i < OP_COUNT; i++) {
      unsigned long c = atomic_load(&counts[i]);
      if (c == 0) continue;
      printf("%s\"%s\":%lu", first ? "" : ",", op_names[i], c);
      first = 0;
    }
    printf("}\n");
    fflush(stdout);
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 3) { fprintf(stderr, "usage: ceiling MOUNTPOINT LAYOUT\n"); return 2; }
  if (load_layout(argv[2]) != 0) return 2;
  clock_gettime(CLOCK_REALTIME, &born);

  static sigset_t usr2;
  sigemptyset(&usr2);
  sigaddset(&usr2, SIGUSR2);
  pthread_sigmask(SIG_BLOCK, &usr2, NULL); /* every thread started from here on blocks it */
  pthread_t counter;
  pthread_create(&counter, NULL, counts_thread, &usr2);

  struct fuse_lowlevel_ops ops;
  memset(&ops, 0, sizeof(ops));
  ops.init = op_init;
  ops.lookup = op_lookup;
  ops.forget = op_forget;
  ops.forget_multi = op_forget_multi;
  ops.getattr = op_getattr;
  ops.setattr = op_setattr;
  ops.readlink = op_readlink;
  ops.open = op_open;
  ops.read = op_read;
  ops.opendir = op_opendir;
  ops.readdir = op_readdir;
  ops.releasedir = op_releasedir;
  ops.getxattr = op_getxattr;
  ops.listxattr = op_listxattr;
  ops.statfs = op_statfs;
  ops.access = op_access;

  char *fargv[] = { argv[0], "-o", "allow_other,default_permissions,noatime,fsname=ceiling,subtype=ceiling", NULL };
  struct fuse_args args = FUSE_ARGS_INIT(3, fargv);
  struct fuse_session *se = fuse_session_new(&args, &ops, sizeof(ops), NULL);
  if (!se) return 1;
  if (fuse_set_signal_handlers(se) != 0) return 1;
  if (fuse_session_mount(se, argv[1]) != 0) return 1;
  struct fuse_loop_config *cfg = fuse_loop_cfg_create();
  fuse_loop_cfg_set_idle_threads(cfg, 2); /* as dapifs's mounts were served: a loop of their own */
  int res = fuse_session_loop_mt(se, cfg);
  fuse_loop_cfg_destroy(cfg);
  fuse_session_unmount(se);
  fuse_remove_signal_handlers(se);
  fuse_session_destroy(se);
  return res < 0 ? 1 : 0;
}
