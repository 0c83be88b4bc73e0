-- forget: the screening was deleted in PostgreSQL: drop every key of it, leases included, so no
-- script accepts anything for it any more (they answer NOT_LOADED, and loading finds no
-- screening). Nothing is published: the screening is gone, watchers have nothing to update.
-- KEYS: the common eight (lib.lua), then the lease of each seat in ARGV order (the caller reads
-- them from the holds index; a lease written in between dies with its TTL, harmlessly).
-- ARGV: screening_id, now_ms, seat_id...
-- Returns {OK, number of keys deleted}.
local deleted = 0
for i = 1, #KEYS do
  if KEYS[i] ~= EVENTS then
    deleted = deleted + redis.call('DEL', KEYS[i])
  end
end
return {OK, deleted}
