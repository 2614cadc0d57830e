-- Give back images that were reserved but not delivered (a failed or short upstream call),
-- once only: a release re-sent after a timeout or a reconnect, or one that a process
-- settling a journal got to first, gives back nothing.
--
-- KEYS[1]  the day's image counter
-- KEYS[2]  the shard's set of counters that Postgres has not caught up with
-- KEYS[3]  the reservation's marker (set once it is settled; see settle.lua)
-- ARGV[1]  images to give back
-- ARGV[2]  the counter's member in that set ('<key id>:<day>')
--
-- Returns the counter's new value, -1 if the counter is gone (nothing to give back),
-- -2 if the reservation was settled already.

local SETTLED_TTL = 259200  -- as long as a counter lives

local current = redis.call('GET', KEYS[1])
if not current then
  return -1
end
if not redis.call('SET', KEYS[3], '1', 'NX', 'EX', SETTLED_TTL) then
  return -2
end
local n = math.min(tonumber(ARGV[1]), tonumber(current))
local left = redis.call('DECRBY', KEYS[1], n)
redis.call('SADD', KEYS[2], ARGV[2])
return left
