-- unsell: tickets were cancelled in PostgreSQL (by the user, an admin, or the payment deadline);
-- their seats are free again, and a pending ticket's seat no longer counts toward its holder's
-- per-user cap (owe.lua's marker is dropped). Idempotent.
-- KEYS: the common nine (lib.lua).
-- ARGV: screening_id, now_ms, seat_id...
-- Returns {OK, changed_count} or {NOT_LOADED} (nothing to do: a later load reads PostgreSQL).
if not is_ready() then
  return {NOT_LOADED}
end
local now = tonumber(ARGV[2])

local changes, freed = {}, {}
for i = 3, #ARGV do
  local user = redis.call('HGET', SOLD, ARGV[i])
  if user then
    redis.call('HDEL', SOLD, ARGV[i])
    changes[#changes + 1] = change(ARGV[i], 'available')
    freed[user] = freed[user] or {}
    freed[user][ARGV[i]] = true
  end
end
for user, seats in pairs(freed) do
  local drop = {}
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', OWNERS, user, user)) do
    local seat = string.match(member, '^p:(%d+):')
    if seat and seats[seat] then
      drop[#drop + 1] = member
    end
  end
  call_list('ZREM', OWNERS, drop)
end
publish(now, changes)
return {OK, #changes}
