-- wrk script: POST /v1/erasure-requests with a unique numeric target id per request:
-- BENCH_ID_PREFIX, then the thread number (2 digits), then a counter (9 digits), so that no
-- request duplicates another. The bearer key comes from the environment: BENCH_KEY.
-- No response() callback: it would make wrk parse every body and take CPU from the service on a
-- 2-core machine. wrk reports "Non-2xx or 3xx responses"; the script counts rows in the database.
local counter = 0
local threads = {}
local key = os.getenv("BENCH_KEY") or error("set BENCH_KEY")
local run_prefix = tonumber(os.getenv("BENCH_ID_PREFIX") or "1")

function setup(thread)
   table.insert(threads, thread)
   thread:set("thread_no", #threads)
end

function init(args)
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
   wrk.headers["Authorization"] = "Bearer " .. key
end

function request()
   counter = counter + 1
   local id = string.format("%d%02d%09d", run_prefix, thread_no, counter)
   return wrk.format(nil, nil, nil, '{"scope":"account","target_id":"' .. id .. '"}')
end
