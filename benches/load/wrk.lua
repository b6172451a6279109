-- wrk script of the load bench.
--
--   wrk ... URL                                        GET URL (pass-through)
--   wrk ... URL -- gated POOL [HUMAN_TOKEN] [PHONES]   POST /register/v1.0/challenge
--   wrk ... URL -- native POOL                         non-sending native-auth POSTs
--   wrk ... URL -- mix POOL                            six of those per SMS send
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

-- One non-sending native-auth call of a sign-in, i-th of the pool: initiate, introspect,
-- a password challenge, or a password-grant token request. Entra would send no code for
-- any of them.
local function native_call(i, ct)
  local tenant = "/contoso.onmicrosoft.com"
  local client = "client_id=00000000-0000-4000-8000-000000000001"
  local token = ct .. string.format("-%08d", i)
  local kind = i % 4
  if kind == 0 then
    return tenant .. "/oauth2/v2.0/initiate",
      client .. "&challenge_type=password%20oob%20redirect"
        .. string.format("&username=user%06d%%40contoso.com", i % 1000000)
  elseif kind == 1 then
    return tenant .. "/oauth2/v2.0/challenge",
      client .. "&challenge_type=password%20redirect&continuation_token=" .. token
  elseif kind == 2 then
    return tenant .. "/oauth2/v2.0/token",
      client .. "&grant_type=password&scope=openid%20offline_access&password=Correct-Horse-9"
        .. "&continuation_token=" .. token
  end
  return tenant .. "/oauth2/v2.0/introspect", client .. "&continuation_token=" .. token
end

function init(args)
  local mode = args[1]
  if mode ~= "gated" and mode ~= "native" and mode ~= "mix" then
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
  -- mix: six native-auth calls per SMS send, as a sign-in with a registration makes them.
  for i = 0, size - 1 do
    local native = mode == "native" or (mode == "mix" and i % 7 ~= 6)
    local phone = string.format("%%2B447400%06d", i % 1000000)
    if phones then
      phone = "%2B" .. phones[i % #phones + 1]:sub(2)
    end
    local call_path, body = path, "client_id=00000000-0000-4000-8000-000000000001"
      .. "&continuation_token=" .. ct .. string.format("-%08d", i)
      .. "&challenge_type=oob&challenge_channel=sms"
      .. "&challenge_target=" .. phone
    if native then
      call_path, body = native_call(i, ct)
    end
    local headers = {
      ["Content-Type"] = "application/x-www-form-urlencoded",
      ["User-Agent"] = "Dalvik/2.1.0 (Linux; U; Android 14; Pixel 8)",
      ["X-Forwarded-For"] = client_ip(i),
    }
    if token and token ~= "" then
      headers["X-PX-AUTHORIZATION"] = token
    end
    pool[#pool + 1] = wrk.format("POST", call_path, headers, body)
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
