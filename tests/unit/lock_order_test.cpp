// Tests for lakh/lock_order.hpp and the headers it includes (lakh/ranked_mutex.hpp,
// lakh/lock_all.hpp): ranked mutexes, lock_all's global order, the lock-order checker
// (cycles, rank inversions, recursive acquisition, modes), assert_held, the foreign-lockable
// extension point, and (under Clang -Wthread-safety) the annotations.
//
// Every test sets the checker's mode explicitly (it is off by default under TSan and in
// release builds) and starts from an empty graph.
#include <lakh/lock_order.hpp>
#include <lakh/thread_annotations.hpp>

#include <doctest/doctest.h>

#if defined(__unix__)
#  include <csignal>
#  include <sys/resource.h>
#  include <sys/wait.h>
#  include <unistd.h>
#endif

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <numeric>
#include <optional>
#include <random>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <vector>

namespace lo = lakh::lock_order;

// Several tests take locks in inverted orders ON PURPOSE, inside inverted_on_purpose(), to
// exercise lakh's checker. ThreadSanitizer's own detector sees the same inversions; tell it
// to skip those (and only those) reports.
#if LAKH_DETAIL_TSAN
extern "C" const char *__tsan_default_suppressions() {
  return "deadlock:inverted_on_purpose\n";
}
#endif

namespace {

/// Runs fn, which takes locks in an order that inverts an earlier one on purpose.
template <class F> [[gnu::noinline]] void inverted_on_purpose(F &&fn) {
  fn();
}

/// Puts the checker in `m` with an empty graph and a capturing sink; restores on exit.
class checker_scope {
public:
  explicit checker_scope(lo::mode m) : mode_(m) {
    lo::reset_for_testing();
    lo::set_sink([this](std::string_view text) {
      const std::lock_guard g(mu_);
      reports_.emplace_back(text);
    });
  }
  ~checker_scope() {
    lo::set_sink({});
    lo::reset_for_testing();
  }
  checker_scope(const checker_scope &) = delete;
  checker_scope &operator=(const checker_scope &) = delete;

  std::vector<std::string> reports() const {
    const std::lock_guard g(mu_);
    return reports_;
  }
  std::string all() const {
    std::string out;
    for (const auto &r : reports()) {
      out += r;
    }
    return out;
  }

private:
  lo::scoped_mode mode_;
  mutable std::mutex mu_;
  std::vector<std::string> reports_;
};

std::string site(std::uint_least32_t line) {
  return "lock_order_test.cpp:" + std::to_string(line);
}

/// A stand-in for a database lock (e.g. a PostgreSQL advisory lock): not a ranked_mutex, but
/// it exposes a key and calls the checker's hooks, so lock_all and the checker see it.
class fake_db_lock {
public:
  fake_db_lock(std::uint64_t id, std::vector<std::string> *log = nullptr)
      : key_(5, "db.advisory", id), log_(log) {}

  [[nodiscard]] lo::key lock_key() const { return key_; }

  void lock(const lakh::source_location &where = lakh::source_location::current()) {
    lo::on_acquire(key_, this, where); // before blocking: may throw in throw_error mode
    mu_.lock();                        // stands for "SELECT pg_advisory_lock($1)"
    if (log_ != nullptr) {
      log_->push_back("db:" + std::to_string(key_.instance));
    }
  }
  bool try_lock(const lakh::source_location &where = lakh::source_location::current()) {
    if (!mu_.try_lock()) {
      return false;
    }
    lo::on_try_acquire(key_, this, where);
    return true;
  }
  void unlock() {
    lo::on_release(this);
    mu_.unlock();
  }

private:
  lo::key key_;
  std::vector<std::string> *log_;
  std::mutex mu_;
};

/// A lockable found through the ADL customization point instead of a member.
struct adl_lock {
  std::mutex mu;
  std::uint64_t id;
  void lock() { mu.lock(); }
  void unlock() { mu.unlock(); }
};
lo::key lock_order_key(const adl_lock &l) {
  return lo::key(3, "adl", l.id);
}

/// A lockable whose lock() fails: lock_all must release what it already took.
struct failing_lock {
  [[nodiscard]] lo::key lock_key() const { return lo::key(99, "failing"); }
  void lock() { throw std::runtime_error("connection lost"); }
  void unlock() {}
};

/// Clang -Wthread-safety checks this: balance is only touched with mu held.
struct account {
  lakh::ranked_mutex mu{10, "account"};
  long balance LAKH_GUARDED_BY(mu) = 100;

