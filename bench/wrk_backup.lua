-- Portal-like POST {root}/backup for wrk: fresh identities, some overwrites, 6-9 KB shares; or
-- (mode "overwrite") a fixed set of identities rewritten round-robin.
-- BENCH_WRK_DATA names the Lua file (written by bench/workload.py) holding shares and headers.
local data = dofile(os.getenv("BENCH_WRK_DATA"))
local threads = {}

counter, ok, committed, queued, other = 0, 0, 0, 0, 0
local recent, recent_n = {}, 0

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(tid * 7919 + os.time())
end

function request()
  counter = counter + 1
  local client
  if data.mode == "overwrite" then
    -- Identities rewritten round-robin; two threads (wrk -t2) take the odd and the even ones.
    client = string.format("cl%so%05d", data.run, (counter * 2 + tid) % data.identities)
  elseif recent_n > 0 and math.random() < data.overwrite then
    client = recent[math.random(recent_n)]
  else
    client = string.format("cl%sw%dn%09d", data.run, tid, counter)
    if recent_n < 1000 then
      recent_n = recent_n + 1
      recent[recent_n] = client
    else
      recent[math.random(1000)] = client
    end
  end
  local method = data.methods[(string.byte(client, -1) % #data.methods) + 1]
  local body = '{"clientId":"' .. client .. '","backupMethod":"' .. method ..
    '","backupSharePairId":"cp' .. client .. '","share":"' ..
    data.shares[math.random(#data.shares)] .. '"}'
  return wrk.format("POST", data.path, data.headers, body)
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
    if string.find(body, '"committed"', 1, true) then
      committed = committed + 1
    elseif string.find(body, '"queued"', 1, true) then
      queued = queued + 1
    end
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local t = { ok = 0, committed = 0, queued = 0, other = 0 }
  for _, thread in ipairs(threads) do
    for k, _ in pairs(t) do
      t[k] = t[k] + thread:get(k)
    end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"ok":%d,"committed":%d,"queued":%d,' ..
    '"non2xx":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,' ..
    '"p50_us":%d,"p95_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, t.ok, t.committed, t.queued, t.other,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99),
    latency.max, latency.mean))
end
