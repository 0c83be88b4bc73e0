-- release: drop one user's holds; seats the user does not hold are left alone.
-- KEYS: the common nine (lib.lua), then the lease of each seat in ARGV order.
-- ARGV: screening_id, now_ms, user_id, seat_id...
-- Returns {OK, seat...} with the seats whose hold (live or lapsed) was dropped, or {NOT_LOADED}.
local meta = redis.call('HMGET', META, 'ready', 'log')
log_length = meta[2] -- read with ready: publish needs no HGET of its own (lib.lua)
if meta[1] ~= '1' then
  return {NOT_LOADED}
end
local now = tonumber(ARGV[2])
local owner = string.format('%d:', ARGV[3]) -- how the user's index records start

local records = call_list('HMGET', HOLDS, ARGV, 4)
local released, seats, leases = {OK}, {}, {}
for j = 1, #ARGV - 3 do
  if records[j] and string.sub(records[j], 1, #owner) == owner then
    released[#released + 1] = tonumber(ARGV[3 + j])
    seats[#seats + 1], leases[#leases + 1] = ARGV[3 + j], KEYS[LEASE0 + j]
  end
end
if #seats > 0 then
  drop_holds(seats, leases)
  publish(now, changes_of(seats, 'available'))
end
return released
