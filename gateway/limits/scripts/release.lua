-- Give back images that were reserved but not delivered (a failed or short upstream call).
--
-- KEYS[1]  the day's image counter
-- KEYS[2]  the shard's set of counters that Postgres has not caught up with
-- ARGV[1]  images to give back
-- ARGV[2]  the counter's member in that set ('<key id>:<day>')
--
-- Returns the counter's new value, or -1 if the counter is gone (nothing to give back).

local current = redis.call('GET', KEYS[1])
if not current then
  return -1
end
local n = math.min(tonumber(ARGV[1]), tonumber(current))
local left = redis.call('DECRBY', KEYS[1], n)
redis.call('SADD', KEYS[2], ARGV[2])
return left
