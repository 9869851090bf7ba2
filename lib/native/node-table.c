// The node table (node-table.h says what it keeps, and why).

#include "node-table.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct node_s {
  uint64_t id;
  char *path;
  uint64_t nlookup;
  int gone;    // renamed over, unlinked or removed: requests on it answer ESTALE
  int pinned;  // given by `known` at adoption (its lookup count is unknown): kept until unmount
  int in_path; // in the path index (live)
  struct node_s *id_next;
  struct node_s *path_next;
} node_t;

static uint64_t fnv64_str (uint64_t h, const char *s) {
  for (; *s; s++) { h ^= (unsigned char) *s; h *= 1099511628211ULL; }
  return h;
}

static uint64_t fnv64 (const char *s) {
  return fnv64_str(1469598103934665603ULL, s);
}

static size_t nt_slot (node_table_t *nt, uint64_t h) {
  return (size_t) ((h ^ (h >> 29)) & (nt->buckets - 1));
}

static node_t *nt_by_id (node_table_t *nt, uint64_t id) {
  if (nt->by_id == NULL) return NULL;
  for (node_t *n = nt->by_id[nt_slot(nt, id)]; n != NULL; n = n->id_next) {
    if (n->id == id) return n;
  }
  return NULL;
}

// The live node at a path, if any.
static node_t *nt_by_path (node_table_t *nt, const char *path) {
  if (nt->by_path == NULL) return NULL;
  for (node_t *n = nt->by_path[nt_slot(nt, fnv64(path))]; n != NULL; n = n->path_next) {
    if (strcmp(n->path, path) == 0) return n;
  }
  return NULL;
}

static void nt_path_unlink (node_table_t *nt, node_t *node) {
  if (!node->in_path) return;
  node_t **p = &nt->by_path[nt_slot(nt, fnv64(node->path))];
  while (*p != node) p = &(*p)->path_next;
  *p = node->path_next;
  node->path_next = NULL;
  node->in_path = 0;
}

static void nt_path_link (node_table_t *nt, node_t *node) {
  size_t s = nt_slot(nt, fnv64(node->path));
  node->path_next = nt->by_path[s];
  nt->by_path[s] = node;
  node->in_path = 1;
}

static void nt_grow (node_table_t *nt) {
  size_t old = nt->buckets;
  node_t **ids = nt->by_id;
  nt->buckets = old ? old * 4 : 256;
  nt->by_id = calloc(nt->buckets, sizeof(node_t *));
  free(nt->by_path);
  nt->by_path = calloc(nt->buckets, sizeof(node_t *));
  for (size_t i = 0; i < old; i++) {
    node_t *n = ids[i];
    while (n != NULL) {
      node_t *next = n->id_next;
      size_t s = nt_slot(nt, n->id);
      n->id_next = nt->by_id[s];
      nt->by_id[s] = n;
      if (n->in_path) nt_path_link(nt, n);
      n = next;
    }
  }
  free(ids);
}

// Makes `node` the live node at `path`; another live node there is marked gone.
static void nt_set_path (node_table_t *nt, node_t *node, const char *path) {
  node_t *other = nt_by_path(nt, path);
  if (other == node) return;
  if (other != NULL) {
    nt_path_unlink(nt, other);
    other->gone = 1;
  }
  nt_path_unlink(nt, node);
  if (node->path == NULL || strcmp(node->path, path) != 0) {
    free(node->path);
    node->path = strdup(path);
  }
  node->gone = 0;
  nt_path_link(nt, node);
}

static void nt_remove (node_table_t *nt, node_t *node) {
  nt_path_unlink(nt, node);
  node_t **p = &nt->by_id[nt_slot(nt, node->id)];
  while (*p != node) p = &(*p)->id_next;
  *p = node->id_next;
  nt->count--;
  free(node->path);
  free(node);
}

void nt_init (node_table_t *nt) {
  pthread_mutex_init(&nt->mut, NULL);
  nt->by_id = NULL;
  nt->by_path = NULL;
  nt->buckets = 0;
  nt->count = 0;
  nt_grow(nt);
  nt_ref(nt, "/", NT_ROOT_ID, 1, 1);
}

