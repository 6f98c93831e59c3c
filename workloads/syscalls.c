/* A workload with a known pattern of brk, mmap, munmap and mremap calls, for tracer's tests.
 *
 *   syscalls ITERATIONS [--threads T] [--gate] [--exit CODE]
 *
 * Each iteration makes, through raw syscalls (no libc allocation on the way):
 *   brk:    a query, grow by 64 KiB twice, one refused request, shrink back: 5 calls, 1 query,
 *           128 KiB grown, 128 KiB shrunk, 1 failed. (Skipped in threads: the break is global.)
 *   mmap:   3 pages anonymous private, 2 pages of a file private, 1 page anonymous shared,
 *           and one failing call (length 0): 4 calls, 6 pages, 1 failed.
 *   mremap: the 3-page mapping grown to 5 pages: 1 call, 3 pages old, 5 pages new.
 *   munmap: the 5-, 2- and 1-page mappings and one failing call: 4 calls, 8 pages, 1 failed.
 * With --threads T, T threads each run ITERATIONS iterations without the brk part.
 * With --gate, it prints "ready" and waits for a byte on stdin before the pattern.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static long page;
static int exe_fd;

static void die(const char *what) {
    write(2, what, strlen(what));
    write(2, "\n", 1);
    _exit(99);
}

static long sys_mmap(void *addr, long len, long prot, long flags, long fd, long off) {
    return syscall(SYS_mmap, addr, len, prot, flags, fd, off);
}

static void brk_pattern(void) {
    long cur = syscall(SYS_brk, 0);
    if (syscall(SYS_brk, cur + 65536) != cur + 65536) die("brk grow");
    if (syscall(SYS_brk, cur + 131072) != cur + 131072) die("brk grow 2");
    /* Far beyond any limit: refused, the break stays. */
    if (syscall(SYS_brk, cur + (1L << 46)) != cur + 131072) die("brk refusal");
    if (syscall(SYS_brk, cur) != cur) die("brk shrink");
}

static void mmap_pattern(void) {
    long anon = sys_mmap(0, 3 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    long file = sys_mmap(0, 2 * page, PROT_READ, MAP_PRIVATE, exe_fd, 0);
    long shared = sys_mmap(0, page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (anon < 0 || file < 0 || shared < 0) die("mmap");
    if (sys_mmap(0, 0, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) != -1) die("mmap len 0");
    ((char *)anon)[0] = 1;
    long moved = syscall(SYS_mremap, anon, 3 * page, 5 * page, MREMAP_MAYMOVE, 0);
    if (moved < 0) die("mremap");
    if (syscall(SYS_munmap, moved, 5 * page) || syscall(SYS_munmap, file, 2 * page) ||
        syscall(SYS_munmap, shared, page))
        die("munmap");
    if (syscall(SYS_munmap, shared + 1, page) != -1) die("munmap unaligned");
}

static long iterations;

static void *thread_main(void *arg) {
    (void)arg;
    for (long i = 0; i < iterations; i++) mmap_pattern();
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) die("usage: syscalls ITERATIONS [--threads T] [--gate] [--exit CODE]");
    page = sysconf(_SC_PAGESIZE);
    iterations = atol(argv[1]);
    int threads = 0, gate = 0, code = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--gate")) gate = 1;
        else if (!strcmp(argv[i], "--exit") && i + 1 < argc) code = atoi(argv[++i]);
        else die("unknown argument");
    }
    exe_fd = open("/proc/self/exe", O_RDONLY);
    if (exe_fd < 0) die("open /proc/self/exe");
    if (gate) {
        char byte;
        write(1, "ready\n", 6);
        if (read(0, &byte, 1) != 1) die("gate");
    }
    if (threads > 0) {
        pthread_t tids[64];
        if (threads > 64) die("too many threads");
        for (int t = 0; t < threads; t++)
            if (pthread_create(&tids[t], 0, thread_main, 0)) die("pthread_create");
        for (int t = 0; t < threads; t++) pthread_join(tids[t], 0);
    } else {
        for (long i = 0; i < iterations; i++) {
            brk_pattern();
            mmap_pattern();
        }
    }
    return code;
}
