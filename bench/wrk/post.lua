-- Single ledger posts: CREDIT_ADD of 1 to a random owner, unique nonce per request.
local counter = 0
local thread_id = 0
local owners = tonumber(os.getenv("BENCH_OWNERS") or "2000")
local app = os.getenv("BENCH_APP") or "content"
local token = os.getenv("BENCH_TOKEN")
local run = os.getenv("BENCH_RUN") or "r"
local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  thread_id = id
  math.randomseed(os.time() + thread_id)
end

request = function()
  counter = counter + 1
  local owner = "owner" .. math.random(1, owners)
  local body = string.format(
    '{"owner_id":"%s","operation":"CREDIT_ADD","nonce":"%s-%d-%d","amount":1}',
    owner, run, thread_id, counter)
  return wrk.format("POST", "/api/" .. app .. "/ledger/", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }, body)
end

dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
