// hello: a correct C++ program, for the leak check. libstdc++ keeps its emergency exception
// pool and iostream's buffers until the end on purpose: still reachable, never lost (memcheck
// says the same).
#include <iostream>

int main() {
    std::cout << "hello" << std::endl;
    return 0;
}
