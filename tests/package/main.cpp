// The smallest program a lakh user writes: it uses lakh's headers and exits 0 when they work.
// lakh::pg::with_database calls libpq itself: linking it proves lakh::pg brings libpq along.
#include <lakh/lakh.hpp>
#include <lakh/pg/conninfo.hpp>

#include <cstdio>
#include <cstring>

int main() {
  std::printf("lakh %s\n", lakh::version_string);
  const bool pg_ok = lakh::pg::with_database("postgresql://h/a", "b") == "host='h' dbname='b'";
  return std::strlen(lakh::version_string) > 0 && pg_ok ? 0 : 1;
}
