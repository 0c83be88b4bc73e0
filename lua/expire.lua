-- expire: lease keys expired (keyspace notifications). Drop the hold of each seat from the index
-- unless the seat was held again since (its lease key exists again); one event for all of them.
-- KEYS: the common nine (lib.lua), then the lease of each seat in ARGV order.
-- ARGV: screening_id, now_ms, seat_id... (no seat twice)
-- Returns {OK, dropped} (how many holds were dropped, and published), or {NOT_LOADED}.
if not is_ready() then
  return {NOT_LOADED}
end
local now, n = tonumber(ARGV[2]), #ARGV - 2
local leases = call_list('MGET', nil, KEYS, LEASE0 + 1, LEASE0 + n)
local records = call_list('HMGET', HOLDS, ARGV, 3)
local seats = {}
for j = 1, n do
  if not leases[j] and records[j] then
    seats[#seats + 1] = ARGV[2 + j]
  end
end
if #seats > 0 then
  drop_holds(seats, {})
  publish(now, changes_of(seats, 'available'))
end
return {OK, #seats}
