#pragma once
// examples/saas/gateway/http_server.hpp: the gateway's HTTP/1.1 server, on Boost.Beast.
//   - One event loop per thread; each connection lives on one loop, so its reads, writes and
//     the start of its handler run on one thread without locks, and a request costs no thread
//     hand-off unless its handler makes one (a gRPC callback answers from gRPC's thread: the
//     answer is posted back to the connection's loop).
//   - Keep-alive; a connection that has no request in flight and sends none for `idle` (5 s)
//     is closed; a body over `max_body` is answered 413 and the connection closed.
//   - A client that goes away while its request is in flight cancels it: exchange::on_cancel
//     (the gateway cancels the downstream gRPC call).
//   - stop() drains: no new connections, idle ones closed, in-flight requests answered, then
//     run() returns.
//   - router: "GET /v1/users/{id}" patterns, where {id} is 1..18 digits.
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

namespace gateway::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

inline std::string_view sv(beast::string_view s) {
  return {s.data(), s.size()};
}

/// A request as the handler sees it.
struct request {
  bhttp::request<bhttp::string_body> msg;
  std::string remote_addr;       ///< the client's IP address
  std::string_view path;         ///< the target without its query
  std::string_view query;        ///< after '?', raw
  std::vector<std::int64_t> ids; ///< the {id} segments matched by the router
  std::string_view method() const { return sv(msg.method_string()); }
  const std::string &body() const { return msg.body(); }
  std::string_view header(bhttp::field f) const {
    auto it = msg.find(f);
    return it == msg.end() ? std::string_view() : sv(it->value());
  }
  std::string_view header(std::string_view name) const {
    auto it = msg.find(beast::string_view(name.data(), name.size()));
    return it == msg.end() ? std::string_view() : sv(it->value());
  }
  /// The raw value of query parameter `name`, if present.
  std::optional<std::string_view> query_param(std::string_view name) const {
    std::string_view q = query;
    while (!q.empty()) {
      const auto amp = q.find('&');
      const auto pair = q.substr(0, amp);
      const auto eq = pair.find('=');
      if (pair.substr(0, eq) == name) {
        return eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
      }
      q = amp == std::string_view::npos ? std::string_view() : q.substr(amp + 1);
    }
    return std::nullopt;
  }
};

/// An answer.
struct response {
  response(int s, std::string b, const char *type = "application/json")
      : status(s), body(std::move(b)), content_type(type) {}
  int status;
  std::string body;
  const char *content_type;
  std::vector<std::pair<const char *, std::string>> headers;
};

class session;

/// One request in flight: answer() once, from any thread.
class exchange {
public:
  exchange(std::shared_ptr<session> s, request r) : session_(std::move(s)), req(std::move(r)) {}
  exchange(const exchange &) = delete;
  exchange &operator=(const exchange &) = delete;

  void answer(response r);
  bool answered() const { return answered_.load(std::memory_order_relaxed); }

  /// Runs `f` when the client goes away before the answer (at once if it already has).
  void on_cancel(std::function<void()> f) {
    std::unique_lock lk(mu_);
    if (cancelled_) {
      lk.unlock();
      f();
      return;
    }
    on_cancel_ = std::move(f);
  }
  bool cancelled() const {
    std::lock_guard lk(mu_);
    return cancelled_;
  }
  void cancel() {
    std::function<void()> f;
    {
      std::lock_guard lk(mu_);
      cancelled_ = true;
      f = std::move(on_cancel_);
    }
    if (f) {
      f();
    }
  }

private:
  std::shared_ptr<session> session_;
  mutable std::mutex mu_;
  bool cancelled_ = false;
  std::function<void()> on_cancel_;
  std::atomic<bool> answered_{false};

public:
  request req;
};

using handler = std::function<void(const std::shared_ptr<exchange> &)>;

/// Routes by method and path pattern; {id} is a segment of 1..18 digits.
class router {
public:
  void add(std::string_view method, std::string_view pattern, handler h) {
    entry e{std::string(method), {}, std::move(h)};
    for (auto s : split(pattern)) {
      e.segments.emplace_back(s);
    }
    routes_.push_back(std::move(e));
  }

