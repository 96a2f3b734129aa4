// The README's first example: a producer and four consumers over a bounded channel, in a
// task group that joins them and rethrows the first exception.
// [doc:quickstart]
#include <lakh/lakh.hpp>

#include <atomic>
#include <cstdio>

int main() {
  lakh::channel<int> jobs(64); // bounded: send blocks while 64 items wait
  std::atomic<long> sum{0};
  lakh::task_group group; // errgroup: joins all, first exception stops the rest
  group.spawn([&] {
    for (int i = 1; i <= 1000; ++i) {
      (void)jobs.send(i); // status::closed if a consumer closed the channel
    }
    jobs.close(); // receivers drain what is buffered, then see closed
  });
  for (int w = 0; w < 4; ++w) {
    group.spawn([&](std::stop_token st) {
      while (auto v = jobs.recv(st)) { // std::nullopt once closed and drained, or stopped
        sum += *v;
      }
    });
  }
  group.wait(); // joins all; rethrows the first exception after stopping the others
  std::printf("sum %ld\n", sum.load()); // sum 500500
}
// [doc:quickstart]
