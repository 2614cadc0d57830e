-- Look up a cached key record, or elect this caller to load it from Postgres.
--
-- KEYS[1]  the cached record ('-' for "no such key")
-- KEYS[2]  the load lock for that record
-- ARGV[1]  lock length in milliseconds
--
-- Returns {1, record} on a hit; {0} when the caller holds the lock and must load the
-- record; {2} when another caller is loading it (wait for the record to appear).

local record = redis.call('GET', KEYS[1])
if record then
  return {1, record}
end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then
  return {0}
end
return {2}
