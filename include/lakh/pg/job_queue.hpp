#pragma once
// lakh/pg/job_queue.hpp: lakh::pg::job_queue, a job queue in a PostgreSQL table, the model
// River, Que, Oban and graphile-worker share: enqueue in the caller's transaction (optionally
// with a unique key), claim in batches with FOR UPDATE SKIP LOCKED (claimers never wait for
// each other), leases and fencing tokens so a rescued job's stalled worker can neither
// complete nor extend it, retries with backoff, a dead-letter state, and an admin API. Times
// are the database's. lakh::pg::job_worker (lakh/pg/job_worker.hpp) is the loop around it.
// Guide, with the schema and the privileges: docs/job_queue.md.
//
// One header over ~500 lines because it is one concept: every member is a statement over
// the one table, and they share its name, its schema and the fence.
#include <lakh/pg/array.hpp>
#include <lakh/pg/detail/sql.hpp>
#include <lakh/pg/pool.hpp>

#include <pqxx/pqxx>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace lakh::pg {

/// Settings of a job_queue.
struct job_queue_options {
  /// Table name: a lower-case SQL identifier, optionally schema-qualified.
  std::string table = "lakh_jobs";
  /// enqueue() also sends NOTIFY on channel() with the queue's name (delivered at commit), so
  /// that an idle job_worker wakes at once instead of at its next poll. NOTIFY serializes the
  /// commits of notifying transactions on a cluster-wide lock: turn it off when enqueueing at
  /// tens of thousands of transactions per second and let workers poll.
  bool notify = true;
  /// How long a member that leases a pooled connection of its own (those without a
  /// transaction parameter) waits for one before it throws acquire_error with status
  /// timeout, so that a caller that already holds a lease can never block forever on an
  /// exhausted pool. std::nullopt: the pool's acquire_timeout (pool::acquire_default), which
  /// may be none.
  std::optional<std::chrono::milliseconds> acquire_timeout = std::chrono::seconds(30);
};

/// A job to enqueue.
struct job_spec {
  std::string queue;                     ///< 1..128 bytes
  std::string payload;                   ///< any text (JSON, an id, ...); no NUL bytes
  std::optional<std::string> unique_key; ///< 1..256 bytes; refuses duplicates while live
  std::chrono::milliseconds delay{0};    ///< run_at = now() + delay (>= 0)
  int max_attempts = 5;                  ///< >= 1: claims before the job is dead
};

/// A job handed to a worker by claim(). Pass it back to heartbeat/complete/fail.
struct claimed_job {
  std::int64_t id = 0;
  std::string payload;
  int attempts = 0;       ///< including this claim
  std::int64_t token = 0; ///< the fencing token of this claim
  /// How long the job had been runnable when it was claimed (now() - run_at): the pickup
  /// latency, by the database's clock.
  std::chrono::microseconds waited{0};
};

/// A job as list() shows it.
struct job_info {
  std::int64_t id = 0;
  std::string queue;
  std::string payload;
  std::optional<std::string> unique_key;
  std::string state; ///< pending, running, done or dead
  int attempts = 0;
  int max_attempts = 0;
  std::optional<std::string> last_error;
};

/// What fail() did.
enum class fail_outcome {
  retried, ///< pending again, run_at moved by the backoff
  dead,    ///< max_attempts reached: moved to the dead-letter state
  refused, ///< the token no longer matches (lease expired and job rescued): nothing changed
};

/// Which finished jobs delete_finished() removes.
enum class finished_jobs {
  done,          ///< done jobs only (dead ones stay for inspection and retry_dead)
  done_and_dead, ///< done and dead jobs (a dead job's finished_at is when it died)
};

/// How heartbeat(tx, jobs, lease) treats a job row that another transaction holds locked.
enum class locked_rows {
  wait, ///< wait for that transaction to end, then extend the job if it is still running
  skip, ///< leave the job out of this beat (its lock holder is completing, failing or
        ///< releasing it, or extending it too): the beat never waits on a row lock
};

/// Counts and ages a dashboard or an alert wants.
struct job_queue_health {
  std::int64_t pending = 0;
  std::int64_t running = 0;
  std::int64_t done = 0;
  std::int64_t dead = 0;
  double oldest_pending_seconds = 0; ///< age of the oldest runnable job (0 when none)
  std::int64_t dead_tuples = 0;      ///< pg_stat_user_tables.n_dead_tup of the table
  double oldest_transaction_seconds =
      0; ///< oldest open transaction in this database (it holds back vacuum)
};

/// A PostgreSQL job queue with SKIP LOCKED batch claims, leases and fencing tokens (the
/// model: docs/job_queue.md).
///
/// Every member may be called concurrently from any number of threads and processes (a
/// member that takes a transaction runs in the caller's, on the caller's thread). Members
/// that touch the database block for their round trips, and those without a transaction
/// first for a pooled connection: until acquire_timeout() passes or their trailing
/// `st` is stopped (then acquire_error, status timeout or cancelled, and nothing done).
/// They may throw pqxx errors (and acquire_error when they take a pooled connection), and
/// allocate. Ordering: jobs are claimed in (run_at, id)
/// order among those not locked by a concurrent claim; no stronger order is promised under
/// concurrency.
class job_queue {
public:
  static constexpr std::size_t max_queue_name = 128;
  static constexpr std::size_t max_unique_key = 256;
  static constexpr int max_batch = 10000;

