// examples/billing_run/supervisor.cpp: the worker processes and the faults of `run`
// (supervisor.hpp).
#include "supervisor.hpp"

#include <child_process.hpp>
#include <servers.hpp>

#include <signal.h>
#include <sys/wait.h>

#include <cinttypes>
#include <cstdio>
#include <stdexcept>
#include <system_error>

namespace billing_run {

using namespace std::chrono_literals;

namespace {

pid_t spawn(const std::vector<std::string> &args) {
  try {
    return lakh_examples::spawn(args);
  } catch (const std::system_error &e) {
    throw std::runtime_error("billing_run: cannot start a worker process: " +
                             std::string(e.what()));
  }
}

/// "12.34" for a seconds figure in a report line (`width` characters of it).
std::string secs(double s, std::size_t width = 5) {
  return std::to_string(s).substr(0, width);
}

} // namespace

supervisor::supervisor(lakh::pg::pool &p, supervisor_options o, clock::time_point t0,
                       const std::atomic<std::uint64_t> &loaded)
    : pool_(p), o_(std::move(o)), t0_(t0), loaded_(loaded) {}

supervisor::~supervisor() {
  stop_monitor();
  kill_workers();
}

void supervisor::start_worker(std::size_t slot) {
  const std::string file = o_.stats_dir + "/worker-" + std::to_string(spawned_++) + ".json";
  const pid_t pid = spawn({"/proc/self/exe", "work", "--database-url", o_.database_url,
                           "--lease-ms", std::to_string(o_.lease_ms), "--lock-order", o_.order,
                           "--outbox-store", o_.outbox_store, "--stats-file", file});
  children_[slot] = {pid, file};
  stats_files_.push_back(file);
}

void supervisor::start_workers() {
  std::lock_guard lk(mu_);
  children_.resize(o_.workers);
  for (std::size_t i = 0; i < o_.workers; ++i) {
    start_worker(i);
  }
}

void supervisor::start_monitor() {
  last_kill_ = clock::now();
  monitor_ = std::jthread([this](std::stop_token st) { monitor(st); });
}

std::string supervisor::failure() const {
  std::lock_guard lk(mu_);
  return failed_;
}

void supervisor::stop_workers() {
  std::lock_guard lk(mu_);
  work_done_ = true; // under the lock: the monitor neither kills nor reaps from here on
  for (auto &ch : children_) {
    if (ch.pid > 0) {
      ::kill(ch.pid, SIGTERM);
    }
  }
  // A worker finishes its jobs in hand and exits; one that does not within 30 s is a defect
  // the run reports (failure()), after a SIGKILL, rather than a run that never ends.
  const auto deadline = clock::now() + 30s;
  for (auto &ch : children_) {
    while (ch.pid > 0 && ::waitpid(ch.pid, nullptr, WNOHANG) == 0) {
      if (clock::now() > deadline) {
        failed_ = "worker pid " + std::to_string(ch.pid) + " did not stop within 30 s of SIGTERM";
        ::kill(ch.pid, SIGKILL);
        ::waitpid(ch.pid, nullptr, 0);
        break;
      }
      std::this_thread::sleep_for(10ms);
    }
    ch.pid = -1;
  }
}

void supervisor::stop_monitor() {
  monitor_.request_stop();
  if (monitor_.joinable()) {
    monitor_.join();
  }
}

void supervisor::kill_workers() noexcept {
  std::lock_guard lk(mu_);
  for (auto &ch : children_) {
    if (ch.pid > 0) {
      ::kill(ch.pid, SIGKILL);
      ::waitpid(ch.pid, nullptr, 0);
      ch.pid = -1;
    }
  }
}

std::vector<std::string> supervisor::stats_files() const {
  std::lock_guard lk(mu_);
  return stats_files_;
}

void supervisor::monitor(std::stop_token st) {
  auto last_print = clock::now();
  while (!st.stop_requested()) {
    std::this_thread::sleep_for(50ms);
    const auto k = billing::read_counts(pool_);
    if (k) {
      jobs_done_ = k->jobs_done;
    }
    if (!o_.quiet && clock::now() - last_print >= 1s && k) {
      last_print = clock::now();
      print_progress(*k);
    }
    reap_failed();
    if (o_.chaos) {
      inject_faults(k);
    }
  }
}

void supervisor::print_progress(const billing::counts &k) const {
  std::fprintf(stderr,
               "[%6.1fs] loaded %3.0f%% | jobs %" PRId64 "/%" PRIu64 " | invoices %" PRId64
               " | events %" PRId64 "\n",
               seconds_since(t0_),
               100.0 * static_cast<double>(loaded_.load()) / static_cast<double>(o_.rows),
               k.jobs_done, o_.chunks, k.invoices, k.events);
}

void supervisor::reap_failed() {
  // A worker that exited by itself (not stopped, not killed by chaos) failed: say why.
  std::lock_guard lk(mu_);
  for (auto &ch : children_) {
    int ws = 0;
    if (!work_done_ && ch.pid > 0 && ::waitpid(ch.pid, &ws, WNOHANG) == ch.pid) {
      failed_ = "worker pid " + std::to_string(ch.pid) + " exited with " +
                (WIFEXITED(ws) ? "status " + std::to_string(WEXITSTATUS(ws))
                               : "signal " + std::to_string(WTERMSIG(ws))) +
                " (its error is above)";
      ch.pid = -1;
    }
  }
}

bool supervisor::kill_a_worker() {
  std::lock_guard lk(mu_);
  const std::size_t slot = static_cast<std::size_t>(rng_()) % children_.size();
  if (work_done_ || children_[slot].pid <= 0) {
    return false; // it failed by itself: the run is ending
  }
  ::kill(children_[slot].pid, SIGKILL);
  ::waitpid(children_[slot].pid, nullptr, 0);
  faults_.survived.push_back("worker pid " + std::to_string(children_[slot].pid) +
                             " killed -9 at " + secs(seconds_since(t0_)) + " s and restarted");
  ++faults_.kills;
  start_worker(slot);
  return true;
}

void supervisor::inject_faults(const std::optional<billing::counts> &k) {
  try {
    // Kills wait for progress since the last one: on a slow machine (sanitizers, a loaded CI
    // host) a worker may need longer than the interval to start and finish a job, and kills
    // at a fixed pace would then starve the run instead of testing it. The first one comes
    // with the first job done: the restarts below hold this thread for a second or more, and
    // a short run could end meanwhile with no worker killed.
    if (!work_done_ && jobs_done_ > jobs_at_last_kill_ &&
        (faults_.kills == 0 ||
         clock::now() - last_kill_ >= std::chrono::milliseconds(o_.chaos_interval_ms))) {
      last_kill_ = clock::now();
      jobs_at_last_kill_ = jobs_done_;
      if (!kill_a_worker()) {
        return;
      }
    }
    const auto chunks = static_cast<std::int64_t>(o_.chunks);
    if (!faults_.pg_restarted && (jobs_done_ * 10 >= chunks * 3 || work_done_)) {
      const auto r0 = clock::now();
      const auto at = seconds_since(t0_);
      lakh_examples::services("restart", "pg", o_.services_script);
      faults_.pg_restarted = true;
      faults_.survived.push_back("PostgreSQL restarted at " + secs(at) + " s (" +
                                 std::to_string(jobs_done_) + "/" + std::to_string(o_.chunks) +
                                 " jobs done; down " + secs(seconds_since(r0), 4) + " s)");
    }
    if (faults_.pg_restarted && !faults_.nats_restarted && k &&
        (k->invoices * 20 >= static_cast<std::int64_t>(lakh::fake::tenant_count) || work_done_)) {
      const auto at = seconds_since(t0_);
      lakh_examples::services("restart", "nats", o_.services_script);
      faults_.nats_restarted = true;
      faults_.survived.push_back("NATS restarted at " + secs(at) + " s (" +
                                 std::to_string(k->invoices) + " invoices, " +
                                 std::to_string(k->events) + " events counted)");
    }
  } catch (const std::exception &e) {
    std::fprintf(stderr, "billing_run chaos: %s\n", e.what());
    faults_.survived.push_back(std::string("a fault could not be injected: ") + e.what());
  }
}

} // namespace billing_run
