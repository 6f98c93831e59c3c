/* big_heap: a heap of known size for the leak check's pause. argv[1] MiB of heap in blocks of
 * argv[2] bytes (default 100 MiB of 256-byte blocks), each holding a pointer to the next, the
 * list's head in a global (all still reachable); argv[3] MiB of other writable memory (an
 * anonymous mapping filled with small numbers, default 10). Prints "exiting" (flushed) just
 * before it returns from main, then exits. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

void *head;

int main(int argc, char **argv) {
    long heap_mib = argc > 1 ? atol(argv[1]) : 100;
    long block = argc > 2 ? atol(argv[2]) : 256;
    long other_mib = argc > 3 ? atol(argv[3]) : 10;
    long blocks = (heap_mib << 20) / block;
    for (long i = 0; i < blocks; i++) {
        void **b = malloc(block);
        memset(b, 1, block);
        b[0] = head;
        head = b;
    }
    size_t other = (size_t)other_mib << 20;
    long *data = mmap(NULL, other, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (size_t i = 0; i < other / sizeof(long); i++)
        data[i] = (long)i;
    printf("exiting\n");
    fflush(stdout);
    return 0;
}
