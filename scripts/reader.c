/*
 * reader: reads a downward API file the way a program polling it does, fast enough that the
 * filesystem, not the reader, is what is measured. Used by the tests and the benchmark.
 *
 *   reader cat PATH THREADS SECONDS [--contents]
 *       open, read to EOF, close, in a loop on each thread. Prints
 *       "ops N errors N seconds S p50_ns N p99_ns N", then "errno E COUNT" per distinct error,
 *       and with --contents "content COUNT HEX" per distinct content read (a torn or mixed read
 *       shows up as a content nobody wrote).
 *   reader stat PATH THREADS SECONDS        stat(2) in a loop; same first line
 *   reader readlink PATH THREADS SECONDS    readlink(2) in a loop; same first line
 *   reader ls PATH THREADS SECONDS          opendir, readdir to the end, closedir (FUSE caches no
 *       directory listing: each one asks the daemon); same first line
 *   The first line ends with "max_ns N": the longest single operation, then "cpu_s S": the CPU
 *   time the reader used (user and system, all threads), for rates that leave out the time other
 *   processes on a busy machine took from it. SIGTERM ends the loops early, with the same output.
 *   reader until PATH HEX SECONDS
 *       polls PATH every 100 us until its content is the bytes HEX; prints "seen US", the
 *       CLOCK_REALTIME microsecond it first read them; exit 1 on timeout.
 *   reader untilall HEX SECONDS LIST [THREADS]
 *       the same for every path in the file LIST (one a line), polled in turn by THREADS threads
 *       (1), each with its share of them, as that many readers would: prints "seen N of M
 *       last_us US", US the CLOCK_REALTIME microsecond the last of them was first read with the
 *       bytes HEX; exit 1 unless all were, within SECONDS.
 *   reader answers SECONDS LIST
 *       one listing (opendir, readdir, closedir) of each directory in the file LIST, all at once,
 *       a thread each: each waits as long as its filesystem does not answer. Prints "answered N
 *       of M errors N first_us US last_us US" (CLOCK_REALTIME microseconds of the first and the
 *       last answer) and "errno E COUNT" lines; exit 1 unless all answered within SECONDS.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BUF 65536
#define MAX_SAMPLES 4000000
#define MAX_DISTINCT 8192

enum mode { CAT, STAT, READLINK, LS };

static enum mode mode;
static const char *path;
static volatile double deadline;

/* SIGTERM ends the loops early: the results so far are printed as at the deadline. */
static void stop_early(int sig) { (void) sig; deadline = 0; }
static int want_contents;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char *seen[MAX_DISTINCT];
static size_t seen_len[MAX_DISTINCT];
static long seen_count[MAX_DISTINCT];
static int n_seen;
static long err_count[256];

struct worker {
  pthread_t thread;
  uint32_t *samples;
  long n, ops, errors;
  double max_ns;
};

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void record_content(const char *buf, size_t len) {
  pthread_mutex_lock(&lock);
  int i;
  for (i = 0; i < n_seen; i++)
    if (seen_len[i] == len && memcmp(seen[i], buf, len) == 0) break;
  if (i == n_seen && n_seen < MAX_DISTINCT) {
    seen[i] = malloc(len + 1);
    memcpy(seen[i], buf, len);
    seen_len[i] = len;
    n_seen++;
  }
  if (i < MAX_DISTINCT) seen_count[i]++;
  pthread_mutex_unlock(&lock);
}

static void fail(struct worker *w, int e) {
  w->errors++;
  pthread_mutex_lock(&lock);
  err_count[e & 255]++;
  pthread_mutex_unlock(&lock);
}

static void *run(void *arg) {
  struct worker *w = arg;
  char *buf = malloc(BUF);
  struct stat st;
  while (now() < deadline) {
    double t0 = now();
    if (mode == CAT) {
      int fd = open(path, O_RDONLY);
      if (fd < 0) { fail(w, errno); continue; }
      size_t len = 0;
      ssize_t r;
      while ((r = read(fd, buf + len, BUF - len)) > 0) len += (size_t)r;
      int e = errno;
      close(fd);
      if (r < 0) { fail(w, e); continue; }
      if (want_contents) record_content(buf, len);
    } else if (mode == STAT) {
      if (stat(path, &st) != 0) { fail(w, errno); continue; }
    } else if (mode == LS) {
      DIR *d = opendir(path);
      if (!d) { fail(w, errno); continue; }
      errno = 0;
      while (readdir(d)) {}
      int e = errno;
      closedir(d);
      if (e) { fail(w, e); continue; }
    } else {
      if (readlink(path, buf, BUF) < 0) { fail(w, errno); continue; }
    }
    w->ops++;
    double ns = (now() - t0) * 1e9;
    if (ns > w->max_ns) w->max_ns = ns;
    if (w->n < MAX_SAMPLES) w->samples[w->n++] = ns > 4294967295.0 ? 4294967295u : (uint32_t)ns;
  }
  free(buf);
  return NULL;
}

