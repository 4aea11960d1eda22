-- wrk script of bench/ack_path.py and bench/ack_stack.py (benchlib.wrk_script): each thread sends, in turn,
-- the complete pre-signed HTTP requests of its own file (benchlib.write_requests: ARGS[1] .. "." .. thread
-- number, requests separated by benchlib.SEP), then done() prints one WRKRESULT line of JSON.
threads = {}
local count = 0
function setup(thread)
  thread:set("tid", count)
  count = count + 1
  table.insert(threads, thread)
end

function init(args)
  reqfile = args[1]
  mean_delay = tonumber(args[2] or "0")
  reqs, n, idx, wrapped = nil, 0, 1, 0
  math.randomseed(tid * 7919 + 17)
end

-- A thread reads its own file at its first request, not in init(): wrk runs each thread's init() while the
-- threads made before it already send, and starts its clock after the last one, so a slow init() lets
-- requests escape the measured duration (seen: 1.1 s of load outside a 4.1 s run, -t6).
local function load()
  local f = assert(io.open(reqfile .. "." .. tid, "rb"))
  local data = f:read("*a")
  f:close()
  reqs = {}
  local pos = 1
  while true do
    local s, e = string.find(data, "\n#WRK#\n", pos, true)
    if not s then break end
    reqs[#reqs + 1] = string.sub(data, pos, s - 1)
    pos = e + 1
  end
  n = #reqs
end

function request()
  if reqs == nil then load() end
  local r = reqs[idx]
  idx = idx + 1
  if idx > n then
    idx = 1
    wrapped = wrapped + 1
  end
  return r
end

function done(summary, latency, requests)
  local w = 0
  for _, t in ipairs(threads) do w = w + (t:get("wrapped") or 0) end
  io.write(string.format(
    'WRKRESULT {"requests":%d,"duration_us":%d,"bytes":%d,"err_connect":%d,"err_read":%d,"err_write":%d,' ..
    '"err_status":%d,"err_timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,' ..
    '"mean_us":%.1f,"wrapped":%d}\n',
    summary.requests, summary.duration, summary.bytes, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean, w))
end
