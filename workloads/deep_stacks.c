// Deep stacks that change from one allocation to the next, for checking that the unwinder's
// caches change no stack (built -O2 without frame pointers, so every frame is unwound with
// the tables):
//   - recursion: rec(d) for d in 1..=DEPTH allocates 16*d bytes at the bottom of d frames of
//     rec, ROUNDS times each, on each thread;
//   - the same depth through another caller: via_a and via_b (one frame each, the same size)
//     call leaf, which allocates 24 bytes (via_a) or 40 bytes (via_b), ROUNDS times each, so
//     the frame under leaf sits at the same stack address with different callers;
//   - callbacks: a table of three functions called through a pointer, each allocating its
//     own size (50, 58, 66 bytes) ROUNDS times.
// Usage: deep_stacks THREADS ROUNDS. Everything allocated is freed.
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define DEPTH 40

static int rounds;

__attribute__((noinline)) static void *rec(int d, size_t size) {
    void *p;
    if (d <= 1) {
        p = malloc(size);
    } else {
        p = rec(d - 1, size);
    }
    __asm__ volatile("" : : "r"(p) : "memory");
    return p;
}

__attribute__((noinline)) static void *leaf(size_t size) {
    void *p = malloc(size);
    __asm__ volatile("" : : "r"(p) : "memory");
    return p;
}

__attribute__((noinline)) static void *via_a(void) {
    void *p = leaf(24);
    __asm__ volatile("" : : "r"(p) : "memory");
    return p;
}

__attribute__((noinline)) static void *via_b(void) {
    void *p = leaf(40);
    __asm__ volatile("" : : "r"(p) : "memory");
    return p;
}

// Not tail calls: each callback keeps its frame under malloc.
#define CALLBACK(name, size)                                \
    __attribute__((noinline)) static void *name(void) {     \
        void *p = malloc(size);                              \
        __asm__ volatile("" : : "r"(p) : "memory");          \
        return p;                                            \
    }
CALLBACK(cb_one, 50)
CALLBACK(cb_two, 58)
CALLBACK(cb_three, 66)

static void *(*const callbacks[3])(void) = {cb_one, cb_two, cb_three};

static void *work(void *arg) {
    (void)arg;
    for (int r = 0; r < rounds; r++) {
        for (int d = 1; d <= DEPTH; d++) {
            free(rec(d, 16 * (size_t)d));
        }
        free(via_a());
        free(via_b());
        for (int c = 0; c < 3; c++) {
            free(callbacks[(r + c) % 3]());
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 4;
    rounds = argc > 2 ? atoi(argv[2]) : 100;
    pthread_t t[64];
    if (threads > 64) threads = 64;
    for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, work, NULL);
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    printf("done\n");
    return 0;
}
