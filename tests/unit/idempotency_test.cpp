// lakh::idempotency_guard over lakh::memory_idempotency_store: the shared suite
// (tests/support/idempotency_suite.hpp) plus the in-memory store's own cases.
#include <lakh/idempotency.hpp>

#include <support/idempotency_suite.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;

struct memory_fixture {
  using store_type = lakh::memory_idempotency_store;
  static constexpr long throwing_op_persists = 1; // an in-process side effect is not undone

  store_type &store() { return store_; }

  auto op(int status, std::string body, std::chrono::milliseconds work = {}) {
    return [this, status, body = std::move(body), work] {
      count_.fetch_add(1, std::memory_order_relaxed);
      if (work.count() > 0) {
        std::this_thread::sleep_for(work);
      }
      return lakh::stored_response{status, body};
    };
  }
  auto throwing_op() {
    return [this]() -> lakh::stored_response {
      count_.fetch_add(1, std::memory_order_relaxed);
      throw std::runtime_error("boom");
    };
  }
  long executions() const { return count_.load(); }

  store_type store_{lakh::memory_store_options{8}};
  std::atomic<long> count_{0};
};

} // namespace

LAKH_IDEMPOTENCY_SUITE("memory", memory_fixture)

TEST_CASE("idempotency.fingerprint.stable_and_length_prefixed") {
  // Pinned values: stores persist fingerprints, so they must never change.
  static_assert(lakh::fingerprint("", "", "") == lakh::fingerprint("", "", ""));
  CHECK(lakh::fingerprint("POST", "/a", "x") != lakh::fingerprint("POST", "/ax", ""));
  CHECK(lakh::fingerprint("ab", "c", "") != lakh::fingerprint("a", "bc", ""));
  CHECK(lakh::fingerprint("POST", "/a", "x") != lakh::fingerprint("PUT", "/a", "x"));
  constexpr auto empty = lakh::fingerprint("", "", "");
  // FNV-1a 64 of 24 zero bytes (three zero lengths).
  std::uint64_t h = 14695981039346656037ULL;
  for (int i = 0; i < 24; ++i) {
    h *= 1099511628211ULL;
  }
  CHECK(empty == h);
  // Computed independently (Python) from the documented definition.
  static_assert(lakh::fingerprint("POST", "/v1/charges", "{}") == 0xd2130af81d3b61e0ULL);
}

TEST_CASE("idempotency.outcome.names") {
  CHECK(lakh::to_string(lakh::idempotency_outcome::executed) == "executed");
  CHECK(lakh::to_string(lakh::idempotency_outcome::replayed) == "replayed");
  CHECK(lakh::to_string(lakh::idempotency_outcome::in_progress) == "in_progress");
  CHECK(lakh::to_string(lakh::idempotency_outcome::mismatch) == "mismatch");
  CHECK(lakh::to_string(lakh::idempotency_outcome::lease_lost) == "lease_lost");
}

TEST_CASE("idempotency.guard.rejects_bad_options") {
  lakh::memory_idempotency_store s;
  lakh::idempotency_options o;
  o.ttl = 0ms;
  CHECK_THROWS_WITH_AS(lakh::idempotency_guard(s, o),
                       "lakh::idempotency_guard: ttl (0 ms) must be positive",
                       std::invalid_argument);
  o = {};
  o.lease = -1ms;
  CHECK_THROWS_AS(lakh::idempotency_guard(s, o), std::invalid_argument);
  o = {};
  o.wait = -1ms;
  CHECK_THROWS_AS(lakh::idempotency_guard(s, o), std::invalid_argument);
  CHECK_THROWS_WITH_AS(lakh::memory_idempotency_store(lakh::memory_store_options{0}),
                       "lakh::memory_idempotency_store: shards (0) must be in 1..65536",
                       std::invalid_argument);
}

TEST_CASE("idempotency.memory.lease_lost_is_fenced") {
  // The owner's lease expires mid-run; a second caller takes over and completes. The first
  // owner's late completion must not overwrite the second's stored response.
  lakh::memory_idempotency_store s;
  lakh::idempotency_options o;
  o.lease = 50ms;
  o.wait = 0ms;
  lakh::idempotency_guard g(s, o);
  auto fp = lakh::fingerprint("POST", "/x", "");
  std::atomic<int> phase{0};
  lakh::idempotency_result slow;
  std::thread t([&] {
    slow = g.run("t", "k", fp, [&] {
      phase = 1;
      while (phase.load() != 2) {
        std::this_thread::sleep_for(1ms);
      }
      return lakh::stored_response{201, "slow"};
    });
  });
  while (phase.load() != 1) {
    std::this_thread::sleep_for(1ms);
  }
  std::this_thread::sleep_for(120ms); // lease expired
  auto fast = g.run("t", "k", fp, [] { return lakh::stored_response{201, "fast"}; });
  phase = 2;
  t.join();
  CHECK(fast.outcome == lakh::idempotency_outcome::executed);
  CHECK(slow.outcome == lakh::idempotency_outcome::lease_lost);
  CHECK(slow.response.body == "slow");
  auto r = g.run("t", "k", fp, [] { return lakh::stored_response{500, "no"}; });
  CHECK(r.outcome == lakh::idempotency_outcome::replayed);
  CHECK(r.response.body == "fast");
}

