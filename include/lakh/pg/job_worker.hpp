#pragma once
// lakh/pg/job_worker.hpp: lakh::pg::job_worker, the loop around lakh::pg::job_queue that
// every user of a queue would otherwise write by hand: `workers` threads claim, run the
// handler (in the transaction that completes the job and claims the next, or without one),
// record errors for retry, heartbeat leases or hold jobs by row lock, rescue, prune, enqueue
// periodic jobs once per slot, wake on NOTIFY and stop gracefully. Guide: docs/job_queue.md
// ("The runner: job_worker").
//
// One header over ~500 lines because it is one concept: the runner's threads (workers,
// heartbeat, LISTEN, maintenance) share its state and its stop; the SQL stays in
// job_queue.hpp.
#include <lakh/metrics.hpp>
#include <lakh/pg/job_queue.hpp>
#include <lakh/pg/pool.hpp>
#include <lakh/pg/retry.hpp>
#include <lakh/prometheus.hpp>

#include <pqxx/pqxx>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

namespace lakh::pg {

/// A job enqueued on a schedule: every `every`, at most once per slot across all processes.
struct periodic_job {
  std::string name;               ///< 1..200 bytes; the slot's unique key is `name@slot`
  std::chrono::seconds every{60}; ///< the slot length (>= 1 s); slots start at the epoch
  std::string payload;            ///< the job's payload
  int max_attempts = 5;           ///< as job_spec::max_attempts
};

/// A handler that runs in the worker's transaction: its writes commit with the completion.
using job_handler_tx =
    std::function<void(const claimed_job &, pqxx::transaction_base &, std::stop_token)>;
/// A handler that holds no transaction while it runs (it calls other services, sleeps...).
using job_handler = std::function<void(const claimed_job &, std::stop_token)>;
/// A handler of up to job_worker_options::batch jobs at a time, in the worker's transaction:
/// their writes commit with the completion of the whole batch (and the claim of the next).
/// An exception fails every job of the batch with its text.
using job_batch_handler = std::function<void(const std::vector<claimed_job> &,
                                             pqxx::transaction_base &, std::stop_token)>;

/// How a job_worker holds the jobs it runs.
enum class job_claim {
  /// A lease with a fencing token (job_queue::claim): the job is `running` while its handler
  /// runs, heartbeats keep it, a dead worker's job is rescued after the lease. Any handler.
  lease,
  /// The row locks of the handler's own transaction (job_queue::claim_done): the claim marks
  /// the jobs done in the transaction that runs them, so each job is written once, and a
  /// rollback or a crash leaves it pending. For short transactional handlers only (a row
  /// lock held for the handler's whole run; a process that dies mid-job counts no attempt).
  row_lock,
};

/// Settings of a job_worker.
struct job_worker_options {
  std::string queue; ///< the queue to work (required)
  int workers = 4;   ///< threads, 1..1024
  /// Jobs claimed at a time, 1..job_queue::max_batch; above 1 only with a job_batch_handler.
  int batch = 1;
  job_claim claim = job_claim::lease; ///< row_lock: only with a transactional handler
  std::chrono::milliseconds lease{std::chrono::seconds(30)}; ///< per claim
  /// How often the leases of running jobs are extended (0: lease / 3).
  std::chrono::milliseconds heartbeat{0};
  /// How long an idle worker sleeps when no notification comes (the polling fallback).
  std::chrono::milliseconds poll{std::chrono::seconds(1)};
  bool listen = true; ///< LISTEN for enqueues (needs job_queue_options::notify)
  /// fail()'s backoff base: retry n waits backoff * 2^(n-1) (capped at a day); a job rescued
  /// after its lease expired waits the same.
  std::chrono::milliseconds backoff{std::chrono::seconds(1)};
  /// How often rescue, pruning and periodic enqueues run (one process at a time).
  std::chrono::milliseconds maintenance{std::chrono::seconds(5)};
  /// Done jobs older than this are deleted (0: kept). Keep it longer than the longest
  /// periodic slot, or a pruned slot's job could be enqueued again.
  std::chrono::milliseconds keep_done{std::chrono::hours(24)};
  std::vector<periodic_job> periodic; ///< enqueued into `queue` on their schedule
  /// When set, a transactional handler's attempt (its writes, the completion and the next
  /// claim) that fails for a retryable cause (deadlock, serialization failure, lock timeout,
  /// lost connection: lakh::pg::classify) runs again in a fresh transaction, by this
  /// retrier's attempts, backoff and budget, before the failure counts against the job. It
  /// must outlive the worker. Ignored for a job_handler (it has no transaction to retry).
  retrier *retry = nullptr;
  lakh::registry *metrics = nullptr; ///< where the metrics go (none when null)
};

/// Runs a handler over the jobs of one queue with N threads (docs/job_queue.md, "The runner").
///
/// Thread-safety: start(), stop() and the accessors may be called from any thread; the
/// handler runs on the worker threads, concurrently with itself. Fairness: jobs in (run_at,
/// id) order among the runnable ones (job_queue::claim).
class job_worker {
public:
  /// A worker over `queue` (which, with `p`, must outlive it); not started.
  /// Thread-safety: n/a. Blocks: never. Allocates: may.
  /// @throws std::invalid_argument on a bad option (naming it), or a null handler.
  job_worker(pool &p, job_queue &queue, job_worker_options opts,
             std::variant<job_handler_tx, job_handler, job_batch_handler> handler)
      : pool_(&p), queue_(&queue), opts_(std::move(opts)), handler_(std::move(handler)) {
    validate();
    if (opts_.heartbeat.count() == 0) {
      opts_.heartbeat = std::max(opts_.lease / 3, std::chrono::milliseconds(1));
    }
    make_metrics();
  }

