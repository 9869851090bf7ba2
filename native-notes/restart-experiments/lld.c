/* lld: minimal downward-API-shaped FUSE daemon on libfuse3's LOW-level API.
 *
 *   lld -m MNT [-H SOCK]        mount MNT (fuse_session_mount); with -H, PUT a dup of
 *                               the /dev/fuse fd into the holder at SOCK
 *   lld -M MNT                  mount with a raw mount(2) (works on top of a dead fuse mount)
 *   lld -t SOCK [-I] [-R]       takeover: GET the fd from the holder, fuse_session_new +
 *                               fuse_session_mount(se, "/dev/fd/N"), then (unless -I)
 *                               feed libfuse a synthesized FUSE_INIT; -R: also write
 *                               FUSE_NOTIFY_RESEND so the kernel re-queues requests the
 *                               dead daemon had read but never answered
 *   common: -c  counter node ids (like libfuse high-level) instead of hash(path)
 *           -T SEC entry/attr timeout (default 0 = every access hits the daemon)
 *           -g  "hang": never answer READ of annotations (simulate in-flight request)
 *           -O  answer OPEN with ENOSYS (dapifs does: kernel then never sends OPEN/RELEASE)
 *           -d  libfuse debug output
 * Tree:  ..2024_01_01/{labels,annotations}   ..data -> ..2024_01_01
 *        labels -> ..data/labels              annotations -> ..data/annotations
 */
#define FUSE_USE_VERSION 34
#include "common.h"
#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <stdint.h>
#include <signal.h>
#include <sys/mount.h>

#ifndef FUSE_NOTIFY_RESEND
#define FUSE_NOTIFY_RESEND 7          /* kernel 6.9+, protocol 7.40 */
#endif

struct node { const char *path; const char *name; int parent; mode_t mode; const char *data; };
static struct node T[] = {
    { "",                          "",              -1, S_IFDIR | 0755, NULL },
    { "/..2024_01_01",             "..2024_01_01",   0, S_IFDIR | 0755, NULL },
    { "/..2024_01_01/labels",      "labels",         1, S_IFREG | 0644, "app=\"demo\"\ntier=\"web\"\n" },
    { "/..2024_01_01/annotations", "annotations",    1, S_IFREG | 0644, "owner=\"team-a\"\n" },
    { "/..data",                   "..data",         0, S_IFLNK | 0777, "..2024_01_01" },
    { "/labels",                   "labels",         0, S_IFLNK | 0777, "..data/labels" },
    { "/annotations",              "annotations",    0, S_IFLNK | 0777, "..data/annotations" },
};
#define NN (int)(sizeof T / sizeof T[0])

static int counter_ids, hang, debug_ops;
static double tmo = 0;
static uint64_t cid[NN];              /* counter-mode ids, assigned at first lookup */
static uint64_t cnext;
static unsigned long nforget, nreq;

static uint64_t fnv64(const char *s) {            /* deterministic node id */
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) { h ^= (unsigned char)*s; h *= 1099511628211ULL; }
    return h < 2 ? h + 2 : h;
}
static uint64_t id_of(int i) {
    if (i == 0) return FUSE_ROOT_ID;
    if (counter_ids) { if (!cid[i]) cid[i] = cnext++; return cid[i]; }
    return fnv64(T[i].path);
}
static int node_of(fuse_ino_t ino) {
    if (ino == FUSE_ROOT_ID) return 0;
    for (int i = 1; i < NN; i++)
        if (counter_ids ? cid[i] == ino : fnv64(T[i].path) == ino) return i;
    return -1;
}
static void attr_of(int i, struct stat *st) {
    memset(st, 0, sizeof *st);
    st->st_ino = id_of(i); st->st_mode = T[i].mode;
    st->st_nlink = S_ISDIR(T[i].mode) ? 2 : 1;
    st->st_size = T[i].data ? strlen(T[i].data) : 0;
    st->st_mtime = 1700000000;
}

