// lakh_billing_run: 1,000,000 usage rows billed through PostgreSQL by several worker
// processes (SKIP LOCKED job queue with leases, per-tenant advisory locks in sorted order,
// invoices and invoice.issued events through the transactional outbox to NATS JetStream,
// counted once through an inbox), then verified against the spec's arithmetic.
// See docs/case-study.md and `lakh_billing_run --help-all`. The stages are billing.hpp's
// headers; cli, the subcommands, the supervisor of `run` and its report have a file each.
#include "cli.hpp"

#include "commands.hpp"
#include <cli_exit.hpp>

#include <child_process.hpp>
#include <stop_signals.hpp>

#include <cstdio>
#include <exception>
#include <stop_token>

int main(int argc, char **argv) {
  lakh_examples::die_with_parent(); // a worker dies with the `run` that started it
  std::stop_source stop;            // SIGINT and SIGTERM request stop
  lakh_examples::stop_on_signal(stop);
  billing_run::command_line cl;
  try {
    cl.app.parse(argc, argv);
  } catch (const CLI::ParseError &e) {
    return lakh_examples::cli_exit(cl.app, e);
  }
  try {
    billing_run::validate(cl);
    if (*cl.load_cmd) {
      return billing_run::cmd_load(cl.common, cl.load);
    }
    if (*cl.work_cmd) {
      return billing_run::cmd_work(cl.common, cl.work, stop.get_token());
    }
    if (*cl.relay_cmd) {
      return billing_run::cmd_relay(cl.common, cl.relay_until_done, stop.get_token());
    }
    if (*cl.verify_cmd) {
      return billing_run::cmd_verify(cl.common, cl.verify_stream);
    }
    return billing_run::cmd_run(cl.common, cl.run, stop.get_token());
  } catch (const CLI::Error &e) {
    return lakh_examples::cli_exit(cl.app, e);
  } catch (const std::exception &e) {
    std::fprintf(stderr, "billing_run: %s\n", e.what());
    return 1;
  }
}
