/* shared helpers: SCM_RIGHTS fd passing, timing */
#pragma once
#define _GNU_SOURCE
#include <sys/socket.h>
#include <sys/un.h>
#include <string.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <time.h>
#include <errno.h>

static inline double now_s(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* send one byte `op` plus (optionally) one fd */
static inline int send_fd(int sock, char op, int fd) {
    struct msghdr m = {0};
    struct iovec iov = { &op, 1 };
    char cbuf[CMSG_SPACE(sizeof(int))];
    memset(cbuf, 0, sizeof cbuf);
    m.msg_iov = &iov; m.msg_iovlen = 1;
    if (fd >= 0) {
        m.msg_control = cbuf; m.msg_controllen = sizeof cbuf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET; c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof(int));
    }
    return sendmsg(sock, &m, 0) == 1 ? 0 : -1;
}

/* receive one byte into *op and an fd (or -1) */
static inline int recv_fd(int sock, char *op) {
    struct msghdr m = {0};
    struct iovec iov = { op, 1 };
    char cbuf[CMSG_SPACE(sizeof(int))];
    m.msg_iov = &iov; m.msg_iovlen = 1;
    m.msg_control = cbuf; m.msg_controllen = sizeof cbuf;
    ssize_t n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
    if (n != 1) return -2;
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    if (!c || c->cmsg_type != SCM_RIGHTS) return -1;
    int fd; memcpy(&fd, CMSG_DATA(c), sizeof(int));
    return fd;
}

static inline int unix_connect(const char *path) {
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    strncpy(a.sun_path, path, sizeof a.sun_path - 1);
    if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) { close(s); return -1; }
    return s;
}