TEST_CASE("idempotency.memory.purge_expired" * doctest::timeout(10)) {
  lakh::memory_idempotency_store s;
  lakh::idempotency_options o;
  o.ttl = 30ms;
  lakh::idempotency_guard g(s, o);
  for (int i = 0; i < 100; ++i) {
    (void)g.run("t", "k" + std::to_string(i), 1, [] { return lakh::stored_response{200, ""}; });
  }
  CHECK(s.size() == 100);
  CHECK(s.purge_expired() == 0);
  std::this_thread::sleep_for(80ms);
  CHECK(s.purge_expired() == 100);
  CHECK(s.size() == 0);
}

TEST_CASE("idempotency.memory.many_keys_many_threads" * doctest::timeout(60)) {
  // Threads x keys: every key executes exactly once, every call gets that key's response.
  for (int threads : {2, 4, 8}) {
    CAPTURE(threads);
    lakh::memory_idempotency_store s{lakh::memory_store_options{4}};
    lakh::idempotency_options o;
    o.wait = 10s;
    lakh::idempotency_guard g(s, o);
    constexpr int keys = 200;
    std::vector<std::atomic<int>> runs(keys);
    std::atomic<int> wrong{0};
    {
      std::vector<std::jthread> ts;
      for (int t = 0; t < threads; ++t) {
        ts.emplace_back([&, t] {
          for (int i = 0; i < keys; ++i) {
            int k = (i + t * 37) % keys;
            auto r = g.run("t", "key-" + std::to_string(k), 7, [&, k] {
              runs[static_cast<std::size_t>(k)].fetch_add(1);
              return lakh::stored_response{200, std::to_string(k)};
            });
            if (!r.has_response() || r.response.body != std::to_string(k)) {
              wrong.fetch_add(1);
            }
          }
        });
      }
    }
    CHECK(wrong.load() == 0);
    for (auto &r : runs) {
      CHECK(r.load() == 1);
    }
    CHECK(s.size() == keys);
  }
}

namespace {

// Stores that break one clause of the concept each.
struct no_release {
  lakh::begin_result begin(std::string_view, std::string_view, std::uint64_t,
                           const lakh::idempotency_options &);
  template <class Fn>
  lakh::execute_result execute(std::string_view, std::string_view, const std::string &,
                               const lakh::idempotency_options &, Fn &&);
};
struct throwing_release : no_release {
  bool release(std::string_view, std::string_view, const std::string &); // not noexcept
};
struct wrong_begin : throwing_release {
  bool release(std::string_view, std::string_view, const std::string &) noexcept;
  lakh::begin_state begin(std::string_view, std::string_view, std::uint64_t,
                          const lakh::idempotency_options &);
};

template <class S>
concept guardable = requires {
  typename lakh::idempotency_guard<S>;
};

// A store of one's own: the memory store behind a wrapper that logs the calls the guard makes.
class logging_store {
public:
  lakh::begin_result begin(std::string_view tenant, std::string_view key, std::uint64_t fp,
                           const lakh::idempotency_options &o) {
    calls.emplace_back("begin");
    return inner_.begin(tenant, key, fp, o);
  }
  template <class Fn>
  lakh::execute_result execute(std::string_view tenant, std::string_view key,
                               const std::string &token, const lakh::idempotency_options &o,
                               Fn &&fn) {
    calls.emplace_back("execute");
    return inner_.execute(tenant, key, token, o, std::forward<Fn>(fn));
  }
  bool release(std::string_view tenant, std::string_view key, const std::string &token) noexcept {
    return inner_.release(tenant, key, token);
  }
  std::vector<std::string> calls;

private:
  lakh::memory_idempotency_store inner_;
};

} // namespace

static_assert(lakh::idempotency_store<lakh::memory_idempotency_store>);
static_assert(lakh::idempotency_store<logging_store>);
static_assert(!lakh::idempotency_store<int>);
static_assert(!lakh::idempotency_store<no_release>);
static_assert(!lakh::idempotency_store<throwing_release>);
static_assert(!lakh::idempotency_store<wrong_begin>);
static_assert(guardable<lakh::memory_idempotency_store>);
static_assert(!guardable<no_release>);

TEST_CASE("idempotency.concept.a_store_of_ones_own_runs_under_the_guard") {
  logging_store s;
  lakh::idempotency_guard g(s);
  auto first = g.run("t", "k", 1, [] { return lakh::stored_response{201, "made"}; });
  CHECK(first.outcome == lakh::idempotency_outcome::executed);
  auto again = g.run("t", "k", 1, [] { return lakh::stored_response{500, "ran twice"}; });
  CHECK(again.outcome == lakh::idempotency_outcome::replayed);
  CHECK(again.response == lakh::stored_response{201, "made"});
  CHECK(s.calls == std::vector<std::string>{"begin", "execute", "begin"});
}
