// saas_gateway: the public HTTP/JSON API (examples/saas/README.md), the only service a client
// talks to. For every request: API key (keys.hpp) -> per-tenant rate and in-flight limits,
// 429 past either (limits.hpp) -> validation (400 naming the field; 413 over 1 MiB) -> gRPC
// to the service that owns the data, with a deadline, the service token and the caller's W3C
// traceparent.
//
// Idempotency across the hop: every POST that creates or charges needs an Idempotency-Key
// (400 when missing or malformed). The gateway keeps no record of it and holds no database
// transaction: it passes (key, fingerprint of method + path + body) to the owning service,
// which records the key in the transaction of the effect (common/rpc.hpp idempotent()), so a
// retry after any failure, timeout or crash is answered from that record
// (Idempotent-Replayed: true), and the same key with another body is 422. Signup is the one
// flow with an effect of the gateway's own (the API key): signup.hpp.
//
// Settings (environment or .env): DATABASE_URL (as saas_gateway), DATABASE_OWNER_URL (schema
// at startup), GATEWAY_KEY_SECRET and SERVICE_TOKEN_SECRET (32+ characters) required;
// GATEWAY_ADMIN_TOKEN (32+ characters; unset: no admin route); GATEWAY_ADDR (127.0.0.1),
// GATEWAY_PORT (8080), GATEWAY_THREADS (event loops: the number of
// cores), GRPC_DEADLINE_MS (2000), API_KEY_CACHE_MS
// (60000), API_KEY_NEGATIVE_CACHE_MS (10000), TENANT_RATE (requests per second, 1000),
// TENANT_BURST (2000), TENANT_CONCURRENCY (in flight, 8: below each service's DB_POOL_SIZE),
// AUTH_FAILURE_RATE / AUTH_FAILURE_BURST (failed authentications per client address: 1/s,
// 20), SIGNUP_RATE / SIGNUP_BURST (signups per client address: 1/s, 20), DB_POOL_SIZE (8),
// DB_ACQUIRE_TIMEOUT_MS (1000), <SERVICE>_GRPC_ADDR (127.0.0.1:15051..15056).
#include "gateway_schema.hpp"
#include "routes.hpp"

#include <child_process.hpp>
#include <stop_signals.hpp>

#include <csignal>
#include <thread>

int main(int argc, char **argv) {
  if (const auto done = saas::command_line(argc, argv, "saas_gateway",
                                           "The HTTP gateway of lakh's SaaS example "
                                           "(examples/saas/README.md): REST outside, gRPC to "
                                           "the services.")) {
    return *done;
  }
  saas::quiet_abseil_mutexes();
  lakh_examples::die_with_parent(); // under saas.e2e: the gateway dies with the test
  const sigset_t sigs = lakh_examples::block_stop_signals();
  try {
    const auto cfg = saas::config::load();
    const auto host = cfg.get("GATEWAY_ADDR", "127.0.0.1");
    const int port = cfg.port("GATEWAY_PORT", 8080);
    if (auto owner = cfg.find("DATABASE_OWNER_URL")) {
      lakh::pg::pool p(*owner, 1);
      saas::migrate(p, saas::role_of("gateway"), "gateway", saas::schema_sql);
      saas::create_jobs_table(p, "gateway", saas::role_of("gateway"));
    }
    gateway::server g(cfg);
    std::thread stopper([&] {
      const int sig = lakh_examples::wait_stop_signal(sigs);
      saas::log("gateway", "info", "draining", {{"signal", sig}});
      g.stop(); // in-flight requests finish
    });
    saas::log("gateway", "info", "listening", {{"http", host + ":" + std::to_string(port)}});
    const bool ok = g.listen(host, port);
    if (!ok) {
      saas::log("gateway", "error", "cannot listen on " + host + ":" + std::to_string(port));
      ::kill(::getpid(), SIGTERM); // ends the stopper thread
    }
    stopper.join();
    saas::log("gateway", "info", "stopped");
    return ok ? 0 : 1;
  } catch (const std::exception &e) {
    saas::log("gateway", "error", e.what());
    return 1;
  }
}
