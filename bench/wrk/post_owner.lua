-- Single posts to one owner (BENCH_OWNER), for the history-growth measurement.
local counter = 0
local token = os.getenv("BENCH_TOKEN")
local owner = os.getenv("BENCH_OWNER")
local run = os.getenv("BENCH_RUN") or "r"

request = function()
  counter = counter + 1
  local body = string.format(
    '{"owner_id":"%s","operation":"CREDIT_ADD","nonce":"%s-h-%d","amount":1}', owner, run, counter)
  return wrk.format("POST", "/api/content/ledger/", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }, body)
end

dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
