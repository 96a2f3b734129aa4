#pragma once
// lakh/pg/outbox_relay.hpp: the relay of lakh::pg::outbox. outbox_relay publishes the committed
// events through an outbox_publisher in id order (never skipping a late-committing one) and
// marks them once the broker acknowledged them, at least once, one active relay per outbox
// (a session advisory lock; others stand by); outbox_relay_thread runs one on its own
// std::jthread until stopped. Docs: docs/outbox.md.

#include <lakh/backoff.hpp>
#include <lakh/metrics.hpp>
#include <lakh/pg/advisory_lock.hpp>
#include <lakh/pg/array.hpp>
#include <lakh/pg/outbox.hpp>
#include <lakh/pg/pool.hpp>

#include <pqxx/pqxx>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <future>
#include <memory>
#include <new>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace lakh::pg {

/// A relay's counters: plain atomics, readable from any thread while the relay runs (e.g. by
/// a /metrics endpoint; lakh::registry can expose them under your names). lag_ms is set by
/// the relay and so stops moving when the relay does; since_last_round() and
/// outbox::oldest_pending_age() keep growing then (alert on them).
struct outbox_relay_metrics {
  lakh::counter published;  ///< events marked published (acknowledged, duplicates included)
  lakh::counter duplicates; ///< of which the broker reported as duplicates (republished ids)
  lakh::counter failed;     ///< publish attempts not acknowledged (retried later)
  lakh::counter parked;     ///< events parked: refused for good park_after times
  lakh::counter rounds;     ///< rounds that held the relay lock
  lakh::gauge lag_ms;       ///< age of the oldest unpublished visible event at the last round

  /// Time since the relay last completed a round (active or standing by), or since the
  /// metrics were created if it never did: computed when read, so it grows while the relay is
  /// stuck (a hung broker or database connection).
  [[nodiscard]] std::chrono::milliseconds since_last_round() const noexcept {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now().time_since_epoch() -
        std::chrono::nanoseconds(last_round_ns.load(std::memory_order_relaxed)));
  }

  /// steady_clock time of the last completed round, in ns since its epoch.
  std::atomic<std::int64_t> last_round_ns{std::chrono::duration_cast<std::chrono::nanoseconds>(
                                              std::chrono::steady_clock::now().time_since_epoch())
                                              .count()};
};

/// Settings of a relay.
struct outbox_relay_options {
  int batch = 1000;                            ///< events per round, >= 1
  std::chrono::milliseconds idle{50};          ///< pause when nothing is ready
  std::chrono::milliseconds backoff_base{10};  ///< first retry pause after a failure
  std::chrono::milliseconds backoff_cap{5000}; ///< longest retry pause
  /// run() only: while the broker acknowledges batch n, mark batch n-1 and read batch n+1
  /// (on the relay's connection, in a helper thread). Marks then lag one round; after a
  /// failure the prefetched batch is dropped and the next round starts afresh.
  bool overlap = true;
  /// Refusals (publish_outcome::rejected) after which an event is parked, >= 1.
  int park_after = 10;
};

/// What one relay round did.
struct outbox_round {
  bool active = false;       ///< this relay holds the relay lock (false: another one does)
  std::size_t ready = 0;     ///< eligible events read
  std::size_t published = 0; ///< acknowledged; marked this round (run_once) or the next (overlap)
  std::size_t failed = 0;    ///< not acknowledged (failed or withheld), retried later
  std::size_t parked = 0;    ///< of which parked (refused park_after times)
};

