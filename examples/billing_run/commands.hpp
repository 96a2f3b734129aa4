#pragma once
// examples/billing_run/commands.hpp: lakh_billing_run's subcommands, one function each
// (commands.cpp; run in run.cpp). Each returns main's exit status; `st` is stopped by SIGINT
// or SIGTERM.

#include "cli.hpp"

#include <stop_token>

namespace billing_run {

/// load: generate rows and COPY them in, one job per chunk (resumable).
int cmd_load(const common_opts &c, const load_opts &o);
/// work: one worker process, until stopped (or idle, with --until-idle).
int cmd_work(const common_opts &c, const work_opts &o, std::stop_token st);
/// relay: outbox -> JetStream and the counting consumer, until stopped (or done).
int cmd_relay(const common_opts &c, bool until_done, std::stop_token st);
/// verify: the spec's figures recomputed from the database; 1 on any difference.
int cmd_verify(const common_opts &c, bool stream);
/// run: a fresh database, load, N worker processes, relay, verify, and the report.
int cmd_run(const common_opts &c, const run_opts &o, std::stop_token st);

} // namespace billing_run
