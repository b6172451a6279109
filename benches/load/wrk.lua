-- wrk script of the load bench.
--
--   wrk ... URL                                        GET URL (pass-through)
--   wrk ... URL -- gated POOL [HUMAN_TOKEN] [PHONES]   POST /register/v1.0/challenge
--
-- Gated requests cycle through POOL pre-built requests (built once per thread, so the
-- per-request cost in wrk is an index and a return): each has its own phone number,
-- continuation token and client address (X-Forwarded-For, from a trusted proxy), as
-- benches/fixtures/mod.rs builds them, so every velocity key stays below its limit and the
-- decision is allow. HUMAN_TOKEN, when not empty, is sent as X-PX-AUTHORIZATION. PHONES, a
-- file of numbers (one "+digits" per line), replaces the GB numbers: request i goes to
-- the (i mod n)-th.
--
-- done() prints one line "WRKJSON {...}" with latencies in microseconds.

local pool = {}
local n = 0

local function continuation_token(i)
  local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
  local chars = {}
  for k = 0, 1199 do
    local at = (k * 7 + math.floor(k / 3)) % 64
    chars[#chars + 1] = alphabet:sub(at + 1, at + 1)
  end
  return table.concat(chars) .. string.format("-%08d", i)
end

local function client_ip(i)
  -- wrk runs LuaJIT (Lua 5.1): no integer division or bitwise operators.
  return string.format("10.%d.%d.%d", math.floor(i / 4096) % 256, math.floor(i / 16) % 256,
    1 + i % 16)
end

local function read_phones(path)
  local phones = {}
  for line in io.lines(path) do
    local number = line:match("^(%+%d+)")
    if number then
      phones[#phones + 1] = number
    end
  end
  return phones
end

function init(args)
  if args[1] ~= "gated" then
    return
  end
  local size = tonumber(args[2]) or 4096
  local token = args[3]
  local phones = nil
  if args[4] and args[4] ~= "" then
    phones = read_phones(args[4])
  end
  local path = "/contoso.onmicrosoft.com/register/v1.0/challenge"
  local ct = continuation_token(0)
  ct = ct:sub(1, #ct - 9)
  for i = 0, size - 1 do
    local phone = string.format("%%2B447400%06d", i % 1000000)
    if phones then
      phone = "%2B" .. phones[i % #phones + 1]:sub(2)
    end
    local body = "client_id=00000000-0000-4000-8000-000000000001"
      .. "&continuation_token=" .. ct .. string.format("-%08d", i)
      .. "&challenge_type=oob&challenge_channel=sms"
      .. "&challenge_target=" .. phone
    local headers = {
      ["Content-Type"] = "application/x-www-form-urlencoded",
      ["User-Agent"] = "Dalvik/2.1.0 (Linux; U; Android 14; Pixel 8)",
      ["X-Forwarded-For"] = client_ip(i),
    }
    if token and token ~= "" then
      headers["X-PX-AUTHORIZATION"] = token
    end
    pool[#pool + 1] = wrk.format("POST", path, headers, body)
  end
  -- Defined only here: without a request() function wrk sends its one static request.
  request = function()
    n = n % #pool + 1
    return pool[n]
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
