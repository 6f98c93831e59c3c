/* two_threads: two threads that allocate at their own sites once the file argv[1] exists:
 * thread_a 300 x malloc(100), thread_b 500 x malloc(200), all kept; prints "tids A B" first,
 * then waits until killed. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static const char *go;
static volatile int tids[2];
void *volatile sink;

static void wait_go(void) {
    while (access(go, F_OK) != 0) usleep(10 * 1000);
}

__attribute__((noinline)) static void *thread_a(void *arg) {
    (void)arg;
    tids[0] = gettid();
    wait_go();
    for (int i = 0; i < 300; i++) sink = malloc(100);
    for (;;) pause();
}

__attribute__((noinline)) static void *thread_b(void *arg) {
    (void)arg;
    tids[1] = gettid();
    wait_go();
    for (int i = 0; i < 500; i++) sink = malloc(200);
    for (;;) pause();
}

int main(int argc, char **argv) {
    go = argc > 1 ? argv[1] : "/nonexistent";
    pthread_t a, b;
    pthread_create(&a, NULL, thread_a, NULL);
    pthread_create(&b, NULL, thread_b, NULL);
    while (!tids[0] || !tids[1]) usleep(1000);
    printf("tids %d %d\n", tids[0], tids[1]);
    fflush(stdout);
    for (;;) pause();
}
