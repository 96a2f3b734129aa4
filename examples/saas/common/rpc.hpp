#pragma once
// examples/saas/common/rpc.hpp: both ends of an internal gRPC call.
//   - Outgoing (call_context): a deadline, the caller's traceparent, the service token
//     (auth.hpp) and, for a call that changes something, the client's idempotency key and
//     request fingerprint as metadata ("idempotency-key", "idempotency-fingerprint").
//   - Incoming (rpc_server::run): the token is checked before the handler runs; latency and
//     errors are counted per method; an exception becomes UNAVAILABLE when a retry may cure
//     it (no database connection, a lock or statement timeout, a lost connection, an in-doubt
//     commit) and INTERNAL otherwise (a bug), with a generic message: what went wrong is
//     logged with the trace id, never sent to the caller.
//   - idempotent(): a handler's effect and the caller's idempotency key in ONE transaction of
//     the owning service (lakh::pg::idempotency_store::run_in), so a repeat of the call, after
//     a timeout or a crash anywhere, answers the original result instead of running again.

#include "auth.hpp"
#include "log.hpp"
#include "trace.hpp"

#include <lakh/idempotency.hpp>
#include <lakh/metrics.hpp>
#include <lakh/pg/idempotency_store.hpp>
#include <lakh/pg/retry.hpp>
#include <lakh/prometheus.hpp>
#include <lakh/worker_pool.hpp>

#include <absl/synchronization/mutex.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>

namespace saas {

/// The caller's idempotency key and request fingerprint, as propagated over a hop.
struct idempotency_ref {
  std::string key;
  std::uint64_t fingerprint = 0;
};

/// Called first in every process's main(): Debian builds Abseil without NDEBUG, so every
/// absl::Mutex operation in gRPC would feed a process-wide deadlock graph under one global lock
/// (a debugging aid, seen as GraphCycles in the profiles).
inline void quiet_abseil_mutexes() {
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
}

/// A channel to `addr` ("127.0.0.1:15051") that reconnects within a second of the service
/// coming back (gRPC's default backoff grows to two minutes).
inline std::shared_ptr<grpc::Channel> channel(const std::string &addr) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  return grpc::CreateCustomChannel(addr, grpc::InsecureChannelCredentials(), args);
}

/// A client call's context: deadline, trace, service token, and optionally the idempotency
/// key to propagate.
inline void prepare_call(grpc::ClientContext &ctx, const service_auth &auth, const trace_context &t,
                         std::chrono::milliseconds deadline,
                         const idempotency_ref *idem = nullptr) {
  ctx.set_deadline(std::chrono::system_clock::now() + deadline);
  ctx.AddMetadata("traceparent", t.header());
  auth.sign(ctx);
  if (idem != nullptr) {
    char fp[17];
    std::snprintf(fp, sizeof fp, "%016llx", static_cast<unsigned long long>(idem->fingerprint));
    ctx.AddMetadata("idempotency-key", idem->key);
    ctx.AddMetadata("idempotency-fingerprint", fp);
  }
}

/// The idempotency key and fingerprint of an incoming call, if it carries both (well-formed).
inline std::optional<idempotency_ref> idempotency_of(const grpc::ServerContextBase &ctx) {
  const auto &md = ctx.client_metadata();
  auto k = md.find("idempotency-key");
  auto f = md.find("idempotency-fingerprint");
  if (k == md.end() || f == md.end() || f->second.size() != 16) {
    return std::nullopt;
  }
  const std::string fp(f->second.data(), f->second.size());
  if (fp.find_first_not_of("0123456789abcdef") != std::string::npos) {
    return std::nullopt;
  }
  return idempotency_ref{std::string(k->second.data(), k->second.size()),
                         std::stoull(fp, nullptr, 16)};
}

/// The trace of an incoming call: a child of the caller's traceparent, or a new root.
inline trace_context trace_of(const grpc::ServerContextBase &ctx) {
  const auto &md = ctx.client_metadata();
  if (auto it = md.find("traceparent"); it != md.end()) {
    if (auto t = trace_context::parse(std::string_view(it->second.data(), it->second.size()))) {
      return t->child();
    }
  }
  return trace_context::root();
}