  void deposit(long n) LAKH_EXCLUDES(mu) {
    const lakh::lock_guard g(mu);
    balance += n;
  }
  long read() LAKH_EXCLUDES(mu) {
    return mu.with_lock([this] {
      mu.assert_held(); // tells the analysis, which checks lambdas on their own
      return balance;
    });
  }
};

/// lock() where the test expects it to throw: hidden from the analysis, which would otherwise
/// consider the mutex held afterwards.
template <class M> void lock_expecting_throw(M &m) LAKH_NO_THREAD_SAFETY_ANALYSIS {
  m.lock();
}

/// Locks each mutex in turn (a dynamic set: beyond the static analysis).
void lock_each(std::vector<std::optional<lakh::ranked_mutex>> &m) LAKH_NO_THREAD_SAFETY_ANALYSIS {
  for (auto &x : m) {
    x->lock();
  }
}

/// Unlocks each mutex, last first.
void unlock_each_in_reverse(std::vector<std::optional<lakh::ranked_mutex>> &m)
    LAKH_NO_THREAD_SAFETY_ANALYSIS {
  for (auto it = m.rbegin(); it != m.rend(); ++it) {
    (*it)->unlock();
  }
}

/// unlock() from a thread that does not hold m (misuse the checker must catch).
void unlock_from_wrong_thread(lakh::ranked_mutex &m) LAKH_NO_THREAD_SAFETY_ANALYSIS {
  m.unlock();
}

/// Locks `first`, then `second`, and never unlocks (the abort test's child dies holding them).
void lock_both_forever(lakh::ranked_mutex &first,
                       lakh::ranked_mutex &second) LAKH_NO_THREAD_SAFETY_ANALYSIS {
  first.lock();
  second.lock();
}

/// True when m was free: try_lock() then unlock().
template <class M> bool try_lock_then_unlock(M &m) {
  if (m.try_lock()) {
    m.unlock();
    return true;
  }
  return false;
}

void transfer(account &from, account &to, long n) {
  const auto guard = lakh::lock_all(from.mu, to.mu);
  from.mu.assert_held();
  to.mu.assert_held();
  from.balance -= n;
  to.balance += n;
}

} // namespace

TEST_CASE("lock_order.mode.default_matches_build") {
#if defined(__SANITIZE_THREAD__) || defined(NDEBUG)
  CHECK(lo::get_mode() == lo::mode::ignore);
#elif defined(__has_feature)
#  if __has_feature(thread_sanitizer)
  CHECK(lo::get_mode() == lo::mode::ignore);
#  else
  CHECK(lo::get_mode() == lo::mode::report);
#  endif
#else
  CHECK(lo::get_mode() == lo::mode::report);
#endif
}

TEST_CASE("lock_order.lock_all.orders_by_rank_then_name_then_address") {
  const checker_scope checker(lo::mode::throw_error);
  lakh::ranked_mutex low(1, "zeta");
  lakh::ranked_mutex mid_a(2, "alpha");
  lakh::ranked_mutex mid_b(2, "beta");
  std::array<std::optional<lakh::ranked_mutex>, 2> same;
  same[0].emplace(3, "same");
  same[1].emplace(3, "same");
  const bool first_lower = std::less<const void *>{}(&*same[0], &*same[1]);
  {
    const auto g = lakh::lock_all(*same[1], mid_b, *same[0], low, mid_a);
    const auto order = g.acquisition_order();
    CHECK(order[0] == 3); // rank 1
    CHECK(order[1] == 4); // rank 2, "alpha"
    CHECK(order[2] == 1); // rank 2, "beta"
    CHECK(order[3] == (first_lower ? 2U : 0U));
    CHECK(order[4] == (first_lower ? 0U : 2U));
    CHECK(low.is_held_by_this_thread());
    CHECK(same[0]->is_held_by_this_thread());
  }
  CHECK_FALSE(low.is_held_by_this_thread());
  CHECK_FALSE(mid_a.is_held_by_this_thread());
  CHECK(lo::report_count() == 0);
}

TEST_CASE("lock_order.lock_all.same_lock_twice_is_invalid_argument") {
  const checker_scope checker(lo::mode::report);
  lakh::ranked_mutex a(1, "a");
  lakh::ranked_mutex b(1, "b");
  CHECK_THROWS_WITH_AS(
      (void)lakh::lock_all(a, b, a),
      "lakh::lock_all: the same lock (\"a\") is passed twice, as arguments 0 and 2",
      std::invalid_argument);
  CHECK_THROWS_AS((void)lakh::lock_all(b, b), std::invalid_argument);
  CHECK_FALSE(a.is_held_by_this_thread());
  CHECK_FALSE(b.is_held_by_this_thread());
}

