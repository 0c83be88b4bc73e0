-- load: write a screening's layout and sold seats (read from PostgreSQL) and then the ready
-- marker, in one step, so no script ever sees a half-loaded screening. Idempotent: when another
-- process loaded it first, nothing is written. A load publishes an empty reset event: mirrors of
-- the screening's lost state (seatlock/engine/mirrors.py) are dropped.
-- KEYS: the common nine (lib.lua).
-- ARGV: screening_id, now_ms, starts_at_ms, log_length (events kept for resuming watchers,
--       lib.lua publish; 0: none), seat_count, seat_id * seat_count,
--       then sold pairs: seat_id, user_id, ...
-- Returns {OK, 1} when loaded now, {OK, 0} when it already was.
if is_ready() then
  return {OK, 0}
end
local now, starts_at, log_length = tonumber(ARGV[2]), ARGV[3], ARGV[4]
local count = tonumber(ARGV[5])

redis.call('DEL', SEATS, SOLD)
local batch = {}
for i = 6, 5 + count do
  batch[#batch + 1] = ARGV[i]
  if #batch == 500 or i == 5 + count then
    redis.call('SADD', SEATS, unpack(batch))
    batch = {}
  end
end
for i = 6 + count, #ARGV, 2 do
  redis.call('HSET', SOLD, ARGV[i], ARGV[i + 1])
end
-- After Redis lost the screening the version restarts from the clock (in microseconds), above
-- the lost value unless that screening averaged over 1000 changes per ms: caches keyed on it stay
-- safe.
local version = tonumber(redis.call('GET', VERSION) or '0')
redis.call('SET', VERSION, string.format('%.0f', math.max(version + 1, now * 1000)))
redis.call('HSET', META, 'starts_at', starts_at, 'log', log_length, 'ready', '1')
publish(now, {}, true)
return {OK, 1}
