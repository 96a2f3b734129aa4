#pragma once
// The idempotency test suite shared by every store (memory, PostgreSQL, Redis): the same
// cases, the same assertions. A test file defines a Fixture and expands
// LAKH_IDEMPOTENCY_SUITE("<store>", Fixture).
//
// A Fixture (constructed fresh for each case, isolated from every other case and process):
//   using store_type = ...;
//   store_type &store();
//   auto op(int status, std::string body, std::chrono::milliseconds work = {});
//       an operation for the store: one "business write" in the store of record (a counter;
//       for PostgreSQL a row in a business table written in the guard's transaction), then
//       sleep `work`, then return {status, body}
//   auto throwing_op();  // does the business write, then throws std::runtime_error("boom")
//   long executions();   // business writes that persisted

#include <lakh/idempotency.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <latch>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace lakh::test::idem {

using namespace std::chrono_literals;

inline lakh::idempotency_options fast_options() {
  lakh::idempotency_options o;
  o.ttl = 60s;
  o.lease = 30s;
  o.wait = 10s;
  o.poll = lakh::backoff(1ms, 20ms);
  return o;
}

inline const std::uint64_t fp_a = lakh::fingerprint("POST", "/v1/charges", R"({"amount":100})");
inline const std::uint64_t fp_b = lakh::fingerprint("POST", "/v1/charges", R"({"amount":999})");

template <class F> void runs_once_then_replays() {
  F fx;
  lakh::idempotency_guard g(fx.store(), fast_options());
  auto r1 = g.run("t1", "key-1", fp_a, fx.op(201, "charge ch_1"));
  CHECK(r1.outcome == lakh::idempotency_outcome::executed);
  CHECK(r1.response == lakh::stored_response{201, "charge ch_1"});
  for (int i = 0; i < 3; ++i) {
    auto r = g.run("t1", "key-1", fp_a, fx.op(500, "must not run"));
    CHECK(r.outcome == lakh::idempotency_outcome::replayed);
    CHECK(r.response == lakh::stored_response{201, "charge ch_1"});
  }
  // A second key is independent.
  auto r2 = g.run("t1", "key-2", fp_a, fx.op(202, "other"));
  CHECK(r2.outcome == lakh::idempotency_outcome::executed);
  CHECK(fx.executions() == 2);
}

template <class F> void binary_body_and_error_status_are_replayed_exactly() {
  F fx;
  lakh::idempotency_guard g(fx.store(), fast_options());
  std::string body("a|b\0c\xff|D|", 10);
  body += std::string(70000, 'x'); // larger than one socket buffer
  auto r1 = g.run("t", "k", fp_a, fx.op(500, body));
  CHECK(r1.outcome == lakh::idempotency_outcome::executed);
  auto r2 = g.run("t", "k", fp_a, fx.op(200, "no"));
  CHECK(r2.outcome == lakh::idempotency_outcome::replayed);
  CHECK(r2.response.status == 500); // a RETURNED failure is stored, like Stripe's 500s
  CHECK(r2.response.body == body);
  CHECK(fx.executions() == 1);
}

template <class F> void concurrent_same_key_runs_once(int threads) {
  F fx;
  lakh::idempotency_guard g(fx.store(), fast_options());
  std::latch start(threads);
  std::vector<lakh::idempotency_result> results(static_cast<std::size_t>(threads));
  std::vector<std::string> errors(static_cast<std::size_t>(threads));
  {
    std::vector<std::jthread> ts;
    for (int i = 0; i < threads; ++i) {
      ts.emplace_back([&, i] {
        auto idx = static_cast<std::size_t>(i);
        try {
          auto op = fx.op(201, "winner " + std::to_string(i), 30ms);
          start.arrive_and_wait();
          results[idx] = g.run("tenant", "same-key", fp_a, op);
        } catch (const std::exception &e) {
          errors[idx] = e.what();
        }
      });
    }
  }
  int executed = 0;
  int replayed = 0;
  int in_progress = 0;
  std::string winner;
  for (std::size_t i = 0; i < results.size(); ++i) {
    INFO("thread " << i << ": " << errors[i]);
    CHECK(errors[i].empty());
    auto &r = results[i];
    if (r.outcome == lakh::idempotency_outcome::executed) {
      ++executed;
      winner = r.response.body;
    } else if (r.outcome == lakh::idempotency_outcome::replayed) {
      ++replayed;
    } else {
      CHECK(r.outcome == lakh::idempotency_outcome::in_progress);
      ++in_progress;
    }
  }
  CHECK(executed == 1);
  CHECK(executed + replayed + in_progress == threads);
  for (auto &r : results) {
    if (r.has_response()) {
      CHECK(r.response == lakh::stored_response{201, winner});
    }
  }
  CHECK(fx.executions() == 1);
  // Afterwards everyone replays the winner's response.
  auto again = g.run("tenant", "same-key", fp_a, fx.op(500, "no"));
  CHECK(again.outcome == lakh::idempotency_outcome::replayed);
  CHECK(again.response.body == winner);
  CHECK(fx.executions() == 1);
}

