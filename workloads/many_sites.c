/* many_sites BITS ROUNDS: 2^BITS distinct allocation stacks (a path of BITS calls, each through
 * one of two functions), each making a malloc(16)/free pair, ROUNDS times over: a flood of
 * events spread over very many call sites, for the periodic summaries' tests and the bench. */
#include <stdlib.h>

void *volatile sink;

__attribute__((noinline)) static void leaf(void) {
    sink = malloc(16);
    free(sink);
}

__attribute__((noinline)) static void left(unsigned bits, int n);
__attribute__((noinline)) static void right(unsigned bits, int n);

__attribute__((noinline)) static void left(unsigned bits, int n) {
    if (n == 0) {
        leaf();
    } else if (bits & 1) {
        left(bits >> 1, n - 1);
    } else {
        right(bits >> 1, n - 1);
    }
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) static void right(unsigned bits, int n) {
    if (n == 0) {
        leaf();
    } else if (bits & 1) {
        left(bits >> 1, n - 1);
    } else {
        right(bits >> 1, n - 1);
    }
    __asm__ volatile("" ::: "memory");
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int bits = atoi(argv[1]);
    int rounds = atoi(argv[2]);
    for (int r = 0; r < rounds; r++)
        for (unsigned k = 0; k < (1u << bits); k++) left(k, bits);
    return 0;
}
