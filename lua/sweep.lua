-- sweep: drop the holds whose deadline has passed (the safety net under the keyspace listener,
-- since pub/sub may lose messages). The caller picks candidates from the deadlines zset; each one
-- is checked again here, as it may have been held again since.
-- KEYS: the common nine (lib.lua), then the lease of each seat in ARGV order.
-- ARGV: screening_id, now_ms, seat_id...
-- Returns {OK, freed_count} or {NOT_LOADED}.
if not is_ready() then
  return {NOT_LOADED}
end
local now = tonumber(ARGV[2])

local changes = {}
for i = 3, #ARGV do
  local hold = read_hold(ARGV[i])
  if hold ~= nil and deadline(hold) <= now then
    drop_hold(ARGV[i], KEYS[LEASE0 + i - 2])
    changes[#changes + 1] = change(ARGV[i], 'available')
  end
end
publish(now, changes)
return {OK, #changes}
