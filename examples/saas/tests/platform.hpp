#pragma once
// examples/saas/tests/platform.hpp: the SaaS platform as real processes, for saas.e2e and the
// fault harness (saas_faults): the seven services (SAAS_BIN_DIR/saas_<name>) against the
// PostgreSQL, Redis and NATS of scripts/services, on a fresh database, in their own event
// namespace (stream, subjects, Redis keys), on ports of a slot no other platform holds; and the
// spec's usage rows and rating (../shared/spec/usage-rows.md) as the gateway's JSON.
// Errors are exceptions (std::runtime_error naming what failed), so that a doctest case and a
// plain program can both use it.
#include <child_process.hpp>

#include <httplib.h>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lakh/fake/usage.hpp>
#include <lakh/nats/jetstream.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace saas_test {

using json = nlohmann::json;

inline std::string env(const char *n) {
  const char *v = std::getenv(n);
  if (v == nullptr) {
    throw std::runtime_error(std::string(n) + " is not set: run under scripts/services run");
  }
  return v;
}

/// A service process (lakh_examples::spawn), SIGTERMed and reaped by the destructor. It dies
/// with the thread that started it (PR_SET_PDEATHSIG): start it from a thread that outlives it.
struct process {
  std::string bin;
  std::vector<std::string> env; ///< "NAME=value" of its own, over the test's environment
  pid_t pid = -1;
  process(std::string path, std::vector<std::string> own_env)
      : bin(std::move(path)), env(std::move(own_env)) {
    start();
  }
  void start() { pid = lakh_examples::spawn({bin}, nullptr, env); } // it dies with the test
  /// Sends `sig` (SIGSTOP, SIGCONT, ...) if the process runs; true if it was sent.
  bool signal(int sig) const { return pid > 0 && ::kill(pid, sig) == 0; }
  /// SIGKILL (no draining at all), reaped.
  void kill9() {
    if (pid <= 0) {
      return;
    }
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    pid = -1;
  }
  /// SIGTERM (and SIGCONT, should it be stopped); the exit status (-1 if it did not exit
  /// normally). One that has not exited after 30 s is killed with SIGKILL.
  int terminate() {
    if (pid <= 0) {
      return -1;
    }
    int st = 0;
    ::kill(pid, SIGTERM);
    ::kill(pid, SIGCONT);
    for (int i = 0; i < 3000 && ::waitpid(pid, &st, WNOHANG) == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (::waitpid(pid, &st, WNOHANG) == 0) {
      kill9();
      return -1;
    }
    pid = -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  }
  ~process() {
    if (pid > 0) {
      (void)terminate();
    }
  }
  process(const process &) = delete;
  process &operator=(const process &) = delete;
};

/// Thirteen consecutive ports (base .. base + 12, within 20000..26400, below the ephemeral
/// range) held for one platform's lifetime: slot k is taken by an exclusive flock on
/// $TMPDIR/lakh-saas-ports/k, so platforms of concurrent tests (ctest -j) never share a port,
/// and a slot whose ports something else listens on is passed over. The search starts at a
/// slot derived from the pid (a pid alone collided: two tests whose pids differ by a multiple
/// of the slot count got one another's services).
class port_slot {
public:
  static constexpr int slots = 400;
  static constexpr int width = 16;
  static constexpr int first_port = 20000;
  static constexpr int ports_used = 13;

  port_slot() {
    const char *tmp = std::getenv("TMPDIR");
    const std::string dir =
        std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/lakh-saas-ports";
    ::mkdir(dir.c_str(), 0777); // an existing directory is fine
    for (int i = 0; i < slots; ++i) {
      const int k = (static_cast<int>(::getpid()) + i) % slots;
      const std::string path = dir + "/" + std::to_string(k);
      const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
      if (fd < 0) {
        throw std::runtime_error("cannot open " + path + " (a port slot's lock file)");
      }
      if (::flock(fd, LOCK_EX | LOCK_NB) == 0 && free(first_port + k * width)) {
        fd_ = fd;
        base = first_port + k * width;
        return;
      }
      ::close(fd);
    }
    throw std::runtime_error("no free port slot in " + dir + " (" + std::to_string(slots) +
                             " platforms running?)");
  }
  ~port_slot() { ::close(fd_); } // releases the lock
  port_slot(const port_slot &) = delete;
  port_slot &operator=(const port_slot &) = delete;