  /// The handler for `req` (its ids filled), or nullptr.
  const handler *find(request &req) const {
    const auto segments = split(req.path);
    for (const auto &r : routes_) {
      if (r.method != req.method() || r.segments.size() != segments.size()) {
        continue;
      }
      req.ids.clear();
      bool ok = true;
      for (std::size_t i = 0; ok && i < segments.size(); ++i) {
        if (r.segments[i] == "{id}") {
          std::int64_t n = 0;
          const auto s = segments[i];
          const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
          ok = !s.empty() && s.size() <= 18 && ec == std::errc() && end == s.data() + s.size() &&
               s.find_first_not_of("0123456789") == std::string_view::npos;
          req.ids.push_back(n);
        } else {
          ok = r.segments[i] == segments[i];
        }
      }
      if (ok) {
        return &r.h;
      }
    }
    return nullptr;
  }

private:
  struct entry {
    std::string method;
    std::vector<std::string> segments;
    handler h;
  };
  static std::vector<std::string_view> split(std::string_view p) {
    std::vector<std::string_view> out;
    while (!p.empty()) {
      p.remove_prefix(p.front() == '/' ? 1 : 0);
      const auto slash = p.find('/');
      out.push_back(p.substr(0, slash));
      p = slash == std::string_view::npos ? std::string_view() : p.substr(slash);
    }
    return out;
  }
  std::vector<entry> routes_;
};

class server;

/// One connection.
class session : public std::enable_shared_from_this<session> {
public:
  session(server &srv, tcp::socket sock, std::unordered_set<session *> &registry)
      : srv_(srv), sock_(std::move(sock)), registry_(&registry) {}
  void start();
  void close();
  void answer(response r);

private:
  void read();
  void on_header(beast::error_code ec);
  void on_read(beast::error_code ec);
  void watch(const std::weak_ptr<exchange> &ex);
  void write(bool keep_alive);
  void linger();

  server &srv_;
  tcp::socket sock_;
  std::unordered_set<session *> *registry_; // its loop's sessions
  std::string remote_;
  beast::flat_buffer buf_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  bhttp::response<bhttp::string_body> res_;
  bool busy_ = false;       // a request in flight, or its answer being written
  bool keep_alive_ = false; // the request in flight asked for it
  bool closed_ = false;
  std::chrono::steady_clock::time_point waiting_since_; // for the next request
  std::unique_ptr<char[]> scratch_;
  friend class server;
  friend class exchange;
};

class server {
public:
  /// `threads` event loops; bodies over `max_body` bytes are answered 413.
  server(router &routes, int threads, std::size_t max_body,
         std::chrono::milliseconds idle = std::chrono::seconds(5))
      : routes_(routes), max_body_(max_body), idle_(idle),
        loops_(static_cast<std::size_t>(threads < 1 ? 1 : threads)) {
    for (auto &l : loops_) {
      l = std::make_unique<loop>();
    }
  }

  /// Serves until stop() has drained. False when it cannot listen on host:port.
  bool run(const std::string &host, int port) {
    beast::error_code ec;
    auto &l0 = loops_[0]->io;
    acceptor_.emplace(l0);
    const tcp::endpoint at(asio::ip::make_address(host, ec), static_cast<unsigned short>(port));
    if (!ec) {
      acceptor_->open(at.protocol(), ec);
    }
    if (!ec) {
      acceptor_->set_option(asio::socket_base::reuse_address(true), ec);
      acceptor_->bind(at, ec);
    }
    if (!ec) {
      acceptor_->listen(asio::socket_base::max_listen_connections, ec);
    }
    if (ec) {
      return false;
    }
    accept();
    for (auto &l : loops_) {
      sweep(*l);
    }
    std::vector<std::thread> threads;
    for (std::size_t i = 1; i < loops_.size(); ++i) {
      threads.emplace_back([this, i] { loops_[i]->io.run(); });
    }
    loops_[0]->io.run();
    for (auto &t : threads) {
      t.join();
    }
    return true;
  }