  /// A queue over table `opts.table` with connections from `p` (which must outlive it).
  /// @throws std::invalid_argument if the table name is not a lower-case identifier, or
  /// acquire_timeout is not positive.
  explicit job_queue(pool &p, job_queue_options opts = {})
      : pool_(&p), table_(detail::checked_table_name(std::move(opts.table), "lakh::pg::job_queue")),
        notify_(opts.notify), acquire_timeout_(opts.acquire_timeout) {
    if (acquire_timeout_ && acquire_timeout_->count() <= 0) {
      throw std::invalid_argument("lakh::pg::job_queue: acquire_timeout (" +
                                  std::to_string(acquire_timeout_->count()) +
                                  " ms) must be positive");
    }
  }

  /// Creates the table, its indexes and the token sequence if they do not exist. Safe to call
  /// from many processes at once (serialized by an advisory transaction lock).
  void create_schema(std::stop_token st = {}) {
    const std::string base = detail::index_base(table_);
    with_lease(st, [&](pqxx::connection &c) {
      pqxx::work w(c);
      detail::exec(w, "SELECT pg_advisory_xact_lock(hashtext($1))", "lakh_job_queue:" + table_);
      if (const auto dot = table_.find('.'); dot != std::string::npos) {
        w.exec("CREATE SCHEMA IF NOT EXISTS " + table_.substr(0, dot));
      }
      w.exec("CREATE SEQUENCE IF NOT EXISTS " + table_ + "_token_seq");
      w.exec("CREATE TABLE IF NOT EXISTS " + table_ +
             " (id bigserial PRIMARY KEY, queue text NOT NULL, payload text NOT NULL, "
             "unique_key text, "
             "state text NOT NULL DEFAULT 'pending' "
             "CHECK (state IN ('pending', 'running', 'done', 'dead')), "
             "attempts integer NOT NULL DEFAULT 0, "
             "max_attempts integer NOT NULL CHECK (max_attempts >= 1), "
             "run_at timestamptz NOT NULL DEFAULT now(), lease_until timestamptz, token bigint, "
             "last_error text, created_at timestamptz NOT NULL DEFAULT now(), "
             "finished_at timestamptz)");
      w.exec("CREATE INDEX IF NOT EXISTS " + base + "_runnable ON " + table_ +
             " (queue, run_at, id) WHERE state = 'pending'");
      w.exec("CREATE INDEX IF NOT EXISTS " + base + "_running ON " + table_ +
             " (lease_until) WHERE state = 'running'");
      w.exec("CREATE UNIQUE INDEX IF NOT EXISTS " + base + "_unique ON " + table_ +
             " (queue, unique_key) WHERE unique_key IS NOT NULL AND state IN ('pending', "
             "'running')");
      w.commit();
    });
  }

  /// Inserts a job in the caller's transaction `w` (it exists once `w` commits).
  /// Returns its id, or std::nullopt when spec.unique_key is set and a pending or running job
  /// of that queue already has the key (nothing is inserted).
  /// @throws std::invalid_argument on a bad spec (empty or oversize queue or key, NUL in the
  /// payload, negative delay, max_attempts < 1); pqxx errors.
  std::optional<std::int64_t> enqueue(pqxx::transaction_base &w, const job_spec &spec) {
    check_spec(spec, "enqueue");
    // Without a key the conflict target never matches (NULL keys are not indexed). Every
    // parameter is referenced (PostgreSQL must infer each one's type): the key is $5 when
    // set, the NOTIFY channel the next one.
    const std::string channel_param = spec.unique_key ? "$6" : "$5";
    const std::string sql =
        "INSERT INTO " + table_ +
        " (queue, payload, unique_key, max_attempts, run_at) "
        "VALUES ($1, $2, " +
        std::string(spec.unique_key ? "$5" : "NULL") +
        ", $3, now() + $4 * interval '1 millisecond') "
        "ON CONFLICT (queue, unique_key) WHERE unique_key IS NOT NULL AND state IN "
        "('pending', 'running') DO NOTHING RETURNING id" +
        (notify_ ? ", pg_notify(" + channel_param + ", $1)" : std::string());
    const auto delay_ms = static_cast<long long>(spec.delay.count());
    const auto &q = spec.queue;
    const auto &pl = spec.payload;
    const int n = spec.max_attempts;
    pqxx::result r =
        spec.unique_key
            ? (notify_ ? detail::exec(w, sql, q, pl, n, delay_ms, *spec.unique_key, channel())
                       : detail::exec(w, sql, q, pl, n, delay_ms, *spec.unique_key))
            : (notify_ ? detail::exec(w, sql, q, pl, n, delay_ms, channel())
                       : detail::exec(w, sql, q, pl, n, delay_ms));
    if (r.empty()) {
      return std::nullopt;
    }
    return r[0][0].as<std::int64_t>();
  }