TEST_CASE("lock_order.lock_all.never_deadlocks_under_adversarial_orders" * doctest::timeout(60)) {
  const checker_scope checker(lo::mode::report);
  // Two share a class (ordered by address), the others differ in rank or name.
  lakh::ranked_mutex m0(1, "shard");
  lakh::ranked_mutex m1(1, "shard");
  lakh::ranked_mutex m2(1, "queue");
  lakh::ranked_mutex m3(2, "ledger");
  std::array<lakh::ranked_mutex *, 4> m{&m0, &m1, &m2, &m3};
  for (unsigned threads = 2; threads <= 8; ++threads) {
    constexpr int iterations = 200;
    long counter = 0; // touched only with all four held
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        std::minstd_rand rng(t + 1);
        std::array<std::size_t, 4> p{0, 1, 2, 3};
        for (int i = 0; i < iterations; ++i) {
          std::shuffle(p.begin(), p.end(), rng);
          const auto g = lakh::lock_all(*m[p[0]], *m[p[1]], *m[p[2]], *m[p[3]]);
          ++counter;
        }
      });
    }
    for (auto &th : pool) {
      th.join();
    }
    CHECK(counter == static_cast<long>(threads) * iterations);
  }
  CHECK(lo::report_count() == 0);
  CHECK(checker.reports().empty());
}

TEST_CASE("lock_order.checker.reports_inversion_across_threads_that_never_overlapped" *
          doctest::timeout(30)) {
  const checker_scope checker(lo::mode::report);
  lakh::ranked_mutex a(1, "A");
  lakh::ranked_mutex b(1, "B");
  std::uint_least32_t t1_a = 0;
  std::uint_least32_t t1_b = 0;
  std::uint_least32_t t2_b = 0;
  std::uint_least32_t t2_a = 0;
  std::thread([&] {
    t1_a = __LINE__ + 1;
    const lakh::lock_guard ga(a);
    t1_b = __LINE__ + 1;
    const lakh::lock_guard gb(b);
  }).join();
  CHECK(lo::report_count() == 0);
  // Strictly after thread 1: the deadlock cannot happen in this run.
  std::thread([&] {
    inverted_on_purpose([&] {
      t2_b = __LINE__ + 1;
      const lakh::lock_guard gb(b);
      t2_a = __LINE__ + 1;
      const lakh::lock_guard ga(a);
    });
  }).join();
  REQUIRE(lo::report_count() == 1);
  const auto reports = checker.reports();
  REQUIRE(reports.size() == 1);
  const std::string &r = reports[0];
  CHECK(r.find("potential deadlock") != std::string::npos);
  CHECK(r.find("\"B\" (rank 1) -> \"A\" (rank 1) -> \"B\" (rank 1)") != std::string::npos);
  CHECK(r.find(site(t1_a)) != std::string::npos);
  CHECK(r.find(site(t1_b)) != std::string::npos);
  CHECK(r.find(site(t2_b)) != std::string::npos);
  CHECK(r.find(site(t2_a)) != std::string::npos);
  CHECK(r.find("rank inversion") == std::string::npos); // equal ranks: a pure cycle

  // Reported once per new edge, not on every repetition.
  std::thread([&] {
    inverted_on_purpose([&] {
      const lakh::lock_guard gb(b);
      const lakh::lock_guard ga(a);
    });
  }).join();
  CHECK(lo::report_count() == 1);
}

TEST_CASE("lock_order.checker.reports_rank_inversion") {
  const checker_scope checker(lo::mode::report);
  lakh::ranked_mutex low(1, "low");
  lakh::ranked_mutex high(2, "high");
  {
    const lakh::lock_guard g1(high);
    const std::uint_least32_t line = __LINE__ + 1;
    const lakh::lock_guard g2(low);
    REQUIRE(lo::report_count() == 1);
    const std::string r = checker.all();
    CHECK(r.find("rank inversion") != std::string::npos);
    CHECK(r.find("\"low\" (rank 1)") != std::string::npos);
    CHECK(r.find("\"high\" (rank 2)") != std::string::npos);
    CHECK(r.find(site(line)) != std::string::npos);
  }
  CHECK(lo::edge_count() == 1); // recorded in report mode
}