/// True when a retry of the failed operation may succeed: no connection from the pool, a lost
/// or broken connection, a deadlock, serialization failure, lock or statement timeout, an
/// in-doubt commit (its outcome is unknown: the caller must not treat it as "no effect").
inline bool transient(const std::exception &e) {
  if (dynamic_cast<const lakh::pg::acquire_error *>(&e) != nullptr) {
    return true;
  }
  const auto cause = lakh::pg::classify(e);
  return cause != lakh::pg::retry_cause::not_retryable;
}

/// Per-method handling of one service's incoming calls (see the header comment).
class rpc_server {
public:
  rpc_server(lakh::registry &r, std::string service, const service_auth &auth,
             std::initializer_list<const char *> methods)
      : service_(std::move(service)), auth_(&auth) {
    for (const char *m : methods) {
      auto &e = by_method_[m];
      e.latency = &r.make_histogram("saas_rpc_seconds", "gRPC handler latency",
                                    {{"service", service_}, {"method", m}});
      e.errors = &r.make_counter("saas_rpc_errors_total", "gRPC calls that did not return OK",
                                 {{"service", service_}, {"method", m}});
    }
  }

  /// Runs fn(trace) -> grpc::Status for `method` once the caller is authenticated.
  template <class Fn>
  grpc::Status run(const char *method, const grpc::ServerContextBase &ctx, Fn &&fn) {
    const auto t0 = std::chrono::steady_clock::now();
    const auto trace = trace_of(ctx);
    grpc::Status s;
    std::string detail;
    if (auth_->verify(ctx).empty()) {
      s = grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "the caller is not authenticated");
    } else {
      try {
        s = fn(trace);
      } catch (const std::exception &e) {
        detail = e.what();
        s = transient(e)
                ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "temporarily unavailable; retry")
                : grpc::Status(grpc::StatusCode::INTERNAL, "internal error");
      }
    }
    auto &e = by_method_.at(method);
    e.latency->record(std::chrono::steady_clock::now() - t0);
    if (!s.ok()) {
      e.errors->add();
      const bool bad = s.error_code() == grpc::StatusCode::UNAVAILABLE ||
                       s.error_code() == grpc::StatusCode::INTERNAL ||
                       s.error_code() == grpc::StatusCode::UNAUTHENTICATED;
      json fields = {{"code", static_cast<int>(s.error_code())}, {"answer", s.error_message()}};
      if (!detail.empty()) {
        fields["error"] = detail; // logged only: answers never carry internal error text
      }
      log(service_, bad ? "error" : "info", trace, std::string(method) + " failed",
          std::move(fields));
    }
    return s;
  }

  /// run() for a method served with gRPC's callback API (the generated
  /// WithCallbackMethod_<Method>): fn runs at once on the gRPC thread that delivered the call,
  /// and the call finishes with its status. gRPC runs callbacks on a few threads of its own
  /// (two on a 2-core machine), so fn must be short and bounded by the call's deadline (one
  /// tenant_read with ctx.deadline(): no retry loop, no lock wait, no outgoing gRPC call).
  /// Measured against the sync server on the read path: no thread hand-off per call, and no
  /// tail stalls (docs/architecture.md#load).
  template <class Fn>
  grpc::ServerUnaryReactor *run_inline(const char *method, grpc::CallbackServerContext &ctx,
                                       Fn &&fn) {
    auto *reactor = ctx.DefaultReactor();
    reactor->Finish(run(method, ctx, std::forward<Fn>(fn)));
    return reactor;
  }

  /// run() for a method served with gRPC's callback API whose handler may wait (a transaction
  /// with retries): fn runs on one of `workers`' threads, never on gRPC's, and the call
  /// finishes with its status there. A call whose deadline passed while it was queued answers
  /// DEADLINE_EXCEEDED without running fn; when the queue is full the call answers UNAVAILABLE
  /// at once. fn is moved into the task: capture the handler's arguments (ctx, request and
  /// response pointers) by value. gRPC's Shutdown waits for the calls the workers still hold.
  template <class Fn>
  grpc::ServerUnaryReactor *run_on(lakh::worker_pool &workers, const char *method,
                                   grpc::CallbackServerContext &ctx, Fn fn) {
    auto *reactor = ctx.DefaultReactor();
    const auto queued =
        workers.try_post([this, method, &ctx, reactor, fn = std::move(fn)]() mutable {
          reactor->Finish(run(method, ctx, [&](const trace_context &t) {
            if (ctx.deadline() <= std::chrono::system_clock::now()) {
              return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                                  "the deadline passed before the call started");
            }
            return fn(t);
          }));
        });
    if (queued != lakh::status::ok) {
      reactor->Finish(run(method, ctx, [](const trace_context &) {
        return grpc::Status(grpc::StatusCode::UNAVAILABLE, "temporarily unavailable; retry");
      }));
    }
    return reactor;
  }

