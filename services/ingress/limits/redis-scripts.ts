// Lua run inside Redis, so that checking every counter of a request and then counting it is one
// atomic step however many ingress replicas share the Redis (no read-modify-write races).
//
// Keys per subject (a tenant, or one of its keys), in this order:
//   1 rpm   sorted set: reservation id, scored by admission time (ms)
//   2 tpm   hash: clock second -> tokens admitted in it (corrected when requests settle)
//   3 conc  sorted set: reservation id, scored by when its lease lapses (ms)
//   4 day   integer: tokens in the UTC day
//   5 usd   integer: micro-dollars in the UTC month
// Per subject limits come as five ARGV values in the same order; 0 means "no such limit", and
// the counter of a limit that is not set is neither read nor written.

/**
 * ARGV: now, id, tokens, micro-usd, window ms, lease until, lease set ttl ms, day key ttl ms,
 * month key ttl ms, day end, month end, subject count, then 5 limits per subject. Times are the
 * ingress clock's; key TTLs are relative so they do not depend on Redis's own clock.
 * Returns {allowed, limit index (1-5), subject index (0-based), retry ms} followed, per subject,
 * by {requests in window, ms until the newest leaves, tokens in window, ms until the newest
 * bucket leaves} as they were before this admission.
 */
export const ADMIT = `
local now = tonumber(ARGV[1])
local id = ARGV[2]
local window = tonumber(ARGV[5])
local leaseUntil = ARGV[6]
local leaseTtl = ARGV[7]
local n = tonumber(ARGV[12])
local second = math.floor(now / 1000)
local buckets = math.floor(window / 1000)
local out = {1, 0, 0, 0}
local worst = -1
local views = {}

local function refuse(limit, subject, retry)
  if retry > worst then
    worst = retry
    out = {0, limit, subject, math.ceil(retry)}
  end
end

for i = 0, n - 1 do
  local k = i * 5
  local a = 12 + i * 5
  local lRpm, lTpm, lConc = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local lDay, lUsd = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  local requests, requestsReset, tokens, tokensReset = 0, 0, 0, 0

  if lRpm > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[k + 1], '-inf', now - window)
    requests = redis.call('ZCARD', KEYS[k + 1])
    if requests > 0 then
      local newest = redis.call('ZRANGE', KEYS[k + 1], -1, -1, 'WITHSCORES')
      requestsReset = tonumber(newest[2]) + window - now
    end
    if requests >= lRpm then
      local nth = redis.call('ZRANGE', KEYS[k + 1], requests - lRpm, requests - lRpm, 'WITHSCORES')
      refuse(1, i, tonumber(nth[2]) + window - now)
    end
  end

  if lTpm > 0 then
    local flat = redis.call('HGETALL', KEYS[k + 2])
    local live = {}
    for j = 1, #flat, 2 do
      local b = tonumber(flat[j])
      if b <= second - buckets then
        redis.call('HDEL', KEYS[k + 2], flat[j])
      else
        local v = tonumber(flat[j + 1])
        tokens = tokens + v
        live[#live + 1] = {b, v}
      end
    end
    table.sort(live, function(x, y) return x[1] < y[1] end)
    if #live > 0 then tokensReset = (live[#live][1] + buckets) * 1000 - now end
    if tokens >= lTpm then
      local left = tokens
      local retry = (second + buckets) * 1000 - now
      for _, e in ipairs(live) do
        left = left - e[2]
        if left < lTpm then
          retry = (e[1] + buckets) * 1000 - now
          break
        end
      end
      refuse(2, i, retry)
    end
  end

  if lConc > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[k + 3], '-inf', now)
    if redis.call('ZCARD', KEYS[k + 3]) >= lConc then refuse(3, i, 1000) end
  end

  if lDay > 0 and tonumber(redis.call('GET', KEYS[k + 4]) or '0') >= lDay then
    refuse(4, i, tonumber(ARGV[10]) - now)
  end

  if lUsd > 0 and tonumber(redis.call('GET', KEYS[k + 5]) or '0') >= lUsd then
    refuse(5, i, tonumber(ARGV[11]) - now)
  end

  views[#views + 1] = {requests, math.ceil(requestsReset), tokens, math.ceil(tokensReset)}
end

if out[1] == 1 then
  for i = 0, n - 1 do
    local k = i * 5
    local a = 12 + i * 5
    if tonumber(ARGV[a + 1]) > 0 then
      redis.call('ZADD', KEYS[k + 1], now, id)
      redis.call('PEXPIRE', KEYS[k + 1], window)
    end
    if tonumber(ARGV[a + 2]) > 0 then
      redis.call('HINCRBY', KEYS[k + 2], second, ARGV[3])
      redis.call('PEXPIRE', KEYS[k + 2], window + 1000)
    end
    if tonumber(ARGV[a + 3]) > 0 then
      redis.call('ZADD', KEYS[k + 3], leaseUntil, id)
      redis.call('PEXPIRE', KEYS[k + 3], leaseTtl)
    end
    if tonumber(ARGV[a + 4]) > 0 then
      redis.call('INCRBY', KEYS[k + 4], ARGV[3])
      redis.call('PEXPIRE', KEYS[k + 4], ARGV[8])
    end
    if tonumber(ARGV[a + 5]) > 0 then
      redis.call('INCRBY', KEYS[k + 5], ARGV[4])
      redis.call('PEXPIRE', KEYS[k + 5], ARGV[9])
    end
  end
end

for _, v in ipairs(views) do
  for _, x in ipairs(v) do out[#out + 1] = x end
end
return out
`;

/**
 * ARGV: now, id, token delta, micro-usd delta, window ms, second of admission, subject count,
 * then 5 limits per subject. The day and month keys are those of the admission.
 * Releases the lease and replaces the reserved estimate with the real usage.
 */
