/* member: a process of a traced cgroup, with allocations known exactly.
 *   member COUNT [CHILD]
 * Prints "ready" and waits for a byte on stdin; then, with CHILD, forks a child that makes
 * CHILD calls of malloc(1000), frees them and exits 0. Itself makes COUNT calls of
 * malloc(2000 + i) for i in 0..COUNT and frees each, waits for its child, prints "done" and
 * waits for stdin to close before it exits 0. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

__attribute__((noinline)) static void churn(long count, long base) {
    for (long i = 0; i < count; i++) {
        char *volatile p = malloc((size_t)(base + (base == 1000 ? 0 : i)));
        p[0] = 1;
        free(p);
    }
}

int main(int argc, char **argv) {
    if (argc < 2)
        return 64;
    long count = atol(argv[1]);
    long child = argc > 2 ? atol(argv[2]) : 0;
    printf("ready\n");
    fflush(stdout);
    char byte;
    if (read(0, &byte, 1) != 1)
        return 1;
    pid_t pid = 0;
    if (child > 0) {
        pid = fork();
        if (pid == 0) {
            churn(child, 1000);
            _exit(0);
        }
    }
    churn(count, 2000);
    if (pid > 0)
        waitpid(pid, NULL, 0);
    printf("done\n");
    fflush(stdout);
    while (read(0, &byte, 1) > 0) {
    }
    return 0;
}