  job_worker(const job_worker &) = delete;
  job_worker &operator=(const job_worker &) = delete;

  /// stop(). Thread-safety: no other call may run concurrently. Blocks: as stop().
  ~job_worker() { stop(); }

  /// Starts the threads; `st` (optional) stops the worker as stop() does.
  /// Allocates: the threads.
  /// @throws std::logic_error if already started.
  void start(std::stop_token st = {}) {
    std::lock_guard l(m_);
    if (started_) {
      throw std::logic_error("lakh::pg::job_worker::start: already started");
    }
    started_ = true;
    if (st.stop_possible()) {
      outside_ = std::make_unique<std::stop_callback<std::function<void()>>>(
          st, std::function<void()>([this] { request_stop(); }));
    }
    if (opts_.listen) {
      threads_.emplace_back([this] { listen_loop(); });
    }
    threads_.emplace_back([this] { helper_loop(); });
    for (int i = 0; i < opts_.workers; ++i) {
      threads_.emplace_back([this] { work_loop(); });
    }
  }

  /// Stops claiming, signals the handlers' stop_tokens, and waits for the threads: running
  /// handlers finish (and complete or fail their jobs), claimed jobs not started are released.
  /// Idempotent. Thread-safety: safe (not from a handler). Blocks: until handlers return.
  void stop() {
    request_stop();
    std::vector<std::thread> threads;
    {
      std::lock_guard l(m_);
      threads.swap(threads_);
    }
    for (auto &t : threads) {
      t.join();
    }
  }

