-- settle: pending tickets of one user were paid (confirmed in PostgreSQL). Their seats stay sold
-- but no longer count toward the user's per-user cap: owe.lua's markers of them are dropped.
-- KEYS: the common nine (lib.lua).
-- ARGV: screening_id, now_ms, user_id, seat_id...
-- Returns {OK, number of markers dropped} or {NOT_LOADED}. Idempotent; refusals change nothing.
if not is_ready() then
  return {NOT_LOADED}
end
local user, paid, drop = ARGV[3], {}, {}
for i = 4, #ARGV do
  paid[ARGV[i]] = true
end
for _, member in ipairs(redis.call('ZRANGEBYSCORE', OWNERS, user, user)) do
  local seat = string.match(member, '^p:(%d+):')
  if seat and paid[seat] then
    drop[#drop + 1] = member
  end
end
call_list('ZREM', OWNERS, drop)
return {OK, #drop}
