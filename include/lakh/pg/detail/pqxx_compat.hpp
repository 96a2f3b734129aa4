#pragma once
// lakh/pg/detail/pqxx_compat.hpp: the ONE place where libpqxx 6.x, 7.x and 8.x differ for lakh.
//
// lakh::pg is written against what libpqxx 6.4 (Debian 12), 7.10 (Debian 13, vcpkg) and 8.0
// share: pqxx::connection, pqxx::transaction<isolation_level>, exec(query), esc/quote, the
// exception types broken_connection, sql_error (with sqlstate()), in_doubt_error,
// transaction_rollback, deadlock_detected, serialization_failure,
// statement_completion_unknown. What differs is kept here, in two API generations: "legacy"
// (6.x up to 7.9) and "modern" (7.10 and later, where the legacy calls are deprecated, and
// 8.x, where some are gone):
//   - statements with parameters: exec_params(query, args...) / exec(query, params{...}),
//     through exec();
//   - bytea: binarystring / bytes and bytes_view, through bytea_param() and bytea_string();
//   - SQL arrays read from a field: array_parser / as_sql_array(), through text_array_of();
//   - LISTEN: notification_receiver / connection::listen(), through listener;
//   - the size of a result: an unsigned type in 6.x, int in 7.x, through row_count();
//   - the exception hierarchy: in 6.4 deadlock_detected / serialization_failure /
//     statement_completion_unknown derive from transaction_rollback : failure and carry NO
//     sqlstate(); in 7.x transaction_rollback derives from sql_error; in 8.x every exception
//     derives from failure and carries sqlstate(). sqlstate_of() reads a SQLSTATE where there
//     is one, and lakh::pg::classify() decides by type first;
//   - COPY: 6.4's stream_to allocates a string per field and has no public raw-line write,
//     so copy_writer formats lines itself and sends them with tablewriter::write_raw_line;
//     7.x uses stream_to::raw_table() and write_row().
// Tested against 6.4.5, 7.10.7 and 8.0.1 (the presets dev, pqxx7 and pqxx8).

#include <pqxx/pqxx>
#if PQXX_VERSION_MAJOR < 7
#  include <pqxx/tablewriter> // not in <pqxx/pqxx> (deprecated in 6.x); see copy_writer
#endif

#include <charconv>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <vector>

#ifndef PQXX_VERSION_MAJOR
#  error "lakh::pg needs libpqxx's version macros (pqxx/version.hxx)"
#endif

namespace lakh::pg::detail {

/// libpqxx's major version (6, 7 or 8).
inline constexpr int pqxx_major = PQXX_VERSION_MAJOR;

/// Whether libpqxx has the API of 7.10 and later (params, bytes, as_sql_array, listen).
#if PQXX_VERSION_MAJOR > 7 || (PQXX_VERSION_MAJOR == 7 && PQXX_VERSION_MINOR >= 10)
#  define LAKH_PQXX_MODERN 1
#else
#  define LAKH_PQXX_MODERN 0
#endif

/// What indexing a result and a row gives: row_ref and field_ref from 8.x (views that need the
/// result to live), row and field before.
#if PQXX_VERSION_MAJOR >= 8
using row_view = pqxx::row_ref;
using field_view = pqxx::field_ref;
#else
using row_view = pqxx::row;
using field_view = pqxx::field;
#endif

/// Runs `query` with `args` bound to $1, $2, ... in `tx`.
template <class... Args>
pqxx::result exec(pqxx::transaction_base &tx, std::string_view query, Args &&...args) {
#if PQXX_VERSION_MAJOR >= 8
  return tx.exec(query, pqxx::params{tx, std::forward<Args>(args)...});
#elif LAKH_PQXX_MODERN
  return tx.exec(query, pqxx::params{std::forward<Args>(args)...});
#else
  return tx.exec_params(std::string(query), std::forward<Args>(args)...);
#endif
}

/// The number of rows in `r` as a size.
inline std::size_t row_count(const pqxx::result &r) noexcept {
  return static_cast<std::size_t>(r.size());
}

/// `bytes` as a bytea parameter of exec(); it refers to `bytes`, which must outlive the call.
inline auto bytea_param(std::string_view bytes) {
#if LAKH_PQXX_MODERN
  return pqxx::bytes_view(reinterpret_cast<const std::byte *>(bytes.data()), bytes.size());
#else
  return pqxx::binarystring(std::string(bytes));
#endif
}

/// The bytes of a bytea field.
inline std::string bytea_string(const field_view &f) {
#if LAKH_PQXX_MODERN
  const auto b = f.as<pqxx::bytes>();
  return std::string(reinterpret_cast<const char *>(b.data()), b.size());
#else
  return pqxx::binarystring(f).str();
#endif
}

/// The non-NULL elements of a one-dimensional text[] field, in order.
inline std::vector<std::string> text_array_of(const field_view &f) {
  std::vector<std::string> out;
#if LAKH_PQXX_MODERN
#  if PQXX_VERSION_MAJOR >= 8
  const auto array = f.as<pqxx::array<std::optional<std::string>>>();
#  else
  const auto array = f.as_sql_array<std::optional<std::string>>();
#  endif
  for (auto it = array.cbegin(); it != array.cend(); ++it) {
    if (*it) {
      out.push_back(**it);
    }
  }
#else
  auto parser = f.as_array();
  for (auto step = parser.get_next(); step.first != pqxx::array_parser::juncture::done;
       step = parser.get_next()) {
    if (step.first == pqxx::array_parser::juncture::string_value) {
      out.push_back(std::move(step.second));
    }
  }
#endif
  return out;
}

/// LISTENs on `channel` on `c` for as long as it lives, calling `on_payload(payload)` for
/// each notification that c.await_notification() or c.get_notifs() takes in.
class listener {
public:
  using handler = std::function<void(std::string_view payload)>;