// `ino` is used as is, and may move its node to a new path. Without one (0, or 1: the root's),
// the id is the live node's at that path, else FNV-1a-64 of the path, probed on until it is no
// other node's.
uint64_t nt_ref (node_table_t *nt, const char *path, uint64_t ino, uint64_t inc, int pinned) {
  pthread_mutex_lock(&nt->mut);
  if (nt->count + 1 > nt->buckets) nt_grow(nt);
  uint64_t id = ino;
  node_t *node = NULL;
  if (strcmp(path, "/") == 0) {
    id = NT_ROOT_ID;
    node = nt_by_id(nt, id);
  } else if (id <= NT_ROOT_ID) {
    node = nt_by_path(nt, path);
    if (node != NULL) {
      id = node->id;
    } else {
      uint64_t h = fnv64(path);
      for (;;) {
        if (h <= NT_ROOT_ID) h += 2;
        node = nt_by_id(nt, h);
        if (node == NULL) break;
        h = (h ^ 0xff) * 1099511628211ULL;
      }
      id = h;
    }
  } else {
    node = nt_by_id(nt, id);
  }
  if (node == NULL) {
    node = calloc(1, sizeof(node_t));
    node->id = id;
    size_t s = nt_slot(nt, id);
    node->id_next = nt->by_id[s];
    nt->by_id[s] = node;
    nt->count++;
  }
  nt_set_path(nt, node, path);
  node->nlookup += inc;
  if (pinned) node->pinned = 1;
  pthread_mutex_unlock(&nt->mut);
  return id;
}

void nt_forget (node_table_t *nt, uint64_t id, uint64_t n) {
  pthread_mutex_lock(&nt->mut);
  node_t *node = nt_by_id(nt, id);
  if (node != NULL && id != NT_ROOT_ID) {
    node->nlookup = node->nlookup > n ? node->nlookup - n : 0;
    if (node->nlookup == 0 && !node->pinned) nt_remove(nt, node);
  }
  pthread_mutex_unlock(&nt->mut);
}

// Unknown: never looked up here, or forgotten.
int nt_path (node_table_t *nt, uint64_t id, char **path) {
  int res = -ESTALE;
  pthread_mutex_lock(&nt->mut);
  if (id == NT_ROOT_ID) {
    *path = strdup("/");
    res = 0;
  } else {
    node_t *node = nt_by_id(nt, id);
    if (node != NULL && !node->gone) {
      *path = strdup(node->path);
      res = 0;
    }
  }
  pthread_mutex_unlock(&nt->mut);
  return res;
}

char *nt_last_path (node_table_t *nt, uint64_t id) {
  pthread_mutex_lock(&nt->mut);
  node_t *node = nt_by_id(nt, id);
  char *path = strdup(node != NULL ? node->path : "");
  pthread_mutex_unlock(&nt->mut);
  return path;
}

void nt_gone (node_table_t *nt, const char *path) {
  pthread_mutex_lock(&nt->mut);
  node_t *node = nt_by_path(nt, path);
  if (node != NULL && node->id != NT_ROOT_ID) {
    nt_path_unlink(nt, node);
    node->gone = 1;
  }
  pthread_mutex_unlock(&nt->mut);
}

void nt_rename (node_table_t *nt, const char *from, const char *to) {
  pthread_mutex_lock(&nt->mut);
  node_t *node = nt_by_path(nt, from);
  if (node != NULL) {
    nt_set_path(nt, node, to);
  } else {
    node_t *other = nt_by_path(nt, to);
    if (other != NULL && other->id != NT_ROOT_ID) {
      nt_path_unlink(nt, other);
      other->gone = 1;
    }
  }
  // Nodes below a renamed directory.
  size_t fl = strlen(from);
  size_t tl = strlen(to);
  for (size_t i = 0; i < nt->buckets; i++) {
    for (node_t *n = nt->by_id[i]; n != NULL; n = n->id_next) {
      if (n->gone || strncmp(n->path, from, fl) != 0 || n->path[fl] != '/') continue;
      char *p = malloc(tl + strlen(n->path + fl) + 1);
      memcpy(p, to, tl);
      strcpy(p + tl, n->path + fl);
      nt_set_path(nt, n, p);
      free(p);
    }
  }
  pthread_mutex_unlock(&nt->mut);
}

void nt_clear (node_table_t *nt) {
  pthread_mutex_lock(&nt->mut);
  for (size_t i = 0; i < nt->buckets; i++) {
    node_t *n = nt->by_id[i];
    while (n != NULL) {
      node_t *next = n->id_next;
      free(n->path);
      free(n);
      n = next;
    }
  }
  free(nt->by_id);
  free(nt->by_path);
  nt->by_id = NULL;
  nt->by_path = NULL;
  nt->buckets = 0;
  nt->count = 0;
  pthread_mutex_unlock(&nt->mut);
}
