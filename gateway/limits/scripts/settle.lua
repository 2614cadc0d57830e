-- Give back the images of a reservation whose process died before delivering them
-- (found in its journal), once only, however many processes try, and not at all if
-- the process had released it already (release.lua sets the same marker).
--
-- KEYS[1]  the key's rolling-window log of admitted requests
-- KEYS[2]  prefix of the key's per-day image counters (the UTC day number is appended)
-- KEYS[3]  the shard's set of counters that Postgres has not caught up with
-- KEYS[4]  the reservation's marker (set once it is settled)
-- ARGV[1]  images reserved
-- ARGV[2]  the admission's member in the log
-- ARGV[3]  the API key id
-- ARGV[4]  the UTC day of the admission; -1 if the process died awaiting the reply
--
-- Returns the images given back: 0 if already settled, never admitted, or the
-- counter is gone.

local SETTLED_TTL = 259200  -- as long as a counter lives

local day = tonumber(ARGV[4])
if day < 0 then
  -- Admitted only if the log has it (it keeps 60 s): otherwise, or if it is older,
  -- leave the charge: over-counting one request is safe, giving images away is not.
  local admitted_at = redis.call('ZSCORE', KEYS[1], ARGV[2])
  if not admitted_at then
    return 0
  end
  day = math.floor(tonumber(admitted_at) / 86400000000)
end
local counter = KEYS[2] .. day
local current = redis.call('GET', counter)
if not current then
  return 0
end
if not redis.call('SET', KEYS[4], '1', 'NX', 'EX', SETTLED_TTL) then
  return 0
end
local n = math.min(tonumber(ARGV[1]), tonumber(current))
redis.call('DECRBY', counter, n)
redis.call('SADD', KEYS[3], ARGV[3] .. ':' .. day)
return n
