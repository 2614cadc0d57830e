-- Mark counters as caught up in Postgres, unless they moved since they were read.
--
-- KEYS[1]  the shard's set of pending counters
-- KEYS[2]  the shard's flush lease
-- ARGV[1]  prefix of the shard's counters
-- ARGV[2]  this flusher's lease token
-- ARGV[3]  prefix of the shard's usage by model and backend
-- ARGV[4], ARGV[5], ARGV[6], ...  member, the count that was written for it, the version
--          of its usage by model that was written ('' when it had none), ...
--
-- Returns how many members were removed. Releases the lease if it is still ours.

local removed = 0
for i = 4, #ARGV, 3 do
  local member = ARGV[i]
  local current = redis.call('GET', ARGV[1] .. member) or '-1'
  local version = redis.call('HGET', ARGV[3] .. member, 'v') or ''
  if current == ARGV[i + 1] and version == ARGV[i + 2] then
    removed = removed + redis.call('SREM', KEYS[1], member)
  end
end
if redis.call('GET', KEYS[2]) == ARGV[2] then
  redis.call('DEL', KEYS[2])
end
return removed
