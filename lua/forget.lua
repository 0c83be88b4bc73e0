-- forget: the screening was deleted in PostgreSQL: drop every key of it, leases included, so no
-- script accepts anything for it any more (they answer NOT_LOADED, and loading finds no
-- screening). Only an empty reset event is published (no version: that key is gone too), so
-- processes mirroring the screening (seatlock/engine/mirrors.py) drop it; with a tombstone (the
-- screening was deleted) it also says "deleted", and every process closes the screening's
-- watchers (4404, seatlock/engine/events.py Hub).
-- With a tombstone_ms it also leaves the screening's tombstone: a load or refresh in another
-- process that read the layout from PostgreSQL before the delete committed, and writes it after
-- this ran, finds the tombstone and writes nothing (load.lua, refresh.lua: DELETED), where it
-- would otherwise bring the screening back for good. Screening ids are never reused, so the
-- tombstone may outlive any such straggler by far; it has a TTL only so deleted screenings do
-- not pile up in Redis for ever.
-- KEYS: the common nine (lib.lua), then the lease of each seat in ARGV order (the caller reads
-- them from the holds index; a lease written in between dies with its TTL, harmlessly), then
-- the tombstone (seatlock/keys.py screening_deleted), then the rows hash (screening_rows).
-- ARGV: screening_id, now_ms, tombstone_ms (the tombstone's TTL; 0: leave none, as a refresh
--       that found no screening does: the id may be one not created yet), seat_id...
-- Returns {OK, number of keys deleted (the tombstone not counted)}.
local tombstone, tombstone_ms = KEYS[#KEYS - 1], tonumber(ARGV[3])
local deleted = 0
for i = 1, #KEYS do
  if KEYS[i] ~= EVENTS and KEYS[i] ~= tombstone then
    deleted = deleted + redis.call('DEL', KEYS[i])
  end
end
if tombstone_ms > 0 then
  redis.call('SET', tombstone, ARGV[2], 'PX', ARGV[3])
end
local deleted_field = tombstone_ms > 0 and ',"deleted":true' or ''
redis.call('PUBLISH', EVENTS, string.format(
  '{"screening_id":%d,"ts":%d,"seats":[],"reset":true%s}', ARGV[1], ARGV[2], deleted_field))
return {OK, deleted}
