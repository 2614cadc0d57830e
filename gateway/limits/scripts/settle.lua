-- Give back the images (and credits) of a reservation whose process died before
-- delivering them (found in its journal), once only, however many processes try, and not
-- at all if the process had released it already (release.lua sets the same marker).
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
-- KEYS[5]  prefix of the key's per-day usage by model and backend (see admit.lua)
-- ARGV[5]  the label the reservation was counted under
--
-- With credits also: KEYS[6] the user's balances, KEYS[7] the shard's ledger stream,
-- ARGV[6] credits per image, ARGV[7] how many of the credits taken were purchased (-1:
-- unknown, the reply never came: all are given back to the allowance), ARGV[8] the month
-- they were taken in (-1: unknown), ARGV[9] the user id.
--
-- Returns the images given back: 0 if already settled, never admitted, or the
-- counter is gone.

local SETTLED_TTL = 259200  -- as long as a counter lives

local day = tonumber(ARGV[4])
local month = tonumber(ARGV[8] or '-1')
if day < 0 then
  -- Admitted only if the log has it (it keeps 60 s): otherwise, or if it is older,
  -- leave the charge: over-counting one request is safe, giving images away is not.
  local admitted_at = redis.call('ZSCORE', KEYS[1], ARGV[2])
  if not admitted_at then
    return 0
  end
  day = math.floor(tonumber(admitted_at) / 86400000000)
  if #KEYS >= 6 then
    month = tonumber(redis.call('HGET', KEYS[6], 'm') or '-1')  -- if it is still that month
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
    if (y - 1970) * 12 + m - 1 ~= month then
      month = -2  -- taken in an earlier month: that allowance has lapsed
    end
  end
end
local counter = KEYS[2] .. day
local current = redis.call('GET', counter)
if not current and #KEYS < 6 then
  return 0
end
if not redis.call('SET', KEYS[4], '1', 'NX', 'EX', SETTLED_TTL) then
  return 0
end
local n = 0
if current then
  n = math.min(tonumber(ARGV[1]), tonumber(current))
  redis.call('DECRBY', counter, n)
  redis.call('SADD', KEYS[3], ARGV[3] .. ':' .. day)
end
--#include usage_back
--#include ledger_entry
local price = #KEYS >= 6 and tonumber(ARGV[6]) or 0
usage_back(KEYS[5] .. day, ARGV[5], tonumber(ARGV[1]), tonumber(ARGV[1]) * price)
if #KEYS >= 6 and redis.call('EXISTS', KEYS[6]) == 1 then
  local credits = tonumber(ARGV[1]) * price
  local to_purchased = math.min(credits, math.max(0, tonumber(ARGV[7])))
  local to_monthly = credits - to_purchased
  if tonumber(redis.call('HGET', KEYS[6], 'm')) ~= month then
    to_monthly = 0
  end
  if to_purchased + to_monthly > 0 then
    redis.call('HINCRBY', KEYS[6], 'pb', to_purchased)
    redis.call('HINCRBY', KEYS[6], 'mb', to_monthly)
    ledger_entry(KEYS[7], 'refund', ARGV[2] .. ':r', ARGV[9], ARGV[3], to_purchased + to_monthly,
      to_monthly, to_purchased, month, '', nil, '')
  end
end
return n
