#pragma once
// lakh/pg.hpp: the umbrella header for lakh::pg, lakh's PostgreSQL layer over libpqxx
// (6.4 and 7.x): connections with clear errors, a bounded pool, transaction retry with
// backoff and a budget, advisory locks in lakh's lock order, COPY from a channel, an
// idempotency store committed with the business writes, a SKIP LOCKED job queue, and the
// transactional outbox with its relay (and relay thread) and the consumer-side inbox;
// register_metrics() exposes their figures in a lakh::registry.
// Link the CMake target lakh::pg. The core umbrella (lakh/lakh.hpp) never includes this.

#include <lakh/pg/advisory_lock.hpp>
#include <lakh/pg/array.hpp>
#include <lakh/pg/batched_transaction.hpp>
#include <lakh/pg/connection.hpp>
#include <lakh/pg/conninfo.hpp>
#include <lakh/pg/copy.hpp>
#include <lakh/pg/idempotency_store.hpp>
#include <lakh/pg/inbox.hpp>
#include <lakh/pg/job_queue.hpp>
#include <lakh/pg/job_worker.hpp>
#include <lakh/pg/metrics.hpp>
#include <lakh/pg/outbox.hpp>
#include <lakh/pg/outbox_relay.hpp>
#include <lakh/pg/pool.hpp>
#include <lakh/pg/retry.hpp>