/// Publishes an outbox's events through a publisher, in id order, one active relay per
/// outbox (session advisory lock). Failures count in the row (attempts, failed_at,
/// last_error); an event refused for good park_after times is parked, and with it the later
/// events of its key wait (outbox::parked, retry_parked, drop_parked), while other keys flow.
///
/// Memory ordering: an event is marked published in a transaction that starts after the
/// publisher returned its acknowledgement (so the mark happens-after the broker's store). In
/// overlapped rounds the database work runs on a helper thread; std::future::get orders it
/// with the relay's thread, and the two never use the connection at the same time.
/// Fairness: none among relays: whichever takes the lock first is active until it stops.
/// Thread-safety: one thread runs a relay (run_once, run, active), except metrics(). Members
/// may allocate.
class outbox_relay {
public:
  /// A relay of `box` to `pub` (both must outlive it).
  /// Blocks: never.
  /// @throws std::invalid_argument if batch < 1, park_after < 1, idle is negative, or the
  /// backoff base is not positive or exceeds the cap.
  outbox_relay(outbox &box, outbox_publisher &pub, outbox_relay_options opts = {})
      : box_(&box), pub_(&pub), opts_(opts) {
    const std::string who = "lakh::pg::outbox_relay: ";
    if (opts_.batch < 1) {
      throw std::invalid_argument(who + "batch (" + std::to_string(opts_.batch) +
                                  ") must be at least 1");
    }
    if (opts_.idle.count() < 0) {
      throw std::invalid_argument(who + "idle (" + std::to_string(opts_.idle.count()) +
                                  " ms) must not be negative");
    }
    if (opts_.park_after < 1) {
      throw std::invalid_argument(who + "park_after (" + std::to_string(opts_.park_after) +
                                  ") must be at least 1");
    }
    if (opts_.backoff_base.count() <= 0 || opts_.backoff_base > opts_.backoff_cap) {
      throw std::invalid_argument(who + "backoff_base (" +
                                  std::to_string(opts_.backoff_base.count()) +
                                  " ms) must be positive and at most backoff_cap (" +
                                  std::to_string(opts_.backoff_cap.count()) + " ms)");
    }
  }

  outbox_relay(const outbox_relay &) = delete;
  outbox_relay &operator=(const outbox_relay &) = delete;

  /// Gives up the relay lock (its connection is closed, which releases it for certain).
  /// Destroy the relay on the thread that ran it, or after run() returned.
  ~outbox_relay() { drop_lock(); }

  /// One round: takes the relay lock if this relay does not hold it (standing by if another
  /// relay does), reads up to `batch` ready events, publishes them, and marks the
  /// acknowledged ones published (per key, the prefix before the first failure); counts the
  /// failures in their rows and parks the events due. Blocks: round trips and the publisher.
  /// @throws pqxx errors and acquire_error (the lock's connection is then given up, so the
  /// next round takes the lock afresh); never for a failing publisher (counted in failed).
  outbox_round run_once() {
    return locked_round([this](outbox_round &round) {
      auto batch = read("{}", skip_keys());
      round.ready = batch.events.size();
      if (!batch.events.empty()) {
        auto done = publish(batch.events, round);
        record_failures(round);
        mark(done);
      }
    });
  }

  /// Runs rounds until stop is requested: at once again after a full batch, after `idle`
  /// when fewer were ready or this relay stands by, and with capped exponential backoff (full
  /// jitter) after a database error or a publisher that threw. A key whose event failed
  /// backs off alone (its events are not read until its pause is over); other keys go on. With
  /// `overlap` (the default) the database work of neighbouring rounds runs while the broker
  /// acknowledges. Before it returns it marks what was acknowledged and gives up the relay lock.
  /// Blocks: until `st` is stopped (a pause is cut short, a round in progress finishes).
  /// @throws nothing but std::bad_alloc: errors are retried.
  void run(std::stop_token st) {
    const lakh::backoff retry(opts_.backoff_base, opts_.backoff_cap);
    unsigned failures = 0;
    pipeline pipe;
    pacing_ = true;
    while (!st.stop_requested()) {
      std::chrono::nanoseconds pause{0};
      publisher_threw_ = false; // set by this round's publish, if it has one
      try {
        const auto r = opts_.overlap ? overlapped_round(pipe) : run_once();
        if (publisher_threw_) {
          pause = retry.delay(failures++);
        } else {
          failures = 0;
          pause = r.active && r.ready == static_cast<std::size_t>(opts_.batch)
                      ? std::chrono::nanoseconds(0)
                      : std::chrono::nanoseconds(opts_.idle);
        }
      } catch (const std::bad_alloc &) {
        drop_lock();
        throw;
      } catch (...) {
        pipe = pipeline(); // unmarked acknowledged events are republished: duplicates
        pause = retry.delay(failures++);
      }
      if (pause.count() > 0) {
        (void)lakh::sleep_for(pause, st);
      }
    }
    try {
      if (lock_) {
        mark(pipe.to_mark);
      }
    } catch (...) { // republished later, deduplicated by the broker
    }
    drop_lock(); // let a standby relay take over
  }

  /// Whether this relay holds the relay lock now.
  [[nodiscard]] bool active() const noexcept { return static_cast<bool>(lock_); }

  /// The relay's counters. Thread-safety: safe from any thread.
  [[nodiscard]] const outbox_relay_metrics &metrics() const noexcept { return metrics_; }

private:
  // The overlapped relay's state between rounds.
  struct pipeline {
    bool have_next = false;            // `next` was read while the last batch was published
    outbox::ready_result next;         // excludes the ids of the batch published then
    std::vector<outbox_event> to_mark; // acknowledged in the last round, not yet marked
  };

