-- hold: hold seats for one user, all or nothing.
-- KEYS: the common eight (lib.lua), then the lease of each seat in ARGV order.
-- ARGV: screening_id, now_ms, user_id, hold_ms, max_seats_per_user, seat_id...
-- Returns {OK, seat, expires_at, ...} for every seat asked (seats the user already held keep
-- their hold as is), or {NOT_LOADED} | {STARTED} | {UNKNOWN, seat...} | {BOOKED, seat...} |
-- {TAKEN, seat...} | {TOO_MANY, max_seats_per_user}. Refusals change nothing.
if not is_ready() then
  return {NOT_LOADED}
end
local now, user = tonumber(ARGV[2]), tonumber(ARGV[3])
local hold_ms, cap = tonumber(ARGV[4]), tonumber(ARGV[5])
if now >= tonumber(redis.call('HGET', META, 'starts_at')) then
  return {STARTED}
end

local unknown, booked, taken, fresh, held = {}, {}, {}, {}, {}
for i = 6, #ARGV do
  local seat, lease = ARGV[i], KEYS[LEASE0 + i - 5]
  if redis.call('SISMEMBER', SEATS, seat) == 0 then
    unknown[#unknown + 1] = tonumber(seat)
  elseif redis.call('HEXISTS', SOLD, seat) == 1 then
    booked[#booked + 1] = tonumber(seat)
  else
    local hold = read_hold(seat)
    if not is_live(hold, lease, now) then
      fresh[#fresh + 1] = i
    elseif hold.user == user then
      held[i] = hold.exp
    else
      taken[#taken + 1] = tonumber(seat)
    end
  end
end
if #unknown > 0 then
  return {UNKNOWN, unpack(unknown)}
end
if #booked > 0 then
  return {BOOKED, unpack(booked)}
end
if #taken > 0 then
  return {TAKEN, unpack(taken)}
end
if #fresh > 0 and count_live_holds(user, now) + #fresh > cap then
  return {TOO_MANY, cap}
end

-- Everything checked; from here on only writes.
local exp = now + hold_ms
local changes = {}
for _, i in ipairs(fresh) do
  write_hold(ARGV[i], KEYS[LEASE0 + i - 5], {user = user, exp = exp, first = now, pin = 0}, now)
  held[i] = exp
  changes[#changes + 1] = change(ARGV[i], 'reserved', user, exp)
end
publish(now, changes)
local reply = {OK}
for i = 6, #ARGV do
  reply[#reply + 1] = tonumber(ARGV[i])
  reply[#reply + 1] = held[i]
end
return reply
