#pragma once
// lakh/lakh.hpp: the umbrella header for lakh's core (namespace lakh). It never includes
// libpqxx, hiredis or cnats; those adapters have their own umbrellas (lakh/pg.hpp, ...).
// The usage-row generator (lakh/fake/usage.hpp) is for tests, examples and benchmarks and
// is not included here.

#include <lakh/backoff.hpp>
#include <lakh/channel.hpp>
#include <lakh/error.hpp>
#include <lakh/idempotency.hpp>
#include <lakh/lock_all.hpp>
#include <lakh/lock_order.hpp>
#include <lakh/metrics.hpp>
#include <lakh/parallel_for_each.hpp>
#include <lakh/progress.hpp>
#include <lakh/prometheus.hpp>
#include <lakh/ranked_mutex.hpp>
#include <lakh/semaphore.hpp>
#include <lakh/status.hpp>
#include <lakh/task_group.hpp>
#include <lakh/thread_annotations.hpp>
#include <lakh/token_bucket.hpp>
#include <lakh/version.hpp>
#include <lakh/worker_pool.hpp>
