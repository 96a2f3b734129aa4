#pragma once
// Test support: an element type that counts its lifetimes and can be told to throw on a
// move, for checking that containers neither leak nor duplicate nor lose values.

#include <atomic>
#include <stdexcept>

namespace lakh::test {

struct tracked {
  static inline std::atomic<long> alive{0};
  static inline std::atomic<long> throw_on_move{-1}; ///< throw on the Nth move from now (0 = next)

  int value = 0;

  tracked() noexcept { ++alive; }
  explicit tracked(int v) noexcept : value(v) { ++alive; }
  tracked(const tracked &o) noexcept : value(o.value) { ++alive; }
  tracked(tracked &&o) : value(o.value) {
    maybe_throw();
    o.value = -1;
    ++alive;
  }
  tracked &operator=(const tracked &o) noexcept = default;
  tracked &operator=(tracked &&o) {
    maybe_throw();
    value = o.value;
    o.value = -1;
    return *this;
  }
  ~tracked() { --alive; }

private:
  static void maybe_throw() {
    long n = throw_on_move.load();
    if (n >= 0 && throw_on_move.fetch_sub(1) == 0) {
      throw std::runtime_error("tracked: move throws (on purpose)");
    }
  }
};

} // namespace lakh::test
