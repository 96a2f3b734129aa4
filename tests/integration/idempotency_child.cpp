// lakh_idempotency_child: one process of tests/integration/idempotency_multiprocess_test.cpp.
// Opens its own store, starts THREADS threads that wait for the parent's go, then all call
// idempotency_guard::run with the same tenant and key. The operation does the store of
// record's business write (PostgreSQL: a row inserted in the guard's transaction; Redis: an
// INCR) and takes 30 ms. Protocol on stdin/stdout: prints "ready", waits for one byte, runs,
// prints one line per thread: "<outcome> <status> <body>" or "error <message>".
//
//   lakh_idempotency_child pg|redis URL NAMESPACE KEY THREADS
#include <lakh/pg/idempotency_store.hpp>
#include <lakh/redis/idempotency_store.hpp>

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

template <class Store, class Op>
int run_threads(Store &store, const std::string &key, int threads, Op make_op) {
  lakh::idempotency_guard g(store, options());
  const auto fp = lakh::fingerprint("POST", "/v1/charges", "amount=4200");
  std::atomic<bool> go{false};
  std::vector<result_line> results(static_cast<std::size_t>(threads));
  {
    std::vector<std::jthread> ts;
    for (int i = 0; i < threads; ++i) {
      ts.emplace_back([&, i] {
        auto op = make_op("winner " + std::to_string(::getpid()) + "/" + std::to_string(i));
        go.wait(false);
        auto &out = results[static_cast<std::size_t>(i)].text;
        try {
          auto r = g.run("tenant-mp", key, fp, op);
          out = std::string(lakh::to_string(r.outcome)) + " " + std::to_string(r.response.status) +
                " " + r.response.body;
        } catch (const std::exception &e) {
          out = std::string("error ") + e.what();
        }
      });
    }
    std::printf("ready\n");
    std::fflush(stdout);
    char byte = 0;
    if (::read(STDIN_FILENO, &byte, 1) != 1) {
      go = true;
      go.notify_all();
      std::fprintf(stderr, "lakh_idempotency_child: no go signal on stdin\n");
      return 1;
    }
    go = true;
    go.notify_all();
  }
  for (const auto &r : results) {
    std::printf("%s\n", r.text.c_str());
  }
  return 0;
}

} // namespace

int main(int argc, char **argv) {
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
      // libpqxx 6.4 initializes state shared by all transactions lazily, on the first one;
      // start it here, before the threads (TSan reports the first-use race otherwise).
      {
        auto c = pool.acquire();
        pqxx::work w(*c);
        w.commit();
      }
      const std::string business = ns + "_business";
      return run_threads(store, key, threads, [&](std::string body) {
        return [business, body](pqxx::work &w) {
          w.exec("INSERT INTO " + business + " (note) VALUES (" + w.quote(body) + ")");
          std::this_thread::sleep_for(30ms);
          return lakh::stored_response{201, body};
        };
      });
    }
    if (kind == "redis") {
      lakh::redis::connection_pool pool(url);
      lakh::redis::idempotency_store store(pool, {ns});
      return run_threads(store, key, threads, [&](std::string body) {
        return [&pool, ns, body] {
          (void)pool.command({"INCR", ns + "business_count"});
          std::this_thread::sleep_for(30ms);
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