export const SETTLE = `
local now = tonumber(ARGV[1])
local id = ARGV[2]
local tokenDelta = tonumber(ARGV[3])
local usdDelta = tonumber(ARGV[4])
local window = tonumber(ARGV[5])
local reserved = tonumber(ARGV[6])
local n = tonumber(ARGV[7])
local second = math.floor(now / 1000)
local buckets = math.floor(window / 1000)

for i = 0, n - 1 do
  local k = i * 5
  local a = 7 + i * 5
  if tonumber(ARGV[a + 3]) > 0 then redis.call('ZREM', KEYS[k + 3], id) end
  if tonumber(ARGV[a + 2]) > 0 and tokenDelta ~= 0 then
    -- A bucket that has left the window no longer counts; usage beyond the estimate is then
    -- counted now, when it became known.
    if reserved > second - buckets and redis.call('HEXISTS', KEYS[k + 2], reserved) == 1 then
      redis.call('HINCRBY', KEYS[k + 2], reserved, tokenDelta)
    elseif tokenDelta > 0 then
      redis.call('HINCRBY', KEYS[k + 2], second, tokenDelta)
      redis.call('PEXPIRE', KEYS[k + 2], window + 1000)
    end
  end
  if tonumber(ARGV[a + 4]) > 0 and tokenDelta ~= 0 and redis.call('EXISTS', KEYS[k + 4]) == 1 then
    redis.call('INCRBY', KEYS[k + 4], tokenDelta)
  end
  if tonumber(ARGV[a + 5]) > 0 and usdDelta ~= 0 and redis.call('EXISTS', KEYS[k + 5]) == 1 then
    redis.call('INCRBY', KEYS[k + 5], usdDelta)
  end
end
return {1}
`;

/**
 * Read-only. ARGV: now, window ms, subject count. Returns per subject {requests in window, ms
 * until the newest leaves, tokens in window, ms until the newest bucket leaves, live leases,
 * day tokens, month micro-dollars}.
 */
export const PEEK = `
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local second = math.floor(now / 1000)
local buckets = math.floor(window / 1000)
local out = {}
for i = 0, n - 1 do
  local k = i * 5
  local requests = redis.call('ZCOUNT', KEYS[k + 1], '(' .. (now - window), '+inf')
  local requestsReset = 0
  if requests > 0 then
    local newest = redis.call('ZRANGE', KEYS[k + 1], -1, -1, 'WITHSCORES')
    requestsReset = tonumber(newest[2]) + window - now
  end
  local flat = redis.call('HGETALL', KEYS[k + 2])
  local tokens, newestBucket = 0, nil
  for j = 1, #flat, 2 do
    local b = tonumber(flat[j])
    if b > second - buckets then
      tokens = tokens + tonumber(flat[j + 1])
      if newestBucket == nil or b > newestBucket then newestBucket = b end
    end
  end
  local tokensReset = 0
  if newestBucket ~= nil then tokensReset = (newestBucket + buckets) * 1000 - now end
  local leases = redis.call('ZCOUNT', KEYS[k + 3], '(' .. now, '+inf')
  local day = tonumber(redis.call('GET', KEYS[k + 4]) or '0')
  local usd = tonumber(redis.call('GET', KEYS[k + 5]) or '0')
  out[#out + 1] = requests
  out[#out + 1] = math.ceil(requestsReset)
  out[#out + 1] = tokens
  out[#out + 1] = math.ceil(tokensReset)
  out[#out + 1] = leases
  out[#out + 1] = day
  out[#out + 1] = usd
end
return out
`;

/**
 * Undoes an admission whose answer never came back (its call timed out): ADMIT may have run all
 * the same, once Redis caught up, and its counts must not stay. A reservation is known to have
 * been admitted by its id in an rpm or concurrency set; then its estimate comes off the token and
 * spend counters too. With neither limit set nothing tells, and nothing is undone. Commands on
 * one connection run in order, so this runs after the ADMIT it undoes, if that ever runs.
 * ARGV: id, tokens, micro-usd, second of admission, subject count, then 5 limits per subject.
 * Returns {1} when it undid an admission, {0} otherwise.
 */
export const CANCEL = `
local id = ARGV[1]
local tokens = tonumber(ARGV[2])
local usd = tonumber(ARGV[3])
local reserved = ARGV[4]
local n = tonumber(ARGV[5])
local admitted = false
for i = 0, n - 1 do
  local k = i * 5
  local a = 5 + i * 5
  if tonumber(ARGV[a + 1]) > 0 and redis.call('ZREM', KEYS[k + 1], id) == 1 then admitted = true end
  if tonumber(ARGV[a + 3]) > 0 and redis.call('ZREM', KEYS[k + 3], id) == 1 then admitted = true end
end
if not admitted then return {0} end
for i = 0, n - 1 do
  local k = i * 5
  local a = 5 + i * 5
  if tonumber(ARGV[a + 2]) > 0 and tokens > 0 and redis.call('HEXISTS', KEYS[k + 2], reserved) == 1 then
    redis.call('HINCRBY', KEYS[k + 2], reserved, -tokens)
  end
  if tonumber(ARGV[a + 4]) > 0 and tokens > 0 and redis.call('EXISTS', KEYS[k + 4]) == 1 then
    redis.call('INCRBY', KEYS[k + 4], -tokens)
  end
  if tonumber(ARGV[a + 5]) > 0 and usd > 0 and redis.call('EXISTS', KEYS[k + 5]) == 1 then
    redis.call('INCRBY', KEYS[k + 5], -usd)
  end
end
return {1}
`;