TEST_CASE("lock_order.checker.consistent_order_reports_nothing" * doctest::timeout(30)) {
  const checker_scope checker(lo::mode::report);
  lakh::ranked_mutex a(1, "A");
  lakh::ranked_mutex b(2, "B");
  lakh::ranked_mutex c(3, "C");
  for (unsigned threads = 1; threads <= 4; ++threads) {
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t) {
      pool.emplace_back([&] {
        for (int i = 0; i < 100; ++i) {
          const lakh::lock_guard ga(a);
          const lakh::lock_guard gb(b);
          const lakh::lock_guard gc(c);
        }
      });
    }
    for (auto &th : pool) {
      th.join();
    }
  }
  CHECK(lo::report_count() == 0);
  CHECK(lo::edge_count() == 3); // A->B, A->C, B->C
}

TEST_CASE("lock_order.checker.reports_three_lock_cycle" * doctest::timeout(30)) {
  const checker_scope checker(lo::mode::report);
  lakh::ranked_mutex a(1, "A");
  lakh::ranked_mutex b(1, "B");
  lakh::ranked_mutex c(1, "C");
  std::array<std::uint_least32_t, 3> lines{};
  std::thread([&] {
    const lakh::lock_guard ga(a);
    lines[0] = __LINE__ + 1;
    const lakh::lock_guard gb(b);
  }).join();
  std::thread([&] {
    const lakh::lock_guard gb(b);
    lines[1] = __LINE__ + 1;
    const lakh::lock_guard gc(c);
  }).join();
  CHECK(lo::report_count() == 0);
  std::thread([&] {
    inverted_on_purpose([&] {
      const lakh::lock_guard gc(c);
      lines[2] = __LINE__ + 1;
      const lakh::lock_guard ga(a);
    });
  }).join();
  REQUIRE(lo::report_count() == 1);
  const std::string r = checker.all();
  CHECK(r.find("\"C\" (rank 1) -> \"A\" (rank 1) -> \"B\" (rank 1) -> \"C\" (rank 1)") !=
        std::string::npos);
  for (const auto line : lines) {
    CHECK(r.find(site(line)) != std::string::npos);
  }
}

TEST_CASE("lock_order.checker.reused_address_is_judged_by_class") {
  const checker_scope checker(lo::mode::report);
  lakh::ranked_mutex q(1, "Q");
  std::optional<lakh::ranked_mutex> slot;

  slot.emplace(1, "P");
  const void *const address = &*slot;
  {
    const lakh::lock_guard gp(*slot);
    const lakh::lock_guard gq(q); // P -> Q
  }
  slot.reset();

  // Same class, same address: the same edge again, nothing new.
  slot.emplace(1, "P");
  REQUIRE(&*slot == address);
  {
    const lakh::lock_guard gp(*slot);
    const lakh::lock_guard gq(q);
  }
  CHECK(lo::edge_count() == 1);
  slot.reset();

  // Another class at the reused address: Q -> R is no cycle (an address-keyed graph would
  // see Q -> address -> Q).
  slot.emplace(1, "R");
  REQUIRE(&*slot == address);
  {
    const lakh::lock_guard gq(q);
    const lakh::lock_guard gr(*slot);
  }
  CHECK(lo::report_count() == 0);
  CHECK(lo::edge_count() == 2);
  slot.reset();

  // A P at a different address still inverts P -> Q: the class remembers.
  lakh::ranked_mutex other_p(1, "P");
  inverted_on_purpose([&] {
    const lakh::lock_guard gq(q);
    const lakh::lock_guard gp(other_p);
  });
  CHECK(lo::report_count() == 1);
}

TEST_CASE("lock_order.checker.ignore_mode_reports_and_records_nothing") {
  const checker_scope checker(lo::mode::ignore);
  lakh::ranked_mutex low(1, "low");
  lakh::ranked_mutex high(2, "high");
  {
    const lakh::lock_guard g1(low);
    const lakh::lock_guard g2(high);
  }
  inverted_on_purpose([&] {
    const lakh::lock_guard g1(high);
    const lakh::lock_guard g2(low);
    CHECK(low.is_held_by_this_thread()); // ownership is exact in every mode
  });
  CHECK(lo::report_count() == 0);
  CHECK(lo::edge_count() == 0);
  CHECK(checker.reports().empty());
}

TEST_CASE("lock_order.checker.throw_mode_throws_before_acquiring") {
  const checker_scope checker(lo::mode::throw_error);
  lakh::ranked_mutex a(1, "A");
  lakh::ranked_mutex b(1, "B");
  {
    const lakh::lock_guard ga(a);
    const lakh::lock_guard gb(b);
  }
  {
    const lakh::lock_guard gb(b);
    CHECK_THROWS_AS(lock_expecting_throw(a), lakh::lock_order_error);
    CHECK_FALSE(a.is_held_by_this_thread());
    CHECK_FALSE(lo::is_held(&a));
    CHECK(lo::is_held(&b));
  }
  CHECK(try_lock_then_unlock(a)); // not left locked
  CHECK(lo::edge_count() == 1);   // the refused edge was not recorded
  CHECK(lo::report_count() == 1);
  CHECK(checker.reports().empty()); // throw_error throws instead of writing to the sink
}

