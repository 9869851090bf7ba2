/* holder: keeps a /dev/fuse fd alive.  Protocol on a unix stream socket:
 *   client sends 'P' + SCM_RIGHTS fd  -> holder keeps it (replaces previous)
 *   client sends 'G'                  -> holder answers 'F' + SCM_RIGHTS dup of the fd
 * The holder never reads the fd; it only keeps the struct file (and so the
 * fuse connection) referenced. */
#include "common.h"
#include <signal.h>
int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: holder SOCK\n"); return 2; }
    signal(SIGPIPE, SIG_IGN);
    unlink(argv[1]);
    int ls = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    strncpy(a.sun_path, argv[1], sizeof a.sun_path - 1);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 8)) { perror("bind"); return 1; }
    int held = -1;
    fprintf(stderr, "holder: pid %d listening on %s\n", getpid(), argv[1]);
    for (;;) {
        int c = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) continue;
        char op = 0;
        int fd = recv_fd(c, &op);
        if (op == 'P' && fd >= 0) {
            if (held >= 0) close(held);
            held = fd;
            fprintf(stderr, "holder: got fd (now %d)\n", held);
        } else if (op == 'G') {
            if (held < 0) send_fd(c, 'E', -1);
            else { send_fd(c, 'F', held); fprintf(stderr, "holder: handed out fd\n"); }
        } else if (fd >= 0) close(fd);
        close(c);
    }
}