  /// Jobs the workers completed.
  [[nodiscard]] std::uint64_t done() const noexcept { return done_n_.load(); }
  /// Handler failures recorded with job_queue::fail and retried later (not counting the
  /// in-place retries of options.retry, nor jobs that went dead).
  [[nodiscard]] std::uint64_t failed() const noexcept { return failed_n_.load(); }
  /// Completions refused by the fence (a lease expired and the job was rescued meanwhile):
  /// their effects were rolled back.
  [[nodiscard]] std::uint64_t fenced() const noexcept { return fenced_n_.load(); }
  /// Commits whose outcome is unknown (the connection broke during the COMMIT: in_doubt for
  /// lakh::pg::classify). Their jobs are neither rerun nor failed by this worker: a leased
  /// job is left to its lease and the rescue (if the commit landed, it is done and stays
  /// done); a row_lock claim is done if the commit landed and pending again if not.
  [[nodiscard]] std::uint64_t in_doubt() const noexcept { return in_doubt_n_.load(); }
  /// Times an idle worker was woken by a NOTIFY (not by its poll timeout).
  [[nodiscard]] std::uint64_t notify_wakeups() const noexcept { return wakeups_n_.load(); }

private:
  void validate() const {
    const auto bad = [](const std::string &what) {
      throw std::invalid_argument("lakh::pg::job_worker: " + what);
    };
    if (opts_.queue.empty() || opts_.queue.size() > job_queue::max_queue_name) {
      bad("queue name must be 1.." + std::to_string(job_queue::max_queue_name) + " bytes");
    }
    if (opts_.workers < 1 || opts_.workers > 1024) {
      bad("workers (" + std::to_string(opts_.workers) + ") must be within 1..1024");
    }
    if (opts_.batch < 1 || opts_.batch > job_queue::max_batch ||
        (opts_.batch > 1 && !std::holds_alternative<job_batch_handler>(handler_))) {
      bad("batch (" + std::to_string(opts_.batch) + ") must be within 1.." +
          std::to_string(job_queue::max_batch) + ", and 1 unless the handler takes batches");
    }
    if (opts_.claim == job_claim::row_lock && std::holds_alternative<job_handler>(handler_)) {
      bad("claim row_lock needs a handler that runs in the worker's transaction (a "
          "job_handler_tx or a job_batch_handler)");
    }
    if (opts_.lease.count() <= 0 || opts_.heartbeat.count() < 0 ||
        (opts_.heartbeat.count() > 0 && opts_.heartbeat >= opts_.lease)) {
      bad("lease (" + std::to_string(opts_.lease.count()) +
          " ms) must be positive and heartbeat (" + std::to_string(opts_.heartbeat.count()) +
          " ms) shorter than it");
    }
    if (opts_.poll.count() <= 0 || opts_.maintenance.count() <= 0 || opts_.backoff.count() < 0 ||
        opts_.keep_done.count() < 0) {
      bad("poll and maintenance must be positive, backoff and keep_done not negative");
    }
    for (const auto &p : opts_.periodic) {
      if (p.name.empty() || p.name.size() > 200 || p.every.count() < 1 || p.max_attempts < 1) {
        bad("periodic job \"" + p.name +
            "\": name must be 1..200 bytes, every at least 1 s, max_attempts at least 1");
      }
    }
    if (std::visit([](const auto &h) { return !h; }, handler_)) {
      bad("the handler is empty");
    }
  }

  void make_metrics() {
    if (opts_.metrics == nullptr) {
      return;
    }
    const lakh::labels l{{"queue", opts_.queue}};
    auto &r = *opts_.metrics;
    claimed_ = &r.make_counter("lakh_job_worker_claimed_total", "jobs claimed", l);
    done_ = &r.make_counter("lakh_job_worker_done_total", "jobs completed", l);
    failed_ = &r.make_counter("lakh_job_worker_failed_total", "handler failures (retried)", l);
    dead_ = &r.make_counter("lakh_job_worker_dead_total", "jobs dead after max_attempts", l);
    rescued_ = &r.make_counter("lakh_job_worker_rescued_total", "expired leases rescued", l);
    released_ = &r.make_counter("lakh_job_worker_released_total", "claims given back", l);
    fenced_ = &r.make_counter("lakh_job_worker_fenced_total",
                              "completions refused by the fence (rolled back)", l);
    in_doubt_ = &r.make_counter("lakh_job_worker_in_doubt_total",
                                "commits of unknown outcome (jobs left to their lease)", l);
    wakeups_ = &r.make_counter("lakh_job_worker_notify_wakeups_total", "NOTIFY wake-ups", l);
    pickup_ = &r.make_histogram("lakh_job_worker_pickup_seconds", "runnable -> claimed", l);
    run_ = &r.make_histogram("lakh_job_worker_run_seconds", "handler run time", l);
  }

  static void add(lakh::counter *c, std::uint64_t n = 1) noexcept {
    if (c != nullptr && n > 0) {
      c->add(n);
    }
  }

  void request_stop() {
    stop_.request_stop();
    std::lock_guard l(idle_m_);
    idle_cv_.notify_all();
  }