  int base = 0;

private:
  /// Whether nothing listens on 127.0.0.1:[from, from + ports_used).
  static bool free(int from) {
    for (int port = from; port < from + ports_used; ++port) {
      const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      const int one = 1;
      ::setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one); // as the servers bind
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(static_cast<std::uint16_t>(port));
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      const bool ok = ::bind(s, reinterpret_cast<sockaddr *>(&a), sizeof a) == 0;
      ::close(s);
      if (!ok) {
        return false;
      }
    }
    return true;
  }

  int fd_ = -1;
};

/// The whole platform as real processes: a fresh database, its own event namespace (stream,
/// subjects, Redis keys) on the shared NATS and Redis, on the ports of a port_slot. The services'
/// settings come from the environment (GRPC_DEADLINE_MS, TENANT_RATE, ...: set them before
/// constructing one).
struct platform {
  static inline int instances = 0;
  std::string ns = "e2e" + std::to_string(::getpid()) + "n" + std::to_string(++instances);
  std::string db = "saas_" + ns;
  std::string url;
  port_slot ports;
  int base = ports.base;
  std::map<std::string, std::unique_ptr<process>> svc;
  httplib::Client http{"127.0.0.1", base};
  bool keep_database = false; ///< the destructor leaves the database (for a post-mortem)

  static constexpr const char *names[] = {"user",    "subscription", "billing", "invoicing",
                                          "payment", "notification", "gateway"};
  static std::string bin(const std::string &name) { return SAAS_BIN_DIR "/saas_" + name; }

  platform() {
    {
      pqxx::connection admin(admin_url());
      pqxx::nontransaction n(admin);
      n.exec("DROP DATABASE IF EXISTS " + db + " WITH (FORCE)");
      n.exec("CREATE DATABASE " + db);
    }
    url = "postgresql://postgres@127.0.0.1:" + env("PGPORT") + "/" + db;
    (void)env("NATS_URL");
    (void)env("REDIS_URL");
    // Each service logs in as its own role (created by the service, as the owner, at start).
    ::setenv("DATABASE_OWNER_URL", url.c_str(), 1);
    ::setenv("SERVICE_TOKEN_SECRET", "e2e-service-token-secret-0123456789abcdef", 1);
    ::setenv("GATEWAY_ADMIN_TOKEN", admin_token, 1);
    ::setenv("SIGNUP_RATE", "1000", 0); // the tests sign many tenants up from one address
    ::setenv("SIGNUP_BURST", "1000", 0);
    ::setenv("EVENTS_NAMESPACE", ns.c_str(), 1);
    ::setenv("GATEWAY_PORT", std::to_string(base).c_str(), 1);
    ::setenv("GATEWAY_KEY_SECRET", "e2e-secret-e2e-secret-e2e-secret-0123", 1);
    ::setenv("API_KEY_CACHE_MS", "300", 1); // the revocation check of saas.e2e waits for it
    for (int i = 0; i < 6; ++i) {
      std::string up = names[i];
      std::transform(up.begin(), up.end(), up.begin(), ::toupper);
      ::setenv((up + "_GRPC_ADDR").c_str(), ("127.0.0.1:" + std::to_string(base + 1 + i)).c_str(),
               1);
      ::setenv((up + "_METRICS_PORT").c_str(), std::to_string(base + 7 + i).c_str(), 1);
    }
    for (const char *n : names) {
      svc[n] = std::make_unique<process>(
          bin(n), std::vector<std::string>{"DATABASE_URL=" + service_url(n)});
      wait_healthy(n);
    }
  }

