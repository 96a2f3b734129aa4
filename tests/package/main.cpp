// The smallest program a lakh user writes: it uses lakh's headers and exits 0 when they work.
#include <lakh/lakh.hpp>

#include <cstdio>
#include <cstring>

int main() {
  std::printf("lakh %s\n", lakh::version_string);
  return std::strlen(lakh::version_string) > 0 ? 0 : 1;
}
