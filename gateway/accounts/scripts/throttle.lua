-- Admit one attempt if fewer than ARGV[1] were admitted in the last ARGV[2] ms.
--
-- KEYS[1]  the log of admitted attempts (sorted set: score = milliseconds)
-- ARGV[1]  attempts allowed per window
-- ARGV[2]  window in milliseconds
-- ARGV[3]  a unique member for this attempt
--
-- Returns 0 when admitted, else the milliseconds until an attempt would be.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(1, tonumber(oldest[2]) + window - now)
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return 0
