-- Many-balances reads: BENCH_BALANCES random owners per request.
local owners = tonumber(os.getenv("BENCH_OWNERS") or "2000")
local size = tonumber(os.getenv("BENCH_BALANCES") or "100")
local token = os.getenv("BENCH_TOKEN")

request = function()
  local ids = {}
  for i = 1, size do
    ids[i] = string.format('"owner%d"', math.random(1, owners))
  end
  local body = '{"owner_ids":[' .. table.concat(ids, ",") .. ']}'
  return wrk.format("POST", "/api/content/ledger/balances/", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }, body)
end

dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
