-- wrk script: POST a body template with a unique FileId per request; print the figures as JSON.
-- Arguments (after --): the template file, holding __FILE_ID__ once, and a run id.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  local file = assert(io.open(args[1], "rb"))
  local body = file:read("*a")
  file:close()
  local first, last = body:find("__FILE_ID__", 1, true)
  prefix, suffix, run_id, counter = body:sub(1, first - 1), body:sub(last + 1), args[2], 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  return wrk.format(nil, nil, nil, prefix .. run_id .. string.format("%02d%010d", tid, counter) .. suffix)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\n{"completed": %d, "seconds": %.3f, "status_errors": %d, "socket_errors": %d, ' ..
    '"p50_ms": %.3f, "p99_ms": %.3f}\n',
    summary.requests, summary.duration / 1e6, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
