-- Give back images that were reserved but not delivered (a failed or short upstream call),
-- and their credits, once only: a release re-sent after a timeout or a reconnect, or one
-- that a process settling a journal got to first, gives back nothing.
--
-- KEYS[1]  the day's image counter
-- KEYS[2]  the shard's set of counters that Postgres has not caught up with
-- KEYS[3]  the reservation's marker (set once it is settled; see settle.lua)
-- ARGV[1]  images to give back
-- ARGV[2]  the counter's member in that set ('<key id>:<day>')
--
-- With credits also (see admit.lua):
-- KEYS[4]  the user's balances         KEYS[5]  the shard's ledger stream
-- ARGV[3]  credits to give back        ARGV[4]  at most this many of them were purchased
-- ARGV[5]  the month they were taken in (the allowance part lapses with its month)
-- ARGV[6]  the user id   ARGV[7]  the key id   ARGV[8]  the ledger entry's id
-- ARGV[9]  the request (or job) id
--
-- Returns the counter's new value, -1 if the counter is gone (no images to give back),
-- -2 if the reservation was settled already.

local SETTLED_TTL = 259200  -- as long as a counter lives

local current = redis.call('GET', KEYS[1])
if not current and #KEYS < 4 then
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
if #KEYS >= 4 and tonumber(ARGV[3]) > 0 and redis.call('EXISTS', KEYS[4]) == 1 then
  local credits = tonumber(ARGV[3])
  local to_purchased = math.min(credits, math.max(0, tonumber(ARGV[4])))
  local to_monthly = credits - to_purchased
  if tonumber(redis.call('HGET', KEYS[4], 'm')) ~= tonumber(ARGV[5]) then
    to_monthly = 0
  end
  if to_purchased + to_monthly > 0 then
    redis.call('HINCRBY', KEYS[4], 'pb', to_purchased)
    redis.call('HINCRBY', KEYS[4], 'mb', to_monthly)
    local t = redis.call('TIME')
    redis.call('XADD', KEYS[5], '*', 'k', 'refund', 'i', ARGV[8], 'u', ARGV[6], 'key', ARGV[7],
      'a', to_purchased + to_monthly, 'md', to_monthly, 'pd', to_purchased, 'mo', ARGV[5],
      'r', ARGV[9], 't', tonumber(t[1]) * 1000000 + tonumber(t[2]))
  end
end
return left
