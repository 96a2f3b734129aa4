#pragma once
// lakh/redis/connection.hpp: a thin RAII layer over hiredis's synchronous API.
//
//   - lakh::redis::reply_ptr / context_ptr: std::unique_ptr with freeReplyObject / redisFree;
//   - lakh::redis::connection: connect(url) to "redis://[[user]:password@]host:port[/db]"
//     (AUTH; no TLS: hiredis 0.14 has none) with connect and command timeouts, command(args...)
//     sending binary-safe arguments (redisCommandArgv), errors as lakh::redis::redis_error naming
//     host:port and hiredis's errstr;
//   - lakh::redis::connection_pool: a small pool of connections (one per concurrent user),
//     where a broken connection is dropped instead of reused.
//
// Differs from redisContext: a failure throws (never a half-usable context and a NULL reply
// to check), and a connection that saw an I/O error marks itself broken: hiredis contexts
// cannot be used again after one. A redisContext, and so a connection, is NOT thread-safe:
// use one per thread at a time (connection_pool hands out exclusive leases).

#include <hiredis/hiredis.h>

#include <sys/time.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lakh::redis {

/// A Redis failure: cannot connect, I/O error or timeout on a connection, or an error reply
/// ("-ERR ...") where none was expected. what() names the server (host:port) and the reason.
class redis_error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};
/// The former name of redis_error, kept for one release.
using error [[deprecated("renamed lakh::redis::redis_error")]] = redis_error;

/// Frees a redisReply. Allocates: never.
struct reply_deleter {
  void operator()(redisReply *r) const noexcept { freeReplyObject(r); }
};
/// Frees a redisContext (closing its socket).
struct context_deleter {
  void operator()(redisContext *c) const noexcept { redisFree(c); }
};
/// An owned reply.
using reply_ptr = std::unique_ptr<redisReply, reply_deleter>;
/// An owned context.
using context_ptr = std::unique_ptr<redisContext, context_deleter>;

/// Where and how to connect.
struct connection_options {
  std::string host = "127.0.0.1";
  int port = 6379;
  int db = 0;
  /// AUTH: with a password, `AUTH user password` (Redis 6 ACL user) or, with no user,
  /// `AUTH password` (requirepass). Empty password and user: no AUTH.
  std::string user;
  std::string password;
  /// TCP connect timeout.
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(2)};
  /// Read/write timeout of each command (a command that takes longer throws and breaks the
  /// connection).
  std::chrono::milliseconds command_timeout{std::chrono::seconds(2)};
};

namespace detail {
// `url` with the password of its credentials (between "user:" and the last '@') masked.
inline std::string redact_url(std::string_view url) {
  auto scheme = url.find("://");
  auto at = url.rfind('@');
  if (scheme == std::string_view::npos || at == std::string_view::npos || at < scheme) {
    return std::string(url);
  }
  auto colon = url.find(':', scheme + 3);
  if (colon == std::string_view::npos || colon > at) {
    colon = scheme + 2; // no "user:": all of it may be a password
  }
  return std::string(url.substr(0, colon + 1)) + "***" + std::string(url.substr(at));
}

// Percent-decodes a URL's user or password into `out`; false for a bad escape.
inline bool percent_decode(std::string_view in, std::string &out) {
  out.clear();
  auto hex = [](char c) {
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
  };
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out += in[i];
      continue;
    }
    if (i + 2 >= in.size()) {
      return false;
    }
    int hi = hex(in[i + 1]);
    int lo = hex(in[i + 2]);
    if (hi < 0 || lo < 0) {
      return false;
    }
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return true;
}
} // namespace detail

