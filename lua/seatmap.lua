-- seatmap: read a screening's seats, sales and holds in one consistent snapshot (read-only).
-- KEYS: the common nine (lib.lua).
-- ARGV: screening_id, now_ms.
-- Returns {OK, {seat...}, {seat, user, ...} sold, {seat, user, exp, pin, ...} holds, version,
-- starts_at} or {NOT_LOADED}. The caller decides which holds are still live from now_ms.
if not is_ready() then
  return {NOT_LOADED}
end
local seats = redis.call('SMEMBERS', SEATS)
for i = 1, #seats do
  seats[i] = tonumber(seats[i])
end
local sold = redis.call('HGETALL', SOLD)
for i = 1, #sold do
  sold[i] = tonumber(sold[i])
end
local entries, holds = redis.call('HGETALL', HOLDS), {}
for i = 1, #entries, 2 do
  local hold = parse_hold(entries[i + 1])
  holds[#holds + 1] = tonumber(entries[i])
  holds[#holds + 1] = hold.user
  holds[#holds + 1] = hold.exp
  holds[#holds + 1] = hold.pin
end
local meta = redis.call('HMGET', META, 'starts_at')
return {OK, seats, sold, holds, redis.call('GET', VERSION) or '0', meta[1]}
