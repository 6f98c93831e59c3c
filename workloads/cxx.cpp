// C++ allocations for tracer's tests: `cxx N` runs the pattern N times.
// Per iteration: operator new 4 calls (new int, new int[10], nothrow new, aligned new of 64
// bytes), operator delete 4 calls (delete, delete[], delete, aligned delete). The malloc and
// free calls inside them are part of those calls and must not be counted again.
#include <cstdlib>
#include <new>

struct alignas(64) Aligned {
    char bytes[64];
};

void *volatile sink;

__attribute__((noinline)) static void pattern() {
    int *one = new int(7);
    int *many = new int[10];
    int *quiet = new (std::nothrow) int(8);
    Aligned *aligned = new Aligned;
    sink = one;
    sink = many;
    sink = quiet;
    sink = aligned;
    delete one;
    delete[] many;
    delete quiet;
    delete aligned;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? std::atoi(argv[1]) : 1;
    for (int i = 0; i < n; i++) pattern();
    return 0;
}
