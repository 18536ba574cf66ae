-- wrk script for bench/sim.sh: each request deletes a distinct seeded account.
-- Arguments (after `--`): the file of account ids (one a line) and the number of wrk threads.
-- Each thread takes every n-th id; when a thread runs out it repeats ids (answered 404, which
-- wrk reports as "Non-2xx or 3xx responses").
local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  local file, nthreads = args[1], tonumber(args[2] or "1")
  ids = {}
  local i = 0
  for line in io.lines(file) do
    if i % nthreads == tid then
      ids[#ids + 1] = line
    end
    i = i + 1
  end
end

function request()
  counter = counter + 1
  local id = ids[((counter - 1) % #ids) + 1]
  return wrk.format("DELETE", "/v2.1/accounts/" .. id)
end