static int cmp(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

static int until(const char *file, const char *hex, double seconds) {
  static char want[BUF], buf[BUF];
  size_t wlen = strlen(hex) / 2;
  for (size_t i = 0; i < wlen; i++) sscanf(hex + 2 * i, "%2hhx", &want[i]);
  double end = now() + seconds;
  do {
    int fd = open(file, O_RDONLY);
    if (fd >= 0) {
      size_t len = 0;
      ssize_t r;
      while ((r = read(fd, buf + len, BUF - len)) > 0) len += (size_t)r;
      close(fd);
      if (len == wlen && memcmp(buf, want, len) == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        printf("seen %lld\n", (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000);
        return 0;
      }
    }
    usleep(100);
  } while (now() < end);
  return 1;
}

static long long realtime_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

/* The lines of a file, each a path. */
static char **read_list(const char *file, int *n) {
  FILE *f = fopen(file, "r");
  if (!f) { perror(file); exit(2); }
  char **paths = NULL;
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  *n = 0;
  while ((len = getline(&line, &cap, f)) > 0) {
    if (line[len - 1] == '\n') line[--len] = 0;
    if (len == 0) continue;
    paths = realloc(paths, sizeof(char *) * (*n + 1));
    paths[(*n)++] = strdup(line);
  }
  free(line);
  fclose(f);
  return paths;
}

struct poller { pthread_t thread; char **paths; int n, seen; long long last; const char *want; size_t wlen; double end; };

static void *poll_share(void *arg) {
  struct poller *p = arg;
  char *buf = malloc(BUF);
  char *done = calloc(p->n ? p->n : 1, 1);
  while (p->seen < p->n && now() < p->end) {
    for (int i = 0; i < p->n; i++) {
      if (done[i]) continue;
      int fd = open(p->paths[i], O_RDONLY);
      if (fd < 0) continue;
      size_t len = 0;
      ssize_t r;
      while ((r = read(fd, buf + len, BUF - len)) > 0) len += (size_t)r;
      close(fd);
      if (len == p->wlen && memcmp(buf, p->want, len) == 0) { done[i] = 1; p->seen++; p->last = realtime_us(); }
    }
    if (p->seen < p->n) usleep(100);
  }
  free(buf);
  free(done);
  return NULL;
}

static int until_all(const char *hex, double seconds, const char *list, int threads) {
  static char want[BUF];
  int n;
  char **paths = read_list(list, &n);
  size_t wlen = strlen(hex) / 2;
  for (size_t i = 0; i < wlen; i++) sscanf(hex + 2 * i, "%2hhx", &want[i]);
  if (threads < 1) threads = 1;
  struct poller *ps = calloc(threads, sizeof *ps);
  double end = now() + seconds;
  for (int t = 0; t < threads; t++) {
    int from = (int)((long)n * t / threads), to = (int)((long)n * (t + 1) / threads);
    ps[t] = (struct poller){ .paths = paths + from, .n = to - from, .want = want, .wlen = wlen, .end = end };
    pthread_create(&ps[t].thread, NULL, poll_share, &ps[t]);
  }
  int seen_n = 0;
  long long last = 0;
  for (int t = 0; t < threads; t++) {
    pthread_join(ps[t].thread, NULL);
    seen_n += ps[t].seen;
    if (ps[t].last > last) last = ps[t].last;
  }
  printf("seen %d of %d last_us %lld\n", seen_n, n, last);
  return seen_n == n ? 0 : 1;
}

struct answer { pthread_t thread; const char *path; long long at; int err; };

static void *answer_one(void *arg) {
  struct answer *a = arg;
  DIR *d = opendir(a->path);
  if (!d) { a->err = errno; a->at = realtime_us(); return NULL; }
  errno = 0;
  while (readdir(d)) {}
  a->err = errno;
  closedir(d);
  a->at = realtime_us();
  return NULL;
}

static int answers(double seconds, const char *list) {
  int n;
  char **paths = read_list(list, &n);
  struct answer *as = calloc(n ? n : 1, sizeof *as);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  for (int i = 0; i < n; i++) {
    as[i].path = paths[i];
    pthread_create(&as[i].thread, &attr, answer_one, &as[i]);
  }
  double end = now() + seconds;
  int answered = 0, errors = 0;
  long long first = 0, last = 0;
  while (now() < end) {
    answered = 0;
    for (int i = 0; i < n; i++) if (as[i].at) answered++;
    if (answered == n) break;
    usleep(1000);
  }
  for (int i = 0; i < n; i++) {
    if (!as[i].at) continue;
    if (as[i].err) { errors++; err_count[as[i].err & 255]++; }
    if (!first || as[i].at < first) first = as[i].at;
    if (as[i].at > last) last = as[i].at;
  }
  printf("answered %d of %d errors %d first_us %lld last_us %lld\n", answered, n, errors, first, last);
  for (int e = 0; e < 256; e++) if (err_count[e]) printf("errno %d %ld\n", e, err_count[e]);
  fflush(stdout);
  _exit(answered == n && errors == 0 ? 0 : 1); /* threads still waiting are left behind */
}

int main(int argc, char **argv) {
  if (argc == 5 && strcmp(argv[1], "until") == 0) return until(argv[2], argv[3], atof(argv[4]));
  if ((argc == 5 || argc == 6) && strcmp(argv[1], "untilall") == 0) return until_all(argv[2], atof(argv[3]), argv[4], argc == 6 ? atoi(argv[5]) : 1);
  if (argc == 4 && strcmp(argv[1], "answers") == 0) return answers(atof(argv[2]), argv[3]);
  if (argc < 5) {
    fprintf(stderr, "usage: reader cat|stat|readlink|ls PATH THREADS SECONDS [--contents] | reader until PATH HEX SECONDS | reader untilall HEX SECONDS LIST [THREADS] | reader answers SECONDS LIST\n");
    return 2;
  }
  mode = strcmp(argv[1], "stat") == 0 ? STAT : strcmp(argv[1], "readlink") == 0 ? READLINK : strcmp(argv[1], "ls") == 0 ? LS : CAT;
  path = argv[2];
  int threads = atoi(argv[3]);
  double seconds = atof(argv[4]);
  want_contents = argc > 5 && strcmp(argv[5], "--contents") == 0;
  struct worker *w = calloc(threads, sizeof *w);
  double start = now();
  deadline = start + seconds;
  signal(SIGTERM, stop_early);
  for (int i = 0; i < threads; i++) {
    w[i].samples = malloc(sizeof(uint32_t) * MAX_SAMPLES);
    pthread_create(&w[i].thread, NULL, run, &w[i]);
  }
  long ops = 0, errors = 0, n = 0;
  double max_ns = 0;
  for (int i = 0; i < threads; i++) {
    pthread_join(w[i].thread, NULL);
    ops += w[i].ops;
    errors += w[i].errors;
    n += w[i].n;
    if (w[i].max_ns > max_ns) max_ns = w[i].max_ns;
  }
  double elapsed = now() - start;
  uint32_t *all = malloc(sizeof(uint32_t) * (n ? n : 1));
  long k = 0;
  for (int i = 0; i < threads; i++) { memcpy(all + k, w[i].samples, sizeof(uint32_t) * w[i].n); k += w[i].n; }
  qsort(all, n, sizeof(uint32_t), cmp);
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
  printf("ops %ld errors %ld seconds %.3f p50_ns %u p99_ns %u max_ns %.0f cpu_s %.3f\n", ops, errors, elapsed,
         n ? all[n / 2] : 0, n ? all[(long)(n * 0.99)] : 0, max_ns, cpu);
  for (int e = 0; e < 256; e++) if (err_count[e]) printf("errno %d %ld\n", e, err_count[e]);
  for (int i = 0; i < n_seen; i++) {
    printf("content %ld ", seen_count[i]);
    for (size_t j = 0; j < seen_len[i]; j++) printf("%02x", (unsigned char)seen[i][j]);
    printf("\n");
  }
  return 0;
}
