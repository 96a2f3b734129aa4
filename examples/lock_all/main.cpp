// lakh::lock_all takes several ranked mutexes in one global order, so transfers between
// accounts in opposite directions never deadlock; the lock-order checker reports an order
// that could deadlock even if this run got lucky (docs/lock_order.md).
// Checks: 8 threads move money both ways and the total is kept with no checker report; then
// a rank inversion is refused (throw_error mode) before it can lock.
#include <lakh/lock_order.hpp>

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
  std::printf("total %ld, reports %llu\nrefused: %s\n", total,
              static_cast<unsigned long long>(reports), refused.c_str());
  return total == 4000 && reports == 0 && !refused.empty() ? 0 : 1;
}