/// Parse "redis://[[user]:password@]host[:port][/db]" (port 6379 and db 0 by default) into
/// options; user and password are percent-decoded ("%40" for '@', "%3A" for ':').
/// Thread-safety: pure. Blocks: never.
/// @throws std::invalid_argument naming the URL, its password masked, if it is not of that
///         form, and for rediss:// (TLS): Debian 12's hiredis (0.14) has no TLS support.
/// Allocates: may.
inline connection_options parse_url(std::string_view url) {
  auto bad = [&](const std::string &why) {
    return std::invalid_argument("lakh::redis::parse_url: \"" + detail::redact_url(url) +
                                 "\": " + why);
  };
  if (url.substr(0, 9) == "rediss://") {
    throw bad("rediss:// (TLS) is not supported: lakh::redis is built on hiredis " +
              std::to_string(HIREDIS_MAJOR) + "." + std::to_string(HIREDIS_MINOR) +
              " without hiredis_ssl (Debian 12's libhiredis-dev 0.14 has no TLS support); "
              "reach a TLS-only server through a local TLS tunnel (stunnel) and connect to it "
              "with redis://");
  }
  constexpr std::string_view scheme = "redis://";
  if (url.substr(0, scheme.size()) != scheme) {
    throw bad("must start with redis://");
  }
  auto rest = url.substr(scheme.size());
  connection_options o;
  if (auto at = rest.rfind('@'); at != std::string_view::npos) {
    auto cred = rest.substr(0, at);
    rest = rest.substr(at + 1);
    auto colon = cred.find(':');
    if (colon == std::string_view::npos) {
      throw bad("credentials must be user:password or :password");
    }
    if (!detail::percent_decode(cred.substr(0, colon), o.user) ||
        !detail::percent_decode(cred.substr(colon + 1), o.password)) {
      throw bad("bad percent-encoding in the credentials");
    }
  }
  auto slash = rest.find('/');
  auto hostport = rest.substr(0, slash);
  auto parse_int = [&](std::string_view s, const char *what, int lo, int hi) {
    if (s.empty() || s.size() > 9) {
      throw bad(std::string("bad ") + what);
    }
    int v = 0;
    for (char c : s) {
      if (c < '0' || c > '9') {
        throw bad(std::string("bad ") + what);
      }
      v = v * 10 + (c - '0');
    }
    if (v < lo || v > hi) {
      throw bad(std::string(what) + " out of range");
    }
    return v;
  };
  if (slash != std::string_view::npos && slash + 1 < rest.size()) {
    o.db = parse_int(rest.substr(slash + 1), "database number", 0, 1 << 20);
  }
  auto colon = hostport.rfind(':');
  if (colon != std::string_view::npos) {
    o.port = parse_int(hostport.substr(colon + 1), "port", 1, 65535);
    hostport = hostport.substr(0, colon);
  }
  if (!hostport.empty()) {
    o.host = std::string(hostport);
  }
  return o;
}

namespace detail {
inline timeval to_timeval(std::chrono::milliseconds d) {
  timeval tv{};
  tv.tv_sec = static_cast<decltype(tv.tv_sec)>(d.count() / 1000);
  tv.tv_usec = static_cast<decltype(tv.tv_usec)>((d.count() % 1000) * 1000);
  return tv;
}
} // namespace detail

/// One synchronous connection to a Redis server. Move-only.
///
/// Thread-safety: none; use from one thread at a time (a redisContext is not thread-safe).
/// Members never block or allocate unless noted.
/// Memory ordering: n/a (the server orders commands).
class connection {
public:
  /// Connect as `opts` says, AUTH (when it has credentials) and SELECT its db (when not 0).
  /// Blocks: up to connect_timeout (plus one command each for AUTH and SELECT).
  /// @throws lakh::redis::redis_error "lakh::redis: cannot connect to host:port: <errstr>", or
  ///         "lakh::redis: cannot authenticate as <user> to host:port: <server's reason>".
  /// Allocates: may.
  explicit connection(connection_options opts) : opts_(std::move(opts)) {
    auto tv = detail::to_timeval(opts_.connect_timeout);
    ctx_.reset(redisConnectWithTimeout(opts_.host.c_str(), opts_.port, tv));
    if (ctx_ == nullptr) {
      throw redis_error("lakh::redis: cannot connect to " + target() + ": out of memory");
    }
    if (ctx_->err != 0) {
      throw redis_error("lakh::redis: cannot connect to " + target() + ": " + ctx_->errstr);
    }
    auto ctv = detail::to_timeval(opts_.command_timeout);
    if (redisSetTimeout(ctx_.get(), ctv) != REDIS_OK) {
      throw redis_error("lakh::redis: cannot set timeouts on " + target() + ": " + ctx_->errstr);
    }
    if (!opts_.user.empty() || !opts_.password.empty()) {
      authenticate();
    }
    if (opts_.db != 0) {
      (void)command({"SELECT", std::to_string(opts_.db)});
    }
  }

