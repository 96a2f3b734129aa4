#pragma once
// lakh/detail/task_invoke.hpp: how lakh's executors (worker_pool, task_group) call a task.
//
// A task is callable either with its arguments alone or, as std::jthread does, with a
// std::stop_token in front of them; when it accepts a token, it receives the executor's.

#include <functional>
#include <stop_token>
#include <type_traits>
#include <utility>

namespace lakh::detail {

/// True when `F` (called as an rvalue) accepts `std::stop_token` before `Args`.
template <class F, class... Args>
inline constexpr bool takes_stop_token_v =
    std::is_invocable_v<std::decay_t<F>, std::stop_token, std::decay_t<Args>...>;

/// A task callable as `f(args...)` or `f(stop_token, args...)` on decayed copies.
template <class F, class... Args>
concept stoppable_invocable =
    std::is_invocable_v<std::decay_t<F>, std::decay_t<Args>...> || takes_stop_token_v<F, Args...>;

/// What the task returns, as `::type`; no `type` when `F` is not a task for `Args` (so that a
/// return type using it drops the overload, even on compilers that substitute the return
/// type before checking constraints, e.g. Clang 14).
template <class F, class... Args> struct task_result {};

template <class F, class... Args>
requires takes_stop_token_v<F, Args...>
struct task_result<F, Args...> {
  using type = std::invoke_result_t<std::decay_t<F>, std::stop_token, std::decay_t<Args>...>;
};

template <class F, class... Args>
requires(
    !takes_stop_token_v<F, Args...> &&
    std::is_invocable_v<std::decay_t<F>, std::decay_t<Args>...>) struct task_result<F, Args...> {
  using type = std::invoke_result_t<std::decay_t<F>, std::decay_t<Args>...>;
};

/// What the task returns.
template <class F, class... Args> using task_result_t = typename task_result<F, Args...>::type;

/// Calls `f`, passing `st` first when it accepts a token.
template <class Fn, class... As>
decltype(auto) invoke_task(Fn &&f, const std::stop_token &st, As &&...as) {
  if constexpr (std::is_invocable_v<Fn, std::stop_token, As...>) {
    return std::invoke(std::forward<Fn>(f), st, std::forward<As>(as)...);
  } else {
    return std::invoke(std::forward<Fn>(f), std::forward<As>(as)...);
  }
}

/// The executor (pool or group) whose worker the calling thread is, or null; used to turn a
/// self-deadlock (a task joining its own executor) into a lakh::usage_error.
inline thread_local const void *current_executor = nullptr;

} // namespace lakh::detail