  /// One worker: claim, run, complete (with the next claim), until stop.
  void work_loop() {
    const auto st = stop_.get_token();
    if (opts_.claim == job_claim::row_lock) {
      while (!st.stop_requested()) {
        const auto seen = notifications(); // before the claim, as below
        bool worked = false;
        try {
          worked = run_locked(st);
        } catch (const std::exception &e) { // the database or the pool failed: as below
          count_in_doubt(e);
        }
        if (!worked) {
          wait_idle(st, seen);
        }
      }
      return;
    }
    std::vector<claimed_job> next; // claimed with the previous completion
    while (!st.stop_requested()) {
      try {
        if (next.empty()) {
          // What the worker has seen is read BEFORE it claims: a NOTIFY that arrives while
          // the claim runs (its job committed just after the claim's snapshot) still wakes it.
          const auto seen = notifications();
          next = claim_some();
          if (next.empty()) {
            wait_idle(st, seen);
            continue;
          }
        }
        auto jobs = std::move(next);
        next.clear();
        next = run(jobs, st);
      } catch (const std::exception &e) {
        // The database or the pool failed (a restart, a broken connection, a commit in doubt):
        // the jobs in hand, if any, are left to their lease; back off a poll interval.
        count_in_doubt(e);
        next.clear();
        wait_idle(st, notifications());
      }
    }
    release(next); // claimed with the last completion, never started: give them back
  }

  void count_in_doubt(const std::exception &e) noexcept {
    if (classify(e) == retry_cause::in_doubt) {
      add(in_doubt_);
      in_doubt_n_.fetch_add(1);
    }
  }

  std::vector<claimed_job> claim_some() {
    auto c = pool_->acquire_default(stop_.get_token());
    if (!c) {
      return {};
    }
    pqxx::work w(*c);
    auto jobs = queue_->claim(w, opts_.queue, opts_.batch, opts_.lease);
    w.commit();
    claimed(jobs);
    return jobs;
  }

  void claimed(const std::vector<claimed_job> &jobs) {
    add(claimed_, jobs.size());
    if (pickup_ != nullptr) {
      for (const auto &j : jobs) {
        pickup_->record(j.waited);
      }
    }
  }

  /// Thrown inside a transactional attempt when the fence refuses the completion (a lease
  /// expired and its job was rescued meanwhile): rolls the effects back, never retried.
  struct fence_refused {};

  /// Runs the handler over `jobs` (one job unless the handler takes batches) and records the
  /// outcome; returns the next jobs when they were claimed in the same transaction.
  std::vector<claimed_job> run(const std::vector<claimed_job> &jobs, std::stop_token st) {
    track(jobs, true);
    struct untrack {
      job_worker *w;
      const std::vector<claimed_job> &j;
      ~untrack() { w->track(j, false); }
    } guard{this, jobs};
    std::string error;
    if (auto *h = std::get_if<job_handler>(&handler_)) {
      // No connection is held while the handler runs; it is taken for the outcome. Not cut
      // short by a stop: the handler ran, its outcome must be recorded. The pool's acquire
      // timeout bounds the wait; without a connection the jobs are left to their lease.
      bool ok = false;
      try {
        const run_timer t{run_};
        (*h)(jobs.front(), st);
        ok = true;
      } catch (const std::exception &e) {
        error = e.what();
      } catch (...) {
        error = "a non-standard exception";
      }
      auto c = pool_->acquire_default();
      if (!c) {
        return {};
      }
      pqxx::work w(*c);
      if (!ok) {
        return fail(w, jobs, error, st);
      }
      auto next = finish(w, jobs, st);
      if (!next) {
        w.abort();
        fenced(jobs, &*c);
        return {};
      }
      w.commit();
      succeeded(jobs, *next);
      return std::move(*next);
    }
    // A transactional handler: its writes, the fenced completion and the next claim are one
    // attempt, run again as a whole by options.retry on a retryable failure.
    std::vector<claimed_job> next;
    const auto attempt = [&](pqxx::transaction_base &w) {
      run_tx_handler(jobs, w, st);
      auto handed = finish(w, jobs, st);
      if (!handed) {
        throw fence_refused{};
      }
      next = std::move(*handed);
    };
    try {
      if (!commit_attempt(attempt, st)) {
        release(jobs); // stopping (or the pool closed): give the jobs back untouched
        return {};
      }
      succeeded(jobs, next);
      return next;
    } catch (const fence_refused &) {
      fenced(jobs);
      return {};
    } catch (const std::exception &e) {
      if (classify(e) == retry_cause::in_doubt) {
        throw; // the completion may have committed: leave the jobs to their lease
      }
      error = e.what();
    } catch (...) {
      error = "a non-standard exception";
    }
    auto c = pool_->acquire_default();
    if (!c) {
      return {}; // left to their lease
    }
    pqxx::work w(*c);
    return fail(w, jobs, error, st);
  }

