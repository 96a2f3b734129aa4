// lakh_billing_run: 1,000,000 usage rows billed through PostgreSQL by several worker
// processes (SKIP LOCKED job queue with leases, per-tenant advisory locks in sorted order,
// invoices and invoice.issued events through the transactional outbox to NATS JetStream,
// counted once through an inbox), then verified against the spec's arithmetic.
// See docs/case-study.md and `lakh_billing_run --help`.
#include "billing.hpp"

#include <child_process.hpp>
#include <servers.hpp>

#include <CLI/CLI.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>

namespace {

using namespace std::chrono_literals;
using billing::clock;

double seconds_since(clock::time_point t) {
  return std::chrono::duration<double>(clock::now() - t).count();
}

std::string env_or(const char *name, const std::string &fallback) {
  const char *v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : fallback;
}

// SIGINT/SIGTERM request stop on this source (a sigwait thread; the signals are blocked in
// every thread, and unblocked again in spawned children).
std::stop_source g_stop;

void watch_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread([set] {
    int sig = 0;
    while (sigwait(&set, &sig) == 0) {
      g_stop.request_stop();
    }
  }).detach();
}

/// The database part of a libpq URL or key=value string replaced by `db`.
std::string with_database(const std::string &url, const std::string &db) {
  for (const char *scheme : {"postgresql://", "postgres://"}) {
    if (url.rfind(scheme, 0) == 0) {
      const auto host = std::string(scheme).size();
      const auto query = url.find('?', host);
      const auto slash = url.find('/', host);
      const auto path = slash != std::string::npos && slash < query ? slash : query;
      return url.substr(0, path == std::string::npos ? url.size() : path) + "/" + db +
             (query == std::string::npos ? "" : url.substr(query));
    }
  }
  return url + " dbname=" + db;
}

lakh::pg::pool make_pool(const std::string &url, std::size_t size, const std::string &app) {
  lakh::pg::pool_options o;
  o.url = url;
  o.max_size = size;
  o.on_connect = [app](pqxx::connection &c) {
    pqxx::nontransaction n(c);
    n.exec("SET application_name = " + n.quote(app));
  };
  return lakh::pg::pool(std::move(o));
}

// ---------------------------------------------------------------------------------------
// child processes

struct child {
  pid_t pid = -1;
  std::string stats_file;
};

pid_t spawn(const std::vector<std::string> &args) {
  try {
    return lakh_examples::spawn(args);
  } catch (const std::system_error &e) {
    throw std::runtime_error("billing_run: cannot start a worker process: " +
                             std::string(e.what()));
  }
}

// ---------------------------------------------------------------------------------------
// subcommands

struct common_opts {
  std::string database_url = env_or("DATABASE_URL", "");
  std::string nats_url = env_or("NATS_URL", "nats://127.0.0.1:4222");
};

void require_url(const common_opts &c) {
  if (c.database_url.empty()) {
    throw CLI::ValidationError("--database-url",
                               "no database: set DATABASE_URL or pass --database-url");
  }
}

billing::lock_order parse_order(const std::string &s) {
  return s == "unordered" ? billing::lock_order::unordered : billing::lock_order::sorted;
}

int cmd_load(const common_opts &c, std::uint64_t rows, std::uint64_t seed, std::uint32_t batch,
             unsigned loaders) {
  auto p = make_pool(c.database_url, loaders + 1, "billing_run load");
  billing::create_schema(p, false);
  const auto r = billing::load(p, seed, rows, batch, 2, loaders);
  std::printf("load: %" PRIu64 " rows in %" PRIu64 " chunks copied (%" PRIu64
              " chunks already there) in %.2f s (%.0f rows/s)\n",
              r.rows_copied, r.chunks_copied, r.chunks_skipped, r.seconds,
              static_cast<double>(r.rows_copied) / r.seconds);
  return 0;
}

