/* prefilled: memory touched before tracer attaches, reused after. Fills 5,000 x 1 KiB blocks,
 * frees them, says "ready" and waits for the file argv[1] to exist (tracer has attached by
 * then); then allocates 5,000 x 1 KiB again (leak_reused: served from the pages it touched
 * before, so no page fault is seen) and keeps them until killed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void *volatile keep[5000];

__attribute__((noinline)) static void leak_reused(void) {
    for (int i = 0; i < 5000; i++) keep[i] = malloc(1024);
}

int main(int argc, char **argv) {
    for (int i = 0; i < 5000; i++) {
        keep[i] = malloc(1024);
        memset(keep[i], 1, 1024);
    }
    for (int i = 0; i < 5000; i++) free(keep[i]);
    printf("ready\n");
    fflush(stdout);
    while (argc > 1 && access(argv[1], F_OK) != 0) usleep(10 * 1000);
    leak_reused();
    for (;;) pause();
}