private:
  struct entry {
    lakh::latency_histogram *latency = nullptr;
    lakh::counter *errors = nullptr;
  };
  std::string service_;
  const service_auth *auth_;
  std::map<std::string, entry, std::less<>> by_method_;
};

/// Thrown by an idempotent handler that refuses the request (validation, a conflict): the
/// transaction rolls back, so the key is not spent and nothing is recorded.
struct refusal {
  grpc::Status status;
};

/// Runs an idempotent handler: `in_tx(body)` runs body(tx) in the service's transaction (e.g.
/// saas::in_tenant with a retrier: tx is a pqxx::work; saas::in_tenant_batched: a
/// lakh::pg::batched_transaction) and returns what body returns; inside it, `fn(tx)` makes the
/// effect and fills `out` (or returns a non-OK status to refuse), and the
/// caller's key with `out` serialized is recorded by `keys` in the same transaction. A repeat
/// with the key answers the recorded `out` (initial metadata "idempotent-replayed: true"); the
/// key with another request is FAILED_PRECONDITION with trailing metadata
/// "idempotency-outcome: mismatch". A call without the key metadata is INVALID_ARGUMENT.
template <class Message, class InTx, class Fn>
grpc::Status idempotent(grpc::ServerContextBase &ctx, lakh::pg::idempotency_store &keys,
                        const std::string &scope, Message *out, InTx &&in_tx, Fn &&fn) {
  const auto ref = idempotency_of(ctx);
  if (!ref) {
    return {grpc::StatusCode::INVALID_ARGUMENT,
            "idempotency-key and idempotency-fingerprint metadata are required"};
  }
  try {
    lakh::validate_idempotency_key(ref->key, "idempotency-key");
  } catch (const std::invalid_argument &e) {
    return {grpc::StatusCode::INVALID_ARGUMENT, e.what()};
  }
  lakh::idempotency_result r;
  try {
    r = in_tx([&](auto &w) {
      out->Clear(); // a retried transaction starts over
      return keys.run_in(w, scope, ref->key, ref->fingerprint, [&](auto &) {
        if (auto s = fn(w); !s.ok()) {
          throw refusal{std::move(s)};
        }
        return lakh::stored_response{0, out->SerializeAsString()};
      });
    });
  } catch (const refusal &no) {
    return no.status;
  }
  switch (r.outcome) {
  case lakh::idempotency_outcome::executed:
    return grpc::Status::OK;
  case lakh::idempotency_outcome::replayed:
    out->Clear();
    if (!out->ParseFromString(r.response.body)) {
      throw std::runtime_error("a recorded response does not parse");
    }
    ctx.AddInitialMetadata("idempotent-replayed", "true");
    return grpc::Status::OK;
  case lakh::idempotency_outcome::mismatch:
    ctx.AddTrailingMetadata("idempotency-outcome", "mismatch");
    return {grpc::StatusCode::FAILED_PRECONDITION,
            "Idempotency-Key reused with a different request"};
  default:
    return {grpc::StatusCode::ABORTED,
            "a request with this Idempotency-Key is in progress; retry later"};
  }
}

} // namespace saas
