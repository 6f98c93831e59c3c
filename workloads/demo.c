/* The demo workload `cargo xtask run` profiles: a little of everything tracer follows.
 *   - small mallocs on the main thread grow the main-arena heap with brk;
 *   - large mallocs (above the 128 KiB mmap threshold) get their own mmap, and free munmaps;
 *   - a large block grown with realloc moves with mremap;
 *   - a file is mapped and unmapped directly;
 *   - a second thread allocates from its own mmapped arena;
 *   - some blocks are never freed.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Stores here keep the compiler from eliding allocations whose memory is never read. */
void *volatile sink;

static void *worker(void *arg) {
    (void)arg;
    void *blocks[256];
    for (int i = 0; i < 256; i++) {
        blocks[i] = malloc(512 + i);
        memset(blocks[i], 1, 512 + i);
        sink = blocks[i];
    }
    for (int i = 0; i < 256; i++) free(blocks[i]);
    return 0;
}

__attribute__((noinline)) static char *make_small_objects(int n) {
    char *keep = 0;
    for (int i = 0; i < n; i++) {
        char *p = malloc(64 + (i % 8) * 32);
        memset(p, 0, 64);
        sink = p;
        if (i % 2) free(p);
        else keep = p; /* half are kept: they leak */
    }
    return keep;
}

__attribute__((noinline)) static void big_buffers(void) {
    for (int i = 0; i < 4; i++) {
        char *p = malloc(1 << 20);
        memset(p, 2, 1 << 20);
        sink = p;
        free(p);
    }
}

__attribute__((noinline)) static void growing_buffer(void) {
    size_t size = 256 << 10;
    char *p = malloc(size);
    memset(p, 3, size);
    while (size < (4u << 20)) {
        size *= 2;
        p = realloc(p, size);
        memset(p, 4, size);
        sink = p;
    }
    free(p);
}

__attribute__((noinline)) static void map_a_file(void) {
    int fd = open("/proc/self/exe", O_RDONLY);
    if (fd < 0) return;
    void *m = mmap(0, 8192, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m != MAP_FAILED) munmap(m, 8192);
    close(fd);
}

int main(void) {
    make_small_objects(20000);
    big_buffers();
    growing_buffer();
    map_a_file();
    pthread_t t;
    if (pthread_create(&t, 0, worker, 0) == 0) pthread_join(t, 0);
    return 0;
}