  /// Connect to "redis://[[user]:password@]host:port[/db]" with default timeouts.
  /// @throws std::invalid_argument for a malformed URL; lakh::redis::redis_error as above.
  static connection connect(std::string_view url) { return connection(parse_url(url)); }

  /// Send one command (each argument binary-safe) and return its reply. An error reply
  /// ("-ERR ...") throws.
  /// Blocks: up to command_timeout.
  /// @throws lakh::redis::redis_error "lakh::redis: <CMD> on host:port: <reason>" for an I/O
  ///         error or timeout (the connection is then broken() for good), an error reply,
  ///         or a connection that is broken already.
  /// Allocates: may.
  reply_ptr command(const std::vector<std::string> &args) {
    if (broken()) {
      throw redis_error("lakh::redis: connection to " + target() +
                        " is broken (an earlier command failed); open a new one");
    }
    std::vector<const char *> argv;
    std::vector<std::size_t> argvlen;
    argv.reserve(args.size());
    argvlen.reserve(args.size());
    for (const auto &a : args) {
      argv.push_back(a.data());
      argvlen.push_back(a.size());
    }
    reply_ptr r(static_cast<redisReply *>(
        redisCommandArgv(ctx_.get(), static_cast<int>(argv.size()), argv.data(), argvlen.data())));
    std::string name = args.empty() ? std::string("command") : args[0];
    if (r == nullptr) {
      broken_ = true;
      throw redis_error("lakh::redis: " + name + " on " + target() + ": " +
                        (ctx_->err != 0 ? std::string(ctx_->errstr) : std::string("no reply")));
    }
    if (r->type == REDIS_REPLY_ERROR) {
      throw redis_error("lakh::redis: " + name + " on " + target() + ": " +
                        std::string(r->str, r->len));
    }
    return r;
  }

  /// True once an I/O error or timeout happened: the connection must not be reused.
  [[nodiscard]] bool broken() const noexcept { return broken_ || ctx_ == nullptr; }

  /// "host:port". Allocates: may.
  [[nodiscard]] std::string target() const { return opts_.host + ":" + std::to_string(opts_.port); }

  /// The raw context, for hiredis calls lakh does not wrap. Thread-safety: none.
  [[nodiscard]] redisContext *native_handle() const noexcept { return ctx_.get(); }

private:
  // AUTH [user] password; a refusal names the user and the server's reason, never the
  // password.
  void authenticate() {
    std::vector<std::string> args{"AUTH"};
    if (!opts_.user.empty()) {
      args.push_back(opts_.user);
    }
    args.push_back(opts_.password);
    try {
      (void)command(args);
    } catch (const redis_error &e) {
      const std::string who = opts_.user.empty() ? std::string("the default user") : opts_.user;
      const std::string what = e.what();
      const std::string prefix = "lakh::redis: AUTH on " + target() + ": ";
      throw redis_error("lakh::redis: cannot authenticate as " + who + " to " + target() + ": " +
                        (what.rfind(prefix, 0) == 0 ? what.substr(prefix.size()) : what));
    }
  }

  connection_options opts_;
  context_ptr ctx_;
  bool broken_ = false;
};

