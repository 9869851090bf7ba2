/*
 * inotify-watch DIR...: a tiny inotify watcher for test containers (busybox has none).
 * Built static by scripts/kube-node.sh and put in its busybox image as /bin/inotify-watch.
 *
 * Watches each DIR (not recursively) for every event and prints one line per event on
 * stdout, flushed at once, forever:
 *     EVENT[,EVENT...] NAME        e.g.  MOVED_TO ..data   CREATE,ISDIR ..2026_12_02_07_06_44.12
 * with inotifywait's event names; NAME is empty for an event on DIR itself. With more than
 * one DIR, each line starts with the DIR and a space. Once every watch is set it says
 * "inotify-watch: watching DIR..." on stderr, so a caller knows when events will be seen.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

static const struct { unsigned mask; const char *name; } names[] = {
  { IN_ACCESS, "ACCESS" }, { IN_MODIFY, "MODIFY" }, { IN_ATTRIB, "ATTRIB" },
  { IN_CLOSE_WRITE, "CLOSE_WRITE" }, { IN_CLOSE_NOWRITE, "CLOSE_NOWRITE" }, { IN_OPEN, "OPEN" },
  { IN_MOVED_FROM, "MOVED_FROM" }, { IN_MOVED_TO, "MOVED_TO" }, { IN_CREATE, "CREATE" },
  { IN_DELETE, "DELETE" }, { IN_DELETE_SELF, "DELETE_SELF" }, { IN_MOVE_SELF, "MOVE_SELF" },
  { IN_UNMOUNT, "UNMOUNT" }, { IN_Q_OVERFLOW, "Q_OVERFLOW" }, { IN_IGNORED, "IGNORED" },
  { IN_ISDIR, "ISDIR" },
};

int main(int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: inotify-watch DIR...\n"); return 2; }
  int fd = inotify_init1(IN_CLOEXEC);
  if (fd < 0) { perror("inotify_init1"); return 1; }
  int nwd = argc - 1;
  int *wds = calloc(nwd, sizeof *wds);
  for (int i = 0; i < nwd; i++) {
    wds[i] = inotify_add_watch(fd, argv[i + 1], IN_ALL_EVENTS);
    if (wds[i] < 0) { fprintf(stderr, "inotify-watch: %s: %s\n", argv[i + 1], strerror(errno)); return 1; }
  }
  fprintf(stderr, "inotify-watch: watching");
  for (int i = 1; i < argc; i++) fprintf(stderr, " %s", argv[i]);
  fprintf(stderr, "\n");
  fflush(stderr);

  char buf[64 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      perror("inotify-watch: read");
      return 1;
    }
    for (char *p = buf; p < buf + n;) {
      struct inotify_event *ev = (struct inotify_event *)p;
      if (nwd > 1)
        for (int i = 0; i < nwd; i++)
          if (wds[i] == ev->wd) { fputs(argv[i + 1], stdout); fputc(' ', stdout); }
      int first = 1;
      for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (ev->mask & names[i].mask) {
          if (!first) fputc(',', stdout);
          fputs(names[i].name, stdout);
          first = 0;
        }
      fputc(' ', stdout);
      if (ev->len) fputs(ev->name, stdout);
      fputc('\n', stdout);
      fflush(stdout);
      p += sizeof *ev + ev->len;
    }
  }
}
