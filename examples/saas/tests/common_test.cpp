// Unit tests of examples/saas/common: configuration and trace context.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "../common/config.hpp"
#include "../common/log.hpp"
#include "../common/trace.hpp"

#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <unistd.h>

namespace {

std::string write_env(const std::string &text) {
  const std::string path = "/tmp/saas_config_test_" + std::to_string(::getpid()) + ".env";
  std::ofstream(path) << text;
  return path;
}

} // namespace

TEST_CASE("config: .env values, quotes, comments; the environment wins") {
  const auto path = write_env("# a comment\n"
                              "SAAS_T_A=plain value # trailing comment\n"
                              "export SAAS_T_B=\"quoted # not a comment\"\n"
                              "SAAS_T_C='single'\n"
                              "SAAS_T_PORT=8080\n"
                              "SAAS_T_EMPTY=\n");
  ::setenv("SAAS_T_C", "from env", 1);
  const auto c = saas::config::load(path);
  CHECK(c.require("SAAS_T_A") == "plain value");
  CHECK(c.require("SAAS_T_B") == "quoted # not a comment");
  CHECK(c.require("SAAS_T_C") == "from env");
  CHECK(c.port("SAAS_T_PORT", 1) == 8080);
  CHECK(c.get("SAAS_T_EMPTY", "fallback") == "fallback");
  CHECK(c.get("SAAS_T_MISSING", "fb") == "fb");
  CHECK_THROWS_WITH_AS((void)c.require("SAAS_T_MISSING"),
                       "SAAS_T_MISSING is not set (environment or .env)", saas::config_error);
  ::unsetenv("SAAS_T_C");
  std::remove(path.c_str());
}

TEST_CASE("config: bad values and lines are errors that say where and what") {
  const auto path = write_env("SAAS_T_PORT=80x\nSAAS_T_BIG=70000\n");
  const auto c = saas::config::load(path);
  CHECK_THROWS_WITH_AS((void)c.port("SAAS_T_PORT", 1),
                       "SAAS_T_PORT=\"80x\" must be a whole number in 1..65535",
                       saas::config_error);
  CHECK_THROWS_WITH_AS((void)c.port("SAAS_T_BIG", 1),
                       "SAAS_T_BIG=\"70000\" must be a whole number in 1..65535",
                       saas::config_error);
  std::remove(path.c_str());
  const auto bad = write_env("OK=1\nno equals sign\n");
  CHECK_THROWS_WITH_AS((void)saas::config::load(bad),
                       (bad + ":2: expected KEY=VALUE, got \"no equals sign\"").c_str(),
                       saas::config_error);
  const auto quote = write_env("Q=\"open\n");
  CHECK_THROWS_WITH_AS((void)saas::config::load(quote),
                       (quote + ":1: Q: unterminated double quote").c_str(), saas::config_error);
  std::remove(bad.c_str());
  std::remove(quote.c_str());
  CHECK_NOTHROW((void)saas::config::load("/nonexistent/.env")); // no file: environment only
}

TEST_CASE("trace: parse, format, child, and the invalid forms of the W3C spec") {
  const std::string h = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  const auto t = saas::trace_context::parse(h);
  REQUIRE(t);
  CHECK(t->trace_id == "4bf92f3577b34da6a3ce929d0e0e4736");
  CHECK(t->parent_id == "00f067aa0ba902b7");
  CHECK(t->flags == 1);
  CHECK(t->header() == h);
  const auto c = t->child();
  CHECK(c.trace_id == t->trace_id);
  CHECK(c.parent_id != t->parent_id);
  CHECK(saas::trace_context::parse(c.header()));
  const auto r = saas::trace_context::root();
  CHECK(saas::trace_context::parse(r.header()));
  for (const char *bad : {"", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                          "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                          "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                          "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                          "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                          "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
                          "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}) {
    CAPTURE(bad);
    CHECK_FALSE(saas::trace_context::parse(bad));
  }
  // A future version may append fields after a '-'.
  CHECK(
      saas::trace_context::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future"));
}

namespace {

/// What `fn` writes to stderr (fd 2), one string.
template <class Fn> std::string stderr_of(Fn fn) {
  char path[] = "/tmp/saas_common_test_XXXXXX";
  const int fd = ::mkstemp(path);
  REQUIRE(fd >= 0);
  std::fflush(stderr);
  const int saved = ::dup(2);
  ::dup2(fd, 2);
  fn();
  std::fflush(stderr);
  ::dup2(saved, 2);
  ::close(saved);
  ::close(fd);
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ::unlink(path);
  return text;
}

} // namespace

TEST_CASE("log: a request's lines carry its trace and this hop's span; others neither") {
  const auto hop = saas::trace_context::root().child();
  const auto text = stderr_of([&] {
    saas::log("user", "info", hop, "GetUser failed", {{"code", 5}});
    saas::log("user", "info", "listening", {{"grpc", "127.0.0.1:1"}});
  });
  const auto nl = text.find('\n');
  REQUIRE(nl != std::string::npos);
  const auto first = saas::json::parse(text.substr(0, nl));
  const auto second = saas::json::parse(text.substr(nl + 1));
  CHECK(first["trace_id"] == hop.trace_id);
  CHECK(first["span_id"] == hop.parent_id);
  CHECK(first["msg"] == "GetUser failed");
  CHECK(first["code"] == 5);
  CHECK_FALSE(second.contains("trace_id"));
  CHECK_FALSE(second.contains("span_id"));
  CHECK(second["msg"] == "listening");
}
