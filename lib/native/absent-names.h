// Names in a mount's root that the kernel may hold as absent (absent-names.c).

#ifndef DAPIFS_ABSENT_NAMES_H
#define DAPIFS_ABSENT_NAMES_H

#include <pthread.h>
#include <stdint.h>

#define ABSENT_KEPT 64

typedef struct {
  uint64_t hash;
  unsigned asking; // lookups of it under way
  double until;    // CLOCK_MONOTONIC seconds until which the kernel may hold it as absent
} absent_slot_t;

typedef struct {
  pthread_mutex_t mut;
  absent_slot_t slots[ABSENT_KEPT];
  unsigned next;
  double any_until; // until then, any name may be held
} absent_names_t;

void absent_init (absent_names_t *a);
// A lookup of `name` is about to be answered.
void absent_asking (absent_names_t *a, const char *name);
// ... and was: absent (a negative entry, kept `seconds`), or not.
void absent_answered (absent_names_t *a, const char *name, int absent, double seconds);
// Any name may be held as absent for `seconds` (as told by a process before this one).
void absent_any (absent_names_t *a, double seconds);
// Whether the kernel may hold `name` as absent, now or once a lookup under way is answered.
int absent_may_hold (absent_names_t *a, const char *name);

#endif
