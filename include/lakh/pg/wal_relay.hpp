#pragma once
// lakh/pg/wal_relay.hpp: the relay of an outbox with outbox_store::wal. wal_relay streams the
// outbox's transactional logical messages from its replication slot (libpq's replication
// protocol, pgoutput with messages on), publishes them through an outbox_publisher in commit
// order, and confirms a position to the slot only once the broker acknowledged everything
// before it: at least once, one active relay per slot (the server lets one stream at a time;
// others stand by). A long transaction elsewhere does not hold it back. wal_relay_thread runs
// one on its own std::jthread. Docs: docs/outbox.md ("The wal store").
//
// Over ~500 lines because the stream, its decoding and the confirmation rule are one state
// machine: split, each part would need the others' invariants.

#include <lakh/backoff.hpp>
#include <lakh/metrics.hpp>
#include <lakh/pg/conninfo.hpp>
#include <lakh/pg/detail/wal_event.hpp>
#include <lakh/pg/outbox.hpp>
#include <lakh/pg/outbox_relay.hpp>
#include <lakh/pg/pool.hpp>

#include <libpq-fe.h>
#include <pqxx/pqxx>

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <iterator>
#include <memory>
#include <new>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace lakh::pg {

/// Settings of a wal_relay.
struct wal_relay_options {
  /// Events per publish, >= 1. A publish holds whole transactions, so one larger than this
  /// goes out at once (its events are held in memory until its commit is decoded).
  int batch = 1000;
  std::chrono::milliseconds backoff_base{10};  ///< first retry pause after a failure
  std::chrono::milliseconds backoff_cap{5000}; ///< longest retry pause
  /// Refusals (publish_outcome::rejected) after which an event is parked (a row of the
  /// outbox table, outbox::parked), >= 1. Until then the stream waits for it.
  int park_after = 10;
  /// Standing by (another relay streams from the slot): pause before trying again, > 0.
  std::chrono::milliseconds standby_poll{1000};
  /// The relay reports its position at least this often (keep it below the server's
  /// wal_sender_timeout, 60 s by default), > 0.
  std::chrono::milliseconds status_interval{10000};
  /// The replication connection's libpq string (URI or key=value); its role needs the
  /// REPLICATION attribute. Empty: the outbox's pool URL (required when a factory makes the
  /// pool's connections).
  std::string conninfo{};
  /// run(): called with each error before the pause that precedes its retry (on the relay's
  /// thread; must not throw). Setup errors are wal_setup_error.
  std::function<void(const std::exception &)> on_error{};
};

