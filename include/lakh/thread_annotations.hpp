#pragma once
// lakh/thread_annotations.hpp: Clang thread-safety annotation macros (LAKH_GUARDED_BY,
// LAKH_ACQUIRE, ...), no-ops on other compilers.
//
// Clang's -Wthread-safety checks at compile time that data marked LAKH_GUARDED_BY(mu) is only
// touched while `mu` is held, that functions marked LAKH_REQUIRES(mu) are only called with it
// held, and so on (https://clang.llvm.org/docs/ThreadSafetyAnalysis.html). The macros follow
// Abseil's absl/base/thread_annotations.h one for one with the LAKH_ prefix. lakh's own lock
// types (lakh::ranked_mutex, lakh::ranked_shared_mutex, lakh::lock_guard) are annotated, so
// the analysis understands them; libstdc++'s std::mutex and std::scoped_lock are NOT annotated
// (libc++'s are), so under Clang + libstdc++ use lakh::lock_guard for scoped locking that the
// analysis can follow. GCC ignores all of this: every macro expands to nothing. Guide, with
// an example: docs/lock_order.md ("Clang thread-safety annotations").

#if defined(__clang__)
#  define LAKH_DETAIL_THREAD_ANNOTATION(x) __attribute__((x))
#else
#  define LAKH_DETAIL_THREAD_ANNOTATION(x) // no-op: only Clang implements the analysis
#endif

/// The class is a capability (a lock); `x` names its kind in diagnostics, e.g. "mutex".
#define LAKH_CAPABILITY(x) LAKH_DETAIL_THREAD_ANNOTATION(capability(x))
/// The class is an RAII guard: acquires in its constructor, releases in its destructor.
#define LAKH_SCOPED_CAPABILITY LAKH_DETAIL_THREAD_ANNOTATION(scoped_lockable)
/// The data member may only be read or written while holding `x`.
#define LAKH_GUARDED_BY(x) LAKH_DETAIL_THREAD_ANNOTATION(guarded_by(x))
/// The data POINTED TO by this pointer member may only be accessed while holding `x`.
#define LAKH_PT_GUARDED_BY(x) LAKH_DETAIL_THREAD_ANNOTATION(pt_guarded_by(x))
/// This lock must be acquired after the listed ones (documentation for the analysis).
#define LAKH_ACQUIRED_AFTER(...) LAKH_DETAIL_THREAD_ANNOTATION(acquired_after(__VA_ARGS__))
/// This lock must be acquired before the listed ones (documentation for the analysis).
#define LAKH_ACQUIRED_BEFORE(...) LAKH_DETAIL_THREAD_ANNOTATION(acquired_before(__VA_ARGS__))
/// The caller must hold the listed capabilities exclusively.
#define LAKH_REQUIRES(...) LAKH_DETAIL_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
/// The caller must hold the listed capabilities at least shared.
#define LAKH_REQUIRES_SHARED(...)                                                                  \
  LAKH_DETAIL_THREAD_ANNOTATION(requires_shared_capability(__VA_ARGS__))
/// The function acquires the listed capabilities (or `this`) exclusively and does not release.
#define LAKH_ACQUIRE(...) LAKH_DETAIL_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
/// The function acquires the listed capabilities (or `this`) shared and does not release.
#define LAKH_ACQUIRE_SHARED(...)                                                                   \
  LAKH_DETAIL_THREAD_ANNOTATION(acquire_shared_capability(__VA_ARGS__))
/// The function releases the listed capabilities (or `this`), held exclusively.
#define LAKH_RELEASE(...) LAKH_DETAIL_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
/// The function releases the listed capabilities (or `this`), held shared.
#define LAKH_RELEASE_SHARED(...)                                                                   \
  LAKH_DETAIL_THREAD_ANNOTATION(release_shared_capability(__VA_ARGS__))
/// The function releases the listed capabilities however they are held (for RAII guards).
#define LAKH_RELEASE_GENERIC(...)                                                                  \
  LAKH_DETAIL_THREAD_ANNOTATION(release_generic_capability(__VA_ARGS__))
/// The function tries to acquire exclusively; the first argument is the success return value.
#define LAKH_TRY_ACQUIRE(...) LAKH_DETAIL_THREAD_ANNOTATION(try_acquire_capability(__VA_ARGS__))
/// The function tries to acquire shared; the first argument is the success return value.
#define LAKH_TRY_ACQUIRE_SHARED(...)                                                               \
  LAKH_DETAIL_THREAD_ANNOTATION(try_acquire_shared_capability(__VA_ARGS__))
/// The caller must NOT hold the listed capabilities (the function acquires them itself).
#define LAKH_EXCLUDES(...) LAKH_DETAIL_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
/// The function checks at run time that the capability is held (and fails otherwise).
#define LAKH_ASSERT_CAPABILITY(x) LAKH_DETAIL_THREAD_ANNOTATION(assert_capability(x))
/// The function checks at run time that the capability is held at least shared.
#define LAKH_ASSERT_SHARED_CAPABILITY(x) LAKH_DETAIL_THREAD_ANNOTATION(assert_shared_capability(x))
/// The function returns a reference to the named capability (for accessors).
#define LAKH_RETURN_CAPABILITY(x) LAKH_DETAIL_THREAD_ANNOTATION(lock_returned(x))
/// Turns the analysis off for one function (its body is trusted).
#define LAKH_NO_THREAD_SAFETY_ANALYSIS LAKH_DETAIL_THREAD_ANNOTATION(no_thread_safety_analysis)
