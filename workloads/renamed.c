/* renamed: a thread seen under its first name, then renamed (pthread_setname_np), then alive
 * for another 1.5 s: the summary names it "worker-2". */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

void *volatile sink;

static void *worker(void *arg) {
    (void)arg;
    sink = malloc(100);
    usleep(300 * 1000);
    pthread_setname_np(pthread_self(), "worker-2");
    sink = malloc(100);
    usleep(1500 * 1000);
    return NULL;
}

int main(void) {
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    pthread_join(t, NULL);
    return 0;
}
