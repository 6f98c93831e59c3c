/* churn: prints "ready", then a thread mallocs and frees 64-byte blocks in a tight loop (in
 * churn_site) until a byte arrives on stdin, and 200 ms more. For the --pid test: the loop runs
 * while tracer attaches, so a free probe attached after the malloc one would miss frees. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

void *volatile sink;
static volatile int stop;

__attribute__((noinline)) static void churn_site(void) {
    void *p = malloc(64);
    sink = p;
    free(p);
}

static void *loop(void *arg) {
    (void)arg;
    while (!stop) churn_site();
    return NULL;
}

int main(void) {
    pthread_t t;
    pthread_create(&t, NULL, loop, NULL);
    printf("ready\n");
    fflush(stdout);
    char c;
    if (read(0, &c, 1) != 1) return 1;
    usleep(200000);
    stop = 1;
    pthread_join(t, NULL);
    return 0;
}
