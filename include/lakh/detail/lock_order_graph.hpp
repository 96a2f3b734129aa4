#pragma once
// lakh/detail/lock_order_graph.hpp: the machinery behind lakh/lock_order.hpp: interned lock
// classes, the process-wide acquired-before graph, each thread's held-lock stack and its cache
// of edges already known, and the report text. Users include lakh/lock_order.hpp instead.
//
// Cost model. A lock CLASS (rank + name) is interned once, when a mutex or key is constructed.
// Acquiring a lock while the checker is on walks this thread's held stack (usually 0-2
// entries) and looks each (held class -> new class) edge up in a thread-local open-addressing
// set; only an edge this thread has never seen takes the global mutex, and only an edge nobody
// has seen runs the cycle search (a depth-first search of the class graph). Releasing removes
// the entry from the held stack, searching from the top, so non-LIFO release is fine.

#include <lakh/detail/source_location.hpp>
#include <lakh/error.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

// LAKH_DETAIL_TSAN: 1 when compiled with ThreadSanitizer (GCC or Clang), else 0.
#if defined(__SANITIZE_THREAD__)
#  define LAKH_DETAIL_TSAN 1
#elif defined(__has_feature)
#  if __has_feature(thread_sanitizer)
#    define LAKH_DETAIL_TSAN 1
#  endif
#endif
#if !defined(LAKH_DETAIL_TSAN)
#  define LAKH_DETAIL_TSAN 0
#endif
#if LAKH_DETAIL_TSAN
#  include <sanitizer/tsan_interface.h>
#endif

// The checker's default mode: report in debug builds, ignore in release builds and under
// ThreadSanitizer (which has its own lock-order detector, and whose build is slow enough).
// Override with -DLAKH_LOCK_ORDER_DEFAULT_MODE=ignore|report|abort|throw_error.
#if !defined(LAKH_LOCK_ORDER_DEFAULT_MODE) && LAKH_DETAIL_TSAN
#  define LAKH_LOCK_ORDER_DEFAULT_MODE ignore
#endif
#if !defined(LAKH_LOCK_ORDER_DEFAULT_MODE)
#  if defined(NDEBUG)
#    define LAKH_LOCK_ORDER_DEFAULT_MODE ignore
#  else
#    define LAKH_LOCK_ORDER_DEFAULT_MODE report
#  endif
#endif

namespace lakh {

/// A potential deadlock or lock misuse found by the lock-order checker in `throw_error` mode.
/// The message is the full report (the cycle with names, ranks and acquisition sites).
class lock_order_error : public usage_error {
public:
  using usage_error::usage_error;
};

namespace lock_order {

/// What the checker does when it finds a potential deadlock, a rank inversion or a recursive
/// acquisition.
enum class mode : std::uint8_t {
  ignore,      ///< track nothing, report nothing: the cost of a ranked_mutex is one std::mutex
  report,      ///< write the report to the sink (default std::cerr), count it, and carry on
  abort,       ///< write the report to the sink, then std::abort()
  throw_error, ///< count it and throw lakh::lock_order_error BEFORE acquiring (for tests)
};

} // namespace lock_order

namespace detail::lock_order {

using lakh::lock_order::mode;

/// One interned lock class. Never destroyed, so a pointer to it stays valid forever.
struct class_info {
  std::uint32_t id = 0;
  std::uint32_t rank = 0;
  std::string name;
};

/// An acquired-before edge `from -> to` with the sites that established it.
struct edge {
  std::uint32_t to = 0;
  source_location from_site; ///< where the held lock (`from`) had been acquired
  source_location to_site;   ///< where `to` was acquired while `from` was held
  std::uint64_t thread = 0;  ///< the checker's number for the thread that did it
};

/// The process-wide state. Leaked on purpose (never destroyed) so that locks used from static
/// destructors and exiting threads still find it.
struct registry {
  std::mutex mu;
  std::deque<class_info> classes;                                       // guarded by mu
  std::map<std::pair<std::uint32_t, std::string>, class_info *> by_key; // guarded by mu
  std::vector<std::vector<edge>> out;                                   // guarded by mu
  std::function<void(std::string_view)> sink;                           // guarded by mu
};

// The hot counters live outside the registry, constant-initialized, so the fast path reads
// them without the function-local static's initialization guard.
inline constinit std::atomic<mode> current{mode::LAKH_LOCK_ORDER_DEFAULT_MODE};
inline constinit std::atomic<std::uint64_t> generation{1}; // bumped by reset_for_testing
inline constinit std::atomic<std::uint64_t> reports{0};
inline constinit std::atomic<std::uint64_t> next_thread{1};

inline registry &global() {
  static registry *const r = new registry; // leaked: see registry
  return *r;
}

/// The checker's mode; relaxed, it is a configuration flag.
inline mode current_mode() noexcept {
  return current.load(std::memory_order_relaxed);
}

inline const class_info *intern(std::uint32_t rank, std::string_view name) {
  registry &r = global();
  const std::lock_guard g(r.mu);
  auto key = std::make_pair(rank, std::string(name));
  if (const auto it = r.by_key.find(key); it != r.by_key.end()) {
    return it->second;
  }
  class_info &c = r.classes.emplace_back();
  c.id = static_cast<std::uint32_t>(r.classes.size() - 1);
  c.rank = rank;
  c.name = std::move(key.second);
  r.by_key.emplace(std::make_pair(rank, c.name), &c);
  r.out.emplace_back();
  return &c;
}

/// A thread's cache of edges already in the global graph: 256 slots, probed 4 at a time,
/// evicting when full. Only an accelerator: a miss costs one look-up under the global mutex,
/// never a wrong verdict. Trivially destructible, so the thread_local needs no guard.
struct edge_cache {
  static constexpr std::size_t slots = 256;
  static constexpr std::size_t ways = 4;
  std::uint64_t keys[slots]; // 0 = empty; else ((from+1) << 32) | (to+1)
  std::uint64_t generation;  // the registry generation these keys belong to
  std::uint32_t next_victim; // round-robin eviction within a probe group

