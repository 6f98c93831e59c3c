/* threads T N: T threads started together, each making N malloc(32)/free pairs at once: a
 * flood of allocator events from many producers, for the ring reader's tests and the bench.
 * Exits when every thread is done. */
#include <pthread.h>
#include <stdlib.h>

void *volatile sink;
static pthread_barrier_t go;
static long pairs;

static void *worker(void *arg) {
    (void)arg;
    pthread_barrier_wait(&go);
    for (long i = 0; i < pairs; i++) {
        void *p = malloc(32);
        sink = p;
        free(p);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int t = atoi(argv[1]);
    pairs = atol(argv[2]);
    pthread_t *ids = calloc(t, sizeof *ids);
    pthread_barrier_init(&go, 0, t);
    for (int i = 0; i < t; i++) pthread_create(&ids[i], 0, worker, 0);
    for (int i = 0; i < t; i++) pthread_join(ids[i], 0);
    return 0;
}
