// lakh_idempotency_child: one process of tests/integration/idempotency_multiprocess_test.cpp.
// Opens its own store, starts THREADS threads that wait for the parent's go, then all call
// idempotency_guard::run with the same tenant and key. The operation does the store of
// record's business write (PostgreSQL: a row inserted in the guard's transaction; Redis: an
// INCR) and takes 100 ms. Protocol on stdin/stdout: opens its connections, prints "ready",
// waits for one byte (end of file instead: exits without touching the store), runs, prints
// one line per thread: "<outcome> <begin ns> <end ns> <status> <body>" or
// "error <begin ns> <end ns> <message>", the times on CLOCK_MONOTONIC.
//
//   lakh_idempotency_child pg|redis URL NAMESPACE KEY THREADS
#include <lakh/pg/idempotency_store.hpp>
#include <lakh/redis/idempotency_store.hpp>

#include <child_process.hpp>

#include <pqxx/pqxx>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <exception>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;

lakh::idempotency_options options() {
  lakh::idempotency_options o;
  o.ttl = 60s;
  o.lease = 30s;
  o.wait = 20s; // duplicates wait for the winner's result
  o.poll = lakh::backoff(1ms, 20ms);
  return o;
}

struct result_line {
  std::string text;
};

// Nanoseconds on CLOCK_MONOTONIC (libstdc++'s steady_clock), comparable across processes.
long long now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

template <class Store, class Op>
int run_threads(Store &store, const std::string &key, int threads, Op make_op) {
  lakh::idempotency_guard g(store, options());
  const auto fp = lakh::fingerprint("POST", "/v1/charges", "amount=4200");
  enum : int { wait_for_go, go, abandon };
  std::atomic<int> signal{wait_for_go};
  std::vector<result_line> results(static_cast<std::size_t>(threads));
  {
    std::vector<std::jthread> ts;
    for (int i = 0; i < threads; ++i) {
      ts.emplace_back([&, i] {
        auto op = make_op("winner " + std::to_string(::getpid()) + "/" + std::to_string(i));
        signal.wait(wait_for_go);
        if (signal.load() != go) {
          return; // the parent went away: touch nothing
        }
        auto &out = results[static_cast<std::size_t>(i)].text;
        const auto begin = now_ns();
        std::string rest;
        std::string outcome;
        try {
          auto r = g.run("tenant-mp", key, fp, op);
          outcome = lakh::to_string(r.outcome);
          rest = std::to_string(r.response.status) + " " + r.response.body;
        } catch (const std::exception &e) {
          outcome = "error";
          rest = e.what();
        }
        out = outcome + " " + std::to_string(begin) + " " + std::to_string(now_ns()) + " " + rest;
      });
    }
    std::printf("ready\n");
    std::fflush(stdout);
    char byte = 0;
    const bool got_go = ::read(STDIN_FILENO, &byte, 1) == 1;
    signal = got_go ? go : abandon;
    signal.notify_all();
    if (!got_go) {
      std::fprintf(stderr, "lakh_idempotency_child: no go signal on stdin\n");
      return 1;
    }
  }
  for (const auto &r : results) {
    std::printf("%s\n", r.text.c_str());
  }
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  lakh_examples::die_with_parent();
  if (argc != 6) {
    std::fprintf(stderr, "usage: lakh_idempotency_child pg|redis URL NAMESPACE KEY THREADS\n");
    return 2;
  }
  const std::string kind = argv[1];
  const std::string url = argv[2];
  const std::string ns = argv[3];
  const std::string key = argv[4];
  const int threads = std::stoi(argv[5]);
  try {
    if (kind == "pg") {
      lakh::pg::pool pool(url, static_cast<std::size_t>(threads));
      lakh::pg::idempotency_store store(pool, {ns});
      // Open every connection now (the pool connects lazily), so that at the go signal all
      // threads reach the server together instead of one connect apart.
      {
        std::vector<lakh::pg::pooled_connection> open;
        for (int i = 0; i < threads; ++i) {
          open.push_back(pool.acquire());
          pqxx::work w(*open.back());
          w.commit();
        }
      }
      const std::string business = ns + "_business";
      return run_threads(store, key, threads, [&](std::string body) {
        return [business, body](pqxx::work &w) {
          w.exec("INSERT INTO " + business + " (note) VALUES (" + w.quote(body) + ")");
          std::this_thread::sleep_for(100ms);
          return lakh::stored_response{201, body};
        };
      });
    }
    if (kind == "redis") {
      lakh::redis::connection_pool pool(url);
      lakh::redis::idempotency_store store(pool, {ns});
      { // open every connection now, as for PostgreSQL (the pool keeps them idle)
        std::vector<lakh::redis::connection_pool::lease> open;
        for (int i = 0; i < threads; ++i) {
          open.push_back(pool.acquire());
          (void)open.back()->command({"PING"});
        }
      }
      return run_threads(store, key, threads, [&](std::string body) {
        return [&pool, ns, body] {
          (void)pool.command({"INCR", ns + "business_count"});
          std::this_thread::sleep_for(100ms);
          return lakh::stored_response{201, body};
        };
      });
    }
    std::fprintf(stderr, "lakh_idempotency_child: unknown store '%s'\n", kind.c_str());
    return 2;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "lakh_idempotency_child: %s\n", e.what());
    return 1;
  }
}
