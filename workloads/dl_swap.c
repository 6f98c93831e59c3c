/* dl_swap DIR LIB N [fifo]: chdir to DIR, dlopen("./LIB") (a path relative to our own working
 * directory, not tracer's), with `fifo` rename a FIFO over DIR/LIB, then call its lib_alloc(N)
 * and wait 300 ms. A tracer that opens the library by its name reads the wrong file, or
 * blocks forever on the FIFO. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    if (chdir(argv[1]) != 0) return 3;
    char rel[4096];
    snprintf(rel, sizeof rel, "./%s", argv[2]);
    void *lib = dlopen(rel, RTLD_NOW);
    if (!lib) return 4;
    if (argc > 4 && strcmp(argv[4], "fifo") == 0) {
        if (mkfifo("swap.fifo", 0600) != 0 || rename("swap.fifo", argv[2]) != 0) return 5;
    }
    void (*lib_alloc)(int) = (void (*)(int))dlsym(lib, "lib_alloc");
    if (!lib_alloc) return 6;
    lib_alloc(atoi(argv[3]));
    usleep(300000);
    return 0;
}
