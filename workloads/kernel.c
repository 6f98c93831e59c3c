/* Workloads for tracer's kernel-path tests.
 *
 *   kernel paths N      N small mallocs (brk), N mallocs of 1 MiB (a dedicated mmap each, the
 *                       threshold pinned with mallopt), N small mallocs on a second thread
 *                       (thread arena); all freed
 *   kernel touch K      mmap K anonymous pages directly and touch each; then malloc a block of
 *                       K pages and touch each of its pages
 *   kernel vmas N       N one-page shared anonymous mmaps: each its own VMA, never merged;
 *                       then N pipes opened and closed (each a kmalloc'd pipe_inode_info
 *                       and buffer array)
 *   kernel leaks        two 4 MiB leaks: one never touched, one touched throughout
 *   kernel gate K       "ready", wait for stdin, then `touch K` and `vmas K`
 *   kernel held K       "ready", wait for stdin, then read one byte of each of K pages of a
 *                       file in the page cache, 64 KiB apart (a fault each, no page taken:
 *                       the last fault is what the kernel still holds back), "done", and
 *                       wait for stdin again before exiting
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

void *volatile sink;
static long page;

NOINLINE static void small_allocs(int n, void **out) {
    for (int i = 0; i < n; i++) sink = out[i] = malloc(100);
}

NOINLINE static void big_allocs(int n, void **out) {
    for (int i = 0; i < n; i++) sink = out[i] = malloc(1 << 20);
}

NOINLINE static void *thread_allocs(void *arg) {
    int n = *(int *)arg;
    void *blocks[256];
    for (int i = 0; i < n && i < 256; i++) sink = blocks[i] = malloc(200);
    for (int i = 0; i < n && i < 256; i++) free(blocks[i]);
    return NULL;
}

static void paths(int n) {
    mallopt(M_MMAP_THRESHOLD, 512 << 10);
    void *small[256], *big[256];
    if (n > 256) _exit(90);
    small_allocs(n, small);
    big_allocs(n, big);
    pthread_t t;
    pthread_create(&t, NULL, thread_allocs, &n);
    pthread_join(t, NULL);
    for (int i = 0; i < n; i++) {
        free(small[i]);
        free(big[i]);
    }
}

NOINLINE static char *touch_block(long k) {
    char *p = malloc((size_t)(k * page));
    for (long i = 0; i < k; i++) p[i * page + 64] = 1;
    return p;
}

static void touch(long k) {
    char *m = mmap(NULL, (size_t)(k * page), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) _exit(91);
    for (long i = 0; i < k; i++) m[i * page] = 1;
    sink = touch_block(k);
}

static void vmas(int n) {
    for (int i = 0; i < n; i++)
        sink = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    for (int i = 0; i < n; i++) {
        int fds[2];
        if (pipe(fds)) break;
        close(fds[0]);
        close(fds[1]);
    }
}

/* Read faults on a file whose pages are all in the page cache: mapped, not allocated. */
static void held(long k) {
    char path[] = "/tmp/tracer-held-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) _exit(92);
    unlink(path);
    size_t stride = 64 << 10, len = (size_t)k * stride;
    char *buf = calloc(1, stride);
    for (long i = 0; i < k; i++)
        if (write(fd, buf, stride) != (ssize_t)stride) _exit(93);
    char *m = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) _exit(94);
    long sum = 0;
    for (long i = 0; i < k; i++) sum += ((volatile char *)m)[i * stride];
    sink = (void *)sum;
}

NOINLINE static void *leak_untouched(void) {
    return malloc(4 << 20); /* UNTOUCHED */
}

NOINLINE static void *leak_touched(void) {
    char *p = malloc(4 << 20); /* TOUCHED */
    memset(p, 1, 4 << 20);
    return p;
}

int main(int argc, char **argv) {
    page = sysconf(_SC_PAGESIZE);
    if (argc < 2) return 2;
    int n = argc > 2 ? atoi(argv[2]) : 0;
    if (!strcmp(argv[1], "paths")) paths(n);
    else if (!strcmp(argv[1], "touch")) touch(n);
    else if (!strcmp(argv[1], "vmas")) vmas(n);
    else if (!strcmp(argv[1], "leaks")) {
        sink = leak_untouched();
        sink = leak_touched();
    } else if (!strcmp(argv[1], "gate")) {
        char byte;
        write(1, "ready\n", 6);
        if (read(0, &byte, 1) != 1) return 3;
        touch(n);
        vmas(n);
    } else if (!strcmp(argv[1], "held")) {
        char byte;
        write(1, "ready\n", 6);
        if (read(0, &byte, 1) != 1) return 3;
        held(n);
        write(1, "done\n", 5);
        if (read(0, &byte, 1) != 1) return 3;
    } else return 2;
    return 0;
}