static void op_init(void *u, struct fuse_conn_info *c) {
    (void)u;
    if (c->capable & FUSE_CAP_CACHE_SYMLINKS) c->want |= FUSE_CAP_CACHE_SYMLINKS;
    fprintf(stderr, "[%d] init callback: proto %u.%u capable=%#x\n", getpid(),
            c->proto_major, c->proto_minor, c->capable);
}
static void op_lookup(fuse_req_t r, fuse_ino_t parent, const char *name) {
    nreq++;
    int p = node_of(parent);
    if (p < 0) { fuse_reply_err(r, ESTALE); return; }
    for (int i = 1; i < NN; i++)
        if (T[i].parent == p && !strcmp(T[i].name, name)) {
            struct fuse_entry_param e = { .ino = id_of(i), .generation = 0,
                                          .attr_timeout = tmo, .entry_timeout = tmo };
            attr_of(i, &e.attr);
            fuse_reply_entry(r, &e); return;
        }
    fuse_reply_err(r, ENOENT);
}
static void op_getattr(fuse_req_t r, fuse_ino_t ino, struct fuse_file_info *fi) {
    (void)fi; nreq++;
    int i = node_of(ino);
    if (i < 0) { if (debug_ops) fprintf(stderr, "[%d] GETATTR unknown ino %#lx -> ESTALE\n", getpid(), ino);
                 fuse_reply_err(r, ESTALE); return; }
    struct stat st; attr_of(i, &st); fuse_reply_attr(r, &st, tmo);
}
static void op_readlink(fuse_req_t r, fuse_ino_t ino) {
    nreq++;
    int i = node_of(ino);
    if (i < 0 || !S_ISLNK(T[i].mode)) { fuse_reply_err(r, i < 0 ? ESTALE : EINVAL); return; }
    fuse_reply_readlink(r, T[i].data);
}
static int no_open;
static void op_open(fuse_req_t r, fuse_ino_t ino, struct fuse_file_info *fi) {
    nreq++;
    if (no_open) { fuse_reply_err(r, ENOSYS); return; }   /* like dapifs: FUSE_NO_OPEN_SUPPORT */
    int i = node_of(ino);
    if (i < 0) { fuse_reply_err(r, ESTALE); return; }
    fi->keep_cache = 1;
    fuse_reply_open(r, fi);
}
static void op_read(fuse_req_t r, fuse_ino_t ino, size_t sz, off_t off, struct fuse_file_info *fi) {
    (void)fi; nreq++;
    int i = node_of(ino);
    if (i < 0 || !T[i].data) { fuse_reply_err(r, i < 0 ? ESTALE : EISDIR); return; }
    if (hang && !strcmp(T[i].name, "annotations")) {
        fprintf(stderr, "[%d] READ annotations: hanging (never replying)\n", getpid());
        for (;;) pause();
    }
    size_t len = strlen(T[i].data);
    if ((size_t)off >= len) { fuse_reply_buf(r, NULL, 0); return; }
    if (off + sz > len) sz = len - off;
    fuse_reply_buf(r, T[i].data + off, sz);
}
static void op_readdir(fuse_req_t r, fuse_ino_t ino, size_t sz, off_t off, struct fuse_file_info *fi) {
    (void)fi; nreq++;
    int p = node_of(ino);
    if (p < 0) { fuse_reply_err(r, ESTALE); return; }
    char buf[4096]; size_t n = 0; int k = 0;
    for (int i = 1; i < NN; i++) {
        if (T[i].parent != p) continue;
        if (k++ < off) continue;
        struct stat st; attr_of(i, &st);
        size_t e = fuse_add_direntry(r, buf + n, sizeof buf - n, T[i].name, &st, k);
        if (n + e > sz || n + e > sizeof buf) break;
        n += e;
    }
    fuse_reply_buf(r, buf, n);
}
static void op_forget(fuse_req_t r, fuse_ino_t ino, uint64_t nl) {
    (void)ino; (void)nl; nforget++; fuse_reply_none(r);   /* stateless ids: nothing to drop */
}
static void op_forget_multi(fuse_req_t r, size_t c, struct fuse_forget_data *f) {
    (void)f; nforget += c; fuse_reply_none(r);
}
static const struct fuse_lowlevel_ops ops = {
    .init = op_init, .lookup = op_lookup, .getattr = op_getattr, .readlink = op_readlink,
    .open = op_open, .read = op_read, .readdir = op_readdir,
    .forget = op_forget, .forget_multi = op_forget_multi,
};

/* Feed libfuse a FUSE_INIT it never got from the kernel.  libfuse sets got_init and
 * writes an INIT reply; the kernel has no such request (unique not in its processing
 * list) and the write fails with ENOENT, which libfuse ignores silently. */
static void synth_init(struct fuse_session *se) {
    struct { struct fuse_in_header h; struct fuse_init_in i; } __attribute__((packed)) m;
    memset(&m, 0, sizeof m);
    m.h.len = sizeof m; m.h.opcode = FUSE_INIT;
    m.h.unique = 1ULL << 62;          /* even (not an interrupt reply), never a real id */
    m.i.major = FUSE_KERNEL_VERSION; m.i.minor = FUSE_KERNEL_MINOR_VERSION;
    m.i.max_readahead = 128 * 1024;
    m.i.flags = FUSE_ASYNC_READ | FUSE_POSIX_LOCKS | FUSE_ATOMIC_O_TRUNC | FUSE_EXPORT_SUPPORT |
                FUSE_BIG_WRITES | FUSE_DONT_MASK | FUSE_FLOCK_LOCKS | FUSE_HAS_IOCTL_DIR |
                FUSE_AUTO_INVAL_DATA | FUSE_DO_READDIRPLUS | FUSE_READDIRPLUS_AUTO |
                FUSE_ASYNC_DIO | FUSE_NO_OPEN_SUPPORT | FUSE_PARALLEL_DIROPS |
                FUSE_MAX_PAGES | FUSE_CACHE_SYMLINKS | FUSE_NO_OPENDIR_SUPPORT | FUSE_INIT_EXT;
    struct fuse_buf b = { .size = sizeof m, .mem = &m };
    fuse_session_process_buf(se, &b);
    fprintf(stderr, "[%d] synthesized FUSE_INIT processed\n", getpid());
}

