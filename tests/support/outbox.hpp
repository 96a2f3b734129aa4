#pragma once
// Test support for outbox tests: wait until the relay may publish what a test committed.
// The relay publishes a row only once its transaction id is below the cluster's snapshot
// xmin, so an open transaction anywhere in the cluster (another test running beside this
// one) holds freshly committed rows back for a moment. Tests that expect a round to publish
// what they committed wait for that first, instead of assuming they are alone.
#include <lakh/pg/outbox.hpp>

#include <doctest/doctest.h>

#include <pqxx/pqxx>

#include <chrono>
#include <cstddef>
#include <thread>

namespace lakh::test {

/// Waits (up to 30 s) until at least `n` events of `box` are eligible; FAILs otherwise.
inline void wait_eligible(lakh::pg::pool &pool, lakh::pg::outbox &box, std::size_t n) {
  for (int i = 0; i < 600; ++i) {
    auto c = pool.acquire();
    pqxx::work w(*c);
    if (box.ready(w, 1000).size() >= n) {
      return;
    }
    w.abort();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  FAIL("fewer than " << n << " outbox events became eligible within 30 s");
}

} // namespace lakh::test
