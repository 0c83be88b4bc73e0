-- claim: before the PostgreSQL commit of a booking, check the user holds every seat and pin the
-- leases for pin_ms so they cannot lapse while the commit runs. Seats already sold to the user
-- pass (an idempotent retry of a booking that committed). Each hold keeps its grant.
-- KEYS: the common nine (lib.lua), then the lease of each seat in ARGV order.
-- ARGV: screening_id, now_ms, user_id, pin_ms, seat_id...
-- Returns {OK}, or {NOT_LOADED} | {STARTED} (the screening has started: its holds can no longer
-- be booked) | {EXPIRED, seat...} (not held by the user or lapsed). Refusals change nothing.
-- Pinning changes no seat's status, so nothing is published.
local meta = redis.call('HMGET', META, 'ready', 'starts_at')
if meta[1] ~= '1' then
  return {NOT_LOADED}
end
local now, user, pin_ms = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if now >= tonumber(meta[2]) then
  return {STARTED}
end

local holds, lapsed = {}, {}
for i = 5, #ARGV do
  local seat = ARGV[i]
  if tonumber(redis.call('HGET', SOLD, seat)) ~= user then
    local hold = read_hold(seat)
    local value = owned_lease(hold, KEYS[LEASE0 + i - 4], user, now)
    if value then
      hold.lease = value
      holds[i] = hold
    else
      lapsed[#lapsed + 1] = tonumber(seat)
    end
  end
end
if #lapsed > 0 then
  return {EXPIRED, unpack(lapsed)}
end

for i, hold in pairs(holds) do
  hold.pin = math.max(hold.pin, now + pin_ms)
  write_hold(ARGV[i], KEYS[LEASE0 + i - 4], hold, now)
end
return {OK}