TEST_CASE("lock_order.checker.recursive_acquisition_is_reported") {
  const checker_scope checker(lo::mode::throw_error);
  lakh::ranked_mutex a(1, "A");
  const lakh::lock_guard g(a);
  try {
    lock_expecting_throw(a);
    FAIL("lock() of a held mutex did not throw");
  } catch (const lakh::lock_order_error &e) {
    CHECK(std::string(e.what()).find("recursive acquisition") != std::string::npos);
  }
  CHECK(a.is_held_by_this_thread());
}

TEST_CASE("lock_order.checker.non_lifo_unlock") {
  const checker_scope checker(lo::mode::report);
  lakh::ranked_mutex a(1, "A");
  lakh::ranked_mutex b(2, "B");
  lakh::ranked_mutex c(3, "C");
  a.lock();
  b.lock();
  a.unlock(); // not the most recent
  CHECK_FALSE(lo::is_held(&a));
  CHECK(lo::is_held(&b));
  c.lock(); // only B is held: records B -> C, not A -> C
  CHECK(lo::edge_count() == 2);
  b.unlock();
  c.unlock();
  CHECK_FALSE(lo::is_held(&c));
  CHECK(lo::report_count() == 0);
}

TEST_CASE("lock_order.try_lock.records_held_without_checking") {
  const checker_scope checker(lo::mode::report);
  lakh::ranked_mutex low(1, "low");
  lakh::ranked_mutex high(2, "high");
  const lakh::lock_guard g(high);
  if (low.try_lock()) { // a try cannot deadlock: no rank report
    CHECK(lo::report_count() == 0);
    CHECK(lo::is_held(&low));
    low.unlock();
  } else {
    FAIL("try_lock of a free mutex failed");
  }
  CHECK_FALSE(lo::is_held(&low));
}

TEST_CASE("lock_order.assert_held.throws_unless_this_thread_holds" * doctest::timeout(30)) {
  const checker_scope checker(lo::mode::report);
  lakh::ranked_mutex m(1, "m");
  CHECK_THROWS_AS(m.assert_held(), lakh::usage_error);
  {
    const std::scoped_lock g(m); // std guards work too
    CHECK_NOTHROW(m.assert_held());
    CHECK(m.is_held_by_this_thread());
    bool other_sees_held = true;
    bool other_threw = false;
    std::thread([&] {
      other_sees_held = m.is_held_by_this_thread();
      try {
        m.assert_held();
      } catch (const lakh::usage_error &e) {
        other_threw = std::string(e.what()).find("\"m\" (rank 1) is not held") != std::string::npos;
      }
    }).join();
    CHECK_FALSE(other_sees_held);
    CHECK(other_threw);
  }
  CHECK_THROWS_AS(m.assert_held(), lakh::usage_error);
}

TEST_CASE("lock_order.with_lock.returns_result_and_unlocks_on_exception") {
  const checker_scope checker(lo::mode::report);
  lakh::ranked_mutex a(1, "A");
  lakh::ranked_mutex b(2, "B");
  CHECK(a.with_lock([&] { return a.is_held_by_this_thread() ? 7 : 0; }) == 7);
  CHECK_THROWS_AS(a.with_lock([] { throw std::runtime_error("x"); }), std::runtime_error);
  CHECK_FALSE(a.is_held_by_this_thread());
  const int held = lakh::with_locks(
      [&] { return int{a.is_held_by_this_thread()} + int{b.is_held_by_this_thread()}; }, b, a);
  CHECK(held == 2);
  CHECK_FALSE(b.is_held_by_this_thread());
  CHECK(lo::report_count() == 0);
}

TEST_CASE("lock_order.shared_mutex.shared_and_exclusive_take_part") {
  const checker_scope checker(lo::mode::report);
  lakh::ranked_shared_mutex s(1, "S");
  lakh::ranked_mutex m(1, "M");
  {
    const std::shared_lock r(s);
    CHECK(s.is_shared_held_by_this_thread());
    CHECK_FALSE(s.is_held_by_this_thread());
    const lakh::lock_guard g(m); // S -> M
  }
  CHECK_FALSE(s.is_shared_held_by_this_thread());
  CHECK(s.with_shared_lock([] { return 3; }) == 3);
  inverted_on_purpose([&] {
    const auto g = lakh::lock_all(s, m); // same rank: "M" < "S", so M first
    CHECK(g.acquisition_order()[0] == 1);
    CHECK(s.is_held_by_this_thread());
  });
  REQUIRE(lo::report_count() == 1); // M -> S inverts the earlier S -> M
  CHECK(checker.all().find("\"M\" (rank 1) -> \"S\" (rank 1) -> \"M\"") != std::string::npos);
}