int cmd_work(const common_opts &c, const billing::worker_options &o,
             const std::string &stats_file) {
  auto p = make_pool(c.database_url, 2, "billing_run work");
  const auto stats = billing::work(p, o, g_stop.get_token());
  if (!stats_file.empty()) {
    std::ofstream(stats_file) << stats.to_json().dump() << "\n";
  } else {
    std::printf("work: %" PRIu64 " jobs done, %" PRIu64 " lost to a takeover, %" PRIu64
                " failed attempts (retried)\n",
                stats.jobs, stats.lost, stats.errors);
  }
  return 0;
}

/// Relay and consumer threads; stop() ends both.
struct relay_threads {
  lakh::pg::pool &pool;
  lakh::nats::jetstream &js;
  billing::names names;
  lakh::pg::outbox box = billing::make_outbox(pool);
  lakh::nats::outbox_publisher pub{
      js, {names.database + "-", lakh::nats::key_order::strict, std::chrono::milliseconds(5000)}};
  lakh::pg::outbox_relay relay{box, pub, {}};
  billing::relay_stats consumer_stats;
  // Constructed in place (emplace): GCC 12 with sanitizers warns falsely about a moved-from
  // temporary jthread's stop_source.
  std::optional<std::jthread> relay_thread;
  std::optional<std::jthread> consumer_thread;

  relay_threads(lakh::pg::pool &p, lakh::nats::jetstream &j, billing::names n)
      : pool(p), js(j), names(std::move(n)) {}
  void start() {
    relay_thread.emplace([this](std::stop_token st) { relay.run(st); });
    consumer_thread.emplace(
        [this](std::stop_token st) { billing::count_events(pool, js, names, consumer_stats, st); });
  }
  void stop() {
    relay_thread.reset(); // requests stop and joins
    consumer_thread.reset();
  }
};

struct counts {
  std::int64_t jobs_done = -1;
  std::int64_t invoices = -1;
  std::int64_t events = -1;
  std::int64_t unpublished = -1;
};

std::optional<counts> read_counts(lakh::pg::pool &p) {
  try {
    return lakh::pg::with_connection(p, [](pqxx::connection &c) {
      pqxx::nontransaction t(c);
      auto r = t.exec("SELECT (SELECT count(*) FROM billing.jobs WHERE state = 'done'), "
                      "(SELECT count(*) FROM billing.invoices), "
                      "(SELECT count(*) FROM billing.notified), "
                      "(SELECT count(*) FROM billing.outbox)");
      return counts{r[0][0].as<std::int64_t>(), r[0][1].as<std::int64_t>(),
                    r[0][2].as<std::int64_t>(), r[0][3].as<std::int64_t>()};
    });
  } catch (const std::exception &) {
    return std::nullopt; // the server is restarting: ask again later
  }
}

int cmd_relay(const common_opts &c, bool until_done) {
  auto p = make_pool(c.database_url, 4, "billing_run relay");
  const auto n = billing::names_of(p);
  lakh::nats::jetstream js(c.nats_url);
  billing::ensure_stream(js, n, false);
  relay_threads r(p, js, n);
  r.start();
  while (!g_stop.stop_requested()) {
    std::this_thread::sleep_for(100ms);
    if (until_done) {
      const auto k = read_counts(p);
      if (k && billing::all_done(p) && k->unpublished == 0 && k->events == k->invoices) {
        break;
      }
    }
  }
  r.stop();
  std::printf("relay: %" PRIu64 " invoice events counted, %" PRIu64 " redeliveries skipped\n",
              r.consumer_stats.consumed, r.consumer_stats.redelivered);
  return 0;
}

void print_checks(const billing::verify_result &v) {
  for (const auto &k : v.checks) {
    std::printf("  %-48s %-22s %s\n", k.what.c_str(), k.found.c_str(),
                k.ok() ? "ok" : ("MISMATCH (expected " + k.expected + ")").c_str());
  }
}

int cmd_verify(const common_opts &c) {
  auto p = make_pool(c.database_url, 1, "billing_run verify");
  const auto v = billing::verify(p);
  print_checks(v);
  std::printf("verify: %s\n", v.ok() ? "PASS" : "FAIL");
  return v.ok() ? 0 : 1;
}

