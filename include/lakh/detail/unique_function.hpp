#pragma once
// lakh/detail/unique_function.hpp: a move-only, type-erased callable, the part of C++23's
// std::move_only_function that lakh needs (libstdc++ 12 lacks it).
//
// Differences from std::function: it holds move-only callables (std::promise, std::unique_ptr,
// std::packaged_task captures), it is never copyable, and calling an empty one is undefined
// (asserted in debug builds) rather than throwing std::bad_function_call. Callables that fit
// in 48 bytes and are nothrow-move-constructible are stored inline (no allocation); larger
// ones are allocated with operator new. Queues of tasks in lakh (worker_pool, task_group) use
// it so that an enqueued task costs one slot and, usually, no allocation of its own.

#include <cassert>
#include <cstddef>
#include <functional>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

namespace lakh::detail {

template <class Signature> class unique_function;

/// A move-only `R(Args...)` callable; see the header comment. A value with one owner: no
/// member needs thread-safety, and none blocks or allocates unless noted.
template <class R, class... Args> class unique_function<R(Args...)> {
public:
  /// Bytes of inline storage: callables up to this size (and nothrow-movable) never allocate.
  static constexpr std::size_t inline_size = 48;

  /// An empty function.
  unique_function() noexcept = default;
  /// An empty function.
  unique_function(std::nullptr_t) noexcept {} // NOLINT(google-explicit-constructor)

  /// Wraps `f` (decay-copied or moved in).
  /// @throws std::bad_alloc if `f` does not fit inline and allocation fails; whatever
  /// moving `f` throws.
  /// Allocates: only when `f` is larger than `inline_size` or may throw on move.
  template <class F, class D = std::decay_t<F>>
  requires(!std::is_same_v<D, unique_function> && std::is_invocable_r_v<R, D &, Args...>)
      unique_function(
          F &&f) // NOLINT(google-explicit-constructor,bugprone-forwarding-reference-overload)
  {
    if constexpr (stored_inline<D>) {
      ::new (static_cast<void *>(buf_)) D(std::forward<F>(f));
      vt_ = &inline_vtable<D>;
    } else {
      D *heap = new D(std::forward<F>(f));
      ::new (static_cast<void *>(buf_)) D *(heap);
      vt_ = &heap_vtable<D>;
    }
  }

  /// Takes `other`'s callable; `other` becomes empty.
  unique_function(unique_function &&other) noexcept : vt_(other.vt_) {
    if (vt_ != nullptr) {
      vt_->relocate(other.buf_, buf_);
      other.vt_ = nullptr;
    }
  }

  /// Destroys the held callable (if any) and takes `other`'s.
  unique_function &operator=(unique_function &&other) noexcept {
    if (this != &other) {
      reset();
      if (other.vt_ != nullptr) {
        other.vt_->relocate(other.buf_, buf_);
        vt_ = other.vt_;
        other.vt_ = nullptr;
      }
    }
    return *this;
  }

  /// Destroys the held callable; *this becomes empty.
  unique_function &operator=(std::nullptr_t) noexcept {
    reset();
    return *this;
  }

  unique_function(const unique_function &) = delete;
  unique_function &operator=(const unique_function &) = delete;

  ~unique_function() { reset(); }

  /// True when a callable is held.
  explicit operator bool() const noexcept { return vt_ != nullptr; }

  /// Calls the held callable (undefined when empty).
  /// Thread-safety: as the callable's. Blocks: as the callable does.
  /// @throws whatever the callable throws. Allocates: as the callable does.
  R operator()(Args... args) {
    assert(vt_ != nullptr && "lakh::detail::unique_function: call of an empty function");
    return vt_->invoke(buf_, std::forward<Args>(args)...);
  }

private:
  struct vtable {
    R (*invoke)(std::byte *, Args &&...);
    void (*relocate)(std::byte *from, std::byte *to) noexcept; // move-construct, destroy source
    void (*destroy)(std::byte *) noexcept;
  };

  template <class D>
  static constexpr bool stored_inline =
      sizeof(D) <= inline_size &&
      alignof(D) <= alignof(std::max_align_t) && std::is_nothrow_move_constructible_v<D>;

  template <class D> static D *inline_ptr(std::byte *p) noexcept {
    return std::launder(reinterpret_cast<D *>(p)); // NOLINT: the object lives in buf_
  }
  template <class D> static D *&heap_ptr(std::byte *p) noexcept {
    return *std::launder(reinterpret_cast<D **>(p)); // NOLINT: the pointer lives in buf_
  }

  template <class D>
  static constexpr vtable inline_vtable{[](std::byte *p, Args &&...as) -> R {
                                          return std::invoke(*inline_ptr<D>(p),
                                                             std::forward<Args>(as)...);
                                        },
                                        [](std::byte *from, std::byte *to) noexcept {
                                          D *src = inline_ptr<D>(from);
                                          ::new (static_cast<void *>(to)) D(std::move(*src));
                                          src->~D();
                                        },
                                        [](std::byte *p) noexcept { inline_ptr<D>(p)->~D(); }};

  template <class D>
  static constexpr vtable heap_vtable{[](std::byte *p, Args &&...as) -> R {
                                        return std::invoke(*heap_ptr<D>(p),
                                                           std::forward<Args>(as)...);
                                      },
                                      [](std::byte *from, std::byte *to) noexcept {
                                        ::new (static_cast<void *>(to)) D *(heap_ptr<D>(from));
                                      },
                                      [](std::byte *p) noexcept { delete heap_ptr<D>(p); }};

  void reset() noexcept {
    if (vt_ != nullptr) {
      const vtable *vt = std::exchange(vt_, nullptr);
      vt->destroy(buf_);
    }
  }

  alignas(std::max_align_t) std::byte buf_[inline_size];
  const vtable *vt_ = nullptr;
};

} // namespace lakh::detail
