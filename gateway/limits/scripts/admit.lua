-- Admit one generation request, or refuse it without changing anything.
--
-- KEYS[1]  rolling-window log of admitted requests (sorted set: score = microseconds)
-- KEYS[2]  prefix of the per-day image counters (the UTC day number is appended)
-- KEYS[3]  the shard's set of counters that Postgres has not caught up with
-- ARGV[1]  requests allowed in any rolling 60 s
-- ARGV[2]  images allowed per UTC day
-- ARGV[3]  images asked for (n)
-- ARGV[4]  a unique id for this request (the log's member)
-- ARGV[5]  the API key id
-- ARGV[6]  today's count from Postgres, when the counter had to be rebuilt ('' otherwise)
-- ARGV[7]  the day that count is for ('' otherwise)
-- ARGV[8]  the time in microseconds since the epoch; '' = Redis's own clock (tests pin it)
-- KEYS[4]  prefix of the key's per-day usage by model and backend (the day is appended;
--          a hash: 'i:<label>' images, 'c:<label>' credits, 'v' a version that every
--          change moves, for the flusher)
-- ARGV[9]  the label the reservation is counted under: '<model>\31<backend>'
-- ARGV[10] with ARGV[6]: that day's usage by label from Postgres, as JSON
--          [[label, images, credits], ...] ('' otherwise)
--
-- With credits (the key's plan has monthly_credits), also:
-- KEYS[5]  the user's balances (hash: m = month of the allowance, mb = what is left of
--          it, pb = purchased credits), in the same slot: the shard is the user's
-- KEYS[6]  the shard's stream of ledger entries not yet in Postgres
-- ARGV[11] the plan's monthly allowance
-- ARGV[12] credits per image
-- ARGV[13] the user id
-- ARGV[14] the request (or job) id, for the ledger
-- ARGV[15] when the balances had to be rebuilt from the ledger: the month they are for
--          ('' otherwise), ARGV[16] the allowance left in it (-1: not reset in that
--          month), ARGV[17] the purchased credits
--
-- Returns {outcome, day, requests in window, microseconds until the oldest of them
-- leaves the window, images counted today, seconds until the next UTC midnight}
-- and, with credits, {..., allowance left, purchased left, credits taken from the
-- purchased ones, month}; outcome 1 = admitted, 2 = rate limited, 3 = over the daily
-- quota, 4 = not enough credits, 0 = today's counter is missing: call again with the
-- count from Postgres, 5 = the balances are missing: call again with them rebuilt.
-- Time is Redis's, so every gateway process agrees on windows, days and months.

--#include ledger_entry

local WINDOW = 60000000
local COUNTER_TTL = 259200  -- three days, so a late flush can still read yesterday

local now
if ARGV[8] ~= nil and ARGV[8] ~= '' then
  now = tonumber(ARGV[8])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local seconds = math.floor(now / 1000000)
local day = math.floor(seconds / 86400)
local to_midnight = (day + 1) * 86400 - seconds
local counter = KEYS[2] .. day
local usage = KEYS[4] .. day

local used = redis.call('GET', counter)
if not used then
  if ARGV[6] == '' or tonumber(ARGV[7]) ~= day then
    return {0, day, 0, 0, 0, to_midnight}
  end
  used = ARGV[6]
  redis.call('SET', counter, used, 'EX', COUNTER_TTL)
  redis.call('DEL', usage)
  redis.call('HSET', usage, 'v', 0)
  if ARGV[10] ~= '' then
    for _, row in ipairs(cjson.decode(ARGV[10])) do
      redis.call('HSET', usage, 'i:' .. row[1], row[2], 'c:' .. row[1], row[3])
    end
  end
  redis.call('EXPIRE', usage, COUNTER_TTL)
end
used = tonumber(used)

-- Credits: the month's allowance is set (once) before anything is decided; a refusal
-- changes nothing else. Months count from 1970-01 (civil-from-days, proleptic Gregorian).
local credited = ARGV[11] ~= nil
local cost, monthly, purchased, month = 0, 0, 0, 0
if credited then
  local z = day + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  month = (y - 1970) * 12 + m - 1
  local held = redis.call('HMGET', KEYS[5], 'm', 'mb', 'pb')
  if not held[1] then
    if ARGV[15] == '' then
      return {5, day, 0, 0, used, to_midnight}
    end
    local seeded = tonumber(ARGV[16]) >= 0
    held = {seeded and ARGV[15] or '-1', seeded and ARGV[16] or '0', ARGV[17]}
    redis.call('HSET', KEYS[5], 'm', held[1], 'mb', held[2], 'pb', held[3])
  end
  monthly, purchased = tonumber(held[2]), tonumber(held[3])
  if tonumber(held[1]) ~= month then
    monthly = tonumber(ARGV[11])
    redis.call('HSET', KEYS[5], 'm', month, 'mb', monthly)
    ledger_entry(KEYS[6], 'monthly_reset', 'reset:' .. ARGV[13] .. ':' .. month, ARGV[13], '',
      monthly, monthly, 0, month, '', now, '')
  end
  cost = tonumber(ARGV[3]) * tonumber(ARGV[12])
end

local limit = tonumber(ARGV[1])
local quota = tonumber(ARGV[2])
local n = tonumber(ARGV[3])

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - WINDOW)
local in_window = redis.call('ZCARD', KEYS[1])

local outcome = 1
if in_window >= limit then
  outcome = 2
elseif used + n > quota then
  outcome = 3
elseif cost > monthly + purchased then
  outcome = 4
else
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], 60000)
  used = redis.call('INCRBY', counter, n)
  redis.call('HINCRBY', usage, 'i:' .. ARGV[9], n)
  if cost > 0 then
    redis.call('HINCRBY', usage, 'c:' .. ARGV[9], cost)
  end
  if redis.call('HINCRBY', usage, 'v', 1) == 1 then
    redis.call('EXPIRE', usage, COUNTER_TTL)  -- made here, not seeded: it lives as the counter
  end
  redis.call('SADD', KEYS[3], ARGV[5] .. ':' .. day)
  in_window = in_window + 1
end

local taken_purchased = 0
if outcome == 1 and cost > 0 then
  local from_monthly = math.min(cost, monthly)
  taken_purchased = cost - from_monthly
  monthly, purchased = monthly - from_monthly, purchased - taken_purchased
  redis.call('HSET', KEYS[5], 'mb', monthly, 'pb', purchased)
  ledger_entry(KEYS[6], 'charge', ARGV[4], ARGV[13], ARGV[5], -cost, -from_monthly,
    -taken_purchased, month, ARGV[14], now, '')
end

local reset = 0
if in_window > 0 then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  reset = tonumber(oldest[2]) + WINDOW - now
end
if credited then
  return {outcome, day, in_window, reset, used, to_midnight, monthly, purchased, taken_purchased,
    month}
end
return {outcome, day, in_window, reset, used, to_midnight}
