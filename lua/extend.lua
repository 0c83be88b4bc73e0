-- extend: push back the deadline of one user's live holds, all or nothing.
-- KEYS: the common nine (lib.lua), then the lease of each seat in ARGV order.
-- ARGV: screening_id, now_ms, user_id, extra_ms, max_hold_ms, seat_id...
-- A hold never lives longer than max_hold_ms after it was first taken, nor past the screening's
-- start (when its seat can no longer be booked: hold.lua).
-- Each hold keeps its grant (its lease's value is written back as it was).
-- Returns {OK, seat, expires_at, lease, added_ms, ...} for every seat asked (lease: its value, as
-- hold.lua returns it; added_ms: how much later the hold ends now, less than extra_ms where
-- max_hold_ms or the start capped it, 0 when it was already at a cap), or {NOT_LOADED} |
-- {STARTED} (the screening has started: its holds end with it) | {NOT_HELD, seat...} (not held by
-- the user, or already expired). Refusals change nothing.
local meta = redis.call('HMGET', META, 'ready', 'starts_at')
if meta[1] ~= '1' then
  return {NOT_LOADED}
end
local now, user = tonumber(ARGV[2]), tonumber(ARGV[3])
if now >= tonumber(meta[2]) then
  return {STARTED}
end
local extra_ms, max_hold_ms, starts_at = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(meta[2])

local holds, missing = {}, {}
for i = 6, #ARGV do
  local hold = read_hold(ARGV[i])
  local value = owned_lease(hold, KEYS[LEASE0 + i - 5], user, now)
  if value then
    hold.lease = value
    holds[i] = hold
  else
    missing[#missing + 1] = tonumber(ARGV[i])
  end
end
if #missing > 0 then
  return {NOT_HELD, unpack(missing)}
end

local changes, reply = {}, {OK}
for i = 6, #ARGV do
  local hold = holds[i]
  local before = hold.exp
  local exp = math.min(hold.exp + extra_ms, hold.first + max_hold_ms, starts_at)
  if exp > before then
    hold.exp = exp
    write_hold(ARGV[i], KEYS[LEASE0 + i - 5], hold, now)
    changes[#changes + 1] = change(ARGV[i], 'reserved', user, exp)
  end
  reply[#reply + 1] = tonumber(ARGV[i])
  reply[#reply + 1] = hold.exp
  reply[#reply + 1] = hold.lease
  reply[#reply + 1] = hold.exp - before
end
publish(now, changes)
return reply
