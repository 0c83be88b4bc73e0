-- unsell: tickets were cancelled in PostgreSQL; their seats are free again. Idempotent.
-- KEYS: the common eight (lib.lua).
-- ARGV: screening_id, now_ms, seat_id...
-- Returns {OK, changed_count} or {NOT_LOADED} (nothing to do: a later load reads PostgreSQL).
if not is_ready() then
  return {NOT_LOADED}
end
local now = tonumber(ARGV[2])

local changes = {}
for i = 3, #ARGV do
  if redis.call('HDEL', SOLD, ARGV[i]) == 1 then
    changes[#changes + 1] = change(ARGV[i], 'available')
  end
end
publish(now, changes)
return {OK, #changes}