/// Publishes the events of an outbox with outbox_store::wal from its replication slot, in
/// commit order; transactions that rolled back were never decoded. Per event identity the
/// broker deduplicates what a restarted relay sends again (the unconfirmed tail).
///
/// The confirmation rule: the relay reports to the slot the end of the last transaction whose
/// events, and every earlier one's, the broker acknowledged (or that were parked); when
/// nothing is in hand it follows the server's position, so a quiet outbox does not retain
/// WAL. An event the broker refuses is retried with backoff (the stream waits: commit order),
/// and parked after park_after refusals; unlike the table relay, later events of its key go
/// on (docs/outbox.md).
///
/// Memory ordering: a position is confirmed only after the publisher returned the
/// acknowledgements of everything before it. Thread-safety: one thread runs a relay
/// (run_once, run, check), except metrics() and confirmed_lsn(). Members may allocate.
class wal_relay {
public:
  /// A relay of `box` (which must use outbox_store::wal) to `pub` (both must outlive it).
  /// Blocks: never. @throws std::invalid_argument if the outbox is not a wal store, batch
  /// < 1, park_after < 1, standby_poll or status_interval is not positive, or the backoff base
  /// is not positive or exceeds the cap; std::system_error if no eventfd can be made.
  wal_relay(outbox &box, outbox_publisher &pub, wal_relay_options opts = {})
      : box_(&box), pub_(&pub), opts_(std::move(opts)) {
    const std::string who = "lakh::pg::wal_relay: ";
    if (box.store() != outbox_store::wal) {
      throw std::invalid_argument(who + "outbox " + box.table() +
                                  " writes rows (outbox_store::table): relay it with "
                                  "outbox_relay, or give it outbox_store::wal");
    }
    if (opts_.batch < 1 || opts_.park_after < 1) {
      throw std::invalid_argument(who + "batch (" + std::to_string(opts_.batch) +
                                  ") and park_after (" + std::to_string(opts_.park_after) +
                                  ") must be at least 1");
    }
    if (opts_.standby_poll.count() <= 0 || opts_.status_interval.count() <= 0) {
      throw std::invalid_argument(who + "standby_poll and status_interval must be positive");
    }
    if (opts_.backoff_base.count() <= 0 || opts_.backoff_base > opts_.backoff_cap) {
      throw std::invalid_argument(who + "backoff_base (" +
                                  std::to_string(opts_.backoff_base.count()) +
                                  " ms) must be positive and at most backoff_cap (" +
                                  std::to_string(opts_.backoff_cap.count()) + " ms)");
    }
    wake_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_ < 0) {
      throw std::system_error(errno, std::generic_category(), who + "eventfd");
    }
  }

  wal_relay(const wal_relay &) = delete;
  wal_relay &operator=(const wal_relay &) = delete;

  /// Closes the stream (the slot is free for a standby relay); what was acknowledged but not
  /// yet confirmed is sent again by the next relay (the broker drops the duplicates).
  ~wal_relay() {
    close();
    ::close(wake_);
  }

  /// Checks the setup: on a pooled connection, wal_level=logical, the slot exists in this
  /// database with plugin pgoutput, and its publication exists; then that the relay's role
  /// can open a replication connection (REPLICATION attribute, pg_hba.conf). Blocks: a round
  /// trip and a connection.
  /// @throws wal_setup_error saying what is missing and how to fix it; std::runtime_error
  /// with libpq's reason if the replication connection cannot be opened; pqxx errors,
  /// acquire_error.
  void check() {
    const auto slot = slot_name();
    lakh::pg::with_connection(box_->connections(), [&](pqxx::connection &c) {
      pqxx::nontransaction tx(c);
      const std::string who = "lakh::pg::wal_relay: ";
      const auto setup = outbox::read_wal_setup(tx, slot, who);
      if (!setup.slot) {
        throw wal_setup_error(who + outbox::missing_slot(slot));
      }
      if (!setup.publication) {
        throw wal_setup_error(who + "publication \"" + slot +
                              "\" does not exist: run outbox::create_schema");
      }
    });
    if (conn_ == nullptr) { // streaming already proves it
      connect();
      close();
    }
  }

  /// One round: opens the stream if this relay has none (standing by if another relay
  /// streams from the slot), reads what the server sends for up to `wait` (returning as soon
  /// as events of committed transactions are in hand), publishes them, parks the events due,
  /// and reports the confirmed position. Blocks: up to `wait`, round trips and the publisher.
  /// @throws wal_setup_error (the slot is missing, the role may not replicate), pqxx and
  /// std::runtime_error for a lost connection (the stream is closed: the next round opens it
  /// again from the confirmed position); never for a failing publisher (counted in failed).
  outbox_round run_once(std::chrono::milliseconds wait = std::chrono::milliseconds(0)) {
    outbox_round round;
    try {
      if (conn_ == nullptr && !start()) {
        note_round();
        return round;
      }
      round.active = true;
      metrics_.rounds.add();
      receive(wait);
      round.ready = events_.size();
      if (!events_.empty()) {
        publish(round);
      } else {
        metrics_.lag_ms.set(0);
      }
      report(false);
      note_round();
      return round;
    } catch (...) {
      close();
      throw;
    }
  }

  /// Runs rounds until stop is requested: waits on the stream for events (a stop request
  /// wakes it), with capped exponential backoff (full jitter) after an error or a failed
  /// publish, and every standby_poll while another relay holds the slot. Before it returns it
  /// reports the confirmed position and closes the stream (a standby relay takes over).
  /// Blocks: until `st` is stopped. @throws nothing but std::bad_alloc: errors are retried.
  void run(std::stop_token st) {
    const lakh::backoff retry(opts_.backoff_base, opts_.backoff_cap);
    const std::stop_callback wake(st, [this] {
      const std::uint64_t one = 1;
      (void)!::write(wake_, &one, sizeof one);
    });
    unsigned failures = 0;
    while (!st.stop_requested()) {
      std::chrono::nanoseconds pause{0};
      try {
        const auto r = run_once(opts_.status_interval);
        if (!r.active) {
          pause = opts_.standby_poll;
        } else if (r.failed > 0) {
          pause = retry.delay(failures++);
        } else {
          failures = 0;
        }
      } catch (const std::bad_alloc &) {
        throw;
      } catch (const std::exception &e) {
        if (opts_.on_error) {
          opts_.on_error(e);
        }
        pause = retry.delay(failures++);
      }
      if (pause.count() > 0) {
        (void)lakh::sleep_for(pause, st);
      }
    }
    try {
      report(true);
    } catch (...) { // sent again by the next relay, deduplicated by the broker
    }
    close();
  }

  /// Whether this relay streams from the slot now.
  [[nodiscard]] bool active() const noexcept { return conn_ != nullptr; }

  /// The last position this relay reported to the slot (an LSN; 0 before the first).
  /// Thread-safety: safe from any thread.
  [[nodiscard]] std::uint64_t confirmed_lsn() const noexcept {
    return reported_.load(std::memory_order_relaxed);
  }

  /// The relay's counters (lag_ms: commit-to-publish age of the oldest event of the last
  /// publish). Thread-safety: safe from any thread.
  [[nodiscard]] const outbox_relay_metrics &metrics() const noexcept { return metrics_; }