  /// Inserts one job per payload into `queue`, in one statement, in the caller's transaction.
  /// Returns how many were inserted (all of them). No unique keys in bulk.
  /// @throws std::invalid_argument on a bad queue name, a NUL in a payload or max_attempts < 1
  /// (nothing inserted); pqxx errors. Allocates: the array text.
  std::size_t enqueue_bulk(pqxx::transaction_base &w, std::string_view queue,
                           const std::vector<std::string> &payloads, int max_attempts = 5) {
    check_queue(queue, "enqueue_bulk");
    if (max_attempts < 1) {
      throw std::invalid_argument("lakh::pg::job_queue::enqueue_bulk: max_attempts (" +
                                  std::to_string(max_attempts) + ") must be at least 1");
    }
    if (payloads.empty()) {
      return 0;
    }
    for (const auto &payload : payloads) {
      check_payload(payload, "enqueue_bulk");
    }
    const auto array = text_array(payloads);
    auto r = detail::exec(w,
                          "INSERT INTO " + table_ +
                              " (queue, payload, max_attempts) "
                              "SELECT $1, p, $3 FROM unnest($2::text[]) AS p",
                          std::string(queue), array, max_attempts);
    if (notify_) {
      detail::exec(w, "SELECT pg_notify($1, $2)", channel(), std::string(queue));
    }
    return static_cast<std::size_t>(r.affected_rows());
  }

  /// Claims up to n runnable jobs of `queue` (pending, run_at reached) for `lease`, skipping
  /// rows locked by concurrent claims. Each gets attempts + 1 and a new fencing token.
  /// Returns them (possibly none) sorted by id. Commits on its own connection.
  /// Blocks: for a pooled connection (up to acquire_timeout(), or until `st` is
  /// stopped), then a round trip, never on another claimer's rows.
  /// @throws std::invalid_argument if n is not within 1..max_batch or lease is not positive,
  /// or on a bad queue name; pqxx errors; acquire_error. Allocates: the jobs.
  std::vector<claimed_job> claim(std::string_view queue, int n, std::chrono::milliseconds lease,
                                 std::stop_token st = {}) {
    return with_lease(st, [&](pqxx::connection &c) {
      pqxx::work w(c);
      auto jobs = claim(w, queue, n, lease);
      w.commit();
      return jobs;
    });
  }

  /// claim() in the caller's transaction `w`: the jobs are the caller's once `w` commits
  /// (and pending again if it rolls back). A worker that commits a job's completion and the
  /// claim of its next job in one transaction pays one commit per job (job_worker does).
  /// Blocks: a round trip, never on another claimer's rows.
  /// @throws std::invalid_argument as claim(); pqxx errors. Allocates: the jobs.
  std::vector<claimed_job> claim(pqxx::transaction_base &w, std::string_view queue, int n,
                                 std::chrono::milliseconds lease) {
    check_lease(lease, "claim");
    return claim_rows(w, "claim", queue, n,
                      "state = 'running', attempts = j.attempts + 1, lease_until = "
                      "clock_timestamp() + " +
                          std::to_string(lease.count()) +
                          " * interval '1 millisecond', token = nextval('" + table_ +
                          "_token_seq')",
                      "j.token");
  }

  /// Claims up to n runnable jobs of `queue` and marks them done in ONE statement of the
  /// caller's transaction `w`, which then does their work: the row locks taken by
  /// `FOR UPDATE SKIP LOCKED` are their lease. A commit makes their effects and their
  /// completion durable together; a rollback (or a crash: the server rolls back) leaves them
  /// pending and untouched for the next claimer. One write per job and no token, lease or
  /// heartbeat: for short handlers whose work is all in `w` (job_claim::row_lock of
  /// job_worker). Such a job is never `running`, so there is nothing to rescue, and a process
  /// that dies mid-job counts no attempt: a job that kills its process every time is claimed
  /// again and again. Record a failure with fail(job, ...) in a new transaction after the
  /// rollback. Returned jobs have token 0, sorted by id.
  /// Blocks: a round trip, never on another claimer's rows.
  /// @throws std::invalid_argument if n is not within 1..max_batch, or on a bad queue name;
  /// pqxx errors. Allocates: the jobs.
  std::vector<claimed_job> claim_done(pqxx::transaction_base &w, std::string_view queue, int n) {
    return claim_rows(w, "claim_done", queue, n,
                      "state = 'done', attempts = j.attempts + 1, finished_at = now()",
                      "0::bigint");
  }

  /// Gives a claimed job back, untouched: pending again at once, this claim not counted as an
  /// attempt, its token void. For a worker that stops before it runs the job. False when the
  /// job is no longer running with its token.
  bool release(pqxx::transaction_base &w, const claimed_job &job) {
    return detail::exec(w,
                        "UPDATE " + table_ +
                            " SET state = 'pending', attempts = attempts - 1, lease_until = "
                            "NULL, token = NULL WHERE id = $1 AND token = $2 AND state = "
                            "'running'",
                        job.id, job.token)
               .affected_rows() == 1;
  }

