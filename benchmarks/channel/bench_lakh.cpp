// lakh::channel<uint64_t>: send/recv per item, send_batch/recv_batch per batch.
#include "common.hpp"

#include <lakh/channel.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace {

using lakh_bench::capacity;

struct lakh_q {
  lakh::channel<std::uint64_t> ch{capacity};
  void send(std::uint64_t v) { (void)ch.send(v); }
  std::uint64_t recv() { return *ch.recv(); }
  void send_n(const std::uint64_t *p, std::size_t n) {
    thread_local std::vector<std::uint64_t> in;
    in.assign(p, p + n);
    (void)ch.send_batch(in);
  }
  std::size_t recv_n(std::uint64_t *p, std::size_t max) {
    thread_local std::vector<std::uint64_t> out;
    out.clear();
    const auto r = ch.recv_batch(out, max);
    std::copy(out.begin(), out.end(), p);
    return r.count;
  }
};

} // namespace

BENCHMARK(lakh_bench::bm<lakh_q, false>)->Name("item/lakh")->Apply(lakh_bench::channel_pairs);
BENCHMARK(lakh_bench::bm<lakh_q, true>)->Name("batch256/lakh")->Apply(lakh_bench::channel_pairs);
