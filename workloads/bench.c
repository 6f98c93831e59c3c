/* bench PAIRS [DEPTH [PAGES]]: PAIRS malloc(32)/free pairs, made DEPTH calls deep (default 0),
 * and PAGES first-touched pages (default PAIRS); prints the nanoseconds each took on average,
 * as "PAIR_NS PAGE_NS". For `cargo xtask bench`. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

void *volatile sink;

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

__attribute__((noinline)) static void pairs(long n) {
    for (long i = 0; i < n; i++) {
        void *p = malloc(32);
        sink = p;
        free(p);
    }
}

/* Recurses DEPTH frames before the loop, so each stack walk has that many frames to go. */
__attribute__((noinline)) static void deep(long n, int depth) {
    if (depth > 0) {
        deep(n, depth - 1);
        sink = &n; /* not a tail call */
    } else {
        pairs(n);
    }
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 100000;
    int depth = argc > 2 ? atoi(argv[2]) : 0;
    long pages = argc > 3 ? atol(argv[3]) : n;
    long page = sysconf(_SC_PAGESIZE);
    double t0 = now_ns();
    deep(n, depth);
    double t1 = now_ns();
    char *m = mmap(NULL, (size_t)(pages * page), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return 1;
    for (long i = 0; i < pages; i++) m[i * page] = 1;
    double t2 = now_ns();
    printf("%.1f %.1f\n", (t1 - t0) / n, (t2 - t1) / pages);
    return 0;
}