private:
  // An event in hand: decoded from a committed transaction, not yet acknowledged.
  struct held {
    std::uint64_t end_lsn = 0;                    // its transaction's end
    std::chrono::system_clock::time_point commit; // its transaction's commit time
    int refusals = 0;
  };

  using clock = std::chrono::steady_clock;

  std::string slot_name() {
    if (slot_.empty()) {
      slot_ = box_->wal_slot();
    }
    return slot_;
  }

  // Opens the replication connection (conn_).
  void connect() {
    const std::string who = "lakh::pg::wal_relay: ";
    const auto &url = opts_.conninfo.empty() ? box_->connections().url() : opts_.conninfo;
    if (url.empty()) {
      throw wal_setup_error(who + "the pool makes connections with a factory: set "
                                  "wal_relay_options::conninfo");
    }
    const auto conninfo = with_connection_defaults(url);
    const char *keys[] = {"dbname", "replication", "application_name", nullptr};
    const char *values[] = {conninfo.c_str(), "database", "lakh_wal_relay", nullptr};
    conn_ = PQconnectdbParams(keys, values, 1);
    if (PQstatus(conn_) != CONNECTION_OK) {
      const auto text = server_text();
      close();
      // The hint only where the server refused the role (not when it is down or restarting).
      const bool refused = text.find("replication") != std::string::npos ||
                           text.find("pg_hba") != std::string::npos ||
                           text.find("authentication") != std::string::npos;
      throw std::runtime_error(who + "cannot open a replication connection to " +
                               box_->connections().target() + ": " + text +
                               (refused ? " (the relay's role needs the REPLICATION attribute, "
                                          "and pg_hba.conf an entry for replication connections)"
                                        : ""));
    }
  }

  // Opens the replication connection and starts streaming; false if another relay streams.
  bool start() {
    const std::string who = "lakh::pg::wal_relay: ";
    const auto slot = slot_name();
    connect();
    const auto sql = "START_REPLICATION SLOT " + slot +
                     " LOGICAL 0/0 (proto_version '1', publication_names '" + slot +
                     "', messages 'true')";
    PGresult *res = PQexec(conn_, sql.c_str());
    const auto status = PQresultStatus(res);
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const std::string sqlstate = state != nullptr ? state : "";
    std::string text = PQresultErrorMessage(res);
    PQclear(res);
    if (status == PGRES_COPY_BOTH) {
      next_status_ = clock::now() + opts_.status_interval;
      return true;
    }
    close();
    if (sqlstate == "55006") { // object_in_use: another relay streams from the slot
      return false;
    }
    trim(text);
    if (sqlstate == "42704") {
      throw wal_setup_error(who + outbox::missing_slot(slot));
    }
    if (sqlstate == "42501" || sqlstate == "28000") {
      throw wal_setup_error(who + "the role may not stream from slot \"" + slot +
                            "\" (it needs the REPLICATION attribute): " + text);
    }
    if (sqlstate == "55000") {
      throw wal_setup_error(who + text);
    }
    throw std::runtime_error(who + "START_REPLICATION on slot \"" + slot + "\" failed: " + text);
  }

  void close() noexcept {
    if (conn_ != nullptr) {
      PQfinish(conn_);
      conn_ = nullptr;
    }
    // What was in hand comes again from the confirmed position when the stream reopens.
    events_.clear();
    held_.clear();
    txn_.clear();
    txn_held_.clear();
    in_txn_ = false;
    received_end_ = 0;
    // The slot's position is the server's business until the new stream says more (its first
    // keepalive, or a publish); 0 is a position the server ignores, so a stale one of this
    // relay never moves the slot back after another relay advanced it.
    flushable_ = 0;
  }

  // Reads the stream until `batch` events are in hand, or events are in hand and nothing more
  // is buffered, or `wait` passed (or run()'s stop woke it).
  void receive(std::chrono::milliseconds wait) {
    const auto deadline = clock::now() + wait;
    bool fresh = false; // the socket was read since the last message
    while (events_.size() < static_cast<std::size_t>(opts_.batch)) {
      char *buf = nullptr;
      const int n = PQgetCopyData(conn_, &buf, 1);
      if (n > 0) {
        const std::unique_ptr<char, void (*)(void *)> owner(buf, PQfreemem);
        handle(std::string_view(buf, static_cast<std::size_t>(n)));
        fresh = false;
        continue;
      }
      if (n == -1) {
        PGresult *res = PQgetResult(conn_);
        std::string text = res != nullptr ? PQresultErrorMessage(res) : "";
        PQclear(res);
        trim(text);
        throw std::runtime_error("lakh::pg::wal_relay: the server ended the stream: " +
                                 (text.empty() ? server_text() : text));
      }
      if (n == -2) {
        throw std::runtime_error("lakh::pg::wal_relay: the stream failed: " + server_text());
      }
      if (!fresh) { // take what the socket holds before deciding (never blocks)
        consume();
        fresh = true;
        continue;
      }
      const auto now = clock::now();
      if (!events_.empty() || now >= deadline) {
        return;
      }
      report(false);
      const auto until = std::min(deadline, next_status_);
      const auto ms = std::max<std::int64_t>(
          1, std::chrono::ceil<std::chrono::milliseconds>(until - now).count());
      pollfd fds[2] = {{PQsocket(conn_), POLLIN, 0}, {wake_, POLLIN, 0}};
      const int ready = ::poll(fds, 2, static_cast<int>(std::min<std::int64_t>(ms, 60000)));
      if (ready < 0 && errno != EINTR) {
        throw std::system_error(errno, std::generic_category(), "lakh::pg::wal_relay: poll");
      }
      if (fds[1].revents != 0) {
        std::uint64_t drained = 0;
        (void)!::read(wake_, &drained, sizeof drained);
        return;
      }
      consume();
    }
  }

  void consume() {
    if (PQconsumeInput(conn_) == 0) {
      throw std::runtime_error("lakh::pg::wal_relay: the stream failed: " + server_text());
    }
  }

  // One CopyData message of the stream: XLogData ('w') or a primary keepalive ('k').
  void handle(std::string_view m) {
    if (m[0] == 'w' && m.size() >= 25) {
      decode(m.substr(25));
    } else if (m[0] == 'k' && m.size() >= 18) {
      // Everything before the server's position was sent; with nothing in hand it is safe
      // to confirm (a quiet outbox must not retain WAL).
      const auto end = be(m.substr(1), 8);
      if (events_.empty() && !in_txn_) {
        flushable_ = std::max(flushable_, end);
      }
      if (m[17] != 0) {
        next_status_ = clock::now(); // the server asks for a reply now
      }
    }
  }

  // One pgoutput message: Begin, (logical) Message, Commit; the rest is ignored (the
  // publication has no tables).
  void decode(std::string_view d) {
    if (d.empty()) {
      return;
    }
    switch (d[0]) {
    case 'B':
      if (d.size() >= 21) {
        in_txn_ = true;
        commit_time_ = from_pg_time(be(d.substr(9), 8));
      }
      break;
    case 'M':
      message(d);
      break;
    case 'C':
      if (d.size() >= 26) {
        const auto end = be(d.substr(10), 8);
        for (auto &h : txn_held_) {
          h.end_lsn = end;
        }
        std::move(txn_.begin(), txn_.end(), std::back_inserter(events_));
        held_.insert(held_.end(), txn_held_.begin(), txn_held_.end());
        txn_.clear();
        txn_held_.clear();
        in_txn_ = false;
        received_end_ = std::max(received_end_, end);
        if (events_.empty()) {
          flushable_ = std::max(flushable_, end); // nothing of ours in it
        }
      }
      break;
    default:
      break;
    }
  }

  // Int8 flags, Int64 LSN, String prefix, Int32 length, Byte[n] content.
  void message(std::string_view d) {
    if (d.size() < 10 || (static_cast<unsigned char>(d[1]) & 1U) == 0 || !in_txn_) {
      return; // non-transactional: not an outbox event
    }
    const auto lsn = be(d.substr(2), 8);
    const auto rest = d.substr(10);
    const auto nul = rest.find('\0');
    if (nul == std::string_view::npos || rest.substr(0, nul) != box_->prefix_ ||
        rest.size() < nul + 5) {
      return; // another outbox's, or another writer's
    }
    const auto len = be(rest.substr(nul + 1), 4);
    const auto content = rest.substr(nul + 5);
    std::string_view uuid;
    if (content.size() != len || !detail::parse_wal_content(content, uuid, fields_)) {
      metrics_.failed.add(); // not written by outbox::enqueue: skipped
      return;
    }
    outbox_event e{static_cast<std::int64_t>(lsn),
                   std::string(fields_[0]),
                   std::string(fields_[1]),
                   std::string(fields_[2]),
                   {},
                   std::string(uuid)};
    for (std::size_t i = 3; i + 1 < fields_.size(); i += 2) {
      e.headers.push_back({std::string(fields_[i]), std::string(fields_[i + 1])});
    }
    txn_.push_back(std::move(e));
    txn_held_.push_back({0, commit_time_, 0});
  }

  // Publishes the events in hand, parks the ones refused park_after times, keeps the rest
  // for the next round, and moves the confirmable position to the end of the transactions
  // whose events, and every earlier one's, are done.
  void publish(outbox_round &round) {
    metrics_.lag_ms.set(std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now() - held_.front().commit)
                            .count());
    outcomes_.assign(events_.size(), publish_outcome::failed);
    try {
      pub_->publish(events_, outcomes_);
    } catch (...) {
      std::fill(outcomes_.begin(), outcomes_.end(), publish_outcome::failed);
    }
    done_.assign(events_.size(), false);
    std::vector<std::size_t> due;
    for (std::size_t i = 0; i < events_.size(); ++i) {
      const auto o = outcomes_[i];
      if (o == publish_outcome::acked || o == publish_outcome::duplicate) {
        done_[i] = true;
        metrics_.published.add();
        metrics_.duplicates.add(o == publish_outcome::duplicate ? 1 : 0);
        ++round.published;
        continue;
      }
      ++round.failed;
      if (o == publish_outcome::failed || o == publish_outcome::rejected) {
        metrics_.failed.add();
      }
      if (o == publish_outcome::rejected && ++held_[i].refusals >= opts_.park_after) {
        due.push_back(i);
      }
    }
    if (!due.empty()) {
      lakh::pg::with_connection(box_->connections(), [&](pqxx::connection &c) {
        pqxx::work w(c);
        // Flushed before the slot is told to skip these events, even where the server runs
        // synchronous_commit=off: a crash must not lose the only copy of a parked event.
        w.exec("SET LOCAL synchronous_commit = on");
        for (const auto i : due) {
          box_->park(w, events_[i], held_[i].refusals, pub_->error(i));
        }
        w.commit();
      });
      for (const auto i : due) {
        done_[i] = true;
      }
      metrics_.parked.add(due.size());
      round.parked = due.size();
    }
    std::size_t keep = 0;
    bool prefix_done = true;
    for (std::size_t i = 0; i < events_.size(); ++i) {
      prefix_done = prefix_done && done_[i];
      const bool txn_ends = i + 1 == events_.size() || held_[i + 1].end_lsn != held_[i].end_lsn;
      if (prefix_done && txn_ends) {
        flushable_ = std::max(flushable_, held_[i].end_lsn);
      }
      if (!done_[i]) {
        if (keep != i) {
          events_[keep] = std::move(events_[i]);
          held_[keep] = held_[i];
        }
        ++keep;
      }
    }
    events_.resize(keep);
    held_.resize(keep);
    if (events_.empty()) {
      flushable_ = std::max(flushable_, received_end_);
      report(true);
    }
  }

  // Sends a standby status update (written = flushed = applied = flushable_) if the position
  // moved, the interval passed, or `now`.
  void report(bool now) {
    if (conn_ == nullptr) {
      return;
    }
    const auto t = clock::now();
    if (!now && flushable_ == sent_ && t < next_status_) {
      return;
    }
    char msg[34];
    msg[0] = 'r';
    put_be(msg + 1, flushable_);
    put_be(msg + 9, flushable_);
    put_be(msg + 17, flushable_);
    const auto since_2000 = std::chrono::duration_cast<std::chrono::microseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count() -
                            pg_epoch_us;
    put_be(msg + 25, static_cast<std::uint64_t>(since_2000));
    msg[33] = 0;
    if (PQputCopyData(conn_, msg, sizeof msg) != 1 || PQflush(conn_) != 0) {
      throw std::runtime_error("lakh::pg::wal_relay: cannot report the position: " + server_text());
    }
    sent_ = flushable_;
    if (flushable_ != 0) {
      reported_.store(flushable_, std::memory_order_relaxed);
    }
    next_status_ = t + opts_.status_interval;
  }

  void note_round() noexcept {
    metrics_.last_round_ns.store(
        std::chrono::duration_cast<std::chrono::nanoseconds>(clock::now().time_since_epoch())
            .count(),
        std::memory_order_relaxed);
  }

  std::string server_text() const {
    std::string text = conn_ != nullptr ? PQerrorMessage(conn_) : "no connection";
    trim(text);
    return text;
  }

  static void trim(std::string &s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) {
      s.pop_back();
    }
  }

  static std::uint64_t be(std::string_view s, std::size_t n) {
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < n; ++i) {
      v = (v << 8U) | static_cast<unsigned char>(s[i]);
    }
    return v;
  }

  static void put_be(char *out, std::uint64_t v) {
    for (int i = 7; i >= 0; --i) {
      out[i] = static_cast<char>(v & 0xffU);
      v >>= 8U;
    }
  }

  // PostgreSQL's timestamps count microseconds from 2000-01-01 UTC.
  static constexpr std::int64_t pg_epoch_us = 946684800LL * 1000000LL;

  static std::chrono::system_clock::time_point from_pg_time(std::uint64_t us) {
    return std::chrono::system_clock::time_point(
        std::chrono::duration_cast<std::chrono::system_clock::duration>(
            std::chrono::microseconds(static_cast<std::int64_t>(us) + pg_epoch_us)));
  }

  outbox *box_;
  outbox_publisher *pub_;
  wal_relay_options opts_;
  std::string slot_;
  PGconn *conn_ = nullptr;
  int wake_ = -1;                    // eventfd: run()'s stop request wakes the poll
  std::vector<outbox_event> events_; // in hand: committed, not yet acknowledged, commit order
  std::vector<held> held_;           // beside events_
  std::vector<outbox_event> txn_;    // of the transaction being decoded
  std::vector<held> txn_held_;       // beside txn_
  std::vector<std::string_view> fields_;
  std::vector<publish_outcome> outcomes_;
  std::vector<bool> done_; // beside events_, in publish()
  bool in_txn_ = false;
  std::chrono::system_clock::time_point commit_time_;
  std::uint64_t received_end_ = 0; // end of the last transaction decoded
  std::uint64_t flushable_ = 0;    // the position that may be confirmed
  std::uint64_t sent_ = 0;         // in the last status update
  std::atomic<std::uint64_t> reported_{0};
  clock::time_point next_status_;
  outbox_relay_metrics metrics_;
};

