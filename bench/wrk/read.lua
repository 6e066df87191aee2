-- Balance reads of random owners.
local owners = tonumber(os.getenv("BENCH_OWNERS") or "2000")
local token = os.getenv("BENCH_TOKEN")
local fixed = os.getenv("BENCH_OWNER")

request = function()
  local owner = fixed or ("owner" .. math.random(1, owners))
  return wrk.format("GET", "/api/content/ledger/" .. owner .. "/", {
    ["Authorization"] = "Bearer " .. token,
  })
end

dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
