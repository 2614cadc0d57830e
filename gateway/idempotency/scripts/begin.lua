-- Take an idempotency key for a request, or say who has it.
--
-- KEYS[1]  the key's entry (a hash; one per user and key)
-- ARGV[1]  the request's fingerprint (method, path and a digest of the body)
-- ARGV[2]  a token naming this attempt (finish.lua checks it)
-- ARGV[3]  seconds the key stays taken if this attempt never finishes
--
-- Returns false if the key was free and is now this attempt's; otherwise the entry:
-- {fingerprint, state ('running' or 'done'), status, headers, body}.

if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HMGET', KEYS[1], 'fingerprint', 'state', 'status', 'headers', 'body')
end
redis.call('HSET', KEYS[1], 'fingerprint', ARGV[1], 'state', 'running', 'token', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return false