  listener(pqxx::connection &c, const std::string &channel, handler on_payload) {
#if LAKH_PQXX_MODERN
    c.listen(channel,
             [h = std::move(on_payload)](pqxx::notification n) { h(std::string_view(n.payload)); });
#else
    receiver_ = std::make_unique<receiver>(c, channel, std::move(on_payload));
#endif
  }

private:
#if !LAKH_PQXX_MODERN
  struct receiver : pqxx::notification_receiver {
    receiver(pqxx::connection &c, const std::string &channel, handler h)
        : pqxx::notification_receiver(c, channel), on_payload(std::move(h)) {}
    void operator()(const std::string &payload, int) override { on_payload(payload); }
    handler on_payload;
  };
  std::unique_ptr<receiver> receiver_;
#endif
};

/// The five-character SQLSTATE carried by `e` if it is a pqxx::sql_error (all of them in
/// 7.x; not the 6.4 transaction_rollback family), else "".
inline std::string sqlstate_of(const std::exception &e) {
  if (const auto *se = dynamic_cast<const pqxx::sql_error *>(&e)) {
    return std::string(se->sqlstate());
  }
  return {};
}

/// Closes `c` now (is_open() is false afterwards, and the server ends the session with
/// everything it held); libpqxx 6 calls it disconnect(), 7 close().
inline void close_connection(pqxx::connection &c) noexcept {
#if PQXX_VERSION_MAJOR < 7
  c.disconnect();
#else
  try {
    c.close();
  } catch (...) { // closed anyway
  }
#endif
}

/// A double-quoted SQL identifier: "name" with embedded quotes doubled. Used for table
/// and column names handed to COPY. A dotted name "schema.table" is quoted per part.
inline std::string quote_identifier(std::string_view name) {
  std::string out;
  out.reserve(name.size() + 2);
  out.push_back('"');
  for (char c : name) {
    if (c == '"') {
      out.push_back('"');
    } else if (c == '.') {
      out += "\".\"";
      continue;
    }
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

// ---- COPY text format -------------------------------------------------------------------
// PostgreSQL's COPY text format: fields separated by TAB, rows by LF, NULL as \N, and in
// values the bytes \ TAB LF CR escaped with a backslash. Assumes an ASCII-safe client
// encoding (UTF-8, the default): in such encodings these bytes never occur inside a
// multi-byte character.

inline void copy_escape_append(std::string &out, std::string_view v) {
  for (char c : v) {
    switch (c) {
    case '\\':
      out += "\\\\";
      break;
    case '\t':
      out += "\\t";
      break;
    case '\n':
      out += "\\n";
      break;
    case '\r':
      out += "\\r";
      break;
    default:
      out.push_back(c);
    }
  }
}

template <class T> struct is_optional : std::false_type {};
template <class T> struct is_optional<std::optional<T>> : std::true_type {};

/// Append one field's COPY text to `out`: integers and floating point through
/// std::to_chars, bool as t/f, strings escaped, empty std::optional / nullptr as \N, and
/// any other type through pqxx::to_string (then escaped), as libpqxx's stream_to does.
template <class T> void copy_field_append(std::string &out, const T &v) {
  using U = std::remove_cvref_t<T>;
  if constexpr (std::is_same_v<U, std::nullptr_t>) {
    out += "\\N";
  } else if constexpr (is_optional<U>::value) {
    if (v.has_value()) {
      copy_field_append(out, *v);
    } else {
      out += "\\N";
    }
  } else if constexpr (std::is_same_v<U, bool>) {
    out.push_back(v ? 't' : 'f');
  } else if constexpr (std::is_same_v<U, char>) {
    copy_escape_append(out, std::string_view(&v, 1));
  } else if constexpr (std::is_integral_v<U> || std::is_floating_point_v<U>) {
    char buf[64];
    auto r = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, r.ptr);
  } else if constexpr (std::is_convertible_v<const U &, std::string_view>) {
    copy_escape_append(out, std::string_view(v));
  } else {
    copy_escape_append(out, pqxx::to_string(v));
  }
}

/// Writes rows into `COPY table (columns) FROM STDIN` in a transaction. The one place where
/// libpqxx versions differ for COPY:
///   - 6.x: stream_to formats each field into its own std::string and sends each row in its
///     own libpq call, and cannot take preformatted data. lakh formats rows itself into one
///     reused buffer (above) and sends ~64 KiB chunks with tablewriter::write_raw_line
///     (deprecated in 6.x, but the only public raw path): 3-4x less client CPU;
///   - 7.x: stream_to already formats into a reused buffer; rows go through write_row(),
///     opened with the stream_to::raw_table() factory (7.6+).
class copy_writer {
public:
  copy_writer(pqxx::transaction_base &tx, const std::string &table,
              const std::vector<std::string> &columns) {
    std::vector<std::string> quoted;
    quoted.reserve(columns.size());
    for (const auto &c : columns) {
      quoted.push_back(quote_identifier(c));
    }
#if PQXX_VERSION_MAJOR >= 7
    std::string cols;
    for (const auto &c : quoted) {
      cols += (cols.empty() ? "" : ",") + c;
    }
    stream_ = std::make_unique<pqxx::stream_to>(
        pqxx::stream_to::raw_table(tx, quote_identifier(table), cols));
#else
#  pragma GCC diagnostic push
#  pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    // 6.x pastes the names into the COPY statement unquoted; they are quoted here.
    writer_ = std::make_unique<pqxx::tablewriter>(tx, quote_identifier(table), quoted.begin(),
                                                  quoted.end());
#  pragma GCC diagnostic pop
    buffer_.reserve(chunk_size + 1024);
#endif
  }

  copy_writer(const copy_writer &) = delete;
  copy_writer &operator=(const copy_writer &) = delete;

  /// Write one row: a tuple (or pair) with one element per column. (6.x: buffered; sent in
  /// chunks of about 64 KiB.)
  template <class Tuple> void write(const Tuple &row) {
#if PQXX_VERSION_MAJOR >= 7
    stream_->write_row(row);
#else
    if (!buffer_.empty()) {
      buffer_.push_back('\n'); // rows in one chunk are separated; the last LF is added on send
    }
    std::apply(
        [this](const auto &...field) {
          bool first = true;
          ((first ? void(first = false) : buffer_.push_back('\t'),
            copy_field_append(buffer_, field)),
           ...);
        },
        row);
    if (buffer_.size() >= chunk_size) {
      flush();
    }
#endif
  }

  /// Send what is buffered (6.x; a no-op on 7.x, whose stream_to buffers in libpq).
  void flush() {
#if PQXX_VERSION_MAJOR < 7
    if (!buffer_.empty()) {
      writer_->write_raw_line(buffer_); // COPY data is a byte stream: a chunk may hold many rows
      buffer_.clear();
    }
#endif
  }

  /// End the COPY; throws the server's error for a rejected row.
  void complete() {
#if PQXX_VERSION_MAJOR >= 7
    stream_->complete();
#else
    flush();
    writer_->complete();
#endif
  }

private:
#if PQXX_VERSION_MAJOR >= 7
  std::unique_ptr<pqxx::stream_to> stream_;
#else
  static constexpr std::size_t chunk_size = 64 * 1024;
  std::unique_ptr<pqxx::tablewriter> writer_;
  std::string buffer_;
#endif
};

} // namespace lakh::pg::detail
