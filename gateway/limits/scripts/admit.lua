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
--
-- Returns {outcome, day, requests in window, microseconds until the oldest of them
-- leaves the window, images counted today, seconds until the next UTC midnight}
-- with outcome 1 = admitted, 2 = rate limited, 3 = over the daily quota,
-- 0 = today's counter is missing: call again with the count from Postgres.
-- Time is Redis's, so every gateway process agrees on windows and days.

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

local used = redis.call('GET', counter)
if not used then
  if ARGV[6] == '' or tonumber(ARGV[7]) ~= day then
    return {0, day, 0, 0, 0, to_midnight}
  end
  used = ARGV[6]
  redis.call('SET', counter, used, 'EX', COUNTER_TTL)
end
used = tonumber(used)

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
else
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], 60000)
  used = redis.call('INCRBY', counter, n)
  redis.call('SADD', KEYS[3], ARGV[5] .. ':' .. day)
  in_window = in_window + 1
end

local reset = 0
if in_window > 0 then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  reset = tonumber(oldest[2]) + WINDOW - now
end
return {outcome, day, in_window, reset, used, to_midnight}
