-- Count delivered images under the backend that made them, when it is not the one the
-- reservation was counted under at admission (a fallback answered): they move from one
-- label of the day's usage to the other, with their credits.
--
-- KEYS[1]  the day's usage by model and backend (see admit.lua)
-- KEYS[2]  the shard's set of counters that Postgres has not caught up with
-- ARGV[1]  the label counted under at admission     ARGV[2]  the label to count under
-- ARGV[3]  images                                    ARGV[4]  their credits
-- ARGV[5]  the counter's member in that set ('<key id>:<day>')
--
-- Returns the images moved (0 when the day's usage is gone).

--#include usage_back
local n, credits = usage_back(KEYS[1], ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4]))
if n > 0 then
  redis.call('HINCRBY', KEYS[1], 'i:' .. ARGV[2], n)
  if credits > 0 then
    redis.call('HINCRBY', KEYS[1], 'c:' .. ARGV[2], credits)
  end
  redis.call('SADD', KEYS[2], ARGV[5])
end
return n
