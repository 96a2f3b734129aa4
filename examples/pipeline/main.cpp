// lakh_pipeline: 1,000,000 ("10 lakh") usage rows of spec v1 generated, streamed through a
// bounded lakh::channel to a lakh::worker_pool and aggregated per tenant, with figures.
//
//   lakh_pipeline                      # 1M rows, seed 42, one generator and worker per core
//   lakh_pipeline --rows 100000 --verify --json
//
// Exit status: 0 done (and verified, with --verify); 1 a verification difference or a
// failed run; 2 bad flags.
#include "pipeline.hpp"

#include <cli_exit.hpp>

#include <lakh/lock_order.hpp>
#include <lakh/version.hpp>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <sys/resource.h>
#include <unistd.h>

namespace {

double ms(std::chrono::nanoseconds d) {
  return std::chrono::duration<double, std::milli>(d).count();
}
double us(std::chrono::nanoseconds d) {
  return std::chrono::duration<double, std::micro>(d).count();
}

/// CPU time of the whole process so far (all threads, user + system, the loader's included).
std::chrono::nanoseconds process_cpu() {
  rusage u{};
  (void)::getrusage(RUSAGE_SELF, &u);
  const auto tv = [](const timeval &t) {
    return std::chrono::seconds(t.tv_sec) + std::chrono::microseconds(t.tv_usec);
  };
  return tv(u.ru_utime) + tv(u.ru_stime);
}

struct verdict {
  bool checked = false;
  bool equal = true;
  std::string detail;
};

verdict verify(const pipeline::config &cfg, const lakh::fake::usage_totals &got) {
  const auto want = lakh::fake::reference_totals(cfg.seed, cfg.rows);
  verdict v{true, got == want, {}};
  if (!v.equal) {
    v.detail = "rows " + std::to_string(got.rows()) + " vs " + std::to_string(want.rows()) +
               ", total_cents " + std::to_string(got.total_cents()) + " vs " +
               std::to_string(want.total_cents()) + ", checksum " + std::to_string(got.checksum()) +
               " vs " + std::to_string(want.checksum());
    for (std::uint32_t t = 0; t < lakh::fake::tenant_count; ++t) {
      if (!(got.tenant(t) == want.tenant(t))) {
        v.detail += "; first differing tenant " + std::to_string(t);
        break;
      }
    }
  }
  return v;
}

// CLI11 2.1 reports "abc" for an integer as "not in range"; say what is wrong instead.
const CLI::Validator whole_number(
    [](std::string &text) {
      const bool digits =
          !text.empty() && text.find_first_not_of("0123456789") == std::string::npos;
      return digits ? std::string() : "'" + text + "' is not a whole number";
    },
    "");

} // namespace

