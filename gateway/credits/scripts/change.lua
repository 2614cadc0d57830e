-- An operator's change of a user's purchased credits (a grant, or a negative adjustment),
-- once per idempotency key: a repeat answers the balances without changing them again.
--
-- KEYS[1]  the user's balances (hash: m, mb, pb; see gateway/limits/scripts/admit.lua)
-- KEYS[2]  the shard's stream of ledger entries not yet in Postgres
-- KEYS[3]  the change's marker (what it was: amount and reason, digested)
-- ARGV[1]  credits to add (negative: to take away)
-- ARGV[2]  the ledger entry's id
-- ARGV[3]  the user id
-- ARGV[4]  the reason
-- ARGV[5]  the kind: grant or adjust
-- ARGV[6]  the request's fingerprint (the marker's value)
-- ARGV[7]  how long the marker is kept, in seconds
-- ARGV[8]  when the balances had to be rebuilt from the ledger: the month they are for
--          ('' otherwise), ARGV[9] the allowance left in it (-1: not reset in that
--          month), ARGV[10] the purchased credits
--
-- Returns {status, allowance left, purchased, month of the allowance}: status 1 = done,
-- 2 = done before (a repeat), 3 = the key was used for a different change, 4 = it
-- would take more purchased credits than there are, 5 = the balances are missing: call
-- again with them rebuilt.

--#include gateway.limits:ledger_entry

local held = redis.call('HMGET', KEYS[1], 'm', 'mb', 'pb')
if not held[1] then
  if ARGV[8] == '' then
    return {5, 0, 0, 0}
  end
  local seeded = tonumber(ARGV[9]) >= 0
  held = {seeded and ARGV[8] or '-1', seeded and ARGV[9] or '0', ARGV[10]}
  redis.call('HSET', KEYS[1], 'm', held[1], 'mb', held[2], 'pb', held[3])
end
local month, monthly, purchased = tonumber(held[1]), tonumber(held[2]), tonumber(held[3])

local done = redis.call('GET', KEYS[3])
if done then
  return {done == ARGV[6] and 2 or 3, monthly, purchased, month}
end
local amount = tonumber(ARGV[1])
if purchased + amount < 0 then
  return {4, monthly, purchased, month}
end
redis.call('SET', KEYS[3], ARGV[6], 'EX', tonumber(ARGV[7]))
purchased = redis.call('HINCRBY', KEYS[1], 'pb', amount)
ledger_entry(KEYS[2], ARGV[5], ARGV[2], ARGV[3], '', amount, 0, amount, month, '', nil,
  ARGV[4])
return {1, monthly, purchased, month}
