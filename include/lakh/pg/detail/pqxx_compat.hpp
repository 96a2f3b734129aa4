#pragma once
// lakh/pg/detail/pqxx_compat.hpp: the ONE place where libpqxx 6.x and 7.x differ for lakh.
//
// lakh::pg is written against the API that libpqxx 6.4 (Debian 12) and 7.x share:
// pqxx::connection (string constructor, is_open, sock, get_notifs, backendpid),
// pqxx::transaction<isolation_level>, exec/exec_params, esc/quote, the exception types
// broken_connection, sql_error (with sqlstate()), in_doubt_error, transaction_rollback,
// deadlock_detected, serialization_failure, statement_completion_unknown. What differs is
// kept here:
//   - the exception hierarchy: in 6.4 deadlock_detected / serialization_failure /
//     statement_completion_unknown derive from transaction_rollback : failure and carry NO
//     sqlstate(); in 7.x transaction_rollback derives from sql_error. sqlstate_of() reads a
//     SQLSTATE where there is one, and lakh::pg::classify() decides by type first;
//   - COPY: 6.4's stream_to allocates a string per field and has no public raw-line write,
//     so copy_writer formats lines itself and sends them with tablewriter::write_raw_line;
//     7.x uses stream_to::raw_table() and write_row().
// lakh has been built and tested against 6.4.5 only (7.x is not packaged in Debian 12); the
// 7.x branches follow the 7.x headers' documented API.

#include <pqxx/pqxx>
#if PQXX_VERSION_MAJOR < 7
#  include <pqxx/tablewriter> // not in <pqxx/pqxx> (deprecated in 6.x); see copy_writer
#endif

#include <charconv>
#include <cstddef>
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

/// libpqxx's major version (6 or 7).
inline constexpr int pqxx_major = PQXX_VERSION_MAJOR;

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