  static std::size_t group(std::uint64_t k) noexcept {
    return static_cast<std::size_t>((k * 0x9E3779B97F4A7C15ULL) >> 56) & (slots - ways);
  }
  bool contains(std::uint64_t k) const noexcept {
    const std::size_t g = group(k);
    for (std::size_t i = 0; i < ways; ++i) {
      if (keys[g + i] == k) {
        return true;
      }
    }
    return false;
  }
  void insert(std::uint64_t k) noexcept {
    const std::size_t g = group(k);
    for (std::size_t i = 0; i < ways; ++i) {
      if (keys[g + i] == 0 || keys[g + i] == k) {
        keys[g + i] = k;
        return;
      }
    }
    keys[g + (next_victim++ % ways)] = k;
  }
  void clear() noexcept {
    for (std::uint64_t &k : keys) {
      k = 0;
    }
  }
};

inline std::uint64_t edge_key(const class_info &from, const class_info &to) noexcept {
  return (std::uint64_t{from.id} + 1) << 32 | (std::uint64_t{to.id} + 1);
}

/// One lock this thread holds (or is blocked acquiring).
struct held_lock {
  const class_info *cls;
  const void *lock;
  source_location site;
};

/// How many nested locks a thread's stack tracks (Linux lockdep's MAX_LOCK_DEPTH). Locks
/// taken deeper than this are not tracked (no edges, not in is_held) and cost nothing more.
inline constexpr std::size_t max_held = 48;

/// Everything the checker keeps per thread: zero-initialized and trivially destructible, so
/// that reaching it is one thread-pointer-relative address, with no init guard.
struct thread_state {
  held_lock held[max_held];
  std::size_t depth;
  edge_cache known;
  std::uint64_t number; // 0 until the thread first appears in a report or an edge
};

inline thread_state &this_thread() noexcept {
  static constinit thread_local thread_state s{};
  return s;
}

/// A token unique to the calling thread among running threads (its state's address): cheaper
/// than std::this_thread::get_id(), which is a library call.
inline const void *thread_token() noexcept {
  return &this_thread();
}

inline std::uint64_t thread_number(thread_state &t) noexcept {
  if (t.number == 0) {
    t.number = next_thread.fetch_add(1, std::memory_order_relaxed);
  }
  return t.number;
}

inline std::string describe(const class_info &c) {
  return '"' + c.name + "\" (rank " + std::to_string(c.rank) + ')';
}

inline std::string describe(const source_location &s) {
  std::string out = s.file_name();
  out += ':';
  out += std::to_string(s.line());
  if (s.function_name()[0] != '\0') {
    out += " in ";
    out += s.function_name();
  }
  return out;
}

/// Writes a finished report to the sink, counts it, and aborts or throws as the mode says.
/// Called WITHOUT the registry mutex held (the sink may lock things).
inline void deliver(mode m, const std::string &text) {
  registry &r = global();
  reports.fetch_add(1, std::memory_order_relaxed);
  if (m == mode::throw_error) {
    throw lock_order_error(text);
  }
  std::function<void(std::string_view)> sink;
  {
    const std::lock_guard g(r.mu);
    sink = r.sink;
  }
  if (sink) {
    sink(text);
  } else {
    std::cerr << text << std::flush;
  }
  if (m == mode::abort) {
    std::abort();
  }
}

/// Breadth-first search for a SHORTEST path `from` ->...-> `target` (so a report shows the
/// tightest cycle); on success `path` holds its edges in order. Iterative: no recursion depth
/// to worry about however large the graph.
inline bool find_path(const registry &r, std::uint32_t from, std::uint32_t target,
                      std::vector<const edge *> &path) {
  if (from == target) {
    return true;
  }
  const std::size_t n = r.classes.size();
  std::vector<const edge *> via(n, nullptr); // the edge that first reached each class
  std::vector<std::uint32_t> parent(n, 0);
  std::vector<bool> seen(n, false);
  std::vector<std::uint32_t> queue{from};
  seen[from] = true;
  for (std::size_t qi = 0; qi < queue.size(); ++qi) {
    const std::uint32_t u = queue[qi];
    for (const edge &e : r.out[u]) {
      if (seen[e.to]) {
        continue;
      }
      seen[e.to] = true;
      via[e.to] = &e;
      parent[e.to] = u;
      if (e.to == target) {
        for (std::uint32_t v = target; v != from; v = parent[v]) {
          path.push_back(via[v]);
        }
        std::reverse(path.begin(), path.end());
        return true;
      }
      queue.push_back(e.to);
    }
  }
  return false;
}

inline std::string find_trouble(thread_state &t, const held_lock &h, const class_info &n,
                                const source_location &site, mode m);

/// Checks the new edge h -> n (not in this thread's cache) and records it, unless the mode
/// is throw_error and it is bad; then reports what it found. The slow path: out of line.
[[gnu::noinline, gnu::cold]] inline void check_new_edge(thread_state &t, const held_lock &h,
                                                        const class_info &n,
                                                        const source_location &site, mode m) {
  std::string text = find_trouble(t, h, n, site, m);
  if (!text.empty()) {
    deliver(m, text);
  }
}

/// Reports re-acquiring a lock this thread holds (a self-deadlock for a non-recursive lock).
[[gnu::noinline, gnu::cold]] inline void report_recursive(thread_state &t, const held_lock &h,
                                                          const class_info &n,
                                                          const source_location &site, mode m) {
  deliver(m, "lakh::lock_order: recursive acquisition: thread #" +
                 std::to_string(thread_number(t)) + " acquires " + describe(n) + " at " +
                 describe(site) + "\n  but already holds it, acquired at " + describe(h.site) +
                 " (this self-deadlocks a non-recursive lock)\n");
}

/// The edge check proper, under the registry mutex: returns the report text, empty when fine.
inline std::string find_trouble(thread_state &t, const held_lock &h, const class_info &n,
                                const source_location &site, mode m) {
  registry &r = global();
  std::string text;
  const std::lock_guard g(r.mu);
  auto &out = r.out[h.cls->id];
  const bool known =
      std::any_of(out.begin(), out.end(), [&](const edge &e) { return e.to == n.id; });
  if (!known) {
    const std::uint64_t me = thread_number(t);
    if (n.rank < h.cls->rank) {
      text += "lakh::lock_order: rank inversion: thread #" + std::to_string(me) + " acquires " +
              describe(n) + " at " + describe(site) + "\n  while holding " + describe(*h.cls) +
              ", acquired at " + describe(h.site) +
              ";\n  locks must be acquired in non-decreasing rank order.\n";
    }
    std::vector<const edge *> path;
    if (find_path(r, n.id, h.cls->id, path)) {
      text += "lakh::lock_order: potential deadlock: lock-order cycle " + describe(*h.cls);
      text += " -> " + describe(n);
      for (const edge *e : path) {
        text += " -> " + describe(r.classes[e->to]);
      }
      text += "\n  now: thread #" + std::to_string(me) + " acquires " + describe(n) + " at " +
              describe(site) + "\n       while holding " + describe(*h.cls) + ", acquired at " +
              describe(h.site) + '\n';
      std::uint32_t from = n.id;
      for (const edge *e : path) {
        text += "  earlier: thread #" + std::to_string(e->thread) + " acquired " +
                describe(r.classes[e->to]) + " at " + describe(e->to_site) +
                "\n       while holding " + describe(r.classes[from]) + ", acquired at " +
                describe(e->from_site) + '\n';
        from = e->to;
      }
      text += "  (the two orders need not have overlapped in time: this is a deadlock waiting "
              "for the wrong interleaving)\n";
    }
    if (!text.empty() && m == mode::throw_error) {
      return text; // the caller throws before acquiring, so the edge did not happen
    }
    out.push_back(edge{n.id, h.site, site, me});
  }
  t.known.insert(edge_key(*h.cls, n));
  return text;
}

inline void push_held(thread_state &t, const class_info &n, const void *lock,
                      const source_location &site) noexcept {
  if (t.depth < max_held) {
    t.held[t.depth++] = held_lock{&n, lock, site};
  } // else: too deep, not tracked (release() will not find it, which is fine)
}

/// The checker's part of a blocking acquisition, called BEFORE blocking: checks every
/// (held -> n) edge, then pushes `lock` on this thread's held stack.
inline void before_lock(const class_info &n, const void *lock, const source_location &site,
                        mode m) {
  thread_state &t = this_thread();
  if (t.depth != 0) {
    const std::uint64_t gen = generation.load(std::memory_order_acquire);
    if (t.known.generation != gen) {
      t.known.clear();
      t.known.generation = gen;
    }
    for (std::size_t i = 0; i < t.depth; ++i) {
      const held_lock &h = t.held[i];
      if (h.cls == &n) {
        if (h.lock == lock) {
          report_recursive(t, h, n, site, m);
        }
        continue; // instances of one class are ordered by lock_all, not by the checker
      }
      if (!t.known.contains(edge_key(*h.cls, n))) {
        check_new_edge(t, h, n, site, m);
      }
    }
  }
  push_held(t, n, lock, site);
}

/// Records a lock acquired without blocking (try_lock): no edges are checked, since a try
/// cannot deadlock, but later acquisitions while it is held are checked against it.
inline void after_try_lock(const class_info &n, const void *lock,
                           const source_location &site) noexcept {
  push_held(this_thread(), n, lock, site);
}

/// Removes `lock` from this thread's held stack (the most recent entry, any position).
/// Returns false when it was not there.
inline bool release(const void *lock) noexcept {
  thread_state &t = this_thread();
  for (std::size_t i = t.depth; i-- > 0;) {
    if (t.held[i].lock == lock) {
      for (std::size_t j = i + 1; j < t.depth; ++j) {
        t.held[j - 1] = t.held[j];
      }
      --t.depth;
      return true;
    }
  }
  return false;
}

/// Tells ThreadSanitizer that the std::mutex at `m` is gone. libstdc++'s std::mutex has a
/// trivial destructor (no pthread_mutex_destroy), so TSan's own lock-order detector, which
/// is keyed by address, would otherwise join a dead mutex and a new one at the same address
/// into false cycles. A no-op without TSan.
inline void forget_mutex_for_tsan([[maybe_unused]] void *m) noexcept {
#if LAKH_DETAIL_TSAN
  __tsan_mutex_destroy(m, 0);
#endif
}

/// True when `lock` is on this thread's held stack.
inline bool holds(const void *lock) noexcept {
  const thread_state &t = this_thread();
  return std::any_of(t.held, t.held + t.depth,
                     [lock](const held_lock &h) { return h.lock == lock; });
}

} // namespace detail::lock_order
} // namespace lakh
