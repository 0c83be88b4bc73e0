-- owe: PostgreSQL committed pending (unpaid) tickets of one user. Unpaid tickets behave like
-- holds: their seats count toward the user's per-user cap (hold.lua) until paid (settle.lua),
-- cancelled or expired (unsell.lua), or past the payment deadline. Each seat gets a marker
-- "p:seat:due_ms" in the owners zset, scored by the user like a hold, so the cap reads holds and
-- pending seats with one ZRANGEBYSCORE. Run it before sell.lua: the seat's hold counts until
-- sell drops it, and a marker counts only while the seat is sold to its user, so the seat counts
-- once at every moment, and a marker of a sale that never reached Redis counts for nothing.
-- KEYS: the common nine (lib.lua).
-- ARGV: screening_id, now_ms, user_id, due_ms (the payment deadline), seat_id...
-- Returns {OK, number of seats marked} or {NOT_LOADED}. Idempotent; refusals change nothing.
if not is_ready() then
  return {NOT_LOADED}
end
local user, due, members = ARGV[3], ARGV[4], {}
for i = 5, #ARGV do
  members[#members + 1] = user
  members[#members + 1] = 'p:' .. ARGV[i] .. ':' .. due
end
call_list('ZADD', OWNERS, members)
return {OK, #ARGV - 4}
