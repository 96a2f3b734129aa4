// Any lockable joins lock_all's order and the lock-order checker by exposing a key and
// calling the hooks (docs/lock_order.md): a database advisory lock, and std::timed_mutex
// through lock_order::ordered. Checks: lock_all takes the lowest rank first.
#include <lakh/lock_order.hpp>

#include <cstdint>
#include <cstdio>
#include <mutex>
#include <set>
#include <string_view>

// Stand-ins for the database calls: the advisory locks held (one thread uses them here).
std::set<std::int64_t> held;
void exec(std::string_view sql, std::int64_t id) { // pg_advisory_lock or pg_advisory_unlock
  sql.find("unlock") == std::string_view::npos ? (void)held.insert(id) : (void)held.erase(id);
}
bool query_bool(std::string_view, std::int64_t id) { // pg_try_advisory_lock
  return held.insert(id).second;
}

// [doc:db_lock]
// A PostgreSQL advisory lock (exec/query_bool stand for the database calls; the real ones are
// lakh::pg::xact_advisory_lock and session_advisory_lock in lakh/pg/advisory_lock.hpp, built
// this way).
class db_lock {
public:
  explicit db_lock(std::int64_t id) : key_(5, "pg.advisory.tenant", std::uint64_t(id)), id_(id) {}
  lakh::lock_order::key lock_key() const { return key_; }

  void lock(const lakh::source_location &site = lakh::source_location::current()) {
    lakh::lock_order::on_acquire(key_, this, site); // before blocking
    try {
      exec("SELECT pg_advisory_lock($1)", id_);
    } catch (...) {
      lakh::lock_order::on_release(this);
      throw;
    }
  }
  bool try_lock(const lakh::source_location &site = lakh::source_location::current()) {
    if (!query_bool("SELECT pg_try_advisory_lock($1)", id_)) {
      return false;
    }
    lakh::lock_order::on_try_acquire(key_, this, site);
    return true;
  }
  void unlock() {
    lakh::lock_order::on_release(this);
    exec("SELECT pg_advisory_unlock($1)", id_);
  }

private:
  lakh::lock_order::key key_;
  std::int64_t id_;
};
// [doc:db_lock]

int main() {
  lakh::lock_order::set_mode(lakh::lock_order::mode::throw_error); // a misorder throws
  bool db_first = false, io_first = false;
  {
    // [doc:db_lock]
    lakh::ranked_mutex tenant_cache_mu(10, "tenant.cache");
    db_lock tenant_lock(42);
    const auto g = lakh::lock_all(tenant_cache_mu, tenant_lock); // database lock (rank 5) first
    // [doc:db_lock]
    db_first = g.acquisition_order()[0] == 1;
  }
  lakh::ranked_mutex cache_mu(10, "cache");
  {
    // [doc:ordered]
    lakh::lock_order::ordered<std::timed_mutex> io{lakh::lock_order::key(4, "io")};
    const auto g = lakh::lock_all(cache_mu, io);
    // [doc:ordered]
    io_first = g.acquisition_order()[0] == 1;
  }
  std::printf("database lock first: %d, io first: %d\n", db_first, io_first);
  return db_first && io_first ? 0 : 1;
}
