#pragma once
// lakh/pg/copy.hpp: lakh::pg::copy_from, bulk load of the rows of a channel (a
// lakh::channel<Row>, one of batches, or anything with recv() -> optional) into a table
// through COPY ... FROM STDIN, each row mapped to a tuple of column values by a function you
// supply. All or nothing: rows are written in one transaction and any failure (a row the
// server rejects, noticed while streaming; the mapping throwing; a lost connection) throws
// before anything commits, and CLOSES the channel so that blocked producers see
// status::closed. Unlike psql's \copy, the rows never exist as a file, memory stays bounded
// by the channel, and the load is typed. Guide: docs/pg.md (API: lakh/pg/copy.hpp).

#include <lakh/pg/detail/pqxx_compat.hpp>
#include <lakh/pg/pool.hpp>
#include <lakh/status.hpp>

#include <poll.h>

#include <concepts>
#include <cstddef>
#include <functional>
#include <iterator>
#include <optional>
#include <ranges>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace lakh::pg {

/// What copy_from did.
struct copy_result {
  std::size_t rows = 0;                   ///< rows written to the COPY stream
  lakh::status status = lakh::status::ok; ///< ok (channel drained and closed) or cancelled
};

/// A source of values: `recv()` returns something optional-like (false when closed and
/// drained), and `close()` exists. lakh::channel<T> is one.
template <class C>
concept row_source = requires(C &c) {
  {static_cast<bool>(c.recv())};
  {*c.recv()};
  c.close();
};

namespace detail {

template <class C> using received_t = std::remove_cvref_t<decltype(*std::declval<C &>().recv())>;

template <class C> auto receive(C &ch, const std::stop_token &st) {
  if constexpr (requires { ch.recv(st); }) {
    return ch.recv(st);
  } else {
    return ch.recv();
  }
}

/// Whether the server has sent something during a COPY FROM STDIN. It sends nothing during a
/// healthy one, so input means an error (a rejected row) or, rarely, a notice. libpq only
/// reports the error when the COPY ends, so copy_from then ends the COPY (complete() throws
/// the server's typed error, e.g. pqxx::check_violation) and, if it was only a notice,
/// starts a new COPY in the same transaction and carries on.
inline bool server_spoke(pqxx::transaction_base &tx) noexcept {
  pollfd p{tx.conn().sock(), POLLIN, 0};
  return p.fd >= 0 && ::poll(&p, 1, 0) > 0;
}

/// Rows between two server_spoke() checks.
inline constexpr std::size_t copy_check_interval = 4096;

struct identity_row {
  template <class T> const T &operator()(const T &t) const noexcept { return t; }
};

} // namespace detail

/// Copy every row received from `ch` into `table` (`columns`, in this order) within the
/// caller's transaction `tx`, mapping each row with `map(row) -> std::tuple<...>` (one
/// element per column). If `ch` yields batches (ranges of rows), each element is mapped.
/// Returns when `ch` is closed and drained (status ok; commit `tx` yourself) or when `st` is
/// stopped (status cancelled; `tx` has been aborted, nothing is written).
///
/// Thread-safety: the transaction's thread; `ch` may have any number of producers.
/// Blocks: while waiting for rows and while the server applies them.
/// @throws std::invalid_argument if `table` or `columns` is empty;
/// @throws pqxx errors (e.g. pqxx::data_exception, unique_violation) for rows the server
///         rejects, usually from the final complete(); whatever `map` throws. Before
///         rethrowing, the channel is closed and `tx` is aborted, so no row is left behind
///         (a later tx.commit() throws instead of committing a partial load).
/// Allocates: may (per row, in libpqxx's text conversion).
template <row_source Channel, class Map = detail::identity_row>
copy_result copy_from(pqxx::transaction_base &tx, const std::string &table,
                      const std::vector<std::string> &columns, Channel &ch, Map map = {},
                      std::stop_token st = {}) {
  if (table.empty()) {
    throw std::invalid_argument("lakh::pg::copy_from: table name is empty");
  }
  if (columns.empty()) {
    throw std::invalid_argument("lakh::pg::copy_from: no columns given for table \"" + table +
                                "\"");
  }
  using value_t = detail::received_t<Channel>;
  copy_result result;
  try {
    auto stream = std::make_unique<detail::copy_writer>(tx, table, columns);
    auto restart_if_server_spoke = [&] {
      if (detail::server_spoke(tx)) {
        stream->complete(); // throws the server's error, if that is what it was
        stream.reset();
        stream = std::make_unique<detail::copy_writer>(tx, table, columns);
      }
    };
    while (true) {
      if (st.stop_requested()) {
        result.status = lakh::status::cancelled;
        break;
      }
      auto got = detail::receive(ch, st);
      if (!got) {
        if (st.stop_requested()) {
          result.status = lakh::status::cancelled;
        }
        break;
      }
      if constexpr (std::is_invocable_v<Map &, const value_t &>) {
        stream->write(std::invoke(map, std::as_const(*got)));
        if (++result.rows % detail::copy_check_interval == 0) {
          restart_if_server_spoke();
        }
      } else {
        static_assert(std::ranges::input_range<value_t>,
                      "lakh::pg::copy_from: map must accept the channel's value or, for a "
                      "channel of batches, the batch's elements");
        for (const auto &row : *got) {
          stream->write(std::invoke(map, row));
          if (++result.rows % detail::copy_check_interval == 0) {
            restart_if_server_spoke();
          }
        }
      }
    }
    if (result.status == lakh::status::cancelled) {
      ch.close();
      stream.reset(); // ends the COPY (its destructor swallows errors); then drop everything
      tx.abort();
      return result;
    }
    stream->complete();
  } catch (...) {
    ch.close();
    try {
      tx.abort(); // the COPY stream is gone; make a later commit() fail instead of keeping rows
    } catch (...) {
    }
    throw;
  }
  return result;
}

/// Copy a whole channel into `table` in one transaction on a connection from `p`, and
/// commit: either every row is in the table, or (exception or cancellation) none is.
/// Thread-safety: safe. Blocks: waiting for a connection, rows, and the server.
/// @throws lakh::pg::acquire_error if the pool is closed (a stop request while waiting for a
///         connection returns status cancelled); otherwise as the transaction form.
///         The channel is closed before any exception propagates.
/// Allocates: may.
template <row_source Channel, class Map = detail::identity_row>
copy_result copy_from(pool &p, const std::string &table, const std::vector<std::string> &columns,
                      Channel &ch, Map map = {}, std::stop_token st = {}) {
  auto lease = p.acquire_default(st);
  if (!lease) {
    ch.close();
    if (lease.status() == lakh::status::cancelled) {
      return {0, lakh::status::cancelled};
    }
    throw acquire_error(lease.status(), p.target());
  }
  try {
    pqxx::work tx(*lease);
    auto r = copy_from(tx, table, columns, ch, std::move(map), st);
    if (r.status == lakh::status::ok) {
      tx.commit();
    }
    return r;
  } catch (const pqxx::broken_connection &) {
    lease.mark_broken();
    throw;
  }
}

} // namespace lakh::pg
