#define _GNU_SOURCE
#include "cshim.h"
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
#include <errno.h>

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif

int rg_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }
int rg_epoll_op_add(void) { return EPOLL_CTL_ADD; }
int rg_epoll_op_mod(void) { return EPOLL_CTL_MOD; }
int rg_epoll_op_del(void) { return EPOLL_CTL_DEL; }

int rg_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data) {
    struct epoll_event ev = {0};
    if (events & 1u) ev.events |= EPOLLIN | EPOLLRDHUP;
    if (events & 2u) ev.events |= EPOLLOUT;
    ev.data.u64 = data;
    return epoll_ctl(epfd, op, fd, &ev);
}

int rg_epoll_wait(int epfd, uint64_t *datas, uint32_t *evs, int max, int timeout_ms) {
    struct epoll_event events[256];
    if (max > 256) max = 256;
    int n = epoll_wait(epfd, events, max, timeout_ms);
    for (int i = 0; i < n; i++) {
        uint32_t e = 0;
        if (events[i].events & (EPOLLIN | EPOLLPRI)) e |= 1u;
        if (events[i].events & EPOLLOUT) e |= 2u;
        if (events[i].events & (EPOLLHUP | EPOLLERR | EPOLLRDHUP)) e |= 4u;
        datas[i] = events[i].data.u64;
        evs[i] = e;
    }
    return n;
}

int rg_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

int rg_accept4(int fd, struct sockaddr *addr, socklen_t *len) {
    return accept4(fd, addr, len, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

int rg_rename_noreplace(int olddirfd, const char *oldpath, int newdirfd, const char *newpath) {
    return (int)syscall(SYS_renameat2, olddirfd, oldpath, newdirfd, newpath, RENAME_NOREPLACE);
}

int rg_set_nonblocking(int fd) {
    int flags = fcntl(fd, F_GETFL, 0);
    if (flags < 0) return -1;
    return fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}
