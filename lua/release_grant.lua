-- release_grant: drop the holds one grant took (one hold request, by its token), live or lapsed;
-- every other hold is left alone, including seats the same user holds under another grant (an
-- earlier request, kept as is by a later hold of them: hold.lua).
-- KEYS: the common nine (lib.lua), then the lease of each seat in ARGV order.
-- ARGV: screening_id, now_ms, grant, seat_id...
-- A hold's grant is in its lease's value, "user:grant". A hold whose lease is already gone is no
-- one's any more (every script treats its seat as free) and is left to the expiry listener and
-- the sweep, which drop it and publish.
-- Returns {OK, seat...} with the seats whose hold was dropped, or {NOT_LOADED}.
if not is_ready() then
  return {NOT_LOADED}
end
local now, mark = tonumber(ARGV[2]), ':' .. ARGV[3] -- how the grant's lease values end
local n = #ARGV - 3

local values = call_list('MGET', nil, KEYS, LEASE0 + 1, LEASE0 + n)
local records = call_list('HMGET', HOLDS, ARGV, 4)
local released, seats, leases = {OK}, {}, {}
for j = 1, n do
  local value = values[j]
  if value and records[j] and string.sub(value, -#mark) == mark then
    released[#released + 1] = tonumber(ARGV[3 + j])
    seats[#seats + 1], leases[#leases + 1] = ARGV[3 + j], KEYS[LEASE0 + j]
  end
end
if #seats > 0 then
  drop_holds(seats, leases)
  publish(now, changes_of(seats, 'available'))
end
return released
