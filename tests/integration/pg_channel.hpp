#pragma once
// TEMPORARY: a minimal bounded channel with lakh::channel's calls (send -> status,
// recv -> optional, close, closed), used by the pg COPY tests until lakh/channel.hpp lands.

#include <lakh/status.hpp>

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <optional>
#include <stop_token>

namespace lakh::test::pg {

template <class T> class channel {
public:
  explicit channel(std::size_t cap) : cap_(cap) {}
  lakh::status send(T v) {
    std::unique_lock l(m_);
    cv_.wait(l, [&] { return closed_ || q_.size() < cap_; });
    if (closed_) {
      return lakh::status::closed;
    }
    q_.push_back(std::move(v));
    cv_.notify_all();
    return lakh::status::ok;
  }
  std::optional<T> recv(std::stop_token st = {}) {
    std::unique_lock l(m_);
    if (!cv_.wait(l, st, [&] { return closed_ || !q_.empty(); }) || q_.empty()) {
      return std::nullopt;
    }
    T v = std::move(q_.front());
    q_.pop_front();
    cv_.notify_all();
    return v;
  }
  void close() {
    std::lock_guard l(m_);
    closed_ = true;
    cv_.notify_all();
  }
  bool closed() const {
    std::lock_guard l(m_);
    return closed_;
  }

private:
  mutable std::mutex m_;
  std::condition_variable_any cv_;
  std::deque<T> q_;
  std::size_t cap_;
  bool closed_ = false;
};

} // namespace lakh::test::pg
