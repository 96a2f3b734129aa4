// Metrics (docs/metrics.md): a Prometheus registry of counters, gauges and histograms for a
// service, and for a long batch run per-worker histograms merged at the end beside a
// progress line. Checks: the counts add up and the exposition text carries them.
// [doc:registry]
#include <lakh/prometheus.hpp> // lakh::registry, and lakh/metrics.hpp's types
// [doc:registry]
#include <lakh/progress.hpp>
#include <lakh/task_group.hpp>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

// [doc:registry]
lakh::registry metrics;
auto &requests =
    metrics.make_counter("app_requests_total", "Requests served.", {{"route", "/usage"}});
auto &latency =
    metrics.make_histogram("app_request_seconds", "Request latency.", {{"route", "/usage"}});
auto &inflight = metrics.make_gauge("app_inflight", "Requests in flight.");

void handle() {
  inflight.add(1);
  const auto t0 = std::chrono::steady_clock::now();
  // ... serve ...
  latency.record(std::chrono::steady_clock::now() - t0);
  requests.add();
  inflight.add(-1);
}
// GET /metrics: return metrics.prometheus_text() as "text/plain; version=0.0.4".
// inflight.max() is the peak concurrency since start.
// [doc:registry]

int main() {
  const std::size_t workers = 4, total = 100000;
  // [doc:batch]
  lakh::counter done;
  std::vector<lakh::latency_histogram> per_worker(workers); // 43 KiB each
  lakh::progress_line progress("rows", total, [&] { return done.value(); });
  lakh::task_group group;
  for (std::size_t w = 0; w < workers; ++w) {
    group.spawn([&, w] {
      for (std::size_t i = 0; i < total / workers; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        handle(); // one row's work
        per_worker[w].record(std::chrono::steady_clock::now() - t0);
        done.add(1);
      }
    });
  }
  group.wait();
  progress.finish(); // the final line: "rows 100.0% 100000/100000 2.1M/s ETA 0.0s"
  lakh::latency_histogram all;
  for (const auto &h : per_worker) {
    all.merge(h);
  }
  std::printf("p99 %lld ns\n", static_cast<long long>(all.quantile(0.99).count()));
  // [doc:batch]
  const std::string text = metrics.prometheus_text();
  std::printf("%s", text.c_str());
  const bool ok = all.count() == total && requests.value() == total && latency.count() == total &&
                  inflight.value() == 0 && inflight.max() >= 1 && inflight.max() <= 4 &&
                  text.find("app_requests_total{route=\"/usage\"} 100000\n") != std::string::npos;
  return ok ? 0 : 1;
}
