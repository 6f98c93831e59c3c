/* The malloc family called a known number of times with known sizes, for tracer's tests.
 *
 *   alloc ITERATIONS            the family pattern ITERATIONS times, then one leak
 *   alloc threads T N           main allocates N blocks for each of T threads, which free them
 *   alloc gate K M              K blocks, "ready", wait for stdin; then free the K blocks and
 *                               make and free M blocks of 777 bytes
 *
 * Per iteration of the family pattern (see family()):
 *   malloc 4 calls (10 + 100 + 1000 bytes, and one of 2^48 bytes that fails),
 *   calloc 2 (100 and 1000 bytes), realloc 3 (NULL->50, ->5000, ->0 which frees),
 *   reallocarray 1 (200 bytes), posix_memalign 1 (256), aligned_alloc 1 (128), memalign 1 (192),
 *   valloc 1 (300), pvalloc 1 (400), free 12 calls of which one is free(NULL).
 * The leak: 4242 bytes from leak_here(), on the line marked LEAK.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

void *volatile sink;
/* A NULL the compiler cannot see: it turns realloc(NULL, n) into malloc(n) otherwise. */
void *volatile null_block;

static void *keep(void *p) {
    sink = p;
    return p;
}

NOINLINE static void family(void) {
    void *a = keep(malloc(10)), *b = keep(malloc(100)), *c = keep(malloc(1000));
    if (keep(malloc((size_t)1 << 48)) != NULL) _exit(90);
    void *d = keep(calloc(4, 25)), *e = keep(calloc(10, 100));
    void *r = keep(realloc(null_block, 50));
    r = keep(realloc(r, 5000));
    if (keep(realloc(r, 0)) != NULL) _exit(91);
    void *ra = keep(reallocarray(null_block, 10, 20));
    void *pm = NULL;
    if (posix_memalign(&pm, 64, 256)) _exit(92);
    keep(pm);
    void *al = keep(aligned_alloc(64, 128)), *me = keep(memalign(64, 192));
    void *va = keep(valloc(300)), *pv = keep(pvalloc(400));
    void *all[] = {a, b, c, d, e, ra, pm, al, me, va, pv, NULL};
    for (unsigned i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
}

NOINLINE void *leak_here(void) {
    return keep(malloc(4242)); /* LEAK */
}

struct job {
    void **blocks;
    int n;
};

static void *free_them(void *arg) {
    struct job *job = arg;
    for (int i = 0; i < job->n; i++) free(job->blocks[i]);
    return NULL;
}

NOINLINE static void cross_thread(int threads, int n) {
    pthread_t tids[16];
    struct job jobs[16];
    static void *blocks[16][1024];
    if (threads > 16 || n > 1024) _exit(93);
    for (int t = 0; t < threads; t++) {
        for (int i = 0; i < n; i++) blocks[t][i] = keep(malloc(64 * (t + 1)));
        jobs[t] = (struct job){blocks[t], n};
    }
    for (int t = 0; t < threads; t++) pthread_create(&tids[t], NULL, free_them, &jobs[t]);
    for (int t = 0; t < threads; t++) pthread_join(tids[t], NULL);
}

NOINLINE static void after_gate(int m) {
    for (int i = 0; i < m; i++) free(keep(malloc(777)));
}

int main(int argc, char **argv) {
    if (argc >= 4 && !strcmp(argv[1], "threads")) {
        cross_thread(atoi(argv[2]), atoi(argv[3]));
        return 0;
    }
    if (argc >= 4 && !strcmp(argv[1], "gate")) {
        int k = atoi(argv[2]);
        void **early = malloc(sizeof(void *) * (size_t)k);
        for (int i = 0; i < k; i++) early[i] = keep(malloc(32));
        char byte;
        write(1, "ready\n", 6);
        if (read(0, &byte, 1) != 1) _exit(94);
        for (int i = 0; i < k; i++) free(early[i]);
        after_gate(atoi(argv[3]));
        return 0;
    }
    int iterations = argc > 1 ? atoi(argv[1]) : 1;
    for (int i = 0; i < iterations; i++) family();
    leak_here();
    return 0;
}
