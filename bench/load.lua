-- wrk script for the deposit and balance loads. The very same requests go to the ledger and to
-- the bare service (bench/bare.py serves the same paths): only the host and the token differ.
--   wrk ... -s bench/load.lua URL -- MODE USERS TAG TOKEN
-- MODE is "deposit" or "balance"; users are u0000 .. u(USERS-1), picked at random. A payment
-- reference is TAG-THREAD-COUNTER: unique across threads, and across runs when TAG is.
-- done() prints one line "BENCH {json}" with the counts by status, which bench/wrk.py reads.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

function init(args)
  mode = args[1]
  users = tonumber(args[2])
  tag = args[3]
  counter = 0
  statuses = {}
  math.randomseed(os.time() * 100 + id)
  read_headers = { ["Authorization"] = "Bearer " .. args[4] }
  write_headers = { ["Authorization"] = "Bearer " .. args[4],
                    ["Content-Type"] = "application/json" }
end

function request()
  counter = counter + 1
  local path = string.format("/v1/accounts/u%04d/", math.random(users) - 1)
  if mode == "deposit" then
    local body = string.format('{"amount":%d,"reference":"%s-%d-%d"}',
                               100 + counter % 900, tag, id, counter)
    return wrk.format("POST", path .. "deposits", write_headers, body)
  end
  return wrk.format("GET", path .. "balance", read_headers)
end

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses") or {}) do
      counts[status] = (counts[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(counts) do
    table.insert(parts, string.format('"%s":%d', status, n))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"p50_us":%.1f,"p99_us":%.1f,'
      .. '"socket_errors":%d,"statuses":{%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, table.concat(parts, ",")))
end