/// A small pool of connections to one server: acquire() hands out an exclusive lease (an
/// idle connection, or a new one), the lease returns it on destruction unless it broke.
/// Unbounded: it holds as many connections as were ever used at once.
///
/// Thread-safety: acquire() and lease destruction may run concurrently. Memory ordering:
/// returning a lease happens-before the acquire that receives the same connection (mutex).
/// Fairness: n/a (never waits). Members never block or allocate unless noted.
class connection_pool {
public:
  /// A pool for `opts`; connects lazily.
  explicit connection_pool(connection_options opts) : opts_(std::move(opts)) {}
  /// A pool for "redis://[[user]:password@]host:port[/db]".
  /// @throws std::invalid_argument for a bad URL.
  explicit connection_pool(std::string_view url) : opts_(parse_url(url)) {}

  /// An exclusive lease on a connection (RAII; returned to the pool unless broken).
  class [[nodiscard]] lease {
  public:
    lease(connection_pool *p, std::unique_ptr<connection> c) noexcept
        : pool_(p), conn_(std::move(c)) {}
    lease(lease &&) noexcept = default;
    lease &operator=(lease &&) = delete;
    lease(const lease &) = delete;
    lease &operator=(const lease &) = delete;
    ~lease() {
      if (pool_ != nullptr && conn_ != nullptr) {
        pool_->give_back(std::move(conn_));
      }
    }
    connection &operator*() const noexcept { return *conn_; }
    connection *operator->() const noexcept { return conn_.get(); }

  private:
    connection_pool *pool_;
    std::unique_ptr<connection> conn_;
  };

  /// Lease an idle connection or open a new one.
  /// Blocks: while a new connection is opened.
  /// @throws lakh::redis::redis_error if a new connection cannot be opened. Allocates: may.
  lease acquire() { return acquire(nullptr); }

  /// Run one command on a pooled connection. If it fails with an I/O error on a connection
  /// that had been idle in the pool (the server restarted or closed it meanwhile), the
  /// other idle connections are dropped too and the command is sent ONCE more on a new
  /// connection; so only send commands that are safe to repeat (GET, SET NX, fenced
  /// scripts). A failure on a fresh connection is not retried.
  /// Blocks: up to two connects and two command timeouts.
  /// @throws lakh::redis::redis_error as connection::command. Allocates: may.
  reply_ptr command(const std::vector<std::string> &args) {
    bool reused = false;
    {
      auto l = acquire(&reused);
      try {
        return l->command(args);
      } catch (const redis_error &) {
        if (!reused || !l->broken()) {
          throw;
        }
      }
    }
    drop_idle();
    auto fresh = acquire(nullptr);
    return fresh->command(args);
  }

  /// Close every idle connection (e.g. after the server restarted).
  void drop_idle() noexcept {
    std::vector<std::unique_ptr<connection>> idle;
    {
      std::lock_guard lock(m_);
      idle.swap(idle_);
    }
  }

  /// "host:port". Allocates: may.
  [[nodiscard]] std::string target() const { return opts_.host + ":" + std::to_string(opts_.port); }

private:
  lease acquire(bool *reused) {
    {
      std::lock_guard lock(m_);
      if (!idle_.empty()) {
        auto c = std::move(idle_.back());
        idle_.pop_back();
        if (reused != nullptr) {
          *reused = true;
        }
        return lease(this, std::move(c));
      }
    }
    return lease(this, std::make_unique<connection>(opts_));
  }

  void give_back(std::unique_ptr<connection> c) noexcept {
    if (c->broken()) {
      return; // closed by the unique_ptr
    }
    try {
      std::lock_guard lock(m_);
      idle_.push_back(std::move(c));
    } catch (...) {
    }
  }

  connection_options opts_;
  std::mutex m_;
  std::vector<std::unique_ptr<connection>> idle_; // guarded by m_
};

} // namespace lakh::redis