  /// job_claim::row_lock: claims up to `batch` jobs as done and runs the handler in ONE
  /// transaction (rerun as a whole by options.retry); a failure rolls it back, then is
  /// recorded on each job in a new transaction. False when there was no job.
  bool run_locked(std::stop_token st) {
    std::vector<claimed_job> jobs;
    const auto attempt = [&](pqxx::transaction_base &w) {
      jobs = queue_->claim_done(w, opts_.queue, opts_.batch);
      if (!jobs.empty()) {
        run_tx_handler(jobs, w, st);
      }
    };
    std::string error;
    try {
      if (!commit_attempt(attempt, st)) {
        return false; // stopping, or the pool closed
      }
      claimed(jobs);
      succeeded(jobs, {});
      return !jobs.empty();
    } catch (const std::exception &e) {
      if (jobs.empty() || classify(e) == retry_cause::in_doubt) {
        throw; // no job in hand (the claim failed), or the commit may have happened
      }
      error = e.what();
    } catch (...) {
      if (jobs.empty()) {
        throw;
      }
      error = "a non-standard exception";
    }
    claimed(jobs);
    auto c = pool_->acquire_default();
    if (!c) {
      return true; // the failure is not recorded: the jobs are pending, the next claim reruns
    }
    pqxx::work w(*c);
    (void)fail(w, jobs, error, st);
    return true;
  }

  /// The transactional handler (one job or the batch) over `jobs` in `w`, timed.
  void run_tx_handler(const std::vector<claimed_job> &jobs, pqxx::transaction_base &w,
                      std::stop_token st) {
    const run_timer t{run_};
    if (auto *tx = std::get_if<job_handler_tx>(&handler_)) {
      (*tx)(jobs.front(), w, st);
    } else {
      std::get<job_batch_handler>(handler_)(jobs, w, st);
    }
  }

  /// attempt(w) in a transaction that commits: rerun by options.retry when set, else once on
  /// a pooled connection. False when no connection came (stopping, or the pool closed: an
  /// acquire_error). @throws what the last attempt threw.
  template <class Fn> bool commit_attempt(const Fn &attempt, std::stop_token st) {
    try {
      if (opts_.retry != nullptr) {
        opts_.retry->run(*pool_, attempt, st);
        return true;
      }
      auto c = pool_->acquire_default(st);
      if (!c) {
        return false;
      }
      pqxx::work w(*c);
      attempt(w);
      w.commit();
      return true;
    } catch (const acquire_error &) {
      return false;
    }
  }

  /// Records the handler's run time (when there is a histogram) as it goes out of scope.
  struct run_timer {
    lakh::latency_histogram *h;
    std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
    ~run_timer() {
      if (h != nullptr) {
        h->record(std::chrono::steady_clock::now() - t0);
      }
    }
  };

  /// The fenced completion of `jobs` in `w`, with the claim of the next ones unless stopping;
  /// nullopt when the fence refused one of them.
  std::optional<std::vector<claimed_job>>
  finish(pqxx::transaction_base &w, const std::vector<claimed_job> &jobs, std::stop_token st) {
    std::vector<std::int64_t> completed;
    std::vector<claimed_job> next;
    if (st.stop_requested()) {
      completed = queue_->complete_batch(w, jobs);
    } else {
      auto h = queue_->complete_and_claim(w, jobs, opts_.queue, opts_.batch, opts_.lease);
      completed = std::move(h.completed);
      next = std::move(h.claimed);
    }
    if (completed.size() != jobs.size()) {
      return std::nullopt;
    }
    return next;
  }