  // A key's pause after its events failed (run() only).
  struct key_pause {
    unsigned failures = 0;
    std::chrono::steady_clock::time_point until;
  };

  outbox::ready_result read(const std::string &exclude, const std::string &skip) {
    pqxx::nontransaction tx(*lease_);
    auto batch = box_->read_ready(tx, opts_.batch, "lakh::pg::outbox_relay", exclude, skip);
    metrics_.lag_ms.set(static_cast<std::int64_t>(batch.oldest_age_s * 1000.0));
    return batch;
  }

  void mark(std::vector<outbox_event> &done) {
    if (!done.empty()) {
      pqxx::work w(*lease_);
      box_->mark_published(w, done);
      w.commit();
      metrics_.published.add(done.size());
      done.clear();
    }
  }

  // The keys pausing now, as a text[] literal (run() only; run_once reads every key).
  std::string skip_keys() const {
    std::vector<std::string_view> keys;
    if (pacing_) {
      const auto now = std::chrono::steady_clock::now();
      for (const auto &[key, p] : paused_) {
        if (p.until > now) {
          keys.push_back(key);
        }
      }
    }
    return text_array(keys);
  }

  // Publishes `events`; returns the ones to mark: per key, the acknowledged prefix. Collects
  // the failures (record_failures writes them) and pauses their keys.
  std::vector<outbox_event> publish(std::vector<outbox_event> &events, outbox_round &round) {
    outcomes_.assign(events.size(), publish_outcome::failed);
    std::string thrown;
    publisher_threw_ = false;
    try {
      pub_->publish(events, outcomes_);
    } catch (const std::exception &e) {
      publisher_threw_ = true;
      thrown = std::string("the publisher threw: ") + e.what();
    } catch (...) {
      publisher_threw_ = true;
      thrown = "the publisher threw";
    }
    if (publisher_threw_) {
      std::fill(outcomes_.begin(), outcomes_.end(), publish_outcome::failed);
    }
    blocked_.clear();
    failures_.clear();
    std::vector<outbox_event> done;
    done.reserve(events.size());
    for (std::size_t i = 0; i < events.size(); ++i) {
      const auto outcome = outcomes_[i];
      const bool ok = outcome == publish_outcome::acked || outcome == publish_outcome::duplicate;
      if (!ok || blocked_.count(events[i].key) != 0) {
        blocked_.insert(events[i].key);
        if (outcome == publish_outcome::failed || outcome == publish_outcome::rejected) {
          metrics_.failed.add();
          failures_.push_back({events[i].id, publisher_threw_ ? thrown : error_of(i),
                               outcome == publish_outcome::rejected});
        }
        ++round.failed;
        continue;
      }
      if (outcome == publish_outcome::duplicate) {
        metrics_.duplicates.add();
      }
      paused_.erase(events[i].key);
      done.push_back(std::move(events[i]));
    }
    const lakh::backoff retry(opts_.backoff_base, opts_.backoff_cap);
    const auto now = std::chrono::steady_clock::now();
    for (const auto &key : blocked_) {
      auto &p = paused_[key];
      p.until = now + retry.delay(p.failures++);
    }
    round.published = done.size();
    return done;
  }

  std::string error_of(std::size_t i) const {
    try {
      auto text = pub_->error(i);
      text.erase(std::remove(text.begin(), text.end(), '\0'), text.end());
      return text;
    } catch (...) {
      return {};
    }
  }

  // Writes the last publish's failures to their rows; parks the events due.
  void record_failures(outbox_round &round) {
    if (!failures_.empty()) {
      pqxx::work w(*lease_);
      const auto n = box_->record_failures(w, failures_, opts_.park_after);
      w.commit();
      failures_.clear();
      metrics_.parked.add(n);
      round.parked = n;
    }
  }

  // One overlapped round: publish the prefetched batch while a helper thread marks the last
  // round's acknowledged events and reads the next batch (excluding the one in flight).
  outbox_round overlapped_round(pipeline &pipe) {
    return locked_round([this, &pipe](outbox_round &round) {
      const auto skip = skip_keys();
      if (!pipe.have_next) {
        mark(pipe.to_mark);
        pipe.next = read("{}", skip);
      }
      pipe.have_next = false;
      auto current = std::move(pipe.next.events);
      round.ready = current.size();
      if (current.empty()) {
        mark(pipe.to_mark);
        return;
      }
      const auto in_flight = int_array(current, &outbox_event::id);
      // The helper uses the relay's connection while this thread only talks to the broker;
      // future::get() orders the two.
      auto db = std::async(std::launch::async, [this, &pipe, &in_flight, &skip] {
        mark(pipe.to_mark);
        return read(in_flight, skip);
      });
      auto done = publish(current, round);
      auto next = db.get();
      record_failures(round);
      pipe.to_mark = std::move(done);
      if (round.failed == 0) {
        pipe.next = std::move(next);
        pipe.have_next = true;
      } // else: drop the prefetch; the next round marks, then reads afresh (failed first)
    });
  }

