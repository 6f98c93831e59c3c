/* A library built without frame pointers, loaded by dl_main: lib_alloc(n) makes n blocks of
 * 444 bytes three calls deep (lib_alloc -> lib_middle -> lib_leaf), each call followed by work
 * so that none becomes a tail call. */
#include <stdlib.h>

void *volatile lib_sink;
volatile int lib_work;

__attribute__((noinline)) static void lib_leaf(void) {
    lib_sink = malloc(444); /* DEEP ALLOC */
    lib_work++;
}

__attribute__((noinline)) static void lib_middle(void) {
    lib_leaf();
    lib_work++;
}

__attribute__((noinline)) void lib_alloc(int n) {
    for (int i = 0; i < n; i++) lib_middle();
    lib_work++;
}
