-- expire: one seat's lease key expired (keyspace notification). Drop its hold from the index
-- unless the seat was held again since (the lease key exists again).
-- KEYS: the common nine (lib.lua), then the seat's lease.
-- ARGV: screening_id, now_ms, seat_id.
-- Returns {OK, 1} when a hold was dropped (and published), {OK, 0} when nothing changed, or
-- {NOT_LOADED}.
if not is_ready() then
  return {NOT_LOADED}
end
local now, seat, lease = tonumber(ARGV[2]), ARGV[3], KEYS[LEASE0 + 1]
if redis.call('EXISTS', lease) == 1 or redis.call('HEXISTS', HOLDS, seat) == 0 then
  return {OK, 0}
end
drop_hold(seat, nil)
publish(now, {change(seat, 'available')})
return {OK, 1}
