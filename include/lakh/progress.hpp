#pragma once
// lakh/progress.hpp: progress_line, the percent, rate and ETA of a long run (a
// lakh::throughput_meter), redrawn in place on a terminal or printed every few seconds into a
// log, by a thread of its own. docs/metrics.md.

#include <lakh/metrics.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <mutex>
#include <stop_token>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>

#if defined(_WIN32)
#  include <io.h>
#else
#  include <unistd.h>
#endif

namespace lakh {

/// Where and how often progress_line prints.
struct progress_options {
  std::FILE *out = stderr;                      ///< where to print (not closed by lakh)
  std::chrono::milliseconds tty_interval{200};  ///< redraw period on a terminal (> 0)
  std::chrono::milliseconds log_interval{2000}; ///< line period otherwise (> 0)
  int force_tty = -1; ///< -1: isatty(fileno(out)); 0: print lines; 1: redraw in place
};

namespace detail {

inline bool is_terminal(std::FILE *f) noexcept {
#if defined(_WIN32)
  return ::_isatty(::_fileno(f)) != 0;
#else
  return ::isatty(::fileno(f)) == 1;
#endif
}

// "12.3M/s", "2.5k/s", "100/s".
inline std::string si_rate(double per_second) {
  std::array<char, 32> buf{};
  if (per_second >= 1e9) {
    std::snprintf(buf.data(), buf.size(), "%.1fG/s", per_second / 1e9);
  } else if (per_second >= 1e6) {
    std::snprintf(buf.data(), buf.size(), "%.1fM/s", per_second / 1e6);
  } else if (per_second >= 1e3) {
    std::snprintf(buf.data(), buf.size(), "%.1fk/s", per_second / 1e3);
  } else {
    std::snprintf(buf.data(), buf.size(), "%.0f/s", per_second);
  }
  return buf.data();
}

// "0.1s", "59.9s", "1m05s", "2h03m".
inline std::string short_duration(double seconds) {
  std::array<char, 48> buf{};
  if (seconds < 59.95) {
    std::snprintf(buf.data(), buf.size(), "%.1fs", seconds);
  } else if (seconds < 3600.0) {
    const auto s = static_cast<long long>(seconds + 0.5);
    std::snprintf(buf.data(), buf.size(), "%lldm%02llds", s / 60, s % 60);
  } else {
    const auto m = static_cast<long long>(std::min(seconds, 1e15) / 60.0 + 0.5);
    std::snprintf(buf.data(), buf.size(), "%lldh%02lldm", m / 60, m % 60);
  }
  return buf.data();
}

} // namespace detail

/// One progress text, without "\r" or newline: "rows 45.2% 452000/1000000 12.3M/s ETA 0.0s".
/// With total 0 (unknown) no percent and no ETA: "rows 452000 12.3M/s". The ETA is
/// (total - done) / per_second, written "4.2s", "1m05s" or "2h03m", and omitted while the
/// rate is 0; done beyond total shows 100.0% and ETA 0.0s.
/// Thread-safety: safe (pure).
/// Blocks: never.
/// @throws std::bad_alloc if the string cannot be allocated.
/// Allocates: the string.
[[nodiscard]] inline std::string format_progress(std::string_view label, std::uint64_t done,
                                                 std::uint64_t total, double per_second) {
  std::string out(label);
  std::array<char, 96> buf{};
  if (total == 0) {
    std::snprintf(buf.data(), buf.size(), " %llu %s", static_cast<unsigned long long>(done),
                  detail::si_rate(per_second).c_str());
    return out + buf.data();
  }
  const double pct =
      100.0 * static_cast<double>(std::min(done, total)) / static_cast<double>(total);
  std::snprintf(buf.data(), buf.size(), " %.1f%% %llu/%llu %s", pct,
                static_cast<unsigned long long>(done), static_cast<unsigned long long>(total),
                detail::si_rate(per_second).c_str());
  out += buf.data();
  if (per_second > 0) {
    out += " ETA ";
    out += detail::short_duration(static_cast<double>(total - std::min(done, total)) / per_second);
  }
  return out;
}

/// Prints the progress of a long run from a background std::jthread: on a terminal one line
/// redrawn in place ("\r<text>\x1b[K") every tty_interval; otherwise (a log, a pipe, CI) one
/// full line every log_interval; always a last line at finish() (ending the redrawn line
/// with a newline on a terminal). The rate is the average since construction.
///
/// Memory ordering: `done` is called on the printing thread; it must read thread-safe state
/// (a lakh::counter, an atomic). finish() joins that thread, so everything it did
/// happens-before finish() returns.
class progress_line {
public:
  /// Starts the printing thread; the first line comes one interval later.
  /// Thread-safety: constructs a new object.
  /// Blocks: never.
  /// @throws std::invalid_argument if done is empty, o.out is null or the interval in use is
  /// not positive; std::system_error if the thread cannot start.
  /// Allocates: the label, done's target and the thread.
  progress_line(std::string label, std::uint64_t total, std::function<std::uint64_t()> done,
                progress_options o = {})
      : label_(std::move(label)), total_(total), done_(std::move(done)), opts_(o),
        start_(std::chrono::steady_clock::now()) {
    if (!done_) {
      throw std::invalid_argument("lakh::progress_line: done (for '" + label_ +
                                  "') is an empty std::function");
    }
    if (opts_.out == nullptr) {
      throw std::invalid_argument("lakh::progress_line: options.out (for '" + label_ +
                                  "') is null");
    }
    tty_ = opts_.force_tty >= 0 ? opts_.force_tty == 1 : detail::is_terminal(opts_.out);
    const auto period = tty_ ? opts_.tty_interval : opts_.log_interval;
    if (period.count() <= 0) {
      throw std::invalid_argument(
          "lakh::progress_line: " + std::string(tty_ ? "tty_interval" : "log_interval") + " (" +
          std::to_string(period.count()) + "ms) is not positive");
    }
    thread_ = std::jthread([this, period](std::stop_token st) { loop(st, period); });
  }

