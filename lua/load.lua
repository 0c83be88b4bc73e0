-- load: write a screening's layout and sold seats (read from PostgreSQL) and then the ready
-- marker, in one step, so no script ever sees a half-loaded screening. Idempotent: when another
-- process loaded it first, nothing is written. A load publishes an empty reset event that says
-- "loaded": mirrors of the screening's lost state (seatlock/engine/mirrors.py) are dropped, and
-- watchers already watching it (Redis lost it under them: a flush keeps their subscription) are
-- sent the new map (api/websockets.py), as the holds they were shown are gone with no event of
-- their own. A screening with a tombstone was deleted (forget.lua) after this caller read
-- PostgreSQL: nothing is written.
-- KEYS: the common nine (lib.lua), then the tombstone (seatlock/keys.py screening_deleted),
--       then the rows hash (screening_rows).
-- ARGV: screening_id, now_ms, starts_at_ms, log_length (events kept for resuming watchers,
--       lib.lua publish; 0: none), seat_count, gaps ("1": the single-gap rule is on),
--       rows_count, seat_id * seat_count, then the rows hash's fields and values (rows_count
--       values in all), then sold pairs: seat_id, user_id, ...
-- Returns {OK, 1} when loaded now, {OK, 0} when it already was, {DELETED, screening_id} when
-- the screening has a tombstone.
if is_ready() then
  return {OK, 0}
end
if redis.call('EXISTS', KEYS[#KEYS - 1]) == 1 then
  return {DELETED, ARGV[1]}
end
local now, starts_at, log_length = tonumber(ARGV[2]), ARGV[3], ARGV[4]
local count = tonumber(ARGV[5])
local first, rows_to = 8 + count, 7 + count + tonumber(ARGV[7])

redis.call('DEL', SEATS, SOLD, KEYS[#KEYS])
call_list('SADD', SEATS, ARGV, 8, 7 + count)
call_list('HSET', KEYS[#KEYS], ARGV, first, rows_to)
for i = rows_to + 1, #ARGV, 2 do
  redis.call('HSET', SOLD, ARGV[i], ARGV[i + 1])
end
-- After Redis lost the screening the version restarts from the clock (in microseconds), above
-- the lost value unless that screening averaged over 1000 changes per ms: caches keyed on it stay
-- safe.
local version = tonumber(redis.call('GET', VERSION) or '0')
redis.call('SET', VERSION, string.format('%.0f', math.max(version + 1, now * 1000)))
redis.call('HSET', META, 'starts_at', starts_at, 'log', log_length, 'gaps', ARGV[6], 'ready', '1')
publish(now, {}, ',"reset":true,"loaded":true')
return {OK, 1}
