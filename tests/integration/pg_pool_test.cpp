// Integration tests of lakh::pg::pool against a real PostgreSQL (DATABASE_URL).
#include <lakh/pg/conninfo.hpp>
#include <lakh/pg/pool.hpp>

#include <support/lsan_libpqxx.hpp>
#include <support/scratch_database.hpp>

#include <doctest/doctest.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
namespace pg = lakh::pg;
using lakh::test::database_url;

namespace {

int backend_pid(pqxx::connection &c) {
  pqxx::nontransaction tx(c);
  return tx.exec("SELECT pg_backend_pid()")[0][0].as<int>();
}

int select_one(pqxx::connection &c) {
  pqxx::work tx(c);
  int v = tx.exec("SELECT 1")[0][0].as<int>();
  tx.commit();
  return v;
}

void terminate_backend(int pid) {
  // The second argument makes pg_terminate_backend wait (up to 5 s) until the process is gone.
  auto ok = lakh::test::pg::scalar<bool>(database_url(), "SELECT pg_terminate_backend(" +
                                                             std::to_string(pid) + ", 5000)");
  REQUIRE(ok);
}

/// An option of the client's socket of `c` (what libpq applied to the TCP connection).
int socket_option(pqxx::connection &c, int level, int name) {
  int v = -1;
  socklen_t n = sizeof v;
  REQUIRE(::getsockopt(c.sock(), level, name, &v, &n) == 0);
  return v;
}

/// Options of a pool of one connection that waits `acquire_timeout` for it.
pg::pool_options one_connection(std::chrono::milliseconds acquire_timeout) {
  pg::pool_options o;
  o.url = database_url();
  o.max_size = 1;
  o.acquire_timeout = acquire_timeout;
  return o;
}

} // namespace

TEST_CASE("pg.pool.acquire.reuses_idle_connection") {
  pg::pool p(database_url(), 2);
  int pid = 0;
  {
    auto c = p.acquire();
    REQUIRE(c);
    CHECK(c.status() == lakh::status::ok);
    CHECK(select_one(*c) == 1);
    pid = backend_pid(*c);
    auto s = p.stats();
    CHECK(s.size == 1);
    CHECK(s.in_use == 1);
    CHECK(s.idle == 0);
  }
  auto s = p.stats();
  CHECK(s.idle == 1);
  CHECK(s.in_use == 0);
  auto c = p.acquire();
  REQUIRE(c);
  CHECK(backend_pid(*c) == pid); // the same connection came back
  CHECK(p.stats().created == 1);
  CHECK(p.stats().acquired == 2);
}

TEST_CASE("pg.pool.bound.max_in_use_never_exceeds_size" * doctest::timeout(60)) {
  for (std::size_t size : {1U, 3U}) {
    for (int threads : {2, 8}) {
      CAPTURE(size);
      CAPTURE(threads);
      pg::pool p(database_url(), size);
      std::atomic<int> now{0};
      std::atomic<int> peak{0};
      std::atomic<long> sum{0};
      constexpr int per_thread = 15;
      {
        std::vector<std::jthread> ts;
        for (int t = 0; t < threads; ++t) {
          ts.emplace_back([&] {
            for (int i = 0; i < per_thread; ++i) {
              auto c = p.acquire();
              REQUIRE(c);
              int n = now.fetch_add(1) + 1;
              int prev = peak.load();
              while (n > prev && !peak.compare_exchange_weak(prev, n)) {
              }
              // Each thread's first lease is held until as many are out at once as the pool
              // allows, so that saturation is reached however the threads are scheduled (a
              // slow build such as TSan's may otherwise never have them overlap).
              const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
              while (i == 0 && peak.load() < std::min(threads, static_cast<int>(size)) &&
                     std::chrono::steady_clock::now() < deadline) {
                std::this_thread::yield();
              }
              sum += select_one(*c);
              now.fetch_sub(1);
            }
          });
        }
      }
      auto s = p.stats();
      CHECK(sum.load() == threads * per_thread);
      CHECK(peak.load() <= static_cast<int>(size));
      CHECK(s.max_in_use <= size);
      CHECK(s.created <= size);
      CHECK(s.size <= size);
      CHECK(s.in_use == 0);
      CHECK(s.acquired == static_cast<std::uint64_t>(threads * per_thread));
      if (static_cast<std::size_t>(threads) > size) {
        CHECK(s.max_in_use == size); // the pool was saturated at some point
      }
    }
  }
}

