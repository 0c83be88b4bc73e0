-- refresh: the catalog changed in PostgreSQL (screening moved, its room changed, seats added):
-- rewrite the seat set, the start and the sold seats in one step, keeping every live hold. When
-- Redis does not have the screening yet it is loaded here; a concurrent first load that read
-- PostgreSQL before the change then finds it ready and writes nothing.
-- Seats gone from the layout stay listed while held or sold, so a hold or a ticket never points
-- at a seat Redis calls unknown; the first refresh or reload after their release drops them.
-- Sold seats are merged: PostgreSQL's are added, Redis's own are kept (a sale committed after the
-- caller read PostgreSQL must not be lost; too many sold is safe, too few is a double sale).
-- The row geometry (the rows hash) and the single-gap rule are rewritten as PostgreSQL has them.
-- A screening with a tombstone was deleted (forget.lua) after this caller read PostgreSQL: a
-- refresh then writes nothing, so the deleted screening does not come back.
-- KEYS: the common nine (lib.lua), then the tombstone (seatlock/keys.py screening_deleted),
--       then the rows hash (screening_rows).
-- ARGV: screening_id, now_ms, starts_at_ms, log_length (events kept for resuming watchers,
--       lib.lua publish; 0: none), seat_count, gaps ("1": the single-gap rule is on),
--       rows_count, seat_id * seat_count, then the rows hash's fields and values (rows_count
--       values in all), then sold pairs: seat_id, user_id, ...
-- Returns {OK, 1 when loaded now | 0 when updated, number of seats added}, or
-- {DELETED, screening_id} when the screening has a tombstone.
if redis.call('EXISTS', KEYS[#KEYS - 1]) == 1 then
  return {DELETED, ARGV[1]}
end
local now, starts_at, log_length = tonumber(ARGV[2]), ARGV[3], ARGV[4]
local count = tonumber(ARGV[5])
local seats_to, rows_to = 7 + count, 7 + count + tonumber(ARGV[7])
local was_ready = is_ready()
local old = {}
for _, seat in ipairs(redis.call('SMEMBERS', SEATS)) do
  old[seat] = true
end
local listed = {}
for i = 8, seats_to do
  listed[#listed + 1] = ARGV[i]
end
for _, seat in ipairs(redis.call('HKEYS', HOLDS)) do
  listed[#listed + 1] = seat
end
for i = rows_to + 1, #ARGV, 2 do
  redis.call('HSET', SOLD, ARGV[i], ARGV[i + 1])
end
for _, seat in ipairs(redis.call('HKEYS', SOLD)) do
  listed[#listed + 1] = seat
end

redis.call('DEL', SEATS)
for start = 1, #listed, 500 do
  redis.call('SADD', SEATS, unpack(listed, start, math.min(start + 499, #listed)))
end
redis.call('DEL', KEYS[#KEYS])
call_list('HSET', KEYS[#KEYS], ARGV, seats_to + 1, rows_to)
local changes = {}
for i = 8, seats_to do
  if not old[ARGV[i]] and redis.call('HEXISTS', SOLD, ARGV[i]) == 0 then
    changes[#changes + 1] = change(ARGV[i], 'available')
  end
end
redis.call('HSET', META, 'starts_at', starts_at, 'log', log_length, 'gaps', ARGV[6], 'ready', '1')
if was_ready then
  -- Watchers learn of the new seats; the event moves the version and resets mirrors even without
  -- them (seats may be gone, the start may have moved).
  publish(now, changes, true)
  return {OK, 0, #changes}
end
local version = tonumber(redis.call('GET', VERSION) or '0')
redis.call('SET', VERSION, string.format('%.0f', math.max(version + 1, now * 1000)))
publish(now, {}, true)
return {OK, 1, 0}
