// Sites whose frame that matters lies under allocator plumbing, for tracer's tests:
//   build_table:  a std::vector<long> grown by push_back to 1000 elements (libstdc++'s
//                 _M_realloc_insert and allocator frames, then operator new, under it), kept.
//   fill_pool:    50 blocks of 256 bytes through pool_alloc, the program's own malloc wrapper
//                 (plumbing only with --wrapper '^pool_alloc$'), kept.
#include <cstdlib>
#include <vector>

void *volatile sink;

__attribute__((noinline)) void *pool_alloc(std::size_t n) {
    void *p = std::malloc(n);
    sink = p;
    return p;
}

__attribute__((noinline)) static std::vector<long> *build_table() {
    auto *v = new std::vector<long>();
    for (long i = 0; i < 1000; i++) v->push_back(i);
    return v;
}

__attribute__((noinline)) static void fill_pool() {
    for (int i = 0; i < 50; i++) sink = pool_alloc(256);
}

int main() {
    sink = build_table();
    fill_pool();
    return 0;
}
