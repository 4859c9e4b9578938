-- wrk script of keyrail's benchmark (bench/run.sh): one POST per request,
-- the same for every target; only the URL and the headers differ.
--
-- Environment:
--   KB_BODY       file with the request body (sent as is)
--   KB_HEADERS    request headers, "name: value" lines
--   KB_ACTIVE_MS  how long to send requests. After that no connection sends
--                 another one (delay() returns an hour), so the requests in
--                 flight finish before wrk's -d ends and none is cut off:
--                 every metered request completes and can be compared with
--                 what the upstream served. Run wrk with -d >= KB_ACTIVE_MS +
--                 the longest latency, and --timeout above -d.
--   KB_OUT        file the result (one JSON object) is written to
--
-- wrk calls delay() before every request it sends on a connection (the
-- first one included), so the requests started inside the window are
-- counted there: requests/s = that count / window. All of them complete
-- (requests == in_window in the result shows it). wrk's latency histogram
-- covers every response, including the few that finished after the window.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } kb_timespec;
int clock_gettime(int clk, kb_timespec *ts);
]]
local ts = ffi.new("kb_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local f = assert(io.open(assert(os.getenv("KB_BODY"), "KB_BODY is not set"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers = {}
for line in (os.getenv("KB_HEADERS") or ""):gmatch("[^\n]+") do
  local k, v = line:match("^%s*([^:]+):%s*(.-)%s*$")
  if k then wrk.headers[k] = v end
end
local active_ms = tonumber(os.getenv("KB_ACTIVE_MS") or "5000")

-- per thread
start_ms, end_ms, counted, late = 0, 0, 0, 0

function init(args)
  start_ms = now_ms()
  end_ms = start_ms + active_ms
end

function delay()
  if now_ms() <= end_ms then
    counted = counted + 1
    return 0
  end
  late = late + 1
  return 3600000
end

-- main state
local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function done(summary, latency, requests)
  local c, l, first, last = 0, 0, nil, nil
  for _, t in ipairs(threads) do
    c = c + t:get("counted")
    l = l + t:get("late")
    local s, e = t:get("start_ms"), t:get("end_ms")
    if not first or s < first then first = s end
    if not last or e > last then last = e end
  end
  local window_s = (last - first) / 1000
  local e = summary.errors
  local out = string.format(
    '{"requests":%d,"in_window":%d,"late":%d,"window_s":%.3f,"rps":%.1f,"duration_s":%.3f,' ..
    '"bytes":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p999":%d,"mean":%.1f,"max":%d,"stdev":%.1f}}\n',
    summary.requests, c, l, window_s, c / window_s, summary.duration / 1e6, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.mean, latency.max, latency.stdev)
  local path = os.getenv("KB_OUT")
  if path then
    local o = assert(io.open(path, "w"))
    o:write(out)
    o:close()
  else
    io.write(out)
  end
end