  /// Extends, in the caller's transaction, the lease of every job of `jobs` still running
  /// with its token, to now + lease; returns the ids extended (with locked_rows::wait, the
  /// others were rescued: their workers should stop; with skip, an id may also be missing
  /// because another transaction held its row). One statement for any number of jobs; it
  /// locks the rows in id order, so two heartbeats never deadlock each other.
  /// Blocks: a round trip, and with locked_rows::wait on rows other transactions hold.
  /// @throws std::invalid_argument if lease is not positive; pqxx errors.
  std::vector<std::int64_t> heartbeat(pqxx::transaction_base &w,
                                      const std::vector<claimed_job> &jobs,
                                      std::chrono::milliseconds lease,
                                      locked_rows locked = locked_rows::wait) {
    check_lease(lease, "heartbeat");
    if (jobs.empty()) {
      return {};
    }
    const auto ids = int_array(jobs, &claimed_job::id);
    const auto tokens = int_array(jobs, &claimed_job::token);
    auto r =
        detail::exec(w,
                     "UPDATE " + table_ +
                         " j SET lease_until = clock_timestamp() + $3 * "
                         "interval '1 millisecond' WHERE j.id IN (SELECT t.id FROM " +
                         table_ +
                         " t JOIN unnest($1::bigint[], $2::bigint[]) AS c(id, token) ON "
                         "t.id = c.id AND t.token = c.token WHERE t.state = 'running' "
                         "ORDER BY t.id FOR UPDATE OF t" +
                         (locked == locked_rows::skip ? " SKIP LOCKED" : "") + ") RETURNING j.id",
                     ids, tokens, static_cast<long long>(lease.count()));
    return ids_of(r);
  }

  /// Extends the job's lease to now + lease, if the job is still running with its token.
  /// Returns false when it is not (the lease expired and the job was rescued): stop working
  /// on it.
  /// @throws std::invalid_argument if lease is not positive; pqxx errors; acquire_error.
  bool heartbeat(const claimed_job &job, std::chrono::milliseconds lease, std::stop_token st = {}) {
    check_lease(lease, "heartbeat");
    return fenced_update(st, "lease_until = clock_timestamp() + $3 * interval '1 millisecond'", job,
                         static_cast<long long>(lease.count()));
  }

  /// Marks the job done, if it is still running with its token; returns false (nothing
  /// changed: another worker owns the job now) otherwise. Commits on its own connection.
  /// @throws pqxx errors; acquire_error.
  [[nodiscard]] bool complete(const claimed_job &job, std::stop_token st = {}) {
    return with_lease(st, [&](pqxx::connection &c) {
      pqxx::work w(c);
      const bool done = complete(w, job);
      w.commit();
      return done;
    });
  }

  /// Marks the job done in the caller's transaction `w`, if it is still running with its
  /// token; returns false otherwise (then roll back the job's effects: another worker owns
  /// the job now). Committing `w` commits the effects and the completion together.
  [[nodiscard]] bool complete(pqxx::transaction_base &w, const claimed_job &job) {
    auto r = detail::exec(w,
                          "UPDATE " + table_ +
                              " SET state = 'done', finished_at = now(), lease_until = NULL "
                              "WHERE id = $1 AND token = $2 AND state = 'running'",
                          job.id, job.token);
    return r.affected_rows() == 1;
  }

  /// Marks many jobs done in the caller's transaction, each only if still running with its
  /// token. Returns the ids that were completed (the others belong to someone else now).
  std::vector<std::int64_t> complete_batch(pqxx::transaction_base &w,
                                           const std::vector<claimed_job> &jobs) {
    return fenced_update_batch(w, jobs, "state = 'done', finished_at = now(), lease_until = NULL");
  }

  /// What complete_and_claim() did.
  struct handoff {
    std::vector<std::int64_t> completed; ///< ids of `done` whose token still held
    std::vector<claimed_job> claimed;    ///< the next jobs, sorted by id
  };

