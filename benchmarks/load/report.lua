-- benchmarks/load/report.lua: loaded by get.lua and post.lua (dofile). Makes a wrk run
-- bounded in requests as well as time (each thread stops after LOAD_REQUESTS_PER_THREAD
-- responses), counts non-2xx answers as errors, and prints one line at the end:
--   LOAD requests=N seconds=S rps=R p50_ms=.. p99_ms=.. p999_ms=.. errors=E non2xx=N socket_errors=N
local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  responses = 0
  non2xx = 0
  limit = tonumber(os.getenv("LOAD_REQUESTS_PER_THREAD") or "0")
end

function response(status, headers, body)
  responses = responses + 1
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
  if limit > 0 and responses >= limit then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do
    bad = bad + (t:get("non2xx") or 0)
  end
  local e = summary.errors
  local socket_errors = e.connect + e.read + e.write + e.timeout
  local seconds = summary.duration / 1e6
  io.write(string.format(
    "LOAD requests=%d seconds=%.2f rps=%.0f p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f errors=%d non2xx=%d socket_errors=%d\n",
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency:percentile(99.9) / 1000, bad + socket_errors, bad, socket_errors))
end
