// A consumer waits on two channels at once with select_for: orders to process, alerts to
// page, and a timeout to flush on (docs/channel.md). A closed channel ends the loop once
// drained. Checks: every order is processed exactly once, in total.
// [doc:select]
#include <lakh/channel.hpp>
#include <lakh/task_group.hpp>
// [doc:select]

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

struct order {
  int id = 0;
  long cents = 0;
};

std::vector<order> load_orders() {
  std::vector<order> v;
  for (int i = 1; i <= 1000; ++i) {
    v.push_back({i, i * 10L});
  }
  return v;
}

long processed_cents = 0; // written by the consumer only, read after g.wait()
int pages = 0, flushes = 0;
void process(const order &o) {
  processed_cents += o.cents;
}
void page(const std::string &) {
  ++pages;
}
void flush() {
  ++flushes;
}

int main() {
  // [doc:select]
  lakh::channel<order> orders(256);
  lakh::channel<std::string> alerts(16);

  lakh::task_group g;
  g.spawn([&] {
    for (auto &o : load_orders()) {
      if (orders.send(std::move(o)) == lakh::status::closed) {
        return; // the consumer gave up
      }
    }
    orders.close(); // the consumer drains what is buffered, then its loop ends
  });
  g.spawn([&](std::stop_token st) {
    order o;
    std::string a;
    for (;;) {
      auto r = lakh::select_for(std::chrono::seconds(1), st, lakh::recv_case{orders, o},
                                lakh::recv_case{alerts, a});
      if (r.st == lakh::status::timeout) {
        flush();
        continue;
      }
      if (r.st != lakh::status::ok) {
        break; // closed or cancelled
      }
      r.index == 0 ? process(o) : page(a);
    }
  });
  (void)alerts.send("disk 91% full");
  g.wait();
  // [doc:select]
  std::printf("processed %ld cents, %d pages, %d flushes\n", processed_cents, pages, flushes);
  return processed_cents == 5005000 ? 0 : 1; // 10 * (1 + ... + 1000)
}