  /// Drains (from any thread): no new connections, idle ones closed, in-flight requests
  /// answered and their connections closed; then run() returns.
  void stop() {
    draining_ = true;
    asio::post(loops_[0]->io, [this] {
      if (acceptor_) {
        beast::error_code ec;
        acceptor_->close(ec);
      }
    });
    for (auto &l : loops_) {
      asio::post(l->io, [this, lp = l.get()] {
        const std::vector<session *> all(lp->sessions.begin(), lp->sessions.end());
        for (auto *s : all) {
          if (!s->busy_) {
            s->close();
          }
        }
        maybe_done();
      });
    }
  }

  bool draining() const { return draining_; }

private:
  struct loop {
    asio::io_context io{1};
    asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(io);
    std::unordered_set<session *> sessions; // touched on this loop only
    asio::steady_timer sweeper{io};
  };

  /// Once a second: closes the loop's connections idle (or slow to send a request) for
  /// longer than `idle_`. One timer per loop rather than one per request.
  void sweep(loop &l) {
    l.sweeper.expires_after(std::chrono::seconds(1));
    l.sweeper.async_wait([this, &l](beast::error_code ec) {
      if (ec) {
        return;
      }
      const auto before = std::chrono::steady_clock::now() - idle_;
      const std::vector<session *> all(l.sessions.begin(), l.sessions.end());
      for (auto *s : all) {
        if (!s->busy_ && s->waiting_since_ < before) {
          s->close();
        }
      }
      sweep(l);
    });
  }

  void accept() {
    auto &target = loops_[next_++ % loops_.size()];
    acceptor_->async_accept(
        target->io, [this, lp = target.get()](beast::error_code ec, tcp::socket sock) {
          if (ec == asio::error::operation_aborted || !acceptor_->is_open()) {
            return;
          }
          if (!ec) {
            sessions_.fetch_add(1);
            auto s = std::make_shared<session>(*this, std::move(sock), lp->sessions);
            asio::post(lp->io, [s, lp] {
              lp->sessions.insert(s.get());
              s->start();
            });
          }
          accept();
        });
  }

  void session_ended(session *s) {
    s->registry_->erase(s);
    sessions_.fetch_sub(1);
    maybe_done();
  }

  void maybe_done() {
    if (draining_ && sessions_.load() == 0) {
      for (auto &l : loops_) {
        l->io.stop(); // thread-safe, unlike resetting the work guard
      }
    }
  }

  router &routes_;
  std::size_t max_body_;
  std::chrono::milliseconds idle_;
  std::vector<std::unique_ptr<loop>> loops_;
  std::optional<tcp::acceptor> acceptor_;
  std::size_t next_ = 0;
  std::atomic<int> sessions_{0};
  std::atomic<bool> draining_{false};
  friend class session;
};

inline void exchange::answer(response r) {
  answered_.store(true, std::memory_order_relaxed);
  auto s = session_;
  // Inline when called on the connection's loop (an answer from the route itself), else posted.
  asio::dispatch(s->sock_.get_executor(),
                 [s, r = std::move(r)]() mutable { s->answer(std::move(r)); });
}

inline void session::start() {
  beast::error_code ec;
  sock_.set_option(tcp::no_delay(true), ec);
  const auto peer = sock_.remote_endpoint(ec);
  remote_ = ec ? std::string() : peer.address().to_string();
  if (srv_.draining()) {
    close();
    return;
  }
  read();
}

inline void session::read() {
  waiting_since_ = std::chrono::steady_clock::now();
  parser_.emplace();
  parser_->body_limit(srv_.max_body_);
  bhttp::async_read_header(
      sock_, buf_, *parser_,
      [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_header(ec); });
}

/// The body, if any, after "100 Continue" when the client waits for it (curl does, for
/// bodies over 1 KiB).
inline void session::on_header(beast::error_code ec) {
  if (ec || parser_->is_done()) {
    on_read(ec);
    return;
  }
  auto read_body = [self = shared_from_this()](beast::error_code e, std::size_t) {
    if (e) {
      self->close();
      return;
    }
    bhttp::async_read(self->sock_, self->buf_, *self->parser_,
                      [self](beast::error_code e2, std::size_t) { self->on_read(e2); });
  };
  if (beast::iequals(parser_->get()[bhttp::field::expect], "100-continue")) {
    static constexpr std::string_view cont = "HTTP/1.1 100 Continue\r\n\r\n";
    asio::async_write(sock_, asio::buffer(cont.data(), cont.size()), std::move(read_body));
  } else {
    read_body({}, 0);
  }
}

