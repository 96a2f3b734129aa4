#pragma once
// examples/billing_run/supervisor.hpp: the worker processes of `run` and, with --chaos, the
// faults: a monitor thread prints progress once a second, notices a worker that exited by
// itself, and kills a worker with SIGKILL every chaos interval (restarting it), restarts
// PostgreSQL once 30% of the jobs are done and NATS once 5% of the tenants are invoiced
// (through scripts/services).

#include "database.hpp"

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <random>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

namespace billing_run {

using billing::clock;

/// Seconds from `t` to now.
inline double seconds_since(clock::time_point t) {
  return std::chrono::duration<double>(clock::now() - t).count();
}

struct supervisor_options {
  std::string database_url; ///< the run's database (passed to every worker)
  unsigned workers = 1;
  unsigned lease_ms = 3000;
  std::string order = "sorted";
  std::string outbox_store = "table"; ///< --outbox-store of every worker
  std::string stats_dir;              ///< each worker writes its statistics here at exit
  bool chaos = false;
  unsigned chaos_interval_ms = 1500;
  std::string services_script;
  bool quiet = false;       ///< no progress lines
  std::uint64_t rows = 0;   ///< for the progress line
  std::uint64_t chunks = 0; ///< jobs in the run
};

/// The faults injected, each as a line of the report ("survived: ...").
struct fault_log {
  std::vector<std::string> survived;
  unsigned kills = 0;
  bool pg_restarted = false;
  bool nats_restarted = false;
};

/// Every member but the destructor is called by the thread that runs the run; the monitor
/// thread shares the worker table with it under a mutex.
class supervisor {
public:
  /// `loaded` counts the rows loaded so far (for the progress line); `t0` is the run's start.
  supervisor(lakh::pg::pool &p, supervisor_options o, clock::time_point t0,
             const std::atomic<std::uint64_t> &loaded);
  /// Stops the monitor, then kills (SIGKILL) and reaps the workers still running.
  ~supervisor();
  supervisor(const supervisor &) = delete;
  supervisor &operator=(const supervisor &) = delete;

  /// Starts the worker processes. @throws std::runtime_error if one cannot start.
  void start_workers();
  /// Starts the monitor thread (progress, failed workers, with --chaos the faults).
  void start_monitor();
  /// Why a worker failed: it exited by itself, or did not stop when asked ("" while none did).
  [[nodiscard]] std::string failure() const;
  /// Asks every worker to stop (SIGTERM) and reaps it; from here on the monitor neither kills
  /// nor reaps. Blocks: until every worker has exited (a worker still running after 30 s is
  /// killed and reported by failure()).
  void stop_workers();
  /// Stops the monitor thread and joins it. Blocks: for its current round.
  void stop_monitor();
  /// Kills (SIGKILL) and reaps every worker still running.
  void kill_workers() noexcept;
  /// The faults injected; read it after stop_monitor().
  [[nodiscard]] const fault_log &faults() const { return faults_; }
  /// Every worker's statistics file, restarted workers included.
  [[nodiscard]] std::vector<std::string> stats_files() const;

private:
  struct child {
    pid_t pid = -1;
    std::string stats_file;
  };

  void start_worker(std::size_t slot); // mu_ held
  void monitor(std::stop_token st);
  void print_progress(const billing::counts &k) const;
  void reap_failed();
  void inject_faults(const std::optional<billing::counts> &k);
  bool kill_a_worker(); // false when the slot's worker is gone already (the run is ending)

  lakh::pg::pool &pool_;
  supervisor_options o_;
  clock::time_point t0_;
  const std::atomic<std::uint64_t> &loaded_;
  mutable std::mutex mu_;
  std::vector<child> children_;          // guarded by mu_
  std::vector<std::string> stats_files_; // guarded by mu_
  unsigned spawned_ = 0;                 // guarded by mu_
  std::string failed_;                   // guarded by mu_
  std::atomic<bool> work_done_{false};   // set under mu_
  // The monitor thread's own state.
  std::mt19937 rng_{12345};
  clock::time_point last_kill_ = clock::now();
  std::int64_t jobs_done_ = 0;
  std::int64_t jobs_at_last_kill_ = -1; // a kill waits for a job done since the last one
  fault_log faults_;
  std::jthread monitor_; // last: joined before the state above is destroyed
};

} // namespace billing_run