template <class F> void mismatch_is_reported() {
  F fx;
  lakh::idempotency_guard g(fx.store(), fast_options());
  CHECK(g.run("t", "k", fp_a, fx.op(201, "a")).outcome == lakh::idempotency_outcome::executed);
  auto r = g.run("t", "k", fp_b, fx.op(201, "b"));
  CHECK(r.outcome == lakh::idempotency_outcome::mismatch);
  CHECK(r.response.body.empty());
  // While in progress too: a crashed run holds "k2" with fp_a.
  auto o = fast_options();
  auto held = fx.store().begin("t", "k2", fp_a, o);
  REQUIRE(held.state == lakh::begin_state::acquired);
  CHECK(g.run("t", "k2", fp_b, fx.op(201, "b")).outcome == lakh::idempotency_outcome::mismatch);
  CHECK(fx.executions() == 1);
}

template <class F> void completed_keys_expire_after_ttl() {
  F fx;
  auto o = fast_options();
  o.ttl = 150ms;
  lakh::idempotency_guard g(fx.store(), o);
  CHECK(g.run("t", "k", fp_a, fx.op(201, "first")).outcome == lakh::idempotency_outcome::executed);
  CHECK(g.run("t", "k", fp_a, fx.op(201, "x")).outcome == lakh::idempotency_outcome::replayed);
  std::this_thread::sleep_for(400ms);
  // Expired: the key is new again, even with another fingerprint.
  auto r = g.run("t", "k", fp_b, fx.op(201, "second"));
  CHECK(r.outcome == lakh::idempotency_outcome::executed);
  CHECK(r.response.body == "second");
  CHECK(fx.executions() == 2);
}

template <class F> void crashed_run_is_retried_after_lease() {
  F fx;
  auto o = fast_options();
  o.lease = 200ms;
  o.wait = 0ms;
  lakh::idempotency_guard g(fx.store(), o);
  // A run that crashed: it took the key and never completed nor released it.
  auto crashed = fx.store().begin("t", "k", fp_a, o);
  REQUIRE(crashed.state == lakh::begin_state::acquired);
  auto r1 = g.run("t", "k", fp_a, fx.op(201, "retry"));
  CHECK(r1.outcome == lakh::idempotency_outcome::in_progress);
  std::this_thread::sleep_for(450ms);
  auto r2 = g.run("t", "k", fp_a, fx.op(201, "retry"));
  CHECK(r2.outcome == lakh::idempotency_outcome::executed);
  CHECK(r2.response.body == "retry");
  CHECK(g.run("t", "k", fp_a, fx.op(201, "x")).outcome == lakh::idempotency_outcome::replayed);
  CHECK(fx.executions() == 1);
}

template <class F> void duplicate_waits_boundedly_then_reports_in_progress() {
  F fx;
  auto o = fast_options();
  o.wait = 100ms;
  lakh::idempotency_guard g(fx.store(), o);
  auto held = fx.store().begin("t", "k", fp_a, o);
  REQUIRE(held.state == lakh::begin_state::acquired);
  auto t0 = std::chrono::steady_clock::now();
  auto r = g.run("t", "k", fp_a, fx.op(201, "no"));
  auto waited = std::chrono::steady_clock::now() - t0;
  CHECK(r.outcome == lakh::idempotency_outcome::in_progress);
  CHECK(waited >= 100ms);
  CHECK(waited < 10s); // did not block forever
  // A stop request ends the wait at once.
  std::stop_source ss;
  ss.request_stop();
  o.wait = 60s;
  lakh::idempotency_guard g2(fx.store(), o);
  CHECK(g2.run("t", "k", fp_a, fx.op(201, "no"), ss.get_token()).outcome ==
        lakh::idempotency_outcome::in_progress);
  CHECK(fx.executions() == 0);
}

template <class F> void throwing_operation_releases_the_key() {
  F fx;
  lakh::idempotency_guard g(fx.store(), fast_options());
  CHECK_THROWS_WITH_AS(g.run("t", "k", fp_a, fx.throwing_op()), "boom", std::runtime_error);
  auto r = g.run("t", "k", fp_a, fx.op(201, "second try"));
  CHECK(r.outcome == lakh::idempotency_outcome::executed);
  CHECK(r.response.body == "second try");
  CHECK(fx.executions() == F::throwing_op_persists + 1);
}

