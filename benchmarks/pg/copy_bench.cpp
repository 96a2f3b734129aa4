// copy_bench: load N usage rows into PostgreSQL with lakh::pg::copy_from, the rows made on a
// producer thread and carried in batches through a bounded lakh::channel; or write the same
// rows as a COPY text file for `psql \copy` (benchmarks/pg/copy_vs_psql runs both).
//
//   copy_bench --url URL --table NAME [--rows N] [--seed S] [--batch N] [--capacity N]
//   copy_bench --write-tsv FILE [--rows N] [--seed S]
//
// Row shape and values: spec/usage-rows.md v1 (splitmix64), generated locally below.
#include <lakh/channel.hpp>
#include <lakh/pg/copy.hpp>
#include <lakh/pg/pool.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

namespace {

struct usage_row {
  std::int64_t id;
  std::int32_t tenant_id;
  std::int32_t user_id;
  std::int16_t metric;
  std::int32_t quantity;
  std::int64_t ts;
};

// spec/usage-rows.md: three splitmix64 draws per row, a pure function of (seed, i).
// TODO(pipeline): use lakh::fake::row_at(seed, i) once include/lakh/fake/usage.hpp lands.
std::uint64_t splitmix64(std::uint64_t &state) {
  state += 0x9E3779B97F4A7C15ULL;
  std::uint64_t z = state;
  z = (z ^ (z >> 30U)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27U)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31U);
}

usage_row row_at(std::uint64_t seed, std::uint64_t i) {
  std::uint64_t state = seed + 3 * i * 0x9E3779B97F4A7C15ULL;
  std::uint64_t a = splitmix64(state);
  std::uint64_t b = splitmix64(state);
  std::uint64_t c = splitmix64(state);
  usage_row r{};
  r.id = static_cast<std::int64_t>(i + 1);
  r.tenant_id = static_cast<std::int32_t>(a % 10000);
  r.user_id = static_cast<std::int32_t>(static_cast<std::uint64_t>(r.tenant_id) * 1000 + b % 1000);
  r.metric = static_cast<std::int16_t>((b >> 32U) % 4);
  r.quantity = static_cast<std::int32_t>(1 + c % 5000);
  r.ts = static_cast<std::int64_t>(1767225600 + (c >> 32U) % 2678400);
  return r;
}

[[noreturn]] void usage_exit(int code) {
  std::fputs("usage: copy_bench --url URL --table NAME [--rows N] [--seed S] [--batch N] "
             "[--capacity N]\n       copy_bench --write-tsv FILE [--rows N] [--seed S]\n",
             code == 0 ? stdout : stderr);
  std::exit(code);
}

std::uint64_t parse_count(const char *flag, const char *v) {
  char *end = nullptr;
  unsigned long long n = std::strtoull(v, &end, 10);
  if (end == v || *end != '\0' || n == 0) {
    std::fprintf(stderr, "copy_bench: %s needs a positive integer, got \"%s\"\n", flag, v);
    std::exit(2);
  }
  return n;
}

} // namespace

int main(int argc, char **argv) {
  std::string url;
  std::string table;
  std::string tsv;
  std::uint64_t rows = 1000000;
  std::uint64_t seed = 42;
  std::uint64_t batch = 1000;
  std::uint64_t capacity = 64;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> const char * {
      if (i + 1 >= argc) {
        usage_exit(2);
      }
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      usage_exit(0);
    } else if (a == "--url") {
      url = next();
    } else if (a == "--table") {
      table = next();
    } else if (a == "--write-tsv") {
      tsv = next();
    } else if (a == "--rows") {
      rows = parse_count("--rows", next());
    } else if (a == "--seed") {
      seed = std::strtoull(next(), nullptr, 10);
    } else if (a == "--batch") {
      batch = parse_count("--batch", next());
    } else if (a == "--capacity") {
      capacity = parse_count("--capacity", next());
    } else {
      std::fprintf(stderr, "copy_bench: unknown argument %s\n", a.c_str());
      usage_exit(2);
    }
  }

  if (!tsv.empty()) {
    std::FILE *f = std::fopen(tsv.c_str(), "w");
    if (f == nullptr) {
      std::perror(tsv.c_str());
      return 1;
    }
    for (std::uint64_t i = 0; i < rows; ++i) {
      auto r = row_at(seed, i);
      std::fprintf(f, "%lld\t%d\t%d\t%d\t%d\t%lld\n", static_cast<long long>(r.id), r.tenant_id,
                   r.user_id, r.metric, r.quantity, static_cast<long long>(r.ts));
    }
    return std::fclose(f) == 0 ? 0 : 1;
  }
  if (url.empty() || table.empty()) {
    usage_exit(2);
  }

  try {
    auto t0 = std::chrono::steady_clock::now();
    lakh::pg::pool pool(url, 1);
    lakh::channel<std::vector<usage_row>> ch(static_cast<std::size_t>(capacity));
    std::jthread producer([&] {
      for (std::uint64_t i = 0; i < rows;) {
        std::vector<usage_row> b;
        b.reserve(static_cast<std::size_t>(batch));
        for (std::uint64_t end = std::min(rows, i + batch); i < end; ++i) {
          b.push_back(row_at(seed, i));
        }
        if (ch.send(std::move(b)) != lakh::status::ok) {
          return;
        }
      }
      ch.close();
    });
    auto r = lakh::pg::copy_from(
        pool, table, {"id", "tenant_id", "user_id", "metric", "quantity", "ts"}, ch,
        [](const usage_row &u) {
          return std::make_tuple(u.id, u.tenant_id, u.user_id, u.metric, u.quantity, u.ts);
        });
    producer.join();
    std::chrono::duration<double> dt = std::chrono::steady_clock::now() - t0;
    std::printf("lakh_copy rows=%zu seconds=%.3f rows_per_s=%.0f\n", r.rows, dt.count(),
                static_cast<double>(r.rows) / dt.count());
  } catch (const std::exception &e) {
    std::fprintf(stderr, "copy_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
