/* service: a long-running process that leaks one block per request, for live leak checks.
 * Prints "ready" and waits for a byte on stdin; then serves a request every 2 ms until killed:
 *   handle:  malloc(512) for the request, its pointer dropped  (one lost block per request)
 *   session: malloc(256) kept in a global table slot, reused  (still reachable, 64 at most)
 * After each request the count served is written to the file named by argv[1] (if any). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void *sessions[64];

__attribute__((noinline)) static void handle(long n) {
    char *volatile request = malloc(512);
    memset(request, (int)n, 512);
    request = NULL;
}

__attribute__((noinline)) static void session(long n) {
    void **slot = &sessions[n % 64];
    free(*slot);
    *slot = malloc(256);
}

/* Stale pointers below the stack pointer are overwritten. */
__attribute__((noinline)) static void scrub(void) {
    volatile char area[4096];
    memset((char *)area, 0, sizeof area);
}

int main(int argc, char **argv) {
    printf("ready\n");
    fflush(stdout);
    char byte;
    if (read(0, &byte, 1) != 1)
        return 1;
    struct timespec pause = {0, 2 * 1000 * 1000};
    for (long n = 1;; n++) {
        handle(n);
        session(n);
        scrub();
        if (argc > 1) {
            FILE *f = fopen(argv[1], "w");
            if (f) {
                fprintf(f, "%ld\n", n);
                fclose(f);
            }
        }
        nanosleep(&pause, NULL);
    }
}