struct run_opts {
  std::uint64_t rows = 1'000'000;
  std::uint64_t seed = lakh::fake::default_seed;
  std::uint32_t batch = 100000;
  unsigned workers = std::max(1U, std::thread::hardware_concurrency());
  unsigned loaders = 2;
  std::string database = "lakh_billing";
  std::string order = "sorted";
  bool chaos = false;
  unsigned chaos_interval_ms = 1500;
  std::string services_script = lakh_examples::services_script;
  unsigned lease_ms = 3000;
  unsigned timeout_s = 900;
  std::string json_file;
  bool quiet = false;
};

std::int64_t read_deadlocks(lakh::pg::pool &p) {
  return lakh::pg::with_connection(p, [](pqxx::connection &c) {
    pqxx::nontransaction t(c);
    return t.exec("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")[0][0]
        .as<std::int64_t>();
  });
}

/// Quantile q of nanosecond samples, in milliseconds (0 when there are none).
double quantile_ms(std::vector<std::int64_t> v, double q) {
  if (v.empty()) {
    return 0;
  }
  const auto k = static_cast<std::size_t>(q * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return static_cast<double>(v[k]) / 1e6;
}

int cmd_run(const common_opts &c, const run_opts &o) {
  const auto setup0 = clock::now();
  if (o.database.empty() || o.database.size() > 40 ||
      o.database.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") != std::string::npos ||
      std::isdigit(static_cast<unsigned char>(o.database[0])) != 0) {
    throw CLI::ValidationError("--database", "'" + o.database +
                                                 "' must be 1..40 characters of a-z, 0-9 "
                                                 "and _, not starting with a digit");
  }
  if (o.chaos && env_or("LAKH_SERVICES_DIR", "").empty()) {
    throw CLI::ValidationError("--chaos", "needs the servers of scripts/services (it restarts "
                                          "them): run under `scripts/services run`, which sets "
                                          "LAKH_SERVICES_DIR");
  }
  // A fresh database: the run's deadlock count (pg_stat_database) is its own.
  {
    auto admin = lakh::pg::connect(c.database_url);
    pqxx::nontransaction n(*admin);
    n.exec("DROP DATABASE IF EXISTS " + o.database + " WITH (FORCE)");
    n.exec("CREATE DATABASE " + o.database);
  }
  const std::string url = with_database(c.database_url, o.database);
  auto p = make_pool(url, o.loaders + 4, "billing_run run");
  billing::create_schema(p, true);
  const auto n = billing::names_of(p);
  lakh::nats::jetstream js(c.nats_url);
  billing::ensure_stream(js, n, true);
  const auto deadlocks0 = read_deadlocks(p);
  char tmpl[] = "/tmp/lakh-billing-run.XXXXXX";
  const std::string stats_dir = ::mkdtemp(tmpl) != nullptr ? tmpl : "/tmp";

  std::mutex children_mu;
  std::vector<child> children;
  std::vector<std::string> stats_files;
  unsigned spawned = 0;
  auto start_worker = [&](std::size_t slot) {
    const std::string file = stats_dir + "/worker-" + std::to_string(spawned++) + ".json";
    const pid_t pid =
        spawn({"/proc/self/exe", "work", "--database-url", url, "--lease-ms",
               std::to_string(o.lease_ms), "--lock-order", o.order, "--stats-file", file});
    children[slot] = {pid, file};
    stats_files.push_back(file);
  };
  const double setup_s = seconds_since(setup0);

  const auto t0 = clock::now();
  {
    std::lock_guard lk(children_mu);
    children.resize(o.workers);
    for (std::size_t i = 0; i < o.workers; ++i) {
      start_worker(i);
    }
  }
  relay_threads relay(p, js, n);
  relay.start();

  // The monitor: progress once a second and, with --chaos, the faults.
  std::atomic<std::uint64_t> loaded{0};
  std::atomic<bool> work_done{false};
  std::string worker_failed; // guarded by children_mu
  std::atomic<std::int64_t> jobs_done{0};
  const std::uint64_t chunks = (o.rows + o.batch - 1) / o.batch;
  std::vector<std::string> survived;
  unsigned kills = 0;
  bool pg_restarted = false;
  bool nats_restarted = false;
  std::jthread monitor([&](std::stop_token st) {
    std::mt19937 rng(12345);
    auto last_print = clock::now();
    auto last_kill = clock::now();
    while (!st.stop_requested()) {
      std::this_thread::sleep_for(50ms);
      const auto k = read_counts(p);
      if (k) {
        jobs_done = k->jobs_done;
      }
      if (!o.quiet && clock::now() - last_print >= 1s && k) {
        last_print = clock::now();
        std::fprintf(stderr,
                     "[%6.1fs] loaded %3.0f%% | jobs %" PRId64 "/%" PRIu64 " | invoices %" PRId64
                     " | events %" PRId64 "\n",
                     seconds_since(t0),
                     100.0 * static_cast<double>(loaded.load()) / static_cast<double>(o.rows),
                     k->jobs_done, chunks, k->invoices, k->events);
      }
      {
        // A worker that exited by itself (not stopped, not killed by chaos) failed: say why.
        std::lock_guard lk(children_mu);
        for (auto &ch : children) {
          int ws = 0;
          if (!work_done && ch.pid > 0 && ::waitpid(ch.pid, &ws, WNOHANG) == ch.pid) {
            worker_failed = "worker pid " + std::to_string(ch.pid) + " exited with " +
                            (WIFEXITED(ws) ? "status " + std::to_string(WEXITSTATUS(ws))
                                           : "signal " + std::to_string(WTERMSIG(ws))) +
                            " (its error is above)";
            ch.pid = -1;
          }
        }
      }
      if (!o.chaos) {
        continue;
      }
      try {
        if (!work_done &&
            clock::now() - last_kill >= std::chrono::milliseconds(o.chaos_interval_ms)) {
          last_kill = clock::now();
          std::lock_guard lk(children_mu);
          const std::size_t slot = static_cast<std::size_t>(rng()) % children.size();
          if (work_done || children[slot].pid <= 0) {
            continue; // it failed by itself: the run is ending
          }
          ::kill(children[slot].pid, SIGKILL);
          ::waitpid(children[slot].pid, nullptr, 0);
          survived.push_back("worker pid " + std::to_string(children[slot].pid) + " killed -9 at " +
                             std::to_string(seconds_since(t0)).substr(0, 5) + " s and restarted");
          ++kills;
          start_worker(slot);
        }
        if (!pg_restarted &&
            (jobs_done.load() * 10 >= static_cast<std::int64_t>(chunks) * 3 || work_done)) {
          const auto r0 = clock::now();
          const auto at = seconds_since(t0);
          lakh_examples::services("restart", "pg", o.services_script);
          pg_restarted = true;
          survived.push_back("PostgreSQL restarted at " + std::to_string(at).substr(0, 5) + " s (" +
                             std::to_string(jobs_done.load()) + "/" + std::to_string(chunks) +
                             " jobs done; down " + std::to_string(seconds_since(r0)).substr(0, 4) +
                             " s)");
        }
        if (pg_restarted && !nats_restarted && k &&
            (k->invoices * 20 >= static_cast<std::int64_t>(lakh::fake::tenant_count) ||
             work_done)) {
          const auto at = seconds_since(t0);
          lakh_examples::services("restart", "nats", o.services_script);
          nats_restarted = true;
          survived.push_back("NATS restarted at " + std::to_string(at).substr(0, 5) + " s (" +
                             std::to_string(k->invoices) + " invoices, " +
                             std::to_string(k->events) + " events counted)");
        }
      } catch (const std::exception &e) {
        std::fprintf(stderr, "billing_run chaos: %s\n", e.what());
        survived.push_back(std::string("a fault could not be injected: ") + e.what());
      }
    }
  });

  const auto deadline = t0 + std::chrono::seconds(o.timeout_s);
  auto timed_out = [&](const char *what) {
    {
      std::lock_guard lk(children_mu);
      if (!worker_failed.empty()) {
        throw std::runtime_error("billing_run run: " + worker_failed);
      }
    }
    if (clock::now() > deadline || g_stop.stop_requested()) {
      throw std::runtime_error(std::string("billing_run run: ") +
                               (g_stop.stop_requested() ? "interrupted" : "timed out") +
                               " while waiting for " + what);
    }
  };
  int status = 1;
  nlohmann::json report;
  try {
    const auto lr = billing::load(p, o.seed, o.rows, o.batch, 2, o.loaders, &loaded);
    const double load_s = seconds_since(t0);
    while (true) {
      bool done = false;
      try {
        done = billing::all_done(p);
      } catch (const std::exception &) {
      }
      if (done) {
        break;
      }
      timed_out("the workers");
      std::this_thread::sleep_for(20ms);
    }
    const double work_s = seconds_since(t0);
    {
      std::lock_guard lk(children_mu);
      work_done = true; // under the lock: the monitor neither kills nor reaps from here on
      for (auto &ch : children) {
        if (ch.pid > 0) {
          ::kill(ch.pid, SIGTERM);
        }
      }
      for (auto &ch : children) {
        if (ch.pid > 0) {
          ::waitpid(ch.pid, nullptr, 0);
        }
      }
    }
    while (true) {
      const auto k = read_counts(p);
      if (k && k->unpublished == 0 && k->events == k->invoices) {
        break;
      }
      timed_out("the invoice events");
      std::this_thread::sleep_for(20ms);
    }
    const double events_s = seconds_since(t0);
    monitor.request_stop();
    monitor.join();
    relay.stop();
    const auto v0 = clock::now();
    const auto v = billing::verify(p);
    const double verify_s = seconds_since(v0);
    const double total_s = seconds_since(t0);
    // Worker backends flush their statistics when they exit: wait for them to be gone.
    for (int i = 0; i < 100; ++i) {
      const auto left = lakh::pg::with_connection(p, [](pqxx::connection &cn) {
        pqxx::nontransaction t(cn);
        return t
            .exec("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                  "'billing_run work'")[0][0]
            .as<int>();
      });
      if (left == 0) {
        break;
      }
      std::this_thread::sleep_for(50ms);
    }
    const auto deadlocks = read_deadlocks(p) - deadlocks0;

    // Worker statistics (a worker killed with -9 leaves none: its figures are lost).
    std::vector<std::int64_t> jobs;
    nlohmann::json retries = nlohmann::json::object();
    std::uint64_t lost = 0;
    std::uint64_t errors = 0;
    unsigned reports = 0;
    for (const auto &f : stats_files) {
      std::ifstream in(f);
      if (!in) {
        continue; // killed before it could write
      }
      const auto j = nlohmann::json::parse(in, nullptr, false);
      if (j.is_discarded()) {
        continue; // killed while writing
      }
      ++reports;
      for (auto x : j["job_ns"]) {
        jobs.push_back(x.get<std::int64_t>());
      }
      for (auto &[cause, count] : j["retries"].items()) {
        retries[cause] = retries.value(cause, std::uint64_t{0}) + count.get<std::uint64_t>();
      }
      lost += j["lost"].get<std::uint64_t>();
      errors += j["errors"].get<std::uint64_t>();
      std::remove(f.c_str());
    }
    ::rmdir(stats_dir.c_str());

    const bool sorted = o.order == "sorted";
    const bool chaos_ok = !o.chaos || (kills > 0 && pg_restarted && nats_restarted);
    const bool pass = v.ok() && (!sorted || deadlocks == 0) && chaos_ok && v.events == v.invoices;
    const double rows_d = static_cast<double>(o.rows);
    std::printf("billing_run: %" PRIu64 " rows, %u workers, batch %u, locks %s%s\n", o.rows,
                o.workers, o.batch, o.order.c_str(), o.chaos ? ", chaos" : "");
    std::printf("  setup (database, schema, stream)  %7.2f s (not counted)\n", setup_s);
    std::printf("  load  (generate, COPY, enqueue)   %7.2f s  %10.0f rows/s\n", load_s,
                rows_d / load_s);
    std::printf("  work  (all jobs done)             %7.2f s  %10.0f rows/s\n", work_s,
                rows_d / work_s);
    std::printf("  events (all counted)              %7.2f s\n", events_s);
    std::printf("  verify                            %7.2f s\n", verify_s);
    std::printf("  end to end                        %7.2f s  %10.0f rows/s\n", total_s,
                rows_d / total_s);
    std::printf("  job p50 %.1f ms, p99 %.1f ms (%zu attempts, %u worker reports)\n",
                quantile_ms(jobs, 0.5), quantile_ms(jobs, 0.99), jobs.size(), reports);
    std::printf("  retries by cause %s; jobs lost to a takeover %" PRIu64 "; errors %" PRIu64 "\n",
                retries.dump().c_str(), lost, errors);
    std::printf("  deadlocks (pg_stat_database) %" PRId64 "\n", deadlocks);
    std::printf("  invoices %" PRIu64 ", invoice events counted %" PRIu64 " (%" PRIu64
                " redeliveries skipped by the inbox)\n",
                v.invoices, v.events, relay.consumer_stats.redelivered);
    std::printf("  total_cents %" PRIu64 " checksum %" PRIu64 "\n", v.total_cents, v.checksum);
    print_checks(v);
    for (const auto &s : survived) {
      std::printf("  survived: %s\n", s.c_str());
    }
    if (!chaos_ok) {
      std::printf("  chaos: not every fault was injected (kills %u, PostgreSQL %s, NATS %s)\n",
                  kills, pg_restarted ? "restarted" : "not restarted",
                  nats_restarted ? "restarted" : "not restarted");
    }
    std::printf("billing_run: %s\n", pass ? "PASS" : "FAIL");
    report = {{"rows", o.rows},
              {"workers", o.workers},
              {"batch", o.batch},
              {"lock_order", o.order},
              {"chaos", o.chaos},
              {"setup_s", setup_s},
              {"load_s", load_s},
              {"work_s", work_s},
              {"events_s", events_s},
              {"verify_s", verify_s},
              {"total_s", total_s},
              {"rows_per_s", rows_d / total_s},
              {"rows_copied", lr.rows_copied},
              {"job_p50_ms", quantile_ms(jobs, 0.5)},
              {"job_p99_ms", quantile_ms(jobs, 0.99)},
              {"retries", retries},
              {"lost", lost},
              {"deadlocks", deadlocks},
              {"invoices", v.invoices},
              {"events", v.events},
              {"total_cents", v.total_cents},
              {"checksum", v.checksum},
              {"kills", kills},
              {"survived", survived},
              {"pass", pass}};
    status = pass ? 0 : 1;
  } catch (...) {
    monitor.request_stop();
    if (monitor.joinable()) {
      monitor.join();
    }
    relay.stop();
    std::lock_guard lk(children_mu);
    for (auto &ch : children) {
      if (ch.pid > 0) {
        ::kill(ch.pid, SIGKILL);
        ::waitpid(ch.pid, nullptr, 0);
      }
    }
    throw;
  }
  if (!o.json_file.empty()) {
    std::ofstream(o.json_file) << report.dump(2) << "\n";
  }
  return status;
}

} // namespace

int main(int argc, char **argv) {
  lakh_examples::die_with_parent(); // a worker dies with the `run` that started it
  watch_signals();
  CLI::App app{"lakh_billing_run: usage rows billed through PostgreSQL by worker processes "
               "(SKIP LOCKED jobs with leases, sorted per-tenant advisory locks, invoices "
               "through the outbox to NATS JetStream), verified against the spec"};
  app.require_subcommand(1);
  common_opts c;
  auto add_common = [&c](CLI::App *s) {
    s->add_option("--database-url", c.database_url, "PostgreSQL URL (default: $DATABASE_URL)");
    s->add_option("--nats-url", c.nats_url, "NATS URL (default: $NATS_URL)");
  };

  std::uint64_t rows = 1'000'000;
  std::uint64_t seed = lakh::fake::default_seed;
  std::uint32_t batch = 100000;
  unsigned loaders = 2;
  auto *load = app.add_subcommand("load", "generate rows and COPY them in, one job per chunk");
  add_common(load);
  load->add_option("--rows", rows, "rows to load")->check(CLI::Range(1ULL, 100'000'000ULL));
  load->add_option("--seed", seed, "generator seed");
  load->add_option("--batch", batch, "rows per chunk (one job each)")
      ->check(CLI::Range(1U, 1'000'000U));
  load->add_option("--loaders", loaders, "COPY connections")->check(CLI::Range(1U, 64U));

  billing::worker_options wo;
  std::string order = "sorted";
  unsigned lease_ms = 3000;
  std::string stats_file;
  auto *work = app.add_subcommand("work", "a worker process: claim jobs and bill them (start "
                                          "it N times, on any machine)");
  add_common(work);
  work->add_option("--lease-ms", lease_ms, "job lease")->check(CLI::Range(100U, 3'600'000U));
  work->add_option("--lock-order", order, "sorted (safe) or unordered (to see deadlocks)")
      ->check(CLI::IsMember({"sorted", "unordered"}));
  work->add_flag("--until-idle", wo.until_idle, "exit once the load is done and no job is left");
  work->add_option("--stats-file", stats_file, "write statistics (JSON) here at exit");

  bool until_done = false;
  auto *relay = app.add_subcommand("relay", "outbox -> JetStream, and count invoice events "
                                            "once through the inbox");
  add_common(relay);
  relay->add_flag("--until-done", until_done,
                  "exit once every job is done and every invoice event counted");

  auto *verify = app.add_subcommand("verify", "recompute the spec's figures from the database");
  add_common(verify);

  run_opts ro;
  auto *run = app.add_subcommand("run", "everything against the local servers: a fresh "
                                        "database, load, N workers, relay, verify");
  add_common(run);
  run->add_option("--rows", ro.rows, "rows to bill")->check(CLI::Range(1ULL, 100'000'000ULL));
  run->add_option("--seed", ro.seed, "generator seed");
  run->add_option("--batch", ro.batch, "rows per job")->check(CLI::Range(1U, 1'000'000U));
  run->add_option("--workers", ro.workers, "worker processes (default: cores)")
      ->check(CLI::Range(1U, 64U));
  run->add_option("--database", ro.database, "database to create afresh on the server");
  run->add_option("--lock-order", ro.order, "sorted (safe) or unordered (to see deadlocks)")
      ->check(CLI::IsMember({"sorted", "unordered"}));
  run->add_flag("--chaos", ro.chaos, "kill -9 workers, restart PostgreSQL and NATS mid-run");
  run->add_option("--chaos-interval-ms", ro.chaos_interval_ms, "time between worker kills")
      ->check(CLI::Range(50U, 600'000U));
  run->add_option("--services-script", ro.services_script,
                  "with --chaos: the script that restarts the servers (`<script> restart pg|nats`; "
                  "default: scripts/services of the source tree this was built from)")
      ->capture_default_str();
  run->add_option("--lease-ms", ro.lease_ms, "job lease")->check(CLI::Range(100U, 3'600'000U));
  run->add_option("--timeout", ro.timeout_s, "give up after this many seconds")
      ->check(CLI::Range(1U, 86'400U));
  run->add_option("--json", ro.json_file, "write the figures as JSON to this file");
  run->add_flag("--quiet", ro.quiet, "no progress lines");

  CLI11_PARSE(app, argc, argv);
  try {
    require_url(c);
    wo.lease = std::chrono::milliseconds(lease_ms);
    wo.order = parse_order(order);
    if (*load) {
      return cmd_load(c, rows, seed, batch, loaders);
    }
    if (*work) {
      return cmd_work(c, wo, stats_file);
    }
    if (*relay) {
      return cmd_relay(c, until_done);
    }
    if (*verify) {
      return cmd_verify(c);
    }
    return cmd_run(c, ro);
  } catch (const CLI::Error &e) {
    return app.exit(e);
  } catch (const std::exception &e) {
    std::fprintf(stderr, "billing_run: %s\n", e.what());
    return 1;
  }
}