int main(int argc, char **argv) {
  const auto main_start = std::chrono::steady_clock::now();
  pipeline::config cfg;
  cfg.generators = pipeline::cores();
  cfg.workers = pipeline::cores();
  std::string json_to; // "": the text report; "-": JSON on stdout instead; else also to a file
  bool check = false;
  bool no_progress = false;

  CLI::App app{std::string("lakh_pipeline: spec v1 usage rows through a bounded lakh::channel "
                           "to a lakh::worker_pool, aggregated per tenant (lakh ") +
                   lakh::version_string + ")",
               "lakh_pipeline"};
  app.add_option("--rows", cfg.rows, "rows to generate")
      ->check(whole_number)
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1} << 40))
      ->capture_default_str();
  app.add_option("--seed", cfg.seed, "generator seed")->check(whole_number)->capture_default_str();
  app.add_option("--workers", cfg.workers, "consumer threads (lakh::worker_pool)")
      ->check(whole_number)
      ->check(CLI::Range(std::size_t{1}, std::size_t{1024}))
      ->capture_default_str();
  app.add_option("--generators", cfg.generators, "generator threads (lakh::task_group)")
      ->check(whole_number)
      ->check(CLI::Range(std::size_t{1}, std::size_t{1024}))
      ->capture_default_str();
  app.add_option("--batch", cfg.batch, "rows per channel message")
      ->check(whole_number)
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 24))
      ->capture_default_str();
  app.add_option("--capacity", cfg.capacity,
                 "channel capacity in batches (0 is refused: no rendezvous mode)")
      ->check(whole_number)
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 20))
      ->capture_default_str();
  app.add_flag("--json{-}", json_to,
               "print one JSON object at the end instead of the text report; --json=FILE: the "
               "text, and the JSON written to FILE");
  app.add_flag("--verify", check,
               "recompute the totals sequentially and compare (exit 1 on any difference)");
  app.add_flag("--no-progress", no_progress, "do not draw the progress line");
  app.set_version_flag("--version", lakh::version_string);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError &e) {
    return lakh_examples::cli_exit(app, e);
  }
  cfg.progress = !no_progress && json_to != "-";

  // The merge takes two ranked mutexes; report (never abort) any inconsistent order.
  lakh::lock_order::set_mode(lakh::lock_order::mode::report);
  std::optional<pipeline::result> outcome; // empty until run: a result holds a table of totals
  try {
    outcome.emplace(pipeline::run(cfg));
  } catch (const std::invalid_argument &e) {
    std::cerr << e.what() << "\n";
    return 2;
  } catch (const std::exception &e) {
    std::cerr << "lakh_pipeline: " << e.what() << "\n";
    return 1;
  }
  const pipeline::result &r = *outcome;
  const verdict v = check ? verify(cfg, r.totals) : verdict{};
  const auto lock_reports = lakh::lock_order::report_count();
  // What a user pays beyond `wall`: the setup, the merge, the flags; the process's start
  // before main() is not visible from here (scripts/compare-pipeline times whole processes).
  const auto since_main = std::chrono::steady_clock::now() - main_start;
  const auto cpu = process_cpu();

  nlohmann::ordered_json out;
  if (!json_to.empty()) {
    out = {
        {"rows", r.totals.rows()},
        {"seed", cfg.seed},
        {"tenants", r.totals.tenants()},
        {"total_cents", r.totals.total_cents()},
        {"checksum", r.totals.checksum()},
        {"wall_ms", ms(r.wall)},
        {"setup_ms", ms(r.setup)},
        {"main_ms", ms(since_main)},
        {"cpu_ms", ms(cpu)},
        {"rows_per_second", r.rows_per_second()},
        {"batches", r.batches},
        {"batch_latency_us",
         {{"p50", us(r.latency.p50)},
          {"p99", us(r.latency.p99)},
          {"p999", us(r.latency.p999)},
          {"max", us(r.latency.max)}}},
        {"channel_high_water", r.channel_high_water},
        {"settings",
         {{"generators", r.generators},
          {"workers", r.workers},
          {"batch", cfg.batch},
          {"capacity", cfg.capacity}}},
        {"lock_order_reports", lock_reports},
    };
    if (v.checked) {
      out["verified"] = v.equal;
    }
  }
  if (json_to == "-") {
    std::cout << out.dump(2) << "\n";
  } else {
    if (!json_to.empty()) {
      std::ofstream(json_to) << out.dump(2) << "\n";
    }
    std::printf("rows                %llu (seed %llu)\n",
                static_cast<unsigned long long>(r.totals.rows()),
                static_cast<unsigned long long>(cfg.seed));
    std::printf("tenants             %llu\n", static_cast<unsigned long long>(r.totals.tenants()));
    std::printf("total_cents         %llu\n",
                static_cast<unsigned long long>(r.totals.total_cents()));
    std::printf("checksum            %llu\n", static_cast<unsigned long long>(r.totals.checksum()));
    std::printf("wall                %.3f ms (first row generated -> last aggregated; setup %.3f "
                "ms before)\n",
                ms(r.wall), ms(r.setup));
    std::printf("process             %.3f ms from main() to this report, %.3f ms CPU (all "
                "threads, user + system)\n",
                ms(since_main), ms(cpu));
    std::printf("throughput          %.1f M rows/s\n", r.rows_per_second() / 1e6);
    std::printf("batch latency       p50 %.1f us, p99 %.1f us, p999 %.1f us, max %.1f us (%llu "
                "batches, generated -> aggregated)\n",
                us(r.latency.p50), us(r.latency.p99), us(r.latency.p999), us(r.latency.max),
                static_cast<unsigned long long>(r.batches));
    std::printf("channel high-water  %lld of %zu batches\n",
                static_cast<long long>(r.channel_high_water), cfg.capacity);
    std::printf("settings            %zu generators, %zu workers, batch %zu, capacity %zu\n",
                r.generators, r.workers, cfg.batch, cfg.capacity);
    std::printf("lock order          %llu reports (%s)\n",
                static_cast<unsigned long long>(lock_reports),
                lock_reports == 0 ? "no potential deadlock" : "see the reports above");
    if (v.checked) {
      std::printf("verify              %s\n", v.equal ? "OK: equal to the sequential recomputation"
                                                      : ("DIFFERENT: " + v.detail).c_str());
    }
  }
  if (v.checked && !v.equal) {
    return 1;
  }
  return lock_reports == 0 ? 0 : 1;
}