TEST_CASE("lock_order.extension.foreign_lockable_is_sorted_by_key") {
  const checker_scope checker(lo::mode::report);
  std::vector<std::string> log;
  fake_db_lock db7(7, &log);
  fake_db_lock db3(3, &log);
  lakh::ranked_mutex local(10, "local");
  adl_lock via_adl{{}, 1};
  {
    const auto g = lakh::lock_all(local, db7, via_adl, db3);
    // adl (rank 3), then db (rank 5) by instance 3 before 7, then local (rank 10)
    CHECK(g.acquisition_order() == std::array<std::size_t, 4>{2, 3, 1, 0});
    CHECK(log == std::vector<std::string>{"db:3", "db:7"});
    CHECK(lo::is_held(&db3));
    CHECK(lo::is_held(&db7));
    CHECK(local.is_held_by_this_thread());
  }
  CHECK_FALSE(lo::is_held(&db3));
  CHECK(lo::report_count() == 0);
}

TEST_CASE("lock_order.extension.foreign_lockable_joins_the_checker" * doctest::timeout(30)) {
  const checker_scope checker(lo::mode::report);
  fake_db_lock db(42);
  lakh::ranked_mutex local(10, "local");
  std::thread([&] {
    const auto g = lakh::lock_all(local, db); // db (rank 5) then local (rank 10)
  }).join();
  CHECK(lo::report_count() == 0);
  std::thread([&] {
    inverted_on_purpose([&] {
      const lakh::lock_guard g1(local);
      const lakh::lock_guard g2(db); // a rank-5 database lock under a rank-10 mutex
    });
  }).join();
  REQUIRE(lo::report_count() == 1);
  const std::string r = checker.all();
  CHECK(r.find("rank inversion") != std::string::npos);
  CHECK(r.find("\"local\" (rank 10) -> \"db.advisory\" (rank 5) -> \"local\"") !=
        std::string::npos);
  // try_lock goes through on_try_acquire
  REQUIRE(db.try_lock());
  CHECK(lo::is_held(&db));
  db.unlock();
  CHECK_FALSE(lo::is_held(&db));
}

TEST_CASE("lock_order.lock_all.releases_taken_locks_when_one_throws") {
  const checker_scope checker(lo::mode::report);
  lakh::ranked_mutex a(1, "A");
  fake_db_lock db(1);
  failing_lock bad;
  CHECK_THROWS_AS((void)lakh::lock_all(bad, a, db), std::runtime_error);
  CHECK_FALSE(a.is_held_by_this_thread());
  CHECK_FALSE(lo::is_held(&db));
  CHECK(db.try_lock());
  db.unlock();
}

TEST_CASE("lock_order.annotations.guarded_data_under_lock_all" * doctest::timeout(30)) {
  const checker_scope checker(lo::mode::report);
  for (unsigned threads = 2; threads <= 4; ++threads) {
    account x;
    account y;
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        for (int i = 0; i < 100; ++i) {
          if ((t + static_cast<unsigned>(i)) % 2 == 0) {
            transfer(x, y, 1);
          } else {
            transfer(y, x, 1);
          }
        }
      });
    }
    for (auto &th : pool) {
      th.join();
    }
    x.deposit(5);
    CHECK(x.read() + y.read() == 205);
  }
  CHECK(lo::report_count() == 0);
}

TEST_CASE("lock_order.checker.deep_nesting_and_many_edges") {
  const checker_scope checker(lo::mode::report);
  constexpr std::size_t n = 60; // deeper than the 48 tracked, more edges than the thread cache
  std::vector<std::optional<lakh::ranked_mutex>> m(n);
  for (std::size_t i = 0; i < n; ++i) {
    m[i].emplace(static_cast<std::uint32_t>(i), "deep." + std::to_string(i));
  }
  for (int round = 0; round < 2; ++round) {
    lock_each(m);
    CHECK(lo::is_held(&*m[47]));
    CHECK_FALSE(lo::is_held(&*m[48])); // beyond the tracked depth
    CHECK(m[59]->is_held_by_this_thread());
    unlock_each_in_reverse(m);
  }
  CHECK(lo::report_count() == 0);
  // C(48, 2) among the tracked ones, plus 48 * 12 from them to the untracked ones.
  CHECK(lo::edge_count() == 48 * 47 / 2 + 48 * 12);
  CHECK_FALSE(lo::is_held(&*m[0]));
  // An inversion is still found although the cache has evicted entries.
  inverted_on_purpose([&] {
    lakh::ranked_mutex &five = *m[5];
    lakh::ranked_mutex &two = *m[2];
    const lakh::lock_guard g5(five);
    const lakh::lock_guard g2(two);
  });
  CHECK(lo::report_count() == 1);
}

