// The node table: which path each of the kernel's node ids stands for, one table per mount.
//
// libfuse 3's low-level API speaks node ids, fuse-native's JS speaks paths; the ll_* ops of
// fuse-native.c translate with this table. It mimics what libfuse's high-level API did where
// dapifs relies on it, with one difference: the ids are not a counter but what JS says each
// object is, so that a process that takes a mount over can answer the ids the kernel holds.
//
// - An id is given by a lookup's (or a create's) reply: the `ino` of the stat JS returned for the
//   path (up to 2^53 - 1). Without one (0, or 1), it is the live node's at that path, else
//   FNV-1a-64 of the path, probed on until it is no other node's (an id must never name two
//   objects). The root is NT_ROOT_ID.
// - Lookups count up, the kernel's forgets count down, and a node is dropped at 0, when the
//   kernel has forgotten it; a pinned node (given at adoption, with an unknown count) stays until
//   the mount ends.
// - A rename moves the node at the old path, and any below it, to the new one. The node renamed
//   over, unlinked or removed is gone: it keeps its id but no longer has a path, and a request
//   on it, or on an id the table does not know, gets ESTALE, as the high-level API answered for
//   a node it had unhashed. The kernel then walks the path again, and finds the new node.
//
// Every call takes the table's mutex: libfuse's workers call in parallel.

#ifndef DAPIFS_NODE_TABLE_H
#define DAPIFS_NODE_TABLE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define NT_ROOT_ID 1 // FUSE_ROOT_ID

typedef struct node_table_s {
  pthread_mutex_t mut;
  // Two chained hash indexes over the same nodes: by id (all nodes), by path (live nodes only).
  struct node_s **by_id;
  struct node_s **by_path;
  size_t buckets;
  size_t count;
} node_table_t;

// An empty table, but for the root.
void nt_init (node_table_t *nt);
// Frees every node (at unmount).
void nt_clear (node_table_t *nt);

// The id for `path`, counting `inc` more lookups of it; `ino` is JS's id for it (0: none). A
// pinned node is never dropped. The node with that id now has that path.
uint64_t nt_ref (node_table_t *nt, const char *path, uint64_t ino, uint64_t inc, int pinned);
// The kernel forgot `n` lookups of `id`.
void nt_forget (node_table_t *nt, uint64_t id, uint64_t n);
// 0 and the path of `id` (malloc'd), or -ESTALE: unknown, or gone.
int nt_path (node_table_t *nt, uint64_t id, char **path);
// The path `id` had last, gone or not (malloc'd); "" if unknown.
char *nt_last_path (node_table_t *nt, uint64_t id);
// The live node at `path` is gone (unlinked, removed).
void nt_gone (node_table_t *nt, const char *path);
// After a rename: the node at `from` (and any below it) moves to `to`; the one at `to` is gone.
void nt_rename (node_table_t *nt, const char *from, const char *to);

#endif
