// The bench's C++ row: GCC's own compiler (cc1plus, a large C++ program built without frame
// pointers) compiling this file, which pulls in much of the standard library.
#include <algorithm>
#include <iostream>
#include <map>
#include <string>
#include <vector>

int main() {
    std::map<std::string, std::vector<int>> m;
    m["a"].push_back(1);
    std::cout << m.size() << '\n';
}