TEST_CASE("lock_order.checker.unlock_by_a_non_owner_is_reported_and_skipped" *
          doctest::timeout(30)) {
  const checker_scope checker(lo::mode::report);
  lakh::ranked_mutex m(1, "m");
  const lakh::lock_guard g(m);
  std::thread([&] { unlock_from_wrong_thread(m); }).join();
  CHECK(lo::report_count() == 1);
  CHECK(checker.all().find("unlocks \"m\" (rank 1), which it does not hold") != std::string::npos);
  CHECK(m.is_held_by_this_thread()); // still ours: the bad unlock was skipped
  {
    const lo::scoped_mode throwing(lo::mode::throw_error);
    bool threw = false;
    std::thread([&] {
      try {
        unlock_from_wrong_thread(m);
      } catch (const lakh::lock_order_error &) {
        threw = true;
      }
    }).join();
    CHECK(threw);
  }
  CHECK(m.is_held_by_this_thread());
}

#if defined(__unix__)
TEST_CASE("lock_order.checker.abort_mode_reports_then_aborts" * doctest::timeout(30)) {
  std::array<int, 2> fds{};
  REQUIRE(::pipe(fds.data()) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) { // the child: single-threaded, dies by std::abort
    ::close(fds[0]);
    (void)std::signal(SIGABRT, SIG_DFL); // not doctest's crash handler: just die
    const ::rlimit no_core{0, 0};
    (void)::setrlimit(RLIMIT_CORE, &no_core);
    lo::reset_for_testing();
    lo::set_sink([fd = fds[1]](std::string_view text) {
      const ::ssize_t n = ::write(fd, text.data(), text.size());
      (void)n;
    });
    lo::set_mode(lo::mode::abort);
    lakh::ranked_mutex low(1, "low");
    lakh::ranked_mutex high(2, "high");
    lock_both_forever(high, low); // rank inversion: report, then abort
    ::_exit(0);                   // not reached
  }
  ::close(fds[1]);
  std::string out;
  std::array<char, 512> buf{};
  for (::ssize_t n; (n = ::read(fds[0], buf.data(), buf.size())) > 0;) {
    out.append(buf.data(), static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  CHECK(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGABRT);
  CHECK(out.find("rank inversion") != std::string::npos);
  CHECK(out.find("\"high\" (rank 2)") != std::string::npos);
}
#endif

TEST_CASE("lock_order.checker.reset_invalidates_thread_caches") {
  const checker_scope checker(lo::mode::report);
  lakh::ranked_mutex a(1, "A");
  lakh::ranked_mutex b(2, "B");
  for (int round = 0; round < 3; ++round) {
    {
      const lakh::lock_guard ga(a);
      const lakh::lock_guard gb(b); // cached by this thread after the first round...
    }
    CHECK(lo::edge_count() == 1); // ...yet recorded again after each reset
    lo::reset_for_testing();
    CHECK(lo::edge_count() == 0);
  }
}

TEST_CASE("lock_order.checker.concurrent_edge_discovery" * doctest::timeout(60)) {
  const checker_scope checker(lo::mode::report);
  constexpr std::size_t k = 6;
  std::vector<std::optional<lakh::ranked_mutex>> m(k);
  for (std::size_t i = 0; i < k; ++i) {
    m[i].emplace(static_cast<std::uint32_t>(i), "c" + std::to_string(i));
  }
  for (unsigned threads = 2; threads <= 6; threads += 2) {
    lo::reset_for_testing();
    std::atomic<std::uint64_t> used{0}; // bit i*k+j: pair (i, j) was taken in that order
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        std::minstd_rand rng(t + 7);
        for (int n = 0; n < 300; ++n) {
          std::size_t i = rng() % k;
          std::size_t j = rng() % k;
          if (i == j) {
            continue;
          }
          if (i > j) {
            std::swap(i, j); // always the rank order: consistent, never a report
          }
          lakh::ranked_mutex &first = *m[i];
          lakh::ranked_mutex &second = *m[j];
          const lakh::lock_guard g1(first);
          const lakh::lock_guard g2(second);
          used.fetch_or(std::uint64_t{1} << (i * k + j), std::memory_order_relaxed);
        }
      });
    }
    for (auto &th : pool) {
      th.join();
    }
    CHECK(lo::report_count() == 0);
    CHECK(lo::edge_count() == static_cast<std::size_t>(std::popcount(used.load())));
  }
}

