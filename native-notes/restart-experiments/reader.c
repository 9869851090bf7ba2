/* reader: tight loop of open/read/close on PATH (e.g. MNT/labels, a symlink
 * labels -> ..data/labels).  Prints a line for every failure or any iteration
 * slower than 50 ms, and a summary at the end (SIGINT/SIGTERM or -n SECONDS).
 *   reader [-n SECONDS] [-u] PATH        -u: install a SIGUSR1 handler (no SA_RESTART)
 *                                        to test whether a non-fatal signal unblocks it */
#include "common.h"
#include <fcntl.h>
#include <signal.h>
static volatile sig_atomic_t stop, usr1;
static void on_stop(int s) { (void)s; stop = 1; }
static void on_usr1(int s) { (void)s; usr1++; }
int main(int argc, char **argv) {
    double dur = 1e9; int opt, hu = 0;
    while ((opt = getopt(argc, argv, "n:u")) != -1)
        if (opt == 'n') dur = atof(optarg); else if (opt == 'u') hu = 1;
    if (optind >= argc) { fprintf(stderr, "usage: reader [-n SEC] [-u] PATH\n"); return 2; }
    const char *p = argv[optind];
    struct sigaction sa = { .sa_handler = on_stop };
    sigaction(SIGINT, &sa, NULL); sigaction(SIGTERM, &sa, NULL);
    if (hu) { struct sigaction su = { .sa_handler = on_usr1 }; sigaction(SIGUSR1, &su, NULL); }
    setvbuf(stdout, NULL, _IOLBF, 0);
    unsigned long ok = 0, fail = 0, slow = 0; double maxlat = 0, t0 = now_s(), maxat = 0;
    char buf[4096];
    while (!stop && now_s() - t0 < dur) {
        double a = now_s(); int err = 0;
        int fd = open(p, O_RDONLY);
        if (fd < 0) err = errno;
        else { if (read(fd, buf, sizeof buf) < 0) err = errno; close(fd); }
        double l = now_s() - a;
        if (l > maxlat) { maxlat = l; maxat = a - t0; }
        if (err) { fail++; if (fail <= 20 || fail % 10000 == 0)
                       printf("t=%.3f FAIL %s (%.1f ms)%s\n", a - t0, strerror(err), l * 1e3, usr1 ? " [after SIGUSR1]" : ""); }
        else ok++;
        if (l > 0.05) { slow++; printf("t=%.3f slow iteration %.1f ms (%s)\n", a - t0, l * 1e3, err ? strerror(err) : "ok"); }
    }
    printf("SUMMARY path=%s ok=%lu fail=%lu slow(>50ms)=%lu max_latency=%.1f ms at t=%.3f elapsed=%.1fs\n",
           p, ok, fail, slow, maxlat * 1e3, maxat, now_s() - t0);
    return 0;
}