template <class F> void tenants_are_isolated() {
  F fx;
  lakh::idempotency_guard g(fx.store(), fast_options());
  auto a = g.run("tenant-a", "shared", fp_a, fx.op(201, "secret of A"));
  auto b = g.run("tenant-b", "shared", fp_a, fx.op(201, "B"));
  CHECK(a.outcome == lakh::idempotency_outcome::executed);
  CHECK(b.outcome == lakh::idempotency_outcome::executed);
  CHECK(b.response.body == "B");
  auto b2 = g.run("tenant-b", "shared", fp_a, fx.op(201, "x"));
  CHECK(b2.outcome == lakh::idempotency_outcome::replayed);
  CHECK(b2.response.body == "B");
  auto a2 = g.run("tenant-a", "shared", fp_a, fx.op(201, "x"));
  CHECK(a2.response.body == "secret of A");
  // Tenant/key boundaries cannot be shifted: ("ab","c") is not ("a","bc").
  auto s1 = g.run("ab", "c", fp_a, fx.op(201, "ab/c"));
  auto s2 = g.run("a", "bc", fp_a, fx.op(201, "a/bc"));
  CHECK(s1.outcome == lakh::idempotency_outcome::executed);
  CHECK(s2.outcome == lakh::idempotency_outcome::executed);
  CHECK(s2.response.body == "a/bc");
  CHECK(fx.executions() == 4);
}

template <class F> void bad_keys_are_rejected() {
  F fx;
  lakh::idempotency_guard g(fx.store(), fast_options());
  auto bad = [&](std::string tenant, std::string key, const char *needle) {
    INFO("tenant '" << tenant << "' key '" << key << "'");
    try {
      (void)g.run(tenant, key, fp_a, fx.op(201, "no"));
      FAIL("no exception");
    } catch (const std::invalid_argument &e) {
      CHECK(std::string(e.what()).find(needle) != std::string::npos);
      CHECK(std::string(e.what()).find("lakh::idempotency_guard::run") != std::string::npos);
    }
  };
  bad("t", "", "key is empty");
  bad("t", std::string(256, 'k'), "key is 256 bytes (at most 255)");
  bad("t", "has space", "key has a forbidden byte 0x20 at position 3");
  bad("t", "tab\there", "0x09");
  bad("t", "del\x7f", "0x7f");
  bad("t", "caf\xc3\xa9", "0xc3");
  bad("t", std::string("nul\0x", 5), "0x00");
  bad("bad tenant", "k", "tenant has a forbidden byte 0x20");
  bad(std::string(256, 't'), "k", "tenant is 256 bytes");
  CHECK(fx.executions() == 0);
  // The limits themselves are fine.
  auto longest = std::string(255, '~');
  CHECK(g.run("", longest, fp_a, fx.op(201, "ok")).outcome == lakh::idempotency_outcome::executed);
  CHECK(g.run("t", "!#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", fp_a, fx.op(201, "ok")).outcome ==
        lakh::idempotency_outcome::executed);
  CHECK(fx.executions() == 2);
}

} // namespace lakh::test::idem

// Expands to the shared cases as doctest test cases named "idempotency.<store>.<case>".
#define LAKH_IDEMPOTENCY_SUITE(store, Fixture)                                                     \
  TEST_CASE("idempotency." store ".runs_once_then_replays" * doctest::timeout(30)) {               \
    lakh::test::idem::runs_once_then_replays<Fixture>();                                           \
  }                                                                                                \
  TEST_CASE("idempotency." store ".binary_body_and_error_status_replayed" *                        \
            doctest::timeout(30)) {                                                                \
    lakh::test::idem::binary_body_and_error_status_are_replayed_exactly<Fixture>();                \
  }                                                                                                \
  TEST_CASE("idempotency." store ".concurrent_same_key_runs_once" * doctest::timeout(120)) {       \
    for (int threads : {2, 8, 64}) {                                                               \
      CAPTURE(threads);                                                                            \
      lakh::test::idem::concurrent_same_key_runs_once<Fixture>(threads);                           \
    }                                                                                              \
  }                                                                                                \
  TEST_CASE("idempotency." store ".mismatch" * doctest::timeout(30)) {                             \
    lakh::test::idem::mismatch_is_reported<Fixture>();                                             \
  }                                                                                                \
  TEST_CASE("idempotency." store ".expires_after_ttl" * doctest::timeout(30)) {                    \
    lakh::test::idem::completed_keys_expire_after_ttl<Fixture>();                                  \
  }                                                                                                \
  TEST_CASE("idempotency." store ".crash_then_retry_after_lease" * doctest::timeout(30)) {         \
    lakh::test::idem::crashed_run_is_retried_after_lease<Fixture>();                               \
  }                                                                                                \
  TEST_CASE("idempotency." store ".duplicate_waits_then_in_progress" * doctest::timeout(30)) {     \
    lakh::test::idem::duplicate_waits_boundedly_then_reports_in_progress<Fixture>();               \
  }                                                                                                \
  TEST_CASE("idempotency." store ".throw_releases_key" * doctest::timeout(30)) {                   \
    lakh::test::idem::throwing_operation_releases_the_key<Fixture>();                              \
  }                                                                                                \
  TEST_CASE("idempotency." store ".tenants_isolated" * doctest::timeout(30)) {                     \
    lakh::test::idem::tenants_are_isolated<Fixture>();                                             \
  }                                                                                                \
  TEST_CASE("idempotency." store ".bad_keys_rejected" * doctest::timeout(30)) {                    \
    lakh::test::idem::bad_keys_are_rejected<Fixture>();                                            \
  }