TEST_CASE("pg.pool.acquire_for.times_out_when_all_leased" * doctest::timeout(30)) {
  pg::pool p(database_url(), 1);
  auto held = p.acquire();
  REQUIRE(held);
  auto t0 = std::chrono::steady_clock::now();
  auto c = p.acquire_for(50ms);
  CHECK_FALSE(c);
  CHECK(c.status() == lakh::status::timeout);
  CHECK(std::chrono::steady_clock::now() - t0 >= 40ms);
  auto u = p.acquire_until(std::chrono::steady_clock::now() + 20ms);
  CHECK(u.status() == lakh::status::timeout);
  auto t = p.try_acquire();
  CHECK(t.status() == lakh::status::empty);
  CHECK_THROWS_AS((void)t.get(), lakh::usage_error);
  auto s = p.stats();
  CHECK(s.timeouts == 2);
  CHECK(s.waits == 2);
  held.release();
  CHECK(p.try_acquire());
}

TEST_CASE("pg.pool.acquire.cancelled_by_stop_token" * doctest::timeout(30)) {
  pg::pool p(database_url(), 1);
  std::stop_source pre;
  pre.request_stop();
  CHECK(p.acquire(pre.get_token()).status() == lakh::status::cancelled);

  auto held = p.acquire();
  REQUIRE(held);
  std::stop_source ss;
  lakh::status got = lakh::status::ok;
  std::jthread waiter([&] { got = p.acquire(ss.get_token()).status(); });
  while (p.stats().waits == 0) {
    std::this_thread::sleep_for(1ms);
  }
  ss.request_stop();
  waiter.join();
  CHECK(got == lakh::status::cancelled);
  CHECK(p.stats().cancellations == 2);
  CHECK(p.stats().in_use == 1);
}

TEST_CASE("pg.pool.close.waiters_and_later_acquires_see_closed" * doctest::timeout(30)) {
  pg::pool p(database_url(), 1);
  auto held = p.acquire();
  REQUIRE(held);
  lakh::status got = lakh::status::ok;
  std::jthread waiter([&] { got = p.acquire().status(); });
  while (p.stats().waits == 0) {
    std::this_thread::sleep_for(1ms);
  }
  p.close();
  waiter.join();
  CHECK(got == lakh::status::closed);
  CHECK(p.closed());
  CHECK(p.acquire().status() == lakh::status::closed);
  CHECK(p.acquire_for(10ms).status() == lakh::status::closed);
  CHECK(p.try_acquire().status() == lakh::status::closed);
  CHECK(select_one(*held) == 1); // a lease taken before close() still works
  held.release();
  auto s = p.stats();
  CHECK(s.size == 0); // closed on return, not pooled
  CHECK(s.idle == 0);
  p.close(); // idempotent
}

TEST_CASE("pg.pool.terminated_idle_connection_is_replaced" * doctest::timeout(30)) {
  pg::pool p(database_url(), 1);
  int pid = 0;
  {
    auto c = p.acquire();
    REQUIRE(c);
    pid = backend_pid(*c);
  }
  terminate_backend(pid);
  auto c = p.acquire();
  REQUIRE(c);
  CHECK(select_one(*c) == 1);
  CHECK(backend_pid(*c) != pid);
  auto s = p.stats();
  CHECK(s.replaced == 1);
  CHECK(s.created == 2);
  CHECK(s.size == 1);
}

TEST_CASE("pg.pool.connection_broken_while_leased_is_replaced" * doctest::timeout(30)) {
  pg::pool p(database_url(), 1);
  int pid = 0;
  {
    auto c = p.acquire();
    REQUIRE(c);
    pid = backend_pid(*c);
    terminate_backend(pid);
    CHECK_THROWS_AS(select_one(*c), pqxx::broken_connection);
  } // returned: !is_open(), so discarded
  CHECK(p.stats().replaced == 1);
  {
    auto c = p.acquire();
    REQUIRE(c);
    CHECK(select_one(*c) == 1);
    CHECK(backend_pid(*c) != pid);
    c.mark_broken(); // explicitly marked: discarded although healthy
    CHECK(c.marked_broken());
  }
  auto s = p.stats();
  CHECK(s.replaced == 2);
  CHECK(s.size == 0);
  auto c = p.acquire();
  CHECK(select_one(*c) == 1);
  CHECK(p.stats().created == 3);
}

