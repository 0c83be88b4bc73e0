-- release: drop one user's holds; seats the user does not hold are left alone.
-- KEYS: the common eight (lib.lua), then the lease of each seat in ARGV order.
-- ARGV: screening_id, now_ms, user_id, seat_id...
-- Returns {OK, seat...} with the seats whose hold (live or lapsed) was dropped, or {NOT_LOADED}.
if not is_ready() then
  return {NOT_LOADED}
end
local now, user = tonumber(ARGV[2]), tonumber(ARGV[3])

local released, changes = {OK}, {}
for i = 4, #ARGV do
  local hold = read_hold(ARGV[i])
  if hold ~= nil and hold.user == user then
    drop_hold(ARGV[i], KEYS[LEASE0 + i - 3])
    released[#released + 1] = tonumber(ARGV[i])
    changes[#changes + 1] = change(ARGV[i], 'available')
  end
end
publish(now, changes)
return released
