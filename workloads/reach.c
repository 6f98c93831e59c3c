/* reach: one block (or structure) in each of memcheck's leak categories at exit, each with a
 * size of its own, for the leak check. Build with -O0 so the compiler keeps every store.
 *   direct:    2 x malloc(1000), dropped outright             (definitely lost: 2 blocks)
 *   list:      5 x malloc(2000), a list whose head is dropped  (1 lost, 4 indirectly lost)
 *   interior:  malloc(3000), kept only as p + 16 in a global   (possibly lost)
 *   global:    malloc(4000), kept in a global                  (still reachable)
 *   tls:       malloc(5000), kept in a thread-local            (still reachable)
 *   stack:     malloc(6000), kept only on a blocked thread's stack (still reachable)
 *   register:  malloc(7000), kept only in r15 of a spinning thread (its stack holds it
 *              scrambled)
 *   cycle:     3 x malloc(8000), a ring with no pointer from outside (1 lost, 2 indirect)
 *   freed:     malloc(9000), freed                             (not live)
 * The two holder threads never end: main's return ends the process with them stopped in place. */
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct node {
    struct node *next;
};

void *global_block;
char *interior_pointer;
__thread void *tls_block;

/* Set by the register holder once the pointer is in r15 (and nowhere else). */
volatile int in_register;

static pthread_mutex_t ready_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ready_cond = PTHREAD_COND_INITIALIZER;
static int ready;

#define SCRAMBLE ((uintptr_t)0x5a5a5a5a5a5a5a5aull)

static void say_ready(void) {
    pthread_mutex_lock(&ready_lock);
    ready++;
    pthread_cond_broadcast(&ready_cond);
    pthread_mutex_unlock(&ready_lock);
}

__attribute__((noinline)) static void *stack_holder(void *arg) {
    (void)arg;
    void *volatile held = malloc(6000);
    say_ready();
    for (;;)
        pause();
    return held;
}

__attribute__((noinline)) static void *register_holder(void *arg) {
    (void)arg;
    volatile uintptr_t scrambled = (uintptr_t)malloc(7000) ^ SCRAMBLE;
    uintptr_t key = SCRAMBLE;
    uintptr_t value = scrambled;
    scrambled = 0;
    /* The pointer exists only in r15 from here on; main goes on once it is there. */
    __asm__ volatile("mov %1, %%r15\n\t"
                     "xor %2, %%r15\n\t"
                     "movl $1, %0\n\t"
                     "1: pause\n\t"
                     "jmp 1b"
                     : "=m"(in_register)
                     : "r"(value), "r"(key)
                     : "r15", "memory");
    return NULL;
}

__attribute__((noinline)) static void direct(void) {
    void *volatile p = malloc(1000);
    p = malloc(1000);
    p = NULL;
}

__attribute__((noinline)) static void list(void) {
    struct node *head = NULL;
    for (int i = 0; i < 5; i++) {
        struct node *n = malloc(2000);
        memset(n, 0, 2000);
        n->next = head;
        head = n;
    }
    head = NULL;
}

__attribute__((noinline)) static void interior(void) {
    char *p = malloc(3000);
    memset(p, 0, 3000);
    interior_pointer = p + 16;
}

__attribute__((noinline)) static void cycle(void) {
    struct node *a = malloc(8000), *b = malloc(8000), *c = malloc(8000);
    memset(a, 0, 8000);
    memset(b, 0, 8000);
    memset(c, 0, 8000);
    a->next = b;
    b->next = c;
    c->next = a;
    a = b = c = NULL;
}

/* Stale pointers left below in the stack by the calls above are overwritten. */
__attribute__((noinline)) static void scrub(void) {
    volatile char area[16384];
    memset((char *)area, 0, sizeof area);
}

int main(void) {
    pthread_t t;
    pthread_create(&t, NULL, stack_holder, NULL);
    pthread_create(&t, NULL, register_holder, NULL);
    pthread_mutex_lock(&ready_lock);
    while (ready < 1)
        pthread_cond_wait(&ready_cond, &ready_lock);
    pthread_mutex_unlock(&ready_lock);
    while (!in_register)
        sched_yield();
    direct();
    list();
    interior();
    global_block = malloc(4000);
    tls_block = malloc(5000);
    cycle();
    free(malloc(9000));
    scrub();
    return 0;
}