  /// Records the handler's failure of `jobs` in `w` (retried with backoff, or dead), claims
  /// the next ones (with a lease, unless stopping), and commits.
  std::vector<claimed_job> fail(pqxx::work &w, const std::vector<claimed_job> &jobs,
                                const std::string &error, std::stop_token st) {
    for (const auto &j : jobs) {
      const auto outcome = queue_->fail(w, j, error.empty() ? "failed" : error, opts_.backoff);
      if (outcome == fail_outcome::dead) {
        add(dead_);
      } else if (outcome == fail_outcome::retried) {
        add(failed_);
        failed_n_.fetch_add(1);
      }
    }
    std::vector<claimed_job> next;
    if (!st.stop_requested() && opts_.claim == job_claim::lease) {
      next = queue_->claim(w, opts_.queue, opts_.batch, opts_.lease);
    }
    w.commit();
    claimed(next);
    return next;
  }

  void succeeded(const std::vector<claimed_job> &jobs, const std::vector<claimed_job> &next) {
    add(done_, jobs.size());
    done_n_.fetch_add(jobs.size());
    claimed(next);
  }

  /// The fence refused a completion (its effects rolled back): the jobs still held go back to
  /// pending, the next claim runs them again.
  void fenced(const std::vector<claimed_job> &jobs, pqxx::connection *held = nullptr) noexcept {
    add(fenced_);
    fenced_n_.fetch_add(1);
    release(jobs, held);
  }

  /// Gives claimed jobs back untouched (pending, the claim not counted); on an error they are
  /// left to the rescue after their lease.
  /// `held` is the caller's connection, if it holds one (with no transaction open).
  void release(const std::vector<claimed_job> &jobs, pqxx::connection *held = nullptr) noexcept {
    if (jobs.empty()) {
      return;
    }
    try {
      const auto give_back = [&](pqxx::connection &c) {
        pqxx::work w(c);
        for (const auto &j : jobs) {
          if (queue_->release(w, j)) {
            add(released_);
          }
        }
        w.commit();
      };
      if (held != nullptr) {
        give_back(*held);
      } else if (auto c = pool_->acquire_default()) {
        give_back(*c);
      }
    } catch (const std::exception &) { // left to the rescue
    }
  }

  void track(const std::vector<claimed_job> &jobs, bool running) {
    std::lock_guard l(running_m_);
    for (const auto &j : jobs) {
      if (running) {
        running_[j.id] = j;
      } else {
        running_.erase(j.id);
      }
    }
  }

  std::uint64_t notifications() {
    std::lock_guard l(idle_m_);
    return notifications_;
  }

  /// Sleeps until a notification after `seen`, `poll`, or stop.
  void wait_idle(std::stop_token st, std::uint64_t seen) {
    std::unique_lock l(idle_m_);
    const bool woken = idle_cv_.wait_for(
        l, opts_.poll, [&] { return st.stop_requested() || notifications_ != seen; });
    if (woken && !st.stop_requested()) {
      wakeups_n_.fetch_add(1);
      add(wakeups_);
    }
  }

