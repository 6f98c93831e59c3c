// A C++ library for dlopen tests: lib_alloc(n) makes and deletes n arrays of 12 ints with
// operator new[] / delete[]. Loading it brings libstdc++ into a process that had none.
#include <cstddef>

int *volatile cxx_sink;

extern "C" __attribute__((noinline)) void lib_alloc(int n) {
    for (int i = 0; i < n; i++) {
        int *a = new int[12];
        cxx_sink = a;
        delete[] a;
    }
}
