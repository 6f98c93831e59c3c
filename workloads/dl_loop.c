/* dl_loop LIB N [MARK]: dlopen and dlclose LIB N times. Each dlopen maps code, where tracer
 * holds a launched command until the library's unwind table is in: the holds a test kills
 * tracer in the middle of. MARK only names the run in its command line. */
#include <dlfcn.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int n = atoi(argv[2]);
    for (int i = 0; i < n; i++) {
        void *lib = dlopen(argv[1], RTLD_NOW);
        if (!lib) return 4;
        dlclose(lib);
    }
    return 0;
}
