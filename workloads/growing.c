/* growing: a process that runs for a while with one leak among steady memory, for the live
 * view and its leak suspects. STEPS steps (argv[1], default 300), 10 ms apart:
 *   leak_step:  malloc(1000), never freed            (STEPS x 1000 bytes live at the end)
 *   cache_fill: malloc(2000) on each of the first 50 steps, kept: a cache that fills and
 *               then holds (100,000 bytes live: a plateau, not a suspect)
 *   scratch:    malloc(8000) and free, every step    (0 bytes live)
 * Blocks stay below glibc's mmap threshold. */
#include <stdlib.h>
#include <time.h>

void *volatile sink;
void *volatile cache[50];

__attribute__((noinline)) static void leak_step(void) { sink = malloc(1000); }

__attribute__((noinline)) static void cache_fill(int i) {
    if (i < 50) cache[i] = malloc(2000);
}

__attribute__((noinline)) static void scratch(void) {
    void *p = malloc(8000);
    sink = p;
    free(p);
}

int main(int argc, char **argv) {
    int steps = argc > 1 ? atoi(argv[1]) : 300;
    struct timespec pause = {0, 10 * 1000 * 1000};
    for (int i = 0; i < steps; i++) {
        leak_step();
        cache_fill(i);
        scratch();
        nanosleep(&pause, NULL);
    }
    return 0;
}
