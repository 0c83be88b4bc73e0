-- forget: the screening was deleted in PostgreSQL: drop every key of it, leases included, so no
-- script accepts anything for it any more (they answer NOT_LOADED, and loading finds no
-- screening). Only an empty reset event is published (no version: that key is gone too), so
-- processes mirroring the screening (seatlock/engine/mirrors.py) drop it; watchers get nothing.
-- KEYS: the common nine (lib.lua), then the lease of each seat in ARGV order (the caller reads
-- them from the holds index; a lease written in between dies with its TTL, harmlessly).
-- ARGV: screening_id, now_ms, seat_id...
-- Returns {OK, number of keys deleted}.
local deleted = 0
for i = 1, #KEYS do
  if KEYS[i] ~= EVENTS then
    deleted = deleted + redis.call('DEL', KEYS[i])
  end
end
redis.call('PUBLISH', EVENTS, string.format('{"screening_id":%d,"ts":%d,"seats":[],"reset":true}',
  ARGV[1], ARGV[2]))
return {OK, deleted}
