#pragma once
// Test support for concurrency tests: a one-shot gate that tasks wait on, and a bounded wait
// for a condition that other threads make true.

#include <doctest/doctest.h>

#include <chrono>
#include <future>
#include <thread>

namespace lakh::test {

/// A one-shot gate: tasks wait on it, the test opens it.
class gate {
public:
  void open() { promise_.set_value(); }
  void wait() const { opened_.wait(); }

private:
  std::promise<void> promise_;
  std::shared_future<void> opened_ = promise_.get_future().share();
};

/// Polls (sleeping 100 us) until `pred` holds; fails the test after 10 s instead of hanging.
template <class Pred> void wait_until_true(Pred pred) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!pred()) {
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

} // namespace lakh::test
