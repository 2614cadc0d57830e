-- Included by the scripts that give a reservation back (release, settle) or move it
-- (attribute): its images and credits leave the day's usage under its label.
local function usage_back(usage, label, images, credits)
  if redis.call('EXISTS', usage) == 0 then
    return 0, 0  -- gone with the day's counter, or made by a gateway that kept none
  end
  local held = tonumber(redis.call('HGET', usage, 'i:' .. label) or '0')
  local n = math.min(images, held)
  if n > 0 then
    redis.call('HINCRBY', usage, 'i:' .. label, -n)
  end
  local spent = tonumber(redis.call('HGET', usage, 'c:' .. label) or '0')
  local c = math.min(credits, spent)
  if c > 0 then
    redis.call('HINCRBY', usage, 'c:' .. label, -c)
  end
  redis.call('HINCRBY', usage, 'v', 1)
  return n, c
end
