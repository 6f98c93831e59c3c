/* forker: three processes with known allocations, each its own sites.
 *   the parent:     10 x malloc(1000) never freed (in_parent), then forks the child and waits;
 *                   exits 0.
 *   the child:      frees one block it inherited (a free of a block it never allocated),
 *                   20 x malloc(2000) freed (in_child), forks the grandchild and waits; exits 3.
 *   the grandchild: 30 x malloc(3000) never freed (in_grandchild); exits 5.
 * Processes end with _exit: nothing else runs (no atexit handlers, no stdio). */
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

void *volatile keep[32];

__attribute__((noinline)) static void in_parent(void) {
    for (int i = 0; i < 10; i++) keep[i] = malloc(1000);
}

__attribute__((noinline)) static void in_child(void) {
    for (int i = 0; i < 20; i++) {
        void *p = malloc(2000);
        keep[31] = p;
        free(p);
    }
}

__attribute__((noinline)) static void in_grandchild(void) {
    for (int i = 0; i < 30; i++) keep[i] = malloc(3000);
}

static int wait_for(pid_t pid) {
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {}
    return status;
}

int main(void) {
    in_parent();
    pid_t child = fork();
    if (child == 0) {
        free(keep[0]);
        in_child();
        pid_t grandchild = fork();
        if (grandchild == 0) {
            in_grandchild();
            _exit(5);
        }
        wait_for(grandchild);
        _exit(3);
    }
    wait_for(child);
    _exit(0);
}
