// End to end through the gateway, against real processes and the PostgreSQL of
// scripts/services (DATABASE_URL): signup, users, the bad-input table with exact statuses and
// nothing written, tenant isolation by row-level security (also proven by direct SQL).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <httplib.h>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

extern char **environ;

namespace {

using json = nlohmann::json;

std::string env(const char *n) {
  const char *v = std::getenv(n);
  if (v == nullptr) {
    throw std::runtime_error(std::string(n) + " is not set: run under scripts/services run");
  }
  return v;
}

struct process {
  pid_t pid = -1;
  explicit process(const std::vector<std::string> &args) {
    std::vector<char *> argv;
    for (const auto &a : args) {
      argv.push_back(const_cast<char *>(a.c_str()));
    }
    argv.push_back(nullptr);
    REQUIRE(posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) == 0);
  }
  ~process() {
    if (pid > 0) {
      ::kill(pid, SIGTERM);
      ::waitpid(pid, nullptr, 0);
    }
  }
  process(const process &) = delete;
  process &operator=(const process &) = delete;
};

struct platform {
  std::string db = "saas_e2e_" + std::to_string(::getpid());
  std::string url;
  int port = 18000 + ::getpid() % 1000;
  std::unique_ptr<process> user;
  std::unique_ptr<process> gateway;
  httplib::Client http{"127.0.0.1", port};

  platform() {
    {
      pqxx::connection admin(env("DATABASE_URL"));
      pqxx::nontransaction n(admin);
      n.exec("DROP DATABASE IF EXISTS " + db + " WITH (FORCE)");
      n.exec("CREATE DATABASE " + db);
    }
    url = "postgresql://postgres@127.0.0.1:" + env("PGPORT") + "/" + db;
    ::setenv("DATABASE_URL", url.c_str(), 1);
    const std::string grpc = "127.0.0.1:" + std::to_string(port + 1000);
    ::setenv("USER_GRPC_ADDR", grpc.c_str(), 1);
    ::setenv("GATEWAY_PORT", std::to_string(port).c_str(), 1);
    user = std::make_unique<process>(std::vector<std::string>{SAAS_USER_BIN});
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    gateway = std::make_unique<process>(std::vector<std::string>{SAAS_GATEWAY_BIN});
    for (int i = 0; i < 100 && !http.Get("/metrics"); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    REQUIRE(http.Get("/metrics"));
  }

  httplib::Result post(const std::string &path, const std::string &body,
                       const std::string &key = "", const std::string &idem = "") {
    httplib::Headers h;
    if (!key.empty()) {
      h.emplace("Authorization", "Bearer " + key);
    }
    if (!idem.empty()) {
      h.emplace("Idempotency-Key", idem);
    }
    return http.Post(path, h, body, "application/json");
  }

  long count(const std::string &sql) {
    pqxx::connection c(url);
    pqxx::nontransaction n(c);
    return n.exec(sql)[0][0].as<long>();
  }
};

} // namespace

TEST_CASE("saas.e2e.signup_users_bad_input_and_tenant_isolation" * doctest::timeout(120)) {
  platform p;
  auto s = p.post("/v1/signup", R"({"name":"acme"})", "", "sig-1");
  REQUIRE(s);
  REQUIRE(s->status == 201);
  const auto acme = json::parse(s->body);
  const auto key = acme["api_key"].get<std::string>();
  // Replay: same response, nothing created twice.
  auto again = p.post("/v1/signup", R"({"name":"acme"})", "", "sig-1");
  CHECK(again->status == 201);
  CHECK(again->body == s->body);
  CHECK(again->get_header_value("Idempotent-Replayed") == "true");
  CHECK(p.count("SELECT count(*) FROM users.tenants") == 1);
  CHECK(p.count("SELECT count(*) FROM gateway.api_keys") == 1);
  CHECK(p.count("SELECT count(*) FROM gateway.api_keys WHERE key_sha256 = '" + key + "'") == 0);

  auto u = p.post("/v1/users", R"({"email":"a@acme.io"})", key, "u-1");
  REQUIRE(u->status == 201);
  const auto user_id = json::parse(u->body)["id"].get<long>();

  struct bad_case {
    const char *what;
    std::string body;
    std::string key;
    std::string idem;
    int status;
  };
  const std::string big(1 << 20 | 1, 'x');
  for (const auto &c : std::vector<bad_case>{
           {"malformed JSON", "{bad", key, "b-1", 400},
           {"unknown field", R"({"email":"b@acme.io","admin":"yes"})", key, "b-2", 400},
           {"missing field", R"({})", key, "b-3", 400},
           {"wrong type", R"({"email":42})", key, "b-4", 400},
           {"body over 1 MiB", big, key, "b-5", 413},
           {"no API key", R"({"email":"b@acme.io"})", "", "b-6", 401},
           {"wrong API key", R"({"email":"b@acme.io"})", "lakh_wrong", "b-7", 401},
           {"no Idempotency-Key", R"({"email":"b@acme.io"})", key, "", 400},
           {"key reused with another body", R"({"email":"c@acme.io"})", key, "u-1", 422},
       }) {
    CAPTURE(c.what);
    auto r = p.post("/v1/users", c.body, c.key, c.idem);
    REQUIRE(r);
    CHECK(r->status == c.status);
  }
  CHECK(p.count("SELECT count(*) FROM users.users") == 1); // nothing written by the bad ones

  // Another tenant cannot see acme's user: 404 through the API...
  auto g = p.post("/v1/signup", R"({"name":"globex"})", "", "sig-2");
  const auto globex_key = json::parse(g->body)["api_key"].get<std::string>();
  httplib::Headers h{{"Authorization", "Bearer " + globex_key}};
  auto other = p.http.Get("/v1/users/" + std::to_string(user_id), h);
  CHECK(other->status == 404);
  httplib::Headers mine{{"Authorization", "Bearer " + key}};
  CHECK(p.http.Get("/v1/users/" + std::to_string(user_id), mine)->status == 200);
  // ...and by the database itself: as the services' role, with globex's tenant set, the row
  // is invisible even to a query without a tenant filter.
  pqxx::connection c(p.url);
  pqxx::work w(c);
  w.exec("SET LOCAL ROLE saas_app");
  w.exec("SELECT set_config('app.tenant_id', '" +
         std::to_string(json::parse(g->body)["tenant_id"].get<long>()) + "', true)");
  CHECK(w.exec("SELECT count(*) FROM users.users")[0][0].as<long>() == 0);
  CHECK_THROWS((void)w.exec("INSERT INTO users.users (tenant_id, email) VALUES (" +
                            std::to_string(acme["tenant_id"].get<long>()) +
                            ", 'sneaky@globex.io')"));
}