  /// complete_batch(w, done) and claim(w, queue, n, lease) in ONE statement (one round trip):
  /// a worker that completes a batch and claims the next in the caller's transaction pays one
  /// round trip and one commit per batch, as the bare `UPDATE ... SKIP LOCKED` would, and
  /// keeps the fence on every completion. `done` may be empty.
  /// Blocks: a round trip, never on another claimer's rows.
  /// @throws std::invalid_argument as claim(); pqxx errors. Allocates: the jobs.
  handoff complete_and_claim(pqxx::transaction_base &w, const std::vector<claimed_job> &done,
                             std::string_view queue, int n, std::chrono::milliseconds lease) {
    check_queue(queue, "complete_and_claim");
    if (n < 1 || n > max_batch) {
      throw std::invalid_argument("lakh::pg::job_queue::complete_and_claim: n (" +
                                  std::to_string(n) + ") must be within 1.." +
                                  std::to_string(max_batch));
    }
    check_lease(lease, "complete_and_claim");
    const auto ids = int_array(done, &claimed_job::id);
    const auto tokens = int_array(done, &claimed_job::token);
    // The two UPDATEs touch disjoint rows (running with a token; pending), so one statement
    // may hold both. Completed rows come back with a NULL token.
    auto r = detail::exec(
        w,
        "WITH done AS (UPDATE " + table_ +
            " j SET state = 'done', finished_at = now(), lease_until = NULL "
            "FROM unnest($1::bigint[], $2::bigint[]) AS c(id, token) "
            "WHERE j.id = c.id AND j.token = c.token AND j.state = 'running' RETURNING j.id), "
            "next AS (SELECT id FROM " +
            table_ +
            " WHERE queue = $3 AND state = 'pending' AND run_at <= now() "
            "ORDER BY run_at, id LIMIT $4 FOR UPDATE SKIP LOCKED), "
            "claimed AS (UPDATE " +
            table_ +
            " j SET state = 'running', attempts = j.attempts + 1, "
            "lease_until = clock_timestamp() + $5 * interval '1 millisecond', token = nextval('" +
            table_ +
            "_token_seq') WHERE j.id = ANY(ARRAY(SELECT id FROM next)) "
            "RETURNING j.id, j.payload, j.attempts, j.token, "
            "(extract(epoch FROM now() - j.run_at) * 1000000)::bigint AS waited) "
            "SELECT id, NULL, NULL, NULL::bigint, NULL FROM done "
            "UNION ALL SELECT id, payload, attempts, token, waited FROM claimed",
        ids, tokens, std::string(queue), n, static_cast<long long>(lease.count()));
    handoff h;
    for (const auto &row : r) {
      if (row[3].is_null()) {
        h.completed.push_back(row[0].as<std::int64_t>());
      } else {
        h.claimed.push_back(claimed_from(row));
      }
    }
    std::sort(h.claimed.begin(), h.claimed.end(),
              [](const claimed_job &a, const claimed_job &b) { return a.id < b.id; });
    return h;
  }

  /// Records a failure of the job (if still running with its token): retried later, at
  /// now() + backoff * 2^(attempts - 1) (capped at 1 day), or dead once attempts reached
  /// max_attempts.
  /// @throws std::invalid_argument if backoff is negative; pqxx errors; acquire_error.
  fail_outcome fail(const claimed_job &job, std::string_view error,
                    std::chrono::milliseconds backoff = std::chrono::seconds(1),
                    std::stop_token st = {}) {
    return with_lease(st, [&](pqxx::connection &c) {
      pqxx::work w(c);
      const auto outcome = fail(w, job, error, backoff);
      w.commit();
      return outcome;
    });
  }

  /// fail() in the caller's transaction `w`. For a job of claim_done() (token 0) whose
  /// transaction rolled back: the job, pending again, gets this attempt counted, the error
  /// and the backoff (or dead), unless another claimer has taken or recorded it since
  /// (its attempts moved on: refused).
  /// @throws std::invalid_argument if backoff is negative; pqxx errors.
  fail_outcome fail(pqxx::transaction_base &w, const claimed_job &job, std::string_view error,
                    std::chrono::milliseconds backoff = std::chrono::seconds(1)) {
    check_backoff(backoff, "fail");
    // A claim_done() job is pending again after its rollback: this attempt is counted here
    // ($2 is the attempts it was claimed with); a leased job is fenced by its token ($2).
    const bool unleased = job.token == 0;
    const std::string counted = unleased ? "attempts + 1" : "attempts";
    auto r = detail::exec(w,
                          "UPDATE " + table_ + " SET attempts = " + counted +
                              ", state = CASE WHEN " + counted +
                              " >= max_attempts THEN 'dead' ELSE 'pending' END, "
                              "run_at = now() + " +
                              backoff_sql(counted, "$3") +
                              ", "
                              "finished_at = CASE WHEN " +
                              counted +
                              " >= max_attempts THEN now() END, "
                              "lease_until = NULL, last_error = $4 WHERE id = $1 AND " +
                              (unleased ? "attempts = $2 - 1 AND state = 'pending'"
                                        : "token = $2 AND state = 'running'") +
                              " RETURNING state",
                          job.id, unleased ? static_cast<std::int64_t>(job.attempts) : job.token,
                          static_cast<long long>(backoff.count()), std::string(error));
    if (r.empty()) {
      return fail_outcome::refused;
    }
    return r[0][0].as<std::string>() == "dead" ? fail_outcome::dead : fail_outcome::retried;
  }

  /// Returns running jobs whose lease has passed to pending, runnable after the backoff
  /// fail() would give their attempts (now() + backoff * 2^(attempts - 1), capped at 1 day:
  /// a job whose worker died, perhaps of that job, is not handed to the next worker at
  /// once), or to dead when their attempts are used up; their old tokens stop working and
  /// last_error is 'lease expired'. Returns how many were rescued. Concurrent rescuers skip
  /// each other's rows.
  /// @throws std::invalid_argument if backoff is negative; pqxx errors; acquire_error.
  std::size_t rescue_expired(std::chrono::milliseconds backoff = std::chrono::seconds(1),
                             std::stop_token st = {}) {
    check_backoff(backoff, "rescue_expired");
    return with_lease(st, [&](pqxx::connection &c) {
      pqxx::work w(c);
      const auto n = rescue_expired(w, backoff);
      w.commit();
      return n;
    });
  }

