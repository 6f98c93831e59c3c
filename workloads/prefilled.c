/* prefilled: memory touched before tracer attaches, reused after. Fills 5,000 x 1 KiB blocks,
 * keeps one block above them (so that glibc cannot trim the heap), frees them, says "ready" and
 * waits for the file argv[1] to exist (tracer has attached by then); then allocates 5,000 x
 * 1 KiB again (leak_reused: served from the pages it touched before, so no page fault is seen)
 * and keeps them until killed, or with argv[2] "exit" exits at once (they leak). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void *volatile keep[5000];
void *volatile pin;

__attribute__((noinline)) static void leak_reused(void) {
    for (int i = 0; i < 5000; i++) keep[i] = malloc(1024);
}

int main(int argc, char **argv) {
    for (int i = 0; i < 5000; i++) {
        keep[i] = malloc(1024);
        memset(keep[i], 1, 1024);
    }
    pin = malloc(64);
    for (int i = 0; i < 5000; i++) free(keep[i]);
    printf("ready\n");
    fflush(stdout);
    while (argc > 1 && access(argv[1], F_OK) != 0) usleep(10 * 1000);
    leak_reused();
    if (argc > 2 && !strcmp(argv[2], "exit")) _exit(0);
    for (;;) pause();
}
