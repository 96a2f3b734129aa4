// Tests of rpc_server::run_on (common/rpc.hpp) over a real gRPC server on loopback: a handler
// on the callback API runs on a lakh::worker_pool; a full queue answers UNAVAILABLE at once,
// and a call whose deadline passed while it was queued never runs its handler.
#include "../common/rpc.hpp"

#include "saas.grpc.pb.h"

#include <lakh/metrics.hpp>
#include <lakh/worker_pool.hpp>

#include <doctest/doctest.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <thread>

namespace {

namespace v1 = lakh::saas::v1;
using namespace std::chrono_literals;

/// CreateUser runs on `workers` and waits for `gate` before it answers.
class gated_users final : public v1::UserService::CallbackService {
public:
  gated_users(lakh::registry &r, const saas::service_auth &auth, lakh::worker_pool &workers,
              std::shared_future<void> gate)
      : rpc_(r, "user", auth, {"CreateUser"}), workers_(&workers), gate_(std::move(gate)) {}

  grpc::ServerUnaryReactor *CreateUser(grpc::CallbackServerContext *ctx,
                                       const v1::CreateUserRequest *req, v1::User *out) override {
    latest_deadline.store(ctx->deadline().time_since_epoch().count());
    return rpc_.run_on(*workers_, "CreateUser", *ctx,
                       [this, req, out](const saas::trace_context &) {
                         ran.fetch_add(1);
                         gate_.wait();
                         out->set_email(req->email());
                         return grpc::Status::OK;
                       });
  }

  std::atomic<int> ran{0};
  /// The server's deadline of the latest call (system_clock ticks): the client's deadline,
  /// counted from when the server received the call.
  std::atomic<std::chrono::system_clock::rep> latest_deadline{0};

private:
  saas::rpc_server rpc_;
  lakh::worker_pool *workers_;
  std::shared_future<void> gate_;
};

/// An asynchronous CreateUser: its status arrives in the future.
struct call {
  grpc::ClientContext ctx;
  v1::CreateUserRequest req;
  v1::User out;
  std::promise<grpc::Status> done;
};

std::future<grpc::Status> start(v1::UserService::Stub &stub, const saas::service_auth &auth,
                                call &c, std::chrono::milliseconds deadline) {
  c.ctx.set_deadline(std::chrono::system_clock::now() + deadline);
  auth.sign(c.ctx);
  c.req.set_email("a@b.c");
  auto f = c.done.get_future();
  stub.async()->CreateUser(&c.ctx, &c.req, &c.out,
                           [&c](grpc::Status s) { c.done.set_value(std::move(s)); });
  return f;
}

} // namespace

TEST_CASE("saas.rpc.run_on_answers_a_full_queue_at_once_and_skips_expired_calls" *
          doctest::timeout(60)) {
  lakh::registry metrics;
  const saas::service_auth auth("test", std::string(40, 's'));
  lakh::worker_pool workers(1, 1); // one call running, one queued
  std::promise<void> open;
  gated_users svc(metrics, auth, workers, open.get_future().share());
  grpc::ServerBuilder b;
  int port = 0;
  b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  b.RegisterService(&svc);
  auto server = b.BuildAndStart();
  REQUIRE(server);
  REQUIRE(port > 0);
  auto stub = v1::UserService::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));

  call running, queued, refused;
  auto a = start(*stub, auth, running, 20s);
  for (int i = 0; i < 1000 && svc.ran.load() == 0; ++i) {
    std::this_thread::sleep_for(5ms);
  }
  REQUIRE(svc.ran.load() == 1); // the worker holds the first call
  auto b2 = start(*stub, auth, queued, 1500ms);
  for (int i = 0; i < 1000 && workers.pending() == 0; ++i) {
    std::this_thread::sleep_for(5ms);
  }
  REQUIRE(workers.pending() == 1); // the second call waits in the queue
  const std::chrono::system_clock::time_point queued_deadline(
      std::chrono::system_clock::duration(svc.latest_deadline.load()));
  auto c = start(*stub, auth, refused, 20s);
  // The queue is full: UNAVAILABLE while the first call still holds the only worker.
  REQUIRE(c.wait_for(5s) == std::future_status::ready);
  CHECK(c.get().error_code() == grpc::StatusCode::UNAVAILABLE);
  CHECK(a.wait_for(0s) == std::future_status::timeout);
  // The queued call's deadline passes before a worker is free: its handler never runs.
  CHECK(b2.get().error_code() == grpc::StatusCode::DEADLINE_EXCEEDED);
  std::this_thread::sleep_until(queued_deadline + 10ms); // past the server's deadline too
  open.set_value();
  const auto first = a.get();
  CHECK(first.ok());
  CHECK(running.out.email() == "a@b.c");
  workers.wait_idle();
  CHECK(svc.ran.load() == 1);
  server->Shutdown(std::chrono::system_clock::now() + 5s);
  workers.shutdown();
}
