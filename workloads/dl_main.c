/* dl_main LIB N [MS [close]]: dlopen LIB, wait MS milliseconds, and call its lib_alloc(N);
 * with `close`, dlclose LIB after (its blocks stay allocated, its code is unmapped). */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    void *lib = dlopen(argv[1], RTLD_NOW);
    if (!lib) return 3;
    void (*lib_alloc)(int) = (void (*)(int))dlsym(lib, "lib_alloc");
    if (!lib_alloc) return 4;
    if (argc > 3) usleep(1000 * atoi(argv[3]));
    lib_alloc(atoi(argv[2]));
    if (argc > 4 && !strcmp(argv[4], "close") && dlclose(lib)) return 5;
    return 0;
}