/// A wal_relay running run() on its own std::jthread, from construction until stop() or
/// destruction. The constructor checks the setup first, so a service with a missing slot or
/// the wrong wal_level fails at start with the reason. Thread-safety and memory ordering as
/// outbox_relay_thread.
class wal_relay_thread {
public:
  /// Checks the setup (wal_relay::check), then starts relaying `box` to `pub` (both must
  /// outlive it). Blocks: a round trip. @throws std::invalid_argument as wal_relay's
  /// constructor; wal_setup_error, pqxx errors, acquire_error as check();
  /// std::system_error if the thread cannot start.
  wal_relay_thread(outbox &box, outbox_publisher &pub, wal_relay_options opts = {})
      : relay_(box, pub, std::move(opts)), thread_(checked(relay_)) {}

  wal_relay_thread(const wal_relay_thread &) = delete;
  wal_relay_thread &operator=(const wal_relay_thread &) = delete;
  /// Stops as stop() does.
  ~wal_relay_thread() = default;

  /// Requests stop and waits for the relay: the publish in flight finishes, the position of
  /// what the broker acknowledged is confirmed, and the stream is closed (a standby relay
  /// takes over). Idempotent. Blocks: until run() returned.
  void stop() {
    thread_.request_stop();
    if (thread_.joinable()) {
      thread_.join();
    }
  }

  /// The relay's counters.
  [[nodiscard]] const outbox_relay_metrics &metrics() const noexcept { return relay_.metrics(); }

  /// The last position the relay confirmed to the slot.
  [[nodiscard]] std::uint64_t confirmed_lsn() const noexcept { return relay_.confirmed_lsn(); }

private:
  static std::jthread checked(wal_relay &relay) {
    relay.check();
    return std::jthread([&relay](std::stop_token st) { relay.run(std::move(st)); });
  }

  wal_relay relay_;
  std::jthread thread_; // last: started after, and joined before, the relay it runs
};

} // namespace lakh::pg
