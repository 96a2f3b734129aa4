// lakh::lock_all takes ranked mutexes in one global order, so transfers between accounts
// both ways never deadlock; the lock-order checker refuses an order that could deadlock even
// if this run got lucky (docs/lock_order.md). Checks: the total is kept with no report, a rank
// inversion is refused before it locks, and lock_all's order is by rank, then name.
#include <lakh/lock_order.hpp>

#include <array>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

// [doc:account]
struct account {
  lakh::ranked_mutex mu{10, "account"};
  long balance LAKH_GUARDED_BY(mu) = 0;
  void deposit(long n) LAKH_EXCLUDES(mu) {
    const lakh::lock_guard g(mu);
    balance += n;
  }
};
void transfer(account &from, account &to, long n) {
  const auto g = lakh::lock_all(from.mu, to.mu);
  from.mu.assert_held();
  to.mu.assert_held();
  from.balance -= n;
  to.balance += n;
}
// [doc:account]

// [doc:checker]
lakh::ranked_mutex accounts(10, "accounts");
lakh::ranked_mutex ledger(20, "ledger");

std::string check_inversion() {
  const lakh::lock_order::scoped_mode refuse(lakh::lock_order::mode::throw_error);
  std::thread([] { const auto g = lakh::lock_all(ledger, accounts); }).join(); // accounts, ledger
  try {
    const lakh::lock_guard g1(ledger);
    const lakh::lock_guard g2(accounts); // refused: rank inversion, before locking
  } catch (const lakh::lock_order_error &e) {
    return e.what(); // names both classes, their ranks and the acquisition sites
  }
  return {};
}
// [doc:checker]

int main() {
  lakh::lock_order::set_mode(lakh::lock_order::mode::report);
  std::vector<account> bank(4);
  for (auto &a : bank) {
    a.deposit(1000);
  }
  std::vector<std::jthread> tellers;
  for (int t = 0; t < 8; ++t) { // even tellers pay forward, odd ones backward
    tellers.emplace_back([&bank, t] {
      for (int i = 0; i < 20000; ++i) {
        const auto a = static_cast<std::size_t>(i % 4), b = (a + 1) % 4;
        t % 2 == 0 ? transfer(bank[a], bank[b], 3) : transfer(bank[b], bank[a], 5);
      }
    });
  }
  tellers.clear(); // joins
  long total = 0;
  for (auto &a : bank) {
    const lakh::lock_guard g(a.mu);
    total += a.balance;
  }
  const auto reports = lakh::lock_order::report_count();
  const std::string refused = check_inversion();
  // [doc:order]
  const auto guard = lakh::lock_all(ledger, bank[2].mu, accounts);
  const auto order = guard.acquisition_order(); // std::array: argument positions in locking order
  // [doc:order]
  std::printf("total %ld, reports %llu\nrefused: %s\n", total,
              static_cast<unsigned long long>(reports), refused.c_str());
  const bool ordered = order == std::array<std::size_t, 3>{1, 2, 0}; // rank, then name
  return total == 4000 && reports == 0 && !refused.empty() && ordered ? 0 : 1;
}