inline void session::on_read(beast::error_code ec) {
  if (ec == bhttp::error::body_limit) {
    res_ = {};
    res_.result(413);
    res_.set(bhttp::field::content_type, "application/json");
    res_.body() = R"({"error":"the body is over 1 MiB"})";
    write(false);
    return;
  }
  if (ec) {
    close();
    return;
  }
  request req{parser_->release(), remote_, {}, {}, {}};
  const std::string_view target = sv(req.msg.target());
  const auto q = target.find('?');
  req.path = target.substr(0, q);
  req.query = q == std::string_view::npos ? std::string_view() : target.substr(q + 1);
  keep_alive_ = req.msg.keep_alive();
  busy_ = true;
  auto ex = std::make_shared<exchange>(shared_from_this(), std::move(req));
  if (const auto *h = srv_.routes_.find(ex->req)) {
    (*h)(ex);
  } else {
    ex->answer({404, R"({"error":"no such route"})"});
  }
  if (!ex->answered()) { // an answer already on its way needs no watch
    watch(ex);
  }
}

/// Waits for the socket to turn readable while a request is in flight: an end of stream or
/// an error means the client went away (pipelined bytes are left for the next read).
inline void session::watch(const std::weak_ptr<exchange> &ex) {
  sock_.async_wait(tcp::socket::wait_read, [self = shared_from_this(), ex](beast::error_code ec) {
    if (ec || !self->busy_) {
      return;
    }
    auto e = ex.lock();
    if (!e) {
      return;
    }
    char c = 0;
    const auto n = ::recv(self->sock_.native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
      e->cancel();
    } else if (n < 0) {
      self->watch(ex);
    }
  });
}

inline void session::answer(response r) {
  beast::error_code ec;
  sock_.cancel(ec); // the watch
  res_ = {};
  res_.result(static_cast<unsigned>(r.status));
  res_.version(11);
  res_.set(bhttp::field::content_type, r.content_type);
  for (auto &[k, v] : r.headers) {
    res_.set(k, std::move(v));
  }
  res_.body() = std::move(r.body);
  write(keep_alive_ && !srv_.draining());
}

inline void session::write(bool keep_alive) {
  res_.keep_alive(keep_alive);
  res_.prepare_payload();
  // Busy until the answer is written, so that a drain does not close it half-sent.
  bhttp::async_write(sock_, res_,
                     [self = shared_from_this(), keep_alive](beast::error_code ec, std::size_t) {
                       self->busy_ = false;
                       if (ec) {
                         self->close();
                       } else if (!keep_alive || self->srv_.draining()) {
                         self->linger();
                       } else {
                         self->read();
                       }
                     });
}

/// Closes after an answer that ends the connection: the send side first, then the bytes the
/// client may still be sending (a refused body) are read and dropped, so that closing does
/// not reset the connection before the client has read the answer.
inline void session::linger() {
  waiting_since_ = std::chrono::steady_clock::now();
  beast::error_code ec;
  sock_.shutdown(tcp::socket::shutdown_send, ec);
  if (ec) {
    close();
    return;
  }
  if (!scratch_) {
    scratch_ = std::make_unique<char[]>(65536);
  }
  auto timer = std::make_shared<asio::steady_timer>(sock_.get_executor());
  timer->expires_after(std::chrono::seconds(2));
  timer->async_wait([self = shared_from_this()](beast::error_code e) {
    if (!e) {
      self->close();
    }
  });
  struct drain {
    std::shared_ptr<session> self;
    std::shared_ptr<asio::steady_timer> timer;
    void operator()(beast::error_code e, std::size_t) {
      if (e) {
        timer->cancel();
        self->close();
        return;
      }
      self->sock_.async_read_some(asio::buffer(self->scratch_.get(), 65536), std::move(*this));
    }
  };
  drain{shared_from_this(), timer}({}, 0);
}

inline void session::close() {
  if (closed_) {
    return;
  }
  closed_ = true;
  beast::error_code ec;
  sock_.shutdown(tcp::socket::shutdown_both, ec);
  sock_.close(ec);
  srv_.session_ended(this);
}

} // namespace gateway::http
