-- Mark counters as caught up in Postgres, unless they moved since they were read.
--
-- KEYS[1]  the shard's set of pending counters
-- KEYS[2]  the shard's flush lease
-- ARGV[1]  prefix of the shard's counters
-- ARGV[2]  this flusher's lease token
-- ARGV[3], ARGV[4], ...  member, the count that was written for it, ...
--
-- Returns how many members were removed. Releases the lease if it is still ours.

local removed = 0
for i = 3, #ARGV, 2 do
  local member = ARGV[i]
  local current = redis.call('GET', ARGV[1] .. member) or '-1'
  if current == ARGV[i + 1] then
    removed = removed + redis.call('SREM', KEYS[1], member)
  end
end
if redis.call('GET', KEYS[2]) == ARGV[2] then
  redis.call('DEL', KEYS[2])
end
return removed
