#pragma once
// lakh/pg/batched_transaction.hpp: a transaction in as few round trips as its statements
// allow. BEGIN, and every statement whose result the caller does not read (defer()), wait and
// travel with the next statement that returns rows (exec()) or with COMMIT, as ONE
// simple-query message. A transaction such as "BEGIN; set the tenant; take the idempotency
// key; insert the row; record the response; COMMIT" costs three round trips instead of six.
// Values are inlined as quoted literals (quote(), quote_bytes()): the simple-query protocol
// has no parameters. Guide: docs/pg.md#batched-transactions.

#include <lakh/pg/detail/pqxx_compat.hpp>

#include <cstddef>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace lakh::pg {

namespace detail {

/// `sql` with each $N replaced by literals[N-1] (already quoted: batched_transaction::quote).
/// For lakh's own statement templates, whose only '$' are placeholders.
/// @throws std::out_of_range for a placeholder without a literal.
inline std::string bind(std::string_view sql, std::initializer_list<std::string> literals) {
  std::string out;
  out.reserve(sql.size() + 64);
  for (std::size_t i = 0; i < sql.size(); ++i) {
    if (sql[i] != '$' || i + 1 == sql.size() || sql[i + 1] < '0' || sql[i + 1] > '9') {
      out.push_back(sql[i]);
      continue;
    }
    std::size_t n = 0;
    while (i + 1 < sql.size() && sql[i + 1] >= '0' && sql[i + 1] <= '9') {
      n = n * 10 + static_cast<std::size_t>(sql[++i] - '0');
    }
    if (n == 0 || n > literals.size()) {
      throw std::out_of_range("lakh::pg::detail::bind: $" + std::to_string(n) + " has no value");
    }
    out += *(literals.begin() + (n - 1));
  }
  return out;
}

} // namespace detail

/// One transaction on a connection, its statements batched (see the header comment). What a
/// deferred statement did is known at the next exec() or at commit(): an error in it is
/// thrown there, and the transaction is then over (rolled back). Statements must not end or
/// begin transactions themselves (COMMIT, ROLLBACK, BEGIN) or open a COPY.
///
/// Not thread-safe (a connection is used by one thread at a time). The connection must be
/// idle (no transaction object open on it) for the transaction's lifetime.
class batched_transaction {
public:
  /// Nothing is sent yet: BEGIN goes with the first exec() or commit().
  explicit batched_transaction(
      pqxx::connection &c, pqxx::isolation_level isolation = pqxx::isolation_level::read_committed)
      : raw_(c), pending_(begin_statement(isolation)), begin_size_(pending_.size()) {}

  batched_transaction(const batched_transaction &) = delete;
  batched_transaction &operator=(const batched_transaction &) = delete;

  /// Rolls back a transaction that was begun and neither committed nor already ended by an
  /// error at commit (an error while rolling back is ignored: the connection is then broken
  /// and the pool discards it).
  ~batched_transaction() {
    if (state_ == state::begun) {
      try {
        raw_.exec("ROLLBACK");
      } catch (...) {
      }
    }
  }

  /// Queues `sql` (one or more statements) to run before the next exec() or the commit; its
  /// result is never read. @throws std::logic_error after commit() or a failed statement.
  void defer(std::string_view sql) {
    require_open("defer");
    pending_.append(sql).append(separator);
  }

  /// Sends the queued statements and `sql` in one message and returns the result of `sql`
  /// (the last statement of the message). @throws what the server reported for any of them
  /// (the transaction is then rolled back and over); std::logic_error after commit() or a
  /// failed statement.
  pqxx::result exec(std::string_view sql) {
    require_open("exec");
    std::string message = std::exchange(pending_, {});
    message.append(sql);
    state_ = state::begun;
    try {
      return raw_.exec(message);
    } catch (...) {
      failed_ = true;
      throw;
    }
  }

  /// Sends the queued statements and COMMIT in one message (nothing at all when nothing was
  /// executed or queued). @throws pqxx::in_doubt_error when the connection was lost with the
  /// COMMIT in flight: it may have committed, so never retry blindly; what the server reported
  /// for a queued statement or the commit (nothing committed); std::logic_error after commit()
  /// or a failed statement.
  void commit() {
    require_open("commit");
    if (state_ == state::fresh && pending_.size() == begin_size_) {
      state_ = state::done; // nothing was sent or queued: nothing to commit
      return;
    }
    std::string message = std::exchange(pending_, {});
    message.append("COMMIT");
    state_ = state::begun;
    try {
      raw_.exec(message);
    } catch (const pqxx::broken_connection &e) {
      failed_ = true;
      state_ = state::done;
      throw pqxx::in_doubt_error(std::string("lakh::pg::batched_transaction: the connection was "
                                             "lost during COMMIT; it may have committed (") +
                                 e.what() + ")");
    } catch (...) {
      failed_ = true; // the destructor rolls back what a failed queued statement left open
      throw;
    }
    state_ = state::done;
  }

  /// Rolls back now (nothing is sent if nothing was). Afterwards only destruction is valid.
  void abort() {
    if (state_ == state::begun) {
      state_ = state::done;
      raw_.exec("ROLLBACK");
    }
    state_ = state::done;
  }

  /// `v` as a quoted SQL literal, escaped for this connection ('it''s').
  [[nodiscard]] std::string quote(std::string_view v) const { return raw_.quote(std::string(v)); }
  /// `v` as an SQL integer literal, parenthesised when negative (so that a cast binds to the
  /// whole value: "(-9223372036854775808)::bigint").
  template <class Int>
  [[nodiscard]] static std::string quote(Int v) requires std::is_integral_v<Int> &&
      (!std::is_same_v<Int, bool>) {
    return v < 0 ? "(" + std::to_string(v) + ")" : std::to_string(v);
  }
  /// `bytes` as a bytea expression (hex: no escaping rules apply).
  [[nodiscard]] static std::string quote_bytes(std::string_view bytes) {
    static constexpr char hex[] = "0123456789abcdef";
    std::string out;
    out.reserve(bytes.size() * 2 + 24);
    out += "decode('";
    for (const char ch : bytes) {
      const auto b = static_cast<unsigned char>(ch);
      out.push_back(hex[b >> 4]);
      out.push_back(hex[b & 0xf]);
    }
    out += "', 'hex')";
    return out;
  }

private:
  enum class state : unsigned char { fresh, begun, done };
  static constexpr std::string_view separator = "\n;\n"; // ends a trailing "--" comment too

  static std::string begin_statement(pqxx::isolation_level level) {
    std::string s = "BEGIN";
    switch (level) {
    case pqxx::isolation_level::read_committed:
      break;
    case pqxx::isolation_level::repeatable_read:
      s += " ISOLATION LEVEL REPEATABLE READ";
      break;
    case pqxx::isolation_level::serializable:
      s += " ISOLATION LEVEL SERIALIZABLE";
      break;
    default:
      s += " ISOLATION LEVEL READ UNCOMMITTED";
      break;
    }
    s.append(separator);
    return s;
  }

  void require_open(const char *what) const {
    if (state_ == state::done || failed_) {
      throw std::logic_error(std::string("lakh::pg::batched_transaction::") + what +
                             ": the transaction is over (committed, aborted or failed)");
    }
  }

  pqxx::nontransaction raw_; // sends the messages; BEGIN and COMMIT are in them
  std::string pending_;
  std::size_t begin_size_;
  state state_ = state::fresh;
  bool failed_ = false;
};

} // namespace lakh::pg
