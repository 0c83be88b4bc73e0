-- refresh: the catalog changed in PostgreSQL (screening moved, its room changed, seats added):
-- rewrite the seat set, the start and the sold seats in one step, keeping every live hold. When
-- Redis does not have the screening yet it is loaded here; a concurrent first load that read
-- PostgreSQL before the change then finds it ready and writes nothing.
-- Seats gone from the layout stay listed while held or sold, so a hold or a ticket never points
-- at a seat Redis calls unknown; the first refresh or reload after their release drops them.
-- Sold seats are merged: PostgreSQL's are added, Redis's own are kept (a sale committed after the
-- caller read PostgreSQL must not be lost; too many sold is safe, too few is a double sale).
-- The row geometry (the rows hash) and the single-gap rule are rewritten as PostgreSQL has them.
-- moved: the screening moved to another room. Seats belong to rooms, so no hold can stand in the
-- new one: every hold goes, as release and sweep drop them (index, both zsets, the leases given:
-- a lease written after the caller read the index has no index record left, so nothing counts it,
-- and it dies with its TTL), freeing the holders' per-user cap. The event says "moved" (and has
-- no seats): watchers are sent the new map (api/websockets.py), not the new seats one by one.
-- A screening with a tombstone was deleted (forget.lua) after this caller read PostgreSQL: a
-- refresh then writes nothing, so the deleted screening does not come back.
-- KEYS: the common nine (lib.lua), then the lease of each held seat (moved only: the caller reads
--       them from the holds index), then the tombstone (seatlock/keys.py screening_deleted),
--       then the rows hash (screening_rows).
-- ARGV: screening_id, now_ms, moved ("1": the room changed, every hold goes), starts_at_ms,
--       log_length (events kept for resuming watchers, lib.lua publish; 0: none), seat_count,
--       gaps ("1": the single-gap rule is on), rows_count, seat_id * seat_count, then the rows
--       hash's fields and values (rows_count values in all), then sold pairs: seat_id, user_id, ...
-- Loaded now (Redis did not have it), its reset event says "loaded" too, as load.lua's does.
-- Returns {OK, 1 when loaded now | 0 when updated, number of seats added, seat, user, exp, ...}
-- with, when moved, the seat, holder and expiry of each hold let go that had not expired yet; or
-- {DELETED, screening_id} when the screening has a tombstone.
if redis.call('EXISTS', KEYS[#KEYS - 1]) == 1 then
  return {DELETED, ARGV[1]}
end
local now, moved, starts_at, log_length = tonumber(ARGV[2]), ARGV[3] == '1', ARGV[4], ARGV[5]
local count = tonumber(ARGV[6])
local seats_to, rows_to = 8 + count, 8 + count + tonumber(ARGV[8])
local was_ready = is_ready()
local reply = {OK, 0, 0}
if moved then
  local held, records, leases = {}, redis.call('HGETALL', HOLDS), {}
  for i = 1, #records, 2 do
    held[#held + 1] = records[i]
    local user, exp = hold_times(records[i + 1])
    if exp > now then
      reply[#reply + 1] = tonumber(records[i])
      reply[#reply + 1] = tonumber(user)
      reply[#reply + 1] = exp
    end
  end
  for i = LEASE0 + 1, #KEYS - 2 do
    leases[#leases + 1] = KEYS[i]
  end
  drop_holds(held, leases)
end
local old = {}
for _, seat in ipairs(redis.call('SMEMBERS', SEATS)) do
  old[seat] = true
end
local listed = {}
for i = 9, seats_to do
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
if not moved then
  for i = 9, seats_to do
    if not old[ARGV[i]] and redis.call('HEXISTS', SOLD, ARGV[i]) == 0 then
      changes[#changes + 1] = change(ARGV[i], 'available')
    end
  end
end
redis.call('HSET', META, 'starts_at', starts_at, 'log', log_length, 'gaps', ARGV[7], 'ready', '1')
local reset = moved and ',"reset":true,"moved":true' or ',"reset":true'
if was_ready then
  -- Watchers learn of the new seats; the event moves the version and resets mirrors even without
  -- them (seats may be gone, the start may have moved).
  publish(now, changes, reset)
  reply[3] = #changes
  return reply
end
local version = tonumber(redis.call('GET', VERSION) or '0')
redis.call('SET', VERSION, string.format('%.0f', math.max(version + 1, now * 1000)))
publish(now, {}, reset .. ',"loaded":true')
reply[2] = 1
return reply