TEST_CASE("pg.pool.validation.query_mode_and_on_connect") {
  std::atomic<int> hooks{0};
  pg::pool_options o;
  o.url = database_url();
  o.max_size = 1;
  o.validate = pg::validation::query;
  o.on_connect = [&](pqxx::connection &c) {
    ++hooks;
    pqxx::nontransaction tx(c);
    tx.exec("SET application_name = 'lakh_pool_test'");
  };
  pg::pool p(std::move(o));
  for (int i = 0; i < 3; ++i) {
    auto c = p.acquire();
    pqxx::nontransaction tx(*c);
    CHECK(tx.exec("SHOW application_name")[0][0].as<std::string>() == "lakh_pool_test");
  }
  CHECK(hooks.load() == 1);
}

TEST_CASE("pg.pool.bad_url.error_names_target_without_password") {
  SUBCASE("refused") {
    pg::pool p("postgresql://alice:s3cretpw@127.0.0.1:1/ledger?connect_timeout=2", 2);
    CHECK(p.target() == "127.0.0.1:1/ledger");
    try {
      auto c = p.acquire();
      FAIL("acquire should throw");
    } catch (const pg::connect_error &e) {
      std::string what = e.what();
      CAPTURE(what);
      CHECK(what.find("lakh::pg: cannot connect to 127.0.0.1:1/ledger: ") == 0);
      CHECK(what.find("refused") != std::string::npos);
      CHECK(what.find("s3cretpw") == std::string::npos);
      CHECK(e.target() == "127.0.0.1:1/ledger");
    }
    auto s = p.stats();
    CHECK(s.connect_failures == 1);
    CHECK(s.in_use == 0); // the permit came back
    CHECK(s.size == 0);
  }
  SUBCASE("malformed key=value") {
    try {
      auto c = pg::connect("host=127.0.0.1 port=abc dbname=ledger password=s3cretpw");
      FAIL("connect should throw");
    } catch (const pg::connect_error &e) {
      std::string what = e.what();
      CAPTURE(what);
      CHECK(what.find("127.0.0.1:abc/ledger") != std::string::npos);
      CHECK(what.find("port") != std::string::npos);
      CHECK(what.find("s3cretpw") == std::string::npos);
    }
  }
  SUBCASE("a connect_error is a pqxx::broken_connection") {
    CHECK_THROWS_AS((void)pg::connect("postgresql://u:pw@127.0.0.1:1/x?connect_timeout=2"),
                    pqxx::broken_connection);
  }
}

TEST_CASE("pg.pool.options.invalid_sizes_throw") {
  CHECK_THROWS_WITH_AS(pg::pool(database_url(), 0),
                       "lakh::pg::pool: max_size (0) must be in 1..10000", std::invalid_argument);
  CHECK_THROWS_AS(pg::pool(database_url(), static_cast<std::size_t>(-1)), std::invalid_argument);
  pg::pooled_connection empty;
  CHECK_FALSE(empty);
  CHECK_THROWS_WITH_AS((void)*empty,
                       "lakh::pg::pooled_connection::get: no connection (acquire status: closed)",
                       lakh::usage_error);
}

TEST_CASE("pg.pool.lease_outlives_pool") {
  pg::pooled_connection c;
  {
    pg::pool p(database_url(), 1);
    c = p.acquire();
    REQUIRE(c);
  }
  CHECK(select_one(*c) == 1);
  c.release();
  CHECK_FALSE(c);
}

TEST_CASE("pg.pool.connect.a_lost_connection_is_never_silently_reopened" * doctest::timeout(30)) {
  // libpqxx 6 would reopen the connection on its next use, without the session's state (a SET
  // ROLE, for one): lakh::pg::connect inhibits that, so the loss keeps surfacing.
  auto c = pg::connect(database_url());
  {
    pqxx::nontransaction tx(*c);
    tx.exec("SET application_name = 'lakh-reactivation-test'");
  }
  terminate_backend(backend_pid(*c));
  // (libpqxx 6.4 with reactivation: the first use throws, a later one quietly reconnects.)
  for (int i = 0; i < 3; ++i) {
    CHECK_THROWS_AS(select_one(*c), pqxx::broken_connection); // still lost: not reopened
  }
  CHECK_FALSE(c->is_open());
}

