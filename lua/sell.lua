-- sell: PostgreSQL committed tickets; mark their seats sold and drop any hold on them, whoever
-- holds it. Idempotent: a seat already sold to the same user changes nothing.
-- KEYS: the common nine (lib.lua), then the lease of the i-th seat.
-- ARGV: screening_id, now_ms, seat_id, user_id, seat_id, user_id, ...
-- Returns {OK, changed_count} or {NOT_LOADED}.
if not is_ready() then
  return {NOT_LOADED}
end
local now = tonumber(ARGV[2])

local changes = {}
for i = 3, #ARGV, 2 do
  local seat, user = ARGV[i], tonumber(ARGV[i + 1])
  local lease = KEYS[LEASE0 + (i - 1) / 2]
  local held = redis.call('HEXISTS', HOLDS, seat) == 1 or redis.call('EXISTS', lease) == 1
  if held then
    drop_hold(seat, lease)
  end
  if tonumber(redis.call('HGET', SOLD, seat)) ~= user then
    redis.call('HSET', SOLD, seat, user)
    changes[#changes + 1] = change(seat, 'booked', user)
  end
end
publish(now, changes)
return {OK, #changes}
