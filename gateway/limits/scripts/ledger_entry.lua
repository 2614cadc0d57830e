-- Included by the scripts that change a user's balances: appends one entry to the shard's
-- stream of ledger entries not yet in Postgres, packed in one field 'e' (one string for
-- Redis to store and the flusher to read, not ten fields): kind, entry id, user, key,
-- amount, allowance part, purchased part, month, reference, microseconds since the
-- epoch (nil: Redis's clock now) and reason, joined by \31 (the reason, free text,
-- last). Unpacked by gateway/db/credits.py.
local function ledger_entry(stream, kind, id, user, key, amount, monthly, purchased, month,
                            reference, micros, reason)
  if micros == nil then
    local t = redis.call('TIME')
    micros = tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  redis.call('XADD', stream, '*', 'e', table.concat({kind, id, user, key,
    string.format('%d', amount), string.format('%d', monthly),
    string.format('%d', purchased), string.format('%d', month), reference,
    string.format('%d', micros), reason}, '\31'))
end