TEST_CASE("pg.pool.acquire_timeout.bounds_the_helpers_wait" * doctest::timeout(30)) {
  pg::pool p(one_connection(100ms));
  auto held = p.acquire(); // the pool is exhausted
  REQUIRE(held);
  const auto t0 = std::chrono::steady_clock::now();
  try {
    (void)pg::with_connection(p, [](pqxx::connection &c) { return select_one(c); });
    FAIL("with_connection did not time out");
  } catch (const pg::acquire_error &e) {
    CHECK(e.status() == lakh::status::timeout);
  }
  const auto waited = std::chrono::steady_clock::now() - t0;
  CHECK(waited >= 100ms);
  CHECK(waited < 5s);
  CHECK(p.stats().timeouts == 1);
  held.release();
  CHECK(pg::with_connection(p, [](pqxx::connection &c) { return select_one(c); }) == 1);
}

TEST_CASE("pg.pool.acquire_default_until.the_earlier_of_timeout_and_deadline" *
          doctest::timeout(30)) {
  pg::pool p(one_connection(300ms));
  auto held = p.acquire(); // the pool is exhausted
  REQUIRE(held);
  const auto waited = [&](auto deadline) {
    const auto t0 = std::chrono::steady_clock::now();
    auto lease = p.acquire_default_until(deadline);
    CHECK(lease.status() == lakh::status::timeout);
    return std::chrono::steady_clock::now() - t0;
  };
  // The deadline first (any clock): it bounds the wait.
  auto w = waited(std::chrono::system_clock::now() + 50ms);
  CHECK(w >= 40ms);
  CHECK(w < 250ms);
  // The acquire timeout first, also when the deadline is "never".
  w = waited(std::chrono::steady_clock::now() + 10s);
  CHECK(w >= 300ms);
  CHECK(w < 5s);
  w = waited(std::chrono::system_clock::time_point::max());
  CHECK(w >= 300ms);
  CHECK(w < 5s);
  CHECK(p.stats().timeouts == 3);
  held.release();
  CHECK(p.acquire_default_until(std::chrono::steady_clock::now() + 1s));
}

TEST_CASE("pg.pool.connections_bound_a_half_open_connection") {
  // lakh's conninfo defaults reach the socket: keepalive probes after 30 s idle, every 10 s,
  // 3 unanswered ones end the connection, and so do 60 s of unacknowledged data.
  pg::pool p(database_url(), 1);
  {
    auto c = p.acquire();
    REQUIRE(c);
    CHECK(socket_option(*c, SOL_SOCKET, SO_KEEPALIVE) == 1);
    CHECK(socket_option(*c, IPPROTO_TCP, TCP_KEEPIDLE) == 30);
    CHECK(socket_option(*c, IPPROTO_TCP, TCP_KEEPINTVL) == 10);
    CHECK(socket_option(*c, IPPROTO_TCP, TCP_KEEPCNT) == 3);
    CHECK(socket_option(*c, IPPROTO_TCP, TCP_USER_TIMEOUT) == 60000);
  }
  // The caller's connection string wins, in the URI form and the key=value form.
  const std::string url = database_url();
  pg::pool uri(url + (url.find('?') == std::string::npos ? "?" : "&") +
                   "keepalives_idle=77&tcp_user_timeout=5000",
               1);
  {
    auto c = uri.acquire();
    REQUIRE(c);
    CHECK(socket_option(*c, IPPROTO_TCP, TCP_KEEPIDLE) == 77);
    CHECK(socket_option(*c, IPPROTO_TCP, TCP_USER_TIMEOUT) == 5000);
    CHECK(socket_option(*c, IPPROTO_TCP, TCP_KEEPCNT) == 3);
  }
  const auto key_value = pg::with_database(url, "postgres");
  pg::pool count(key_value + " keepalives_count=5", 1);
  {
    auto c = count.acquire();
    REQUIRE(c);
    CHECK(socket_option(*c, IPPROTO_TCP, TCP_KEEPCNT) == 5);
    CHECK(socket_option(*c, IPPROTO_TCP, TCP_KEEPIDLE) == 30);
  }
  pg::pool off(key_value + " keepalives=0", 1); // libpq then sets no tcp_user_timeout either
  {
    auto c = off.acquire();
    REQUIRE(c);
    CHECK(socket_option(*c, SOL_SOCKET, SO_KEEPALIVE) == 0);
  }
}
