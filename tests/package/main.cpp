// The smallest program a lakh user writes: lakh's core, and lakh::pg against the PostgreSQL in
// DATABASE_URL (scripts/services sets it); exits 0 when both work. Built against an installed
// lakh (find_package, pkg-config) and from the source tree (FetchContent), so a broken pg
// include, link or dependency fails it. lakh::pg::with_database calls libpq itself: linking it
// proves that lakh::pg brings libpq along.
#include <lakh/lakh.hpp>
#include <lakh/pg.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>

int main() {
  std::printf("lakh %s\n", lakh::version_string);
  const char *url = std::getenv("DATABASE_URL");
  if (url == nullptr || *url == '\0') {
    std::fprintf(stderr, "lakh_consumer: DATABASE_URL is not set (run under scripts/services)\n");
    return 2;
  }
  if (lakh::pg::with_database("postgresql://h/a", "b") != "host='h' dbname='b'") {
    return 1;
  }
  lakh::pg::pool db(url, 2);
  lakh::pg::retrier retry;
  const int answer = retry.run(db, [](pqxx::work &tx) {
    lakh::pg::xact_advisory_lock lock(tx, lakh::pg::advisory_key(7, 7)); // released at commit
    return tx.exec("SELECT 6 * 7")[0][0].as<int>();
  });
  std::printf("lakh::pg: %d from PostgreSQL\n", answer);
  return answer == 42 ? 0 : 1;
}
