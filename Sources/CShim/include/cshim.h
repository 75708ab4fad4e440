/// CShim: the few Linux system calls Swift's Glibc overlay does not import.
/// Thin wrappers only: no logic lives here.
#ifndef RELAYGATE_CSHIM_H
#define RELAYGATE_CSHIM_H
#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>

int rg_epoll_create(void);
/// events: bit 0 readable, bit 1 writable. Returns 0 or -1 with errno.
int rg_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data);
/// Waits; fills fds[i] and evs[i] (bit 0 in, bit 1 out, bit 2 hangup/error). Returns count or -1.
int rg_epoll_wait(int epfd, uint64_t *datas, uint32_t *evs, int max, int timeout_ms);
int rg_epoll_op_add(void);
int rg_epoll_op_mod(void);
int rg_epoll_op_del(void);

int rg_eventfd(void);
int rg_accept4(int fd, struct sockaddr *addr, socklen_t *len);
/// renameat2(RENAME_NOREPLACE): never overwrites an existing queue file.
int rg_rename_noreplace(int olddirfd, const char *oldpath, int newdirfd, const char *newpath);
int rg_set_nonblocking(int fd);
#endif
