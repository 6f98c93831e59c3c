/* A library that dlopen-ing programs call into: lib_alloc(n) makes n blocks of 333 bytes. */
#include <stdlib.h>

void *volatile lib_sink;

__attribute__((noinline)) void lib_alloc(int n) {
    for (int i = 0; i < n; i++) lib_sink = malloc(333); /* LIB ALLOC */
}