TEST_CASE("lock_order.extension.ordered_adapter_wraps_any_lockable" * doctest::timeout(30)) {
  const checker_scope checker(lo::mode::report);
  lo::ordered<std::mutex> io(lo::key(4, "io"));
  lo::ordered<std::timed_mutex> timed(lo::key(4, "timed"));
  lakh::ranked_mutex cache(8, "cache");
  {
    const auto g = lakh::lock_all(cache, timed, io); // "io" < "timed" at rank 4, then cache
    CHECK(g.acquisition_order() == std::array<std::size_t, 3>{2, 1, 0});
    CHECK(lo::is_held(&io));
    CHECK(lo::is_held(&timed));
  }
  CHECK_FALSE(lo::is_held(&io));
  CHECK(lo::report_count() == 0);
  std::thread([&] {
    inverted_on_purpose([&] {
      const lakh::lock_guard g1(cache);
      const lakh::lock_guard g2(io); // rank 4 under rank 8
    });
  }).join();
  REQUIRE(lo::report_count() == 1);
  CHECK(checker.all().find("\"cache\" (rank 8) -> \"io\" (rank 4) -> \"cache\"") !=
        std::string::npos);
  if (timed.try_lock()) {
    CHECK(lo::is_held(&timed));
    timed.unlock();
  } else {
    FAIL("try_lock of a free lock failed");
  }
  CHECK_FALSE(lo::is_held(&timed));
}

// The one template gives the shared-lock members only to shared mutex types.
static_assert(std::is_same_v<lakh::ranked_mutex, lakh::basic_ranked_mutex<std::mutex>>);
static_assert(
    std::is_same_v<lakh::ranked_shared_mutex, lakh::basic_ranked_mutex<std::shared_mutex>>);
template <class M>
concept has_shared_members = requires(M &m) {
  m.lock_shared();
  m.unlock_shared();
  { m.try_lock_shared() } -> std::same_as<bool>;
  { m.is_shared_held_by_this_thread() } -> std::same_as<bool>;
  m.with_shared_lock([] {});
};
static_assert(has_shared_members<lakh::ranked_shared_mutex>);
static_assert(has_shared_members<lakh::basic_ranked_mutex<std::shared_timed_mutex>>);
static_assert(!has_shared_members<lakh::ranked_mutex>);
static_assert(!has_shared_members<lakh::basic_ranked_mutex<std::timed_mutex>>);
static_assert(lo::ordered_lockable<lakh::ranked_mutex>);
static_assert(lo::ordered_lockable<lakh::ranked_shared_mutex>);

TEST_CASE("lock_order.basic_ranked_mutex.any_mutex_type_joins_the_checker" * doctest::timeout(30)) {
  const checker_scope checker(lo::mode::report);
  lakh::basic_ranked_mutex<std::timed_mutex> timed(2, "timed");
  lakh::basic_ranked_mutex<std::shared_timed_mutex> table(3, "table");
  {
    const auto g = lakh::lock_all(table, timed);
    CHECK(g.acquisition_order() == std::array<std::size_t, 2>{1, 0});
    CHECK(timed.is_held_by_this_thread());
    CHECK(table.is_held_by_this_thread());
  }
  CHECK(table.with_shared_lock([&] { return table.is_shared_held_by_this_thread(); }));
  CHECK_FALSE(table.is_shared_held_by_this_thread());
  CHECK(lo::report_count() == 0);
  std::thread([&] {
    inverted_on_purpose([&] {
      const lakh::lock_guard g1(table);
      const lakh::lock_guard g2(timed); // rank 2 under rank 3
    });
  }).join();
  REQUIRE(lo::report_count() == 1);
  CHECK(checker.all().find("\"table\" (rank 3) -> \"timed\" (rank 2) -> \"table\"") !=
        std::string::npos);
  CHECK_THROWS_WITH_AS(timed.assert_held(),
                       doctest::Contains("lakh::basic_ranked_mutex::assert_held: \"timed\""),
                       lakh::usage_error);
  lakh::ranked_shared_mutex s(1, "s");
  CHECK_THROWS_WITH_AS(s.assert_held(),
                       doctest::Contains("lakh::ranked_shared_mutex::assert_held: \"s\""),
                       lakh::usage_error);
}