  // A round's frame: take the relay lock unless held (an inactive round if another relay has
  // it), count the round, run `body`; on an error give up the lock's connection (a lost
  // connection: the next round takes the lock again on a fresh one) and rethrow.
  template <class Body> outbox_round locked_round(Body body) {
    outbox_round round;
    try {
      if (!lock_ && !take_lock()) {
        note_round(); // standing by is progress too: the relay is not stuck
        return round;
      }
      round.active = true;
      metrics_.rounds.add();
      body(round);
      note_round();
      return round;
    } catch (...) {
      drop_lock();
      throw;
    }
  }

  void note_round() noexcept {
    metrics_.last_round_ns.store(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                     std::chrono::steady_clock::now().time_since_epoch())
                                     .count(),
                                 std::memory_order_relaxed);
  }

  void drop_lock() noexcept {
    lock_.reset(); // pg_advisory_unlock if the connection still works
    if (lease_) {
      lease_.mark_broken(); // closed, not pooled: a pooled session would keep a stuck lock
    }
    lease_ = pooled_connection();
  }

  bool take_lock() {
    auto lease = box_->connections().acquire();
    if (!lease) {
      throw acquire_error(lease.status(), box_->connections().target());
    }
    auto lock = std::make_unique<session_advisory_lock>(
        *lease, advisory_key::hashed("lakh_outbox_relay:" + box_->table()));
    if (!lock->try_lock()) {
      return false; // stand by; the connection goes back to the pool
    }
    lease_ = std::move(lease);
    lock_ = std::move(lock);
    return true;
  }

  outbox *box_;
  outbox_publisher *pub_;
  outbox_relay_options opts_;
  pooled_connection lease_;                     // the relay lock's session
  std::unique_ptr<session_advisory_lock> lock_; // on lease_; destroyed before it
  std::vector<publish_outcome> outcomes_;
  std::unordered_set<std::string> blocked_;           // keys that failed in the last publish
  std::vector<outbox::publish_failure> failures_;     // of the last publish, not yet recorded
  std::unordered_map<std::string, key_pause> paused_; // keys that failed, until one succeeds
  bool pacing_ = false;                               // in run(): paused keys are not read
  bool publisher_threw_ = false;                      // in the last publish
  outbox_relay_metrics metrics_;
};

/// An outbox_relay running run() on its own std::jthread, from construction until stop() or
/// destruction. Thread-safety: metrics() is safe from any thread, stop() from one at a time; the
/// relay's own members are its thread's. Memory ordering: stop() returns after run() did, so
/// everything the relay did happens-before it.
class outbox_relay_thread {
public:
  /// Starts relaying `box` to `pub` (both must outlive it) with the relay's options.
  /// Blocks: never. @throws std::invalid_argument as outbox_relay's constructor;
  /// std::system_error if the thread cannot start.
  outbox_relay_thread(outbox &box, outbox_publisher &pub, outbox_relay_options opts = {})
      : relay_(box, pub, opts), thread_([this](std::stop_token st) { relay_.run(std::move(st)); }) {
  }

  outbox_relay_thread(const outbox_relay_thread &) = delete;
  outbox_relay_thread &operator=(const outbox_relay_thread &) = delete;
  /// Stops as stop() does.
  ~outbox_relay_thread() = default;

  /// Requests stop and waits for the relay: the round in flight finishes, what the broker
  /// acknowledged is marked, unpublished events stay in the outbox, and the relay lock is
  /// given up (a standby relay takes over). Idempotent. Blocks: until run() returned.
  void stop() {
    thread_.request_stop();
    if (thread_.joinable()) {
      thread_.join();
    }
  }

  /// The relay's counters.
  [[nodiscard]] const outbox_relay_metrics &metrics() const noexcept { return relay_.metrics(); }

private:
  outbox_relay relay_;
  std::jthread thread_; // last: started after, and joined before, the relay it runs
};

} // namespace lakh::pg
