-- benchmarks/load/post.lua: an idempotent POST. Each request creates a user with its own
-- Idempotency-Key (so each one executes: API key, limits, the PostgreSQL idempotency record,
-- a gRPC call, the user's INSERT under row-level security, the stored response).
dofile(os.getenv("LOAD_DIR") .. "/report.lua")
local run = os.getenv("LOAD_RUN_ID") or "run"
local n = 0

function request()
  n = n + 1
  local key = run .. "-" .. id .. "-" .. n
  return wrk.format("POST", "/v1/users", {
    ["Authorization"] = "Bearer " .. os.getenv("LOAD_API_KEY"),
    ["Idempotency-Key"] = key,
    ["Content-Type"] = "application/json",
  }, '{"email":"' .. key .. '@load.example"}')
end