static void notify_resend(int fd) {
    struct fuse_out_header o = { .len = sizeof o, .error = FUSE_NOTIFY_RESEND, .unique = 0 };
    ssize_t n = write(fd, &o, sizeof o);
    fprintf(stderr, "[%d] FUSE_NOTIFY_RESEND write -> %zd (%s)\n", getpid(), n, n < 0 ? strerror(errno) : "ok");
}

int main(int argc, char **argv) {
    const char *rawmnt = NULL, *mnt = NULL, *hsock = NULL, *tsock = NULL;
    int no_init = 0, resend = 0, dbg = 0, opt;
    while ((opt = getopt(argc, argv, "m:M:H:t:IRcT:gdvO")) != -1) switch (opt) {
        case 'm': mnt = optarg; break;   case 'M': rawmnt = optarg; break;   case 'H': hsock = optarg; break;
        case 't': tsock = optarg; break; case 'I': no_init = 1; break;
        case 'R': resend = 1; break;     case 'c': counter_ids = 1; break;
        case 'T': tmo = atof(optarg); break; case 'g': hang = 1; break;
        case 'd': dbg = 1; break;        case 'O': no_open = 1; break;        case 'v': debug_ops = 1; break;
        default: return 2;
    }
    srand(getpid()); cnext = 1000 + (rand() % 100000) * 7;  /* counter ids differ per process */
    char *fa[] = { argv[0], "-o", "fsname=lld,subtype=lld", dbg ? "-d" : NULL, NULL };
    struct fuse_args args = FUSE_ARGS_INIT(dbg ? 4 : 3, fa);
    struct fuse_session *se = fuse_session_new(&args, &ops, sizeof ops, NULL);
    if (!se) return 1;
    signal(SIGPIPE, SIG_IGN);
    if (mnt) {
        if (fuse_session_mount(se, mnt)) { fprintf(stderr, "mount failed\n"); return 1; }
        int fd = fuse_session_fd(se);
        fprintf(stderr, "[%d] mounted %s, /dev/fuse fd %d\n", getpid(), mnt, fd);
        if (hsock) {
            int s = unix_connect(hsock);
            if (s < 0 || send_fd(s, 'P', fd)) { perror("holder put"); return 1; }
            close(s);   /* SCM_RIGHTS installs a dup of the same struct file in the holder */
            fprintf(stderr, "[%d] fd sent to holder\n", getpid());
        }
    } else if (rawmnt) {
        /* mount(2) by hand: works even when MNT is a dead (ENOTCONN) fuse mount, which
         * libfuse's fuse_session_mount refuses because it stat()s the mountpoint first */
        int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
        char o[128], dev[32];
        snprintf(o, sizeof o, "fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other", fd);
        if (fd < 0 || mount("lld", rawmnt, "fuse.lld", MS_NOSUID | MS_NODEV, o)) { perror("mount(2)"); return 1; }
        snprintf(dev, sizeof dev, "/dev/fd/%d", fd);
        if (fuse_session_mount(se, dev)) return 1;   /* fresh connection: kernel sends INIT itself */
        fprintf(stderr, "[%d] mount(2)ed %s, fd %d\n", getpid(), rawmnt, fd);
    } else if (tsock) {
        int s = unix_connect(tsock); char op = 0;
        if (s < 0 || send_fd(s, 'G', -1)) { perror("holder get"); return 1; }
        int fd = recv_fd(s, &op); close(s);
        if (fd < 0 || op != 'F') { fprintf(stderr, "no fd from holder\n"); return 1; }
        char dev[32]; snprintf(dev, sizeof dev, "/dev/fd/%d", fd);
        if (fuse_session_mount(se, dev)) { fprintf(stderr, "mount %s failed\n", dev); return 1; }
        fprintf(stderr, "[%d] took over fd %d via %s\n", getpid(), fd, dev);
        if (!no_init) synth_init(se);
        if (resend) notify_resend(fd);
    } else { fprintf(stderr, "need -m or -t\n"); return 2; }
    fuse_set_signal_handlers(se);
    int rc = fuse_session_loop(se);
    fprintf(stderr, "[%d] loop exit %d; requests %lu forgets %lu\n", getpid(), rc, nreq, nforget);
    fuse_remove_signal_handlers(se);
    if (mnt) fuse_session_unmount(se);
    fuse_session_destroy(se);
    return 0;
}
