-- The framework floor: GET /healthz (no auth, no database, no log line).
request = function()
  return wrk.format("GET", "/healthz")
end
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
