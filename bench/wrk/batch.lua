-- Batch posts: BENCH_BATCH entries of CREDIT_ADD 1 over random owners.
local counter = 0
local thread_id = 0
local owners = tonumber(os.getenv("BENCH_OWNERS") or "2000")
local size = tonumber(os.getenv("BENCH_BATCH") or "100")
local token = os.getenv("BENCH_TOKEN")
local run = os.getenv("BENCH_RUN") or "r"
local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  thread_id = id
  math.randomseed(os.time() + thread_id * 7919)
end

request = function()
  counter = counter + 1
  local items = {}
  for i = 1, size do
    items[i] = string.format(
      '{"owner_id":"owner%d","operation":"CREDIT_ADD","nonce":"%s-b%d-%d-%d","amount":1}',
      math.random(1, owners), run, thread_id, counter, i)
  end
  local body = '{"atomic":true,"entries":[' .. table.concat(items, ",") .. ']}'
  return wrk.format("POST", "/api/content/ledger/batch/", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }, body)
end

dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
