/* oom_grow: grows one call site until the kernel's OOM killer ends it (run it in a memory
 * cgroup with a limit), or BLOCKS times.
 *   oom_grow [BLOCKS [PAUSE_MS]]
 * Prints "ready" and waits for a byte on stdin; then takes 1 MiB blocks from hoard() every
 * PAUSE_MS (5 unless given) milliseconds, touching each page, and after each one prints the running total of bytes hoard() has
 * allocated ("total N"). Every block stays live. After BLOCKS blocks it prints "done" and
 * waits for stdin to close. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BLOCK (1 << 20)

static void *kept[1 << 16];

__attribute__((noinline)) static void *hoard(void) {
    char *p = malloc(BLOCK);
    if (p)
        memset(p, 0x5a, BLOCK);
    return p;
}

int main(int argc, char **argv) {
    long blocks = argc > 1 ? atol(argv[1]) : (long)(sizeof kept / sizeof kept[0]);
    printf("ready\n");
    fflush(stdout);
    char byte;
    if (read(0, &byte, 1) != 1)
        return 1;
    long pause_ms = argc > 2 ? atol(argv[2]) : 5;
    struct timespec pause = {0, pause_ms * 1000 * 1000};
    long total = 0;
    for (long n = 0; n < blocks && n < (long)(sizeof kept / sizeof kept[0]); n++) {
        kept[n] = hoard();
        if (!kept[n])
            return 2;
        total += BLOCK;
        printf("total %ld\n", total);
        fflush(stdout);
        if (pause_ms > 0)
            nanosleep(&pause, NULL);
    }
    printf("done\n");
    fflush(stdout);
    while (read(0, &byte, 1) > 0) {
    }
    return 0;
}
