/* findings: one pattern per finding, chosen by argv[1], with known numbers.
 *   retained:   20,000 x malloc(512) touched, one malloc(64) pinning the top of the heap
 *               (pin_top), then the 20,000 freed: ~10 MiB resident and free.
 *   churn:      50 x malloc(33 MiB) (above glibc's 32 MiB dynamic-threshold cap: always an
 *               mmap), 4 pages touched, freed (churn_big).
 *   realloc:    a buffer grown by realloc from 1 KiB to 100 KiB, 1 KiB a step, with a block
 *               of its new size allocated after each step, so it cannot grow in place and the
 *               hole it left is too small for it (grow_buffer): 99 moves copying
 *               1 + 2 + ... + 99 KiB = 5,068,800 bytes.
 *   temporary:  100,000 x malloc(64) then free (scratch64).
 *   leak:       2,000 x malloc(100) never freed (leak100: 200,000 bytes).
 *   mmaps:      5,000 x mmap(4 KiB) kept, alternating protections so that no two merge
 *               (many_maps): 5,000 VMAs.
 *   arenas:     8 threads alive together, each malloc(64) once (arena_user): a thread arena
 *               each, 64 MiB of address space apiece, almost none of it touched.
 *   clean:      100 x malloc(100), all freed.
 * Nothing is printed (stdio would allocate). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

void *volatile sink;
void *volatile keep[20000];

__attribute__((noinline)) static void *fill(size_t n) {
    void *p = malloc(n);
    memset(p, 1, n);
    return p;
}

__attribute__((noinline)) static void pin_top(void) { sink = malloc(64); }

static void retained(void) {
    for (int i = 0; i < 20000; i++) keep[i] = fill(512);
    pin_top();
    for (int i = 0; i < 20000; i++) free(keep[i]);
}

__attribute__((noinline)) static void churn_big(void) {
    for (int i = 0; i < 50; i++) {
        char *p = malloc(33u << 20);
        for (int page = 0; page < 4; page++) p[page * 4096] = 1;
        sink = p;
        free(p);
    }
}

__attribute__((noinline)) static void grow_buffer(void) {
    char *buf = NULL;
    for (int i = 1; i <= 100; i++) {
        buf = realloc(buf, (size_t)i * 1024);
        buf[0] = 1;
        keep[i] = malloc((size_t)i * 1024);
    }
    sink = buf;
    free(buf);
    for (int i = 1; i <= 100; i++) free(keep[i]);
}

__attribute__((noinline)) static void scratch64(void) {
    for (int i = 0; i < 100000; i++) {
        void *p = malloc(64);
        sink = p;
        free(p);
    }
}

__attribute__((noinline)) static void leak100(void) {
    for (int i = 0; i < 2000; i++) sink = malloc(100);
}

__attribute__((noinline)) static void many_maps(void) {
    for (int i = 0; i < 5000; i++) {
        int prot = i % 2 ? PROT_READ : PROT_READ | PROT_WRITE;
        sink = mmap(NULL, 4096, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    }
}

static pthread_barrier_t all_in;

__attribute__((noinline)) static void *arena_user(void *arg) {
    (void)arg;
    pthread_barrier_wait(&all_in);
    void *p = malloc(64);
    sink = p;
    pthread_barrier_wait(&all_in);
    free(p);
    return NULL;
}

static void arenas(void) {
    pthread_t t[8];
    pthread_barrier_init(&all_in, NULL, 8);
    for (int i = 0; i < 8; i++) pthread_create(&t[i], NULL, arena_user, NULL);
    for (int i = 0; i < 8; i++) pthread_join(t[i], NULL);
}

static void clean(void) {
    for (int i = 0; i < 100; i++) keep[i] = malloc(100);
    for (int i = 0; i < 100; i++) free(keep[i]);
}

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "clean";
    if (!strcmp(what, "retained")) retained();
    else if (!strcmp(what, "churn")) churn_big();
    else if (!strcmp(what, "realloc")) grow_buffer();
    else if (!strcmp(what, "temporary")) scratch64();
    else if (!strcmp(what, "leak")) leak100();
    else if (!strcmp(what, "mmaps")) many_maps();
    else if (!strcmp(what, "arenas")) arenas();
    else clean();
    return 0;
}