  ~platform() {
    svc.clear(); // SIGTERM, in the map's order; then the platform's stream goes
    try {
      std::string stream = ns;
      std::transform(stream.begin(), stream.end(), stream.begin(), ::toupper);
      lakh::nats::jetstream(env("NATS_URL")).delete_stream(stream);
      if (!keep_database) {
        pqxx::connection admin(admin_url());
        // With OUTBOX_STORE=wal a relay's server process holds its slot a moment after the
        // service exited, and a database with an active slot cannot be dropped (its slots go
        // with it once they are free).
        for (int i = 0;; ++i) {
          try {
            pqxx::nontransaction(admin).exec("DROP DATABASE IF EXISTS " + db + " WITH (FORCE)");
            break;
          } catch (const pqxx::sql_error &) {
            if (i == 50) {
              throw;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
          }
        }
      }
    } catch (const std::exception &) { // a run that failed may leave them; the server is temporary
    }
  }
  platform(const platform &) = delete;
  platform &operator=(const platform &) = delete;

  /// The server's DATABASE_URL as the caller started (platforms point it at their database).
  static const std::string &admin_url() {
    static const std::string url = env("DATABASE_URL");
    return url;
  }

  /// The token of the operators' routes (GATEWAY_ADMIN_TOKEN).
  static constexpr const char *admin_token = "e2e-admin-token-e2e-admin-token-0123456789";

  /// The database URL of a service: its own role, saas_<name>.
  std::string service_url(const std::string &name) const {
    return "postgresql://saas_" + name + "@127.0.0.1:" + env("PGPORT") + "/" + db;
  }

  int health_port(const std::string &name) const {
    for (int i = 0; i < 6; ++i) {
      if (name == names[i]) {
        return base + 7 + i;
      }
    }
    return base; // the gateway
  }
  /// Waits (10 s) until the service answers GET /healthz. @throws std::runtime_error if not.
  void wait_healthy(const std::string &name) {
    httplib::Client c("127.0.0.1", health_port(name));
    c.set_connection_timeout(std::chrono::seconds(1));
    c.set_read_timeout(std::chrono::seconds(1));
    for (int i = 0; i < 200; ++i) {
      if (auto r = c.Get("/healthz"); r && r->status == 200) {
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    throw std::runtime_error("saas_" + name + " did not answer /healthz within 10 s");
  }
  /// Starts the service again (killing it first with SIGKILL if it still runs) and waits
  /// until it answers. Call it from a thread that outlives the platform (process).
  void restart(const std::string &name) {
    if (svc.at(name)->pid > 0) {
      svc[name]->kill9();
    }
    svc[name]->start();
    wait_healthy(name);
  }
  /// Sends `sig` to the service (SIGSTOP, SIGCONT, SIGKILL: then restart() it).
  bool signal(const std::string &name, int sig) { return svc.at(name)->signal(sig); }

  httplib::Result post(const std::string &path, const std::string &body,
                       const std::string &key = "", const std::string &idem = "",
                       const std::string &traceparent = "") {
    httplib::Headers h;
    if (!key.empty()) {
      h.emplace("Authorization", "Bearer " + key);
    }
    if (!idem.empty()) {
      h.emplace("Idempotency-Key", idem);
    }
    if (!traceparent.empty()) {
      h.emplace("traceparent", traceparent);
    }
    return http.Post(path, h, body, "application/json");
  }
  /// post() again with the same Idempotency-Key while the answer is 502, 503 or 504 (or none),
  /// for up to 15 s, as the API asks a client to: for a platform that has just started (a
  /// channel still connecting on a loaded machine) or is recovering.
  httplib::Result post_definitive(const std::string &path, const std::string &body,
                                  const std::string &key, const std::string &idem) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    for (;;) {
      auto r = post(path, body, key, idem);
      const bool transient = !r || r->status == 502 || r->status == 503 || r->status == 504;
      if (!transient || std::chrono::steady_clock::now() > until) {
        return r;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
  httplib::Result get(const std::string &path, const std::string &key) {
    return http.Get(path, httplib::Headers{{"Authorization", "Bearer " + key}});
  }

  /// The first column of the first row of `sql` on the platform's database, as the owner.
  long count(const std::string &sql) {
    pqxx::connection c(url);
    pqxx::nontransaction n(c);
    return n.exec(sql)[0][0].as<long>();
  }
};

/// The spec's rating, written here from ../shared/spec/usage-rows.md (not the library's).
inline long spec_charge(int metric, long quantity) {
  static constexpr long price[] = {1, 3, 2, 50};
  const long p = price[metric];
  return quantity <= 1000 ? quantity * p : 1000 * p + ((quantity - 1000) * p * 9) / 10;
}

/// 2026-01-01, 2026-02-01, 2026-03-01 UTC.
inline constexpr std::int64_t month_start[] = {1767225600, 1769904000, 1772323200};

/// Rows [first, last) of the spec's stream (seed 42) as the gateway's JSON; their expected
/// charge in `cents`. Month 0 keeps the generated January timestamps; month 1 or 2 moves
/// them into February or March (the day taken modulo 28).
inline json usage(std::uint64_t first, std::uint64_t last, long &cents, std::uint64_t month = 0) {
  json rows = json::array();
  cents = 0;
  for (auto i = first; i < last; ++i) {
    const auto r = lakh::fake::row_at(42, i);
    rows.push_back(
        {{"id", r.id},
         {"user_id", r.user_id},
         {"metric", static_cast<int>(r.kind)},
         {"quantity", r.quantity},
         {"ts", month == 0 ? r.ts : month_start[month] + (r.ts - month_start[0]) % (28 * 86400)}});
    cents += spec_charge(static_cast<int>(r.kind), r.quantity);
  }
  return json{{"rows", rows}};
}

} // namespace saas_test
