#pragma once
// examples/saas/common/housekeeping.hpp: what keeps a service's tables from growing forever.
// Every table the services write for their guarantees (idempotency records, inbox ids, the
// gateway's signups) has a retention; a housekeeping thread deletes what is past it every
// PURGE_INTERVAL_MS (60 s). Replicas may purge at once: each DELETE skips rows another holds.
// Outboxes need nothing here: their relays delete what they published.

#include "log.hpp"

#include <chrono>
#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>

namespace saas {

/// Runs `purge` every `interval` on its own thread, from construction until destruction;
/// `purge` answers what it deleted ({"table": rows}, empty when nothing), which is logged. A
/// round that throws is logged and the next one tries again.
class housekeeping {
public:
  housekeeping(std::string service, std::chrono::milliseconds interval, std::function<json()> purge)
      : thread_([service = std::move(service), interval,
                 purge = std::move(purge)](std::stop_token stop) {
          std::mutex m;
          std::condition_variable_any cv;
          std::unique_lock lock(m);
          for (;;) {
            cv.wait_for(lock, stop, interval, [] { return false; }); // a stop ends the wait
            if (stop.stop_requested()) {
              return;
            }
            try {
              if (auto purged = purge(); !purged.empty()) {
                log(service, "info", "", "purged", std::move(purged));
              }
            } catch (const std::exception &e) {
              log(service, "warn", "", "purge failed; next round retries", {{"error", e.what()}});
            }
          }
        }) {}

private:
  std::jthread thread_;
};

} // namespace saas
