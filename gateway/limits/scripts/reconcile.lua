-- Add images counted while Redis was unreachable (redis.on_failure: open).
--
-- KEYS[1]  the day's image counter
-- KEYS[2]  the shard's set of counters that Postgres has not caught up with
-- KEYS[3]  the day's usage by model and backend (see admit.lua)
-- ARGV[1]  images to add
-- ARGV[2]  the day's count from Postgres, used if Redis lost the counter
-- ARGV[3]  the counter's member in that set ('<key id>:<day>')
-- ARGV[4]  the day's usage by label from Postgres, as JSON [[label, images, credits], ...],
--          used with ARGV[2]
-- ARGV[5], ARGV[6], ...  label, images counted under it, ...
--
-- Returns the counter's new value.

local TTL = 259200

if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', TTL)
  redis.call('DEL', KEYS[3])
  redis.call('HSET', KEYS[3], 'v', 0)
  for _, row in ipairs(cjson.decode(ARGV[4])) do
    redis.call('HSET', KEYS[3], 'i:' .. row[1], row[2], 'c:' .. row[1], row[3])
  end
  redis.call('EXPIRE', KEYS[3], TTL)
end
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
for i = 5, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[3], 'i:' .. ARGV[i], ARGV[i + 1])
end
if redis.call('HINCRBY', KEYS[3], 'v', 1) == 1 then
  redis.call('EXPIRE', KEYS[3], TTL)
end
redis.call('SADD', KEYS[2], ARGV[3])
return total
