/* sampled: allocations with known sites, sizes and leaks, for --sample's estimates.
 *   churn_4k:  40,000 x malloc(4096), freed      (163,840,000 bytes)
 *   churn_10k: 20,000 x malloc(10000), freed     (200,000,000 bytes)
 *   churn_1k: 100,000 x malloc(1000), freed      (100,000,000 bytes)
 *   leak_4k:   25,000 x malloc(4096), never freed (102,400,000 bytes)
 *   tiny:       1,000 x malloc(100), freed       (100,000 bytes: under 1% of the total)
 * Blocks stay below glibc's mmap threshold. */
#include <stdlib.h>

void *volatile sink;

__attribute__((noinline)) static void churn(long n, size_t size) {
    for (long i = 0; i < n; i++) {
        void *p = malloc(size);
        sink = p;
        free(p);
    }
}

__attribute__((noinline)) static void churn_4k(void) { churn(40000, 4096); }
__attribute__((noinline)) static void churn_10k(void) { churn(20000, 10000); }
__attribute__((noinline)) static void churn_1k(void) { churn(100000, 1000); }
__attribute__((noinline)) static void tiny(void) { churn(1000, 100); }

__attribute__((noinline)) static void leak_4k(void) {
    for (long i = 0; i < 25000; i++) sink = malloc(4096);
}

int main(void) {
    churn_4k();
    churn_10k();
    churn_1k();
    leak_4k();
    tiny();
    return 0;
}
