-- Give back images that were reserved but not delivered (a failed or short upstream call),
-- and their credits, once only: a release re-sent after a timeout or a reconnect, or one
-- that a process settling a journal got to first, gives back nothing.
--
-- KEYS[1]  the day's image counter
-- KEYS[2]  the shard's set of counters that Postgres has not caught up with
-- KEYS[3]  the reservation's marker (set once it is settled; see settle.lua)
-- ARGV[1]  images to give back
-- ARGV[2]  the counter's member in that set ('<key id>:<day>')
-- KEYS[4]  the day's usage by model and backend (see admit.lua)
-- ARGV[3]  the label the reservation was counted under
--
-- With credits also (see admit.lua):
-- KEYS[5]  the user's balances         KEYS[6]  the shard's ledger stream
-- ARGV[4]  credits to give back        ARGV[5]  at most this many of them were purchased
-- ARGV[6]  the month they were taken in (the allowance part lapses with its month)
-- ARGV[7]  the user id   ARGV[8]  the key id   ARGV[9]  the ledger entry's id
-- ARGV[10] the request (or job) id
--
-- Returns the counter's new value, -1 if the counter is gone (no images to give back),
-- -2 if the reservation was settled already.

local SETTLED_TTL = 259200  -- as long as a counter lives

local current = redis.call('GET', KEYS[1])
if not current and #KEYS < 5 then
  return -1
end
if not redis.call('SET', KEYS[3], '1', 'NX', 'EX', SETTLED_TTL) then
  return -2
end
local left = -1
if current then
  local n = math.min(tonumber(ARGV[1]), tonumber(current))
  left = redis.call('DECRBY', KEYS[1], n)
  redis.call('SADD', KEYS[2], ARGV[2])
end
--#include usage_back
--#include ledger_entry
usage_back(KEYS[4], ARGV[3], tonumber(ARGV[1]), #KEYS >= 5 and tonumber(ARGV[4]) or 0)
if #KEYS >= 5 and tonumber(ARGV[4]) > 0 and redis.call('EXISTS', KEYS[5]) == 1 then
  local credits = tonumber(ARGV[4])
  local to_purchased = math.min(credits, math.max(0, tonumber(ARGV[5])))
  local to_monthly = credits - to_purchased
  if tonumber(redis.call('HGET', KEYS[5], 'm')) ~= tonumber(ARGV[6]) then
    to_monthly = 0
  end
  if to_purchased + to_monthly > 0 then
    redis.call('HINCRBY', KEYS[5], 'pb', to_purchased)
    redis.call('HINCRBY', KEYS[5], 'mb', to_monthly)
    ledger_entry(KEYS[6], 'refund', ARGV[9], ARGV[7], ARGV[8], to_purchased + to_monthly,
      to_monthly, to_purchased, tonumber(ARGV[6]), ARGV[10], nil, '')
  end
end
return left