  /// rescue_expired() in the caller's transaction `w`.
  std::size_t rescue_expired(pqxx::transaction_base &w,
                             std::chrono::milliseconds backoff = std::chrono::seconds(1)) {
    check_backoff(backoff, "rescue_expired");
    auto r = detail::exec(
        w,
        "UPDATE " + table_ +
            " SET state = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'pending' "
            "END, run_at = now() + " +
            backoff_sql("attempts", "$1") +
            ", lease_until = NULL, last_error = 'lease expired', "
            "finished_at = CASE WHEN attempts >= max_attempts THEN now() END "
            "WHERE id IN (SELECT id FROM " +
            table_ + " WHERE state = 'running' AND lease_until < now() FOR UPDATE SKIP LOCKED)",
        static_cast<long long>(backoff.count()));
    return static_cast<std::size_t>(r.affected_rows());
  }

  /// Up to `limit` jobs in `state` (pending, running, done or dead), of `queue` unless it is
  /// empty, with ids above `after_id`, by id: a page; pass the last id for the next one.
  /// @throws std::invalid_argument on an unknown state or limit outside 1..max_batch; pqxx
  /// errors; acquire_error. Allocates: the jobs.
  std::vector<job_info> list(std::string_view state, std::string_view queue = {}, int limit = 100,
                             std::int64_t after_id = 0, std::stop_token st = {}) {
    check_state(state, "list");
    if (limit < 1 || limit > max_batch) {
      throw std::invalid_argument("lakh::pg::job_queue::list: limit (" + std::to_string(limit) +
                                  ") must be within 1.." + std::to_string(max_batch));
    }
    return with_lease(st, [&](pqxx::connection &c) {
      pqxx::work w(c);
      auto r = detail::exec(w,
                            "SELECT id, queue, payload, unique_key, state, attempts, "
                            "max_attempts, last_error FROM " +
                                table_ +
                                " WHERE state = $1 AND ($2 = '' OR queue = $2) AND id > $3 "
                                "ORDER BY id LIMIT $4",
                            std::string(state), std::string(queue), after_id, limit);
      w.commit();
      std::vector<job_info> jobs;
      jobs.reserve(detail::row_count(r));
      for (const auto &row : r) {
        jobs.push_back(
            {row[0].as<std::int64_t>(), row[1].as<std::string>(), row[2].as<std::string>(),
             row[3].is_null() ? std::nullopt : std::optional<std::string>(row[3].as<std::string>()),
             row[4].as<std::string>(), row[5].as<int>(), row[6].as<int>(),
             row[7].is_null() ? std::nullopt
                              : std::optional<std::string>(row[7].as<std::string>())});
      }
      return jobs;
    });
  }

  /// A dead job runs again: pending now with its attempts reset (its last error kept until
  /// it fails again). False when the job is not dead (or its unique key is live again).
  bool retry_dead(std::int64_t id, std::stop_token st = {}) {
    return admin(st,
                 "UPDATE " + table_ +
                     " j SET state = 'pending', attempts = 0, run_at = now(), finished_at = "
                     "NULL WHERE id = $1 AND state = 'dead' AND NOT EXISTS (SELECT 1 FROM " +
                     table_ +
                     " o WHERE o.queue = j.queue AND o.unique_key = j.unique_key AND o.state IN "
                     "('pending', 'running'))",
                 id);
  }

  /// A pending job will not run: dead, with last_error 'cancelled'. A running job cannot be
  /// cancelled here (its worker decides); false then, or when there is no such pending job.
  bool cancel(std::int64_t id, std::stop_token st = {}) {
    return admin(st,
                 "UPDATE " + table_ +
                     " SET state = 'dead', last_error = 'cancelled', finished_at = now() "
                     "WHERE id = $1 AND state = 'pending'",
                 id);
  }

  /// Deletes a dead job. False when there is no such dead job.
  bool delete_dead(std::int64_t id, std::stop_token st = {}) {
    return admin(st, "DELETE FROM " + table_ + " WHERE id = $1 AND state = 'dead'", id);
  }

  /// The NOTIFY channel of this queue's table (with options().notify): the table's name.
  [[nodiscard]] const std::string &channel() const noexcept { return table_; }

  /// Deletes up to `limit` done jobs (and dead ones with finished_jobs::done_and_dead) that
  /// finished more than `older_than` ago; returns how many.
  /// @throws std::invalid_argument if limit < 1; pqxx errors; acquire_error.
  std::size_t delete_finished(std::chrono::milliseconds older_than, int limit = 10000,
                              finished_jobs which = finished_jobs::done, std::stop_token st = {}) {
    if (limit < 1) {
      throw std::invalid_argument("lakh::pg::job_queue::delete_finished: limit (" +
                                  std::to_string(limit) + ") must be at least 1");
    }
    const std::string states =
        which == finished_jobs::done ? "state = 'done'" : "state IN ('done', 'dead')";
    return with_lease(st, [&](pqxx::connection &c) {
      pqxx::work w(c);
      auto r = detail::exec(w,
                            "DELETE FROM " + table_ + " WHERE id IN (SELECT id FROM " + table_ +
                                " WHERE " + states +
                                " AND finished_at < now() - $1 * "
                                "interval '1 millisecond' LIMIT $2 FOR UPDATE SKIP LOCKED)",
                            static_cast<long long>(older_than.count()), limit);
      w.commit();
      return static_cast<std::size_t>(r.affected_rows());
    });
  }

