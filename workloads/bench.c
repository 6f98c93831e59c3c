/* bench N: N malloc(32)/free pairs and N first-touched pages; prints the nanoseconds each
 * took on average, as "pair_ns PAGE_ns". For `cargo xtask bench`. */
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

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 100000;
    long page = sysconf(_SC_PAGESIZE);
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
        void *p = malloc(32);
        sink = p;
        free(p);
    }
    double t1 = now_ns();
    char *m = mmap(NULL, (size_t)(n * page), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return 1;
    for (long i = 0; i < n; i++) m[i * page] = 1;
    double t2 = now_ns();
    printf("%.1f %.1f\n", (t1 - t0) / n, (t2 - t1) / n);
    return 0;
}
