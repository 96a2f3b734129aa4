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

template <class F, class... Args> auto task_result_helper() {
  if constexpr (takes_stop_token_v<F, Args...>) {
    return std::type_identity<
        std::invoke_result_t<std::decay_t<F>, std::stop_token, std::decay_t<Args>...>>{};
  } else {
    return std::type_identity<std::invoke_result_t<std::decay_t<F>, std::decay_t<Args>...>>{};
  }
}

/// What the task returns.
template <class F, class... Args>
using task_result_t = typename decltype(task_result_helper<F, Args...>())::type;

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
