/* random_live N: keeps 100,000 blocks of random sizes (16 B to 4 KiB) live and replaces N of
 * them at random, freeing the old block first. Less regular than a malloc/free loop, so
 * recordings and replay are measured on something like a real heap. For `cargo xtask bench`. */
#include <stdlib.h>

#define SLOTS 100000

static unsigned long long state = 0x9e3779b97f4a7c15ull;

static unsigned long long next(void) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    static void *slots[SLOTS];
    for (long i = 0; i < SLOTS; i++) slots[i] = malloc(16 + next() % 4080);
    for (long i = 0; i < n; i++) {
        long s = (long)(next() % SLOTS);
        free(slots[s]);
        slots[s] = malloc(16 + next() % 4080);
    }
    for (long i = 0; i < SLOTS; i++) free(slots[i]);
    return 0;
}