  /// Counts by state (all queues), the oldest runnable job's age, the table's dead tuples and
  /// the oldest open transaction's age.
  job_queue_health health(std::stop_token st = {}) {
    return with_lease(st, [&](pqxx::connection &c) {
      pqxx::work w(c);
      job_queue_health h;
      for (const auto &row : w.exec("SELECT state, count(*) FROM " + table_ + " GROUP BY state")) {
        const auto state = row[0].as<std::string>();
        const auto n = row[1].as<std::int64_t>();
        (state == "pending"   ? h.pending
         : state == "running" ? h.running
         : state == "done"    ? h.done
                              : h.dead) = n;
      }
      h.oldest_pending_seconds =
          w.exec("SELECT coalesce(extract(epoch FROM now() - min(run_at)), 0) FROM " + table_ +
                 " WHERE state = 'pending' AND run_at <= now()")[0][0]
              .as<double>();
      const auto dot = table_.find('.');
      const std::string rel = dot == std::string::npos ? table_ : table_.substr(dot + 1);
      auto dead = detail::exec(
          w, "SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables WHERE relname = $1",
          rel);
      h.dead_tuples = dead[0][0].as<std::int64_t>();
      h.oldest_transaction_seconds =
          // clock_timestamp(), not now(): a transaction that began after this one must not
          // read as a negative age.
          w.exec("SELECT greatest(extract(epoch FROM clock_timestamp() - min(xact_start)), 0) "
                 "FROM pg_stat_activity WHERE datname = current_database() "
                 "AND xact_start IS NOT NULL AND pid <> pg_backend_pid()")[0][0]
              .as<double>();
      w.commit();
      return h;
    });
  }

  /// The table name.
  [[nodiscard]] const std::string &table() const noexcept { return table_; }

  /// job_queue_options::acquire_timeout.
  [[nodiscard]] std::optional<std::chrono::milliseconds> acquire_timeout() const noexcept {
    return acquire_timeout_;
  }

  /// The largest exponent of the backoff: 2^30 ms is past its cap of a day, and the float8
  /// power() overflows (22003) from 2^1024 on.
  static constexpr int max_backoff_exponent = 30;

private:
  /// The first column of every row, as ids.
  static std::vector<std::int64_t> ids_of(const pqxx::result &r) {
    std::vector<std::int64_t> ids;
    ids.reserve(detail::row_count(r));
    for (const auto &row : r) {
      ids.push_back(row[0].as<std::int64_t>());
    }
    return ids;
  }

  /// The statement of claim() and claim_done(): up to n runnable jobs of `queue` (run_at,
  /// id order) locked with SKIP LOCKED and updated by `set` (SQL built from integers and the
  /// table's name only), returned sorted by id with `token` as their token.
  std::vector<claimed_job> claim_rows(pqxx::transaction_base &w, const char *fn,
                                      std::string_view queue, int n, const std::string &set,
                                      const char *token) {
    check_queue(queue, fn);
    if (n < 1 || n > max_batch) {
      throw std::invalid_argument(std::string("lakh::pg::job_queue::") + fn + ": n (" +
                                  std::to_string(n) + ") must be within 1.." +
                                  std::to_string(max_batch));
    }
    auto r = detail::exec(w,
                          "WITH next AS (SELECT id FROM " + table_ +
                              " WHERE queue = $1 AND state = 'pending' AND run_at <= now() "
                              "ORDER BY run_at, id LIMIT $2 FOR UPDATE SKIP LOCKED) UPDATE " +
                              table_ + " j SET " + set +
                              " WHERE j.id = ANY(ARRAY(SELECT id FROM next)) RETURNING j.id, "
                              "j.payload, j.attempts, " +
                              token + ", (extract(epoch FROM now() - j.run_at) * 1000000)::bigint",
                          std::string(queue), n);
    std::vector<claimed_job> jobs;
    jobs.reserve(detail::row_count(r));
    for (const auto &row : r) {
      jobs.push_back(claimed_from(row));
    }
    std::sort(jobs.begin(), jobs.end(),
              [](const claimed_job &a, const claimed_job &b) { return a.id < b.id; });
    return jobs;
  }

  /// A claimed job from a row (id, payload, attempts, token, waited in microseconds).
  static claimed_job claimed_from(const detail::row_view &row) {
    return {row[0].as<std::int64_t>(), row[1].as<std::string>(), row[2].as<int>(),
            row[3].as<std::int64_t>(),
            std::chrono::microseconds(std::max<std::int64_t>(0, row[4].as<std::int64_t>()))};
  }

  static void check_queue(std::string_view queue, const char *fn) {
    if (queue.empty() || queue.size() > max_queue_name) {
      throw std::invalid_argument(std::string("lakh::pg::job_queue::") + fn + ": queue name (" +
                                  std::to_string(queue.size()) + " bytes) must be 1.." +
                                  std::to_string(max_queue_name) + " bytes");
    }
  }

