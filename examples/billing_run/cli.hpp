#pragma once
// examples/billing_run/cli.hpp: lakh_billing_run's command line. Five subcommands (load, work,
// relay, verify, run), each with its flags and their defaults; `<subcommand> --help` lists
// them, `--help-all` lists every flag of every subcommand.

#include "work.hpp"

#include <lakh/fake/usage.hpp>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <thread>

namespace billing_run {

/// Where the servers are (every subcommand), and where the outbox keeps its events.
struct common_opts {
  std::string database_url; ///< default: $DATABASE_URL
  std::string nats_url;     ///< default: $NATS_URL, else nats://127.0.0.1:4222
  /// --outbox-store of load, work, relay and run: "table" (rows, outbox_relay) or "wal"
  /// (logical messages, wal_relay from the slot that load or run creates).
  std::string outbox_store = "table";
  /// --stream-replicas of relay and run: copies of each event in a JetStream cluster; 0:
  /// unset (a new stream has the server's default, an existing one keeps its own).
  int stream_replicas = 0;

  [[nodiscard]] std::optional<int> replicas() const {
    return stream_replicas > 0 ? std::optional<int>(stream_replicas) : std::nullopt;
  }

  [[nodiscard]] lakh::pg::outbox_store store() const;
};

struct load_opts {
  std::uint64_t rows = 1'000'000;
  std::uint64_t seed = lakh::fake::default_seed;
  std::uint32_t batch = 100000;
  unsigned loaders = 2;
};

struct work_opts {
  unsigned lease_ms = 3000;
  std::string order = "sorted";
  bool until_idle = false;
  std::string stats_file; ///< statistics as JSON here at exit (else a line on stdout)

  /// What billing::work takes: the lease and the lock order converted.
  [[nodiscard]] billing::worker_options worker() const;
};

struct run_opts {
  std::uint64_t rows = 1'000'000;
  std::uint64_t seed = lakh::fake::default_seed;
  std::uint32_t batch = 100000;
  unsigned workers = std::max(1U, std::thread::hardware_concurrency());
  unsigned loaders = 2;
  std::string database = "lakh_billing";
  std::string order = "sorted";
  bool chaos = false;
  unsigned chaos_interval_ms = 1500;
  std::string services_script;
  unsigned lease_ms = 3000;
  unsigned timeout_s = 900;
  std::string json; ///< "": none; "-": stdout, instead of the text report; else a file
  bool quiet = false;
};

/// The parsed command line: parse with CLI11_PARSE(cl.app, argc, argv), then exactly one of
/// the subcommand pointers is set (operator bool).
struct command_line {
  CLI::App app;
  common_opts common;
  load_opts load;
  work_opts work;
  bool relay_until_done = false;
  bool verify_stream = false;
  run_opts run;
  CLI::App *load_cmd = nullptr;
  CLI::App *work_cmd = nullptr;
  CLI::App *relay_cmd = nullptr;
  CLI::App *verify_cmd = nullptr;
  CLI::App *run_cmd = nullptr;

  command_line(); ///< declares every subcommand and flag
  command_line(const command_line &) = delete;
  command_line &operator=(const command_line &) = delete;
};

/// The checks CLI11 cannot express, made after parsing: a database URL is given; for run, a
/// plain database name, and the servers of scripts/services with --chaos.
/// @throws CLI::ValidationError naming the flag.
void validate(const command_line &cl);

} // namespace billing_run