  /// LISTENs on the queue's channel on a dedicated connection; each notification for our
  /// queue wakes the idle workers. Reconnects after a failure.
  void listen_loop() {
    const auto st = stop_.get_token();
    while (!st.stop_requested()) {
      try {
        auto c = pool_->connect_dedicated();
        const detail::listener listening(*c, queue_->channel(), [this](std::string_view payload) {
          if (payload == opts_.queue) {
            std::lock_guard l(idle_m_);
            ++notifications_;
            idle_cv_.notify_all();
          }
        });
        while (!st.stop_requested()) {
          c->await_notification(0, 100'000); // 100 ms, to see a stop
        }
      } catch (const std::exception &) {
        std::unique_lock l(idle_m_);
        idle_cv_.wait_for(l, opts_.poll, [&] { return st.stop_requested(); });
      }
    }
  }

  /// Heartbeats every `heartbeat`, maintenance every `maintenance`, on a dedicated
  /// connection. Reconnects after a failure.
  void helper_loop() {
    const auto st = stop_.get_token();
    auto next_maintenance = std::chrono::steady_clock::now();
    std::unique_ptr<pqxx::connection> c;
    while (!st.stop_requested()) {
      try {
        if (c == nullptr || !c->is_open()) {
          c = pool_->connect_dedicated();
        }
        beat(*c);
        if (std::chrono::steady_clock::now() >= next_maintenance) {
          maintain(*c);
          next_maintenance = std::chrono::steady_clock::now() + opts_.maintenance;
        }
      } catch (const std::exception &) {
        c.reset(); // reconnect next round
      }
      std::unique_lock l(idle_m_);
      idle_cv_.wait_for(l, std::min(opts_.heartbeat, opts_.maintenance),
                        [&] { return st.stop_requested(); });
    }
  }

  void beat(pqxx::connection &c) {
    std::vector<claimed_job> jobs;
    {
      std::lock_guard l(running_m_);
      for (const auto &[id, j] : running_) {
        jobs.push_back(j);
      }
    }
    if (jobs.empty()) {
      return;
    }
    pqxx::work w(c);
    // A row another transaction holds is being completed, failed or released by its worker:
    // skipped, so the beat never waits on (nor deadlocks with) a worker's transaction.
    (void)queue_->heartbeat(w, jobs, opts_.lease, locked_rows::skip);
    w.commit();
  }

  void maintain(pqxx::connection &c) {
    pqxx::work w(c);
    // One process at a time; the others skip this round.
    if (!detail::exec(w, "SELECT pg_try_advisory_xact_lock(hashtext($1))",
                      "lakh_job_worker:" + queue_->table() + ":" + opts_.queue)[0][0]
             .as<bool>()) {
      return;
    }
    add(rescued_, queue_->rescue_expired(w, opts_.backoff));
    if (opts_.keep_done.count() > 0) {
      detail::exec(w,
                   "DELETE FROM " + queue_->table() + " WHERE id IN (SELECT id FROM " +
                       queue_->table() +
                       " WHERE queue = $1 AND state = 'done' AND finished_at < now() - $2 * "
                       "interval '1 millisecond' LIMIT 10000 FOR UPDATE SKIP LOCKED)",
                   opts_.queue, static_cast<long long>(opts_.keep_done.count()));
    }
    for (const auto &p : opts_.periodic) {
      // The slot by the database's clock; the key is checked against every state (a done
      // slot's job is not enqueued again), which is race-free under the lock above.
      const auto slot =
          detail::exec(w, "SELECT (floor(extract(epoch FROM now()) / $1) * $1)::bigint",
                       static_cast<long long>(p.every.count()))[0][0]
              .as<long long>();
      const auto key = p.name + "@" + std::to_string(slot);
      if (detail::exec(w,
                       "SELECT 1 FROM " + queue_->table() + " WHERE queue = $1 AND unique_key = $2",
                       opts_.queue, key)
              .empty()) {
        (void)queue_->enqueue(
            w, job_spec{opts_.queue, p.payload, key, std::chrono::milliseconds(0), p.max_attempts});
      }
    }
    w.commit();
  }

  pool *pool_;
  job_queue *queue_;
  job_worker_options opts_;
  std::variant<job_handler_tx, job_handler, job_batch_handler> handler_;

  std::mutex m_;
  bool started_ = false;
  std::vector<std::thread> threads_;
  std::stop_source stop_;
  std::unique_ptr<std::stop_callback<std::function<void()>>> outside_;

  std::mutex idle_m_;
  std::condition_variable idle_cv_;
  std::uint64_t notifications_ = 0;

  std::mutex running_m_;
  std::map<std::int64_t, claimed_job> running_;

  std::atomic<std::uint64_t> done_n_{0};
  std::atomic<std::uint64_t> failed_n_{0};
  std::atomic<std::uint64_t> fenced_n_{0};
  std::atomic<std::uint64_t> in_doubt_n_{0};
  std::atomic<std::uint64_t> wakeups_n_{0};
  lakh::counter *claimed_ = nullptr, *done_ = nullptr, *failed_ = nullptr, *dead_ = nullptr,
                *rescued_ = nullptr, *released_ = nullptr, *wakeups_ = nullptr, *fenced_ = nullptr,
                *in_doubt_ = nullptr;
  lakh::latency_histogram *pickup_ = nullptr, *run_ = nullptr;
};

} // namespace lakh::pg