  static void check_payload(std::string_view payload, const char *fn) {
    if (payload.find('\0') != std::string_view::npos) {
      throw std::invalid_argument(std::string("lakh::pg::job_queue::") + fn +
                                  ": payload contains a NUL byte (PostgreSQL text cannot)");
    }
  }

  static void check_state(std::string_view state, const char *fn) {
    if (state != "pending" && state != "running" && state != "done" && state != "dead") {
      throw std::invalid_argument(std::string("lakh::pg::job_queue::") + fn + ": state \"" +
                                  std::string(state) +
                                  "\" is not one of pending, running, done, dead");
    }
  }

  bool admin(std::stop_token st, const std::string &sql, std::int64_t id) {
    return with_lease(st, [&](pqxx::connection &c) {
      pqxx::work w(c);
      const bool changed = detail::exec(w, sql, id).affected_rows() == 1;
      w.commit();
      return changed;
    });
  }

  /// Calls f(connection) on a pooled connection leased for up to acquire_timeout_ (or as
  /// pool::acquire_default when it is unset) or until `st` is stopped, as with_connection.
  /// @throws acquire_error when no connection came; what f throws.
  template <class F>
  auto with_lease(std::stop_token st, F &&f) -> std::invoke_result_t<F &, pqxx::connection &> {
    return run_on_lease(*pool_,
                        acquire_timeout_ ? pool_->acquire_for(*acquire_timeout_, std::move(st))
                                         : pool_->acquire_default(std::move(st)),
                        f);
  }

  /// The backoff in SQL, an interval: base (`param`, milliseconds) * 2^(attempts - 1), the
  /// exponent capped so that power() cannot overflow, the whole capped at a day.
  static std::string backoff_sql(const std::string &attempts, const char *param) {
    return "LEAST(" + std::string(param) + " * power(2, LEAST(" + attempts + " - 1, " +
           std::to_string(max_backoff_exponent) + ")), 86400000) * interval '1 millisecond'";
  }

  static void check_backoff(std::chrono::milliseconds backoff, const char *fn) {
    if (backoff.count() < 0) {
      throw std::invalid_argument(std::string("lakh::pg::job_queue::") + fn + ": backoff (" +
                                  std::to_string(backoff.count()) + " ms) must not be negative");
    }
  }

  static void check_lease(std::chrono::milliseconds lease, const char *fn) {
    if (lease.count() <= 0) {
      throw std::invalid_argument(std::string("lakh::pg::job_queue::") + fn + ": lease (" +
                                  std::to_string(lease.count()) + " ms) must be positive");
    }
  }

  static void check_spec(const job_spec &s, const char *fn) {
    check_queue(s.queue, fn);
    check_payload(s.payload, fn);
    if (s.unique_key && (s.unique_key->empty() || s.unique_key->size() > max_unique_key)) {
      throw std::invalid_argument(std::string("lakh::pg::job_queue::") + fn + ": unique_key (" +
                                  std::to_string(s.unique_key->size()) + " bytes) must be 1.." +
                                  std::to_string(max_unique_key) + " bytes");
    }
    if (s.delay.count() < 0) {
      throw std::invalid_argument(std::string("lakh::pg::job_queue::") + fn + ": delay (" +
                                  std::to_string(s.delay.count()) + " ms) must not be negative");
    }
    if (s.max_attempts < 1) {
      throw std::invalid_argument(std::string("lakh::pg::job_queue::") + fn + ": max_attempts (" +
                                  std::to_string(s.max_attempts) + ") must be at least 1");
    }
  }

  template <class... Args>
  bool fenced_update(std::stop_token st, const std::string &set, const claimed_job &job,
                     Args &&...args) {
    return with_lease(st, [&](pqxx::connection &c) {
      pqxx::work w(c);
      auto r = detail::exec(w,
                            "UPDATE " + table_ + " SET " + set +
                                " WHERE id = $1 AND token = $2 AND state = 'running'",
                            job.id, job.token, std::forward<Args>(args)...);
      w.commit();
      return r.affected_rows() == 1;
    });
  }

  /// In `w`, applies `set` (SQL; $3... are `args`) to every job of `jobs` still running with
  /// its token, in one statement; returns the ids updated.
  template <class... Args>
  std::vector<std::int64_t> fenced_update_batch(pqxx::transaction_base &w,
                                                const std::vector<claimed_job> &jobs,
                                                const std::string &set, Args &&...args) {
    if (jobs.empty()) {
      return {};
    }
    const auto ids = int_array(jobs, &claimed_job::id);
    const auto tokens = int_array(jobs, &claimed_job::token);
    auto r = detail::exec(w,
                          "UPDATE " + table_ + " j SET " + set +
                              " FROM unnest($1::bigint[], $2::bigint[]) AS c(id, token) "
                              "WHERE j.id = c.id AND j.token = c.token AND j.state = 'running' "
                              "RETURNING j.id",
                          ids, tokens, std::forward<Args>(args)...);
    return ids_of(r);
  }

  pool *pool_;
  std::string table_;
  bool notify_;
  std::optional<std::chrono::milliseconds> acquire_timeout_;
};

} // namespace lakh::pg
