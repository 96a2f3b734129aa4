// A weighted semaphore bounds concurrent work by its cost, not by a count of tasks: uploads
// of different sizes share a budget of 64 MiB in flight (docs/semaphore.md).
// Checks: every upload completes and the bytes in flight never exceed the budget.
// [doc:upload]
#include <lakh/semaphore.hpp>
// [doc:upload]
#include <lakh/task_group.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <thread>

struct blob { // an upload: only its size matters here
  std::size_t bytes;
  [[nodiscard]] std::size_t size() const { return bytes; }
};

std::atomic<std::size_t> in_flight{0}, peak{0}, sent{0};

void send(const blob &b) { // stands for the network call; records the bytes in flight
  const std::size_t now = in_flight += b.size();
  std::size_t p = peak.load();
  while (now > p && !peak.compare_exchange_weak(p, now)) {
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  in_flight -= b.size();
  ++sent;
}

// [doc:upload]
lakh::semaphore bytes_in_flight(64 << 20); // 64 MiB of uploads at once

lakh::status upload(const blob &b, std::stop_token st) {
  auto units = static_cast<std::ptrdiff_t>(b.size());
  auto p = bytes_in_flight.acquire_permit(units, st); // FIFO: a 60 MiB blob is not starved
  if (!p) {
    return lakh::status::cancelled;
  }
  send(b);
  return lakh::status::ok; // p releases its units here
}
// [doc:upload]

int main() {
  constexpr int uploads = 40;
  lakh::task_group group; // 40 uploads at once, of 1 to 60 MiB: the semaphore decides
  for (int i = 0; i < uploads; ++i) {
    const blob b{(i % 3 == 0 ? 60U : 1U + static_cast<std::size_t>(i % 7)) << 20};
    group.spawn([b](std::stop_token st) { (void)upload(b, st); });
  }
  group.wait();
  std::printf("%zu uploads, peak %zu MiB in flight (budget 64 MiB)\n", sent.load(),
              peak.load() >> 20);
  const bool ok = sent == uploads && peak <= (64U << 20) && peak > 0;
  return ok ? 0 : 1;
}
