-- wrk script for auditors paging the event log: GET /v1/events?limit=1000&after=CURSOR.
--   wrk ... -s bench/auditor.lua URL -- TOKEN LOG_SIZE
-- The connections of a thread take the log's pages in turn, from the start, and begin again
-- at the start after the page that reaches LOG_SIZE: every request is a full page of 1000.
-- No response() callback: wrk then hands no body to Lua, so the load generator stays cheap.

local threads = {}
local PAGE = 1000

function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

function init(args)
  headers = { ["Authorization"] = "Bearer " .. args[1] }
  size = tonumber(args[2])
  after = ((id - 1) * PAGE) % math.max(size - PAGE, 1)
end

function request()
  local cursor = after
  after = after + PAGE
  if after + PAGE > size then
    after = 0
  end
  return wrk.format("GET", "/v1/events?limit=" .. PAGE .. "&after=" .. cursor, headers)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"p50_us":%.1f,"p99_us":%.1f,'
      .. '"socket_errors":%d,"non_2xx":%d,"bytes":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status, summary.bytes))
end