  progress_line(const progress_line &) = delete;
  progress_line &operator=(const progress_line &) = delete;

  /// finish(), swallowing any exception (an exception from `done` is lost here: call
  /// finish() yourself to see it).
  /// Thread-safety: not concurrently with other calls on this object.
  /// Blocks: until the printing thread has stopped.
  /// Allocates: may (the final line).
  ~progress_line() {
    try {
      finish();
    } catch (...) { // NOLINT(bugprone-empty-catch): a destructor must not throw
    }
  }

  /// Stops the thread and prints the final line (100% if done() reached total, else where
  /// it stopped); later calls do nothing.
  /// Thread-safety: safe; concurrent calls print the final line once.
  /// Blocks: until the printing thread has stopped (at most one `done` call and one print).
  /// @throws whatever `done` threw, on the printing thread or now (then nothing more is
  /// printed).
  /// Allocates: may (the final line).
  void finish() {
    std::lock_guard lock(finish_mu_);
    if (finished_) {
      return;
    }
    finished_ = true;
    thread_.request_stop();
    if (thread_.joinable()) {
      thread_.join();
    }
    if (error_) {
      std::rethrow_exception(error_);
    }
    print(true);
  }

private:
  void loop(const std::stop_token &st, std::chrono::milliseconds period) {
    std::mutex m;
    std::condition_variable_any cv;
    std::unique_lock lk(m);
    for (;;) {
      // Returns the predicate's value (false) both on timeout and on stop: ask which.
      (void)cv.wait_for(lk, st, period, [] { return false; });
      if (st.stop_requested()) {
        return;
      }
      try {
        print(false);
      } catch (...) {
        error_ = std::current_exception(); // read by finish() after join()
        return;
      }
    }
  }

  void print(bool last) {
    const std::uint64_t done = done_();
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const std::string text =
        format_progress(label_, done, total_, s > 0 ? static_cast<double>(done) / s : 0.0);
    if (tty_) {
      std::fprintf(opts_.out, "\r%s\x1b[K%s", text.c_str(), last ? "\n" : "");
    } else {
      std::fprintf(opts_.out, "%s\n", text.c_str());
    }
    std::fflush(opts_.out);
  }

  std::string label_;
  std::uint64_t total_;
  std::function<std::uint64_t()> done_;
  progress_options opts_;
  std::chrono::steady_clock::time_point start_;
  bool tty_ = false;
  std::exception_ptr error_; // set by the printing thread before it ends
  std::mutex finish_mu_;
  bool finished_ = false;
  std::jthread thread_; // last: started after, and joined before, the members it reads
};

} // namespace lakh
