// lakh::task_group as Go's errgroup: load shards concurrently, at most 4 at once; the first
// shard that fails stops the others and wait() rethrows its exception (docs/task_group.md).
// Checks: a clean run loads every shard; a run with a bad shard throws its error, and the
// shards still loading see the stop request and return early.
// [doc:load_all]
#include <lakh/task_group.hpp>
// [doc:load_all]

#include <atomic>
#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

struct shard_result {
  std::string path;
  bool complete = false;
};

std::atomic<int> stopped_early{0};

shard_result load_shard(const std::string &path, std::stop_token st) {
  if (path.starts_with("bad")) {
    throw std::runtime_error("corrupt shard " + path);
  }
  for (int step = 0; step < 50; ++step) { // 50 ms of reading, checking for a stop each 1 ms
    if (st.stop_requested()) {
      ++stopped_early;
      return {path, false};
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return {path, true};
}

// [doc:load_all]
std::vector<shard_result> load_all(const std::vector<std::string> &paths) {
  std::vector<shard_result> out(paths.size());
  lakh::task_group group;
  group.set_limit(4); // at most 4 files open at once
  for (std::size_t i = 0; i < paths.size(); ++i) {
    group.spawn([&, i](std::stop_token st) {
      out[i] = load_shard(paths[i], st); // throws on a bad shard; returns early on stop
    });
  }
  group.wait(); // every task has returned; rethrows the first failure
  return out;   // safe to read: the tasks' writes happen-before wait() returns
}
// [doc:load_all]

int main() {
  int failures = 0;
  for (const auto &r : load_all({"a", "b", "c", "d", "e", "f"})) {
    failures += r.complete ? 0 : 1;
  }
  std::string error;
  try {
    (void)load_all({"g", "h", "i", "bad-j", "k", "l"}); // bad-j starts while g, h, i load
  } catch (const std::runtime_error &e) {
    error = e.what();
  }
  std::printf("clean run: %d incomplete; failed run: \"%s\", %d shards stopped early\n", failures,
              error.c_str(), stopped_early.load());
  return failures == 0 && error == "corrupt shard bad-j" && stopped_early > 0 ? 0 : 1;
}
