-- Add images counted while Redis was unreachable (redis.on_failure: open).
--
-- KEYS[1]  the day's image counter
-- KEYS[2]  the shard's set of counters that Postgres has not caught up with
-- ARGV[1]  images to add
-- ARGV[2]  the day's count from Postgres, used if Redis lost the counter
-- ARGV[3]  the counter's member in that set ('<key id>:<day>')
--
-- Returns the counter's new value.

if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', 259200)
end
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[3])
return total
