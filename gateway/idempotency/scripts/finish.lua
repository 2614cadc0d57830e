-- Record the answer of the attempt that holds an idempotency key, or free the key.
--
-- KEYS[1]  the key's entry
-- ARGV[1]  the attempt's token (nothing happens if the key is no longer its own)
-- ARGV[2]  the answer's status; '' frees the key (an answer that is not kept)
-- ARGV[3]  the answer's headers (JSON)
-- ARGV[4]  the answer's body
-- ARGV[5]  seconds the answer is kept
--
-- Returns 1 if done, 0 if the key was no longer this attempt's.

if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then
  return 0
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
  return 1
end
redis.call('HSET', KEYS[1], 'state', 'done', 'status', ARGV[2], 'headers', ARGV[3],
  'body', ARGV[4])
redis.call('HDEL', KEYS[1], 'token')
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
