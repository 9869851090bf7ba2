// Which names in a mount's root the kernel may hold as absent.
//
// A lookup of a name that is not there is answered with a negative entry, which the kernel keeps
// for negative_timeout (lib/fs/mount.ts says why: a container polling a missing name asks the
// daemon once). A name that then appears inside the daemon, as each flip's new generation
// directory does, must first be dropped from the kernel (FUSE_NOTIFY_INVAL_ENTRY), or the kernel
// goes on answering ENOENT for it, and ..data would point at a name that does not resolve. That
// notification costs a flip a trip through libuv's thread pool and the root directory's lock in
// the kernel, and for a name nobody has looked up, which a fresh generation's always is unless
// someone guessed it, it does nothing. So each mount keeps the root names it is asked about until
// answered, and those it answered absent until the kernel lets go of them, and the flip asks
// first (fuse_native_may_hold_absent).
//
// A name is marked before its lookup reaches Node's thread: a flip that stages the name after the
// lookup was answered absent there finds it marked, however late the worker records the answer.
// The last ABSENT_KEPT names are kept, by a 64-bit hash (a collision costs a notification, no
// more). A name pushed out may still be held: the set then answers "maybe" for every name until
// that one's time is up. Lookups under way are never pushed out; there are no more of them than
// the pool has workers. A mount taken over from another process answers "maybe" for
// negative_timeout, since that process's answers are not known here.

#define _GNU_SOURCE
#include "absent-names.h"

#include <math.h>
#include <string.h>
#include <time.h>

static double now (void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

// FNV-1a, 64 bits.
static uint64_t hash (const char *s) {
  uint64_t h = 14695981039346656037ULL;
  for (; *s; s++) { h ^= (unsigned char) *s; h *= 1099511628211ULL; }
  return h;
}

static int live (const absent_slot_t *s, double t) {
  return s->asking > 0 || s->until > t;
}

// The live slot of `h`, or NULL. Under the mutex.
static absent_slot_t *find (absent_names_t *a, uint64_t h, double t) {
  for (int i = 0; i < ABSENT_KEPT; i++) if (a->slots[i].hash == h && live(&a->slots[i], t)) return &a->slots[i];
  return NULL;
}

void absent_init (absent_names_t *a) {
  memset(a, 0, sizeof(*a));
  pthread_mutex_init(&a->mut, NULL);
}

void absent_asking (absent_names_t *a, const char *name) {
  uint64_t h = hash(name);
  double t = now();
  pthread_mutex_lock(&a->mut);
  absent_slot_t *s = find(a, h, t);
  for (int i = 0; s == NULL && i < ABSENT_KEPT; i++) if (!live(&a->slots[i], t)) s = &a->slots[i];
  for (int tries = 0; s == NULL && tries < ABSENT_KEPT; tries++) {
    absent_slot_t *c = &a->slots[a->next++ % ABSENT_KEPT];
    if (c->asking > 0) continue;
    if (c->until > a->any_until) a->any_until = c->until;
    s = c;
  }
  if (s == NULL) { a->any_until = HUGE_VAL; pthread_mutex_unlock(&a->mut); return; } // more lookups under way than kept: "maybe", for good
  if (s->hash != h || !live(s, t)) *s = (absent_slot_t) { .hash = h };
  s->asking++;
  pthread_mutex_unlock(&a->mut);
}

void absent_answered (absent_names_t *a, const char *name, int absent, double seconds) {
  uint64_t h = hash(name);
  double t = now();
  pthread_mutex_lock(&a->mut);
  absent_slot_t *s = find(a, h, t);
  if (s != NULL && s->asking > 0) s->asking--;
  if (absent && s != NULL && t + seconds > s->until) s->until = t + seconds;
  pthread_mutex_unlock(&a->mut);
}

void absent_any (absent_names_t *a, double seconds) {
  double until = now() + seconds;
  pthread_mutex_lock(&a->mut);
  if (until > a->any_until) a->any_until = until;
  pthread_mutex_unlock(&a->mut);
}

int absent_may_hold (absent_names_t *a, const char *name) {
  uint64_t h = hash(name);
  double t = now();
  pthread_mutex_lock(&a->mut);
  int held = t < a->any_until || find(a, h, t) != NULL;
  pthread_mutex_unlock(&a->mut);
  return held;
}
