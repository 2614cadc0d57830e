-- Read a batch of counters that Postgres has not caught up with, for one shard.
--
-- KEYS[1]  the shard's set of pending counters (members '<key id>:<day>')
-- KEYS[2]  the shard's flush lease
-- ARGV[1]  prefix of the shard's counters (the member is appended)
-- ARGV[2]  how many at most
-- ARGV[3]  this flusher's lease token
-- ARGV[4]  lease length in milliseconds
-- ARGV[5]  prefix of the shard's usage by model and backend (the member is appended)
--
-- Returns {} when nothing is pending or another flusher holds the lease, else {seconds,
-- microseconds, member, count, usage, member, count, usage, ...} read at that Redis time;
-- count -1 when the counter is gone, usage the day's usage hash as a flat list of fields
-- and values (empty when there is none). The counters live in the shard's hash slot, like
-- the set.

if redis.call('SCARD', KEYS[1]) == 0 then
  return {}
end
if not redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[4]) then
  if redis.call('GET', KEYS[2]) ~= ARGV[3] then
    return {}
  end
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
local members = redis.call('SRANDMEMBER', KEYS[1], tonumber(ARGV[2]))
local t = redis.call('TIME')
local out = {t[1], t[2]}
for _, member in ipairs(members) do
  out[#out + 1] = member
  out[#out + 1] = redis.call('GET', ARGV[1] .. member) or '-1'
  out[#out + 1] = redis.call('HGETALL', ARGV[5] .. member)
end
return out
